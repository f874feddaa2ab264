"""The sockets the HTTP servers listen on (MCP over HTTP, the Slack bot, the sandbox cloud)."""

from __future__ import annotations

import socket

from .errors import ConfigurationError

IDLE_KEEP_ALIVE_SECONDS = 75
"""How long the HTTP servers keep an idle connection open: nginx's default, and past the 60 s idle timeout
of the usual load balancers, so that a balancer never sends a request down a connection the server is
closing (a 502 to the client). uvicorn's own 5 s is below every one of them; for the sim, it equalled the
client pool's expiry (``cloud.client.KEEPALIVE_EXPIRY_SECONDS``) and a pooled request met a closing
connection under load (seen by the ``mcp_http`` benchmark)."""


def listening_socket(host: str, port: int) -> socket.socket:
    """The server's socket, bound and listening before anything announces the address, so that
    with ``--port 0`` the start-up line, the URLs handed out and the Host allow-list all name the port the
    system gave. A port that cannot be taken is a ``ConfigurationError`` naming it."""
    # IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on connections whose socket says TCP,
    # and with it on, every small answer waited 40 ms for the client's delayed ACK.
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        why = exc.strerror or type(exc).__name__
        raise ConfigurationError(f"cannot listen on {host}:{port} ({why}); choose another --port") from None
    # Listening now, not when the server starts: a client that connects as soon as the start-up line names
    # the port waits in the backlog instead of being refused.
    sock.listen(2048)
    return sock
