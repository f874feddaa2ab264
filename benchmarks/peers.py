"""The peer Huawei Cloud MCP servers, each installed by the harness into its own virtual environment
under ``benchmarks/.venvs/`` (git-ignored): they are not our dependencies, and one of them needs
``mcp<2``, which cannot live beside our ``mcp>=2``.

A peer that cannot be installed or found here is reported as unavailable with the reason; the
harness never fails because of a peer.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .harness import VENVS_DIR, RunContext

INSTALL_TIMEOUT = 20 * 60
MARKER = ".flexus-bench-installed"


@dataclass(frozen=True)
class PeerSpec:
    name: str
    distribution: str
    version: str
    extra_requirements: tuple[str, ...]
    script: str
    """The console script (from the distribution's entry points) that serves MCP."""
    args: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    note: str = ""

    @property
    def requirements(self) -> list[str]:
        return [f"{self.distribution}=={self.version}", *self.extra_requirements]


# Dummy credentials: enough for each server to start and list its tools; they never reach a cloud
# because the benchmark only sends initialize and tools/list.
PEERS: tuple[PeerSpec, ...] = (
    PeerSpec(
        name="huaweicloud-open-mcp",
        distribution="huaweicloud-open-mcp",
        version="0.2.0a7",
        extra_requirements=(),
        script="huaweicloud-open-mcp",
        args=(),  # stdio is its default transport
        env={
            "HUAWEICLOUD_SDK_AK": "DUMMYAK0000000000000",
            "HUAWEICLOUD_SDK_SK": "dummy-sk-not-real",
            "HUAWEICLOUD_SDK_PROJECT_ID": "00000000000000000000000000000000",
        },
        note="7 gateway tools over 17,000+ APIs, mcp 2.x",
    ),
    PeerSpec(
        name="huaweicloud-mcp-server",
        distribution="huaweicloud-mcp-server",
        version="0.3.1",
        # Its fastmcp-era code imports mcp 1.x modules (mcp.server.fastmcp); mcp 2 removed them.
        extra_requirements=("mcp<2",),
        script="mcp-server-ecs",
        args=("-t", "stdio"),  # its packaged config defaults to HTTP
        env={"HUAWEI_ACCESS_KEY": "DUMMYAK0000000000000", "HUAWEI_SECRET_KEY": "dummy-sk-not-real"},
        note="the ECS server of the official per-service package, tools generated from OpenAPI, mcp 1.x",
    ),
)


@dataclass
class Peer:
    spec: PeerSpec
    command: list[str] | None
    versions: dict[str, str]
    unavailable: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.spec.name,
            "requirements": self.spec.requirements,
            "command": self.command,
            "versions": self.versions,
            "unavailable": self.unavailable,
            "note": self.spec.note,
        }


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _installed(venv: Path, spec: PeerSpec) -> bool:
    marker = venv / MARKER
    return venv_python(venv).exists() and marker.exists() and marker.read_text() == json.dumps(spec.requirements)


def install(spec: PeerSpec, ctx: RunContext) -> Path:
    """Create the peer's venv and install it, once; later runs reuse it (the marker records what)."""
    venv = VENVS_DIR / spec.name
    if _installed(venv, spec):
        return venv
    ctx.log(f"installing {' '.join(spec.requirements)} into {venv} (once)")
    venv.parent.mkdir(parents=True, exist_ok=True)
    # The base interpreter, not this venv's: a peer must not see our packages.
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--clear", str(venv)], check=True, capture_output=True, timeout=300)
    pip = [str(venv_python(venv)), "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    done = subprocess.run(
        [*pip, "install", *spec.requirements], capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"pip install {' '.join(spec.requirements)} failed: {done.stderr.strip()[-600:]}")
    (venv / MARKER).write_text(json.dumps(spec.requirements))
    return venv


_METADATA_PROBE = """
import importlib.metadata as m, json, sys
dist = m.distribution(sys.argv[1])
scripts = {e.name: e.value for e in dist.entry_points if e.group == "console_scripts"}
versions = {}
for name in sys.argv[2:]:
    try:
        versions[name] = m.version(name)
    except m.PackageNotFoundError:
        pass
print(json.dumps({"scripts": scripts, "versions": versions}))
"""


def _metadata(venv: Path, spec: PeerSpec) -> dict[str, Any]:
    """Console scripts and versions, read from the installed metadata (not guessed from file names)."""
    done = subprocess.run(
        [str(venv_python(venv)), "-c", _METADATA_PROBE, spec.distribution, spec.distribution, "mcp", "fastmcp"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout)


def prepare(spec: PeerSpec, ctx: RunContext) -> Peer:
    if ctx.skip_peers:
        return Peer(spec, None, {}, unavailable="skipped: --skip-peers")
    try:
        venv = install(spec, ctx)
        meta = _metadata(venv, spec)
    except Exception as exc:  # a peer that cannot be installed is reported, not fatal
        return Peer(spec, None, {}, unavailable=f"unavailable: {type(exc).__name__}: {str(exc)[:300]}")
    if spec.script not in meta["scripts"]:
        found = ", ".join(sorted(meta["scripts"])[:10])
        reason = f"unavailable: no console script {spec.script!r} in {spec.distribution} (has: {found})"
        return Peer(spec, None, meta["versions"], unavailable=reason)
    command = [str(venv / "bin" / spec.script), *spec.args]
    return Peer(spec, command, meta["versions"])


def prepare_all(ctx: RunContext) -> list[Peer]:
    cached = ctx.shared.get("peers")
    if cached is None:
        cached = ctx.shared["peers"] = [prepare(spec, ctx) for spec in PEERS]
    return cached
