"""The sandbox's HTTP layer through httpx.ASGITransport: routes, auth, error shapes, knobs, request log."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from flexus_ops.config import is_loopback
from flexus_ops.sandbox import (
    DEFAULT_ACCESS_KEY,
    DEFAULT_PROJECT_ID,
    DEFAULT_SECRET_KEY,
    Sandbox,
    verify_signature,
)
from flexus_ops.sandbox.gateway import SignatureRejected
from flexus_ops.sandbox.server import add_arguments, run
from tests.sandbox_fixtures import PINNED, UNKNOWN_ID, Api, FakeClock, asgi_client, make_sandbox, server_ids

VECTORS = json.loads((Path(__file__).parent / "data" / "sign_vectors.json").read_text())["vectors"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sandbox(clock: FakeClock) -> Sandbox:
    return make_sandbox(clock, servers=40, job_seconds=2.0, token_seconds=3600)


@pytest.fixture
async def api(sandbox: Sandbox, clock: FakeClock) -> AsyncIterator[Api]:
    async with asgi_client(sandbox) as client:
        yield Api(sandbox, client, clock)


def ecs_error(response: httpx.Response) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert response.headers["X-Request-Id"]
    return response.status_code, body["error"]["code"]


def flat_error(response: httpx.Response) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"error_code", "error_msg", "request_id"}, body
    assert body["request_id"] == response.headers["X-Request-Id"]
    return response.status_code, body["error_code"]


# -- routes -----------------------------------------------------------------------------------


async def test_show_and_list_servers(api: Api, sandbox: Sandbox) -> None:
    sid = next(iter(sandbox.backend.servers))
    shown = await api.show(sid)
    assert shown.status_code == 200 and shown.headers["X-Request-Id"]
    assert shown.json()["server"]["id"] == sid
    assert ecs_error(await api.show(UNKNOWN_ID)) == (404, "Ecs.0114")
    assert (await api.show(UNKNOWN_ID)).json()["error"]["message"] == f"Instance[{UNKNOWN_ID}] could not be found."

    listed = (await api.list(limit=10, offset=2)).json()
    everything = (await api.list(limit=1000)).json()["servers"]
    assert listed["count"] == 40
    assert [s["id"] for s in listed["servers"]] == [s["id"] for s in everything[10:20]]
    assert len((await api.list()).json()["servers"]) == 25
    assert ecs_error(await api.list(limit=1001)) == (400, "Ecs.0005")
    assert ecs_error(await api.list(status="RUNNING")) == (400, "Ecs.0005")


async def test_list_filters_over_the_wire(api: Api, sandbox: Sandbox) -> None:
    servers = list(sandbox.backend.servers.values())
    tagged = (await api.list(limit=1000, tags="team")).json()
    untagged = (await api.list(limit=1000, not_tags="team")).json()
    assert tagged["count"] + untagged["count"] == 40
    assert sandbox.request_log[-1].query == {"limit": "1000", "not-tags": "team"}
    staging = (await api.list(limit=1000, name="staging web"[:7])).json()["servers"]
    assert {s["id"] for s in staging} == {s.id for s in servers if "staging" in s.name}
    exact = (await api.list(ip_eq=servers[3].fixed_ip)).json()["servers"]
    assert [s["id"] for s in exact] == [servers[3].id]

    by_id = await api.list(server_id=f"{servers[0].id},{UNKNOWN_ID}", status="REBOOT", name="zzz")
    entries = by_id.json()["servers"]
    assert [e["id"] for e in entries] == [servers[0].id, UNKNOWN_ID]
    assert entries[1]["name"] is None and entries[1]["fault"]
    assert sandbox.request_log[-1].server_ids == [servers[0].id, UNKNOWN_ID]


async def test_batch_actions_and_job_life_cycle(api: Api, sandbox: Sandbox, clock: FakeClock) -> None:
    active = server_ids(sandbox, "ACTIVE")
    shutoff = server_ids(sandbox, "SHUTOFF")
    stop = await api.action({"os-stop": {"servers": [{"id": active[0]}]}})  # type is optional: SOFT
    assert stop.status_code == 200 and set(stop.json()) == {"job_id"}
    start = await api.action({"os-start": {"servers": [{"id": shutoff[0]}]}})
    reboot = await api.action({"reboot": {"type": "HARD", "servers": [{"id": active[1]}]}})
    assert sandbox.backend.server_view(active[1])["status"] == "HARD_REBOOT"

    job = (await api.job(stop.json()["job_id"])).json()
    assert (job["status"], job["job_type"]) == ("RUNNING", "batchStopServers")
    clock.advance(2)
    for response, job_type in (
        (stop, "batchStopServers"),
        (start, "batchStartServers"),
        (reboot, "batchRebootServers"),
    ):
        job = (await api.job(response.json()["job_id"])).json()
        assert (job["status"], job["job_type"]) == ("SUCCESS", job_type)
    assert sandbox.backend.server_view(active[0])["status"] == "SHUTOFF"
    assert sandbox.backend.server_view(shutoff[0])["status"] == "ACTIVE"
    assert ecs_error(await api.job("f" * 32)) == (404, "Ecs.0000")
    assert [w.operation for w in sandbox.writes()] == ["BatchStopServers", "BatchStartServers", "BatchRebootServers"]


async def test_batch_refusals(api: Api, sandbox: Sandbox) -> None:
    sid = server_ids(sandbox, "ACTIVE")[0]
    too_many = [{"id": sid}] * 1001
    assert ecs_error(await api.action({"os-stop": {"servers": too_many}})) == (400, "Ecs.0118")
    assert ecs_error(await api.action({"os-stop": {"servers": [{"id": sid}, {"id": UNKNOWN_ID}]}})) == (
        404,
        "Ecs.0114",
    )
    assert UNKNOWN_ID in sandbox.request_log[-1].server_ids
    assert ecs_error(await api.action({"reboot": {"servers": [{"id": sid}]}})) == (400, "Ecs.0005")
    assert ecs_error(await api.action({"reboot": {"type": "GENTLE", "servers": [{"id": sid}]}})) == (400, "Ecs.0005")
    assert sandbox.backend.jobs == {} and sandbox.writes() == []
    assert sandbox.backend.server_view(sid)["OS-EXT-STS:task_state"] is None


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"",
        b"[]",
        b'{"os-stop": {"servers": "all"}}',
        b'{"os-stop": {"servers": [{"uuid": "x"}]}}',
        b'{"os-stop": {"servers": []}, "os-start": {"servers": []}}',
        b'{"os-start": {"servers": [{"id": "x"}], "type": "SOFT"}}',
        b'{"reset-password": {"new_password": "x"}}',
    ],
)
async def test_malformed_action_bodies_are_400_ecs_0005(api: Api, sandbox: Sandbox, body: bytes) -> None:
    assert ecs_error(await api.action(body)) == (400, "Ecs.0005")
    assert sandbox.writes() == []


async def test_reset_password_over_http(api: Api, sandbox: Sandbox) -> None:
    path = f"/v1/{api.pid}/cloudservers/os-reset-passwords"
    targets = server_ids(sandbox, "ACTIVE")[:2]
    servers = [{"id": sid} for sid in targets]
    dry = await api.request("PUT", path, body={"dry_run": True, "servers": servers})
    assert dry.json() == {"response": servers}
    real = await api.request("PUT", path, body={"new_password": "Fresh-Passw0rd", "servers": servers})
    assert real.status_code == 200 and real.json() == {"response": servers}
    assert [sandbox.backend.servers[sid].password_resets for sid in targets] == [1, 1]
    dry_record, real_record = sandbox.request_log[-2:]
    assert (dry_record.dry_run, dry_record.is_write) == (True, False)
    assert (real_record.dry_run, real_record.is_write, real_record.server_ids) == (False, True, targets)

    bad = await api.request("PUT", path, body={"new_password": "root-Passw0rd", "servers": servers})
    assert ecs_error(bad) == (400, "Ecs.0011")
    assert ecs_error(await api.request("PUT", path, body={"servers": servers})) == (400, "Ecs.0005")
    locked = next(sid for sid, s in sandbox.backend.servers.items() if s.locked)
    locked_body = {"new_password": "Fresh-Passw0rd", "servers": [{"id": locked}]}
    assert ecs_error(await api.request("PUT", path, body=locked_body)) == (400, "Ecs.0605")
    assert ecs_error(await api.request("PUT", path, body={"dry_run": "yes", "servers": servers})) == (400, "Ecs.0005")
    assert len(sandbox.writes()) == 1


async def test_update_server_over_http(api: Api, sandbox: Sandbox) -> None:
    sid = server_ids(sandbox, "ACTIVE")[0]
    path = f"/v1/{api.pid}/cloudservers/{sid}"
    body = {"server": {"name": "web-new", "description": "d", "user_data": "IyEvYmluL2Jhc2g="}}
    response = await api.request("PUT", path, body=body)
    assert response.status_code == 200
    result = response.json()["server"]
    assert result["name"] == "web-new" and isinstance(result["image"], str)
    assert all(isinstance(a["version"], int) for entries in result["addresses"].values() for a in entries)
    assert set(result["flavor"]) == {"id", "links"} and result["links"]
    assert sandbox.backend.server_view(sid)["OS-EXT-SRV-ATTR:user_data"] == "IyEvYmluL2Jhc2g="

    for bad in ({"server": {"userdata": "eA=="}}, {"server": {}}, {"name": "x"}, {"server": "x"}):
        assert ecs_error(await api.request("PUT", path, body=bad)) == (400, "Ecs.0005")
    assert "userdata" in (await api.request("PUT", path, body={"server": {"userdata": "eA=="}})).text
    unknown = await api.request("PUT", f"/v1/{api.pid}/cloudservers/{UNKNOWN_ID}", body={"server": {"name": "x"}})
    assert ecs_error(unknown) == (404, "Ecs.0114")
    assert [(w.operation, w.method) for w in sandbox.writes()] == [("UpdateServer", "PUT")]


async def test_unknown_routes_and_methods_are_apigw_0101(api: Api, sandbox: Sandbox) -> None:
    sid = next(iter(sandbox.backend.servers))
    assert flat_error(await api.get("/v2/servers")) == (404, "APIGW.0101")
    assert flat_error(await api.request("DELETE", f"/v1/{api.pid}/cloudservers/{sid}")) == (404, "APIGW.0101")
    assert flat_error(await api.request("POST", f"/v1/{api.pid}/cloudservers/detail", body={})) == (404, "APIGW.0101")
    # The real gateway answers 404 before checking the signature.
    assert flat_error(await api.client.get("/nowhere")) == (404, "APIGW.0101")
    assert {r.operation for r in sandbox.request_log} == {"Unknown"}


# -- authentication ---------------------------------------------------------------------------


async def test_signature_failures_are_flat_401(api: Api, sandbox: Sandbox, clock: FakeClock) -> None:
    path = f"/v1/{api.pid}/cloudservers/detail"
    wrong_sk = await api.get(path, secret_key="not-the-secret")
    assert flat_error(wrong_sk) == (401, "APIGW.0301")
    assert "verify aksk signature fail" in wrong_sk.json()["error_msg"]
    unknown_ak = await api.get(path, access_key="NOSUCHAK")
    assert flat_error(unknown_ak) == (401, "APIGW.0301")
    assert "ak not exist" in unknown_ak.json()["error_msg"]
    assert flat_error(await api.get(path, now=PINNED - timedelta(minutes=16))) == (401, "APIGW.0301")
    assert (await api.get(path, now=PINNED + timedelta(minutes=14))).status_code == 200
    assert flat_error(await api.client.get(path)) == (401, "APIGW.0301")
    bad_header = await api.client.get(path, headers={"Authorization": "SDK-HMAC-SHA256 garbage"})
    assert flat_error(bad_header) == (401, "APIGW.0301")

    # Tampering with anything signed after signing breaks the signature.
    signed = api.signed_headers("GET", path, [("limit", 5)])
    assert (await api.client.get(f"{path}?limit=5", headers=signed.headers)).status_code == 200
    assert flat_error(await api.client.get(f"{path}?limit=6", headers=signed.headers)) == (401, "APIGW.0301")
    body = json.dumps({"os-stop": {"servers": [{"id": UNKNOWN_ID}]}}).encode()
    action = f"/v1/{api.pid}/cloudservers/action"
    signed = api.signed_headers("POST", action, body=body)
    tampered = await api.client.post(action, headers=signed.headers, content=body.replace(b"os-stop", b"os-start"))
    assert flat_error(tampered) == (401, "APIGW.0301")
    unsigned_host = {k: v for k, v in api.signed_headers("GET", path).headers.items()}
    unsigned_host["Authorization"] = unsigned_host["Authorization"].replace("content-type;host;", "content-type;")
    assert flat_error(await api.client.get(path, headers=unsigned_host)) == (401, "APIGW.0301")


async def test_more_than_five_failures_lock_the_ak_for_five_minutes(api: Api, clock: FakeClock) -> None:
    path = f"/v1/{api.pid}/cloudservers/detail"
    for _ in range(5):
        assert (await api.get(path, secret_key="wrong")).status_code == 401
    assert (await api.get(path)).status_code == 200, "five failures are forgiven by a success"

    for _ in range(6):
        assert (await api.get(path, secret_key="wrong")).status_code == 401
    locked = await api.get(path)
    assert flat_error(locked) == (401, "APIGW.0301")
    assert "locked" in locked.json()["error_msg"]
    clock.advance(299)
    assert (await api.get(path)).status_code == 401
    clock.advance(1)
    assert (await api.get(path)).status_code == 200


async def test_security_token_must_match_when_configured(clock: FakeClock) -> None:
    sandbox = make_sandbox(clock, servers=3, security_token="sts-session-token")
    async with asgi_client(sandbox) as client:
        api = Api(sandbox, client, clock)
        path = f"/v1/{api.pid}/cloudservers/detail"
        assert flat_error(await api.get(path)) == (401, "APIGW.0301")
        assert flat_error(await api.get(path, extra={"X-Security-Token": "other"})) == (401, "APIGW.0301")
        assert (await api.get(path, extra={"X-Security-Token": "sts-session-token"})).status_code == 200


async def test_project_must_be_the_sandboxs(api: Api) -> None:
    assert flat_error(await api.get("/v1/ffffffffffffffffffffffffffffffff/cloudservers/detail")) == (403, "APIGW.0310")
    other_header = await api.get(f"/v1/{api.pid}/cloudservers/detail", extra={"X-Project-Id": "f" * 32})
    assert flat_error(other_header) == (403, "APIGW.0310")


def _vector_headers(vector: dict[str, Any]) -> dict[str, str]:
    headers = dict(vector["headers_in"])
    headers["Host"] = vector["host"]
    signed = vector["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    if "x-sdk-content-sha256" in signed:
        headers["X-Sdk-Content-Sha256"] = "UNSIGNED-PAYLOAD"  # the signer adds it for non-JSON bodies
    headers["Authorization"] = vector["authorization"]
    return headers


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_verifier_accepts_every_known_answer_vector(vector: dict[str, Any]) -> None:
    headers = {k.lower(): v for k, v in _vector_headers(vector).items()}
    query = urlsplit(vector["final_uri"]).query
    body = vector["body"].encode() if vector["body"] is not None else None

    def secret_for(access_key: str) -> str | None:
        return vector["sk"] if access_key == vector["ak"] else None

    common = {"method": vector["method"], "path": vector["path"], "query_string": query, "body": body}
    assert verify_signature(**common, headers=headers, secret_for=secret_for, now=PINNED) == vector["ak"]
    tampered = dict(headers, authorization=headers["authorization"][:-1] + "0")
    if tampered["authorization"] == headers["authorization"]:
        tampered["authorization"] = headers["authorization"][:-1] + "1"
    with pytest.raises(SignatureRejected):
        verify_signature(**common, headers=tampered, secret_for=secret_for, now=PINNED)
    with pytest.raises(SignatureRejected, match="15 minutes"):
        verify_signature(**common, headers=headers, secret_for=secret_for, now=PINNED + timedelta(minutes=16))


ECS_VECTORS = [v for v in VECTORS if v["path"].startswith("/v1/0123456789abcdef0123456789abcdef/")]


@pytest.mark.parametrize("vector", ECS_VECTORS, ids=[v["name"] for v in ECS_VECTORS])
async def test_known_answer_requests_replayed_over_http_pass_authentication(vector: dict[str, Any]) -> None:
    sandbox = make_sandbox(
        FakeClock(PINNED),
        servers=3,
        access_key=vector["ak"],
        secret_key=vector["sk"],
        project_id="0123456789abcdef0123456789abcdef",
    )
    async with asgi_client(sandbox) as client:
        body = vector["body"].encode() if vector["body"] is not None else None
        response = await client.request(
            vector["method"], vector["final_uri"], headers=_vector_headers(vector), content=body
        )
    # Authentication passed: what is left is the operation's own answer (the vector ids are not in the fleet).
    assert response.status_code in {200, 404}, response.text
    if response.status_code == 404:
        assert response.json()["error"]["code"] in {"Ecs.0114", "Ecs.0000"}


# -- knobs ------------------------------------------------------------------------------------


async def test_throttling_is_429_and_not_processed(api: Api, sandbox: Sandbox) -> None:
    sid = server_ids(sandbox, "ACTIVE")[0]
    sandbox.knobs.rate_limit_per_second = 2
    assert (await api.list(limit=1)).status_code == 200
    assert (await api.list(limit=1)).status_code == 200
    throttled = await api.action({"os-stop": {"servers": [{"id": sid}]}})
    assert flat_error(throttled) == (429, "APIGW.0308")
    assert sandbox.backend.jobs == {} and sandbox.writes() == []
    assert sandbox.request_log[-1].operation == "BatchStopServers"
    await asyncio.sleep(0.6)  # the bucket refills at 2 per second
    assert (await api.action({"os-stop": {"servers": [{"id": sid}]}})).status_code == 200
    sandbox.knobs.rate_limit_per_second = None
    assert all([(await api.list(limit=1)).status_code == 200 for _ in range(5)])


async def test_injected_5xx_is_not_processed(api: Api, sandbox: Sandbox) -> None:
    sid = server_ids(sandbox, "ACTIVE")[0]
    sandbox.knobs.fail_next_5xx = 1
    failed = await api.action({"os-stop": {"servers": [{"id": sid}]}})
    assert flat_error(failed) == (500, "APIGW.0601")
    assert sandbox.backend.server_view(sid)["OS-EXT-STS:task_state"] is None
    assert sandbox.backend.jobs == {} and sandbox.writes() == []
    record = sandbox.request_log[-1]
    assert (record.operation, record.status, record.error_code, record.is_write) == (
        "BatchStopServers",
        500,
        "APIGW.0601",
        False,
    )
    assert (await api.action({"os-stop": {"servers": [{"id": sid}]}})).status_code == 200
    assert sandbox.knobs.fail_next_5xx == 0


async def test_latency_and_hang_delay_then_process(api: Api, sandbox: Sandbox) -> None:
    sandbox.knobs.latency_seconds = 0.05
    started = time.perf_counter()
    assert (await api.list(limit=1)).status_code == 200
    assert time.perf_counter() - started >= 0.05
    sandbox.knobs.latency_seconds = 0
    sandbox.knobs.hang_seconds = 0.2
    sandbox.knobs.hang_next = 1
    sid = server_ids(sandbox, "ACTIVE")[0]
    started = time.perf_counter()
    assert (await api.action({"os-stop": {"servers": [{"id": sid}]}})).status_code == 200
    assert time.perf_counter() - started >= 0.2
    assert sandbox.knobs.hang_next == 0
    assert len(sandbox.writes()) == 1, "a hung request is still processed"


async def test_failing_server_ids_knob(api: Api, sandbox: Sandbox, clock: FakeClock) -> None:
    sid = server_ids(sandbox, "ACTIVE")[0]
    sandbox.knobs.failing_server_ids = {sid}
    job_id = (await api.action({"os-stop": {"servers": [{"id": sid}]}})).json()["job_id"]
    job = (await api.job(job_id)).json()
    assert job["status"] == "FAIL"
    assert job["entities"]["sub_jobs"][0]["error_code"] == "Ecs.0000"
    assert job["entities"]["sub_jobs"][0]["fail_reason"] == "injected failure"


# -- IAM --------------------------------------------------------------------------------------


def _token_body(sandbox: Sandbox, password: str | None = None, scope: dict | None = None) -> dict[str, Any]:
    options = sandbox.options
    auth: dict[str, Any] = {
        "identity": {
            "methods": ["password"],
            "password": {
                "user": {
                    "name": options.iam_user,
                    "password": password or options.iam_password,
                    "domain": {"name": options.iam_domain},
                }
            },
        }
    }
    if scope is not None:
        auth["scope"] = scope
    return {"auth": auth}


async def test_iam_token_flow_and_expiry(api: Api, sandbox: Sandbox, clock: FakeClock) -> None:
    scope = {"project": {"name": sandbox.options.region}}
    issued = await api.client.post("/v3/auth/tokens", json=_token_body(sandbox, scope=scope))
    assert issued.status_code == 201
    token = issued.headers["X-Subject-Token"]
    body = issued.json()["token"]
    assert body["project"]["id"] == api.pid and body["user"]["name"] == sandbox.options.iam_user
    assert {"expires_at", "issued_at", "methods", "roles", "catalog"} <= set(body)
    assert token not in issued.text

    sid = next(iter(sandbox.backend.servers))
    shown = await api.client.get(f"/v1/{api.pid}/cloudservers/{sid}", headers={"X-Auth-Token": token})
    assert shown.status_code == 200
    no_catalog = await api.client.post("/v3/auth/tokens?nocatalog=true", json=_token_body(sandbox, scope=scope))
    assert "catalog" not in no_catalog.json()["token"]

    clock.advance(3600)
    expired = await api.client.get(f"/v1/{api.pid}/cloudservers/{sid}", headers={"X-Auth-Token": token})
    assert flat_error(expired) == (401, "APIGW.0307")
    bogus = await api.client.get(f"/v1/{api.pid}/cloudservers/{sid}", headers={"X-Auth-Token": "MIIbogus"})
    assert flat_error(bogus) == (401, "APIGW.0301")


async def test_iam_refusals(api: Api, sandbox: Sandbox) -> None:
    wrong = await api.client.post("/v3/auth/tokens", json=_token_body(sandbox, password="Wrong-Passw0rd"))
    assert flat_error(wrong) == (401, "IAM.0002")
    assert "X-Subject-Token" not in wrong.headers
    assert flat_error(await api.client.post("/v3/auth/tokens", json={"auth": {}})) == (400, "IAM.0001")
    bad_scope = _token_body(sandbox, scope={"project": {"name": "eu-west-0"}})
    assert flat_error(await api.client.post("/v3/auth/tokens", json=bad_scope)) == (400, "IAM.0004")
    # A domain-scoped token is no good for a project's ECS API.
    unscoped = await api.client.post("/v3/auth/tokens", json=_token_body(sandbox))
    token = unscoped.headers["X-Subject-Token"]
    refused = await api.client.get(f"/v1/{api.pid}/cloudservers/detail", headers={"X-Auth-Token": token})
    assert flat_error(refused) == (403, "APIGW.0310")


async def test_projects_lookup_is_signed(api: Api, sandbox: Sandbox) -> None:
    found = await api.get("/v3/projects", [("name", "cn-north-4")], extra={"X-Project-Id": api.pid})
    assert found.status_code == 200
    (project,) = found.json()["projects"]
    assert project["id"] == api.pid and project["name"] == "cn-north-4" and project["enabled"] is True
    assert project["domain_id"]
    assert (await api.get("/v3/projects", [("name", "eu-west-0")])).json()["projects"] == []
    assert flat_error(await api.client.get("/v3/projects?name=cn-north-4")) == (401, "APIGW.0301")
    assert [r.operation for r in sandbox.request_log] == ["KeystoneListProjects"] * 3


# -- request log and admin ----------------------------------------------------------------------


async def test_request_log_records_and_never_holds_secrets(api: Api, sandbox: Sandbox) -> None:
    sid = server_ids(sandbox, "ACTIVE")[0]
    password = "Secret-Reset-9"
    issued = await api.client.post("/v3/auth/tokens", json=_token_body(sandbox, scope={"project": {"id": api.pid}}))
    token = issued.headers["X-Subject-Token"]
    responses = [
        await api.show(sid),
        await api.action({"os-stop": {"servers": [{"id": sid}]}}),
        await api.request(
            "PUT",
            f"/v1/{api.pid}/cloudservers/os-reset-passwords",
            body={"new_password": password, "servers": [{"id": sid}]},
        ),
        await api.get(f"/v1/{api.pid}/cloudservers/detail", secret_key="wrong-secret"),
    ]
    await api.client.post("/v3/auth/tokens", json=_token_body(sandbox, password="Wrong-Passw0rd"))
    log = sandbox.request_log
    assert [r.seq for r in log] == sorted(r.seq for r in log)
    assert [(r.operation, r.status, r.is_write) for r in log] == [
        ("KeystoneCreateUserTokenByPassword", 201, False),
        ("ShowServer", 200, False),
        ("BatchStopServers", 200, True),
        ("BatchResetServersPassword", 200, True),
        ("ListServersDetails", 401, False),
        ("KeystoneCreateUserTokenByPassword", 401, False),
    ]
    assert log[1].server_ids == [sid] and log[2].server_ids == [sid]
    assert log[4].error_code == "APIGW.0301" and log[1].error_code is None
    assert [r.request_id for r in log[1:5]] == [r.headers["X-Request-Id"] for r in responses]
    assert all(r.at == PINNED for r in log)

    admin = await api.client.get("/_sandbox/requests")
    text = repr(log) + admin.text
    signatures = [r.request.headers["Authorization"].split("Signature=")[1] for r in responses]
    secrets = [password, "Wrong-Passw0rd", sandbox.options.iam_password, sandbox.options.secret_key, token]
    for secret in secrets + signatures:
        assert secret not in text
    assert len(admin.json()) == len(log)


async def test_admin_endpoints(api: Api, sandbox: Sandbox) -> None:
    health = (await api.client.get("/_sandbox/health")).json()
    assert health["status"] == "ok" and health["servers"] == 40
    assert sandbox.options.secret_key not in json.dumps(health)
    await api.list(limit=1)
    assert len((await api.client.get("/_sandbox/requests")).json()) == 1
    assert (await api.client.delete("/_sandbox/requests")).json() == {"cleared": 1}
    assert sandbox.request_log == []

    knobs = sandbox.knobs
    sid = next(iter(sandbox.backend.servers))
    patched = await api.client.patch("/_sandbox/knobs", json={"fail_next_5xx": 2, "failing_server_ids": [sid]})
    assert patched.status_code == 200 and patched.json()["fail_next_5xx"] == 2
    assert sandbox.knobs is knobs and sandbox.backend.knobs is knobs, "patched in place"
    assert knobs.failing_server_ids == {sid}
    assert (await api.client.patch("/_sandbox/knobs", json={"latency_seconds": -1})).status_code == 400
    assert (await api.client.patch("/_sandbox/knobs", json={"bogus": 1})).status_code == 400
    assert (await api.client.get("/_sandbox/knobs")).json()["fail_next_5xx"] == 2
    view = (await api.client.get(f"/_sandbox/servers/{sid}")).json()
    assert view["server"]["id"] == sid and view["password_resets"] == 0
    assert (await api.client.get(f"/_sandbox/servers/{UNKNOWN_ID}")).status_code == 404
    assert (await api.client.get("/_sandbox/nothing")).status_code == 404
    assert sandbox.request_log == [], "admin routes are not logged"


# -- flexus-ops sim (argument handling; the served app is covered by test_official_sdk.py) -------


def _sim_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_sim_arguments_default_to_the_sandbox_constants() -> None:
    args = _sim_args()
    assert (args.host, args.port, args.servers, args.seed) == ("127.0.0.1", 9090, 30, 7)
    assert (args.ak, args.sk, args.project_id) == (DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY, DEFAULT_PROJECT_ID)
    parsed = _sim_args("--rate-limit", "5", "--latency-ms", "20", "--job-seconds", "0.5", "--token-seconds", "60")
    assert (parsed.rate_limit, parsed.latency_ms, parsed.job_seconds, parsed.token_seconds) == (5.0, 20.0, 0.5, 60.0)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("192.168.1.5", False),
        ("example.com", False),
    ],
)
def test_loopback_detection(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_sim_refuses_a_remote_bind_and_bad_knobs(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(_sim_args("--host", "0.0.0.0")) == 2
    assert "--allow-remote" in capsys.readouterr().err
    assert run(_sim_args("--rate-limit", "0")) == 2
    assert run(_sim_args("--servers", "-1")) == 2
    assert "flexus-ops sim:" in capsys.readouterr().err


def test_sim_keeps_idle_connections_open_longer_than_the_client_reuses_them(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With both at 5 s, a pooled request could go out on a connection the sim was just closing ("Server
    disconnected without sending a response", seen under the mcp_http benchmark's load)."""
    import uvicorn

    from flexus_ops.cloud.client import KEEPALIVE_EXPIRY_SECONDS, FlexusClient
    from flexus_ops.config import Settings

    served: list[uvicorn.Config] = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda server, *args, **kwargs: served.append(server.config))
    run(_sim_args("--port", "0"))
    capsys.readouterr()
    (config,) = served
    settings = Settings(ecs_endpoint="http://127.0.0.1:9", access_key="AK", secret_key="SK", project_id="p")
    client = FlexusClient(settings)
    pool = client._http._transport._pool  # type: ignore[attr-defined]  # httpx's pool: what it really uses
    assert pool._keepalive_expiry == KEEPALIVE_EXPIRY_SECONDS
    assert config.timeout_keep_alive >= 10 * KEEPALIVE_EXPIRY_SECONDS
    asyncio.run(client.aclose())
