"""Threat: another local user reads the audit, the pending actions and their reasons, or the keys.

The state dir is created 0700 and everything in it 0600, whatever the umask; a state dir that others can
already read is reported at start."""

from __future__ import annotations

import json
import os
import pwd
import stat
import subprocess
import sys
from pathlib import Path

COMMAND = str(Path(sys.executable).parent / "flexus-ops")
ME = pwd.getpwuid(os.geteuid()).pw_name


def run(state: Path, *args: str, umask: int = 0o022) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUAWEICLOUD_", "FLEXUS_", "SLACK_"))}
    env |= {"FLEXUS_STATE_DIR": str(state), "FLEXUS_SANDBOX_JOB_SECONDS": "0.1", "FLEXUS_JOB_POLL_SECONDS": "0.05"}
    return subprocess.run(
        [COMMAND, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: os.umask(umask),
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_state_is_private_whatever_the_umask(tmp_path: Path) -> None:
    state = tmp_path / "nested" / "state"
    args = json.dumps({"servers": ["web-01"]})
    preview = json.loads(run(state, "call", "flexus_stop_servers", "--args", args, umask=0).stdout)["preview"]
    done = run(state, "call", "flexus_stop_servers", "--args", args, "--confirm", preview["confirmation_token"])
    assert done.returncode == 0, done.stderr
    assert mode(state) == 0o700
    files = [p for p in state.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"flexus.db", "master.key"}
    assert {p.name: oct(mode(p)) for p in files} == {p.name: oct(0o600) for p in files}
    assert all(mode(d) == 0o700 for d in state.rglob("*") if d.is_dir())


def test_a_state_dir_others_can_read_is_reported(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)  # noqa: S103 - the readable state dir under test
    listing = run(state, "call", "flexus_list_servers", "--args", '{"limit": 1}')
    assert listing.returncode == 0
    assert "readable by other users" in listing.stderr and f"chmod 700 {state}" in listing.stderr


def test_a_state_dir_another_user_planted_is_refused(tmp_path: Path) -> None:
    """Another user makes the state dir first, with a key they know and a policy that makes them admin:
    nothing of it may be used (the finding: only a 'readable' warning, then the planted key was used)."""
    nobody = pwd.getpwnam("nobody").pw_uid
    state = tmp_path / "state"
    (state / "keys").mkdir(parents=True)
    (state / "keys" / "master.key").write_text("QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=")
    (state / "policy.toml").write_text(f'[[people]]\nid = "evil"\nroles = ["admin"]\nprincipals = ["os:{ME}"]\n')
    for path in (state, state / "keys", state / "keys" / "master.key", state / "policy.toml"):
        os.chown(path, nobody, nobody)
        os.chmod(path, 0o777 if path.is_dir() else 0o666)
    args = json.dumps({"servers": ["web-01"]})
    planted = run(state, "call", "flexus_stop_servers", "--args", args)
    assert planted.returncode == 4 and "belongs to uid" in planted.stderr, planted.stderr
    assert "Traceback" not in planted.stderr and not (state / "flexus.db").exists()

    # Owned by this user but writable by others (a dir, a key, a policy): refused as well.
    mine = tmp_path / "mine"
    first = json.loads(run(mine, "call", "flexus_stop_servers", "--args", args).stdout)["preview"]
    assert first["action_id"]
    for path, mode in ((mine / "keys" / "master.key", 0o644), (mine, 0o777)):
        os.chmod(path, mode)
        refused = run(mine, "call", "flexus_stop_servers", "--args", args)
        assert refused.returncode == 4 and "chmod" in refused.stderr, refused.stderr
        os.chmod(path, 0o600 if path.is_file() else 0o700)


def test_missing_parents_of_the_state_dir_are_made_private_too(tmp_path: Path) -> None:
    state = tmp_path / "a" / "b" / "state"
    assert run(state, "call", "flexus_list_servers", "--args", '{"limit": 1}', umask=0).returncode == 0
    preview = run(state, "call", "flexus_stop_servers", "--args", json.dumps({"servers": ["web-01"]}), umask=0)
    assert preview.returncode == 0, preview.stderr
    assert {mode(p) for p in (tmp_path / "a", tmp_path / "a" / "b", state)} == {0o700}
