"""The official Huawei SDK (huaweicloudsdkecs) against ``flexus-ops sim`` over real HTTP.

This is the proof that the sandbox speaks the real wire protocol: the SDK signs with its own signer,
serialises its own bodies and parses responses into its own models, and every operation flexus-ops
uses must work, including the error paths.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkecs.v2 import (
    BatchRebootServersRequest,
    BatchRebootServersRequestBody,
    BatchRebootSeversOption,
    BatchResetServersPasswordRequest,
    BatchResetServersPasswordRequestBody,
    BatchStartServersOption,
    BatchStartServersRequest,
    BatchStartServersRequestBody,
    BatchStopServersOption,
    BatchStopServersRequest,
    BatchStopServersRequestBody,
    EcsClient,
    ListServersDetailsRequest,
    ServerDetail,
    ServerId,
    ShowJobRequest,
    ShowJobResponse,
    ShowServerRequest,
    UpdateServerOption,
    UpdateServerRequest,
    UpdateServerRequestBody,
)

pytestmark = pytest.mark.slow

AK = "SDKTESTAK00000000001"
SK = "sdk-test-secret-key-0123456789"
PID = "5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b"
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


@dataclass
class Sim:
    url: str
    stderr: str


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _sim_command() -> list[str]:
    # The real console script when the CLI is installed; the module entry point otherwise.
    script = Path(sys.executable).parent / "flexus-ops"
    if script.exists():
        return [str(script), "sim"]
    return [sys.executable, "-m", "flexus_ops.sandbox.server"]


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    port = _free_port()
    log_path = tmp_path_factory.mktemp("sim") / "stderr.txt"
    args = [
        *_sim_command(),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--servers",
        "30",
        "--seed",
        "7",
        "--ak",
        AK,
        "--sk",
        SK,
        "--project-id",
        PID,
        "--job-seconds",
        "0.2",
    ]
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log)
        try:
            deadline = time.monotonic() + 30
            while True:
                if process.poll() is not None:
                    pytest.fail(f"flexus-ops sim exited with {process.returncode}: {log_path.read_text()}")
                try:
                    if httpx.get(f"{url}/_sandbox/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"flexus-ops sim did not answer on {url}: {log_path.read_text()}")
                time.sleep(0.1)
            yield Sim(url, log_path.read_text())
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def client_for(sim: Sim, secret_key: str = SK) -> EcsClient:
    credentials = BasicCredentials(AK, secret_key, PID)
    return EcsClient.new_builder().with_credentials(credentials).with_endpoints([sim.url]).build()


@pytest.fixture(scope="module")
def ecs(sim: Sim) -> EcsClient:
    return client_for(sim)


def all_servers(ecs: EcsClient) -> list[ServerDetail]:
    return ecs.list_servers_details(ListServersDetailsRequest(limit=1000)).servers


def pick(ecs: EcsClient, status: str, count: int = 1) -> list[str]:
    found = [s.id for s in all_servers(ecs) if s.status == status and not s.locked and not s.os_ext_st_stask_state]
    assert len(found) >= count, f"need {count} {status} servers"
    return found[:count]


def wait_for(ecs: EcsClient, job_id: str) -> ShowJobResponse:
    deadline = time.monotonic() + 15
    while True:
        job = ecs.show_job(ShowJobRequest(job_id=job_id))
        if job.status in {"SUCCESS", "FAIL"}:
            return job
        assert job.status == "RUNNING"
        assert time.monotonic() < deadline, "job never finished"
        time.sleep(0.1)


def admin(sim: Sim, path: str) -> object:
    return httpx.get(f"{sim.url}/_sandbox/{path}", timeout=5).json()


def test_sim_prints_url_credentials_and_export_line(sim: Sim) -> None:
    assert sim.url in sim.stderr
    assert f"export FLEXUS_ECS_ENDPOINT={sim.url} HUAWEICLOUD_SDK_AK={AK} HUAWEICLOUD_SDK_SK=" in sim.stderr
    assert f"HUAWEICLOUD_SDK_PROJECT_ID={PID}" in sim.stderr
    assert SK not in sim.stderr, "a secret key someone chose is never printed (only the published default is)"


def test_sim_prints_the_published_default_credentials(tmp_path: Path) -> None:
    from flexus_ops.sandbox import DEFAULT_SECRET_KEY

    process = subprocess.Popen(
        [sys.executable, "-m", "flexus_ops.sandbox.server", "--port", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        lines: list[str] = []
        while not lines or (not lines[-1].startswith("export ") and lines[-1]):
            lines.append(process.stderr.readline())
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert any(f"HUAWEICLOUD_SDK_SK={DEFAULT_SECRET_KEY}" in line for line in lines), lines


def test_show_server(ecs: EcsClient, sim: Sim) -> None:
    first = all_servers(ecs)[0]
    server = ecs.show_server(ShowServerRequest(server_id=first.id)).server
    assert server.id == first.id and server.name == "web-01"
    assert server.status in {"ACTIVE", "SHUTOFF"}
    assert isinstance(server.flavor.vcpus, str) and server.flavor.vcpus.isdigit()
    assert server.image.id
    addresses = [a for entries in server.addresses.values() for a in entries]
    assert any(a.os_ext_ip_stype == "fixed" and a.version == "4" for a in addresses)
    assert server.os_ext_a_zavailability_zone.startswith("cn-north-4")
    assert server.metadata["charging_mode"] in {"0", "1"}
    assert server.tenant_id == PID
    assert not server.os_srv_us_glaunched_at.endswith("Z")
    records = admin(sim, "requests")
    assert isinstance(records, list) and records[-1]["operation"] == "ShowServer"


def test_list_servers_with_filters_and_pages(ecs: EcsClient) -> None:
    everything = all_servers(ecs)
    assert len(everything) == 30
    page = ecs.list_servers_details(ListServersDetailsRequest(limit=10, offset=2))
    assert page.count == 30
    assert [s.id for s in page.servers] == [s.id for s in everything[10:20]]
    web = ecs.list_servers_details(ListServersDetailsRequest(name="web", status="ACTIVE", limit=100))
    assert web.servers and all("web" in s.name and s.status == "ACTIVE" for s in web.servers)
    tagged = ecs.list_servers_details(ListServersDetailsRequest(tags="env=prod", limit=100))
    untagged = ecs.list_servers_details(ListServersDetailsRequest(not_tags="env=prod", limit=100))
    assert tagged.count + untagged.count == 30 and tagged.count > 0
    ip = next(a.addr for a in next(iter(everything[4].addresses.values())) if a.os_ext_ip_stype == "fixed")
    exact = ecs.list_servers_details(ListServersDetailsRequest(ip_eq=ip))
    assert [s.id for s in exact.servers] == [everything[4].id]
    by_id = ecs.list_servers_details(ListServersDetailsRequest(server_id=f"{everything[0].id},{UNKNOWN_ID}"))
    assert [s.id for s in by_id.servers] == [everything[0].id, UNKNOWN_ID]
    assert by_id.servers[1].name is None and by_id.servers[1].fault


def test_stop_start_and_reboot_with_jobs(ecs: EcsClient) -> None:
    (to_stop,) = pick(ecs, "ACTIVE")
    stop = ecs.batch_stop_servers(
        BatchStopServersRequest(
            body=BatchStopServersRequestBody(os_stop=BatchStopServersOption(servers=[ServerId(id=to_stop)]))
        )
    )
    shown = ecs.show_server(ShowServerRequest(server_id=to_stop)).server
    assert (shown.status, shown.os_ext_st_stask_state) == ("ACTIVE", "powering-off")
    job = wait_for(ecs, stop.job_id)
    assert job.status == "SUCCESS" and job.job_type == "batchStopServers"
    assert job.entities.sub_jobs_total == 1 and job.entities.sub_jobs[0].entities.server_id == to_stop
    assert ecs.show_server(ShowServerRequest(server_id=to_stop)).server.status == "SHUTOFF"

    start = ecs.batch_start_servers(
        BatchStartServersRequest(
            body=BatchStartServersRequestBody(os_start=BatchStartServersOption(servers=[ServerId(id=to_stop)]))
        )
    )
    assert wait_for(ecs, start.job_id).status == "SUCCESS"
    assert ecs.show_server(ShowServerRequest(server_id=to_stop)).server.os_ext_st_spower_state == 1

    for kind in ("SOFT", "HARD"):
        (target,) = pick(ecs, "ACTIVE")
        reboot = ecs.batch_reboot_servers(
            BatchRebootServersRequest(
                body=BatchRebootServersRequestBody(
                    reboot=BatchRebootSeversOption(servers=[ServerId(id=target)], type=kind)
                )
            )
        )
        status = ecs.show_server(ShowServerRequest(server_id=target)).server.status
        assert status == ("REBOOT" if kind == "SOFT" else "HARD_REBOOT")
        assert wait_for(ecs, reboot.job_id).status == "SUCCESS"
        assert ecs.show_server(ShowServerRequest(server_id=target)).server.status == "ACTIVE"


def test_locked_server_fails_its_sub_job(ecs: EcsClient) -> None:
    locked = next(s.id for s in all_servers(ecs) if s.locked)
    stop = ecs.batch_stop_servers(
        BatchStopServersRequest(
            body=BatchStopServersRequestBody(os_stop=BatchStopServersOption(servers=[ServerId(id=locked)], type="HARD"))
        )
    )
    job = wait_for(ecs, stop.job_id)
    assert job.status == "FAIL" and job.fail_reason
    assert job.entities.sub_jobs[0].error_code == "Ecs.0605"


def test_reset_password_dry_run_and_real(ecs: EcsClient, sim: Sim) -> None:
    (target,) = pick(ecs, "ACTIVE")

    def reset(dry_run: bool) -> list[str]:
        body = BatchResetServersPasswordRequestBody(
            new_password="Sdk-Reset-Passw0rd", dry_run=dry_run, servers=[ServerId(id=target)]
        )
        response = ecs.batch_reset_servers_password(BatchResetServersPasswordRequest(body=body))
        return [item.id for item in response.response]

    assert reset(True) == [target]
    assert admin(sim, f"servers/{target}")["password_resets"] == 0  # type: ignore[index]
    assert reset(False) == [target]
    assert admin(sim, f"servers/{target}")["password_resets"] == 1  # type: ignore[index]
    assert "Sdk-Reset-Passw0rd" not in httpx.get(f"{sim.url}/_sandbox/requests").text


def test_update_server(ecs: EcsClient) -> None:
    (target,) = pick(ecs, "ACTIVE")
    option = UpdateServerOption(name="sdk-renamed", description="set by the official SDK", user_data="IyEvYmluL2Jhc2g=")
    result = ecs.update_server(UpdateServerRequest(server_id=target, body=UpdateServerRequestBody(server=option)))
    assert result.server.id == target and result.server.name == "sdk-renamed"
    assert all(isinstance(a.version, int) for entries in result.server.addresses.values() for a in entries)
    assert isinstance(result.server.image, str) and result.server.flavor.id
    shown = ecs.show_server(ShowServerRequest(server_id=target)).server
    assert (shown.name, shown.description) == ("sdk-renamed", "set by the official SDK")
    assert shown.os_ext_srv_att_ruser_data == "IyEvYmluL2Jhc2g="


def test_unknown_server_is_ecs_0114(ecs: EcsClient) -> None:
    with pytest.raises(ClientRequestException) as caught:
        ecs.show_server(ShowServerRequest(server_id=UNKNOWN_ID))
    assert caught.value.status_code == 404
    assert caught.value.error_code == "Ecs.0114"
    assert caught.value.request_id
    assert UNKNOWN_ID in caught.value.error_msg


def test_wrong_secret_key_is_401_apigw_0301(sim: Sim, ecs: EcsClient) -> None:
    with pytest.raises(ClientRequestException) as caught:
        client_for(sim, "wrong-" + SK).show_server(ShowServerRequest(server_id=UNKNOWN_ID))
    assert caught.value.status_code == 401
    assert caught.value.error_code == "APIGW.0301"
    assert "verify aksk signature fail" in caught.value.error_msg
    # One failure does not lock the AK; the right key still works.
    assert ecs.list_servers_details(ListServersDetailsRequest(limit=1)).count == 30


# -- fidelity to the reference (issue 13) -------------------------------------------------------


def test_status_filter_finds_intermediate_states(ecs: EcsClient, sim: Sim) -> None:
    (target,) = pick(ecs, "ACTIVE")
    # A long job keeps the server in HARD_REBOOT while the filters are read (no timing involved).
    assert httpx.patch(f"{sim.url}/_sandbox/knobs", json={"job_seconds": 3600}, timeout=5).status_code == 200
    try:
        ecs.batch_reboot_servers(
            BatchRebootServersRequest(
                body=BatchRebootServersRequestBody(
                    reboot=BatchRebootSeversOption(servers=[ServerId(id=target)], type="HARD")
                )
            )
        )
    finally:
        httpx.patch(f"{sim.url}/_sandbox/knobs", json={"job_seconds": 0.2}, timeout=5)

    def found(status: str) -> dict[str, str]:
        page = ecs.list_servers_details(ListServersDetailsRequest(status=status, limit=1000))
        return {s.id: s.status for s in page.servers}

    assert found("ACTIVE")[target] == "HARD_REBOOT", "ACTIVE covers HARD_REBOOT"
    assert target in found("HARD_REBOOT")
    assert target not in found("SHUTOFF")
    assert found("REBUILD") == {}, "REBUILD is a filter value the sandbox accepts"


def test_repeated_server_id_form_and_the_comma_form_agree(ecs: EcsClient) -> None:
    everything = all_servers(ecs)
    wanted = [everything[0].id, everything[3].id, UNKNOWN_ID]
    # The SDK sends a list value as repeated keys: server_id=a&server_id=b (the Flexus L reference's form).
    # (Its signer sorts the list in place, so the ids go in sorted order; the answer follows the query.)
    comma = ecs.list_servers_details(ListServersDetailsRequest(server_id=",".join(wanted)))
    repeated = ecs.list_servers_details(ListServersDetailsRequest(server_id=list(wanted)))
    assert [s.id for s in comma.servers] == wanted
    assert [s.id for s in repeated.servers] == sorted(wanted), "every repeated id counts, not just the last"
    assert repeated.count == 3 and next(s for s in repeated.servers if s.id == UNKNOWN_ID).fault


def test_a_request_line_over_8192_bytes_is_refused_with_414(ecs: EcsClient, sim: Sim) -> None:
    many = [f"00000000-0000-4000-8000-{index:012d}" for index in range(300)]  # about 11 KB of query
    with pytest.raises(ClientRequestException) as caught:
        ecs.list_servers_details(ListServersDetailsRequest(server_id=",".join(many)))
    assert caught.value.status_code == 414 and caught.value.error_code == "APIGW.0201"
    hundred = ecs.list_servers_details(ListServersDetailsRequest(server_id=",".join(many[:100])))
    assert hundred.count == 100, "100 ids per query, as the reference advises, fit"
    records = admin(sim, "requests")
    assert isinstance(records, list) and records[-2]["status"] == 414


def test_names_up_to_128_characters_or_64_chinese(ecs: EcsClient) -> None:
    (target,) = pick(ecs, "ACTIVE")

    def rename(name: str) -> str:
        option = UpdateServerOption(name=name)
        request = UpdateServerRequest(server_id=target, body=UpdateServerRequestBody(server=option))
        return ecs.update_server(request).server.name

    assert rename("n" * 128) == "n" * 128
    assert rename("测" * 64) == "测" * 64
    for too_long in ("n" * 129, "测" * 65):
        with pytest.raises(ClientRequestException) as caught:
            rename(too_long)
        assert caught.value.status_code == 400 and "server.name" in caught.value.error_msg
    assert ecs.show_server(ShowServerRequest(server_id=target)).server.name == "测" * 64
