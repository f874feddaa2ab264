"""A stand-in for Slack's side in slack_ack: the Web API the bot calls (``/api/<method>``) and the
``response_url`` endpoints it answers on (``/response/<id>``), recording when each answer arrived.

Run as its own process (``python benchmarks/fake_slack.py PORT``), so the bot under test, the
driver and this sink do not share an interpreter. ``GET /_answers`` lists ``[id, epoch seconds]``;
``GET /_answer/<id>`` the bodies posted to that response_url, in order (the benchmark reads a preview's
Confirm button and a change's outcome from them).

``POST /floor`` is the floor for the ack: a bare uvicorn + Starlette endpoint that reads the body and
answers an empty 200, no signature, no parsing. Driven by the same client in the same run, it is the
fastest any bot behind an HTTP server in Python could ack on this machine at that moment.
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
bodies: dict[str, list[object]] = {}


async def api(request: Request) -> Response:
    method = request.path_params["method"]
    if method == "auth.test":  # bolt checks the bot token once before the first listener runs
        return JSONResponse({"ok": True, "user_id": "UBOTBENCH", "bot_id": "BBENCH", "team_id": "T0BENCH"})
    return JSONResponse({"ok": True})


async def response_url(request: Request) -> Response:
    rid = request.path_params["rid"]
    body = await request.json()
    answers.append((rid, time.time()))
    bodies.setdefault(rid, []).append(body)
    return PlainTextResponse("ok")


async def answered(request: Request) -> Response:
    return JSONResponse(bodies.get(request.path_params["rid"], []))


async def floor(request: Request) -> Response:
    await request.body()
    return Response(status_code=200)


async def recorded(_request: Request) -> Response:
    return JSONResponse(answers)


app = Starlette(
    routes=[
        Route("/api/{method}", api, methods=["POST", "GET"]),
        Route("/response/{rid}", response_url, methods=["POST"]),
        Route("/_answers", recorded, methods=["GET"]),
        Route("/_answer/{rid}", answered, methods=["GET"]),
        Route("/floor", floor, methods=["POST"]),
    ]
)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
