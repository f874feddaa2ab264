"""The chat surfaces' pure parts: the chat core's verb table and parser (never crashes, refuses passwords
without quoting them), Slack's Block Kit renderers (escaping, Slack's limits), the log filter and the
settings (the [slack] table is the Slack surface's, not the gate's)."""

from __future__ import annotations

import ast
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flexus_ops.bots.chat.parse import (
    ApprovalsRequest,
    ChangeRequest,
    FormRequest,
    Help,
    Problem,
    ReadRequest,
    looks_like_password,
    parse,
)
from flexus_ops.bots.chat.verbs import SCREEN_ROWS, SERVERS, VERBS, Arg, Flag, Verb, catalog, help_text, problems
from flexus_ops.bots.slack import blocks
from flexus_ops.bots.slack.logs import REDACTED, RedactSlackPayloads, guard_slack_loggers
from flexus_ops.bots.slack.settings import SlackBotSettings, SlackSettings, slack_settings
from flexus_ops.cloud import rules
from flexus_ops.core.errors import ConfigurationError
from flexus_ops.core.plans import ActionResult, Plan, PlanItem, Preview, ServerResult
from flexus_ops.gate.policy import Policy
from flexus_ops.registry.outputs import ListServersOutput

UUID = "1b4f6f66-0c5b-4d6e-9b8b-6c2b8f1f0a11"
TYPED_PASSWORD = "Hunter2!x-Slack"
RESET = "flexus_reset_servers_password"
SPECS = catalog()
HELP = help_text(SPECS)


# -- the parser: verbs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("list", ReadRequest("flexus_list_servers", {"limit": SCREEN_ROWS})),
        (
            "list status=active name=web tag=env=prod ip=10.0 page=2",
            ReadRequest(
                "flexus_list_servers",
                {"limit": SCREEN_ROWS, "status": "ACTIVE", "name": "web", "tag": "env=prod", "ip": "10.0", "page": 2},
            ),
        ),
        ("ls web --share", ReadRequest("flexus_list_servers", {"limit": SCREEN_ROWS, "name": "web"}, share=True)),
        ("show web-01", ReadRequest("flexus_show_server", {"server": "web-01"})),
        (f"show {UUID} --share", ReadRequest("flexus_show_server", {"server": UUID}, share=True)),
        ("job 8a2f11e0", ReadRequest("flexus_show_job", {"job_id": "8a2f11e0"})),
        ("approvals", ApprovalsRequest()),
        (
            "start web-01 db-prod-01",
            ChangeRequest("flexus_start_servers", {"servers": ["web-01", "db-prod-01"]}, "start"),
        ),
        ("stop web-01", ChangeRequest("flexus_stop_servers", {"servers": ["web-01"], "type": "SOFT"}, "stop")),
        ("STOP --hard web-01", ChangeRequest("flexus_stop_servers", {"servers": ["web-01"], "type": "HARD"}, "stop")),
        (
            "reboot web-01 -hard",
            ChangeRequest("flexus_reboot_servers", {"servers": ["web-01"], "type": "HARD"}, "reboot"),
        ),
        # Phones turn "--" into an em dash and quotes into curly ones.
        (
            "reboot \u2014hard web-01",
            ChangeRequest("flexus_reboot_servers", {"servers": ["web-01"], "type": "HARD"}, "reboot"),
        ),
        (
            "rename web-01 web-legacy-01",
            ChangeRequest("flexus_update_server", {"server": "web-01", "name": "web-legacy-01"}, "rename"),
        ),
        (
            "describe web-01 \u201cmain shop node\u201d",
            ChangeRequest("flexus_update_server", {"server": "web-01", "description": "main shop node"}, "describe"),
        ),
        (
            "describe web-01 A &amp; B",
            ChangeRequest("flexus_update_server", {"server": "web-01", "description": "A & B"}, "describe"),
        ),
        (
            "reboot tag=role=web waves=10 pause=30",
            ChangeRequest(
                "flexus_reboot_servers",
                {"select": {"tag": "role=web"}, "waves": {"size": 10, "pause_seconds": 30}, "type": "SOFT"},
                "reboot",
            ),
        ),
        (
            "start web-01 web-02 waves=1",
            ChangeRequest("flexus_start_servers", {"servers": ["web-01", "web-02"], "waves": {"size": 1}}, "start"),
        ),
        ("reset-password web-01 db-prod-01", FormRequest(RESET, {"servers": ["web-01", "db-prod-01"]})),
        (f"reset-password {UUID}", FormRequest(RESET, {"servers": [UUID]})),
        ("", Help()),
        ("   ", Help()),
        ("help", Help()),
    ],
)
def test_verbs_parse_to_the_registry_call(text: str, expected: Any) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("show", "exactly one server"),
        ("show web-01 web-02", "exactly one server"),
        ("stop", "at least one server"),
        ("stop web-01 web-01", "listed twice"),
        ("start --hard web-01", "does not take --hard"),
        ("stop --force web-01", "does not take --force"),
        ("rename web-01", "server and its new name"),
        ("describe web-01", "server and the text"),
        ("list color=red", "no filter `color`"),
        ("list page=0", "whole number"),
        ("list status=", "needs a value"),
        ("list name=a name=b", "given twice"),
        ("approvals now", "takes no arguments"),
        ('describe web-01 "unbalanced', "unbalanced quote"),
        ("job", "exactly one job-id"),
        ("reboot tag=role=web pause=30", "`pause` goes with `waves`"),
        ("stop web-01 waves=ten", "must be a whole number"),
        ("reboot web-01 waves=2 waves=3", "given twice"),
        ("x" * 5000, "too long"),
    ],
)
def test_mistakes_are_explained(text: str, words: str) -> None:
    result = parse(text)
    assert isinstance(result, Problem), result
    assert words in result.message


def test_unknown_verbs_get_the_help() -> None:
    result = parse("frobnicate web-01")
    assert isinstance(result, Help) and result.problem is not None and "`frobnicate`" in result.problem
    assert blocks.help_message(HELP, result.problem).text.count("/flexus") > 5


@pytest.mark.parametrize(
    "text",
    [
        f"reset-password web-01 {TYPED_PASSWORD}",
        f"reset-password {TYPED_PASSWORD} web-01",
        "reset-password web-01 Secr3tPassw0rd",  # a valid password with mixed case and digits
        f"reset-password web-01 password={TYPED_PASSWORD}",
        f"reset-password web-01 --password {TYPED_PASSWORD}",
        f"reset-password web-01 --new-password={TYPED_PASSWORD}",
        f"stop web-01 pw={TYPED_PASSWORD}",
        f"list name=web secret={TYPED_PASSWORD}",
        f"rename web-01 new_password:{TYPED_PASSWORD}",
        f"password={TYPED_PASSWORD}",
    ],
)
def test_a_password_in_the_text_is_refused_without_quoting_it(text: str) -> None:
    result = parse(text)
    assert isinstance(result, Problem), result
    assert "never taken from command text" in result.message
    assert "reset-password" in result.message  # says what to do instead
    for word in text.split()[1:]:
        secret = word.split("=")[-1].split(":")[-1]
        if looks_like_password(secret):
            assert secret not in result.message


def test_server_names_are_not_mistaken_for_passwords() -> None:
    for name in ("web-01", "db-prod-01", "cache-01", "测试机-01", "worker_7.eu", UUID):
        assert not looks_like_password(name), name
    assert parse("reset-password web-01 db-prod-01 cache-01") == FormRequest(
        RESET, {"servers": ["web-01", "db-prod-01", "cache-01"]}
    )


# -- the verb table -------------------------------------------------------------------------------


def test_every_verb_points_at_a_tool_and_its_fields() -> None:
    assert problems(VERBS, SPECS) == []
    pointed = {verb.tool for verb in VERBS if verb.tool}
    assert pointed <= set(SPECS) and pointed == set(SPECS), "a tool without a verb cannot be used from chat"


def test_a_row_that_does_not_match_the_registry_is_named() -> None:
    broken = (
        Verb("halt", "flexus_halt_servers", (SERVERS,)),
        Verb("stop", "flexus_stop_servers", (SERVERS,), (Flag("--hard", "kind", on="HARD", off="SOFT"),)),
        Verb("rotate", RESET, (Arg("new_password", "password", "a password", "x"),)),
        Verb("start", "flexus_start_servers", (SERVERS,), aliases=("stop",)),
    )
    found = "\n".join(problems(broken, SPECS))
    assert "no tool flexus_halt_servers" in found and "has no argument 'kind'" in found
    assert "never taken from chat text" in found and "`stop` is claimed by both" in found


def test_a_new_verb_is_one_row() -> None:
    halt = Verb("halt", "flexus_stop_servers", (SERVERS,), (Flag("--now", "type", on="HARD", off="SOFT"),))
    verbs = (*VERBS, halt)
    assert problems(verbs, SPECS) == []
    assert parse("halt --now web-01 web-02", verbs=verbs) == ChangeRequest(
        "flexus_stop_servers", {"servers": ["web-01", "web-02"], "type": "HARD"}, "halt"
    )
    assert "`/flexus halt [--now] <server...>`: Stop servers" in help_text(SPECS, verbs=verbs)


def test_the_help_is_made_from_the_table_and_the_specs() -> None:
    text = help_text(SPECS, needs_approval=lambda tool: tool == RESET)
    for verb in VERBS:
        if verb.name != "help":
            assert f"`{verb.usage()}`" in text, verb.name
    for spec in SPECS.values():
        assert spec.title in text, spec.name
    reads, changes = text.split("Changes (")
    assert "`/flexus show <server>`: Show server" in reads and "Stop servers" not in reads
    assert "`/flexus stop [--hard] [waves=10 [pause=30]] <server...>`: Stop servers\n" in changes
    assert "Reset servers' password (opens a private window; an approver must approve it)" in changes
    assert "must approve" not in help_text(SPECS)  # the policy says which changes need an approver


def test_the_chat_core_imports_no_chat_sdk() -> None:
    core = Path(__file__).resolve().parent.parent / "bots" / "chat"
    for path in core.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not [n for n in names if n.split(".")[0] in ("slack_bolt", "slack_sdk", "starlette")], path
            assert not [n for n in names if "slack" in n.split(".")], f"{path} imports the Slack surface"


# -- the parser: properties -----------------------------------------------------------------------

passwords = st.text(
    alphabet=st.sampled_from("abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789" + rules.PASSWORD_SPECIALS),
    min_size=8,
    max_size=26,
).filter(lambda p: rules.problem_with_password(p) is None)

# Passwords the parser must recognise on sight: with a character no server name can hold, or with
# upper and lower case letters and digits (a name that happens to satisfy the rules, like
# "db-prod-01", is a name: only an id-or-name the cloud knows can act, and it is never a secret).
obvious_passwords = passwords.filter(
    lambda p: (
        any(c in "!@%=+[]:/?" for c in p)
        or (any(c.isupper() for c in p) and any(c.islower() for c in p) and any(c.isdigit() for c in p))
    )
)


def _shown(result: object) -> str:
    """Everything a request could put in front of anyone: its fields and the message it renders to."""
    text = repr(result)
    if isinstance(result, Help):
        text += blocks.help_message(HELP, result.problem).text
    if isinstance(result, Problem):
        text += json.dumps(blocks.problem_message(result.message).blocks)
    return text


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300))
def test_any_text_parses_to_a_request_without_raising(text: str) -> None:
    result = parse(text)
    assert isinstance(result, Help | Problem | ReadRequest | ChangeRequest | FormRequest | ApprovalsRequest)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["reset-password", "reset_password", "stop", "list", "rename", "show", "start", "frobnicate"]),
    st.lists(st.sampled_from(["web-01", "db-prod-01", UUID, "--hard", "--share", "x=1"]), max_size=3),
    obvious_passwords,
    st.sampled_from(["{p}", "password={p}", "--pw={p}", "pass:{p}", "secret={p}", "new-password={p}"]),
    st.integers(min_value=0, max_value=3),
)
def test_a_password_never_comes_out_of_the_parser(
    verb: str, words: list[str], password: str, shape: str, position: int
) -> None:
    offered = shape.format(p=password)
    if verb not in ("reset-password", "reset_password") and shape == "{p}":
        return  # a bare word elsewhere is a server name or a filter: the registry refuses it, unechoed
    tokens = [verb, *words]
    tokens.insert(1 + min(position, len(words)), offered)
    result = parse(" ".join(tokens))
    assert isinstance(result, Problem | Help), result
    assert password not in _shown(result)


# -- rendering ----------------------------------------------------------------------------------


def _plan(n: int, note: str = "will stop (SOFT)") -> Plan:
    items = [PlanItem(server_id=f"id-{i}", name=f"web-{i:02d}", status="ACTIVE", act=True, note=note) for i in range(n)]
    return Plan(tool="flexus_stop_servers", summary=f"stop {n} of {n} server(s)", items=items)


def test_user_text_is_escaped_so_it_cannot_ping_or_link() -> None:
    plan = Plan(
        tool="flexus_update_server",
        summary="update <!channel>",
        items=[PlanItem(server_id="x", name="<!channel>", status="ACTIVE", act=True, note="will change description")],
        changes={"description": {"from": "<@U123>", "to": "<https://evil.example|click> & co"}},
    )
    preview = Preview(
        runnable=True, action_id="a" * 32, plan=plan, expires_at="2026-01-01T00:00:00Z", next_step="Ask the user."
    )
    shown = json.dumps(blocks.preview_message(preview, title="Update server", approvers=None, target=None).blocks)
    assert "<!channel>" not in shown and "<@U123>" not in shown and "<https://" not in shown
    assert "&lt;!channel&gt;" in shown and "&amp; co" in shown


def test_preview_buttons_carry_only_the_action_id_and_confirm_is_dangerous() -> None:
    preview = Preview(
        runnable=True, action_id="f" * 32, plan=_plan(2), expires_at="2026-01-01T00:00:00Z", next_step="Ask."
    )
    shown = blocks.preview_message(preview, title="Stop servers", approvers=None, target="SANDBOX cloud")
    found = {e["action_id"]: e for b in shown.blocks if b["type"] == "actions" for e in b["elements"]}
    assert found[blocks.CONFIRM]["value"] == "f" * 32 and found[blocks.CANCEL]["value"] == "f" * 32
    assert found[blocks.CONFIRM]["style"] == "danger" and found[blocks.CONFIRM]["confirm"]["style"] == "danger"
    assert "SANDBOX" in json.dumps(shown.blocks)


def test_a_preview_that_cannot_run_has_no_confirm_button() -> None:
    for step in ("Nothing to do: no server is in a state this action applies to.", "Cannot run: no approver."):
        plan = _plan(1) if step.startswith("Cannot") else Plan(tool="t", summary="s", items=[])
        preview = Preview(runnable=False, action_id="a" * 32, plan=plan, expires_at="x", next_step=step)
        shown = blocks.preview_message(preview, title="Stop servers", approvers=None, target=None)
        assert not [b for b in shown.blocks if b["type"] == "actions"]
        assert step.split(":")[0] in json.dumps(shown.blocks)


def test_long_answers_stay_within_slack_limits_and_say_how_many_are_left_out() -> None:
    preview = Preview(runnable=True, action_id="a" * 32, plan=_plan(300, "x" * 200), expires_at="x", next_step="Ask.")
    shown = blocks.preview_message(preview, title="Stop servers", approvers=None, target=None)
    result = ActionResult(
        status="partial",
        action_id="a" * 32,
        servers=[ServerResult(server_id=f"id-{i}", outcome="failed", detail="e" * 300) for i in range(300)],
        message="stop: 300 failed",
    )
    done = blocks.result_message("Stop servers", result, "<@U1>")
    listing = ListServersOutput(
        count=500, page=1, servers=[{"id": f"id-{i}", "name": f"n{i}", "status": "ACTIVE"} for i in range(SCREEN_ROWS)]
    )
    table = blocks.list_message(listing, {"limit": SCREEN_ROWS, "status": "ACTIVE"}, None)
    for message in (shown, done, table):
        assert len(message.blocks) <= blocks.MAX_BLOCKS and len(message.text) <= 3000
        for block in message.blocks:
            assert len(block.get("text", {}).get("text", "")) <= blocks.SECTION_CHARS
    assert "more" in json.dumps(shown.blocks) and "more" in json.dumps(done.blocks)
    assert "480 more" in json.dumps(table.blocks) and "page=2" in json.dumps(table.blocks)


def test_reset_modal_asks_twice_and_keeps_no_secret_in_its_metadata() -> None:
    view = blocks.reset_modal(["web-01"], json.dumps({"servers": ["web-01"]}))
    ids = [b.get("block_id") for b in view["blocks"] if b["type"] == "input"]
    assert ids == list(blocks.RESET_BLOCKS)
    assert view["callback_id"] == blocks.RESET_MODAL and "password" not in view["private_metadata"]


# -- logging --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        "Sending a request - url: https://slack.com/api/views.open, query_params: {}, json_body: {'view': '%s'}",
        "Received message (type: interactive, data: {'payload': {'state': '%s'}}, extra: None)",
        "Invalid request signature detected (signature: v0=abc, timestamp: 1, body: payload=%s)",
        'Responding with status: 200 body: "%s" (3 millis)',
        "Unhandled request ({'type': 'view_submission', 'view': '%s'})",
    ],
)
def test_the_filter_cuts_library_log_lines_where_the_payload_starts(message: str) -> None:
    record = logging.LogRecord(
        "slack_sdk.web.async_base_client", logging.DEBUG, __file__, 1, message, (TYPED_PASSWORD,), None
    )
    assert RedactSlackPayloads().filter(record)
    assert TYPED_PASSWORD not in record.getMessage() and record.getMessage().endswith(REDACTED)


def test_library_loggers_are_pinned_and_filtered() -> None:
    base = guard_slack_loggers()
    for name in ("slack_bolt", "slack_sdk", "slack_sdk.webhook.async_client", "slack_sdk.web.async_base_client"):
        assert any(isinstance(f, RedactSlackPayloads) for f in logging.getLogger(name).filters), name
    assert logging.getLogger("slack_sdk").level == logging.WARNING
    assert any(isinstance(f, RedactSlackPayloads) for f in base.filters)


# -- settings -------------------------------------------------------------------------------------


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-from-env")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "signing-from-env")
    monkeypatch.setenv("SLACK_API_URL", "http://127.0.0.1:9999/api")
    found = SlackBotSettings()
    assert found.bot_token is not None and found.bot_token.get_secret_value() == "xoxb-from-env"
    assert "signing-from-env" not in repr(found)  # secrets are SecretStr: never in a repr or a log
    assert found.web_api_base() == "http://127.0.0.1:9999/api/"
    assert SlackBotSettings(api_url="https://slack.com/api").web_api_base() == "https://slack.com/api/"  # type: ignore[call-arg]


def test_a_policy_with_a_slack_table_loads_without_slack(tmp_path: Path) -> None:
    """The gate keeps [slack] opaque: loading a policy imports nothing of Slack, installed or not."""
    policy = tmp_path / "policy.toml"
    policy.write_text('[slack]\napprovals_channel = "C0APPROVE1"\n[[people]]\nid = "a"\nprincipals = ["slack:U1"]\n')
    policy.chmod(0o600)
    script = (
        "import sys, pathlib\n"
        "for name in ('slack_bolt', 'slack_sdk'): sys.modules[name] = None  # as if the extra were not installed\n"
        "from flexus_ops.gate.policy import load_policy\n"
        "policy = load_policy(pathlib.Path(sys.argv[1]), required=True)\n"
        "assert policy.slack == {'approvals_channel': 'C0APPROVE1'}, policy.slack\n"
        "assert not [m for m in sys.modules if m.startswith('flexus_ops.bots')]\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(policy)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_the_slack_surface_validates_its_policy_table() -> None:
    found = slack_settings(Policy(slack={"channel_ids": ["C0OPS"], "approvals_channel": "C0APPROVE1"}))
    assert found == SlackSettings(channel_ids=["C0OPS"], approvals_channel="C0APPROVE1")
    assert slack_settings(Policy()) == SlackSettings()
    with pytest.raises(ConfigurationError, match=r"(?s)\[slack\].*chanel_ids"):
        slack_settings(Policy(slack={"chanel_ids": ["C0OPS"]}))  # a typo is refused, as the gate refused it


def test_a_plain_http_slack_api_url_is_only_for_loopback() -> None:
    with pytest.raises(ConfigurationError, match="loopback"):
        SlackBotSettings(api_url="http://slack.example.com/api/").web_api_base()  # type: ignore[call-arg]
