"""``flexus-ops sim`` as a subprocess on a free loopback port.

The sandbox runs in its own process, not in the benchmark's event loop: otherwise its request
handling would share a core and a loop with whichever client is being measured, and the client that
makes more concurrent requests would be charged for the server's work too. In a separate process,
both clients pay the same server cost over real HTTP.
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from .harness import RunContext, env_without_secrets, proc_cpu_seconds, wait_answering

if TYPE_CHECKING:
    from huaweicloudsdkecs.v2 import EcsClient

    from flexus_ops.cloud.client import FlexusClient
    from flexus_ops.config import Settings

# Benchmark-only credentials the sim accepts; nothing real.
AK = "BENCHAK00000000000001"
SK = "bench-secret-key-not-a-real-one-0123"
PID = "b0e1c2d3a4f5968778695a4b3c2d1e0f"


@dataclass
class Sim:
    url: str
    servers: int
    job_seconds: float
    latency_ms: float
    rate_limit: float | None
    process: subprocess.Popen[bytes]

    def settings(self, **overrides: Any) -> Settings:
        from flexus_ops.config import Settings

        values: dict[str, Any] = {
            "access_key": AK,
            "secret_key": SK,
            "project_id": PID,
            "ecs_endpoint": self.url,
        }
        values.update(overrides)
        return Settings(**values)

    def client(self, **overrides: Any) -> FlexusClient:
        from flexus_ops.cloud.client import FlexusClient

        return FlexusClient(self.settings(**overrides))

    def sdk(self) -> EcsClient:
        """The official SDK's client, built the way its documentation shows."""
        from huaweicloudsdkcore.auth.credentials import BasicCredentials
        from huaweicloudsdkecs.v2 import EcsClient

        return (
            EcsClient.new_builder().with_credentials(BasicCredentials(AK, SK, PID)).with_endpoints([self.url]).build()
        )

    def env(self) -> dict[str, str]:
        """What a child flexus-ops process needs to talk to this sim."""
        return {
            "FLEXUS_ECS_ENDPOINT": self.url,
            "HUAWEICLOUD_SDK_AK": AK,
            "HUAWEICLOUD_SDK_SK": SK,
            "HUAWEICLOUD_SDK_PROJECT_ID": PID,
        }

    def cpu_seconds(self) -> float:
        """CPU time the sim process has used so far (user + system), from /proc; NaN elsewhere."""
        return proc_cpu_seconds(self.process.pid)

    def requests(self) -> list[dict[str, Any]]:
        return httpx.get(f"{self.url}/_sandbox/requests", timeout=30).json()

    def describe(self) -> dict[str, Any]:
        return {
            "process": "flexus-ops sim (separate process, real HTTP on loopback)",
            "servers": self.servers,
            "job_seconds": self.job_seconds,
            "latency_ms": self.latency_ms,
            "rate_limit_per_second": self.rate_limit,
        }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_sim(
    ctx: RunContext,
    *,
    servers: int,
    job_seconds: float = 1.0,
    latency_ms: float = 0.0,
    rate_limit: float | None = None,
    seed: int = 7,
) -> Iterator[Sim]:
    port = free_port()
    args = [
        ctx.flexus_ops,
        "sim",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--servers",
        str(servers),
        "--seed",
        str(seed),
        "--ak",
        AK,
        "--sk",
        SK,
        "--project-id",
        PID,
        "--job-seconds",
        str(job_seconds),
        "--latency-ms",
        str(latency_ms),
    ]
    if rate_limit is not None:
        args += ["--rate-limit", str(rate_limit)]
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="flexus-bench-sim-") as tmp:
        log_path = Path(tmp) / "stderr.txt"
        with log_path.open("wb") as log:
            process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log, env=env_without_secrets())
            try:
                # A 10,000-server fleet takes a few seconds to generate.
                wait_answering(
                    process,
                    log_path,
                    f"flexus-ops sim on {url}",
                    lambda: httpx.get(f"{url}/_sandbox/health", timeout=2).status_code == 200,
                    timeout=120,
                )
                yield Sim(url, servers, job_seconds, latency_ms, rate_limit, process)
            finally:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)
