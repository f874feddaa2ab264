"""Threat: configuration text pasted into a hostname sends signed requests (or an IAM password) to
another host. The region must be a region name; other hosts come only from the endpoint variables."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from flexus_ops.cloud.client import FlexusClient
from flexus_ops.config import Settings
from flexus_ops.core.errors import ConfigurationError, FlexusError

HOSTILE = [
    "x@127.0.0.1:{port}/",
    "127.0.0.1:{port}/x",
    "evil.com/x",
    "cn-north-4.evil",
    "cn-north-4@127.0.0.1:{port}",
    "cn-north-4:{port}",
    "cn-north-4/..",
    "CN-NORTH-4",
    "cn_north_4",
    "",
]


@pytest.fixture
def listener() -> Iterator[tuple[int, list[bytes]]]:
    """A loopback port that records every connection an attacker's 'region' would draw."""
    seen: list[bytes] = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    seen.append(conn.recv(65536))
                except OSError:
                    seen.append(b"")

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], seen
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()


@pytest.mark.parametrize("template", HOSTILE)
async def test_a_hostile_region_is_refused_and_nothing_is_sent(
    template: str, listener: tuple[int, list[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, seen = listener
    monkeypatch.setenv("FLEXUS_REGION", template.format(port=port))
    monkeypatch.setenv("HUAWEICLOUD_SDK_AK", "AKREGIONTEST000000001")
    monkeypatch.setenv("HUAWEICLOUD_SDK_SK", "region-test-secret-0123456789")
    with pytest.raises(ConfigurationError, match=r"^FLEXUS_REGION: .*not a region name"):
        settings = Settings.load()
        async with FlexusClient(settings) as client:  # pragma: no cover - must not get here
            await client.list_servers()
    assert seen == []


@pytest.mark.parametrize("region", ["cn-north-4", "ap-southeast-1", "la-south-2", "cn-east-3", "af-south-1"])
def test_real_region_names_pass_and_name_huaweis_host(region: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEXUS_REGION", region)
    monkeypatch.setenv("HUAWEICLOUD_SDK_AK", "AKREGIONTEST000000001")
    monkeypatch.setenv("HUAWEICLOUD_SDK_SK", "region-test-secret-0123456789")
    assert Settings.load().ecs_base_url() == f"https://ecs.{region}.myhuaweicloud.com"


def test_a_bad_sdk_region_override_is_blamed_on_its_own_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUAWEICLOUD_SDK_AK", "AKREGIONTEST000000001")
    monkeypatch.setenv("HUAWEICLOUD_SDK_SK", "region-test-secret-0123456789")
    monkeypatch.setenv("HUAWEICLOUD_SDK_REGION_ECS_CN_NORTH_4", "http://evil.example/")
    with pytest.raises(FlexusError, match=r"^HUAWEICLOUD_SDK_REGION_ECS_CN_NORTH_4: plain http"):
        Settings.load().ecs_base_url()
