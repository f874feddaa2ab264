"""The sockets the HTTP servers listen on (MCP over HTTP, the Slack bot, the sandbox cloud)."""

from __future__ import annotations

import socket

from .errors import ConfigurationError


def listening_socket(host: str, port: int) -> socket.socket:
    """The server's socket, bound before anything announces the address (as uvicorn would bind it), so that
    with ``--port 0`` the start-up line, the URLs handed out and the Host allow-list all name the port the
    system gave. A port that cannot be taken is a ``ConfigurationError`` naming it."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        why = exc.strerror or type(exc).__name__
        raise ConfigurationError(f"cannot listen on {host}:{port} ({why}); choose another --port") from None
    sock.set_inheritable(True)
    return sock
