"""The repository's contracts: the README's test command is what CI runs, the manifests match the code."""

from __future__ import annotations

import json
import re
from pathlib import Path

from flexus_ops import __version__
from flexus_ops.config import Settings

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    quick_start = (ROOT / "README.md").read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", quick_start)


def test_readme_has_exactly_two_commands_and_ci_runs_the_test_one() -> None:
    commands = readme_commands()
    assert len(commands) == 2, commands
    run_command, test_command = commands
    assert "flexus-ops mcp" in run_command
    assert "pytest" in test_command
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_server_manifest_matches_the_package() -> None:
    manifest = json.loads((ROOT / "manifests" / "server.json").read_text())
    assert manifest["version"] == __version__
    known = {alias for field in Settings.model_fields.values() for alias in field.validation_alias.choices}  # type: ignore[union-attr]
    for package in manifest["packages"]:
        assert package["version"] == __version__
        for variable in package["environmentVariables"]:
            assert variable["name"] in known, f"{variable['name']} is not a setting flexus-ops reads"
