"""The CLI surface, run as the real `flexus-ops` command in a clean environment."""

from __future__ import annotations

import json
import os
import pty
import select
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.procs import clean_env

ROOT = Path(__file__).resolve().parent.parent
COMMAND = str(Path(sys.executable).parent / "flexus-ops")
PASSWORD = "Cli-Secret-pass99"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return clean_env(tmp_path)


def run(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([COMMAND, *args], env=env, capture_output=True, text=True, timeout=120, input=stdin)


def test_tools_lists_the_catalog_and_export_matches_the_manifest(env: dict[str, str]) -> None:
    listing = run(env, "tools")
    assert listing.returncode == 0
    assert listing.stdout.count("flexus_") == 9 and "SANDBOX" in listing.stderr
    exported = run(env, "tools", "export", "--output", "-")
    assert json.loads(exported.stdout) == json.loads((ROOT / "manifests" / "tools.json").read_text())


def test_call_previews_then_confirms_with_the_token(env: dict[str, str]) -> None:
    args = json.dumps({"servers": ["web-01", "web-02"], "type": "HARD"})
    first = run(env, "call", "flexus_stop_servers", "--args", args)
    assert first.returncode == 0, first.stderr
    preview = json.loads(first.stdout)["preview"]
    assert [item["note"] for item in preview["plan"]["items"]] == ["will stop (HARD)"] * 2
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


@pytest.mark.parametrize(
    ("args", "words", "code"),
    [
        (["call", "flexus_stop_servers", "--args", "{not json"], "--args: must be a JSON object", 2),
        (["call", "flexus_stop_servers", "--args", "[]"], "--args: must be a JSON object", 2),
        (["call", "flexus_stop_servers", "--args", '{"servers": []}'], "servers:", 2),
        (["call", "flexus_stop_servers", "--args", '{"servers": ["no-such-server"]}'], "no server named", 2),
        (["call", "flexus_nope"], "unknown tool", 1),  # the registry refuses what it does not offer
    ],
)
def test_bad_input_exits_with_a_specific_message(env: dict[str, str], args: list[str], words: str, code: int) -> None:
    result = run(env, *args)
    assert result.returncode == code and words in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_approvals_audit_and_separation_of_duties(env: dict[str, str], tmp_path: Path) -> None:
    user = __import__("pwd").getpwuid(os.geteuid()).pw_name
    policy = tmp_path / "policy.toml"
    policy.write_text(
        f'[[people]]\nid = "me"\nroles = ["operator", "approver"]\nprincipals = ["os:{user}"]\n'
        '[[people]]\nid = "lead"\nroles = ["approver"]\nprincipals = ["slack:ULEAD"]\n'
    )
    args = json.dumps({"servers": ["web-01"], "reason": "rotate", "new_password": PASSWORD})
    preview = json.loads(run(env, "call", "flexus_reset_servers_password", "--args", args).stdout)["preview"]
    confirmed = run(
        env, "call", "flexus_reset_servers_password", "--args", args, "--confirm", preview["confirmation_token"]
    )
    assert json.loads(confirmed.stdout)["result"]["status"] == "awaiting_approval"
    listing = run(env, "approvals", "list")
    assert preview["action_id"] in listing.stdout and "(yours)" in listing.stdout
    own = run(env, "approvals", "approve", preview["action_id"])
    assert own.returncode == 1 and "separation of duties" in own.stderr
    rejected = run(env, "approvals", "reject", preview["action_id"], "--note", "changed my mind")
    assert rejected.returncode == 0

    audit = run(env, "audit")
    assert "approval_requested" in audit.stdout and "cancelled" in audit.stdout
    assert run(env, "audit", "verify").returncode == 0
    everything = audit.stdout + listing.stdout + confirmed.stdout + confirmed.stderr
    assert PASSWORD not in everything
    assert PASSWORD.encode() not in b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())

    with sqlite3.connect(tmp_path / "flexus.db") as db:
        db.execute("UPDATE flexus_audit SET person = 'someone-else' WHERE seq = 1")
    tampered = run(env, "audit", "verify")
    assert tampered.returncode == 1 and "TAMPERED" in tampered.stdout


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
