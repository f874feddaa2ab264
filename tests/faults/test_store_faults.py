"""The gate's store misbehaves: read-only, locked by another process, a database that accepts connections
and never answers, a URL nobody can use, and a real PostgreSQL stopped while a change is in flight. Each is
one line naming the store, the cause and the next step (CLI exit 4, an MCP error result), in bounded time;
nothing is sent to the cloud on a store that cannot record it; and a change already sent when the database
went away is reported as sent, then settled from the cloud once the database is back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from mcp import Client

from flexus_ops.config import Settings
from flexus_ops.core.errors import OutcomeUnknown
from flexus_ops.core.plans import ChangeOutput
from flexus_ops.gate.secrets import Keys
from flexus_ops.gate.store import Store
from flexus_ops.mcp_server import build_server
from flexus_ops.registry.registry import Registry, make_client
from tests.faults.conftest import Cluster
from tests.faults.kit import (
    BlackHole,
    active_server,
    cli,
    cli_env,
    existing_store,
    posts,
    problem_lines,
    until,
)
from tests.gatekit import ALICE, team_policy
from tests.live import AK, PID, SK, serve
from tests.test_mcp import local_policy, text_of

STOP = ["call", "flexus_stop_servers", "--args", json.dumps({"servers": ["web-01"]})]


def read_only_url(path: Path) -> str:
    # Opened read-only by SQLite itself: file modes would not do, root ignores them.
    return f"sqlite:///file:{path}?mode=ro&uri=true"


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Another connection (to SQLite, as good as another process) holding the write lock meanwhile."""
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def assert_one_store_line(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 4, result.stderr
    (line,) = problem_lines(result.stderr)
    assert line.startswith("flexus-ops: store:"), line
    for word in words:
        assert word in line, line
    assert "Traceback" not in result.stderr + result.stdout and result.stdout == ""


# -- the CLI --------------------------------------------------------------------------------------


def test_a_read_only_store_fails_a_preview_in_one_line_and_nothing_is_written(tmp_path: Path) -> None:
    path = existing_store(tmp_path)
    with serve() as live:
        env = cli_env(tmp_path, endpoint=live.url, FLEXUS_STORE_URL=read_only_url(path))
        server_id = active_server(live.sandbox)
        result = cli(env, "call", "flexus_stop_servers", "--args", json.dumps({"servers": [server_id]}))
        assert_one_store_line(result, "SQLite store", str(path), "read-only")
        assert posts(live.sandbox) == [] and live.sandbox.writes() == []


def test_a_locked_store_fails_after_the_statement_timeout(tmp_path: Path) -> None:
    path = existing_store(tmp_path)
    env = cli_env(tmp_path, FLEXUS_DB_STATEMENT_TIMEOUT="1")
    with locked(path):
        result = cli(env, *STOP, bound=30)
    assert_one_store_line(result, "SQLite store", "locked", "FLEXUS_DB_STATEMENT_TIMEOUT")


def test_a_database_that_never_answers_fails_within_the_connect_timeout(tmp_path: Path) -> None:
    with BlackHole() as hole:
        env = cli_env(
            tmp_path,
            FLEXUS_STORE_URL=f"postgresql://x@127.0.0.1:{hole.port}/db",
            FLEXUS_DB_CONNECT_TIMEOUT="2",
        )
        # A failure bound, not a measurement: before connect timeouts this hung for ever.
        result = cli(env, *STOP, bound=30)
    assert_one_store_line(result, "cannot reach", f"127.0.0.1:{hole.port}/db", "FLEXUS_DB_CONNECT_TIMEOUT")


def test_a_store_url_for_a_database_flexus_ops_cannot_use_is_a_store_error(tmp_path: Path) -> None:
    result = cli(cli_env(tmp_path, FLEXUS_STORE_URL="mysql://flexus@db.internal/flexus"), *STOP)
    assert_one_store_line(result, "FLEXUS_STORE_URL")


def test_a_password_with_an_unescaped_at_sign_is_refused_without_echoing_any_of_it(tmp_path: Path) -> None:
    """An '@' in a password must be written %40; unescaped, the URL's host would start with the rest of the
    password, and a message naming the host (ours or the driver's) would print it."""
    for url in (
        "postgresql://bob:p@ssw0rd-Secret@127.0.0.1:5999/x",
        "postgresql://bob:p@ssw0rd/Secret@127.0.0.1:5999/x",  # the rest would be taken as host and database
        "postgresql://bob:p@ssw0rd?Secret@127.0.0.1:5999/x",
    ):
        result = cli(cli_env(tmp_path, FLEXUS_STORE_URL=url), *STOP)
        assert result.returncode in (2, 4), result.stderr
        assert "ssw0rd" not in result.stderr + result.stdout and "Secret" not in result.stderr + result.stdout
        assert "%40" in result.stderr, result.stderr


# -- MCP ------------------------------------------------------------------------------------------


def mcp_registry(state_dir: Path, store_url: str) -> Registry:
    """A registry as `flexus-ops mcp` builds it (its store opened on first use), on the embedded sandbox."""
    settings = Settings(
        state_dir=state_dir,
        store_url=store_url,
        db_connect_timeout_seconds=2,
        db_statement_timeout_seconds=1,
        sandbox_job_seconds=0.1,
    )
    return Registry(settings, client=make_client(settings), policy=local_policy())


@pytest.mark.parametrize("fault", ["read-only", "locked", "never answers", "unusable url"])
async def test_store_faults_over_mcp_are_one_line_error_results(tmp_path: Path, fault: str) -> None:
    path = existing_store(tmp_path)
    with BlackHole() as hole:
        url, words = {
            "read-only": (read_only_url(path), ["read-only"]),
            "locked": (f"sqlite:///{path}", ["locked"]),
            "never answers": (f"postgresql://x@127.0.0.1:{hole.port}/db", ["cannot reach"]),
            "unusable url": ("mysql://flexus@db.internal/flexus", ["FLEXUS_STORE_URL"]),
        }[fault]
        registry = mcp_registry(tmp_path, url)
        try:
            with locked(path) if fault == "locked" else contextlib.nullcontext():
                async with Client(build_server(registry)) as client:
                    result = await asyncio.wait_for(
                        client.call_tool("flexus_stop_servers", {"servers": ["web-01"]}), 30
                    )
                    still_answers = await client.call_tool("flexus_list_servers", {"limit": 1})
        finally:
            await registry.aclose()
    text = text_of(result)
    assert result.is_error, text
    assert len(text.strip().splitlines()) == 1, text
    assert "store:" in text and all(word in text for word in words), text
    assert "Traceback" not in text and "Error executing tool" not in text and "internal error" not in text, text
    assert not still_answers.is_error, "a read needs no store: the server keeps answering"


# -- a real PostgreSQL, stopped while a change is in flight ---------------------------------------


async def test_a_database_lost_mid_execution_reports_sent_and_settles_when_back(
    tmp_path: Path, pg_cluster: Cluster
) -> None:
    store_url = pg_cluster.new_database()
    with serve(job_seconds=0.2) as live:
        settings = Settings(
            state_dir=tmp_path,
            ecs_endpoint=live.url,
            access_key=AK,
            secret_key=SK,
            project_id=PID,
            retry_base_seconds=0.01,
            retry_max_seconds=0.05,
            job_poll_seconds=0.05,
            job_poll_max_seconds=0.1,
            lease_seconds=1,  # the owner's lease runs out a second after its last renewal
        )
        keys = Keys.load(tmp_path)
        store = Store(store_url, keys.audit, connect_timeout=2, statement_timeout=2)
        registry = Registry(settings, client=make_client(settings), store=store, policy=team_policy(), keys=keys)
        try:
            server_id = active_server(live.sandbox)
            out = await registry.call(ALICE, "flexus_stop_servers", {"servers": [server_id]})
            assert isinstance(out, ChangeOutput) and out.preview is not None
            action_id, token = out.preview.action_id, out.preview.confirmation_token
            live.sandbox.knobs.hang_seconds = 2.0
            live.sandbox.knobs.hang_next_write = 1
            confirm = asyncio.create_task(
                registry.call(ALICE, "flexus_stop_servers", {"servers": [server_id], "confirmation_token": token})
            )
            # The sandbox takes the knob when the stop arrives: from then on the write is in flight.
            await until(lambda: live.sandbox.knobs.hang_next_write == 0 or confirm.done(), what="the stop to arrive")
            assert not confirm.done(), confirm
            await asyncio.to_thread(pg_cluster.stop, "fast")
            try:
                with pytest.raises(OutcomeUnknown) as unknown:
                    await asyncio.wait_for(confirm, 60)
                message = str(unknown.value)
                assert "was sent" in message and "Do not retry" in message and action_id in message, message
                assert "flexus-ops audit" in message and "\n" not in message, message
                assert "Traceback" not in message
                assert len(posts(live.sandbox)) == 1 and len(live.sandbox.writes()) == 1
            finally:
                await asyncio.to_thread(pg_cluster.start)

            # The owner stopped renewing when its execution ended; once its lease has run out, settling
            # reads the server, which shows the stop, and records it with nothing sent again.
            deadline = time.monotonic() + 60
            while not (settled := await registry.settle()):
                assert time.monotonic() < deadline, "the action was never settled"
                await asyncio.sleep(0.2)
            assert settled == [action_id]
            row = registry.store.get_action(action_id)
            assert row is not None and row["state"] == "succeeded"
            assert json.loads(row["result_json"])["reconciled"]["observed"] == {server_id: "applied"}
            reconciled = [r for r in registry.store.audit_records() if r.event == "reconciled"]
            assert [(r.action_id, r.detail["resent"]) for r in reconciled] == [(action_id, False)]
            assert len(posts(live.sandbox)) == 1, "nothing was sent again"
            assert registry.store.verify_audit() == []
        finally:
            await registry.aclose()
