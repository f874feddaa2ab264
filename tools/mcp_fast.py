"""MCP over stdio before the SDK has loaded: the handshake (``initialize``, ``notifications/initialized``),
``tools/list`` and ``ping`` answered from the exported catalog, then the stream handed to the real server.

Importing the MCP SDK alone takes most of a second; a client's first two questions need none of it: the
catalog is exported (``mcp_catalog.json``, package data, the same file as ``manifests/tools.json``) and
the handshake's answer is fixed for a configuration. So ``flexus-ops mcp`` answers those from here while a
thread builds the real server, and hands the stream over at the first message it does not answer: the
handshake is replayed into the SDK's session (under request ids of its own, whose answers are dropped),
so the session knows the client's capabilities (elicitation) exactly as if it had answered itself, and
every later byte reaches the SDK as the client sent it.

Only the stdlib is imported here at module level: that is the point. The fast path is taken only for a
configuration whose answers it reproduces exactly (``fast_config``); anything else starts the normal way.
Tests compare these answers with the SDK's own for every handshake version and both modes.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

SERVER_NAME = "flexus-ops"
SERVER_TITLE = "Flexus L operations"
CATALOG_FILE = Path(__file__).with_name("mcp_catalog.json")
# What Settings.describe_target says for the embedded sandbox (the only target the fast path serves).
SANDBOX_TARGET = "SANDBOX cloud (embedded simulator, no real servers are touched)"
# The SDK's handshake versions (mcp_types.version.HANDSHAKE_PROTOCOL_VERSIONS; a test keeps them equal).
# An offer outside them is answered with the newest, as the SDK does.
HANDSHAKE_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
# The capabilities MCPServer declares for what build_server registers (tools, resources, prompts, completions).
CAPABILITIES: dict[str, Any] = {
    "completions": {},
    "prompts": {"listChanged": False},
    "resources": {"listChanged": False, "subscribe": False},
    "tools": {"listChanged": False},
}
# A request carrying this _meta key speaks the 2026-07-28 per-request envelope: the SDK's to route.
MODERN_META_KEY = "io.modelcontextprotocol/protocolVersion"
LOG_LEVELS = ("debug", "info", "warning", "error")  # core.telemetry's, kept equal by a test
LOG_FORMATS = ("text", "json")
REGION_PATTERN = re.compile(r"^[a-z]{2}(-[a-z0-9]+)+$")  # config.REGION_PATTERN, kept equal by a test
# Every environment variable Settings reads (lower-case: pydantic-settings matches them case-insensitively).
# A test keeps this equal to Settings' aliases. Set, any of them could change the target, the policy or the
# catalog, or fail validation before the first answer: the fast path then steps aside, except for those in
# FAST_SETTINGS, whose values it checks as Settings would.
SETTINGS_VARIABLES = frozenset(
    {
        "access_key", "allowed_hosts", "audit_key", "audit_previous_keys", "db_connect_timeout_seconds",
        "db_statement_timeout_seconds", "ecs_endpoint", "encryption_key", "flexus_allowed_hosts", "flexus_audit_key",
        "flexus_audit_previous_keys", "flexus_db_connect_timeout", "flexus_db_statement_timeout",
        "flexus_ecs_endpoint", "flexus_encryption_key", "flexus_http_timeout", "flexus_iam_domain",
        "flexus_iam_endpoint", "flexus_iam_password", "flexus_iam_user", "flexus_job_poll_max_seconds",
        "flexus_job_poll_seconds", "flexus_job_wait_seconds", "flexus_lease_seconds", "flexus_log_format",
        "flexus_log_level", "flexus_max_concurrency", "flexus_mcp_state_key", "flexus_oauth_audience",
        "flexus_oauth_issuer", "flexus_oauth_jwks_url", "flexus_policy", "flexus_public_url",
        "flexus_read_deadline", "flexus_region", "flexus_retry_attempts", "flexus_retry_base_seconds",
        "flexus_retry_max_seconds", "flexus_sandbox_job_seconds", "flexus_sandbox_seed", "flexus_sandbox_servers",
        "flexus_settle_seconds", "flexus_state_dir", "flexus_store_url", "flexus_token_key", "huaweicloud_sdk_ak",
        "huaweicloud_sdk_project_id", "huaweicloud_sdk_security_token", "huaweicloud_sdk_sk", "iam_domain",
        "iam_endpoint", "iam_password", "iam_user", "job_poll_max_seconds", "job_poll_seconds", "job_wait_seconds",
        "lease_seconds", "log_format", "log_level", "max_concurrency", "mcp_state_key", "oauth_audience",
        "oauth_issuer", "oauth_jwks_url", "policy_path", "project_id", "public_url", "read_deadline_seconds",
        "region", "retry_attempts", "retry_base_seconds", "retry_max_seconds", "sandbox_job_seconds",
        "sandbox_seed", "sandbox_servers", "secret_key", "security_token", "settle_interval_seconds", "state_dir",
        "store_url", "timeout_seconds", "token_key",
    }
)  # fmt: skip
# The settings the fast path allows, each with its variables and the check Settings applies to its value.
FAST_SETTINGS: dict[str, tuple[tuple[str, ...], Callable[[str], bool]]] = {
    "state_dir": (("flexus_state_dir", "state_dir"), lambda value: True),
    "region": (("flexus_region", "region"), lambda value: REGION_PATTERN.fullmatch(value) is not None),
    "log_level": (("flexus_log_level", "log_level"), lambda value: value.lower() in LOG_LEVELS),
    "log_format": (("flexus_log_format", "log_format"), lambda value: value.lower() in LOG_FORMATS),
}
# Turns the fast path off (a client that must see the SDK answer everything itself, or a suspected bug).
OFF_SWITCH = "FLEXUS_MCP_FAST_START"


def instructions(target: str, read_only: bool) -> str:
    """The server's instructions in ``initialize``: the one text build_server and the fast path send."""
    mode = " Read-only mode: only read tools are offered." if read_only else ""
    return (
        f"Operate Huawei Cloud Flexus L servers. Target: {target}.{mode} Changes are previewed first and "
        "run only after the user confirms; password resets also need a second person's approval. "
        "For many servers, pass `select` filters (as flexus_list_servers takes) instead of listing names; "
        "name single servers by id or exact name."
    )


def default_state_dir(environ: Mapping[str, str]) -> str:
    """config.default_state_dir without importing config: ``$XDG_STATE_HOME/flexus-ops``, else
    ``~/.local/state/flexus-ops``."""
    base = environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "flexus-ops")


class FastConfig(NamedTuple):  # no dataclasses here: its import (inspect) costs more than this module
    read_only: bool
    catalog: list[dict[str, Any]]


def fast_config(environ: Mapping[str, str], *, read_only: bool) -> FastConfig | None:
    """The configuration the fast path can answer for exactly, or None (start the normal way).

    That is: the embedded sandbox (no credential, endpoint, policy or other setting in the environment
    but the state dir, region and log options, valid), no policy file in the state dir (a policy may
    disable tools or set read-only mode), and the exported catalog present."""
    if environ.get(OFF_SWITCH, "1") == "0" or os.name != "posix":
        return None
    found: dict[str, list[tuple[str, str]]] = {}
    for name, value in environ.items():
        key = name.lower()
        if key.startswith("huaweicloud_sdk_region_ecs_"):
            return None  # an endpoint override: not the sandbox
        base = key.removesuffix("_file")
        if key in SETTINGS_VARIABLES or (base != key and base in SETTINGS_VARIABLES):
            found.setdefault(key, []).append((name, value))
    values: dict[str, str] = {}
    for setting, (variables, valid) in FAST_SETTINGS.items():
        given = [pair for variable in variables for pair in found.pop(variable, [])]
        if len(given) > 1:
            return None  # which one Settings takes is its business
        if given:
            if not valid(given[0][1]):
                return None  # Settings refuses it: the normal start says so
            values[setting] = given[0][1]
    if found:
        return None
    state_dir = values.get("state_dir", default_state_dir(environ))
    if os.path.lexists(os.path.join(state_dir, "policy.toml")):
        return None
    try:
        catalog = json.loads(CATALOG_FILE.read_bytes())
    except (OSError, ValueError):
        return None  # a build without the package data: the SDK answers from the code
    return FastConfig(read_only=read_only, catalog=catalog)


def offered(catalog: list[dict[str, Any]], read_only: bool) -> list[dict[str, Any]]:
    """The registry's rule (reads only in read-only mode), read off the annotations that come from it."""
    return [tool for tool in catalog if not read_only or tool["annotations"].get("readOnlyHint") is True]


def _dumps(value: Any) -> bytes:
    # The SDK's wire form: compact, UTF-8 as is.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _plain_params(params: Any, *allowed: str) -> bool:
    """Params the fast path may answer: absent, or an object with only ``allowed`` keys and a plain ``_meta``."""
    if params is None:
        return True
    if not isinstance(params, dict) or not set(params) <= {"_meta", *allowed}:
        return False
    meta = params.get("_meta")
    return meta is None or (isinstance(meta, dict) and MODERN_META_KEY not in meta)


def _plain_initialize(params: Any) -> bool:
    """An initialize the SDK accepts for sure; anything less ordinary is left to it (it may refuse)."""
    if not isinstance(params, dict) or not _plain_params(params, "protocolVersion", "capabilities", "clientInfo"):
        return False
    client, capabilities = params.get("clientInfo"), params.get("capabilities")
    return (
        isinstance(params.get("protocolVersion"), str)
        and isinstance(capabilities, dict)
        and all(isinstance(value, dict) for value in capabilities.values())
        and isinstance(client, dict)
        and isinstance(client.get("name"), str)
        and isinstance(client.get("version"), str)
    )


class Handshake:
    """Answers what it can, line by line; says None for the first line it leaves to the SDK."""

    def __init__(self, config: FastConfig, version: str) -> None:
        self.replay: list[bytes] = []
        """The messages the SDK's session must still see (the handshake), ids rewritten to ``replay_ids``."""
        self.replay_ids: set[str] = set()
        self.initialized = False
        self.answered = 0
        self._tools = _dumps({"tools": offered(config.catalog, config.read_only)})
        self._initialize = {
            "capabilities": CAPABILITIES,
            "instructions": instructions(SANDBOX_TARGET, config.read_only),
            "serverInfo": {"name": SERVER_NAME, "title": SERVER_TITLE, "version": version},
        }
        # Ids no client picks: the SDK's answers to the replayed requests are recognised by them, and dropped.
        self._marker = f"flexus-ops-handshake-{os.urandom(6).hex()}"

    def answer(self, line: bytes) -> bytes | None:
        """The bytes to write for ``line`` (empty for a notification), or None: hand it to the SDK."""
        reply = self._answer(line)
        self.answered += reply is not None
        return reply

    def _answer(self, line: bytes) -> bytes | None:
        if b"\r" in line or not line.strip():
            return None  # line ends and blank lines: exactly as the SDK's reader splits them, left to it
        try:
            # Strict UTF-8 text, as the SDK reads it: a BOM or invalid bytes are left to the SDK (json.loads of
            # bytes would guess an encoding and strip a BOM). Nesting too deep for json is left to it too.
            message = json.loads(line.decode("utf-8"))
            _dumps(message)  # a lone surrogate ("\\ud800") parses but cannot be written back as UTF-8
        except (ValueError, RecursionError):
            return None
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            return None
        if not isinstance(message.get("method"), str):
            return None  # a response, or not a message at all
        if not set(message) <= {"jsonrpc", "id", "method", "params"}:
            return None
        method, params = message["method"], message.get("params")
        if "id" not in message:
            if method == "notifications/initialized" and self.initialized and _plain_params(params):
                self.replay.append(line + b"\n")
                return b""
            return None
        request_id = message["id"]
        if isinstance(request_id, bool) or not isinstance(request_id, int | str):
            return None
        if method == "ping" and _plain_params(params):
            return self._response(request_id, b"{}")
        if method == "initialize" and not self.initialized and _plain_initialize(params):
            self.initialized = True
            offer = params["protocolVersion"]
            negotiated = offer if offer in HANDSHAKE_VERSIONS else HANDSHAKE_VERSIONS[-1]
            replay_id = f"{self._marker}-{len(self.replay_ids) + 1}"
            self.replay_ids.add(replay_id)
            self.replay.append(_dumps({**message, "id": replay_id}) + b"\n")
            return self._response(request_id, _dumps({"protocolVersion": negotiated, **self._initialize}))
        if method == "tools/list" and self.initialized and _plain_params(params):
            return self._response(request_id, self._tools)
        return None

    @staticmethod
    def _response(request_id: int | str, result: bytes) -> bytes:
        return b'{"jsonrpc":"2.0","id":' + _dumps(request_id) + b',"result":' + result + b"}\n"


class Handover(NamedTuple):
    """What the SDK's session must read first, and the answers it gives that the client must not see."""

    pending: bytes
    drop_ids: set[str]
    stdin_fd: int
    stdout_fd: int


class _Prefixed(io.RawIOBase):
    """The client's stream as the SDK reads it: the bytes already taken off the pipe, then the pipe."""

    def __init__(self, prefix: bytes, fd: int) -> None:
        super().__init__()
        self._prefix = memoryview(prefix)
        self._fd = fd

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._prefix:
            count = min(len(buffer), len(self._prefix))
            buffer[:count] = self._prefix[:count]
            self._prefix = self._prefix[count:]
            return count
        data = os.read(self._fd, len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _Unowned(io.TextIOWrapper):
    """Never closes the descriptor under it: a worker thread may still block on it after the transport ends
    (the SDK's stdio transport does the same)."""

    def close(self) -> None:
        with contextlib.suppress(ValueError):
            self.detach()


class _DropReplayAnswers:
    """The SDK's output, less its answers to the replayed handshake (the client had them from the fast path)."""

    def __init__(self, out: Any, drop_ids: set[str]) -> None:
        self._out = out
        self._drop = drop_ids

    async def write(self, text: str) -> None:
        if self._drop and any(marker in text for marker in self._drop):
            message = json.loads(text)
            if isinstance(message, dict) and message.get("id") in self._drop and "method" not in message:
                self._drop.discard(message["id"])
                if "error" in message:  # the fast path said yes where the SDK said no: say so, loudly
                    import logging

                    error = json.dumps(message["error"])[:300]
                    logging.getLogger("flexus_ops.mcp").error("the MCP SDK refused the replayed handshake: %s", error)
                return
        await self._out.write(text)

    async def flush(self) -> None:
        await self._out.flush()


async def serve_stream(server: MCPServer, handover: Handover) -> None:
    """``server.run_stdio_async()``, reading the handed-over bytes first. The descriptors were claimed by
    the fast path already (fd 0 on /dev/null, fd 1 on stderr, the wire on private duplicates), as the SDK's
    own transport claims them."""
    import anyio
    from mcp.server.stdio import stdio_server

    reader = io.BufferedReader(_Prefixed(handover.pending, handover.stdin_fd))
    stdin = anyio.wrap_file(_Unowned(reader, encoding="utf-8", errors="replace"))
    raw_out = os.fdopen(handover.stdout_fd, "wb", closefd=False)
    stdout = _DropReplayAnswers(anyio.wrap_file(_Unowned(raw_out, encoding="utf-8")), handover.drop_ids)
    lowlevel = server._lowlevel_server  # what run_stdio_async drives; it takes no streams of ours
    async with stdio_server(stdin=stdin, stdout=stdout) as (read_stream, write_stream):  # type: ignore[arg-type]
        await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())
