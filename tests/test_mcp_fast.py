"""``flexus-ops mcp``'s fast start (tools/mcp_fast.py, tools/launch.py): its answers are the SDK's own, it
is taken only where it can be exact, and the stream it hands over behaves as if the SDK had had it all along."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.server.stdio import stdio_server
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from flexus_ops import __version__, mcp_fast
from flexus_ops.config import REGION_PATTERN, Settings, secret_variables
from flexus_ops.core.telemetry import LOG_FORMATS, LOG_LEVELS
from flexus_ops.launch import stdio_mcp_read_only
from flexus_ops.mcp_fast import FastConfig, Handover, Handshake, fast_config, serve_stream
from flexus_ops.mcp_server import build_server, tool_catalog
from flexus_ops.registry.registry import Registry
from tests.test_mcp import Elicitor, structured, text_of

ROOT = Path(__file__).resolve().parent.parent
COMMAND = str(Path(sys.executable).parent / "flexus-ops")
CLIENT = {"name": "test", "version": "0"}


def line(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


def initialize(version: str, request_id: int | str = 1, capabilities: dict[str, Any] | None = None) -> bytes:
    params = {"protocolVersion": version, "capabilities": capabilities or {}, "clientInfo": CLIENT}
    return line({"jsonrpc": "2.0", "id": request_id, "method": "initialize", "params": params})


INITIALIZED = line({"jsonrpc": "2.0", "method": "notifications/initialized"})


def request(request_id: int, method: str, params: dict[str, Any] | None = None) -> bytes:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return line(message)


def handshake_lines(version: str) -> list[bytes]:
    return [initialize(version), INITIALIZED, request(2, "tools/list"), request(3, "ping")]


def sandbox_registry(state_dir: Path, read_only: bool) -> Registry:
    """The registry the fast path answers for: the embedded sandbox, no policy file."""
    return Registry(Settings(state_dir=state_dir), read_only=read_only)


async def sdk_answers(server: Any, lines: list[bytes]) -> list[dict[str, Any]]:
    """What the SDK's own stdio transport answers to ``lines``: each request's answer is awaited before the
    next line is sent, as a client does (the end of input would cancel a request still running)."""
    answers: list[dict[str, Any]] = []
    arrived = anyio.Event()

    class Out:
        async def write(self, text: str) -> None:
            nonlocal arrived
            answers.append(json.loads(text))
            arrived.set()
            arrived = anyio.Event()

        async def flush(self) -> None:
            pass

    class In:
        def __aiter__(self) -> Any:
            return self.lines()

        async def lines(self) -> Any:
            for raw in lines:
                waiting = arrived
                yield raw.decode()
                if b'"id"' in raw:
                    with anyio.fail_after(30):
                        await waiting.wait()

    lowlevel = server._lowlevel_server
    async with stdio_server(stdin=In(), stdout=Out()) as (read_stream, write_stream):  # type: ignore[arg-type]
        await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())
    return answers


def fast_answers(config: FastConfig, lines: list[bytes]) -> list[dict[str, Any]]:
    handshake = Handshake(config, __version__)
    answers = []
    for raw in lines:
        reply = handshake.answer(raw.rstrip(b"\n"))
        assert reply is not None, raw
        answers.extend(json.loads(part) for part in reply.splitlines())
    return answers


# -- the fast answers are the SDK's ----------------------------------------------------------------


@pytest.mark.parametrize("read_only", [False, True])
@pytest.mark.parametrize("version", [*HANDSHAKE_PROTOCOL_VERSIONS, "1999-01-01"])
async def test_fast_answers_equal_the_sdks(tmp_path: Path, version: str, read_only: bool) -> None:
    config = fast_config({"FLEXUS_STATE_DIR": str(tmp_path)}, read_only=read_only)
    assert config is not None
    registry = sandbox_registry(tmp_path, read_only)
    lines = handshake_lines(version)
    assert fast_answers(config, lines) == await sdk_answers(build_server(registry), lines)
    await registry.aclose()


def test_the_fast_paths_facts_are_the_codes(tmp_path: Path) -> None:
    """Each constant the fast path keeps to stay import-free, against what it stands for."""
    assert tuple(HANDSHAKE_PROTOCOL_VERSIONS) == mcp_fast.HANDSHAKE_VERSIONS
    aliases = {str(c).lower() for f in Settings.model_fields.values() for c in f.validation_alias.choices}  # type: ignore[union-attr]
    assert aliases == mcp_fast.SETTINGS_VARIABLES
    assert {v.lower() for v in secret_variables(Settings).values()} <= mcp_fast.SETTINGS_VARIABLES
    assert REGION_PATTERN.pattern == mcp_fast.REGION_PATTERN.pattern
    assert (LOG_LEVELS, LOG_FORMATS) == (mcp_fast.LOG_LEVELS, mcp_fast.LOG_FORMATS)
    assert Settings(state_dir=tmp_path).describe_target() == mcp_fast.SANDBOX_TARGET
    for setting, (variables, _) in mcp_fast.FAST_SETTINGS.items():
        assert set(variables) == {str(c).lower() for c in Settings.model_fields[setting].validation_alias.choices}  # type: ignore[union-attr]


def test_the_packaged_catalog_is_the_exported_one(tmp_path: Path) -> None:
    """The fast path's tools/list comes from the package's copy: the same as manifests/tools.json and the code."""
    packaged = json.loads(mcp_fast.CATALOG_FILE.read_text())
    exported = json.loads((ROOT / "manifests" / "tools.json").read_text())
    assert packaged == exported, "manifests/tools.json must stay a link to tools/mcp_catalog.json"
    assert packaged == tool_catalog(sandbox_registry(tmp_path, False))


# -- taken only where it is exact ------------------------------------------------------------------


@pytest.mark.parametrize(
    "environ",
    [
        {"HUAWEICLOUD_SDK_AK": "a", "HUAWEICLOUD_SDK_SK": "b"},  # the real cloud: another target
        {"huaweicloud_sdk_ak": "a"},  # Settings reads variables case-insensitively
        {"access_key": "a"},  # and by each alias
        {"HUAWEICLOUD_SDK_SK_FILE": "/run/secrets/sk"},
        {"FLEXUS_ECS_ENDPOINT": "http://127.0.0.1:9"},
        {"HUAWEICLOUD_SDK_REGION_ECS_CN_NORTH_4": "https://ecs.example"},
        {"FLEXUS_POLICY": "/etc/flexus/policy.toml"},
        {"FLEXUS_SANDBOX_SERVERS": "100"},  # not in the catalog, but a value only Settings checks
        {"FLEXUS_REGION": "not a region"},
        {"FLEXUS_LOG_LEVEL": "loud"},
        {"FLEXUS_STATE_DIR": "/a", "state_dir": "/b"},  # which one wins is Settings' business
        {"FLEXUS_MCP_FAST_START": "0"},
    ],
)
def test_any_other_configuration_starts_the_normal_way(tmp_path: Path, environ: dict[str, str]) -> None:
    assert fast_config({"FLEXUS_STATE_DIR": str(tmp_path), **environ}, read_only=False) is None


def test_a_policy_file_starts_the_normal_way(tmp_path: Path) -> None:
    environ = {"FLEXUS_STATE_DIR": str(tmp_path), "FLEXUS_REGION": "ap-southeast-1", "FLEXUS_LOG_FORMAT": "JSON"}
    assert fast_config(environ, read_only=False) is not None
    (tmp_path / "policy.toml").write_text("")  # it may disable tools or set read-only mode
    assert fast_config(environ, read_only=False) is None
    assert fast_config({"XDG_STATE_HOME": str(tmp_path.parent), "HOME": "/nowhere"}, read_only=True) is not None


@pytest.mark.parametrize(
    ("arguments", "read_only"),
    [
        (["mcp"], False),
        (["mcp", "--read-only"], True),
        (["--region", "ap-southeast-1", "mcp", "--transport=stdio", "--log-level", "DEBUG"], False),
        (["mcp", "--log-format", "json", "--region=cn-north-4", "--read-only"], True),
        (["mcp", "--transport", "http"], None),
        (["mcp", "--port", "9"], None),  # an HTTP option: the parser's to take
        (["mcp", "--read"], None),  # an abbreviation: the parser's to expand
        (["mcp", "--region", "EVIL"], None),
        (["mcp", "--log-level", "loud"], None),
        (["mcp", "mcp"], None),
        (["--read-only", "mcp"], None),
        (["tools"], None),
        ([], None),
    ],
)
def test_only_plain_stdio_command_lines_start_fast(arguments: list[str], read_only: bool | None) -> None:
    assert stdio_mcp_read_only(arguments) is read_only


def test_anything_unusual_is_left_to_the_sdk(tmp_path: Path) -> None:
    config = fast_config({"FLEXUS_STATE_DIR": str(tmp_path)}, read_only=False)
    assert config is not None
    early = Handshake(config, __version__)
    assert early.answer(request(1, "tools/list").strip()) is None  # before initialize: the SDK's error
    assert early.answer(request(1, "ping").strip()) is not None  # ping needs no handshake
    handshake = Handshake(config, __version__)
    assert handshake.answer(initialize("2025-11-25").strip())
    for raw in (
        b"{not json",
        b"",
        request(5, "tools/call", {"name": "flexus_list_servers", "arguments": {}}),
        request(6, "resources/list"),
        request(7, "no/such/method"),
        request(8, "tools/list", {"cursor": "x"}),
        request(9, "tools/list", {"_meta": {mcp_fast.MODERN_META_KEY: "2026-07-28"}}),
        initialize("2025-11-25", request_id=10),  # a second initialize: the SDK says what it says
        line({"jsonrpc": "2.0", "id": None, "method": "ping"}),
        line({"jsonrpc": "2.0", "id": 11, "method": "ping", "extra": 1}),
        line({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}),
        b'{"jsonrpc":"2.0","id":12,"method":"ping"}\r',
        # Found by attacking the fast start: each once crashed it (or was answered where the SDK drops it).
        b'{"jsonrpc":"2.0","id":13,"method":"ping","params":{"x":' + b"[" * 5000 + b"]" * 5000 + b"}}",
        b'{"jsonrpc":"2.0","id":"\\ud800","method":"ping"}',
        "\ufeff".encode() + b'{"jsonrpc":"2.0","id":14,"method":"ping"}',
        b'{"jsonrpc":"2.0","id":15,"method":"ping","params":{"_meta":{"x":"\xff"}}}',
    ):
        assert handshake.answer(raw.rstrip(b"\n")) is None, raw
    surrogate_client = initialize("2025-11-25").replace(b'"name":', b'"name":"\\udc00","was":', 1)
    assert Handshake(config, __version__).answer(surrogate_client.strip()) is None
    sneaky = initialize("2025-11-25", capabilities={"elicitation": True})  # not an object: SDK's to refuse
    assert Handshake(config, __version__).answer(sneaky.strip()) is None


# -- the handed-over stream ------------------------------------------------------------------------


async def test_the_handed_over_session_knows_the_handshake_and_hides_its_replay(tmp_path: Path) -> None:
    """In process, over pipes: the fast path answered the handshake, then the SDK gets the stream. It must
    answer what follows (tools/call, an unknown method, invalid JSON) exactly as it answers without the
    fast path, and never repeat its own answers to the replayed handshake."""
    config = fast_config({"FLEXUS_STATE_DIR": str(tmp_path)}, read_only=False)
    assert config is not None
    handshake = Handshake(config, __version__)
    for raw in (initialize("2025-11-25"), INITIALIZED):
        assert handshake.answer(raw.strip()) is not None
    rest = [
        request(4, "tools/call", {"name": "flexus_show_server", "arguments": {"server": "no-such-server"}}),
        request(5, "no/such/method"),
        b"{not json\n",
        request(6, "ping"),
    ]
    registry = sandbox_registry(tmp_path, False)
    server = build_server(registry)
    expected = await sdk_answers(server, [initialize("2025-11-25"), INITIALIZED, *rest])

    stdin_read, stdin_write = os.pipe()
    stdout_read, stdout_write = os.pipe()
    # The first unanswered line is in the handed-over bytes; the rest follow on the pipe, each request once
    # the one before it is answered, as a client sends them.
    handover = Handover(b"".join(handshake.replay) + rest[0], set(handshake.replay_ids), stdin_read, stdout_write)
    got: list[dict[str, Any]] = []
    reader = os.fdopen(stdout_read, "rb")
    async with anyio.create_task_group() as group:
        group.start_soon(serve_stream, server, handover)
        with anyio.fail_after(60):
            got.append(json.loads(await anyio.to_thread.run_sync(reader.readline)))
            for raw in rest[1:]:
                os.write(stdin_write, raw)
                if raw.startswith(b'{"jsonrpc"'):
                    got.append(json.loads(await anyio.to_thread.run_sync(reader.readline)))
        os.close(stdin_write)  # the client goes away: the server ends
    reader.close()
    for fd in (stdin_read, stdout_write):
        os.close(fd)
    assert got == expected[1:]
    assert got[0]["id"] == 4 and got[0]["result"]["isError"] is True
    await registry.aclose()


# -- as a client runs it ---------------------------------------------------------------------------


def fast_env(state_dir: Path, **variables: str) -> dict[str, str]:
    """No FLEXUS_SANDBOX_JOB_SECONDS and the like: those would (rightly) turn the fast path off."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUAWEICLOUD_", "FLEXUS_", "SLACK_"))}
    return env | {"FLEXUS_STATE_DIR": str(state_dir)} | variables


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_a_client_over_stdio_lists_calls_and_confirms_by_elicitation(tmp_path: Path, mode: str) -> None:
    params = StdioServerParameters(command=COMMAND, args=["mcp"], env=fast_env(tmp_path))
    person = Elicitor("accept")
    async with Client(params, mode=mode, elicitation_callback=person) as client:
        tools = await client.list_tools()
        listing = await client.call_tool("flexus_list_servers", {"limit": 1, "status": "ACTIVE"})
        target = structured(listing)["servers"][0]["name"]
        rebooted = await client.call_tool("flexus_reboot_servers", {"servers": [target]})
    assert len(tools.tools) == 9
    assert not rebooted.is_error, text_of(rebooted)
    assert structured(rebooted)["result"]["status"] == "succeeded"
    assert len(person.questions) == 1 and target in person.questions[0]


def converse(env: dict[str, str], lines: list[bytes]) -> tuple[list[dict[str, Any]], str]:
    """Raw JSON-RPC as a client speaks it: each line sent, each request's answer awaited before the next line
    is sent (the fast path answers at once, so a tools/call right after the handshake still comes before the
    server is built); then stdin closes."""
    process = subprocess.Popen(
        [COMMAND, "mcp"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdin is not None and process.stdout is not None and process.stderr is not None
    got: list[dict[str, Any]] = []
    try:
        for raw in lines:
            process.stdin.write(raw)
            process.stdin.flush()
            wanted = json.loads(raw).get("id") if raw.startswith(b'{"jsonrpc"') else None
            while wanted is not None and wanted not in [answer.get("id") for answer in got]:
                assert select.select([process.stdout], [], [], 120)[0], f"no answer to {raw[:80]!r}"
                got.append(json.loads(process.stdout.readline()))
        process.stdin.close()
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    return got, process.stderr.read().decode()


@pytest.mark.slow
def test_early_requests_get_the_answers_the_sdk_gives(tmp_path: Path) -> None:
    """A tools/call right behind the handshake (the SDK not loaded yet), an unknown method and invalid JSON:
    the same answers with the fast path as without it."""
    lines = [
        initialize("2025-11-25"),
        INITIALIZED,
        request(2, "tools/list"),
        request(3, "tools/call", {"name": "flexus_show_server", "arguments": {"server": "no-such-server"}}),
    ]
    later = [
        request(4, "no/such/method"),
        b"{not json\n",
        request(5, "ping"),
    ]
    fast, said = converse(fast_env(tmp_path / "fast", FLEXUS_LOG_LEVEL="debug"), lines + later)
    normal, _ = converse(fast_env(tmp_path / "normal", FLEXUS_MCP_FAST_START="0"), lines + later)
    assert "fast start: 3 message(s) answered" in said  # initialize, initialized, tools/list
    assert fast == normal
    assert [answer["id"] for answer in fast] == [1, 2, 3, 4, 5]


@pytest.mark.slow
@pytest.mark.parametrize(
    "odd",
    [
        # Each once killed the fast start (too deep for json; a lone surrogate that cannot be written back)
        # or was answered by it where the SDK drops it (a BOM). The id goes first so that `converse` does
        # not wait for an answer the SDK does not give.
        b'{"id":6,"jsonrpc":"2.0","method":"ping","params":{"x":' + b"[" * 1500 + b"]" * 1500 + b"}}\n",
        b'{"id":"\\ud800","jsonrpc":"2.0","method":"ping"}\n',
        "\ufeff".encode() + b'{"jsonrpc":"2.0","id":7,"method":"ping"}\n',
    ],
    ids=["deep", "surrogate", "bom"],
)
def test_odd_lines_before_the_hand_over_get_the_sdks_treatment(tmp_path: Path, odd: bytes) -> None:
    lines = [initialize("2025-11-25"), INITIALIZED, odd, request(2, "tools/list"), request(3, "ping")]
    fast, _ = converse(fast_env(tmp_path / "fast"), lines)
    normal, _ = converse(fast_env(tmp_path / "normal", FLEXUS_MCP_FAST_START="0"), lines)
    assert fast == normal
    assert [answer["id"] for answer in fast][-2:] == [2, 3]


@pytest.mark.slow
def test_a_broken_state_dir_fails_with_the_normal_line_and_code(tmp_path: Path) -> None:
    """Past the fast answers, a start that fails says what the normal start says, and exits with its code."""
    state = tmp_path / "state"
    state.write_text("not a directory")
    process = subprocess.run(
        [COMMAND, "mcp"],
        env=fast_env(state),
        input=initialize("2025-11-25") + INITIALIZED + request(2, "tools/call", {"name": "flexus_list_servers"}),
        capture_output=True,
        timeout=120,
    )
    normal = subprocess.run(
        [COMMAND, "mcp"],
        env=fast_env(state, FLEXUS_MCP_FAST_START="0"),
        input=b"",
        capture_output=True,
        timeout=120,
    )
    assert normal.returncode != 0
    assert process.returncode == normal.returncode
    assert process.stderr.decode().strip().splitlines()[-1] == normal.stderr.decode().strip().splitlines()[-1]


def test_the_fast_path_imports_no_sdk_and_no_pydantic() -> None:
    """The point of it: what `flexus-ops mcp` imports before its first answer."""
    code = (
        "import sys, flexus_ops.launch, flexus_ops.mcp_fast; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mcp', 'mcp_types', 'pydantic', 'anyio', "
        "'asyncio', 'sqlalchemy', 'argparse') or m == 'flexus_ops.cli'))"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert found.stdout.strip() == "[]"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "code", "word"), [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
)
def test_a_signal_during_the_fast_start_ends_it_as_it_ends_a_start(
    tmp_path: Path, signum: int, code: int, word: str
) -> None:
    process = subprocess.Popen(
        [COMMAND, "mcp"], env=fast_env(tmp_path), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert process.stdin is not None and process.stdout is not None and process.stderr is not None
        process.stdin.write(initialize("2025-11-25"))
        process.stdin.flush()
        assert select.select([process.stdout], [], [], 60)[0], "no answer to initialize"
        assert b'"result"' in process.stdout.readline()
        process.send_signal(signum)  # most likely while the server is still being built
        process.wait(timeout=10)
        stderr = process.stderr.read().decode()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == code
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1] == f"flexus-ops: {word}"


@pytest.mark.slow
def test_a_client_that_stops_reading_gets_one_line_not_a_traceback(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [COMMAND, "mcp"], env=fast_env(tmp_path), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdout.close()  # nobody will read the answer
    _, stderr = process.communicate(initialize("2025-11-25"), timeout=120)
    assert process.returncode == 141, stderr
    assert b"Traceback" not in stderr and stderr.decode().strip().splitlines()[-1].startswith(
        "flexus-ops: output closed"
    )
