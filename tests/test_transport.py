"""The client's transport: pooled connections the server closed are never reused, the client's requests
(direct or through a proxy from the environment) really go through the transport's liveness check, and the
environment's proxies are still honoured."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from flexus_ops.cloud import transport as transport_module
from flexus_ops.cloud.client import FlexusClient
from flexus_ops.cloud.transport import check_liveness_cheaply, socket_readable
from flexus_ops.config import Settings
from tests.live import LiveSandbox

LIMITS = httpx.Limits(max_connections=10, max_keepalive_connections=10, keepalive_expiry=30.0)


def test_socket_readable_tells_data_and_the_peers_close_from_silence() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        assert not socket_readable(ours)
        theirs.sendall(b"x")
        assert socket_readable(ours)
        ours.recv(1)
        assert not socket_readable(ours)
        theirs.close()
        assert socket_readable(ours)  # the close reads as b"": the connection must not be reused
    assert socket_readable(None)


async def _server(
    connections: list[int], *, close_when_idle: bool, body: bytes = b"ok", seen: list[bytes] | None = None
) -> asyncio.Server:
    """Answers each request with a keep-alive response. With ``close_when_idle`` it closes the
    connection 50 ms after its first answer without saying so, as a server's idle timeout or a restarted
    balancer does."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if seen is not None:
                    seen.append(head.split(b"\r\n", 1)[0])
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: keep-alive\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
                if close_when_idle:
                    await asyncio.sleep(0.05)
                    break
        except asyncio.IncompleteReadError:
            pass  # the client closed it
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def _three_requests_apart(close_when_idle: bool) -> int:
    connections: list[int] = []
    server = await _server(connections, close_when_idle=close_when_idle)
    port = server.sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(limits=LIMITS) as client:
            check_liveness_cheaply(client)
            for _ in range(3):
                response = await client.get(f"http://127.0.0.1:{port}/")
                assert response.text == "ok"
                await asyncio.sleep(0.2)  # long enough for a closing server to have closed it
    finally:
        server.close()
        await server.wait_closed()
    return len(connections)


async def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    # Each request found the pooled connection closed, so it opened a new one instead of failing on it.
    assert await _three_requests_apart(close_when_idle=True) == 3


async def test_a_live_idle_connection_is_reused() -> None:
    assert await _three_requests_apart(close_when_idle=False) == 1


async def test_the_clients_requests_go_through_the_liveness_check(
    live: LiveSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[bool] = []

    def counting(sock: socket.socket | None) -> bool:
        checked.append(readable := socket_readable(sock))
        return readable

    monkeypatch.setattr(transport_module, "socket_readable", counting)
    async with FlexusClient(live.settings()) as client:
        await client.list_servers(limit=1)
        await client.list_servers(limit=1)  # the pool checks the idle connection before reusing it
    assert checked and not any(checked)


async def test_a_proxy_from_the_environment_is_still_used_with_the_cheap_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client behind a company proxy (HTTP_PROXY) reaches the cloud through it, as httpx's client does on
    its own; the proxy's pooled connection gets the same liveness check."""
    checked: list[bool] = []

    def counting(sock: socket.socket | None) -> bool:
        checked.append(readable := socket_readable(sock))
        return readable

    monkeypatch.setattr(transport_module, "socket_readable", counting)
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    seen: list[bytes] = []
    proxy = await _server([], close_when_idle=False, body=b'{"count": 0, "servers": []}', seen=seen)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.sockets[0].getsockname()[1]}")
    settings = Settings(
        access_key="AKPROXIED0000000001",
        secret_key="proxied-secret-key-0123456789",
        project_id="0123456789abcdef0123456789abcdef",
        ecs_endpoint="http://127.0.0.2:9",  # loopback (plain http is refused elsewhere); nothing listens there
    )
    try:
        async with FlexusClient(settings) as client:
            for _ in range(2):
                page = await client.list_servers(limit=1)
                assert page.count == 0
    finally:
        proxy.close()
        await proxy.wait_closed()
    assert len(seen) == 2 and all(line.startswith(b"GET http://127.0.0.2:9/v1/") for line in seen)
    assert checked and not any(checked)
