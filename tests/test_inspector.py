"""A real, independent MCP client: the MCP Inspector CLI drives `flexus-ops mcp` over stdio and HTTP,
with the server pointed at `flexus-ops sim` through FLEXUS_ECS_ENDPOINT and AK/SK, as a user would."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flexus_ops.registry.catalog import TOOLS
from tests.procs import FLEXUS_OPS, free_port, sim_process, wait_http

INSPECTOR_VERSION = "2.12.0"
AK, SK, PID = "INSPECTORAK000000001", "inspector-test-secret-key-0123456789", "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def inspector() -> Path:
    """The Inspector CLI, installed once into a cache directory (npm is needed; CI machines have it)."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("needs Node.js and npm: install them to run the MCP Inspector interoperability tests")
    cache = Path(os.environ.get("FLEXUS_TEST_CACHE", Path.home() / ".cache" / "flexus-ops-tests"))
    prefix = cache / f"inspector-{INSPECTOR_VERSION}"
    binary = prefix / "node_modules" / ".bin" / "inspector"
    if not binary.exists():
        prefix.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                npm,
                "install",
                "--prefix",
                str(prefix),
                "--no-audit",
                "--no-fund",
                "--silent",
                f"@modelcontextprotocol/inspector@{INSPECTOR_VERSION}",
            ],
            check=True,
            timeout=600,
            capture_output=True,
        )
    return binary


@pytest.fixture(scope="module")
def sim() -> Iterator[str]:
    with sim_process("--ak", AK, "--sk", SK, "--project-id", PID, "--job-seconds", "0.2") as url:
        yield url


@pytest.fixture(scope="module")
def server_env(sim: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return {
        "FLEXUS_ECS_ENDPOINT": sim,
        "HUAWEICLOUD_SDK_AK": AK,
        "HUAWEICLOUD_SDK_SK": SK,
        "HUAWEICLOUD_SDK_PROJECT_ID": PID,
        "FLEXUS_STATE_DIR": str(tmp_path_factory.mktemp("inspector-state")),
        "FLEXUS_JOB_POLL_SECONDS": "0.05",
    }


class Inspector:
    def __init__(self, binary: Path, target: list[str]) -> None:
        self.binary = binary
        self.target = target

    def run(self, *args: str) -> dict[str, Any]:
        completed = subprocess.run(
            [str(self.binary), "--cli", "--format", "json", *self.target, *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert completed.stdout, completed.stderr[-2000:]
        return json.loads(completed.stdout)

    def tools(self) -> list[dict[str, Any]]:
        return self.run("--method", "tools/list")["result"]["tools"]

    def call(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        reply = self.run("--method", "tools/call", "--tool-name", tool, "--tool-args-json", json.dumps(arguments))
        assert "result" in reply, reply
        result = reply["result"]
        assert not result.get("isError"), result["content"]
        return result["structuredContent"]


def exercise_every_tool(client: Inspector, sim: str) -> None:
    tools = {tool["name"]: tool for tool in client.tools()}
    assert len(tools) == len(TOOLS)
    for tool in tools.values():
        assert set(tool["annotations"]) >= {"readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint"}
        assert tool["inputSchema"]["type"] == "object" and tool["outputSchema"]["type"] == "object"

    listing = client.call("flexus_list_servers", {"status": "ACTIVE", "limit": 3})
    assert listing["count"] > 3
    first, second, third = (server["name"] for server in listing["servers"])
    assert client.call("flexus_show_server", {"server": first})["server"]["name"] == first

    preview = client.call("flexus_stop_servers", {"servers": [first]})["preview"]
    done = client.call("flexus_stop_servers", {"servers": [first], "confirmation_token": preview["confirmation_token"]})
    assert done["result"]["status"] == "succeeded"
    job = client.call("flexus_show_job", {"job_id": done["result"]["job_ids"][0]})
    assert job["status"] == "SUCCESS"

    preview = client.call("flexus_start_servers", {"servers": [first]})["preview"]
    assert preview["plan"]["items"][0]["act"] is True
    assert client.call("flexus_reboot_servers", {"servers": [second], "dry_run": True})["preview"]["plan"]["items"]
    update = client.call("flexus_update_server", {"server": third, "description": "inspected"})["preview"]
    done = client.call(
        "flexus_update_server",
        {"server": third, "description": "inspected", "confirmation_token": update["confirmation_token"]},
    )
    assert done["result"]["status"] == "succeeded"
    reset = client.call("flexus_reset_servers_password", {"servers": [second], "reason": "interop", "dry_run": True})
    assert reset["preview"]["needs_approval"] is True

    # What the sandbox saw: exactly the two confirmed writes, each once.
    with urllib.request.urlopen(f"{sim}/_sandbox/requests") as response:  # noqa: S310 - loopback
        records = json.load(response)
    writes = [r["operation"] for r in records if r["is_write"]]
    assert writes.count("BatchStopServers") == 1 and writes.count("UpdateServer") == 1


def test_inspector_over_stdio(inspector: Path, sim: str, server_env: dict[str, str]) -> None:
    env_flags = [flag for key, value in server_env.items() for flag in ("-e", f"{key}={value}")]
    client = Inspector(inspector, [*env_flags, FLEXUS_OPS, "mcp"])
    urllib.request.urlopen(urllib.request.Request(f"{sim}/_sandbox/requests", method="DELETE"))  # noqa: S310
    exercise_every_tool(client, sim)


def test_inspector_over_http(inspector: Path, sim: str, server_env: dict[str, str]) -> None:
    port = free_port()
    process = subprocess.Popen(
        [str(BIN / "flexus-ops"), "mcp", "--transport", "http", "--port", str(port)],
        env={**os.environ, **server_env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", process)
        # No token principals in the policy: the server wrote a session token for the OS user (0600).
        token = (Path(server_env["FLEXUS_STATE_DIR"]) / "mcp-http.token").read_text().strip()
        urllib.request.urlopen(urllib.request.Request(f"{sim}/_sandbox/requests", method="DELETE"))  # noqa: S310
        target = [f"http://127.0.0.1:{port}/mcp", "--header", f"Authorization: Bearer {token}"]
        exercise_every_tool(Inspector(inspector, target), sim)
    finally:
        process.terminate()
        process.wait(timeout=10)
