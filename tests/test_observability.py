"""What an orchestrator and a monitoring system see: probes, metrics, structured logs, the start-up line,
the Socket Mode bot's probe port, and OpenTelemetry spans. None of it may name a server, an id or a person."""

from __future__ import annotations

import io
import json
import logging
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from sqlalchemy import text
from starlette.applications import Starlette

from flexus_ops.core.telemetry import configure_logging
from flexus_ops.core.tools import Caller
from flexus_ops.gate.policy import Person, Policy, Role, os_principal, token_principal
from flexus_ops.mcp_http import http_app
from flexus_ops.mcp_server import build_server
from flexus_ops.observability import Metrics, Probes, not_ready_because
from flexus_ops.registry.registry import Registry
from flexus_ops.serving import Drain
from tests.gatekit import make_registry, sandbox_of, servers_with
from tests.live import AK, PID, SK, LiveSandbox
from tests.procs import FLEXUS_OPS, clean_env, free_port, serve_app, stop, wait_http

TOKEN = "fxt_observability-token-0123456789abcd"
OPERATOR = "opsperson-k7q"  # distinctive: a person's id must not turn up in probes or metrics
APPROVER = "approver-z3w"
PROBES = ("/healthz", "/readyz", "/metrics")


def policy() -> Policy:
    return Policy(
        people=[
            Person(id=OPERATOR, roles=[Role.OPERATOR], principals=[os_principal(), token_principal(TOKEN)]),
            Person(id=APPROVER, roles=[Role.APPROVER], principals=["slack:UAPPROVERZ3W"]),
        ]
    )


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    own = Metrics().attach()  # its own registry: nothing counted by other tests
    yield own
    own.detach()


def structured(result: Any) -> dict[str, Any]:
    assert result.structured_content is not None, result.content
    return result.structured_content


def sample(exposition: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text, 0 when absent."""
    for line in exposition.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line[len(name) : line.index("}") + 1]))
        if found == labels:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def forbidden_words(registry: Registry, *action_ids: str) -> list[str]:
    """Everything a probe must never say: server ids and names, the project, people, tokens, actions."""
    backend = sandbox_of(registry).backend
    words = [*backend.servers, *(backend.server_view(sid)["name"] for sid in backend.servers)]
    words += [sandbox_of(registry).options.project_id, OPERATOR, APPROVER, TOKEN, os_principal(), *action_ids]
    return words


# -- MCP over HTTP: probes and metrics after real activity ----------------------------------------


async def test_metrics_after_a_preview_and_confirm_name_tools_operations_and_states_only(
    tmp_path: Path, metrics: Metrics
) -> None:
    registry = make_registry(tmp_path, policy())
    target = servers_with(registry, "ACTIVE")[0]
    try:
        with serve_app(http_app(registry, "127.0.0.1", 0, metrics=metrics), lifespan="on") as url:
            headers = {"Authorization": f"Bearer {TOKEN}", "Host": "127.0.0.1:0"}
            transport = streamable_http_client(f"{url}/mcp", http_client=httpx2.AsyncClient(headers=headers))
            async with Client(transport, mode="legacy") as client:
                first = await client.call_tool("flexus_stop_servers", {"servers": [target["id"]]})
                preview = structured(first)["preview"]
                args = {"servers": [target["id"]], "confirmation_token": preview["confirmation_token"]}
                done = await client.call_tool("flexus_stop_servers", args)
                await client.call_tool("flexus_show_server", {"server": "no-such-server-anywhere"})
            assert structured(done)["result"]["status"] == "succeeded"
            answers = {path: httpx.get(f"{url}{path}") for path in PROBES}  # no credentials at all
    finally:
        await registry.aclose()

    assert answers["/healthz"].status_code == 200 and answers["/healthz"].json() == {"status": "ok"}
    assert answers["/readyz"].status_code == 200 and answers["/readyz"].json() == {"status": "ready"}
    exposition = answers["/metrics"].text
    assert answers["/metrics"].headers["content-type"].startswith("text/plain")
    tool = "flexus_stop_servers"
    transitions = "flexus_gate_transitions_total"
    assert sample(exposition, transitions, tool=tool, from_state="none", to_state="pending") == 1
    assert sample(exposition, transitions, tool=tool, from_state="pending", to_state="executing") == 1
    finals = [
        sample(exposition, transitions, tool=tool, from_state=before, to_state="succeeded")
        for before in ("executing", "submitted")
    ]
    assert sum(finals) == 1
    assert sample(exposition, "flexus_cloud_requests_total", operation="BatchStopServers", status="200") == 1
    assert sample(exposition, "flexus_cloud_requests_total", operation="ListServersDetails", status="200") >= 3
    assert sample(exposition, "flexus_cloud_requests_total", operation="ShowJob", status="200") >= 1
    assert sample(exposition, "flexus_cloud_request_duration_seconds_count", operation="BatchStopServers") == 1
    assert sample(exposition, "flexus_mcp_tool_calls_total", tool=tool, outcome="ok") == 2
    assert sample(exposition, "flexus_mcp_tool_calls_total", tool="flexus_show_server", outcome="error") == 1
    assert sample(exposition, "flexus_mcp_tool_call_duration_seconds_count", tool=tool) == 2

    everything = "\n".join(answer.text for answer in answers.values())
    leaked = [word for word in forbidden_words(registry, preview["action_id"]) if word in everything]
    assert leaked == [], f"the probes named {leaked}"
    assert "no-such-server-anywhere" not in everything  # a caller's input is no label either


async def test_metric_labels_are_bounded_whatever_the_event_says(metrics: Metrics) -> None:
    from flexus_ops.core.telemetry import emit

    emit("gate.transition", tool="web-01; DROP", action_id="a1", from_state="pending", to_state="made-up")
    emit("cloud.request", operation="/v1/pid/cloudservers/1234", status="teapot", seconds=0.1)
    emit("mcp.tool_call", tool="i-0123456789", outcome="ok", seconds=0.1)
    exposition, _ = metrics.exposition()
    assert (
        sample(
            exposition.decode(), "flexus_gate_transitions_total", tool="other", from_state="pending", to_state="other"
        )
        == 1
    )
    assert sample(exposition.decode(), "flexus_cloud_requests_total", operation="other", status="other") == 1
    assert sample(exposition.decode(), "flexus_mcp_tool_calls_total", tool="other", outcome="ok") == 1
    for word in ("web-01", "1234", "teapot", "i-0123456789", 'a1"'):
        assert word not in exposition.decode()


def test_slack_http_serves_the_same_probes_and_they_name_no_one(tmp_path: Path, metrics: Metrics) -> None:
    from flexus_ops.bots.slack.blocks import CONFIRM
    from tests.slackkit import ALICE, BOB, rig, wait_until

    with rig(tmp_path, watch_interval=0.1) as bot:
        target = next(s for s in servers_with(bot.registry, "ACTIVE") if s["name"].isascii())
        action_id, _preview = bot.preview(ALICE, f"stop {target['name']}")
        response, _url = bot.slack.click(ALICE, CONFIRM, action_id)
        assert response.status_code == 200
        wait_until(lambda: bot.registry.store.get_action(action_id)["state"] == "succeeded", what="the stop")
        answers = {path: httpx.get(f"{bot.slack.bot_url}{path}") for path in PROBES}
        words = [*forbidden_words(bot.registry, action_id), ALICE, BOB, "alice", "bob"]
    assert answers["/healthz"].json() == {"status": "ok"}
    assert (answers["/readyz"].status_code, answers["/readyz"].json()) == (200, {"status": "ready"})
    served = answers["/metrics"].text
    tool = "flexus_stop_servers"
    for before, after in (("none", "pending"), ("pending", "executing")):
        assert sample(served, "flexus_gate_transitions_total", tool=tool, from_state=before, to_state=after) >= 1
    exposition = metrics.exposition()[0].decode()  # this test's own registry: exact counts
    assert sample(exposition, "flexus_gate_transitions_total", tool=tool, from_state="none", to_state="pending") == 1
    everything = "\n".join(answer.text for answer in answers.values())
    leaked = [word for word in words if word in everything]
    assert leaked == [], f"the probes named {leaked}"


# -- readiness: one word, no detail ---------------------------------------------------------------


async def _probe(registry: Registry, drain: Drain | None, path: str = "/readyz") -> httpx.Response:
    app = Starlette(routes=Probes(registry, drain, Metrics()).routes())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://probe") as client:
        return await client.get(path)


async def test_readiness_says_ready_then_draining(tmp_path: Path) -> None:
    registry = make_registry(tmp_path, policy())
    drain = Drain()
    try:
        ready = await _probe(registry, drain)
        assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
        drain.draining = True
        stopping = await _probe(registry, drain)
        assert (stopping.status_code, stopping.json()) == (503, {"status": "draining"})
        alive = await _probe(registry, drain, "/healthz")
        assert (alive.status_code, alive.json()) == (200, {"status": "ok"})  # alive while draining
    finally:
        await registry.aclose()


async def test_a_store_that_fails_is_not_ready_and_the_probe_says_only_store(tmp_path: Path) -> None:
    # Nothing listens on port 1: the store cannot even connect.
    url = "postgresql://flexus:hunter2-db-password@127.0.0.1:1/flexus"
    registry = Registry(
        make_registry(tmp_path, policy()).settings.model_copy(
            update={"store_url": url, "db_connect_timeout_seconds": 2.0}
        ),
        policy=policy(),
    )
    try:
        answer = await _probe(registry, None)
    finally:
        await registry.aclose()
    assert (answer.status_code, answer.json()) == (503, {"status": "store"})
    assert "hunter2" not in answer.text and "127.0.0.1" not in answer.text


async def test_a_store_behind_its_migrations_is_not_ready(tmp_path: Path) -> None:
    registry = make_registry(tmp_path, policy())
    try:
        with registry.store.engine.begin() as db:
            db.execute(text("UPDATE flexus_schema_version SET version = version - 1"))
        answer = await _probe(registry, None)
        assert (answer.status_code, answer.json()) == (503, {"status": "migrations"})
    finally:
        await registry.aclose()


async def test_a_policy_file_that_no_longer_loads_is_not_ready(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import flexus_ops.registry.registry as registry_module

    monkeypatch.setattr(registry_module, "POLICY_CHECK_SECONDS", 0.0)  # look at the file on every call
    path = tmp_path / "policy.toml"
    path.write_text(f'[[people]]\nid = "{OPERATOR}"\nroles = ["operator"]\nprincipals = ["os:someone"]\n')
    settings = make_registry(tmp_path, policy()).settings.model_copy(update={"policy_path": path})
    registry = Registry(settings)
    try:
        assert await not_ready_because(registry) is None
        path.write_text("[[people]\nthis is not toml")
        answer = await _probe(registry, None)
    finally:
        await registry.aclose()
    assert (answer.status_code, answer.json()) == (503, {"status": "policy"})


def test_mcp_http_readiness_turns_503_while_draining(tmp_path: Path) -> None:
    registry = make_registry(tmp_path, policy())
    drain = Drain()
    with serve_app(http_app(registry, "127.0.0.1", 0, drain=drain, metrics=Metrics()), lifespan="on") as url:
        assert httpx.get(f"{url}/readyz").status_code == 200
        drain.draining = True
        stopping = httpx.get(f"{url}/readyz")
        scraped = httpx.get(f"{url}/metrics")
    assert (stopping.status_code, stopping.json()) == (503, {"status": "draining"})
    assert scraped.status_code == 200  # a draining replica is still scraped


async def test_a_request_turned_away_while_draining_is_read_before_the_503() -> None:
    # Closing the connection with the body unread makes the client see a reset, not the 503 and its
    # Retry-After; so the body is read first (this test saw resets on a kept-alive connection).
    from flexus_ops.serving import Draining

    async def never_called(*_: Any) -> None:
        raise AssertionError("a draining server must not pass a request on")

    chunks = [{"type": "http.request", "body": b"x" * 1000, "more_body": True}] * 3
    chunks.append({"type": "http.request", "body": b"}", "more_body": False})
    events: list[str] = []

    async def receive() -> dict[str, Any]:
        events.append("read")
        return chunks[len([e for e in events if e == "read"]) - 1]

    async def send(message: dict[str, Any]) -> None:
        events.append(message["type"])

    scope = {"type": "http", "method": "POST", "path": "/mcp"}
    await Draining(never_called, Drain(draining=True))(scope, receive, send)
    assert events == ["read"] * 4 + ["http.response.start", "http.response.body"]


# -- structured logs: one JSON object per line, an event per transition and per retry --------------


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    configure_logging("info", "json", stream=stream)
    yield stream
    for handler in list(root.handlers):
        if handler not in saved[1]:
            root.removeHandler(handler)
    root.setLevel(saved[0])


def lines_of(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


async def test_json_logs_carry_one_event_per_transition_and_per_retry(
    tmp_path: Path, live: LiveSandbox, json_log: io.StringIO
) -> None:
    from flexus_ops.cloud.retries import retry_listener

    registry = make_registry(
        tmp_path,
        policy(),
        access_key=AK,
        secret_key=SK,
        project_id=PID,
        ecs_endpoint=live.url,
        retry_base_seconds=0.01,
        retry_max_seconds=0.05,
    )
    caller = Caller(os_principal(), "cli")
    target = next(sid for sid, s in live.sandbox.backend.servers.items() if s.status == "ACTIVE" and not s.locked)

    async def lift_the_throttle(_notice: str) -> None:
        live.sandbox.knobs.rate_limit_per_second = None  # heard the retry: let the next try through

    try:
        preview = await registry.call(caller, "flexus_stop_servers", {"servers": [target]})
        token = preview.model_dump()["preview"]["confirmation_token"]
        live.sandbox.knobs.fail_next_5xx = 1  # the confirming re-read meets a 500 once: a retry
        done = await registry.call(caller, "flexus_stop_servers", {"servers": [target], "confirmation_token": token})
        assert done.model_dump()["result"]["status"] == "succeeded"
        live.sandbox.knobs.retry_after_seconds = 0
        live.sandbox.knobs.rate_limit_per_second = 1.0
        await registry.client.list_servers(limit=1)  # spends the only token
        heard = retry_listener.set(lift_the_throttle)
        try:
            await registry.client.list_servers(limit=1)  # 429 with Retry-After, then through
        finally:
            retry_listener.reset(heard)
        with registry.store.engine.begin() as db:
            audited = db.execute(text("SELECT event, action_id FROM flexus_audit WHERE action_id IS NOT NULL")).all()
    finally:
        await registry.aclose()

    records = lines_of(json_log)  # every line parses, or this fails
    assert records and all({"timestamp", "level", "logger", "message"} <= set(r) for r in records)
    transitions = [r for r in records if r.get("event") == "gate.transition"]
    action_id = transitions[0]["action_id"]
    assert [(t["from_state"], t["to_state"]) for t in transitions] == [
        ("none", "pending"),
        ("pending", "executing"),
        ("executing", "submitted"),
        ("submitted", "succeeded"),
    ]
    assert all(t["tool"] == "flexus_stop_servers" and t["action_id"] == action_id for t in transitions)
    assert all(t["level"] == "info" and t["logger"] == "flexus_ops.events" for t in transitions)
    assert transitions[0]["surface"] == "cli" and transitions[0]["person"] == OPERATOR
    # Each carries the audit record written in the same transaction.
    assert [t["audit_event"] for t in transitions] == [row.event for row in audited if row.action_id == action_id][
        : len(transitions)
    ]

    retries = [r for r in records if r.get("event") == "cloud.retry"]
    throttles = [r for r in records if r.get("event") == "cloud.throttled"]
    assert len(retries) == 1 and retries[0]["status"] == "500" and retries[0]["level"] == "warning"
    assert retries[0]["operation"] in ("ShowServer", "ListServersDetails") and retries[0]["attempt"] == 2
    assert len(throttles) == 1 and throttles[0]["status"] == "429" and throttles[0]["retry_after"] == 0.0
    assert throttles[0]["operation"] == "ListServersDetails" and throttles[0]["message"].startswith("cloud retry: ")
    everything = json_log.getvalue()
    assert SK not in everything and TOKEN not in everything and token not in everything


# -- the start-up line ------------------------------------------------------------------------------


def _first_lines(args: list[str], env: dict[str, str], until: str) -> str:
    """Run ``flexus-ops`` without a terminal (pipes), read stderr until ``until`` shows, then stop it."""
    process = subprocess.Popen(
        [FLEXUS_OPS, *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: list[str] = []
    try:
        assert process.stderr is not None
        for line in process.stderr:
            seen.append(line)
            if until in line:
                break
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return "".join(seen)


@pytest.mark.slow
def test_mcp_http_without_a_terminal_logs_where_it_listens(tmp_path: Path) -> None:
    port = free_port()
    store = tmp_path / "store.db"
    env = clean_env(tmp_path, FLEXUS_STORE_URL=f"sqlite:///{store}", FLEXUS_LOG_FORMAT="json")
    printed = _first_lines(["mcp", "--transport", "http", "--port", str(port)], env, '"token_file"')
    records = [json.loads(line) for line in printed.splitlines()]  # JSON mode: every line is one object
    started = next(record for record in records if record.get("event") == "started")
    assert any(record.get("token_file") for record in records)  # where the session token went; not the token
    assert started["listen"] == f"http://127.0.0.1:{port}/mcp" and started["mode"] == "http"
    assert started["target"] == "sandbox" and started["store"] == "sqlite" and started["surface"] == "mcp"
    assert str(store) not in printed


@pytest.mark.slow
async def test_mcp_http_on_port_0_announces_and_serves_the_port_the_system_gave(tmp_path: Path) -> None:
    import socket

    token_file = tmp_path / "session.token"
    env = clean_env(tmp_path, FLEXUS_LOG_FORMAT="json")
    command = [FLEXUS_OPS, "mcp", "--transport", "http", "--port", "0", "--token-file", str(token_file)]
    process = subprocess.Popen(
        command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        assert process.stderr is not None
        records = []
        for line in process.stderr:  # JSON mode: one object a line; the start-up line, then the token's file
            records.append(json.loads(line))
            if records[-1].get("event") == "started":
                # A client may connect the moment the line names the port: it must not be refused.
                port = int(re.fullmatch(r"http://127\.0\.0\.1:(\d+)/mcp", records[-1]["listen"])[1])  # type: ignore[index]
                socket.create_connection(("127.0.0.1", port), timeout=10).close()
            if records[-1].get("token_file"):
                break
        listen = next(record for record in records if record.get("event") == "started")["listen"]
        assert port != 0
        # The Host allow-list names that port too: a call through it is served, not refused as rebinding.
        headers = {"Authorization": f"Bearer {token_file.read_text().strip()}"}
        transport = streamable_http_client(listen, http_client=httpx2.AsyncClient(headers=headers))
        async with Client(transport) as client:
            listed = await client.call_tool("flexus_list_servers", {})
        assert not listed.is_error and listed.structured_content and listed.structured_content["servers"]
    finally:
        stop([process])


@pytest.mark.slow
def test_mcp_http_keeps_an_idle_connection_past_a_load_balancers_reuse(tmp_path: Path) -> None:
    # A balancer reuses an idle connection for up to 60 s; a server that closed it after uvicorn's 5 s
    # makes the balancer's next request fail (a 502). A request 6 s after the last, on the same connection:
    import socket
    import time

    port = free_port()
    command = [FLEXUS_OPS, "mcp", "--transport", "http", "--port", str(port)]
    process = subprocess.Popen(command, env=clean_env(tmp_path), stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", process)
        request = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()

        def answer(conn: socket.socket) -> bytes:
            """One whole response's status line and headers (its body read too); b"" if the server closed."""
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return b""
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(re.search(rb"(?im)^content-length: *(\d+)", head)[1])  # type: ignore[index]
            while len(body) < length:
                body += conn.recv(65536)
            return head

        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(request)
            assert answer(conn).startswith(b"HTTP/1.1 200")
            time.sleep(6)
            conn.sendall(request)
            assert answer(conn).startswith(b"HTTP/1.1 200")  # b"" had the server closed it
    finally:
        stop([process])


@pytest.mark.slow
def test_a_port_in_use_is_one_line_naming_it(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [FLEXUS_OPS, "mcp", "--transport", "http", "--port", str(port)],
            env=clean_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 4, result.stderr  # a configuration problem
    assert "Traceback" not in result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_start_up_line_names_the_real_target_and_postgres_without_secrets(tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(
        tmp_path,
        FLEXUS_STORE_URL="postgresql://flexus:s3cret-db-pass@127.0.0.1:1/flexus",
        FLEXUS_ECS_ENDPOINT="http://127.0.0.1:1",
        HUAWEICLOUD_SDK_AK="AKSTARTUPLINE000001",
        HUAWEICLOUD_SDK_SK="sk-start-up-line-secret-0123456789",
        HUAWEICLOUD_SDK_PROJECT_ID=PID,
        FLEXUS_POLICY=str(tmp_path / "policy.toml"),
    )
    (tmp_path / "policy.toml").write_text(
        f'[[people]]\nid = "{OPERATOR}"\nroles = ["operator"]\nprincipals = ["{token_principal(TOKEN)}"]\n'
    )
    printed = _first_lines(
        ["mcp", "--transport", "http", "--port", str(port), "--log-level", "info"], env, "listening on"
    )
    line = next(line for line in printed.splitlines() if "listening on" in line)
    assert f"http://127.0.0.1:{port}/mcp" in line and "(http)" in line
    assert "cn-north-4 http://127.0.0.1:1" in line and "store: postgresql" in line
    for secret in ("s3cret-db-pass", "sk-start-up-line-secret", "AKSTARTUPLINE000001"):
        assert secret not in printed


# -- the Socket Mode bot's probe port ------------------------------------------------------------------


@pytest.mark.slow
def test_socket_mode_serves_probes_and_metrics_on_its_health_port(tmp_path: Path) -> None:
    from tests.slackkit import APP_TOKEN, BOT_TOKEN, FakeSlack, FakeSocketMode, serve, wait_until
    from tests.test_slack_run import flexus_ops_slack, output_of

    fake = FakeSlack()
    port = free_port()
    with FakeSocketMode() as socket_mode, serve(fake.app()) as fake_url:
        fake.url, fake.socket_url = fake_url, socket_mode.url
        args = ("--health-port", str(port), "--log-format", "json")
        with flexus_ops_slack(tmp_path, fake, *args, SLACK_APP_TOKEN=APP_TOKEN) as process:
            connected = wait_until(
                lambda: socket_mode.connected.is_set() or process.poll() is not None, what="the bot to connect"
            )
            assert connected and process.poll() is None, output_of(process)
            base = f"http://127.0.0.1:{port}"
            answers = {path: httpx.get(f"{base}{path}", timeout=10) for path in PROBES}
        printed = output_of(process)
    assert answers["/healthz"].json() == {"status": "ok"}
    assert (answers["/readyz"].status_code, answers["/readyz"].json()) == (200, {"status": "ready"})
    assert "flexus_gate_transitions_total" in answers["/metrics"].text or "# HELP flexus" in answers["/metrics"].text
    started = [json.loads(line) for line in printed.splitlines() if '"event": "started"' in line]
    assert started and started[0]["mode"] == "socket" and started[0]["listen"].startswith(base)
    assert APP_TOKEN not in printed and BOT_TOKEN not in printed
    for line in printed.splitlines():  # JSON mode: every log line is one object
        if line.startswith("{"):
            json.loads(line)


# -- OpenTelemetry ------------------------------------------------------------------------------------


async def test_a_tool_call_makes_mcp_and_httpx_spans_to_the_sandbox(tmp_path: Path, live: LiveSandbox) -> None:
    pytest.importorskip("opentelemetry.sdk", reason="the [otel] extra is not installed")
    pytest.importorskip("opentelemetry.instrumentation.httpx", reason="the [otel] extra is not installed")
    from opentelemetry import trace
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from flexus_ops.observability import setup_otel

    exporter = InMemorySpanExporter()
    assert setup_otel(SimpleSpanProcessor(exporter))
    registry = make_registry(tmp_path, policy(), access_key=AK, secret_key=SK, project_id=PID, ecs_endpoint=live.url)
    try:
        async with Client(build_server(registry), mode="legacy") as client:
            result = await client.call_tool("flexus_list_servers", {"limit": 2})
        assert structured(result)["count"] == 30
    finally:
        await registry.aclose()
        HTTPXClientInstrumentor().uninstrument()  # the rest of the test run goes untraced
        trace.get_tracer_provider().shutdown()  # type: ignore[attr-defined]
    spans = exporter.get_finished_spans()
    tool_spans = [s for s in spans if s.name == "tools/call flexus_list_servers"]
    assert tool_spans, [s.name for s in spans]
    tool_span = tool_spans[0]
    assert tool_span.attributes is not None and tool_span.attributes["gen_ai.tool.name"] == "flexus_list_servers"
    http_spans = [
        s
        for s in spans
        if s.attributes and str(s.attributes.get("url.full", s.attributes.get("http.url", ""))).startswith(live.url)
    ]
    assert http_spans, [(s.name, dict(s.attributes or {})) for s in spans]
    assert all(s.context.trace_id == tool_span.context.trace_id for s in http_spans)  # the call's own trace


# -- settings ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("variable", "value"), [("FLEXUS_LOG_LEVEL", "loud"), ("FLEXUS_LOG_FORMAT", "xml")])
def test_a_bad_log_setting_names_the_variable_and_the_choices(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    from flexus_ops.config import Settings
    from flexus_ops.core.errors import ConfigurationError

    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError, match=rf"^{variable}: must be one of "):
        Settings.load()
    monkeypatch.setenv(variable, {"FLEXUS_LOG_LEVEL": "WARNING", "FLEXUS_LOG_FORMAT": "JSON"}[variable])
    settings = Settings.load()
    assert (settings.log_level, settings.log_format) in (("warning", "text"), ("info", "json"))


def test_the_terminal_banner_names_the_store_without_a_password_in_its_query(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flexus_ops.mcp_server import banner

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    registry = make_registry(tmp_path, policy())
    url = "postgresql://flexus@db.internal:5432/flexus?password=PgQuerySecret77&sslmode=require"
    monkeypatch.setattr(type(registry.settings), "resolved_store_url", property(lambda _self: url))
    shown = Terminal()
    monkeypatch.setattr("sys.stderr", shown)
    banner(registry, "stdio", "stdin/stdout")
    assert "PostgreSQL store db.internal:5432/flexus" in shown.getvalue()
    assert "PgQuerySecret77" not in shown.getvalue()


def test_connections_to_our_http_servers_get_tcp_nodelay() -> None:
    # asyncio disables Nagle only on connections whose socket says IPPROTO_TCP; a listening socket made with
    # protocol 0 gave accepted connections Nagle, and every small answer waited 40 ms for a delayed ACK.
    import socket

    from flexus_ops.core.sockets import listening_socket

    server = listening_socket("127.0.0.1", 0)
    try:
        with socket.create_connection(server.getsockname()[:2], timeout=5):
            accepted, _ = server.accept()
            with accepted:
                assert accepted.proto == socket.IPPROTO_TCP
    finally:
        server.close()
