"""The package as users install it: a wheel built from the checkout, installed in a fresh virtual
environment, runs. An editable install hides a subpackage the build leaves out; a wheel does not. The base
install (no extras) runs the MCP server and the CLI; Slack and PostgreSQL say which extra they need."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters

from flexus_ops.cli import EXIT_STORE
from tests.procs import clean_env

ROOT = Path(__file__).resolve().parent.parent
IMAGE_SH = ROOT / "deploy" / "image.sh"  # the image's build steps: one way to build and install the wheel
OPTIONAL = ("slack_bolt", "slack_sdk", "aiohttp", "psycopg")  # what the [slack] and [postgres] extras bring
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The wheel, built once for this module. Removed at the end, with every venv made from it: the
    installed package holds the sandbox's well-known test credentials, which the session's secret scan
    would otherwise find in the files the tests left behind."""
    folder = tmp_path_factory.mktemp("wheel")
    build = ["sh", str(IMAGE_SH), "wheel", str(ROOT), str(folder / "wheels")]
    subprocess.run(build, check=True, capture_output=True, timeout=300, env={**os.environ, "PYTHON": sys.executable})
    yield folder / "wheels"
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    shutil.rmtree(tmp_path / "venv", ignore_errors=True)


def test_a_wheel_in_a_fresh_venv_runs_the_cli_and_a_tool_call(wheels: Path, scratch: Path) -> None:
    (wheel,) = wheels.glob("flexus_ops-*.whl")
    venv = scratch / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--no-deps", str(wheel)], check=True, timeout=120)
    # The dependencies come from this environment's site-packages, added as a plain path (its .pth files,
    # among them the editable install of the checkout, are not run): flexus_ops itself comes from the wheel.
    env = clean_env(scratch / "state", PYTHONPATH=sysconfig.get_paths()["purelib"])
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


def test_the_wheel_carries_the_license_and_the_registry_name_pypi_shows(wheels: Path) -> None:
    (wheel,) = wheels.glob("flexus_ops-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        license_file = next(n for n in names if n.endswith(".dist-info/licenses/LICENSE"))
        assert archive.read(license_file) == (ROOT / "LICENSE").read_bytes()
    name = json.loads((ROOT / "manifests" / "server.json").read_text())["name"]
    # The MCP registry proves the PyPI package is this server by this line in the description PyPI renders.
    assert f"<!-- mcp-name: {name} -->" in metadata
    assert "License: Apache-2.0" in metadata or "License-Expression: Apache-2.0" in metadata
    extras = set(re.findall(r"^Provides-Extra: (\S+)$", metadata, re.MULTILINE))
    assert {"slack", "postgres", "all", "dev"} <= extras


async def test_the_base_install_serves_mcp_and_names_the_extra_slack_and_postgres_need(
    wheels: Path, scratch: Path
) -> None:
    venv = scratch / "venv"
    install = ["sh", str(IMAGE_SH), "install", str(wheels), str(venv)]  # no extras: the base install
    done = subprocess.run(
        install, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHON": sys.executable}
    )
    assert done.returncode == 0, done.stderr[-2000:]
    env = clean_env(scratch / "state")
    python, command = str(venv / "bin" / "python"), str(venv / "bin" / "flexus-ops")
    probe = f"import importlib.util as u; print(','.join(m for m in {OPTIONAL!r} if u.find_spec(m)))"
    present = subprocess.run([python, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert present.returncode == 0 and present.stdout.strip() == "", f"the base install has {present.stdout}"

    params = StdioServerParameters(command=command, args=["mcp"], env=env)
    async with Client(params, mode="legacy") as client:
        listing = await client.call_tool("flexus_list_servers", {"limit": 1})
    assert not listing.is_error and listing.structured_content and listing.structured_content["count"] == 30

    slack = subprocess.run([command, "slack"], env=env, capture_output=True, text=True, timeout=60)
    assert slack.returncode == EXIT_STORE, slack.stderr
    assert "pip install 'flexus-ops[slack]'" in slack.stderr and "Traceback" not in slack.stderr

    postgres_env = {**env, "FLEXUS_STORE_URL": "postgresql://flexus@127.0.0.1:9/flexus"}
    audit = subprocess.run([command, "audit"], env=postgres_env, capture_output=True, text=True, timeout=60)
    assert audit.returncode == EXIT_STORE, audit.stderr
    assert "pip install 'flexus-ops[postgres]'" in audit.stderr and "Traceback" not in audit.stderr
