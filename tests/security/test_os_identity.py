"""Threat: a local user names themselves someone else through the environment (LOGNAME=bob) to approve
their own password reset. ``os:`` principals come from the kernel's effective uid, nothing else."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

from flexus_ops.gate import policy

COMMAND = str(Path(sys.executable).parent / "flexus-ops")
REAL_USER = pwd.getpwuid(os.geteuid()).pw_name
SPOOFS = ("LOGNAME", "USER", "LNAME", "USERNAME", "SUDO_USER")
RESET_PASSWORD = "Spoof-Secret-pass77"


def test_the_os_principal_ignores_every_identity_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SPOOFS:
        monkeypatch.setenv(name, "bob")
    policy.os_principal.cache_clear()
    try:
        assert policy.os_principal() == f"os:{REAL_USER}"
        assert policy.default_policy().people[0].principals == [f"os:{REAL_USER}"]
    finally:
        policy.os_principal.cache_clear()


def test_a_uid_without_a_passwd_entry_is_named_by_its_number(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_entry(uid: int) -> pwd.struct_passwd:
        raise KeyError(uid)

    monkeypatch.setattr(policy.pwd, "getpwuid", no_entry)
    assert policy.os_user() == f"uid:{os.geteuid()}"


def test_spoofing_logname_does_not_let_a_requester_approve_her_own_reset(tmp_path: Path) -> None:
    (tmp_path / "policy.toml").write_text(
        f'[[people]]\nid = "alice"\nroles = ["operator"]\nprincipals = ["os:{REAL_USER}"]\n'
        '[[people]]\nid = "bob"\nroles = ["approver"]\nprincipals = ["os:bob"]\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUAWEICLOUD_", "FLEXUS_", "SLACK_"))}
    env |= {"FLEXUS_STATE_DIR": str(tmp_path), "FLEXUS_SANDBOX_JOB_SECONDS": "0.1"}

    def run(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([COMMAND, *args], env=env | extra, capture_output=True, text=True, timeout=120)

    args = json.dumps({"servers": ["web-01"], "reason": "rotate", "new_password": RESET_PASSWORD})
    preview = json.loads(run("call", "flexus_reset_servers_password", "--args", args).stdout)["preview"]
    token = preview["confirmation_token"]
    confirmed = json.loads(run("call", "flexus_reset_servers_password", "--args", args, "--confirm", token).stdout)
    assert confirmed["result"]["status"] == "awaiting_approval"

    spoofed = run("approvals", "approve", preview["action_id"], **dict.fromkeys(SPOOFS, "bob"))
    assert spoofed.returncode != 0 and "not an approver" in spoofed.stderr
    listing = json.loads(run("approvals", "list", "--output", "json").stdout)
    assert [row["action_id"] for row in listing] == [preview["action_id"]], "still waiting for a real approver"
