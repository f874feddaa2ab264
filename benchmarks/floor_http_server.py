"""The floor for mcp_http: a bare ``MCPServer`` with one no-op tool, over streamable HTTP.

Served as ``flexus-ops mcp --transport http`` serves (stateless, SSE responses, uvicorn with one worker,
warning-level logs) but with nothing of flexus-ops: no auth, no policy, no store, no cloud. What a call
costs here is what the MCP SDK and its HTTP stack cost, which no server built on them can go below.
Run as a script (``python benchmarks/floor_http_server.py PORT``), never imported by the harness.
"""

import sys

import uvicorn
from mcp.server.mcpserver import MCPServer

server = MCPServer("floor-http")


@server.tool()
def ping(x: int) -> int:
    """Return x."""
    return x


if __name__ == "__main__":
    port = int(sys.argv[1])
    app = server.streamable_http_app(stateless_http=True, json_response=False, host="127.0.0.1")
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
