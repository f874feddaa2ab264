"""Failing clearly and stopping cleanly: the CLI's exit-code table with real causes, one line on stderr
and never a traceback, Ctrl-C and SIGTERM on the CLI and on both MCP transports, a closed stdout, and
unexpected errors reaching an MCP client as one line."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from flexus_ops import cli
from flexus_ops.core import errors
from flexus_ops.core.errors import Refused
from flexus_ops.mcp_server import build_server
from flexus_ops.registry.targets import TargetError
from tests.gatekit import make_registry
from tests.procs import clean_env, free_port, wait_http
from tests.test_cli import COMMAND, run
from tests.test_mcp import local_policy, structured, text_of

STOP_WEB_01 = json.dumps({"servers": ["web-01"]})


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """As in test_cli: no developer settings, the sandbox, a private state dir."""
    return clean_env(tmp_path)


def assert_one_line(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    # The sandbox marker (which cloud was talked to) aside, a failure is one line.
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("flexus-ops: SANDBOX")]
    assert len(lines) == 1 and lines[0].startswith("flexus-ops: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]


# -- the table, unit by unit ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "code", "words"),
    [
        (errors.InvalidInput("servers", "at least one"), cli.EXIT_USAGE, "bad input: servers"),
        (TargetError("servers", "no server named 'x'"), cli.EXIT_USAGE, "bad input"),
        (Refused("separation of duties"), cli.EXIT_REFUSED, "refused: separation"),
        (errors.AuthenticationError(401, "APIGW.0301", "bad signature"), cli.EXIT_CLOUD, "credentials"),
        (errors.ServiceError(503, "APIGW.0601", "down"), cli.EXIT_CLOUD, "retry later"),
        (errors.TransportError("GET /x: ConnectError", may_have_applied=False), cli.EXIT_CLOUD, "network"),
        (errors.JobTimeout("job-1", 60, "RUNNING"), cli.EXIT_CLOUD, "show_job"),
        (errors.StoreError("database is locked", "retry in a moment"), cli.EXIT_STORE, "store: database"),
        (errors.ConfigurationError("FLEXUS_REGION: unknown"), cli.EXIT_STORE, "configuration"),
        (OSError(errno.ENOTDIR, "Not a directory", "/state/keys"), cli.EXIT_STORE, "/state/keys"),
        (errors.OutcomeUnknown("the stop was sent; the answer was lost"), cli.EXIT_UNKNOWN, "do not retry"),
        (errors.TransportError("POST /x: ReadTimeout", may_have_applied=True), cli.EXIT_UNKNOWN, "may have been"),
        (ExceptionGroup("task group", [errors.InvalidInput("limit", "at most 1000")]), cli.EXIT_USAGE, "limit"),
        (RuntimeError("boom\n[SQL: SELECT secret]"), cli.EXIT_INTERNAL, "internal error (RuntimeError): boom;"),
    ],
)
def test_every_failure_has_its_code_and_one_line(exc: BaseException, code: int, words: str) -> None:
    got, line = cli.failure(exc)
    assert got == code and words in line and "\n" not in line and "SQL" not in line


@pytest.mark.parametrize("debug", [False, True])
def test_an_unexpected_error_is_one_line_and_exit_70(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], debug: bool
) -> None:
    def broken(_n: int) -> str:
        raise RuntimeError("entropy ran out\nsecond line")

    monkeypatch.setattr("secrets.token_urlsafe", broken)
    if debug:
        monkeypatch.setenv("FLEXUS_DEBUG", "1")
    before = signal.getsignal(signal.SIGTERM)
    assert cli.main(["token", "new", "--person", "alice"]) == cli.EXIT_INTERNAL
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last == "flexus-ops: internal error (RuntimeError): entropy ran out; this is a bug, please report it"
    assert ("Traceback" in err) is debug
    assert signal.getsignal(signal.SIGTERM) is before  # main() put back the handler it found


# -- the table, with real causes ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "extra_env", "code", "words"),
    [
        (["call", "flexus_stop_servers", "--args", "{not json"], {}, 2, "bad input: --args"),
        (["call", "flexus_stop_servers", "--confirm", "fxc1.forged.token", "--args", STOP_WEB_01], {}, 1, "refused"),
        (
            ["call", "flexus_list_servers"],
            {
                "FLEXUS_ECS_ENDPOINT": "CLOSED",
                "HUAWEICLOUD_SDK_AK": "test-ak",
                "HUAWEICLOUD_SDK_SK": "test-sk",
                "HUAWEICLOUD_SDK_PROJECT_ID": "0123456789abcdef0123456789abcdef",
                "FLEXUS_RETRY_ATTEMPTS": "0",
            },
            3,
            "network",
        ),
        (["call", "flexus_stop_servers", "--args", STOP_WEB_01], {"FLEXUS_STORE_URL": "DEAD_DB"}, 4, "store"),
        (["call", "flexus_stop_servers", "--args", STOP_WEB_01], {"FLEXUS_STATE_DIR": "A_FILE"}, 4, "Not a directory"),
        # `mcp` builds its registry outside the common path: its configuration errors are one line too.
        (["mcp"], {"FLEXUS_ECS_ENDPOINT": "CLOSED"}, 4, "configuration"),
    ],
)
def test_exit_codes_with_real_causes(
    env: dict[str, str], tmp_path: Path, args: list[str], extra_env: dict[str, str], code: int, words: str
) -> None:
    state_file = tmp_path / "not-a-dir"
    state_file.write_text("")
    state_file.chmod(0o600)  # private, so the only complaint is that it is not a directory
    real = {
        "CLOSED": f"http://127.0.0.1:{free_port()}",
        "DEAD_DB": f"postgresql://nobody@127.0.0.1:{free_port()}/flexus",
        "A_FILE": str(state_file),
    }
    result = run(env | {name: real.get(value, value) for name, value in extra_env.items()}, *args, stdin="")
    assert result.returncode == code, result.stderr
    assert_one_line(result, words)
    assert result.stdout == ""


@pytest.mark.slow
def test_argparse_usage_errors_exit_2(env: dict[str, str]) -> None:
    result = run(env, "call")
    assert result.returncode == 2 and "usage:" in result.stderr and "Traceback" not in result.stderr


# -- a closed stdout ------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_closed_stdout_ends_quietly_with_141(env: dict[str, str]) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written: the write must meet EPIPE
    try:
        result = subprocess.run(
            [COMMAND, "call", "flexus_list_servers"], env=env, stdout=write_end, stderr=subprocess.PIPE, timeout=120
        )
    finally:
        os.close(write_end)
    assert result.returncode == cli.EXIT_SIGPIPE
    assert result.stderr.decode().startswith("flexus-ops: SANDBOX") and len(result.stderr.splitlines()) == 1


@pytest.mark.slow
@pytest.mark.parametrize("pipeline", ["call flexus_list_servers | head -1", "audit | head -c 1"])
def test_piping_into_head_is_quiet(env: dict[str, str], pipeline: str) -> None:
    result = subprocess.run(
        ["bash", "-c", f"'{COMMAND}' {pipeline}"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stdout in ("{\n", "[")
    assert result.stderr.startswith("flexus-ops: SANDBOX") and len(result.stderr.splitlines()) == 1, result.stderr


# -- Ctrl-C and SIGTERM ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "code", "word"), [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
)
def test_a_signal_at_the_prompt_ends_the_command(env: dict[str, str], signum: int, code: int, word: str) -> None:
    """The y/N prompt waits on the terminal; a signal there must not wait for Enter."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [COMMAND, "call", "flexus_stop_servers", "--args", STOP_WEB_01],
        env=env,
        stdin=follower,
        stdout=subprocess.PIPE,
        stderr=follower,
        close_fds=True,
    )
    os.close(follower)
    try:
        seen = b""
        deadline = time.monotonic() + 60
        while b"[y/N]" not in seen and time.monotonic() < deadline:
            if select.select([leader], [], [], 1)[0]:
                seen += os.read(leader, 4096)
        assert b"[y/N]" in seen
        process.send_signal(signum)
        out, _ = process.communicate(timeout=10)  # a bound for failure, not a speed requirement
        seen = b""
        while select.select([leader], [], [], 0.5)[0]:
            try:
                seen += os.read(leader, 4096)
            except OSError:  # EIO: the child side has closed
                break
    finally:
        if process.poll() is None:
            process.kill()
        os.close(leader)
    assert process.returncode == code and out == b""
    assert f"flexus-ops: {word}".encode() in seen and b"Traceback" not in seen


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "test", "version": "0"}},
}


# Ctrl-C while the command is still loading (the first half second of any command), made deterministic: a
# real SIGINT arrives as the named module is imported (the launcher's own import of the fast path's
# constants, or the CLI).
INTERRUPTED_IMPORT = """
import os, signal, sys
module = sys.argv[1]
class Interrupt:
    def find_spec(self, name, path=None, target=None):
        if name == module:
            os.kill(os.getpid(), signal.SIGINT)
sys.meta_path.insert(0, Interrupt())
sys.argv = ["flexus-ops", *sys.argv[2:]]
from flexus_ops.launch import run
run()
"""


def test_importing_the_launcher_leaves_the_importers_signals_alone() -> None:
    # Only running it takes Ctrl-C over; a test (or any importer) keeps its own KeyboardInterrupt.
    probe = "import signal, flexus_ops.launch; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "True", result.stderr


@pytest.mark.parametrize("module", ["flexus_ops.mcp_fast", "flexus_ops.cli"])
@pytest.mark.parametrize("command", [["sim"], ["call", "flexus_list_servers"], ["mcp", "--transport", "http"]])
def test_ctrl_c_while_the_command_loads_is_one_line_and_130(
    env: dict[str, str], module: str, command: list[str]
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_IMPORT, module, *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 130, result.stderr
    assert_one_line(result, "interrupted")


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_stdio_mcp_stops_on_a_signal_without_a_traceback(env: dict[str, str], signum: int, code: int) -> None:
    process = subprocess.Popen(
        [COMMAND, "mcp"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert process.stdin is not None and process.stdout is not None
        # Serving for sure: it has answered the handshake. stdin stays open, as a client keeps it.
        process.stdin.write(json.dumps(INITIALIZE).encode() + b"\n")
        process.stdin.flush()
        assert select.select([process.stdout], [], [], 60)[0], "no answer to initialize"
        assert b'"result"' in process.stdout.readline()
        process.send_signal(signum)
        process.wait(timeout=10)  # a bound for failure: it used to wait for another line on stdin
        stderr = process.stderr.read().decode() if process.stderr else ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == code
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1].startswith("flexus-ops: ")


@pytest.mark.slow
async def test_sigterm_on_http_drains_in_flight_calls_then_exits_143(env: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    token_file = tmp_path / "session.token"
    with (tmp_path / "server.log").open("wb") as log:
        process = subprocess.Popen(
            [COMMAND, "mcp", "--transport", "http", "--port", str(port), "--token-file", str(token_file)],
            env=env | {"FLEXUS_SANDBOX_JOB_SECONDS": "3", "FLEXUS_JOB_POLL_SECONDS": "0.2"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        wait_http(f"{base}/healthz", process)
        headers = {"Authorization": f"Bearer {token_file.read_text().strip()}"}
        transport = streamable_http_client(f"{base}/mcp", http_client=httpx2.AsyncClient(headers=headers))
        progressed = asyncio.Event()

        async def progress(_done: float, _total: float | None, _message: str | None) -> None:
            progressed.set()  # the job was submitted: the call is in flight

        async with httpx2.AsyncClient() as probe, Client(transport, mode="legacy") as client:
            assert (await probe.get(f"{base}/readyz")).status_code == 200
            preview = structured(await client.call_tool("flexus_stop_servers", {"servers": ["web-01"]}))["preview"]
            confirmed = {"servers": ["web-01"], "confirmation_token": preview["confirmation_token"]}
            call = asyncio.create_task(client.call_tool("flexus_stop_servers", confirmed, progress_callback=progress))
            await asyncio.wait_for(progressed.wait(), 30)
            process.send_signal(signal.SIGTERM)
            statuses: list[int] = []
            for _ in range(100):  # a bound for failure: readiness flips as soon as the signal is handled
                statuses.append((await probe.get(f"{base}/readyz")).status_code)
                if statuses[-1] == 503:
                    break
                await asyncio.sleep(0.05)
            turned_away = await probe.post(f"{base}/mcp", headers=headers, json={})
            result = await asyncio.wait_for(call, 30)
        assert statuses[-1] == 503 and turned_away.status_code == 503
        assert structured(result)["result"]["status"] == "succeeded", text_of(result)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stderr = (tmp_path / "server.log").read_text()
    assert process.returncode == 143, stderr
    assert "Traceback" not in stderr


# -- MCP: an unexpected error is one line, not the SDK's generic wrapper ----------------------------


@pytest.fixture
async def registry(tmp_path: Path) -> Any:
    reg = make_registry(tmp_path, local_policy())
    yield reg
    await reg.aclose()


@pytest.mark.parametrize("debug", [False, True])
async def test_an_unexpected_error_reaches_the_mcp_client_as_one_line(
    registry: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, debug: bool
) -> None:
    async def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("the store went away\n[SQL: SELECT secret FROM actions]")

    monkeypatch.setattr(registry, "call", broken)
    monkeypatch.setattr(registry, "preview", broken)  # the elicitation resolver's path, too
    if debug:
        monkeypatch.setenv("FLEXUS_DEBUG", "1")
    caplog.set_level(logging.WARNING, logger="flexus_ops")
    async with Client(build_server(registry)) as client:
        read = await client.call_tool("flexus_list_servers", {"limit": 1})
        change = await client.call_tool("flexus_stop_servers", {"servers": ["web-01"]})
    for result in (read, change):
        assert result.is_error
        assert text_of(result) == "[SANDBOX cloud] internal error (RuntimeError): the store went away"
    logged = [r for r in caplog.records if r.name == "flexus_ops"]
    assert logged and all("internal error (RuntimeError)" in r.getMessage() for r in logged)
    assert all((r.exc_info is not None) is debug for r in logged)
