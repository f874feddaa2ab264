"""The Slack bot's answer worker: answers run on their own loop and thread, bounded, counted for a
graceful stop, and closed on their own loop. Behaviour only; how fast acks are is the benchmark's."""

from __future__ import annotations

import asyncio
import threading

from flexus_ops.bots.slack.worker import AnswerWorker, Front
from flexus_ops.serving import Drain


async def test_answers_run_on_the_workers_own_loop_and_thread() -> None:
    worker = AnswerWorker()
    seen: list[tuple[asyncio.AbstractEventLoop, threading.Thread]] = []
    done = threading.Event()

    async def work() -> None:
        seen.append((asyncio.get_running_loop(), threading.current_thread()))
        done.set()

    assert worker.submit(work)
    assert await asyncio.to_thread(done.wait, 10)
    ((loop, thread),) = seen
    assert loop is worker.loop and loop is not asyncio.get_running_loop()
    assert thread is not threading.current_thread()
    assert await asyncio.to_thread(worker.wait_idle, 10) and worker.pending == 0
    await worker.aclose()
    assert not thread.is_alive()


async def test_the_bound_admits_no_more_and_a_released_place_is_free_again() -> None:
    worker = AnswerWorker(running=1, queued=1)
    first, second = worker.admit(), worker.admit()
    assert first is not None and second is not None
    assert worker.admit() is None and worker.pending == 2  # full: the caller acks "busy"
    second.release()
    second.release()  # a second release changes nothing
    assert worker.pending == 1
    gate = threading.Event()

    async def blocked() -> None:
        await asyncio.to_thread(gate.wait, 10)

    first.start(blocked)
    assert worker.submit(blocked)  # queued behind the running one: the bound is running + queued
    assert not worker.submit(blocked) and worker.pending == 2
    gate.set()
    assert await asyncio.to_thread(worker.wait_idle, 10)
    await worker.aclose()
    assert worker.admit() is None  # closed: admits nothing


async def test_a_failing_answer_goes_to_its_handler_and_is_no_longer_pending() -> None:
    worker = AnswerWorker()
    handled: list[str] = []
    done = threading.Event()

    async def broken() -> None:
        raise ValueError("boom")

    async def on_error(exc: BaseException) -> None:
        handled.append(type(exc).__name__)
        done.set()

    assert worker.submit(broken, on_error)
    assert await asyncio.to_thread(done.wait, 10)
    assert await asyncio.to_thread(worker.wait_idle, 10)
    assert handled == ["ValueError"] and worker.pending == 0
    await worker.aclose()


async def test_close_waits_for_the_grace_then_cancels_and_closes_on_the_workers_loop() -> None:
    worker = AnswerWorker()
    finished, cancelled = threading.Event(), threading.Event()
    closed_on: list[asyncio.AbstractEventLoop] = []

    async def short() -> None:
        await asyncio.sleep(0.2)
        finished.set()

    async def endless() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def last() -> None:
        closed_on.append(asyncio.get_running_loop())

    assert worker.submit(short) and worker.submit(endless)
    loop = worker.loop
    await worker.aclose(last(), grace=0.5)
    assert finished.is_set() and cancelled.is_set()  # the short one had its time; the endless one did not
    assert closed_on == [loop] and worker.pending == 0 and loop.is_closed()


async def test_close_of_a_worker_that_never_started_runs_the_last_step_here() -> None:
    ran: list[asyncio.AbstractEventLoop] = []

    async def last() -> None:
        ran.append(asyncio.get_running_loop())

    await AnswerWorker().aclose(last())
    assert ran == [asyncio.get_running_loop()]


def test_a_stop_waits_for_pending_work_as_for_requests() -> None:
    pending = [2]
    drain = Drain(pending=[lambda: pending[0]])
    drain.in_flight = 1
    assert drain.busy() == 3
    drain.in_flight = 0
    pending[0] = 0
    assert drain.busy() == 0


async def test_the_front_counts_event_requests_only() -> None:
    front = Front()
    during: list[int] = []

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        during.append(front.busy)

    counted = front.wrap(app, ("/slack/events",))
    await counted({"type": "http", "path": "/slack/events"}, None, None)
    await counted({"type": "http", "path": "/healthz"}, None, None)
    await counted({"type": "lifespan"}, None, None)
    assert during == [1, 0, 0] and front.busy == 0 and front.idle.is_set()
