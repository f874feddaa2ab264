"""store: preview -> confirm -> execute through ``Registry.call`` with 4 concurrent workers sharing one
gate store, on SQLite and on PostgreSQL, and a check that exactly-once still holds.

Each worker is a separate OS process, like a replica: its own registry, cloud client and embedded
sandbox (no added latency, jobs of 0 s), one shared store URL and shared keys. A cycle is
``flexus_update_server`` previewed, then confirmed with its token and executed; the three
transitions of a cycle (preview, confirm, execute) are each a store write plus an audit append.

Phase 1 (throughput): all workers run cycles at once, released together by a barrier.
Phase 2 (exactly-once): one process previews K changes; all four workers then race to confirm every
token. Exactly K confirmations may win, exactly K updates may reach the sandboxes, every action must
end ``succeeded``, and the audit chain must verify with no gaps.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .harness import (
    Case,
    CaseResult,
    RunContext,
    env_without_secrets,
    fmt_seconds,
    fmt_spread,
    proc_cpu_seconds,
    summary,
)

WORKERS = 4
TRANSITIONS_PER_CYCLE = 3  # preview, confirm, execute
PRINCIPAL = "os:flexus-bench"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"  # the server .ci/run starts
GOAL_PER_SECOND = 500
SANDBOX_SERVERS = 200


class _Meter:
    """Where a worker's time goes, counted on its own threads while it runs cycles.

    ``store``: CPU on the store's threads inside its calls (SQLAlchemy, the driver, the audit MACs and
    checkpoints). ``sandbox``: CPU inside the embedded sandbox's ASGI app, the stand-in for the cloud's
    servers (a real cloud spends it elsewhere). The rest of the process's CPU is the registry, the gate
    and the cloud client (httpx, request signing, response models), which a real deployment spends too.
    The sandbox's share is measured on the event loop's thread around each request; a worker runs one
    call at a time, so nothing else runs on that thread meanwhile."""

    STORE_CALLS = (
        "create_action",
        "get_action",
        "find_open_action",
        "transition",
        "renew_lease",
        "due_for_expiry",
        "erase_stale_reveals",
        "append_audit",
    )

    def __init__(self) -> None:
        self.store = 0.0
        self.sandbox = 0.0
        self.store_calls = 0
        self.statements = 0
        # Per audit append: the wait for the audit head's row lock, and from the lock granted to the end of
        # the commit (every append takes that one lock, so the appends of all workers queue on it).
        self.head_waits: list[float] = []
        self.head_holds: list[float] = []
        self._head_granted: float | None = None

    def reset(self) -> None:
        self.store = self.sandbox = 0.0
        self.store_calls = self.statements = 0
        self.head_waits, self.head_holds = [], []

    def watch_store(self, store: Any) -> None:
        from sqlalchemy import event

        for name in self.STORE_CALLS:
            # AsyncStore runs each call as getattr(store, name): the instance's timed one.
            setattr(store, name, self._timed_store_call(getattr(store, name)))

        @event.listens_for(store.engine, "before_cursor_execute")
        def _statement(*_args: Any) -> None:
            self.statements += 1

        run = store._run  # the hot path's statements go to the driver's cursor, past SQLAlchemy's events

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.statements += 1
            return run(*args, **kwargs)

        store._run = counted

        from flexus_ops.gate.store import _AUDIT_HEAD

        first, tx = store._first, store.tx

        def timed_first(db: Any, statement: Any, params: Any) -> Any:
            if statement is not _AUDIT_HEAD:
                return first(db, statement, params)
            asked = time.perf_counter()
            row = first(db, statement, params)
            self._head_granted = time.perf_counter()
            self.head_waits.append(self._head_granted - asked)
            return row

        @contextmanager
        def timed_tx() -> Iterator[Any]:
            self._head_granted = None
            with tx() as db:
                yield db
            if self._head_granted is not None:
                self.head_holds.append(time.perf_counter() - self._head_granted)

        store._first, store.tx = timed_first, timed_tx

    def _timed_store_call(self, call: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.thread_time()
            try:
                return call(*args, **kwargs)
            finally:
                self.store += time.thread_time() - start
                self.store_calls += 1

        return timed

    def sandbox_app(self, app: Any) -> Any:
        async def timed(scope: Any, receive: Any, send: Any) -> None:
            start = time.thread_time()
            try:
                await app(scope, receive, send)
            finally:
                self.sandbox += time.thread_time() - start

        return timed


def _registry(url: str, state_dir: str, meter: _Meter | None = None) -> Any:
    import httpx

    from flexus_ops.cloud.client import FlexusClient
    from flexus_ops.config import Settings
    from flexus_ops.gate.audit import Checkpointer
    from flexus_ops.gate.policy import Person, Policy, Role
    from flexus_ops.gate.secrets import Keys
    from flexus_ops.gate.store import Store
    from flexus_ops.registry.registry import Registry, make_client

    # Enough servers for the race phase's previews, one server each.
    settings = Settings(state_dir=Path(state_dir), sandbox_job_seconds=0.0, sandbox_servers=SANDBOX_SERVERS)
    policy = Policy(people=[Person(id="bench", roles=[Role.OPERATOR], principals=[PRINCIPAL])])
    keys = Keys.load(Path(state_dir))
    client = make_client(settings)
    store = Store(url, keys.audit, checkpoints=Checkpointer(Path(state_dir)))  # as a surface's registry
    if meter is not None:
        # The same sandbox, reached through an app that times it.
        client = FlexusClient(
            settings, sandbox=client.sandbox, transport=httpx.ASGITransport(app=meter.sandbox_app(client.sandbox.app))
        )
        meter.watch_store(store)
    return Registry(settings=settings, client=client, store=store, policy=policy, keys=keys)


def _caller() -> Any:
    from flexus_ops.core.tools import Caller

    return Caller(PRINCIPAL, "bench")


async def _cycles(url: str, state_dir: str, worker: int, count: int, barrier: Any) -> dict[str, Any]:
    meter = _Meter()
    registry = _registry(url, state_dir, meter)
    caller = _caller()
    try:
        # A frozen server (the sandbox freezes 1 in 50, as the cloud does for arrears) refuses changes.
        server = next(s.id for s in (await registry.client.list_servers(limit=10)).servers if not s.frozen)
        barrier.wait()
        meter.reset()
        started = time.time()
        cpu = time.process_time()
        latencies = []
        for index in range(count):
            args = {"server": server, "description": f"bench w{worker} #{index}"}
            t0 = time.perf_counter()
            preview = await registry.call(caller, "flexus_update_server", args)
            token = preview.preview.confirmation_token
            done = await registry.call(caller, "flexus_update_server", {**args, "confirmation_token": token})
            latencies.append(time.perf_counter() - t0)
            if done.result is None or done.result.status != "succeeded":
                raise RuntimeError(f"cycle {index} of worker {worker} did not succeed: {done}")
        finished = time.time()
        cpu = time.process_time() - cpu
        writes = len(registry.client.sandbox.writes())
    finally:
        await registry.aclose()
    return {
        "worker": worker,
        "started": started,
        "finished": finished,
        "cpu_seconds": cpu,
        "store_cpu_seconds": meter.store,
        "sandbox_cpu_seconds": meter.sandbox,
        "store_calls": meter.store_calls,
        "sql_statements": meter.statements,
        "head_lock_waits": meter.head_waits,
        "head_lock_holds": meter.head_holds,
        "cycles": count,
        "writes": writes,
        "cycle_seconds": latencies,
    }


async def _race(url: str, state_dir: str, worker: int, items: list[dict[str, Any]], barrier: Any) -> dict[str, Any]:
    from flexus_ops.core.errors import Refused

    registry = _registry(url, state_dir)
    caller = _caller()
    order = list(items)
    random.Random(worker).shuffle(order)  # each worker meets the tokens in another order
    won: list[str] = []
    refused = 0
    try:
        await registry.client.list_servers(limit=1)
        barrier.wait()
        started = time.time()
        for item in order:
            try:
                done = await registry.call(caller, "flexus_update_server", item["args"])
            except Refused:
                refused += 1
                continue
            # A token that lost the race comes back as the recorded outcome of the winner, marked as a replay.
            if done.result is not None and done.result.status == "succeeded" and not done.result.replay:
                won.append(item["action_id"])
        finished = time.time()
        writes = len(registry.client.sandbox.writes())
    finally:
        await registry.aclose()
    return {
        "worker": worker,
        "won": won,
        "refused": refused,
        "writes": writes,
        "started": started,
        "finished": finished,
    }


def _process(kind: str, url: str, state_dir: str, worker: int, payload: Any, barrier: Any, queue: Any) -> None:
    """A worker process's body (top-level, so the spawn start method can import it)."""
    try:
        if kind == "cycles":
            out = asyncio.run(_cycles(url, state_dir, worker, payload, barrier))
        else:
            out = asyncio.run(_race(url, state_dir, worker, payload, barrier))
        queue.put(("ok", out))
    except BaseException as exc:
        barrier.abort()  # never leave the others waiting for a worker that died
        queue.put(("error", f"worker {worker}: {type(exc).__name__}: {exc}"))


def _run_workers(kind: str, url: str, state_dir: str, payloads: list[Any]) -> list[dict[str, Any]]:
    # spawn, not fork: every worker starts like a fresh replica, with no inherited engine or event loop.
    mp = multiprocessing.get_context("spawn")
    barrier = mp.Barrier(len(payloads), timeout=300)
    queue = mp.Queue()
    processes = [
        mp.Process(target=_process, args=(kind, url, state_dir, index, payload, barrier, queue))
        for index, payload in enumerate(payloads)
    ]
    for process in processes:
        process.start()
    outcomes = [queue.get(timeout=1800) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    errors = [detail for status, detail in outcomes if status == "error"]
    if errors:
        raise RuntimeError("; ".join(errors))
    return sorted((detail for _, detail in outcomes), key=lambda out: out["worker"])


async def _previews(url: str, state_dir: str, count: int) -> list[dict[str, Any]]:
    registry = _registry(url, state_dir)
    caller = _caller()
    items = []
    try:
        # Servers the throughput phase never touched (it uses the first one), so each worker's
        # sandbox still matches the plan and the store alone decides who wins.
        # Frozen ones are left out: their execution fails by design, which is not the store's to decide.
        listed = (await registry.client.list_servers(limit=SANDBOX_SERVERS)).servers
        thawed = [server for server in listed if not server.frozen]
        servers = thawed[1:]
        for index, server in enumerate(servers[:count]):
            args = {"server": server.id, "description": f"race #{index}"}
            preview = await registry.call(caller, "flexus_update_server", args)
            token = preview.preview.confirmation_token
            items.append({"args": {**args, "confirmation_token": token}, "action_id": preview.preview.action_id})
    finally:
        await registry.aclose()
    return items


def _store_facts(url: str, state_dir: str) -> dict[str, Any]:
    from sqlalchemy import func, select

    from flexus_ops.gate.audit import Checkpointer
    from flexus_ops.gate.secrets import Keys
    from flexus_ops.gate.store import Store, actions

    store = Store(url, Keys.load(Path(state_dir)).audit, checkpoints=Checkpointer(Path(state_dir)))
    try:
        with store.engine.connect() as db:
            states = dict(db.execute(select(actions.c.state, func.count()).group_by(actions.c.state)).all())
        records = store.audit_records()
        return {
            "actions_by_state": states,
            "audit_records": len(records),
            "audit_problems": store.verify_audit(),
            "audit_seq_gapless": [r.seq for r in records] == list(range(1, len(records) + 1)),
        }
    finally:
        store.engine.dispose()


def measure(url: str, cycles: int, race: int) -> dict[str, Any]:
    state_dir = tempfile.mkdtemp(prefix="flexus-bench-store-")
    try:
        from flexus_ops.gate.audit import Checkpointer
        from flexus_ops.gate.secrets import Keys
        from flexus_ops.gate.store import Store

        keys = Keys.load(Path(state_dir))  # create the shared key file once, before the workers race to
        # Likewise the checkpoint signing key: workers creating it at once can read it half-written.
        Checkpointer(Path(state_dir)).signer()
        Store(url, keys.audit).engine.dispose()  # migrate once, before the workers start
        runs = _run_workers("cycles", url, state_dir, [cycles] * WORKERS)
        elapsed = max(r["finished"] for r in runs) - min(r["started"] for r in runs)
        after_cycles = _store_facts(url, state_dir)
        items = asyncio.run(_previews(url, state_dir, race))
        if len(items) != race:
            raise RuntimeError(f"previewed {len(items)} race actions, wanted {race}")
        racers = _run_workers("race", url, state_dir, [items] * WORKERS)
        facts = _store_facts(url, state_dir)
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    wins = [action for r in racers for action in r["won"]]
    total_cycles = cycles * WORKERS
    exactly_once = {
        "cycle_writes_equal_cycles": sum(r["writes"] for r in runs) == total_cycles,
        "race_each_action_won_once": sorted(wins) == sorted(item["action_id"] for item in items),
        # Race workers are fresh processes with fresh sandboxes: their writes are the race's alone.
        "race_writes_equal_actions": sum(r["writes"] for r in racers) == race,
        "all_actions_succeeded": facts["actions_by_state"] == {"succeeded": total_cycles + race},
        "audit_verifies": facts["audit_problems"] == [] and facts["audit_seq_gapless"],
    }
    return {
        "workers": WORKERS,
        "cycles_per_worker": cycles,
        "elapsed_seconds": elapsed,
        "cycles_per_second": total_cycles / elapsed,
        "transitions_per_second": total_cycles * TRANSITIONS_PER_CYCLE / elapsed,
        "cycle_seconds": [s for r in runs for s in r["cycle_seconds"]],
        # CPU each worker spent per cycle: with 4 workers on this machine's cores, it caps the rate.
        "cpu_seconds_per_cycle": sum(r["cpu_seconds"] for r in runs) / total_cycles,
        # ... split by layer (see _Meter): the store, the embedded sandbox, and the rest (registry, gate,
        # cloud client).
        "cpu_split_per_cycle": {
            "store": sum(r["store_cpu_seconds"] for r in runs) / total_cycles,
            "sandbox": sum(r["sandbox_cpu_seconds"] for r in runs) / total_cycles,
            "registry_gate_client": sum(
                r["cpu_seconds"] - r["store_cpu_seconds"] - r["sandbox_cpu_seconds"] for r in runs
            )
            / total_cycles,
        },
        "sql_statements_per_cycle": sum(r["sql_statements"] for r in runs) / total_cycles,
        # The audit head's lock: every transition's append holds it until its commit ends, one at a time.
        "head_lock_wait_seconds": [s for r in runs for s in r["head_lock_waits"]],
        "head_lock_hold_seconds": [s for r in runs for s in r["head_lock_holds"]],
        "store_calls_per_cycle": sum(r["store_calls"] for r in runs) / total_cycles,
        "cpus": os.cpu_count(),
        "after_cycles": after_cycles,
        "race": {
            "actions": race,
            "wins": len(wins),
            "refused": sum(r["refused"] for r in racers),
            "per_worker": [{k: r[k] for k in ("worker", "refused", "writes")} | {"won": len(r["won"])} for r in racers],
        },
        "store_facts": facts,
        "exactly_once": exactly_once,
    }


# One preview-confirm-execute cycle as the store sends it on PostgreSQL (see Store: find_open_action,
# create_action, get_action, transition twice, each change with its audit append: the head locked, the newest
# record read, the record inserted with the head's move): its three transactions and two reads. pgbench runs
# it with as many clients as there are workers: the database's own ceiling for these statements.
PGBENCH_CYCLE = """\\set n random(1, 9000000000000)
SELECT * FROM flexus_actions WHERE person = 'bench' AND tool = 'flexus_update_server' AND args_hash = 'h' || :n::text
  AND state IN ('pending') AND expires_at > 0 ORDER BY created_at DESC LIMIT 1;
BEGIN;
INSERT INTO flexus_actions (id, tool, person, principal, surface, args_json, args_hash, plan_json, plan_hash,
    state, needs_approval, created_at, expires_at, updated_at)
  VALUES ('pgb' || :n::text, 'flexus_update_server', 'bench', 'os-bench', 'bench', '{"description":"pgbench"}',
    'h' || :n::text, '{}', '', 'pending', false, :n::float8, 1e15, :n::float8);
SELECT seq, hash FROM flexus_audit_head WHERE id = 1 FOR UPDATE;
SELECT seq, key_id, event FROM flexus_audit WHERE seq IN (SELECT seq FROM flexus_audit_head WHERE id = 1);
WITH appended AS (INSERT INTO flexus_audit (seq, at, event, person, surface, tool, action_id, detail_json, prev_hash,
    hash, key_id)
  SELECT seq + 1, :n::float8, 'preview', 'bench', 'bench', 'flexus_update_server', 'pgb' || :n::text,
         '{"arguments":{"description":"pgbench"}}', hash, md5(:n::text) || md5(seq::text), 'k1'
  FROM flexus_audit_head WHERE id = 1)
UPDATE flexus_audit_head SET seq = seq + 1, hash = md5(:n::text) || md5(seq::text) WHERE id = 1;
COMMIT;
SELECT * FROM flexus_actions WHERE id = 'pgb' || :n::text;
BEGIN;
UPDATE flexus_actions SET state = 'executing', updated_at = :n, confirmed_via = 'token', executed_by = 'bench',
    owner = 'pgbench', lease_until = :n
  WHERE id = 'pgb' || :n::text AND state IN ('pending') AND expires_at > 0 RETURNING tool;
SELECT seq, hash FROM flexus_audit_head WHERE id = 1 FOR UPDATE;
SELECT seq, key_id, event FROM flexus_audit WHERE seq IN (SELECT seq FROM flexus_audit_head WHERE id = 1);
WITH appended AS (INSERT INTO flexus_audit (seq, at, event, person, surface, tool, action_id, detail_json, prev_hash,
    hash, key_id)
  SELECT seq + 1, :n::float8, 'confirmed', 'bench', 'bench', 'flexus_update_server', 'pgb' || :n::text,
         '{"arguments":{"description":"pgbench"}}', hash, md5(:n::text) || md5(seq::text), 'k1'
  FROM flexus_audit_head WHERE id = 1)
UPDATE flexus_audit_head SET seq = seq + 1, hash = md5(:n::text) || md5(seq::text) WHERE id = 1;
COMMIT;
BEGIN;
UPDATE flexus_actions SET state = 'succeeded', updated_at = :n, secret = NULL, result_json = '{}', lease_until = NULL
  FROM (SELECT id, state FROM flexus_actions WHERE id = 'pgb' || :n::text FOR UPDATE) AS was
  WHERE flexus_actions.id = was.id AND flexus_actions.state IN ('executing', 'submitted')
    AND flexus_actions.owner = 'pgbench' RETURNING flexus_actions.tool, was.state;
SELECT seq, hash FROM flexus_audit_head WHERE id = 1 FOR UPDATE;
SELECT seq, key_id, event FROM flexus_audit WHERE seq IN (SELECT seq FROM flexus_audit_head WHERE id = 1);
WITH appended AS (INSERT INTO flexus_audit (seq, at, event, person, surface, tool, action_id, detail_json, prev_hash,
    hash, key_id)
  SELECT seq + 1, :n::float8, 'executed', 'bench', 'bench', 'flexus_update_server', 'pgb' || :n::text,
         '{"arguments":{"description":"pgbench"}}', hash, md5(:n::text) || md5(seq::text), 'k1'
  FROM flexus_audit_head WHERE id = 1)
UPDATE flexus_audit_head SET seq = seq + 1, hash = md5(:n::text) || md5(seq::text) WHERE id = 1;
COMMIT;
"""


def pgbench_ceiling(url: str, seconds: int) -> dict[str, Any] | str:
    """Transitions/s PostgreSQL itself sustains for a cycle's statements with WORKERS clients (pgbench,
    prepared statements, in a fresh schema migrated by the store): the ceiling no client beats."""
    import subprocess

    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from flexus_ops.gate.secrets import Keys
    from flexus_ops.gate.store import Store

    pgbench = shutil.which("pgbench")
    if pgbench is None:
        return "skipped: pgbench is not installed"
    schema_url, admin, schema = _postgres_schema(url)
    state_dir = tempfile.mkdtemp(prefix="flexus-bench-pgbench-")
    try:
        Store(schema_url, Keys.load(Path(state_dir)).audit).dispose()  # the store's own schema
        script = Path(state_dir) / "transition.sql"
        script.write_text(PGBENCH_CYCLE)
        parsed = make_url(url)
        env = {**env_without_secrets(), "PGOPTIONS": f"-csearch_path={schema}"}
        if parsed.password:
            env["PGPASSWORD"] = parsed.password
        command = [
            pgbench,
            "-n",
            "-M",
            "prepared",
            "-c",
            str(WORKERS),
            "-j",
            "2",
            "-T",
            str(seconds),
            "-f",
            str(script),
        ]
        command += [
            "-h",
            parsed.host or "127.0.0.1",
            "-p",
            str(parsed.port or 5432),
            "-U",
            parsed.username or "postgres",
        ]
        command += [parsed.database or "postgres"]
        # PostgreSQL's own CPU for these statements: its backends serving pgbench, read from /proc over a
        # window inside the run (they exist only while pgbench is connected).
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        backend_cpu = _backend_cpu_window(admin, process, seconds)
        stdout, stderr = process.communicate(timeout=seconds + 60)
        done = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
        if done.returncode != 0:
            return f"pgbench failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}"
        tps = [line for line in done.stdout.splitlines() if line.startswith("tps")]
        cycles = float(tps[0].split("=")[1].split()[0]) if tps else float("nan")  # one pgbench transaction: a cycle
        latency = [line for line in done.stdout.splitlines() if line.startswith("latency average")]
        backend_ms = (
            backend_cpu["cpu_seconds"] / (cycles * backend_cpu["seconds"] * TRANSITIONS_PER_CYCLE) * 1000
            if backend_cpu is not None and cycles == cycles and cycles > 0
            else None
        )
        return {
            "backend_cpu_ms_per_transition": backend_ms,
            "backend_cpu_window": backend_cpu,
            "cycles_per_second": cycles,
            # Each of a cycle's three commits waits for the WAL flush while it holds the audit head's lock,
            # so the chain takes one commit at a time: the flush time bounds the rate.
            "cycle_latency_ms": float(latency[0].split("=")[1].split()[0]) if latency else float("nan"),
            "transitions_per_second": cycles * TRANSITIONS_PER_CYCLE,
            "clients": WORKERS,
            "seconds": seconds,
            "output": done.stdout,
        }
    finally:
        with admin.begin() as db:
            db.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
        shutil.rmtree(state_dir, ignore_errors=True)


def _backend_cpu_window(admin: Any, process: Any, seconds: int) -> dict[str, float] | None:
    """CPU seconds the PostgreSQL backends serving pgbench used over a window from 1 s into the run to 1 s
    before its end, and that window's length; None where /proc or pg_stat_activity cannot tell."""
    from sqlalchemy import text

    if seconds < 3:
        return None
    time.sleep(1)
    with admin.connect() as db:
        rows = db.execute(text("SELECT pid FROM pg_stat_activity WHERE application_name = 'pgbench'"))
        pids = [int(row[0]) for row in rows]
    if not pids or process.poll() is not None:
        return None
    started, before = time.monotonic(), sum(proc_cpu_seconds(pid) for pid in pids)
    time.sleep(seconds - 2)
    used, window = sum(proc_cpu_seconds(pid) for pid in pids) - before, time.monotonic() - started
    return {"cpu_seconds": used, "seconds": window, "backends": len(pids)} if used == used else None


def postgres_url() -> str:
    return os.environ.get("FLEXUS_BENCH_POSTGRES_URL") or os.environ.get("FLEXUS_TEST_POSTGRES_URL") or DEFAULT_POSTGRES


def _postgres_schema(url: str) -> tuple[str, Any, str]:
    """A fresh schema for this run, so the benchmark never touches anyone's tables."""
    from sqlalchemy import create_engine, text

    admin = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    schema = f"flexus_bench_{uuid.uuid4().hex[:12]}"
    with admin.begin() as db:
        db.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-csearch_path%3D{schema}", admin, schema


def run(ctx: RunContext, result: CaseResult) -> None:
    cycles = ctx.pick(150, 10)
    race = ctx.pick(50, 5)
    result.setup = {
        "workers": f"{WORKERS} OS processes (spawned), one shared store, shared keys, each its own embedded sandbox",
        "cycle": "flexus_update_server preview, then confirm by token and execute, via Registry.call",
        "transitions": f"{TRANSITIONS_PER_CYCLE} per cycle (preview, confirm, execute), each a store write + audit",
        "cycles_per_worker": cycles,
        "race_actions": race,
    }
    backends: dict[str, str | None] = {}
    with tempfile.TemporaryDirectory(prefix="flexus-bench-sqlite-") as tmp:
        ctx.log("store: SQLite")
        sqlite = measure(f"sqlite:///{tmp}/store.db", cycles, race)
    result.data["sqlite"] = sqlite
    backends["sqlite"] = None
    pg_url = postgres_url()
    try:
        schema_url, admin, schema = _postgres_schema(pg_url)
    except Exception as exc:
        postgres = None
        backends["postgresql"] = f"skipped: no PostgreSQL reachable at {pg_url} ({type(exc).__name__})"
    else:
        from sqlalchemy import text

        try:
            ctx.log("store: PostgreSQL")
            postgres = measure(schema_url, cycles, race)
        finally:
            with admin.begin() as db:
                db.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
        result.data["postgresql"] = postgres
        backends["postgresql"] = None
        ctx.log("store: pgbench, the same statements")
        ceiling = pgbench_ceiling(pg_url, ctx.pick(10, 2))
        result.data["pgbench"] = ceiling
        result.figure(
            f"PostgreSQL's own ceiling for a cycle's statements (pgbench, {WORKERS} clients, prepared)",
            f"{ceiling['transitions_per_second']:.0f} transitions/s ({ceiling['cycles_per_second']:.0f} cycles/s, "
            f"{ceiling['cycle_latency_ms']:.1f} ms a cycle)"
            if isinstance(ceiling, dict)
            else ceiling,
        )
        if isinstance(ceiling, dict) and ceiling.get("backend_cpu_ms_per_transition") and postgres is not None:
            # The floor for the goal: PostgreSQL's own CPU for these statements, at the goal's rate, leaves the
            # rest of the machine's cores to the workers; divided by the rate, the CPU a transition may cost them.
            pg_ms = ceiling["backend_cpu_ms_per_transition"]
            cores = postgres["cpus"] or 1
            budget_ms = (cores * 1000 - GOAL_PER_SECOND * pg_ms) / GOAL_PER_SECOND
            ours_ms = postgres["cpu_seconds_per_cycle"] / TRANSITIONS_PER_CYCLE * 1000
            result.data["worker_cpu_budget_ms_at_goal"] = budget_ms
            result.figure(
                f"PostgreSQL's own CPU per transition (its backends under pgbench) and what {GOAL_PER_SECOND}/s "
                f"leaves the workers on {cores} cores",
                f"{pg_ms:.2f} ms; {budget_ms:.2f} ms of worker CPU per transition (ours: {ours_ms:.2f} ms)",
            )
    result.data["backends"] = backends
    for name, data in (("SQLite", sqlite), ("PostgreSQL", postgres)):
        if data is None:
            result.figure(f"{name}", str(backends["postgresql"]))
            continue
        result.figure(
            f"{name}: transitions/s ({WORKERS} workers)",
            f"{data['transitions_per_second']:.0f}/s = {data['cycles_per_second']:.0f} cycles/s "
            f"({data['cycles_per_worker'] * WORKERS} cycles in {data['elapsed_seconds']:.2f} s)",
        )
        result.figure(f"{name}: one cycle, per worker", fmt_spread(summary(data["cycle_seconds"])))
        per_cycle = data["cpu_seconds_per_cycle"]
        cap = (data["cpus"] or 1) / per_cycle * TRANSITIONS_PER_CYCLE
        result.figure(
            f"{name}: worker CPU per cycle",
            f"{fmt_seconds(per_cycle)} (so {data['cpus']} cores cap this at ~{cap:.0f} transitions/s)",
        )
        split = data["cpu_split_per_cycle"]
        result.figure(
            f"{name}: worker CPU per transition, by layer",
            f"store {fmt_seconds(split['store'] / TRANSITIONS_PER_CYCLE)}, "
            f"registry + gate + cloud client {fmt_seconds(split['registry_gate_client'] / TRANSITIONS_PER_CYCLE)}, "
            f"embedded sandbox {fmt_seconds(split['sandbox'] / TRANSITIONS_PER_CYCLE)} "
            f"(without the sandbox: {fmt_seconds((per_cycle - split['sandbox']) / TRANSITIONS_PER_CYCLE)})",
        )
        result.figure(
            f"{name}: SQL statements per cycle",
            f"{data['sql_statements_per_cycle']:.1f} in {data['store_calls_per_cycle']:.1f} store calls",
        )
        holds, waits = data["head_lock_hold_seconds"], data["head_lock_wait_seconds"]
        if holds and waits:
            # Appends take the audit head one at a time: mean hold x appends per second is the share of the
            # time it is held (near 1, the lock and not the cores sets the rate).
            held = sum(holds) / len(holds) * data["transitions_per_second"]
            result.data.setdefault("head_lock_held_share", {})[name] = held
            result.figure(
                f"{name}: the audit head, per append: wait for it p50 / mean; held (granted to the commit's end) "
                "p50 / mean; share of the time it is held",
                f"{fmt_seconds(summary(waits)['median'])} / {fmt_seconds(sum(waits) / len(waits))}; "
                f"{fmt_seconds(summary(holds)['median'])} / {fmt_seconds(sum(holds) / len(holds))}; {held:.0%}",
            )
        race_data = data["race"]
        result.figure(
            f"{name}: race of {WORKERS} workers on {race_data['actions']} tokens",
            f"{race_data['wins']} won, {race_data['refused']} refused",
        )
    if postgres is None:
        result.goal(f">= {GOAL_PER_SECOND}/s on PostgreSQL", str(backends["postgresql"]), None)
    else:
        rate = postgres["transitions_per_second"]
        result.goal(
            f">= {GOAL_PER_SECOND} transitions/s on PostgreSQL",
            f"{rate:.0f}/s ({postgres['cycles_per_second']:.0f} cycles/s); "
            f"SQLite {sqlite['transitions_per_second']:.0f}/s",
            rate >= GOAL_PER_SECOND,
        )
    checks = {
        f"{name}.{key}": ok
        for name, data in (("sqlite", sqlite), ("postgresql", postgres))
        if data
        for key, ok in data["exactly_once"].items()
    }
    failed = [key for key, ok in checks.items() if not ok]
    result.goal(
        "exactly-once intact",
        f"all {len(checks)} checks hold" if not failed else "FAILED: " + ", ".join(failed),
        not failed,
    )


CASE = Case("store", "preview-confirm-execute through the gate, 4 workers, SQLite and PostgreSQL", run)
