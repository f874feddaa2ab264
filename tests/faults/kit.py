"""What the fault tests share. Network faults on loopback: a TCP proxy in front of a sandbox that can delay
or drop the cloud's answers, and a listener that accepts connections and never answers (a cloud or a
database that hangs); both run their own threads, so sync tests, async tests and child processes can all
talk to them. The real CLI in a clean environment, and reading what the sandbox and the store saw."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flexus_ops.gate.secrets import Keys
from flexus_ops.gate.store import Store
from flexus_ops.sandbox import Sandbox
from flexus_ops.sandbox.responses import RequestRecord
from tests.live import AK, PID, SK
from tests.procs import FLEXUS_OPS, clean_env

RETRY_NOTICE = "cloud retry"  # the client's own warning before a retry: allowed on stderr besides the one line


class Proxy:
    """A TCP proxy to ``upstream`` (an http://host:port URL). ``drop_post_answers``: the answers to the next
    N POSTs are read from the cloud and thrown away, and the caller's connection is closed (the cloud did
    the work; the caller never hears it). ``answer_delay``: seconds added before each answer is passed on."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        assert parts.hostname and parts.port
        self.upstream = (parts.hostname, parts.port)
        self.drop_post_answers = 0
        self.answer_delay = 0.0
        self.dropped = 0
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]
            self._started.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()

    def __enter__(self) -> Proxy:
        self._thread.start()
        assert self._started.wait(10), "the proxy did not start"
        return self

    def __exit__(self, *_exc: object) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            # The connections still open: cancelled, and waited for, so each closes both its sockets.
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.close()
            return
        # Set once a POST whose answer is to be lost goes up this connection: HTTP/1.1 clients send one
        # request at a time per connection, so the next bytes down are that POST's answer.
        drop = asyncio.Event()

        async def up() -> None:
            while data := await client_reader.read(65536):
                if data.startswith(b"POST ") and self.drop_post_answers > 0:
                    self.drop_post_answers -= 1
                    drop.set()
                up_writer.write(data)
                await up_writer.drain()

        async def down() -> None:
            while data := await up_reader.read(65536):
                if drop.is_set():
                    self.dropped += 1
                    return  # the cloud answered; the caller never hears it
                if self.answer_delay:
                    await asyncio.sleep(self.answer_delay)
                client_writer.write(data)
                await client_writer.drain()

        tasks = [asyncio.ensure_future(up()), asyncio.ensure_future(down())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for writer in (client_writer, up_writer):
                with contextlib.suppress(Exception):
                    writer.close()


class BlackHole:
    """A TCP listener that accepts every connection and never sends a byte: a hung cloud or database."""

    def __init__(self) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(64)
        self._socket.settimeout(0.2)
        self.port: int = self._socket.getsockname()[1]
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="black-hole", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._held.append(connection)  # held open, never read from or written to

    def __enter__(self) -> BlackHole:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for connection in [*self._held, self._socket]:
            connection.close()


# -- the real CLI ------------------------------------------------------------------------------------


def cli_env(state_dir: Path, *, endpoint: str | None = None, **variables: str) -> dict[str, str]:
    """A clean environment for ``flexus-ops``: nothing of the developer's, the given state dir, and the
    cloud at ``endpoint`` (with the live sandbox's credentials) or the embedded sandbox."""
    env = clean_env(state_dir)
    if endpoint is not None:
        env |= {
            "FLEXUS_ECS_ENDPOINT": endpoint,
            "HUAWEICLOUD_SDK_AK": AK,
            "HUAWEICLOUD_SDK_SK": SK,
            "HUAWEICLOUD_SDK_PROJECT_ID": PID,
            "FLEXUS_RETRY_BASE_SECONDS": "0.05",
            "FLEXUS_RETRY_MAX_SECONDS": "0.1",
        }
    return env | variables


def cli(env: dict[str, str], *args: str, bound: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``flexus-ops``; ``bound`` only fails a run that hangs, it judges nothing."""
    return subprocess.run([FLEXUS_OPS, *args], env=env, capture_output=True, text=True, timeout=bound, check=False)


SANDBOX_MARKER = "flexus-ops: SANDBOX cloud"  # the CLI's first stderr line when it talks to the sandbox


def problem_lines(stderr: str) -> list[str]:
    """The non-empty stderr lines a person reads about the failure (the client's retry notices and the
    sandbox marker aside)."""
    return [
        line
        for line in stderr.splitlines()
        if line.strip() and RETRY_NOTICE not in line and not line.startswith(SANDBOX_MARKER)
    ]


# -- reading the sandbox and the store -----------------------------------------------------------


def active_server(sandbox: Sandbox) -> str:
    """An ACTIVE, unlocked server: one a stop acts on."""
    backend = sandbox.backend
    return next(
        sid
        for sid in backend.servers
        if backend.server_view(sid)["status"] == "ACTIVE" and not backend.server_view(sid)["locked"]
    )


def existing_store(state_dir: Path) -> Path:
    """The state dir's SQLite store with its schema in place (WAL mode), as any earlier run leaves it."""
    path = state_dir / "flexus.db"
    Store(f"sqlite:///{path}", Keys.load(state_dir).audit).dispose()
    return path


def posts(sandbox: Sandbox) -> list[RequestRecord]:
    """Every POST that reached the cloud, whatever its answer (a lost answer is still a POST that arrived)."""
    return [record for record in sandbox.request_log if record.method == "POST"]


async def until(check: Callable[[], Any], *, bound: float = 30.0, what: str = "condition", every: float = 0.05) -> Any:
    """Poll ``check`` until it is truthy. ``bound`` only fails a test that would otherwise hang."""
    deadline = time.monotonic() + bound
    while not (found := check()):
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(every)
    return found
