"""The repository's contracts: the README's test command is what CI runs, the manifests match the code."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from flexus_ops import __version__
from flexus_ops.config import Settings

ROOT = Path(__file__).resolve().parent.parent
# The MCP registry's published schema, vendored as data (source and version: tests/data/README.md).
SERVER_SCHEMA = json.loads((ROOT / "tests" / "data" / "mcp-server.schema.json").read_text())


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


def server_manifest() -> dict[str, Any]:
    return json.loads((ROOT / "manifests" / "server.json").read_text())


def schema_errors(manifest: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(SERVER_SCHEMA, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(manifest)]


def test_server_manifest_validates_against_the_registry_schema() -> None:
    manifest = server_manifest()
    assert manifest["$schema"] == SERVER_SCHEMA["$id"], "server.json names another schema version than the vendored one"
    assert schema_errors(manifest) == []


@pytest.mark.parametrize(
    ("breakage", "path"),
    [
        (lambda m: m.update(description="x" * 101), "description"),  # the registry's 100-character limit
        (lambda m: m.update(name="flexus-ops"), "name"),  # reverse-DNS with one slash
        (lambda m: m["remotes"][0].update(url="{host}/mcp"), "remotes/0"),  # must be an http(s) URL template
        (lambda m: m["packages"][0].update(version="latest"), "packages/0/version"),
    ],
)
def test_the_vendored_schema_refuses_what_the_registry_refuses(breakage: Any, path: str) -> None:
    manifest = copy.deepcopy(server_manifest())
    breakage(manifest)
    assert any(error.startswith(path) for error in schema_errors(manifest)), schema_errors(manifest)


def test_server_manifest_matches_the_package() -> None:
    manifest = server_manifest()
    assert manifest["version"] == __version__
    known = {alias for field in Settings.model_fields.values() for alias in field.validation_alias.choices}  # type: ignore[union-attr]
    for package in manifest["packages"]:
        assert package["identifier"] == "flexus-ops"
        assert package["version"] == __version__
        for variable in package["environmentVariables"]:
            assert variable["name"] in known, f"{variable['name']} is not a setting flexus-ops reads"


def test_the_remote_is_a_template_with_a_secret_authorization_header() -> None:
    (remote,) = server_manifest()["remotes"]
    assert remote["type"] == "streamable-http"
    assert remote["url"].endswith("/mcp")
    used = set(re.findall(r"{(\w+)}", remote["url"]))
    assert used, "the remote URL names no variable: each team runs its own server"
    assert used == set(remote["variables"]), "every URL variable is defined, and only those"
    (authorization,) = [header for header in remote["headers"] if header["name"] == "Authorization"]
    assert authorization["isSecret"] is True and authorization["isRequired"] is True
    assert authorization["value"].startswith("Bearer {")
    for name in re.findall(r"{(\w+)}", authorization["value"]):
        assert authorization["variables"][name]["isSecret"] is True


def test_readme_names_the_server_for_the_registry() -> None:
    """The registry proves a PyPI package is ours by the `mcp-name:` line in the README PyPI shows."""
    readme = (ROOT / "README.md").read_text()
    names = re.findall(r"<!-- mcp-name: (\S+) -->", readme)
    assert names == [server_manifest()["name"]]
