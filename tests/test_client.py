"""The cloud client against the sandbox over real HTTP (loopback), for every operation and rule."""

from __future__ import annotations

import asyncio
import base64

import pytest

from flexus_ops.cloud.client import FlexusClient
from flexus_ops.cloud.models import Job, JobPoll
from flexus_ops.config import Settings
from flexus_ops.core.errors import (
    AuthenticationError,
    CloudError,
    ConfigurationError,
    InvalidInput,
    JobTimeout,
    NotFound,
    ServiceError,
    TransportError,
)
from flexus_ops.registry.registry import make_client
from tests.live import SK, LiveSandbox, serve

UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


def servers_in(live: LiveSandbox, status: str, *, locked: bool = False) -> list[str]:
    return [
        sid
        for sid, server in live.sandbox.backend.servers.items()
        if server_status(live, sid) == status and bool(server_locked(live, sid)) == locked
    ]


def server_view(live: LiveSandbox, server_id: str) -> dict:
    return live.sandbox.backend.server_view(server_id)


def server_status(live: LiveSandbox, server_id: str) -> str:
    return server_view(live, server_id)["status"]


def server_locked(live: LiveSandbox, server_id: str) -> bool:
    return bool(server_view(live, server_id)["locked"])


def operations(live: LiveSandbox) -> list[str]:
    return [record.operation for record in live.sandbox.request_log]


async def test_show_server_parses_every_wire_shape(live: LiveSandbox) -> None:
    server_id = next(iter(live.sandbox.backend.servers))
    async with FlexusClient(live.settings()) as client:
        server = await client.show_server(server_id)
    assert server.id == server_id
    assert server.status in {"ACTIVE", "SHUTOFF"}
    assert server.flavor is not None and isinstance(server.flavor.vcpus, str)
    assert server.image is not None and server.image.id
    assert server.private_ips, "every sandbox server has a fixed address"
    assert all(a.version == "4" for entries in (server.addresses or {}).values() for a in entries)
    assert server.availability_zone and server.availability_zone.startswith("cn-north-4")
    # The request went over the wire, signed, with the project header.
    assert operations(live) == ["ShowServer"]


async def test_unknown_server_is_not_found_with_code_and_request_id(live: LiveSandbox) -> None:
    async with FlexusClient(live.settings()) as client:
        with pytest.raises(NotFound) as caught:
            await client.show_server(UNKNOWN_ID)
    assert caught.value.status == 404
    assert caught.value.code == "Ecs.0114"
    assert caught.value.request_id
    assert UNKNOWN_ID in caught.value.message


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda c: c.show_server("not-a-uuid"), "server_id"),
        (lambda c: c.list_servers(limit=1001), "limit"),
        (lambda c: c.list_servers(limit=0), "limit"),
        (lambda c: c.list_servers(status="RUNNING"), "status"),
        (lambda c: c.list_servers(offset=-1), "offset"),
        (lambda c: c.list_servers(colour="red"), "colour"),
        (lambda c: c.batch_stop([]), "server_ids"),
        (lambda c: c.batch_stop([UNKNOWN_ID, UNKNOWN_ID]), "server_ids"),
        (lambda c: c.batch_reboot([UNKNOWN_ID], type="GENTLE"), "type"),
        (lambda c: c.batch_reset_password([UNKNOWN_ID], "short"), "new_password"),
        (lambda c: c.batch_reset_password([UNKNOWN_ID], "twoclasses1only"), "new_password"),
        (lambda c: c.batch_reset_password([UNKNOWN_ID], None), "new_password"),
        (lambda c: c.update_server(UNKNOWN_ID, name="bad name!"), "name"),
        (lambda c: c.update_server(UNKNOWN_ID, description="<script>"), "description"),
        (lambda c: c.update_server(UNKNOWN_ID, hostname="-web"), "hostname"),
        (lambda c: c.update_server(UNKNOWN_ID, hostname="a..b"), "hostname"),
        (lambda c: c.update_server(UNKNOWN_ID, user_data="%%%not base64"), "user_data"),
        (lambda c: c.update_server(UNKNOWN_ID, user_data=base64.b64encode(b"x" * 40000).decode()), "user_data"),
        (lambda c: c.update_server(UNKNOWN_ID), "server"),
        (lambda c: c.show_job("../../etc"), "job_id"),
    ],
)
async def test_bad_input_names_the_field_and_sends_nothing(live: LiveSandbox, call, field: str) -> None:
    async with FlexusClient(live.settings()) as client:
        with pytest.raises(InvalidInput) as caught:
            await call(client)
    assert caught.value.field == field
    assert caught.value.rule
    assert live.sandbox.request_log == [], "an invalid request must never reach the cloud"


async def test_invalid_input_error_is_bounded() -> None:
    with pytest.raises(InvalidInput) as caught:
        await make_client(Settings()).update_server(UNKNOWN_ID, name="x" * 1_000_000)
    assert len(str(caught.value)) < 400


async def test_list_filters_and_page_number_semantics() -> None:
    with serve(servers=40) as live:
        async with FlexusClient(live.settings()) as client:
            everything = await client.list_servers(limit=1000)
            assert everything.count == 40
            page2 = await client.list_servers(limit=10, offset=2)
            assert [s.id for s in page2.servers] == [s.id for s in everything.servers[10:20]]
            assert page2.count == 40
            page0 = await client.list_servers(limit=10, offset=0)
            assert [s.id for s in page0.servers] == [s.id for s in everything.servers[:10]]

            shutoff = await client.list_servers(status="SHUTOFF", limit=1000)
            assert shutoff.servers and all(s.status == "SHUTOFF" for s in shutoff.servers)

            name = everything.servers[3].name
            assert name
            fuzzy = await client.list_servers(name=name[1:-1], limit=1000)
            assert everything.servers[3].id in {s.id for s in fuzzy.servers}

            tag = next(t for s in everything.servers for t in (s.tags or []))
            tagged = await client.list_servers(tags=tag, limit=1000)
            not_tagged = await client.list_servers(not_tags=tag, limit=1000)
            assert tagged.count + not_tagged.count == 40
            assert "not-tags" in live.sandbox.request_log[-1].query

            ip = everything.servers[5].private_ips[0]
            exact = await client.list_servers(ip_eq=ip)
            assert [s.id for s in exact.servers] == [everything.servers[5].id]

            # server_id overrides every other filter; an unknown id still yields an entry.
            wanted = [everything.servers[0].id, UNKNOWN_ID]
            by_id = await client.list_servers(server_id=wanted, status="SHUTOFF", name="zzz-no-match")
            assert {s.id for s in by_id.servers} == set(wanted)
            ghost = next(s for s in by_id.servers if s.id == UNKNOWN_ID)
            assert ghost.name is None and ghost.fault


async def test_list_all_reads_first_page_then_the_rest_concurrently() -> None:
    with serve(servers=2500) as live:
        async with FlexusClient(live.settings()) as client:
            servers = await client.list_all_servers()
        assert len(servers) == 2500
        assert len({s.id for s in servers}) == 2500
        pages = [r.query.get("offset") for r in live.sandbox.request_log]
        assert pages == ["1", "2", "3"] or sorted(pages) == ["1", "2", "3"]
        assert pages[0] == "1"


async def test_list_all_summaries_is_the_full_listing_with_only_the_index_fields() -> None:
    with serve(servers=1200) as live:
        async with FlexusClient(live.settings()) as client:
            full = await client.list_all_servers(page_size=500)
            lean = await client.list_all_summaries(page_size=500)
            tagged = next(s for s in full if s.tags)
            filtered = await client.list_all_summaries(tags=tagged.tags[0])
            with pytest.raises(InvalidInput, match="offset"):
                await client.list_all_summaries(offset=2)
            with pytest.raises(InvalidInput, match="server_id"):
                await client.list_all_summaries(server_id=[full[0].id])
        assert [(s.id, s.name, s.status, s.tags) for s in lean] == [(s.id, s.name, s.status, s.tags) for s in full]
        assert not hasattr(lean[0], "addresses")  # the rest of each server is skipped, never built
        assert tagged.id in {s.id for s in filtered} and all(tagged.tags[0] in (s.tags or []) for s in filtered)


async def test_server_rows_are_the_page_with_only_the_listing_fields_in_the_same_order() -> None:
    from flexus_ops.cloud.models import ListServersQuery
    from flexus_ops.registry.outputs import project

    with serve(servers=300) as live:
        async with FlexusClient(live.settings()) as client:
            page = ListServersQuery(limit=50, offset=2)
            full, rows = await client.list_servers(page), await client.list_server_rows(page)
            ids = [s.id for s in (await client.list_servers(limit=1000)).servers][::-1][:150]
            by_ids = await client.list_server_rows(ListServersQuery(server_id=ids, limit=1000))  # two queries
        assert rows.count == full.count == 300 and len(rows.servers) == 50
        assert [project(s, False) for s in rows.servers] == [project(s, False) for s in full.servers]
        assert not hasattr(rows.servers[0], "image")  # the rest of each server is skipped, never built
        assert [s.id for s in by_ids.servers] == ids
        with pytest.raises(TypeError, match="whole record"):
            project(rows.servers[0], True)


async def test_batch_of_2500_is_three_concurrent_requests_with_every_job_id() -> None:
    with serve(servers=2500, job_seconds=0.1) as live:
        targets = list(live.sandbox.backend.servers)
        frozen = {sid for sid, server in live.sandbox.backend.servers.items() if server.frozen}
        will_stop = set(servers_in(live, "ACTIVE")) - frozen
        assert len(targets) == 2500 and 0 < len(will_stop) < 2500
        async with FlexusClient(live.settings()) as client:
            submission = await client.batch_stop(targets)
            assert len(submission.jobs) == 3
            assert [len(job.server_ids) for job in submission.jobs] == [1000, 1000, 500]
            assert sorted(sid for job in submission.jobs for sid in job.server_ids) == sorted(targets)
            writes = live.sandbox.writes()
            assert len(writes) == 3 and all(w.operation == "BatchStopServers" for w in writes)
            results = await client.wait_for_jobs(submission.job_ids)
        outcomes = {o.server_id: o for result in results for o in result.servers}
        assert set(outcomes) == set(targets)
        for sid in targets:
            if sid in will_stop:
                assert outcomes[sid].status == "SUCCESS"
                assert server_status(live, sid) == "SHUTOFF"
            else:  # already SHUTOFF, locked or frozen: refused per server, with the reason kept
                assert outcomes[sid].status == "FAIL"
                assert outcomes[sid].error_code in {"Ecs.0100", "Ecs.0605", "Ecs.9001"}


async def test_stop_reports_per_server_failures_and_keeps_reasons(live: LiveSandbox) -> None:
    active = servers_in(live, "ACTIVE")
    locked = [sid for sid in live.sandbox.backend.servers if server_locked(live, sid)]
    shutoff = servers_in(live, "SHUTOFF")
    assert locked and shutoff
    targets = [active[0], locked[0], shutoff[0]]
    live.sandbox.knobs.failing_server_ids = {active[1]}
    targets.append(active[1])
    seen: list[JobPoll] = []
    async with FlexusClient(live.settings()) as client:
        submission = await client.batch_stop(targets, type="HARD")
        assert server_view(live, active[0])["OS-EXT-STS:task_state"] == "powering-off"
        assert server_status(live, active[0]) == "ACTIVE", "a stopping server still shows ACTIVE"
        (result,) = await client.wait_for_jobs(submission.job_ids, on_progress=seen.append)
    assert result.status == "FAIL"
    by_id = {o.server_id: o for o in result.servers}
    assert by_id[active[0]].status == "SUCCESS"
    assert by_id[locked[0]].error_code == "Ecs.0605"
    assert by_id[shutoff[0]].error_code == "Ecs.0100"
    assert by_id[active[1]].status == "FAIL" and by_id[active[1]].fail_reason
    assert {o.server_id for o in result.failed} == {locked[0], shutoff[0], active[1]}
    assert seen and seen[-1].status == "FAIL"
    assert server_status(live, active[0]) == "SHUTOFF"


async def test_start_and_reboot_follow_the_state_model(live: LiveSandbox) -> None:
    shutoff = [s for s in servers_in(live, "SHUTOFF")][:1]
    active = servers_in(live, "ACTIVE")[:2]
    async with FlexusClient(live.settings()) as client:
        started = await client.batch_start(shutoff)
        rebooted = await client.batch_reboot(active, type="HARD")
        assert server_status(live, active[0]) == "HARD_REBOOT"
        results = await client.wait_for_jobs(started.job_ids + rebooted.job_ids)
    assert all(r.status == "SUCCESS" for r in results)
    assert server_status(live, shutoff[0]) == "ACTIVE"
    assert all(server_status(live, sid) == "ACTIVE" for sid in active)
    bodies = [r.operation for r in live.sandbox.writes()]
    assert bodies == ["BatchStartServers", "BatchRebootServers"]


async def test_reset_password_dry_run_changes_nothing_and_real_run_writes_once(live: LiveSandbox) -> None:
    password = "Flexus-Test-9pass"
    targets = servers_in(live, "ACTIVE")[:2]
    async with FlexusClient(live.settings()) as client:
        preview = await client.batch_reset_password(targets, None, dry_run=True)
        assert preview.dry_run and sorted(preview.server_ids) == sorted(targets)
        assert live.sandbox.writes() == []
        done = await client.batch_reset_password(targets, password)
    assert sorted(done.server_ids) == sorted(targets)
    writes = live.sandbox.writes()
    assert [w.operation for w in writes] == ["BatchResetServersPassword"]
    assert password not in repr(live.sandbox.request_log)
    assert password not in repr(done)


async def test_update_server_sends_put_with_user_data(live: LiveSandbox) -> None:
    server_id = servers_in(live, "ACTIVE")[0]
    script = base64.b64encode(b"#!/bin/bash\necho hi\n").decode()
    async with FlexusClient(live.settings()) as client:
        result = await client.update_server(
            server_id, name="web-renamed", description="front end", hostname="web-renamed", user_data=script
        )
        shown = await client.show_server(server_id)
    assert result.id == server_id and result.name == "web-renamed"
    assert all(isinstance(a.version, int) for entries in (result.addresses or {}).values() for a in entries)
    assert shown.name == "web-renamed" and shown.description == "front end"
    assert shown.user_data == script
    (write,) = live.sandbox.writes()
    assert write.method == "PUT" and write.operation == "UpdateServer"


async def test_unknown_ids_in_a_batch_refuse_the_whole_request(live: LiveSandbox) -> None:
    active = servers_in(live, "ACTIVE")[:1]
    async with FlexusClient(live.settings()) as client:
        with pytest.raises(NotFound) as caught:
            await client.batch_stop([*active, UNKNOWN_ID])
    assert caught.value.code == "Ecs.0114"
    assert live.sandbox.writes() == []
    assert server_status(live, active[0]) == "ACTIVE"


async def test_wrong_secret_key_is_401_and_never_retried(live: LiveSandbox) -> None:
    async with FlexusClient(live.settings(secret_key="wrong-" + SK, retry_attempts=4)) as client:
        with pytest.raises(AuthenticationError) as caught:
            await client.list_servers()
    assert caught.value.code == "APIGW.0301"
    assert len(live.sandbox.request_log) == 1, "a 401 must not be retried (5 failures lock the AK)"


async def test_reads_retry_5xx_but_writes_do_not(live: LiveSandbox) -> None:
    active = servers_in(live, "ACTIVE")[:1]
    async with FlexusClient(live.settings()) as client:
        live.sandbox.knobs.fail_next_5xx = 2
        page = await client.list_servers(limit=5)
        assert page.servers
        assert [r.status for r in live.sandbox.request_log] == [500, 500, 200]

        live.sandbox.knobs.fail_next_5xx = 1
        with pytest.raises(ServiceError):
            await client.batch_stop(active)
    assert [r.operation for r in live.sandbox.request_log[3:]] == ["BatchStopServers"]
    assert live.sandbox.writes() == []


async def test_throttled_write_is_retried_because_it_was_not_processed(live: LiveSandbox) -> None:
    active = servers_in(live, "ACTIVE")[:1]
    async with FlexusClient(live.settings(retry_base_seconds=0.3, retry_max_seconds=1.0)) as client:
        live.sandbox.knobs.rate_limit_per_second = 1.0
        await client.list_servers(limit=1)  # spends the only token
        submission = await client.batch_stop(active)
    assert submission.job_ids
    statuses = [r.status for r in live.sandbox.request_log if r.operation == "BatchStopServers"]
    assert statuses[0] == 429 and statuses[-1] == 200
    assert len(live.sandbox.writes()) == 1, "exactly one stop was processed"


async def test_lost_write_answer_is_reported_as_maybe_applied_not_resent(live: LiveSandbox) -> None:
    active = servers_in(live, "ACTIVE")[:1]
    live.sandbox.knobs.hang_seconds = 1.0
    async with FlexusClient(live.settings(timeout_seconds=0.3)) as client:
        live.sandbox.knobs.hang_next = 1
        with pytest.raises(TransportError) as caught:
            await client.batch_stop(active)
        assert caught.value.may_have_applied
        await asyncio.sleep(1.2)
        # A read that times out is simply retried.
        live.sandbox.knobs.hang_next = 1
        page = await client.list_servers(limit=1)
        assert page.servers
    stops = [r for r in live.sandbox.request_log if r.operation == "BatchStopServers"]
    assert len(stops) == 1, "the client never re-sent the write"


async def test_iam_token_is_fetched_once_and_learns_the_project() -> None:
    with serve() as live:
        settings = live.settings(
            access_key=None,
            secret_key=None,
            project_id=None,
            iam_domain=live.sandbox.options.iam_domain,
            iam_user=live.sandbox.options.iam_user,
            iam_password=live.sandbox.options.iam_password,
        )
        async with FlexusClient(settings) as client:
            await asyncio.gather(client.list_servers(limit=1), client.list_servers(limit=2))
            await client.show_server(next(iter(live.sandbox.backend.servers)))
            assert await client.project_id() == live.sandbox.options.project_id
        token_calls = [r for r in live.sandbox.request_log if r.operation == "KeystoneCreateUserTokenByPassword"]
        assert len(token_calls) == 1
        assert live.sandbox.options.iam_password not in repr(live.sandbox.request_log)


async def test_iam_token_is_refreshed_before_it_expires() -> None:
    with serve(token_seconds=1.0) as live:
        settings = live.settings(
            access_key=None,
            secret_key=None,
            iam_domain=live.sandbox.options.iam_domain,
            iam_user=live.sandbox.options.iam_user,
            iam_password=live.sandbox.options.iam_password,
        )
        async with FlexusClient(settings) as client:
            await client.list_servers(limit=1)
            await asyncio.sleep(0.6)  # past half the lifetime: refresh before use
            await client.list_servers(limit=1)
        ops = operations(live)
        assert ops.count("KeystoneCreateUserTokenByPassword") == 2
        assert all(r.status < 400 for r in live.sandbox.request_log)


async def test_wrong_iam_password_is_an_authentication_error() -> None:
    with serve() as live:
        settings = live.settings(
            access_key=None, secret_key=None, iam_domain="d", iam_user="u", iam_password="Wrong-Passw0rd"
        )
        async with FlexusClient(settings) as client:
            with pytest.raises(AuthenticationError):
                await client.list_servers()
        assert "Wrong-Passw0rd" not in repr(live.sandbox.request_log)


async def test_project_id_is_resolved_from_iam_when_not_configured(live: LiveSandbox) -> None:
    async with FlexusClient(live.settings(project_id=None)) as client:
        await client.list_servers(limit=1)
        await client.list_servers(limit=1)
        assert await client.project_id() == live.sandbox.options.project_id
    assert operations(live) == ["KeystoneListProjects", "ListServersDetails", "ListServersDetails"]


async def test_wait_for_job_gives_up_with_a_clear_timeout(live: LiveSandbox) -> None:
    live.sandbox.knobs.job_seconds = 30.0
    async with FlexusClient(live.settings()) as client:
        submission = await client.batch_stop(servers_in(live, "ACTIVE")[:1])
        with pytest.raises(JobTimeout) as caught:
            await client.wait_for_job(submission.job_ids[0], max_wait_seconds=0.3)
    assert "RUNNING" in str(caught.value)


async def test_embedded_sandbox_is_the_default_and_says_so() -> None:
    settings = Settings()
    assert settings.uses_sandbox
    # The client never builds a sandbox on its own: the application chooses it (make_client).
    with pytest.raises(ConfigurationError, match="no cloud credentials"):
        FlexusClient(settings)
    async with make_client(settings) as client:
        assert client.is_sandbox
        assert "SANDBOX" in client.describe_target()
        page = await client.list_servers(limit=5)
        assert page.count == settings.sandbox_servers
        server = await client.show_server(page.servers[0].id)
        assert server.id == page.servers[0].id
        assert client.sandbox is not None
        assert [r.operation for r in client.sandbox.request_log] == ["ListServersDetails", "ShowServer"]


async def test_a_cookie_the_cloud_sets_is_never_sent_back() -> None:
    """Every request stands on its own signature: a gateway's Set-Cookie (a WAF session, a balancer's
    affinity) is not kept, so no later request carries state the caller never chose."""
    import httpx

    async with make_client(Settings()) as plain:
        assert plain.sandbox is not None
        sandbox, app = plain.sandbox, plain.sandbox.app
    cookies_sent: list[str | None] = []

    async def setting_cookies(scope, receive, send):  # type: ignore[no-untyped-def]
        headers = dict(scope["headers"])
        cookies_sent.append(headers.get(b"cookie", b"").decode() or None)

        async def with_cookie(message):  # type: ignore[no-untyped-def]
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message["headers"], (b"set-cookie", b"HWWAFSESID=abc; Path=/")]}
            await send(message)

        await app(scope, receive, with_cookie)

    transport = httpx.ASGITransport(app=setting_cookies)
    async with FlexusClient(Settings(), sandbox=sandbox, transport=transport) as client:
        page = await client.list_servers(limit=1)
        await client.show_server(page.servers[0].id)
    assert cookies_sent == [None, None]


# -- bounded and visible retries -------------------------------------------------------------------


async def test_a_hung_read_fails_within_its_deadline_saying_so(live: LiveSandbox) -> None:
    live.sandbox.knobs.hang_seconds = 5.0
    live.sandbox.knobs.hang_next = 100
    settings = live.settings(timeout_seconds=1.0, read_deadline_seconds=1.5, retry_base_seconds=0.1)
    async with FlexusClient(settings) as client:
        with pytest.raises(TransportError, match="read deadline") as caught:
            await client.list_servers(limit=1)
    assert not caught.value.may_have_applied
    # Two tries fit the deadline (1 s, a pause, the rest), not five of the full timeout.
    assert len([r for r in live.sandbox.request_log if r.operation == "ListServersDetails"]) <= 2


async def test_retry_after_is_honoured_capped_and_every_retry_is_told(
    live: LiveSandbox, caplog: pytest.LogCaptureFixture
) -> None:
    from flexus_ops.cloud.retries import retry_listener

    heard: list[str] = []

    async def listener(notice: str) -> None:
        heard.append(notice)

    live.sandbox.knobs.rate_limit_per_second = 1.0
    settings = live.settings(retry_base_seconds=0.01, retry_max_seconds=1.0)
    async with FlexusClient(settings) as client:
        await client.list_servers(limit=1)  # spends the only token
        token = retry_listener.set(listener)
        try:
            live.sandbox.knobs.retry_after_seconds = 1
            await client.list_servers(limit=1)
            live.sandbox.knobs.retry_after_seconds = 3600  # honoured only up to FLEXUS_RETRY_MAX_SECONDS
            await client.list_servers(limit=1)
        finally:
            retry_listener.reset(token)
    assert heard and all("429 APIGW.0308" in notice for notice in heard)
    assert "retrying in 1.0 s" in heard[0] and "retrying in 1.0 s" in heard[-1]
    assert sum("cloud retry" in r.getMessage() for r in caplog.records) == len(heard)


# -- fidelity to the reference (issue 13) -------------------------------------------------------


async def test_id_lookups_go_100_per_query_concurrently_within_the_limit() -> None:
    with serve(servers=450) as live:
        everything = list(live.sandbox.backend.servers)
        wanted = [*everything[:449], UNKNOWN_ID]  # 450 ids: five queries of at most 100
        live.sandbox.knobs.latency_seconds = 0.5  # each query is still in flight when the next arrives
        async with FlexusClient(live.settings(max_concurrency=2)) as client:
            found = await client.list_servers(server_id=wanted, limit=1000)
        assert [s.id for s in found.servers] == wanted and found.count == 450, "every id, in the order asked"
        lookups = [r for r in live.sandbox.request_log if r.operation == "ListServersDetails"]
        assert sorted(len(r.server_ids) for r in lookups) == [50, 100, 100, 100, 100]
        assert all(r.status == 200 for r in lookups)
        assert sorted(sid for r in lookups for sid in r.server_ids) == sorted(wanted)
        assert max(r.in_flight for r in lookups) == 2, "concurrent, and never more than FLEXUS_MAX_CONCURRENCY"


async def test_a_query_of_300_ids_unchunked_is_refused_with_414(live: LiveSandbox) -> None:
    """What a client that forgets to chunk meets: the gateway's cap on the request line."""
    many = [f"00000000-0000-4000-8000-{index:012d}" for index in range(300)]
    async with FlexusClient(live.settings()) as client:
        with pytest.raises(CloudError) as caught:
            await client._send("GET", await client._url("/cloudservers/detail"), query=[("server_id", ",".join(many))])
        assert caught.value.status == 414 and caught.value.code == "APIGW.0201"
        assert len((await client.list_servers(server_id=many)).servers) == 300


async def test_wait_polls_init_as_running(live: LiveSandbox) -> None:
    live.sandbox.knobs.job_init_seconds = 0.3
    seen: list[str] = []
    async with FlexusClient(live.settings()) as client:
        submission = await client.batch_stop(servers_in(live, "ACTIVE")[:1])
        result = await client.wait_for_job(submission.job_ids[0], on_progress=lambda r: seen.append(r.status))
    assert seen[0] == "INIT" and result.status == "SUCCESS"
    assert result.job_type == "batchStopServers" and result.begin_time and result.end_time
    assert result.sub_jobs_total == 1 and result.servers[0].end_time


async def test_wait_reports_pending_payment_at_once_without_polling(live: LiveSandbox) -> None:
    live.sandbox.knobs.pending_payment_next_jobs = 1
    async with FlexusClient(live.settings(job_wait_seconds=5)) as client:
        submission = await client.batch_stop(servers_in(live, "ACTIVE")[:1])
        result = await client.wait_for_job(submission.job_ids[0])
    assert result.status == "PENDING_PAYMENT" and result.meaning and "payment" in result.meaning
    assert operations(live).count("ShowJob") == 1, "one look, never polled"


async def test_password_user_name_rules_are_each_servers_by_its_os(live: LiveSandbox) -> None:
    """The client cannot know the OS; the cloud checks each server's own rules (its dry run too)."""
    backend = live.sandbox.backend
    linux = next(sid for sid, s in backend.servers.items() if s.image.os_type == "Linux" and not s.locked)
    windows = next(sid for sid, s in backend.servers.items() if s.image.os_type == "Windows" and not s.locked)
    async with FlexusClient(live.settings()) as client:
        for dry_run in (True, False):
            assert (await client.batch_reset_password([windows], "Uproot-Fine-9", dry_run=dry_run)).server_ids
            assert (await client.batch_reset_password([linux], "Badminton-Fine-9", dry_run=dry_run)).server_ids
        for ids, password, rule in (
            ([linux], "Uproot-Wrong-9", "'root'"),
            ([windows], "Badminton-Wrong-9", "two consecutive"),
            ([windows], "RotArtsInimda-9", "'Administrator'"),
            ([linux, windows], "Badminton-Wrong-9", "two consecutive"),  # a mixed batch: each server's rules
        ):
            with pytest.raises(CloudError) as caught:
                await client.batch_reset_password(ids, password, dry_run=True)
            assert (caught.value.status, caught.value.code) == (400, "Ecs.0011") and rule in caught.value.message
            assert password not in caught.value.message


async def test_progress_polls_count_done_servers_and_agree_with_the_full_job(live: LiveSandbox) -> None:
    live.sandbox.knobs.job_seconds = 0.3
    targets = servers_in(live, "ACTIVE")[:5]
    seen: list[JobPoll] = []
    async with FlexusClient(live.settings(job_poll_seconds=0.05, job_poll_max_seconds=0.05)) as client:
        submission = await client.batch_stop(targets)
        (job_id,) = submission.job_ids
        # The cheap reading of a raw body says what the full model of the same body says.
        body = (await client._send("GET", await client._url(f"/jobs/{job_id}"))).content
        assert JobPoll.from_body(job_id, body) == JobPoll.from_job(job_id, Job.model_validate_json(body))
        result = await client.wait_for_job(job_id, on_progress=seen.append)
    assert seen[0].status in ("INIT", "RUNNING") and seen[0].sub_jobs_done < len(targets)
    assert seen[-1].status == result.status == "SUCCESS"
    assert seen[-1].sub_jobs_done == seen[-1].sub_jobs_seen == len(targets) == len(result.servers)
    assert [poll.sub_jobs_done for poll in seen] == sorted(poll.sub_jobs_done for poll in seen)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"status": 1}',
        b'{"status": "RUNNING", "entities": {"sub_jobs": "many"}}',
        b'{"status": "RUNNING", "entities": {"sub_jobs": [{"status": 2}]}}',
        b'{"status": "RUNNING", "entities": {"sub_jobs_total": "3"}}',
    ],
)
def test_a_job_body_off_the_documented_shape_is_left_to_full_validation(body: bytes) -> None:
    assert JobPoll.from_body("job-1", body) is None
