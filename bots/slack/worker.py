"""Where answers run: their own event loop in their own thread, so an ack never waits for an answer.

Slack wants the HTTP answer to a command or click within 3 seconds. The ack needs no I/O (verify the
signature, find out who asks, parse, maybe a refusal or the help); the answer needs the registry, the
cloud, Block Kit and a post to the ``response_url``. On one event loop the acks queue behind the
answers' work, so under load an ack waits for answers that are not its own. Here the server's loop
(uvicorn, or the Socket Mode client) only acks and hands the rest to ``AnswerWorker``, whose loop owns
everything that touches the registry, the gate and the cloud (their async parts belong to one loop).
The two threads still share one interpreter (one runs Python at a time), so the answers' loop steps
aside while the server is acking (``Front``).

Bounded: at most ``running`` answers run at once, at most ``queued`` wait; past that a request is
still acked, saying the bot is busy (nothing was started, so trying again is safe). ``pending`` counts
answers admitted and not yet finished, so a graceful stop can wait for them.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import selectors
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import aiohttp

T = TypeVar("T")
log = logging.getLogger("flexus_ops.bots")

RUNNING = 64  # answers at once: the cloud client has its own concurrency limit behind this
QUEUED = 1000  # admitted but waiting: beyond this the ack says "busy"

# While the server is acking, and until it has been quiet for QUIET_SECONDS (under steady load the next
# request is about to come), the answers' loop waits before its next round, at most YIELD_SECONDS: the
# acks get the interpreter (one thread runs Python at a time) and the CPU, and answers, a rollout's lease
# renewal (every few seconds) and job polling still progress under constant load. A thread that holds the
# interpreter when the OS takes its CPU away blocks the other until it runs again: on a busy machine
# that inversion, not the work itself, was the acks' tail, so the answers' loop keeps out of the way.
YIELD_SECONDS = 0.25
QUIET_SECONDS = 0.01

Work = Callable[[], Awaitable[None]]
Failure = Callable[[BaseException], Awaitable[None]]


class Ticket:
    """A place reserved among the pending answers; ``start`` hands it its work, ``release`` gives it back
    unused. Exactly one of them takes effect, so the pending count never leaks."""

    def __init__(self, worker: AnswerWorker) -> None:
        self._worker = worker
        self._done = False

    def start(self, work: Work, on_error: Failure | None = None, *, name: str = "answer") -> None:
        if self._done:
            raise RuntimeError("this ticket was already used")
        self._done = True
        try:
            self._worker._schedule(work, on_error, name)
        except BaseException:
            self._worker._finished()
            raise

    def release(self) -> None:
        if not self._done:
            self._done = True
            self._worker._finished()


class Front:
    """Requests the server's loop is handling now (set there, read by the answers' loop): while there are
    any, the answers' loop steps aside between its rounds, so acks do not share the interpreter with
    answers. Only the server's loop changes the count."""

    def __init__(self) -> None:
        self.busy = 0
        self.idle = threading.Event()
        self.idle.set()
        self.left = 0.0  # time.monotonic() when the last request was answered

    def enter(self) -> None:
        self.busy += 1
        self.idle.clear()

    def leave(self) -> None:
        self.busy -= 1
        self.left = time.monotonic()
        if self.busy <= 0:
            self.busy = 0
            self.idle.set()

    def wrap(self, app: Any, paths: tuple[str, ...]) -> Any:
        """An ASGI app counting its requests to ``paths`` from start to the last byte of the response."""

        async def counted(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http" or scope.get("path") not in paths:
                await app(scope, receive, send)
                return
            self.enter()
            try:
                await app(scope, receive, send)
            finally:
                self.leave()

        return counted


class _StepAside(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """The answers' loop's selector: before each round of the loop (every round polls it), wait while the
    server is acking or was a moment ago, up to ``YIELD_SECONDS`` (the wait releases the interpreter)."""

    def __init__(self, front: Front) -> None:
        super().__init__()
        self._front = front

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        front = self._front
        now = time.monotonic()
        deadline = now + YIELD_SECONDS
        # Wait while requests are being acked and until none has been for QUIET_SECONDS (under steady load
        # the next one is about to arrive), but never past the deadline: answers still progress.
        while now < deadline and (front.busy or now - front.left < QUIET_SECONDS):
            if front.busy:
                front.idle.wait(deadline - now)
            else:
                time.sleep(min(QUIET_SECONDS - (now - front.left), deadline - now))
            now = time.monotonic()
        return super().select(timeout)


class AnswerWorker:
    """A thread running one event loop for answers, started on first use and stopped by ``aclose``.
    ``http()`` is one aiohttp session on that loop for the answers' posts to response_urls, so they reuse
    connections (and, to Slack, TLS sessions) instead of opening one per answer."""

    def __init__(self, *, running: int = RUNNING, queued: int = QUEUED, front: Front | None = None) -> None:
        self.front = front if front is not None else Front()
        self.capacity = running + queued
        self._running = running
        self._lock = threading.Lock()
        self._pending = 0
        self._idle = threading.Condition(self._lock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._limit: asyncio.Semaphore | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._http: aiohttp.ClientSession | None = None

    # -- any thread -------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Answers admitted and not finished (queued or running)."""
        return self._pending

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The answers' loop, started if need be."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the answer worker is closed")
            if self._loop is None:
                started = threading.Event()
                loop = asyncio.SelectorEventLoop(_StepAside(self.front))

                def serve() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(started.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=serve, name="flexus-slack-answers", daemon=True)
                self._thread.start()
                started.wait()
                self._loop = loop
            return self._loop

    def admit(self) -> Ticket | None:
        """A reserved place for one answer, or None when the worker is full (the ack then says busy)."""
        with self._lock:
            if self._closed or self._pending >= self.capacity:
                return None
            self._pending += 1
        return Ticket(self)

    def submit(self, work: Work, on_error: Failure | None = None, *, name: str = "answer") -> bool:
        """Admit and start in one step; False (nothing started) when full."""
        ticket = self.admit()
        if ticket is None:
            return False
        ticket.start(work, on_error, name=name)
        return True

    def call_soon(self, callback: Callable[[], object]) -> None:
        """Run a plain callback on the answers' loop (for state that belongs to it, e.g. a rollout's stop)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(callback)
        else:
            callback()

    def wait_idle(self, timeout: float) -> bool:
        """Block until no answer is pending or ``timeout`` passes; True when idle."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on the answers' loop from another loop (anything that touches the registry)."""
        loop = self.loop
        if _running_loop() is loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

    async def aclose(self, last: Coroutine[Any, Any, None] | None = None, *, grace: float = 0.0) -> None:
        """Wait up to ``grace`` seconds for pending answers, cancel the rest, run ``last`` (closing what
        lives on the answers' loop) there, and stop the thread. Idempotent."""
        with self._lock:
            self._closed = True
            loop, thread = self._loop, self._thread
        if loop is None or thread is None or loop.is_closed():
            if last is not None:
                await last  # never started: nothing lives on another loop
            return
        if grace > 0:
            await asyncio.to_thread(self.wait_idle, grace)
        future = asyncio.run_coroutine_threadsafe(self._shutdown(last), loop)
        try:
            await asyncio.wrap_future(future)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            await asyncio.to_thread(thread.join, 10)
            if not thread.is_alive():
                loop.close()

    # -- the answers' loop ------------------------------------------------------------------------

    def http(self) -> aiohttp.ClientSession | None:
        """The answers' shared session, on the answers' loop only (None anywhere else: a caller there
        opens its own)."""
        if self._loop is None or _running_loop() is not self._loop:
            return None
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        return self._http

    def _schedule(self, work: Work, on_error: Failure | None, name: str) -> None:
        loop = self.loop

        def create() -> None:
            task = loop.create_task(self._run(work, on_error), name=f"slack {name}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        loop.call_soon_threadsafe(create)

    async def _run(self, work: Work, on_error: Failure | None) -> None:
        CURRENT.set(self)  # this task's context, copied into the tasks it starts
        try:
            if self._limit is None:
                self._limit = asyncio.Semaphore(self._running)
            async with self._limit:
                try:
                    await work()
                except Exception as exc:
                    if on_error is None:
                        log.error("slack answer failed: %s", type(exc).__name__)
                    else:
                        await on_error(exc)
        except Exception as exc:  # the error handler itself failed: logged, never raised into the loop
            log.error("slack answer failed: %s", type(exc).__name__)
        finally:
            self._finished()

    def _finished(self) -> None:
        with self._idle:
            self._pending -= 1
            if self._pending == 0:
                self._idle.notify_all()

    async def _shutdown(self, last: Coroutine[Any, Any, None] | None) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            if last is not None:
                await last
        finally:
            if self._http is not None:
                await self._http.close()
            # Whatever else still runs here (a registry's housekeeping whose cancel was only scheduled) ends
            # now: a task left pending on a closed loop is destroyed later by the garbage collector, anywhere.
            current = asyncio.current_task()
            leftover = [task for task in asyncio.all_tasks() if task is not current]
            for task in leftover:
                task.cancel()
            await asyncio.gather(*leftover, return_exceptions=True)


CURRENT: contextvars.ContextVar[AnswerWorker] = contextvars.ContextVar("flexus_slack_answer_worker")
"""The worker running the current answer (set in each answer's task): where its shared session is."""


def shared_http() -> aiohttp.ClientSession | None:
    """The current answer worker's session, when called on its loop; else None."""
    worker = CURRENT.get(None)
    return worker.http() if worker is not None else None


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


__all__ = [
    "CURRENT",
    "QUEUED",
    "QUIET_SECONDS",
    "RUNNING",
    "YIELD_SECONDS",
    "AnswerWorker",
    "Front",
    "Ticket",
    "shared_http",
]
