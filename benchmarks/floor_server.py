"""The floor for cold_start: a bare ``MCPServer`` with one tool, over stdio.

Nothing a real server needs (settings, store, keys, a cloud client) is imported, so its start-up is
what the MCP SDK itself costs: the interpreter, ``mcp.server.mcpserver`` and the handshake.
Run as a script (``python benchmarks/floor_server.py``), never imported by the harness.
"""

from mcp.server.mcpserver import MCPServer

server = MCPServer("floor")


@server.tool()
def ping(x: int) -> int:
    """Return x."""
    return x


if __name__ == "__main__":
    server.run("stdio")
