"""The package as users install it: a wheel built from the checkout, installed in a fresh virtual
environment, runs. An editable install hides a subpackage the build leaves out; a wheel does not."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.fixture
def scratch(tmp_path: Path):
    """Removed at the end: the installed package holds the sandbox's well-known test credentials, which
    the session's secret scan would otherwise find in the files the tests left behind."""
    yield tmp_path
    shutil.rmtree(tmp_path / "venv", ignore_errors=True)
    shutil.rmtree(tmp_path / "wheels", ignore_errors=True)


def test_a_wheel_in_a_fresh_venv_runs_the_cli_and_a_tool_call(scratch: Path) -> None:
    tmp_path = scratch
    wheels = tmp_path / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheels), str(ROOT)]
    subprocess.run(build, check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("flexus_ops-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--no-deps", str(wheel)], check=True, timeout=120)
    # The dependencies come from this environment's site-packages, added as a plain path (its .pth files,
    # among them the editable install of the checkout, are not run): flexus_ops itself comes from the wheel.
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("FLEXUS_", "HUAWEICLOUD_"))},
        "PYTHONPATH": sysconfig.get_paths()["purelib"],
        "FLEXUS_STATE_DIR": str(tmp_path / "state"),
    }
    command = str(venv / "bin" / "flexus-ops")
    where = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import flexus_ops.bots.slack.app, flexus_ops.core; print(flexus_ops.__file__)",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert where.returncode == 0, where.stderr
    assert where.stdout.startswith(str(venv)), "flexus_ops was imported from the checkout, not the wheel"
    version = subprocess.run([command, "--version"], env=env, capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("flexus-ops "), version.stderr
    call = subprocess.run(
        [command, "call", "flexus_list_servers", "--args", '{"limit": 1}'],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert call.returncode == 0 and '"count"' in call.stdout, call.stderr
