"""The floor for call_overhead over stdio: a bare ``MCPServer`` whose one tool makes the request that
``flexus_show_server`` makes (a signed listing of one server by id, on a kept-alive connection) and
returns only the answer's size.

Over stdio the tool's request leaves the server's process, so an MCP call costs more than the SDK's
no-op plus the same request made from the client's process: the server wakes for the answer, then
the client for the result. No server that makes this request through the SDK can pay less than this
one, which builds no model and returns almost nothing. Configured by the environment (``FLEXUS_ECS_ENDPOINT``
and the benchmark credentials, as ``Sim.env`` gives them); run as a script, never imported by the harness.
"""

import logging
import os

import httpx
from mcp.server.mcpserver import MCPServer

from flexus_ops.cloud.auth import AkSkAuth

server = MCPServer("floor-relay")
logging.getLogger("httpx").setLevel(logging.WARNING)  # MCPServer logs at INFO: no line per request on a floor
_http: list[httpx.AsyncClient] = []  # made on the first call, inside the server's event loop


@server.tool()
async def fetch(server_id: str) -> int:
    """List one server by id; return the answer's size in bytes."""
    if not _http:
        project = os.environ["HUAWEICLOUD_SDK_PROJECT_ID"]
        auth = AkSkAuth(os.environ["HUAWEICLOUD_SDK_AK"], os.environ["HUAWEICLOUD_SDK_SK"], project_id=project)
        _http.append(httpx.AsyncClient(base_url=f"{os.environ['FLEXUS_ECS_ENDPOINT']}/v1/{project}", auth=auth))
    answer = await _http[0].get("/cloudservers/detail", params={"server_id": server_id, "limit": 1000})
    return len(answer.raise_for_status().content)


if __name__ == "__main__":
    server.run("stdio")
