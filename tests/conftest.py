"""Shared fixtures. Every test starts from a clean environment: a developer's real credentials in the
shell must never leak into a test, nor steer it at the real cloud."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.live import LiveSandbox, serve


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    for name in list(os.environ):
        if name.startswith(("HUAWEICLOUD_", "FLEXUS_", "SLACK_")):
            monkeypatch.delenv(name)


@pytest.fixture
def live() -> Iterator[LiveSandbox]:
    with serve() as running:
        yield running
