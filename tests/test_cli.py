"""The CLI surface, run as the real `flexus-ops` command in a clean environment."""

from __future__ import annotations

import argparse
import json
import os
import pty
import select
import shlex
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from flexus_ops import cli
from flexus_ops.registry.catalog import TOOLS
from flexus_ops.sandbox import DEFAULT_ACCESS_KEY, DEFAULT_PROJECT_ID, DEFAULT_SECRET_KEY
from tests.procs import clean_env, free_port, sim_process

ROOT = Path(__file__).resolve().parent.parent
COMMAND = str(Path(sys.executable).parent / "flexus-ops")
PASSWORD = "Cli-Secret-pass99"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return clean_env(tmp_path)


def run(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([COMMAND, *args], env=env, capture_output=True, text=True, timeout=120, input=stdin)


def run_in(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([COMMAND, *args], env=env, capture_output=True, text=True, timeout=120, cwd=cwd)


def problems(stderr: str) -> list[str]:
    """The stderr lines other than the sandbox marker."""
    return [line for line in stderr.strip().splitlines() if not line.startswith(SANDBOX_MARKER)]


SANDBOX_MARKER = "flexus-ops: SANDBOX cloud"


def test_tools_lists_the_catalog_and_export_matches_the_manifest(env: dict[str, str], tmp_path: Path) -> None:
    piped = run(env, "tools")  # stdout is a pipe: JSON
    assert piped.returncode == 0, piped.stderr
    names = [tool["name"] for tool in json.loads(piped.stdout)]
    assert len(names) == 9 and all(name.startswith("flexus_") for name in names)
    assert piped.stderr.startswith(SANDBOX_MARKER)
    table = run(env, "tools", "--output", "table")
    assert table.stdout.splitlines()[0].split() == ["tool", "safety", "approval", "title"]
    assert all(name in table.stdout for name in names)
    # Outside the repository (no manifests/ here), export writes to stdout, or to --to FILE.
    exported = run_in(tmp_path, env, "tools", "export")
    assert exported.returncode == 0, exported.stderr
    manifest = json.loads((ROOT / "manifests" / "tools.json").read_text())
    assert json.loads(exported.stdout) == manifest
    to_file = run_in(tmp_path, env, "tools", "export", "--to", "catalog.json")
    assert to_file.returncode == 0 and to_file.stdout == "", to_file.stderr
    assert json.loads((tmp_path / "catalog.json").read_text()) == manifest


def test_tools_show_prints_one_tools_schema(env: dict[str, str]) -> None:
    shown = run(env, "tools", "show", "flexus_stop_servers")
    assert shown.returncode == 0, shown.stderr
    tool = json.loads(shown.stdout)
    assert tool["name"] == "flexus_stop_servers" and {"servers", "select"} <= set(tool["inputSchema"]["properties"])
    assert tool["annotations"]["destructiveHint"] is True and tool["safety"] == "destructive"
    table = run(env, "tools", "show", "flexus_stop_servers", "--output", "table")
    assert "servers: array of string\n" in table.stdout and "select: object" in table.stdout
    required = run(env, "tools", "show", "flexus_show_server", "--output", "table")
    assert "server: string (required)" in required.stdout
    assert 'type: SOFT|HARD (default "SOFT")' in table.stdout and "destructiveHint=true" in table.stdout
    for args, words in (
        (["tools", "show"], "NAME: `tools show` needs a tool name"),
        (["tools", "show", "flexus_nope"], "NAME: no tool named 'flexus_nope'"),
        (["tools", "list", "flexus_stop_servers"], "only `tools show` takes a tool name"),
        (["tools", "list", "--to", "x.json"], "--to: only `tools export` writes to a file"),
        (["tools", "export", "--output", "table"], "--output: `tools export` writes the catalog as JSON only"),
    ):
        refused = run(env, *args)
        assert refused.returncode == 2 and refused.stdout == "", refused.stderr
        (line,) = problems(refused.stderr)
        assert line.startswith("flexus-ops: bad input: ") and words in line, line


def test_call_previews_then_confirms_with_the_token(env: dict[str, str]) -> None:
    args = json.dumps({"servers": ["web-01", "web-02"], "type": "HARD"})
    first = run(env, "call", "flexus_stop_servers", "--args", args)
    assert first.returncode == 0, first.stderr
    preview = json.loads(first.stdout)["preview"]
    notes = [item["note"] for item in preview["plan"]["items"]]
    assert len(notes) == 2 and all(note.startswith("will stop (HARD)") for note in notes)
    second = run(env, "call", "flexus_stop_servers", "--args", args, "--confirm", preview["confirmation_token"])
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["result"]["status"] == "succeeded"
    again = run(env, "call", "flexus_stop_servers", "--args", args, "--confirm", preview["confirmation_token"])
    assert again.returncode == 0 and json.loads(again.stdout)["result"]["replay"] is True


def test_a_confirmed_rollout_runs_to_its_end_in_the_cli(env: dict[str, str]) -> None:
    # The CLI process owns the rollout it confirms: it waits through every wave instead of exiting after
    # the first (which would stop the rollout).
    args = json.dumps({"servers": ["web-01", "web-02", "db-prod-01"], "waves": {"size": 1}})
    first = run(env, "call", "flexus_reboot_servers", "--args", args)
    assert first.returncode == 0, first.stderr
    preview = json.loads(first.stdout)["preview"]
    assert [len(wave) for wave in preview["plan"]["waves"]] == [1, 1, 1]
    second = run(env, "call", "flexus_reboot_servers", "--args", args, "--confirm", preview["confirmation_token"])
    assert second.returncode == 0, second.stderr
    result = json.loads(second.stdout)["result"]
    assert result["status"] == "succeeded"
    assert [wave["state"] for wave in result["rollout"]["waves"]] == ["done", "done", "done"]


def test_sigterm_mid_rollout_stops_it_here_records_where_and_prints_the_result(env: dict[str, str]) -> None:
    """SIGTERM (systemd, docker stop, kill) during a rollout: this process owns it, so it sends no further
    wave, records it stopped itself (not left for the settler) and prints the result with its resume call."""
    args = json.dumps({"servers": ["web-01", "web-02", "db-prod-01"], "waves": {"size": 1, "pause_seconds": 600}})
    first = run(env, "call", "flexus_reboot_servers", "--args", args)
    preview = json.loads(first.stdout)["preview"]
    confirming = subprocess.Popen(
        [COMMAND, "call", "flexus_reboot_servers", "--args", args, "--confirm", preview["confirmation_token"]],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(600):  # until wave 1 is recorded done: the process is in its 600 s pause
            shown = run(env, "call", "flexus_show_action", "--args", json.dumps({"action_id": preview["action_id"]}))
            waves = json.loads(shown.stdout)["action"].get("rollout", {}).get("waves", [])
            if waves and waves[0]["state"] == "done":
                break
            time.sleep(0.1)
        confirming.send_signal(signal.SIGTERM)
        out, err = confirming.communicate(timeout=60)
    finally:
        confirming.kill()
    assert confirming.returncode == 143, err
    result = json.loads(out)["result"]
    assert result["status"] == "stopped" and len(result["resume"]["arguments"]["servers"]) == 2
    assert [wave["state"] for wave in result["rollout"]["waves"]] == ["done", "not started", "not started"]
    shown = run(env, "call", "flexus_show_action", "--args", json.dumps({"action_id": preview["action_id"]}))
    action = json.loads(shown.stdout)["action"]
    assert action["state"] == "stopped"
    events = json.loads(run(env, "audit", "--output", "json").stdout)
    mine = [e["event"] for e in events if e.get("action_id") == preview["action_id"]]
    assert "reconciled" not in mine, mine  # recorded by its owner, not by a settler after the lease ran out


@pytest.mark.parametrize(
    ("args", "words", "code"),
    [
        (["call", "flexus_stop_servers", "--args", "{not json"], "--args: must be a JSON object", 2),
        (["call", "flexus_stop_servers", "--args", "[]"], "--args: must be a JSON object", 2),
        (["call", "flexus_stop_servers", "--args", '{"servers": []}'], "servers:", 2),
        (["call", "flexus_stop_servers", "--args", '{"servers": ["no-such-server"]}'], "no server named", 2),
        (["call", "flexus_nope"], "no tool named", 2),  # a name the registry does not know: bad input
    ],
)
def test_bad_input_exits_with_a_specific_message(env: dict[str, str], args: list[str], words: str, code: int) -> None:
    result = run(env, *args)
    assert result.returncode == code and words in result.stderr
    assert result.stderr.startswith(SANDBOX_MARKER)  # what was talked to, then the one line of the failure
    assert len(problems(result.stderr)) == 1 and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_approvals_audit_and_separation_of_duties(env: dict[str, str], tmp_path: Path) -> None:
    user = __import__("pwd").getpwuid(os.geteuid()).pw_name
    policy = tmp_path / "policy.toml"
    policy.write_text(
        f'[[people]]\nid = "me"\nroles = ["operator", "approver"]\nprincipals = ["os:{user}"]\n'
        '[[people]]\nid = "lead"\nroles = ["approver"]\nprincipals = ["slack:ULEAD"]\n'
    )
    # A reason that tries to clear the approver's screen and forge a line of the table.
    reason = "rotate\x1b[2J\x1b[31m\nAPPROVED-BY-CISO\x07"
    args = json.dumps({"servers": ["web-01"], "reason": reason, "new_password": PASSWORD})
    preview = json.loads(run(env, "call", "flexus_reset_servers_password", "--args", args).stdout)["preview"]
    confirmed = run(
        env, "call", "flexus_reset_servers_password", "--args", args, "--confirm", preview["confirmation_token"]
    )
    assert json.loads(confirmed.stdout)["result"]["status"] == "awaiting_approval"
    listing = run(env, "approvals", "list")
    (waiting,) = json.loads(listing.stdout)
    assert waiting["action_id"] == preview["action_id"] and waiting["yours"] is True
    table = run(env, "approvals", "list", "--output", "table")
    assert preview["action_id"] in table.stdout and "(yours)" in table.stdout
    assert "\x1b" not in table.stdout and "\x07" not in table.stdout
    assert "    reason: rotate\\x1b[2J\\x1b[31m\\nAPPROVED-BY-CISO\\x07\n" in table.stdout  # one line, escaped
    own = run(env, "approvals", "approve", preview["action_id"])
    assert own.returncode == 1 and "separation of duties" in own.stderr
    rejected = run(env, "approvals", "reject", preview["action_id"], "--note", "changed my mind")
    assert rejected.returncode == 0
    assert json.loads(rejected.stdout) == {"action_id": preview["action_id"], "state": "rejected"}

    audit = run(env, "audit")
    events = [record["event"] for record in json.loads(audit.stdout)]
    assert "approval_requested" in events and "cancelled" in events
    audit_table = run(env, "audit", "--output", "table", "--limit", "2")
    assert len(audit_table.stdout.splitlines()) == 2 and "cancelled" in audit_table.stdout
    verified = run(env, "audit", "verify")
    assert verified.returncode == 0 and json.loads(verified.stdout)["intact"] is True
    everything = audit.stdout + table.stdout + listing.stdout + confirmed.stdout + confirmed.stderr
    assert PASSWORD not in everything
    assert PASSWORD.encode() not in b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())

    with sqlite3.connect(tmp_path / "flexus.db") as db:
        db.execute("UPDATE flexus_audit SET person = 'someone-else' WHERE seq = 1")
    tampered = run(env, "audit", "verify", "--output", "table")
    assert tampered.returncode == 1 and "TAMPERED" in tampered.stdout
    tampered_json = run(env, "audit", "verify")
    assert tampered_json.returncode == 1 and json.loads(tampered_json.stdout)["problems"]


def test_terminal_asks_before_running(env: dict[str, str]) -> None:
    """On a terminal, `call` shows the plan and asks y/N (here answered through a pseudo-terminal)."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [COMMAND, "call", "flexus_reboot_servers", "--args", '{"servers": ["web-01"]}'],
        env=env,
        stdin=follower,
        stdout=subprocess.PIPE,
        stderr=follower,
        close_fds=True,
    )
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + 60
    while b"[y/N]" not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 1)
        if ready:
            seen += os.read(leader, 4096)
    assert b"web-01 (ACTIVE): will reboot (SOFT)" in seen and b"confirmation_token" not in seen
    os.write(leader, b"y\n")
    out, _ = process.communicate(timeout=60)
    os.close(leader)
    assert process.returncode == 0
    assert json.loads(out)["result"]["status"] == "succeeded"


def test_demo_runs_on_the_sandbox_even_with_credentials_set(env: dict[str, str]) -> None:
    result = run(env | {"HUAWEICLOUD_SDK_AK": "real", "HUAWEICLOUD_SDK_SK": "real"}, "demo", "--job-seconds", "0.1")
    assert result.returncode == 0, result.stderr
    assert "SANDBOX" in result.stdout and "chain: intact" in result.stdout and "REPLAY" in result.stdout


@pytest.mark.parametrize(
    "args",
    [["mcp", "--transport", "http", "--host", "0.0.0.0"], ["sim", "--host", "0.0.0.0"]],
)
def test_network_servers_refuse_to_bind_beyond_loopback_unprotected(env: dict[str, str], args: list[str]) -> None:
    result = run(env, *args)
    assert result.returncode == 2 and "refus" in result.stderr


# -- output formats -------------------------------------------------------------------------------


def on_terminal(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """Run with stdout on a pseudo-terminal (stderr a pipe): (exit code, stdout, stderr)."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [COMMAND, *args], env=env, stdin=subprocess.DEVNULL, stdout=follower, stderr=subprocess.PIPE, close_fds=True
    )
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)  # EIO once the command has exited and closed its side
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    _, err = process.communicate(timeout=120)
    return process.returncode, seen.decode().replace("\r\n", "\n"), err.decode()


@pytest.mark.parametrize(
    ("args", "table_words"),
    [
        (["tools"], "tool                             safety"),
        (["call", "flexus_list_servers", "--args", '{"limit": 3}'], "web-01"),
        (["approvals", "list"], "no approval requests are waiting"),
        (["audit"], "the audit log is empty"),
        (["token", "new", "--person", "alice"], "add this principal to their entry in the policy file"),
    ],
)
def test_a_terminal_gets_a_table_and_a_pipe_gets_json(env: dict[str, str], args: list[str], table_words: str) -> None:
    code, out, err = on_terminal(env, *args)
    assert code == 0, err
    assert table_words in out and not out.lstrip().startswith(("{", "[")), out
    piped = run(env, *args)
    assert piped.returncode == 0, piped.stderr
    json.loads(piped.stdout)  # all of stdout is one JSON document; notes and the marker are on stderr
    forced = on_terminal(env, *args, "--output", "json")
    assert forced[0] == 0 and json.loads(forced[1]) is not None


def test_token_new_as_json_names_the_principal(env: dict[str, str]) -> None:
    made = run(env, "token", "new", "--person", "alice")
    token = json.loads(made.stdout)
    assert token["person"] == "alice" and token["token"].startswith("fxt_")
    assert token["principal"].startswith("mcp-token:") and token["token"] not in token["principal"]


# -- help, completion, --region -------------------------------------------------------------------


def example_commands(epilog: str) -> list[list[str]]:
    """The example command lines of an epilog, as words after `flexus-ops`, up to a pipe or redirection."""
    text = epilog.split("Examples:", 1)[1].split("\n\n", 1)[0].replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        while words and "=" in words[0]:  # VARIABLE=value before the command
            words = words[1:]
        if words[:1] != ["flexus-ops"]:
            continue
        cut = next((i for i, word in enumerate(words) if word in ("|", ">", ">>")), len(words))
        commands.append(words[1:cut])
    return commands


def test_every_command_has_help_with_examples_and_defaults() -> None:
    parser = cli.full_parser()
    walked = cli.walk_parsers(parser)
    paths = {path for path, _ in walked}
    assert {"", "call", "tools", "approvals list", "approvals reveal", "audit", "completion", "sim", "mcp"} <= paths
    for path, sub in walked:
        assert sub.epilog and sub.epilog.startswith("Examples:"), f"`{path}` has no examples"
        examples = example_commands(sub.epilog)
        assert any(words[: len(path.split())] == path.split() for words in examples), f"no example of `{path}`"
        for words in examples:
            try:
                parser.parse_args(words)  # every example is a command line that parses
            except SystemExit:
                pytest.fail(f"the example `flexus-ops {shlex.join(words)}` does not parse")
        shown = "".join(sub.format_help().split())  # wrapping may break a line at any space or hyphen
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction | argparse._VersionAction | argparse._SubParsersAction):
                continue
            assert action.help, f"`{path}` {action.dest} has no help"
            default = action.default
            if default is None or default is False or default == argparse.SUPPRESS or "default" in action.help:
                continue
            assert f"(default:{default})" in shown, f"`{path}` does not show the default of {action.dest}"


def test_sim_help_through_the_command_has_examples_and_defaults(env: dict[str, str]) -> None:
    shown = run(env, "sim", "--help")
    assert shown.returncode == 0 and "Examples:" in shown.stdout and "flexus-ops sim --port 9090" in shown.stdout
    assert "(default: 7)" in " ".join(shown.stdout.split())  # --seed's help does not say it; the formatter does


@pytest.mark.parametrize("shell", ["bash", "zsh", "tcsh"])
def test_completion_scripts_name_the_commands_and_the_tools(env: dict[str, str], shell: str) -> None:
    script = run(env, "completion", shell)
    assert script.returncode == 0, script.stderr
    for word in ("approvals", "completion", "region", "output", *(spec.name for spec in TOOLS)):
        assert word in script.stdout, f"{shell} completion lacks {word}"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("flexus-ops call flexus_st", {"flexus_start_servers", "flexus_stop_servers"}),
        ("flexus-ops tools show flexus_sh", {"flexus_show_action", "flexus_show_job", "flexus_show_server"}),
        ("flexus-ops appr", {"approvals"}),
        ("flexus-ops call flexus_list_servers --out", {"--output"}),
        ("flexus-ops sim --se", {"--seed", "--servers", "--security-token"}),
    ],
)
def test_bash_completion_completes_commands_options_and_tool_names(
    env: dict[str, str], tmp_path: Path, line: str, expected: set[str]
) -> None:
    script = tmp_path / "flexus-ops.bash"
    script.write_text(run(env, "completion", "bash").stdout)
    words = line.split()
    program = (
        f"source {shlex.quote(str(script))}; COMP_WORDS=({shlex.join(words)}); COMP_CWORD={len(words) - 1}; "
        f"COMP_LINE={shlex.quote(line)}; COMP_POINT={len(line)}; "
        "_shtab_flexus_ops; printf '%s\\n' \"${COMPREPLY[@]}\""
    )
    completed = subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=60)
    assert set(completed.stdout.split()) == expected, completed.stdout + completed.stderr


def test_region_overrides_the_setting_for_one_call(env: dict[str, str], tmp_path: Path) -> None:
    show = ["call", "flexus_show_server", "--args", '{"server": "web-01"}']
    env = env | {"FLEXUS_REGION": "cn-south-1"}
    assert json.loads(run(env, *show).stdout)["server"]["az"].startswith("cn-south-1")
    before = run(env, "--region", "ap-southeast-1", *show)
    after = run(env, *show, "--region", "la-south-2")
    assert json.loads(before.stdout)["server"]["az"].startswith("ap-southeast-1"), before.stderr
    assert json.loads(after.stdout)["server"]["az"].startswith("la-south-2"), after.stderr
    assert "region la-south-2" in after.stderr  # the sandbox marker says which region it plays
    # Validated like FLEXUS_REGION: the region becomes part of a host name.
    bad = run(env, *show, "--region", "x@evil.com:9/")
    assert bad.returncode == 2 and "argument --region" in bad.stderr and "region name" in bad.stderr
    assert bad.stdout == ""
    # A bad FLEXUS_REGION fails (configuration, 4) unless --region stands in for it for this call.
    broken = env | {"FLEXUS_REGION": "Not A Region"}
    assert run(broken, *show).returncode == 4
    assert run(broken, *show, "--region", "cn-north-4").returncode == 0


# -- exit codes and the sandbox marker ------------------------------------------------------------


def closed_cloud() -> dict[str, str]:
    """Credentials set, an endpoint where nothing listens: the real-cloud client, failing to connect."""
    return {
        "FLEXUS_ECS_ENDPOINT": f"http://127.0.0.1:{free_port()}",
        "HUAWEICLOUD_SDK_AK": "test-ak",
        "HUAWEICLOUD_SDK_SK": "test-sk",
        "HUAWEICLOUD_SDK_PROJECT_ID": "0123456789abcdef0123456789abcdef",
        "FLEXUS_RETRY_ATTEMPTS": "0",
    }


STOP_WEB_01 = json.dumps({"servers": ["web-01"]})


@pytest.mark.parametrize(
    ("args", "cloud", "code", "words"),
    [
        (["call", "flexus_stop_servers", "--args", STOP_WEB_01, "--confirm", "fxc1.forged.token"], "", 1, "refused:"),
        (["call", "flexus_nope"], "", 2, "bad input: tool: no tool named"),
        (["call", "flexus_stop_servers", "--args", "{not json"], "", 2, "bad input: --args"),
        (["tools", "show", "flexus_nope"], "", 2, "bad input: NAME"),
        (["call", "flexus_list_servers", "--region", "NOT-A-REGION"], "none", 2, "argument --region"),
        (["call", "flexus_list_servers"], "closed", 3, "network:"),
        (["call", "flexus_stop_servers", "--args", STOP_WEB_01], "closed", 3, "network:"),
        (["call", "flexus_list_servers"], "bad-region", 4, "configuration: FLEXUS_REGION"),
    ],
)
def test_each_exit_code_of_the_table(env: dict[str, str], args: list[str], cloud: str, code: int, words: str) -> None:
    """README's table: a refusal (1), bad input (2), a network failure (3) and configuration (4) differ."""
    extra = closed_cloud() if cloud == "closed" else {"FLEXUS_REGION": "Bad"} if cloud == "bad-region" else {}
    result = run(env | extra, *args)
    assert result.returncode == code, result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert words in problems(result.stderr)[-1], result.stderr
    # The marker shows exactly when the sandbox is talked to (not when the arguments stopped the command).
    assert (SANDBOX_MARKER in result.stderr) is (cloud == ""), result.stderr


def test_a_lost_answer_to_a_change_exits_5_outcome_unknown(env: dict[str, str]) -> None:
    with sim_process("--job-seconds", "0.1") as url:
        cloud = env | {
            "FLEXUS_ECS_ENDPOINT": url,
            "HUAWEICLOUD_SDK_AK": DEFAULT_ACCESS_KEY,
            "HUAWEICLOUD_SDK_SK": DEFAULT_SECRET_KEY,
            "HUAWEICLOUD_SDK_PROJECT_ID": DEFAULT_PROJECT_ID,
            "FLEXUS_HTTP_TIMEOUT": "1",
        }
        preview = run(cloud, "call", "flexus_stop_servers", "--args", STOP_WEB_01)
        assert preview.returncode == 0, preview.stderr
        token = json.loads(preview.stdout)["preview"]["confirmation_token"]
        # The stop is processed after 3 s; the client gave up on its answer at 1 s.
        httpx.patch(f"{url}/_sandbox/knobs", json={"hang_next_write": 1, "hang_seconds": 3}).raise_for_status()
        confirmed = run(cloud, "call", "flexus_stop_servers", "--args", STOP_WEB_01, "--confirm", token)
    assert confirmed.returncode == 5, confirmed.stderr
    assert "outcome unknown" in confirmed.stderr and confirmed.stdout == ""
    assert SANDBOX_MARKER not in confirmed.stderr  # `sim` is a cloud endpoint like any other to the CLI


@pytest.mark.parametrize(
    "args",
    [
        ["tools"],
        ["tools", "show", "flexus_show_job"],
        ["call", "flexus_list_servers"],
        ["approvals", "list"],
        ["audit"],
    ],
)
def test_commands_on_the_sandbox_say_so_on_stderr(env: dict[str, str], args: list[str]) -> None:
    result = run(env, *args)
    assert result.returncode == 0, result.stderr
    first = result.stderr.splitlines()[0]
    assert first.startswith(SANDBOX_MARKER) and "no real servers are touched" in first, result.stderr
    json.loads(result.stdout)  # and stdout is the data alone


# -- the CLI's sandbox between calls --------------------------------------------------------------


def stop_without_waiting(env: dict[str, str], *names: str) -> dict[str, object]:
    args = json.dumps({"servers": list(names), "wait": False})
    preview = run(env, "call", "flexus_stop_servers", "--args", args)
    assert preview.returncode == 0, preview.stderr
    token = json.loads(preview.stdout)["preview"]["confirmation_token"]
    confirmed = run(env, "call", "flexus_stop_servers", "--args", args, "--confirm", token)
    assert confirmed.returncode == 0, confirmed.stderr
    result: dict[str, object] = json.loads(confirmed.stdout)["result"]
    return result


def status_of(env: dict[str, str], name: str) -> str:
    shown = run(env, "call", "flexus_show_server", "--args", json.dumps({"server": name}))
    assert shown.returncode == 0, shown.stderr
    status: str = json.loads(shown.stdout)["server"]["status"]
    return status


def test_a_job_started_by_one_call_is_shown_by_the_next(env: dict[str, str], tmp_path: Path) -> None:
    slow = env | {"FLEXUS_SANDBOX_JOB_SECONDS": "3600"}  # still running at every later call of this test
    started = stop_without_waiting(slow, "web-01")
    (job_id,) = started["job_ids"]  # type: ignore[misc]
    job = json.loads(run(slow, "call", "flexus_show_job", "--args", json.dumps({"job_id": job_id})).stdout)
    assert job["job_id"] == job_id and job["status"] == "RUNNING"
    state = tmp_path / "sandbox-cn-north-4.json"
    assert stat.S_IMODE(state.stat().st_mode) == 0o600


def test_a_finished_job_leaves_the_server_stopped_for_the_next_call(env: dict[str, str]) -> None:
    quick = env | {"FLEXUS_SANDBOX_JOB_SECONDS": "0"}  # due at once: finished by the next call, by wall clock
    assert status_of(quick, "web-02") == "ACTIVE"
    (job_id,) = stop_without_waiting(quick, "web-02")["job_ids"]  # type: ignore[misc]
    job = json.loads(run(quick, "call", "flexus_show_job", "--args", json.dumps({"job_id": job_id})).stdout)
    assert job["status"] == "SUCCESS"
    assert status_of(quick, "web-02") == "SHUTOFF"
    assert status_of(quick, "web-01") == "ACTIVE"  # and nothing else changed


def test_concurrent_calls_keep_each_others_changes(env: dict[str, str]) -> None:
    quick = env | {"FLEXUS_SANDBOX_JOB_SECONDS": "0"}
    names = ["web-01", "web-02", "db-prod-01", "api-gateway-01"]
    tokens = {}
    for name in names:
        args = json.dumps({"servers": [name], "wait": False})
        preview = run(quick, "call", "flexus_stop_servers", "--args", args)
        tokens[name] = (args, json.loads(preview.stdout)["preview"]["confirmation_token"])
    processes = [
        subprocess.Popen(
            [COMMAND, "call", "flexus_stop_servers", "--args", args, "--confirm", token],
            env=quick,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for args, token in tokens.values()
    ]
    for process in processes:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err.decode()
    assert {name: status_of(quick, name) for name in names} == dict.fromkeys(names, "SHUTOFF")
