"""The client's HTTP transport: httpx's own, with a cheaper liveness check on pooled connections.

Before every request is placed, and again when its response closes, httpcore's pool asks each idle
connection whether the server has closed it (``get_extra_info("is_readable")``). Its AnyIO stream
answers by building the socket's whole attribute mapping, ``getpeername()`` included, only to take the
raw socket out of it: under concurrent calls that was about a tenth of the client's CPU. The stream
here keeps the socket it was connected on and asks the kernel the same question directly.
"""

from __future__ import annotations

import select
import socket
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx


def socket_readable(sock: socket.socket | None) -> bool:
    """True when a read would not block: data, or the peer's close. An idle HTTP/1.1 connection that
    is readable was closed (or answered out of turn) by the server, so the pool must not reuse it. A
    socket without a descriptor counts as readable, as httpcore counts it."""
    fd = -1 if sock is None else sock.fileno()
    if fd < 0:
        return True
    if not hasattr(select, "poll"):  # Windows
        return bool(select.select([fd], [], [], 0)[0])
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


class _Stream(httpcore.AsyncNetworkStream):
    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner
        self._socket: socket.socket | None = inner.get_extra_info("socket")

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        return _Stream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            return socket_readable(self._socket)
        return self._inner.get_extra_info(info)


class _Backend(httpcore.AsyncNetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return _Stream(await self._inner.connect_tcp(host, port, timeout, local_address, socket_options))

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        return _Stream(await self._inner.connect_unix_socket(path, timeout, socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def check_liveness_cheaply(client: httpx.AsyncClient) -> None:
    """Put the client's own transports (its default one, and those it mounted for proxies from the
    environment) on the backend above. httpx takes no backend of its own, and a client given a transport
    of ours would ignore the environment's proxies, so the backend is set on the pools httpx built."""
    for transport in (client._transport, *client._mounts.values()):
        if isinstance(transport, httpx.AsyncHTTPTransport):
            pool = transport._pool
            if not isinstance(pool, httpcore.AsyncConnectionPool):  # the proxies' pools are subclasses
                raise TypeError(f"httpx built an unexpected pool: {type(pool).__name__}")
            pool._network_backend = _Backend()
