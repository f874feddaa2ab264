"""Threat: a secret that is not one clean line (a credential file with a second line, a value pasted with a
line break, a non-ASCII character in a header credential) ends up in an HTTP header the library refuses,
and the library's error, which quotes the raw header, reaches the terminal, the logs and every MCP caller.
Such a value is refused where it is loaded, naming the variable and never the value (exit 4)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.procs import FLEXUS_OPS, clean_env, sim_process

PROJECT = "0123456789abcdef0123456789abcdef"


def run_with(tmp_path: Path, sim: str, **variables: str) -> subprocess.CompletedProcess[str]:
    env = clean_env(tmp_path) | {
        "HUAWEICLOUD_SDK_AK": "AKFAKE",
        "HUAWEICLOUD_SDK_SK": "skfake",
        "HUAWEICLOUD_SDK_PROJECT_ID": PROJECT,
        "FLEXUS_ECS_ENDPOINT": sim,
        "FLEXUS_RETRY_ATTEMPTS": "1",
        "FLEXUS_READ_DEADLINE": "3",
    }
    for name in ("HUAWEICLOUD_SDK_AK", "HUAWEICLOUD_SDK_SK"):
        if name + "_FILE" in variables:
            env.pop(name)
    env |= variables
    return subprocess.run(
        [FLEXUS_OPS, "call", "flexus_list_servers", "--args", '{"limit": 1}'],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def sim() -> str:
    with sim_process("--servers", "5") as url:
        yield url


@pytest.mark.parametrize(
    ("variable", "content"),
    [
        ("HUAWEICLOUD_SDK_SECURITY_TOKEN", "STS-TOKEN-SECRET\nGARBAGE-STS-LINE\n"),
        ("HUAWEICLOUD_SDK_AK", "AKFAKE-SECRET-AK\nGARBAGE-AK-LINE\n"),
        ("HUAWEICLOUD_SDK_SK", "SK-SECRET\r\nSECOND\n"),
        ("HUAWEICLOUD_SDK_AK", "AKFAKE-SECRET-AK\u00e9\n"),
        ("HUAWEICLOUD_SDK_SECURITY_TOKEN", "STS\tTAB-SECRET\n"),
    ],
)
def test_a_secret_file_that_is_not_one_clean_line_is_refused_naming_only_the_variable(
    tmp_path: Path, sim: str, variable: str, content: str
) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(content, encoding="utf-8")
    secret_file.chmod(0o600)
    done = run_with(tmp_path, sim, **{variable + "_FILE": str(secret_file)})
    assert done.returncode == 4, done.stderr
    assert variable in done.stderr
    for piece in content.replace("\r", "\n").replace("\t", "\n").split("\n"):
        if len(piece) >= 6:
            assert piece not in done.stderr + done.stdout, f"the secret's text leaked: {piece!r}"


def test_a_secret_value_with_a_line_break_in_the_environment_is_refused_too(tmp_path: Path, sim: str) -> None:
    done = run_with(tmp_path, sim, HUAWEICLOUD_SDK_SECURITY_TOKEN="STS-ENV-SECRET\nSECOND-LINE")
    assert done.returncode == 4, done.stderr
    assert "HUAWEICLOUD_SDK_SECURITY_TOKEN" in done.stderr
    assert "STS-ENV-SECRET" not in done.stderr and "SECOND-LINE" not in done.stderr
