"""The embedded sandbox kept in a state file (tools/sandbox/persist.py): what the CLI's calls share."""

from __future__ import annotations

import json
import logging
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from flexus_ops.cloud.client import FlexusClient
from flexus_ops.config import Settings
from flexus_ops.gate.private import open_private
from flexus_ops.sandbox import DEFAULT_PROJECT_ID, Sandbox, SandboxBackend, SandboxOptions
from flexus_ops.sandbox.persist import SandboxStateError, StateFile, keep_state, restore, snapshot
from tests.procs import clean_env
from tests.sandbox_fixtures import FakeClock, server_ids

PASSWORD = "Keep-Fleet-99"  # fits Linux and Windows rules


def kept(path: Path, clock: FakeClock | None = None, **options: object) -> tuple[Sandbox, FlexusClient]:
    """A sandbox kept in ``path``, as one CLI process would have it, and a client on it."""
    sandbox = Sandbox(SandboxOptions(clock=clock, **options))  # type: ignore[arg-type]
    keep_state(sandbox, path, open_private)
    return sandbox, FlexusClient(Settings(state_dir=path.parent), sandbox=sandbox)


def test_a_snapshot_restores_servers_jobs_and_pending_sub_jobs() -> None:
    clock = FakeClock()
    first = SandboxBackend(SandboxOptions(servers=30, clock=clock, job_seconds=10))
    active = [sid for sid, s in first.servers.items() if s.status == "ACTIVE" and not s.locked]
    locked = [sid for sid, s in first.servers.items() if s.locked]
    stop = first.stop_servers(active[:2] + locked[:1])  # two pending, one failed at once
    clock.advance(5)
    reboot = first.reboot_servers(active[2:3], "HARD")
    first.update_server(active[3], {"description": "kept", "security_options": {"tpm_enabled": True}})
    first.reset_passwords(active[4:5], PASSWORD)
    data = json.loads(json.dumps(snapshot(first)))  # as it goes through the file
    assert PASSWORD not in json.dumps(data)

    second = SandboxBackend(SandboxOptions(servers=30, clock=clock, job_seconds=10))
    restore(second, data)
    for backend in (first, second):  # both go on the same way from here
        assert backend.show_job(stop)["status"] == "RUNNING"
    assert second.show_server(active[3]) == first.show_server(active[3])
    assert second.servers[active[4]].password_resets == 1
    assert second.servers[active[2]].task_state == "rebooting_hard"
    clock.advance(5)  # the stop is due; the reboot is not yet
    assert first.show_job(stop) == second.show_job(stop)
    assert second.show_job(stop)["status"] == "FAIL"  # the locked server's sub-job failed
    assert second.server_view(active[0])["status"] == "SHUTOFF"
    assert second.show_job(reboot)["status"] == "RUNNING"
    clock.advance(5)
    assert second.show_job(reboot) == first.show_job(reboot) and second.show_job(reboot)["status"] == "SUCCESS"
    assert second.servers[active[2]].task_state is None


def test_jobs_finished_over_a_day_ago_are_not_kept() -> None:
    clock = FakeClock()
    backend = SandboxBackend(SandboxOptions(servers=30, clock=clock, job_seconds=10))
    active = [sid for sid, s in backend.servers.items() if s.status == "ACTIVE" and not s.locked]
    old = backend.stop_servers(active[:1])
    clock.advance(86_400)
    recent = backend.stop_servers(active[1:2])
    clock.advance(20)
    assert [job["id"] for job in snapshot(backend)["jobs"]] == [recent] and old in backend.jobs


def test_a_pending_sub_job_the_file_cannot_keep_fails_loudly() -> None:
    backend = SandboxBackend(SandboxOptions(servers=5))
    job = backend.job_book.open("batchFrobServers", backend.now())
    sub = backend.job_book.add_sub_job(job, next(iter(backend.servers)), "frobServer", backend.now())
    backend.job_book.schedule(sub, backend.now(), lambda _at: None)
    with pytest.raises(SandboxStateError, match="frobServer"):
        snapshot(backend)


async def test_each_request_sees_what_another_process_wrote(tmp_path: Path) -> None:
    """Two sandboxes on one file, as two CLI calls: each request reloads what the other saved."""
    path = tmp_path / "sandbox.json"
    one, one_client = kept(path)
    two, two_client = kept(path)
    try:
        active = server_ids(one, "ACTIVE")
        await one_client.list_servers()  # both loaded before either writes
        await two_client.list_servers()
        await one_client.batch_stop([active[0]])
        await two_client.batch_stop([active[1]])  # must not overwrite the first stop
        listing = {server.id: server for server in await one_client.list_all_servers()}
        assert {listing[sid].task_state for sid in active[:2]} == {"powering-off"}
        assert {s.task_state for sid, s in two.backend.servers.items() if sid in active[:2]} == {"powering-off"}
    finally:
        await one_client.aclose()
        await two_client.aclose()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "sandbox.json.lock").stat().st_mode) == 0o600


WRITER = """
import asyncio, sys
from pathlib import Path
from flexus_ops.config import Settings
from flexus_ops.registry.registry import make_client

async def main() -> None:
    client = make_client(Settings(state_dir=Path(sys.argv[1])), keep_sandbox=True)
    try:
        for _ in range(int(sys.argv[3])):
            await client.batch_reset_password([sys.argv[2]], sys.argv[4])
    finally:
        await client.aclose()

asyncio.run(main())
"""


def test_concurrent_processes_lose_no_write(tmp_path: Path) -> None:
    """Four processes each reset one server's password 25 times: the sandbox counts every reset (a
    read-modify-write per request, which a lost update would undercount)."""
    backend = SandboxBackend(SandboxOptions())
    target = next(sid for sid, server in backend.servers.items() if not server.locked)
    env = clean_env(tmp_path)
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path), target, "25", PASSWORD],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(4)
    ]
    for writer in writers:
        _, err = writer.communicate(timeout=240)
        assert writer.returncode == 0, err.decode()
    state = tmp_path / "sandbox-cn-north-4.json"
    restore(backend, json.loads(state.read_text()))
    assert backend.servers[target].password_resets == 100
    assert PASSWORD not in state.read_text()


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        json.dumps({"format": 99}),
        json.dumps({"format": 1, "fleet": {"servers": 3}}),
        json.dumps({"format": 1, "fleet": {"servers": 30, "seed": 7, "project_id": DEFAULT_PROJECT_ID}}),
    ],
)
async def test_an_unreadable_or_foreign_file_starts_the_fleet_afresh(
    tmp_path: Path, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "sandbox.json"
    path.write_text(content)
    path.chmod(0o600)
    sandbox, client = kept(path)
    try:
        with caplog.at_level(logging.WARNING, logger="flexus_ops.sandbox"):
            servers = await client.list_all_servers()
            await client.list_servers()  # read again: the same file is not reported twice
        assert len(servers) == 30
        assert caplog.text.count("starts afresh") == 1, caplog.text
        await client.batch_stop([server_ids(sandbox, "ACTIVE")[0]])  # and the next write replaces the file
    finally:
        await client.aclose()
    assert json.loads(path.read_text())["format"] == 1


def test_a_state_file_of_another_user_is_refused(tmp_path: Path) -> None:
    """The file goes through the project's private-file rules: one others can write is not trusted."""
    path = tmp_path / "sandbox.json"
    path.write_text("")
    path.chmod(0o666)
    state = StateFile(path, open_private)
    with pytest.raises(Exception, match="writable by other users"):
        state.load_into(SandboxBackend(SandboxOptions(servers=3)))
