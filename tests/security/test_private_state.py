"""Threat: another local user reads the audit, the pending actions and their reasons, or the keys.

The state dir is created 0700 and everything in it 0600, whatever the umask; a state dir that others can
already read is reported at start."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

COMMAND = str(Path(sys.executable).parent / "flexus-ops")


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
