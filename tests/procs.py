"""Running things for tests: an ASGI app on loopback in a thread, and real processes on free ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn

BIN = Path(sys.executable).parent
FLEXUS_OPS = str(BIN / "flexus-ops")


@contextmanager
def serve_app(app: Any, *, lifespan: str = "off") -> Iterator[str]:
    """An ASGI app on 127.0.0.1 (random port) in a thread; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan=lifespan))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def clean_env(state_dir: Path, **variables: str) -> dict[str, str]:
    """The environment a real ``flexus-ops`` runs in for a test: nothing of the developer's (credentials,
    settings, Slack tokens), the embedded sandbox with quick jobs, and the given state dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUAWEICLOUD_", "FLEXUS_", "SLACK_"))}
    env |= {"FLEXUS_STATE_DIR": str(state_dir), "FLEXUS_SANDBOX_JOB_SECONDS": "0.1", "FLEXUS_JOB_POLL_SECONDS": "0.05"}
    return env | variables


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_http(url: str, process: subprocess.Popen[Any], timeout: float = 30) -> None:
    """Until ``url`` answers at all (any status), or the process dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {process.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1)  # noqa: S310 - loopback URL we built
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def start(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(processes: list[subprocess.Popen[Any]]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextmanager
def sim_process(*args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """`flexus-ops sim` on a free loopback port, until the block ends; yields its URL."""
    port = free_port()
    process = start([FLEXUS_OPS, "sim", "--port", str(port), *args], env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/_sandbox/health", process)
        yield url
    finally:
        stop([process])
