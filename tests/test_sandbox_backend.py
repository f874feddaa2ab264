"""The sandbox's state model without HTTP: fleet, transitions, jobs, validation, passwords, tokens."""

from __future__ import annotations

import base64
import dataclasses
import re
import time
from collections import Counter

import pytest

from flexus_ops.sandbox import SandboxBackend, SandboxError, SandboxOptions
from flexus_ops.sandbox.backend import Knobs
from flexus_ops.sandbox.fleet import SERVER_DETAIL_KEYS, derive_status, generate_fleet, render_detail
from flexus_ops.sandbox.jobs import JOB_RETENTION
from tests.sandbox_fixtures import UNKNOWN_ID, FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def backend(clock: FakeClock) -> SandboxBackend:
    return SandboxBackend(SandboxOptions(servers=40, seed=7, clock=clock, job_seconds=2.0))


def ids_with(backend: SandboxBackend, status: str, *, locked: bool = False) -> list[str]:
    return [sid for sid, s in backend.servers.items() if s.status == status and s.locked == locked]


def snapshot(backend: SandboxBackend) -> list[dict]:
    return [render_detail(server) for server in backend.servers.values()]


def refused(call, status: int, code: str) -> SandboxError:
    with pytest.raises(SandboxError) as caught:
        call()
    assert (caught.value.status, caught.value.code) == (status, code), caught.value
    return caught.value


# -- fleet ------------------------------------------------------------------------------------


def test_fleet_is_deterministic_per_seed() -> None:
    first = [render_detail(s) for s in generate_fleet(30, 7, project_id="p" * 32, region="cn-north-4")]
    again = [render_detail(s) for s in generate_fleet(30, 7, project_id="p" * 32, region="cn-north-4")]
    other = [render_detail(s) for s in generate_fleet(30, 8, project_id="p" * 32, region="cn-north-4")]
    assert first == again
    assert [s["id"] for s in first] != [s["id"] for s in other]


def test_every_server_has_every_field_with_realistic_values() -> None:
    servers = [render_detail(s) for s in generate_fleet(120, 7, project_id="f" * 32, region="cn-north-4")]
    uuid = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
    for server in servers:
        assert tuple(server) == SERVER_DETAIL_KEYS
        assert uuid.match(server["id"])
        assert server["tenant_id"] == "f" * 32
        assert server["OS-EXT-AZ:availability_zone"] in {"cn-north-4a", "cn-north-4b", "cn-north-4c"}
        flavor = server["flavor"]
        assert all(isinstance(flavor[k], str) and flavor[k].isdigit() for k in ("vcpus", "ram", "disk"))
        assert server["image"]["id"] and isinstance(server["image"], dict)
        ((vpc, entries),) = server["addresses"].items()
        assert vpc == server["metadata"]["vpc_id"]
        fixed = [a for a in entries if a["OS-EXT-IPS:type"] == "fixed"]
        assert len(fixed) == 1 and fixed[0]["addr"].startswith("192.168.") and fixed[0]["version"] == "4"
        assert all(a["version"] == "4" for a in entries)
        assert {"charging_mode", "vpc_id", "image_name", "os_type", "os_bit", "EcmResStatus"} <= set(server["metadata"])
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", server["created"])
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}$", server["OS-SRV-USG:launched_at"])
        assert all(re.match(r"^[^=]+(=.+)?$", tag) for tag in server["tags"])
        assert isinstance(server["enterprise_project_id"], str)
        assert server["sys_tags"][0]["key"] == "_sys_enterprise_project_id"
        volumes = server["os-extended-volumes:volumes_attached"]
        assert volumes[0]["bootIndex"] == "0" and volumes[0]["delete_on_termination"] in {"true", "false"}
        if server["status"] == "ACTIVE":
            assert (server["OS-EXT-STS:power_state"], server["OS-EXT-STS:vm_state"]) == (1, "active")
        else:
            assert server["status"] == "SHUTOFF"
            assert (server["OS-EXT-STS:power_state"], server["OS-EXT-STS:vm_state"]) == (4, "stopped")
        if server["locked"]:
            assert {"lockSource", "lockScene"} <= set(server["metadata"])

    names = Counter(s["name"] for s in servers)
    assert [s["name"] for s in servers[:4]] == ["web-01", "web-02", "db-prod-01", "api-gateway-01"]
    assert names["cache-01"] >= 2, "ambiguous names exist on purpose"
    assert any(s["name"].startswith("staging-web-") for s in servers)
    assert {"env=prod", "role=web"} <= {t for s in servers for t in s["tags"]}
    assert 6 <= sum(s["locked"] for s in servers) <= 14  # about 1 in 12
    statuses = Counter(s["status"] for s in servers)
    assert statuses["ACTIVE"] > statuses["SHUTOFF"] > 0
    floating = sum(
        any(a["OS-EXT-IPS:type"] == "floating" for a in s["addresses"][next(iter(s["addresses"]))]) for s in servers
    )
    assert floating > len(servers) / 2, "most servers have an EIP"


def test_ten_thousand_servers_generate_fast_and_unique() -> None:
    started = time.perf_counter()
    backend = SandboxBackend(SandboxOptions(servers=10_000, seed=3))
    elapsed = time.perf_counter() - started
    assert len(backend.servers) == 10_000
    assert elapsed < 5, f"generating 10,000 servers took {elapsed:.1f}s"
    assert len({s.fixed_ip for s in backend.servers.values()}) == 10_000
    eips = [s.floating_ip for s in backend.servers.values() if s.floating_ip]
    assert len(set(eips)) == len(eips)
    page = backend.list_servers({"limit": "1000", "offset": "10"})
    assert page["count"] == 10_000 and len(page["servers"]) == 1000


@pytest.mark.parametrize(
    ("vm_state", "task_state", "status"),
    [
        ("active", None, "ACTIVE"),
        ("active", "powering-off", "ACTIVE"),
        ("stopped", None, "SHUTOFF"),
        ("stopped", "powering-on", "SHUTOFF"),
        ("active", "reboot_started", "REBOOT"),
        ("active", "rebooting_hard", "HARD_REBOOT"),
        ("building", "spawning", "BUILD"),
        ("active", "resize_prep", "RESIZE"),
        ("resized", None, "VERIFY_RESIZE"),
        ("error", None, "ERROR"),
        ("shelved_offloaded", None, "SHELVED_OFFLOADED"),
        ("stopped", "rebooting", "UNKNOWN"),
    ],
)
def test_status_is_derived_from_vm_and_task_state(vm_state: str, task_state: str | None, status: str) -> None:
    assert derive_status(vm_state, task_state) == status


# -- transitions and jobs ---------------------------------------------------------------------


def test_stop_goes_through_powering_off_then_shutoff(backend: SandboxBackend, clock: FakeClock) -> None:
    sid = ids_with(backend, "ACTIVE")[0]
    before = backend.server_view(sid)["updated"]
    clock.advance(60)
    job_id = backend.stop_servers([sid])
    assert re.match(r"^[0-9a-f]{32}$", job_id)
    view = backend.server_view(sid)
    assert (view["status"], view["OS-EXT-STS:task_state"]) == ("ACTIVE", "powering-off")
    assert view["updated"] != before
    job = backend.show_job(job_id)
    assert job["status"] == "RUNNING" and job["end_time"] is None
    assert job["job_type"] == "batchStopServers"
    assert job["entities"]["sub_jobs_total"] == 1
    (sub,) = job["entities"]["sub_jobs"]
    assert sub["job_type"] == "stopServer" and sub["entities"]["server_id"] == sid
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", job["begin_time"])

    clock.advance(1.9)
    assert backend.server_view(sid)["OS-EXT-STS:task_state"] == "powering-off"
    clock.advance(0.2)
    view = backend.server_view(sid)
    assert (view["status"], view["OS-EXT-STS:vm_state"], view["OS-EXT-STS:power_state"]) == ("SHUTOFF", "stopped", 4)
    assert view["OS-EXT-STS:task_state"] is None
    job = backend.show_job(job_id)
    assert job["status"] == "SUCCESS" and job["entities"]["sub_jobs"][0]["status"] == "SUCCESS"
    assert job["end_time"] == "2024-01-01T12:01:02.000Z"
    assert job["error_code"] is None and job["fail_reason"] is None


def test_start_goes_through_powering_on_then_active(backend: SandboxBackend, clock: FakeClock) -> None:
    sid = ids_with(backend, "SHUTOFF")[0]
    job_id = backend.start_servers([sid])
    view = backend.server_view(sid)
    assert (view["status"], view["OS-EXT-STS:task_state"]) == ("SHUTOFF", "powering-on")
    clock.advance(2)
    view = backend.server_view(sid)
    assert (view["status"], view["OS-EXT-STS:power_state"], view["OS-EXT-STS:task_state"]) == ("ACTIVE", 1, None)
    assert backend.show_job(job_id)["job_type"] == "batchStartServers"


@pytest.mark.parametrize(
    ("kind", "status", "task"), [("SOFT", "REBOOT", "reboot_started"), ("HARD", "HARD_REBOOT", "rebooting_hard")]
)
def test_reboot_soft_and_hard(backend: SandboxBackend, clock: FakeClock, kind: str, status: str, task: str) -> None:
    sid = ids_with(backend, "ACTIVE")[0]
    job_id = backend.reboot_servers([sid], kind)
    view = backend.server_view(sid)
    assert (view["status"], view["OS-EXT-STS:task_state"]) == (status, task)
    clock.advance(2)
    assert backend.server_view(sid)["status"] == "ACTIVE"
    job = backend.show_job(job_id)
    assert job["status"] == "SUCCESS"
    assert job["job_type"] == "batchRebootServers" and job["entities"]["sub_jobs"][0]["job_type"] == "rebootServer"


def test_per_server_failures_fail_the_job_and_leave_others_running(backend: SandboxBackend, clock: FakeClock) -> None:
    active = ids_with(backend, "ACTIVE")
    locked = next(sid for sid, s in backend.servers.items() if s.locked and s.status == "ACTIVE")
    shutoff = ids_with(backend, "SHUTOFF")[0]
    backend.knobs.failing_server_ids.add(active[1])
    job_id = backend.stop_servers([active[0], locked, shutoff, active[1]], "HARD")

    job = backend.show_job(job_id)
    by_id = {sub["entities"]["server_id"]: sub for sub in job["entities"]["sub_jobs"]}
    assert job["status"] == "RUNNING", "one sub-job still runs"
    assert by_id[active[0]]["status"] == "RUNNING"
    assert (by_id[locked]["status"], by_id[locked]["error_code"]) == ("FAIL", "Ecs.0605")
    assert (by_id[shutoff]["status"], by_id[shutoff]["error_code"]) == ("FAIL", "Ecs.0100")
    assert by_id[active[1]]["error_code"] == "Ecs.0000"
    assert by_id[active[1]]["fail_reason"] == "injected failure"
    assert by_id[locked]["end_time"] is not None
    # Refused servers were not touched.
    assert backend.server_view(locked)["OS-EXT-STS:task_state"] is None
    assert backend.server_view(active[1])["status"] == "ACTIVE"

    clock.advance(2)
    job = backend.show_job(job_id)
    assert job["status"] == "FAIL"
    assert job["error_code"] == "Ecs.0605"
    assert job["fail_reason"].startswith("3 of 4 sub-jobs failed")
    assert locked in job["fail_reason"]
    assert backend.server_view(active[0])["status"] == "SHUTOFF"
    assert backend.server_view(active[1])["status"] == "ACTIVE"


def test_a_task_in_progress_refuses_a_second_action(backend: SandboxBackend) -> None:
    sid = ids_with(backend, "ACTIVE")[0]
    backend.stop_servers([sid])
    second = backend.show_job(backend.reboot_servers([sid], "SOFT"))
    assert second["status"] == "FAIL" and second["entities"]["sub_jobs"][0]["error_code"] == "Ecs.0100"
    assert "powering-off" in second["entities"]["sub_jobs"][0]["fail_reason"]
    start = backend.show_job(backend.start_servers([ids_with(backend, "ACTIVE")[1]]))
    assert start["status"] == "FAIL", "start of an ACTIVE server"


@pytest.mark.parametrize(
    ("call", "status", "code"),
    [
        (lambda b, ids: b.stop_servers([*ids, UNKNOWN_ID]), 404, "Ecs.0114"),
        (lambda b, ids: b.start_servers([]), 400, "Ecs.0005"),
        (lambda b, ids: b.stop_servers(ids * 1001), 400, "Ecs.0118"),
        (lambda b, ids: b.stop_servers([ids[0], ids[0]]), 400, "Ecs.0005"),
        (lambda b, ids: b.reboot_servers(ids, "GENTLE"), 400, "Ecs.0005"),
        (lambda b, ids: b.stop_servers(ids, "soft"), 400, "Ecs.0005"),
        (lambda b, ids: b.reset_passwords(ids, "short"), 400, "Ecs.0011"),
        (lambda b, ids: b.reset_passwords(ids, None), 400, "Ecs.0005"),
        (lambda b, ids: b.reset_passwords([UNKNOWN_ID], "Good-Passw0rd"), 404, "Ecs.0114"),
        (lambda b, ids: b.update_server(ids[0], {"userdata": "eA=="}), 400, "Ecs.0005"),
        (lambda b, ids: b.update_server(ids[0], {"name": "ok", "hostname": "-bad"}), 400, "Ecs.0005"),
        (lambda b, ids: b.update_server(UNKNOWN_ID, {"name": "ok"}), 404, "Ecs.0114"),
    ],
)
def test_refused_requests_change_nothing(backend: SandboxBackend, call, status: int, code: str) -> None:
    ids = ids_with(backend, "ACTIVE")[:3]
    before = snapshot(backend)
    refused(lambda: call(backend, ids), status, code)
    assert snapshot(backend) == before
    assert backend.jobs == {}
    assert all(s.password_resets == 0 for s in backend.servers.values())


def test_unknown_id_error_names_it(backend: SandboxBackend) -> None:
    error = refused(lambda: backend.stop_servers([UNKNOWN_ID]), 404, "Ecs.0114")
    assert error.message == f"Instance[{UNKNOWN_ID}] could not be found."
    refused(lambda: backend.show_server(UNKNOWN_ID), 404, "Ecs.0114")


def test_unknown_and_expired_jobs_are_not_found(backend: SandboxBackend, clock: FakeClock) -> None:
    error = refused(lambda: backend.show_job("0" * 32), 404, "Ecs.0000")
    assert "not found" in error.message
    job_id = backend.stop_servers(ids_with(backend, "ACTIVE")[:1])
    clock.advance(2)
    assert backend.show_job(job_id)["status"] == "SUCCESS"
    clock.advance(JOB_RETENTION.total_seconds() + 1)
    refused(lambda: backend.show_job(job_id), 404, "Ecs.0000")


def test_job_seconds_knob_applies_to_new_jobs(backend: SandboxBackend, clock: FakeClock) -> None:
    backend.knobs.job_seconds = 30
    sid = ids_with(backend, "ACTIVE")[0]
    job_id = backend.stop_servers([sid])
    clock.advance(29)
    assert backend.show_job(job_id)["status"] == "RUNNING"
    clock.advance(1)
    assert backend.show_job(job_id)["status"] == "SUCCESS"


def test_zero_job_seconds_completes_on_the_next_call(clock: FakeClock) -> None:
    backend = SandboxBackend(SandboxOptions(servers=12, clock=clock, job_seconds=0))
    sid = ids_with(backend, "ACTIVE")[0]
    job_id = backend.stop_servers([sid])
    assert backend.show_job(job_id)["status"] == "SUCCESS"
    assert backend.server_view(sid)["status"] == "SHUTOFF"


def test_a_thousand_server_batch_is_one_job(clock: FakeClock) -> None:
    backend = SandboxBackend(SandboxOptions(servers=1500, clock=clock, job_seconds=1))
    targets = list(backend.servers)[:1000]
    eligible = {
        sid
        for sid in targets
        if (server := backend.servers[sid]).status == "ACTIVE" and not server.locked and not server.frozen
    }
    job_id = backend.stop_servers(targets)
    clock.advance(1)
    job = backend.show_job(job_id)
    assert job["entities"]["sub_jobs_total"] == 1000
    succeeded = {sub["entities"]["server_id"] for sub in job["entities"]["sub_jobs"] if sub["status"] == "SUCCESS"}
    assert succeeded == eligible
    assert all(backend.servers[sid].status == "SHUTOFF" for sid in eligible)


# -- passwords and updates --------------------------------------------------------------------


def test_password_reset_dry_run_and_real_never_store_the_password(backend: SandboxBackend, clock: FakeClock) -> None:
    password = "Fresh-Passw0rd!"
    targets = ids_with(backend, "ACTIVE")[:1] + ids_with(backend, "SHUTOFF")[:1]
    assert backend.reset_passwords(targets, None, dry_run=True) == {"response": [{"id": t} for t in targets]}
    assert backend.reset_passwords(targets, password, dry_run=True)["response"][0]["id"] == targets[0]
    assert all(backend.servers[t].password_resets == 0 for t in targets)

    assert backend.reset_passwords(targets, password) == {"response": [{"id": t} for t in targets]}
    for sid in targets:
        assert backend.servers[sid].password_resets == 1
        assert backend.servers[sid].password_reset_at == clock.now
    everything = repr(vars(backend)) + repr([dataclasses.asdict(s) for s in backend.servers.values()])
    assert password not in everything
    assert password not in repr(backend.server_view(targets[0]))


def test_password_reset_refuses_locked_servers(backend: SandboxBackend) -> None:
    locked = next(sid for sid, s in backend.servers.items() if s.locked)
    other = ids_with(backend, "ACTIVE")[0]
    refused(lambda: backend.reset_passwords([other, locked], "Fresh-Passw0rd!"), 400, "Ecs.0605")
    assert backend.servers[other].password_resets == 0


def test_update_server_applies_every_field(backend: SandboxBackend, clock: FakeClock) -> None:
    sid = ids_with(backend, "ACTIVE")[0]
    script = base64.b64encode(b"#!/bin/bash\necho hi\n").decode()
    clock.advance(10)
    result = backend.update_server(
        sid,
        {
            "name": "web-renamed",
            "description": "front end",
            "hostname": "web-renamed",
            "user_data": script,
            "security_options": {"secure_boot_enabled": True},
        },
    )["server"]
    assert result["id"] == sid and result["name"] == "web-renamed"
    assert isinstance(result["image"], str) and result["image"]
    assert set(result["flavor"]) == {"id", "links"}
    assert result["links"] and all({"href", "rel"} == set(link) for link in result["links"])
    assert all(isinstance(a["version"], int) for entries in result["addresses"].values() for a in entries)
    assert result["OS-EXT-SRV-ATTR:user_data"] == script
    view = backend.server_view(sid)
    assert (view["name"], view["description"], view["OS-EXT-SRV-ATTR:hostname"]) == (
        "web-renamed",
        "front end",
        "web-renamed",
    )
    assert view["security_options"] == {"secure_boot_enabled": True, "tpm_enabled": False}
    assert view["updated"] == "2024-01-01T12:00:10Z"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({}, "server"),
        ({"userdata": "eA=="}, "userdata"),
        ({"name": "bad name!"}, "name"),
        ({"description": "<script>"}, "description"),
        ({"hostname": "a..b"}, "hostname"),
        ({"user_data": "%%%"}, "user_data"),
        ({"name": 5}, "name"),
        ({"security_options": {"secure_boot_enabled": "yes"}}, "security_options"),
    ],
)
def test_update_server_rules_name_the_field(backend: SandboxBackend, changes: dict, field: str) -> None:
    sid = ids_with(backend, "ACTIVE")[0]
    error = refused(lambda: backend.update_server(sid, changes), 400, "Ecs.0005")
    assert field in error.message


# -- list -------------------------------------------------------------------------------------


def test_list_pages_are_page_numbers(backend: SandboxBackend) -> None:
    everything = backend.list_servers({"limit": "1000"})["servers"]
    assert len(backend.list_servers({})["servers"]) == 25, "limit defaults to 25"
    page2 = backend.list_servers({"limit": "10", "offset": "2"})
    assert page2["count"] == 40
    assert [s["id"] for s in page2["servers"]] == [s["id"] for s in everything[10:20]]
    page0 = backend.list_servers({"limit": "10", "offset": "0"})["servers"]
    assert [s["id"] for s in page0] == [s["id"] for s in everything[:10]]
    assert backend.list_servers({"limit": "10", "offset": "9"})["servers"] == []
    for bad in ({"limit": "0"}, {"limit": "1001"}, {"limit": "x"}, {"offset": "-1"}, {"status": "RUNNING"}):
        refused(lambda bad=bad: backend.list_servers(bad), 400, "Ecs.0005")


def test_list_filters(backend: SandboxBackend) -> None:
    servers = list(backend.servers.values())

    def ids(params: dict[str, str]) -> set[str]:
        result = backend.list_servers({"limit": "1000", **params})
        assert result["count"] == len(result["servers"])
        return {s["id"] for s in result["servers"]}

    assert ids({"name": "eb-0"}) == {s.id for s in servers if "eb-0" in s.name}
    assert ids({"name": "w.b-01"}) >= {s.id for s in servers if s.name == "web-01"}, "'.' matches any character"
    assert ids({"status": "SHUTOFF"}) == {s.id for s in servers if s.status == "SHUTOFF"}
    target = servers[5]
    assert ids({"ip_eq": target.fixed_ip}) == {target.id}
    assert target.id in ids({"ip": target.fixed_ip.rsplit(".", 1)[0]})
    assert ids({"flavor": target.flavor.id}) == {s.id for s in servers if s.flavor.id == target.flavor.id}
    assert ids({"reservation_id": target.reservation_id}) == {
        s.id for s in servers if s.reservation_id == target.reservation_id
    }
    assert ids({"enterprise_project_id": "all_granted_eps"}) == {s.id for s in servers}
    assert ids({"enterprise_project_id": "0"}) == {s.id for s in servers if s.enterprise_project_id == "0"}
    # tags: exact "key=value" or a bare key; not-tags is its complement.
    assert ids({"tags": "env=staging"}) == {s.id for s in servers if "env=staging" in s.tags}
    assert ids({"tags": "env"}) == {s.id for s in servers}
    with_team = ids({"tags": "team"})
    assert with_team and with_team | ids({"not-tags": "team"}) == {s.id for s in servers}
    assert not with_team & ids({"not-tags": "team"})
    assert ids({"name": "web", "status": "ACTIVE"}) == {
        s.id for s in servers if "web" in s.name and s.status == "ACTIVE"
    }


def test_list_marker_continues_after_the_named_server(backend: SandboxBackend) -> None:
    order = list(backend.servers)
    page = backend.list_servers({"limit": "5", "marker": order[9]})
    assert [s["id"] for s in page["servers"]] == order[10:15]
    refused(lambda: backend.list_servers({"marker": UNKNOWN_ID}), 400, "Ecs.0005")


def test_list_server_id_overrides_filters_and_keeps_unknown_ids(backend: SandboxBackend) -> None:
    first = next(iter(backend.servers))
    result = backend.list_servers({"server_id": f"{first},{UNKNOWN_ID}", "name": "zzz", "status": "REBOOT"})
    assert result["count"] == 2
    known, ghost = result["servers"]
    assert known["id"] == first and known["name"]
    assert tuple(ghost) == SERVER_DETAIL_KEYS
    assert ghost["id"] == UNKNOWN_ID and ghost["fault"]["code"] == 404
    assert all(value is None for key, value in ghost.items() if key not in {"id", "fault"})


# -- IAM --------------------------------------------------------------------------------------


def test_tokens_are_issued_validated_and_expire(clock: FakeClock) -> None:
    options = SandboxOptions(servers=1, clock=clock, token_seconds=3600)
    backend = SandboxBackend(options)
    token, body = backend.issue_token(
        user_name=options.iam_user,
        password=options.iam_password,
        domain_name=options.iam_domain,
        project_name=options.region,
    )
    assert token and token not in repr(body)
    assert body["token"]["project"]["id"] == options.project_id
    assert body["token"]["methods"] == ["password"]
    assert body["token"]["expires_at"] == "2024-01-01T13:00:00.000000Z"
    assert backend.validate_token(token).project_id == options.project_id
    clock.advance(3600)
    refused(lambda: backend.validate_token(token), 401, "APIGW.0307")
    refused(lambda: backend.validate_token("MIInot-a-token"), 401, "APIGW.0301")


def test_wrong_iam_credentials_or_scope_are_refused(clock: FakeClock) -> None:
    options = SandboxOptions(servers=1, clock=clock)
    backend = SandboxBackend(options)
    good = {"user_name": options.iam_user, "password": options.iam_password, "domain_name": options.iam_domain}
    error = refused(lambda: backend.issue_token(**{**good, "password": "Wrong-Passw0rd"}), 401, "IAM.0002")
    assert error.flat and "Wrong-Passw0rd" not in str(error)
    refused(lambda: backend.issue_token(**{**good, "domain_name": "other"}), 401, "IAM.0002")
    refused(lambda: backend.issue_token(**good, project_name="eu-west-0"), 400, "IAM.0004")
    assert backend.issue_token(**good, project_id=options.project_id)[1]["token"]["project"]["name"] == options.region
    assert backend.list_projects("cn-north-4")["projects"][0]["id"] == options.project_id
    assert backend.list_projects("eu-west-0")["projects"] == []


def test_options_never_print_secrets() -> None:
    options = SandboxOptions(secret_key="very-secret-sk", iam_password="Very-Secret-Pw1")
    assert "very-secret-sk" not in repr(options) and "Very-Secret-Pw1" not in repr(options)
    with pytest.raises(ValueError, match="servers"):
        SandboxOptions(servers=-1)


def test_knobs_validate_assignments() -> None:
    knobs = Knobs()
    knobs.failing_server_ids = {"a"}  # type: ignore[assignment]
    assert knobs.failing_server_ids == {"a"}
    with pytest.raises(ValueError, match="greater than or equal"):
        knobs.fail_next_5xx = -1


# -- status ranges, job statuses, names (issue 13) ----------------------------------------------


def test_status_filter_covers_the_documented_intermediate_states(backend: SandboxBackend) -> None:
    active = ids_with(backend, "ACTIVE")
    stopped = ids_with(backend, "SHUTOFF")
    states = {
        active[0]: ("active", "reboot_started_hard"),  # HARD_REBOOT
        active[1]: ("active", "reboot_started"),  # REBOOT
        active[2]: ("active", "rebuilding"),  # REBUILD from ACTIVE
        active[3]: ("active", "migrating"),  # MIGRATING
        active[4]: ("active", "resize_prep"),  # RESIZE from ACTIVE
        stopped[0]: ("stopped", "rebuilding"),  # REBUILD from SHUTOFF
        stopped[1]: ("stopped", "resize_migrating"),  # RESIZE from SHUTOFF
        stopped[2]: ("error", None),  # ERROR
        stopped[3]: ("error", "rebuild_spawning"),  # REBUILD from ERROR
        active[5]: ("resized", None),  # VERIFY_RESIZE
        active[6]: ("resized", "resize_reverting"),  # REVERT_RESIZE
    }
    for sid, (vm_state, task_state) in states.items():
        backend.servers[sid].vm_state, backend.servers[sid].task_state = vm_state, task_state

    def found(status: str) -> set[str]:
        return {s["id"] for s in backend.list_servers({"limit": "1000", "status": status})["servers"]}

    def having(*statuses: str) -> set[str]:
        return {sid for sid, s in backend.servers.items() if s.status in statuses}

    assert backend.servers[active[0]].status == "HARD_REBOOT"
    assert found("ACTIVE") == {active[0], active[1], active[2], active[3], active[4]} | having("ACTIVE")
    assert found("SHUTOFF") == {stopped[0], stopped[1]} | having("SHUTOFF")
    assert found("ERROR") == {stopped[2], stopped[3]}
    assert found("VERIFY_RESIZE") == {active[5], active[6]}
    # Every other status finds only itself; REBUILD is a filter value too.
    assert found("HARD_REBOOT") == {active[0]}
    assert found("REBUILD") == {active[2], stopped[0], stopped[3]}
    assert found("RESIZE") == {active[4], stopped[1]}
    assert found("REVERT_RESIZE") == {active[6]}


def test_a_job_reports_init_before_it_runs(backend: SandboxBackend, clock: FakeClock) -> None:
    backend.knobs.job_init_seconds = 5
    sid = ids_with(backend, "ACTIVE")[0]
    job_id = backend.stop_servers([sid])
    job = backend.show_job(job_id)
    assert job["status"] == "INIT" and job["end_time"] is None
    assert [sub["status"] for sub in job["entities"]["sub_jobs"]] == ["INIT"]
    clock.advance(5)
    assert backend.show_job(job_id)["status"] == "RUNNING"
    clock.advance(2)
    job = backend.show_job(job_id)
    assert job["status"] == "SUCCESS" and job["end_time"]
    assert backend.server_view(sid)["status"] == "SHUTOFF"


def test_a_job_waiting_for_payment_never_runs(backend: SandboxBackend, clock: FakeClock) -> None:
    backend.knobs.pending_payment_next_jobs = 1
    sid = ids_with(backend, "ACTIVE")[0]
    job_id = backend.stop_servers([sid])
    clock.advance(3600)
    job = backend.show_job(job_id)
    assert job["status"] == "PENDING_PAYMENT" and job["end_time"] is None
    assert job["entities"]["sub_jobs_total"] == 1
    assert backend.server_view(sid)["status"] == "ACTIVE" and backend.servers[sid].task_state is None
    assert backend.knobs.pending_payment_next_jobs == 0, "only the next job waited"


@pytest.mark.parametrize(
    ("name", "accepted"),
    [
        ("a" * 128, True),
        ("a" * 129, False),
        ("测" * 64, True),
        ("测" * 65, False),
        ("测" * 60 + "a" * 8, True),  # 60 Chinese count 120, plus 8 = 128
        ("测" * 60 + "a" * 9, False),
        ("web 01", False),
    ],
)
def test_names_count_chinese_characters_as_two(backend: SandboxBackend, name: str, accepted: bool) -> None:
    sid = ids_with(backend, "ACTIVE")[0]
    if accepted:
        assert backend.update_server(sid, {"name": name})["server"]["name"] == name
    else:
        error = refused(lambda: backend.update_server(sid, {"name": name}), 400, "Ecs.0005")
        assert "server.name" in error.message
