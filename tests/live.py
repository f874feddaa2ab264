"""A sandbox served over real HTTP on loopback, in a thread, so tests can read its state directly."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from flexus_ops.config import Settings
from flexus_ops.sandbox import Sandbox, SandboxOptions
from tests.procs import serve_app

AK = "TESTAKLIVE00000000001"
SK = "test-live-secret-key-0123456789abcdef"
PID = "a1b2c3d4e5f60718293a4b5c6d7e8f90"


@dataclass
class LiveSandbox:
    sandbox: Sandbox
    url: str

    def settings(self, **overrides: object) -> Settings:
        values: dict[str, object] = {
            "access_key": AK,
            "secret_key": SK,
            "project_id": PID,
            "ecs_endpoint": self.url,
            "retry_base_seconds": 0.01,
            "retry_max_seconds": 0.05,
            "job_poll_seconds": 0.05,
            "job_poll_max_seconds": 0.1,
            "timeout_seconds": 5.0,
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]


@contextmanager
def serve(**options: object) -> Iterator[LiveSandbox]:
    defaults: dict[str, object] = {"access_key": AK, "secret_key": SK, "project_id": PID, "job_seconds": 0.2}
    defaults.update(options)
    sandbox = Sandbox(SandboxOptions(**defaults))  # type: ignore[arg-type]
    with serve_app(sandbox.app) as url:
        yield LiveSandbox(sandbox, url)
