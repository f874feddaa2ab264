"""A stand-in for Slack's side in slack_ack: the Web API the bot calls (``/api/<method>``) and the
``response_url`` endpoints it answers on (``/response/<id>``), recording when each answer arrived.

Run as its own process (``python benchmarks/fake_slack.py PORT``), so the bot under test, the
driver and this sink do not share an interpreter. ``GET /_answers`` lists ``[id, epoch seconds]``.
"""

from __future__ import annotations

import sys
import time

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

answers: list[tuple[str, float]] = []


async def api(request: Request) -> Response:
    method = request.path_params["method"]
    if method == "auth.test":  # bolt checks the bot token once before the first listener runs
        return JSONResponse({"ok": True, "user_id": "UBOTBENCH", "bot_id": "BBENCH", "team_id": "T0BENCH"})
    return JSONResponse({"ok": True})


async def response_url(request: Request) -> Response:
    await request.body()
    answers.append((request.path_params["rid"], time.time()))
    return PlainTextResponse("ok")


async def recorded(_request: Request) -> Response:
    return JSONResponse(answers)


app = Starlette(
    routes=[
        Route("/api/{method}", api, methods=["POST", "GET"]),
        Route("/response/{rid}", response_url, methods=["POST"]),
        Route("/_answers", recorded, methods=["GET"]),
    ]
)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
