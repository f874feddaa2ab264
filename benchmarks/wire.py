"""A raw JSON-RPC driver for MCP over stdio: spawn, ``initialize``, ``notifications/initialized``,
``tools/list``; timed from just before the spawn to the last ``tools/list`` answer. Optionally one
``tools/call`` after that, timed from the same spawn to its answer (a server that answers the catalog
before it can run a tool must not look faster than it is).

It is written against the wire, not with ``mcp.Client``, so the client's own import and start-up
cost is not in the figure, servers built on either SDK generation are measured the same way, and the
bytes are the bytes a client actually receives.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROTOCOL_VERSION = "2025-11-25"  # the handshake era every server here speaks; each may answer its own
CLIENT_INFO = {"name": "flexus-ops-bench", "version": "0"}


@dataclass
class Probe:
    seconds_initialize: float
    seconds_total: float
    initialize_bytes: int
    """The initialize response line as received (the JSON-RPC envelope included, newline excluded)."""
    tools_list_bytes: int
    """Every tools/list response line, summed over pages."""
    tools: int
    protocol_version: str | None
    server_info: dict[str, Any] = field(default_factory=dict)
    initialize_result_bytes: int = 0
    tools_list_result_bytes: int = 0
    """The ``result`` objects alone, re-serialised compactly (what a client keeps)."""
    seconds_first_call: float | None = None
    """Spawn to the answer of the first ``tools/call``, when one was asked for."""

    def to_json(self) -> dict[str, Any]:
        return {
            "seconds_initialize": self.seconds_initialize,
            "seconds_total": self.seconds_total,
            "initialize_bytes": self.initialize_bytes,
            "tools_list_bytes": self.tools_list_bytes,
            "initialize_result_bytes": self.initialize_result_bytes,
            "tools_list_result_bytes": self.tools_list_result_bytes,
            "tools": self.tools,
            "protocol_version": self.protocol_version,
            "server_info": self.server_info,
            "seconds_first_call": self.seconds_first_call,
        }


class ProbeError(RuntimeError):
    pass


def _compact(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


class _Lines:
    """Newline-delimited messages from a pipe, with a deadline (a hung server must not hang the run)."""

    def __init__(self, process: subprocess.Popen[bytes], deadline: float) -> None:
        assert process.stdout is not None
        self.fd = process.stdout.fileno()
        self.process = process
        self.deadline = deadline
        self.buffer = b""
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.fd, selectors.EVENT_READ)

    def next(self) -> bytes:
        while b"\n" not in self.buffer:
            remaining = self.deadline - time.perf_counter()
            if remaining <= 0:
                raise ProbeError("timed out waiting for the server's answer")
            if not self.selector.select(timeout=remaining):
                continue
            chunk = os.read(self.fd, 1 << 20)
            if not chunk:
                raise ProbeError(f"the server closed stdout (exit code {self.process.poll()})")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.rstrip(b"\r")

    def answer(self, request_id: int) -> tuple[bytes, dict[str, Any]]:
        """The response to ``request_id``; notifications and stray non-JSON lines are skipped."""
        while True:
            line = self.next()
            try:
                message = json.loads(line)
            except ValueError:
                continue  # a log line on stdout; a strict client would fail here, we only measure
            if isinstance(message, dict) and message.get("id") == request_id and "method" not in message:
                if "error" in message:
                    raise ProbeError(f"request {request_id} failed: {json.dumps(message['error'])[:300]}")
                return line, message


def _send(process: subprocess.Popen[bytes], message: dict[str, Any]) -> None:
    assert process.stdin is not None
    process.stdin.write(json.dumps(message).encode("utf-8") + b"\n")
    process.stdin.flush()


def probe(
    command: list[str],
    env: dict[str, str],
    *,
    timeout: float = 120.0,
    cwd: str | None = None,
    call: tuple[str, dict[str, Any]] | None = None,
) -> Probe:
    """``call``: a tool and its arguments to call once the catalog is listed (its time is reported apart)."""
    with tempfile.TemporaryFile() as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, env=env, cwd=cwd
        )
        try:
            lines = _Lines(process, started + timeout)
            _send(
                process,
                {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "initialize",
                    "params": {"protocolVersion": PROTOCOL_VERSION, "capabilities": {}, "clientInfo": CLIENT_INFO},
                },
            )
            init_line, init = lines.answer(1)
            initialized_at = time.perf_counter()
            _send(process, {"jsonrpc": "2.0", "method": "notifications/initialized"})
            tools: list[Any] = []
            list_bytes = 0
            list_result_bytes = 0
            cursor: str | None = None
            request_id = 2
            while True:
                params = {"cursor": cursor} if cursor else {}
                _send(process, {"jsonrpc": "2.0", "id": request_id, "method": "tools/list", "params": params})
                line, answer = lines.answer(request_id)
                list_bytes += len(line)
                list_result_bytes += _compact(answer["result"])
                tools.extend(answer["result"].get("tools", []))
                cursor = answer["result"].get("nextCursor")
                if not cursor:
                    break
                request_id += 1
            finished = time.perf_counter()
            called: float | None = None
            if call is not None:
                request_id += 1
                name, arguments = call
                _send(
                    process,
                    {
                        "jsonrpc": "2.0",
                        "id": request_id,
                        "method": "tools/call",
                        "params": {"name": name, "arguments": arguments},
                    },
                )
                _, answered = lines.answer(request_id)
                if answered["result"].get("isError"):
                    raise ProbeError(f"tools/call {name} failed: {json.dumps(answered['result'])[:300]}")
                called = time.perf_counter() - started
        except ProbeError as error:
            stderr.seek(0)
            tail = stderr.read()[-1500:].decode("utf-8", "replace")
            raise ProbeError(f"{error}; stderr: {tail}") from None
        finally:
            _stop(process)
    result = init["result"]
    return Probe(
        seconds_initialize=initialized_at - started,
        seconds_total=finished - started,
        initialize_bytes=len(init_line),
        tools_list_bytes=list_bytes,
        tools=len(tools),
        protocol_version=result.get("protocolVersion"),
        server_info=result.get("serverInfo", {}),
        initialize_result_bytes=_compact(result),
        tools_list_result_bytes=list_result_bytes,
        seconds_first_call=called,
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    # Closing stdin is how a stdio client says goodbye; terminate only if the server ignores it.
    if process.stdin is not None:
        with contextlib.suppress(OSError):
            process.stdin.close()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    if process.stdout is not None:
        process.stdout.close()


def isolated_home() -> Path:
    """A throwaway HOME, so a peer neither reads a developer's credentials nor writes into their home."""
    return Path(tempfile.mkdtemp(prefix="flexus-bench-home-"))
