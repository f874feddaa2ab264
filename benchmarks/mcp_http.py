"""mcp_http: MCP over streamable HTTP under sustained load, as a team deploys it. Two replicas of
``flexus-ops mcp --transport http`` (own processes) share one PostgreSQL store (a fresh schema per run)
and read one ``flexus-ops sim`` fleet; the policy names 20 people, each with a bearer token made the way
``flexus-ops token new`` makes one (its ``mcp-token:`` principal in the policy). 20 clients, each with its
own token and the official ``mcp`` client (streamable HTTP), loop over a mix of ``flexus_list_servers``,
``flexus_show_server`` and previews of gated changes (reboot, stop; previews only, never confirmed),
every call to the replica after the one before, as a load balancer without sticky sessions would spread
them. A warm-up comes first and is not counted; then the calls of the measured window are.

The baseline, in the same run: a bare ``MCPServer`` with one no-op tool over streamable HTTP
(``floor_http_server.py``, stateless with SSE responses like ours, no auth), also two processes, driven
by the same load generator for the same time. It is what the SDK and its HTTP stack cost per call.

The load generator is two processes (10 clients each) on the same machine: its CPU is measured and
reported, as are the replicas', the sim's and (where /proc shows them) the PostgreSQL backends serving
the replicas. Resident memory of each replica is sampled every second.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import os
import random
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .harness import (
    BENCH_DIR,
    Case,
    CaseResult,
    RunContext,
    Skip,
    env_without_secrets,
    fmt_ratio,
    fmt_seconds,
    proc_cpu_seconds,
    ratio,
    summary,
    wait_answering,
)
from .sim import free_port, running_sim
from .store import _postgres_schema, postgres_url

CLIENTS = 20  # --quick: 4, in one generator process (the smoke run checks the report's shape, not figures)
REPLICAS = 2
GENERATORS = 2  # load generator processes; CLIENTS are split between them
SERVERS = 300  # --quick: 30
GOAL_THROUGHPUT = 0.5  # ours / the bare MCPServer no-op, calls per second (#15)
GOAL_RSS_GROWTH = 0.05  # resident memory growth after warm-up (#15)
RSS_EDGE_SAMPLES = 5  # RSS is compared as the mean of this many samples at each end of the window
EXIT_SIGTERM = 143  # a replica that drained and stopped cleanly on SIGTERM
APPLICATION_NAME = "flexus_bench_mcp_http"  # so the PostgreSQL backends serving the replicas can be found
# The mix each client loops over: reads, and previews of gated changes (never confirmed).
MIX = ("list", "show", "list", "show", "preview_reboot", "preview_stop")


# -- processes ------------------------------------------------------------------------------------


def proc_rss_bytes(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return math.nan


@dataclass
class Replicas:
    urls: list[str]  # each replica's MCP endpoint
    processes: list[subprocess.Popen[bytes]]
    logs: list[Path]

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]


@contextmanager
def _replicas(
    commands: list[list[str]], envs: list[dict[str, str]], ready_path: str, tmp: Path, what: str
) -> Iterator[Replicas]:
    processes: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    urls: list[str] = []
    try:
        ports = []
        for index, (command, env) in enumerate(zip(commands, envs, strict=True)):
            ports.append(free_port())
            logs.append(tmp / f"{what}-{index}.log")
            with logs[-1].open("wb") as sink:
                processes.append(
                    subprocess.Popen([*command, str(ports[-1])], stdout=sink, stderr=subprocess.STDOUT, env=env)
                )
        # Started together, waited for in turn: the start-ups overlap.
        for index, port in enumerate(ports):
            # Any status: the floor has no health route. A POST, since a GET of an MCP endpoint opens an event
            # stream that never ends.
            url = f"http://127.0.0.1:{port}{ready_path}"
            wait_answering(
                processes[index],
                logs[index],
                f"{what} {index}",
                lambda url=url: httpx.post(url, json={}, timeout=2).status_code > 0,
                timeout=90,
            )
            urls.append(f"http://127.0.0.1:{port}/mcp")
        yield Replicas(urls, processes, logs)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


# -- the load generator (runs in its own processes) ------------------------------------------------


def generator_processes(clients: int) -> int:
    """10 clients a process, at most GENERATORS: one asyncio loop for all 20 would be the bottleneck."""
    return min(GENERATORS, max(1, clients // 10))


@dataclass
class Plan:
    """What one generator process does: its clients (token each), the replicas, the work, the clock."""

    generator: int
    tokens: list[str]
    urls: list[str]
    workload: str  # "mix" (ours) or "noop" (the floor)
    server_ids: list[str]
    preview_ids: list[str]
    warmup: float
    duration: float


def _call_args(op: str, rng: random.Random, plan: Plan) -> tuple[str, dict[str, Any]]:
    if op == "list":
        return "flexus_list_servers", {"page": rng.randint(1, max(1, len(plan.server_ids) // 50))}
    if op == "show":
        return "flexus_show_server", {"server": rng.choice(plan.server_ids)}
    if op == "preview_reboot":
        return "flexus_reboot_servers", {"servers": [rng.choice(plan.preview_ids)]}
    if op == "preview_stop":
        return "flexus_stop_servers", {"servers": [rng.choice(plan.preview_ids)]}
    return "ping", {"x": 1}


def _problem(op: str, result: Any) -> str | None:
    """Why a call's answer is wrong for what was asked, or None when it is right."""
    if result.is_error:
        text = "".join(getattr(block, "text", "") for block in result.content)
        return f"{op}: tool error: {text[:300]}"
    data = result.structured_content or {}
    if op.startswith("preview") and not (data.get("preview") or {}).get("confirmation_token"):
        return f"{op}: no preview with a confirmation token: {str(data)[:300]}"
    if op == "list" and "servers" not in data:
        return f"{op}: no servers in the answer: {str(data)[:300]}"
    if op == "show" and not data.get("id") and not (data.get("server") or {}).get("id"):
        return f"{op}: no server in the answer: {str(data)[:300]}"
    return None


async def _generate(plan: Plan, ready: Any, go: Any) -> dict[str, Any]:
    """Connect every client, say ready, wait for the start time, run the warm-up and the window."""
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    calls: list[tuple[str, float, float]] = []  # (op, start relative to the window, seconds)
    errors: list[tuple[float, str]] = []  # (when, relative to the window; what)
    async with AsyncExitStack() as stack:
        sessions: list[list[Any]] = []
        for token in plan.tokens:
            per_replica = []
            for url in plan.urls:
                http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60)
                await stack.enter_async_context(http)
                client = Client(streamable_http_client(url, http_client=http))
                per_replica.append(await stack.enter_async_context(client))
            sessions.append(per_replica)
        ready.put(plan.generator)
        start_at = await asyncio.to_thread(go.get, True, 300)
        window_start = start_at + plan.warmup
        window_end = window_start + plan.duration

        async def worker(index: int, clients: list[Any]) -> None:
            rng = random.Random(plan.generator * 1000 + index)
            turn = index  # spread the first calls over both replicas
            await asyncio.sleep(max(0.0, start_at - time.time()))
            while time.time() < window_end:
                op = "noop" if plan.workload == "noop" else MIX[rng.randrange(len(MIX))]
                name, arguments = _call_args(op, rng, plan)
                client = clients[turn % len(clients)]
                turn += 1
                began = time.time()
                t0 = time.perf_counter()
                try:
                    problem = _problem(op, await client.call_tool(name, arguments))
                except Exception as exc:  # a transport failure is an error of the run, recorded, not raised
                    problem = f"{op}: {type(exc).__name__}: {str(exc)[:300]}"
                seconds = time.perf_counter() - t0
                if problem is not None:
                    errors.append((began - window_start, problem))
                elif began >= window_start and began + seconds <= window_end:
                    calls.append((op, began - window_start, seconds))

        await asyncio.gather(*(worker(i, clients) for i, clients in enumerate(sessions)))
    return {"generator": plan.generator, "calls": calls, "errors": errors}


def _generator_main(plan: Plan, ready: Any, go: Any, out: Any) -> None:
    """A generator process's body (top-level, so the spawn start method can import it)."""
    try:
        out.put(("ok", asyncio.run(_generate(plan, ready, go))))
    except BaseException as exc:
        out.put(("error", f"generator {plan.generator}: {type(exc).__name__}: {exc}"))


# -- one side: run the load, watch the processes ----------------------------------------------------


@dataclass
class Side:
    calls: list[tuple[str, float, float]] = field(default_factory=list)
    errors: list[tuple[float, str]] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds within the window, per role
    rss: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # replica -> (t, bytes)
    duration: float = 0.0


def _drive(
    ctx: RunContext,
    replicas: Replicas,
    tokens: list[str],
    workload: str,
    server_ids: list[str],
    preview_ids: list[str],
    warmup: float,
    duration: float,
    watched: dict[str, list[int]],
    postgres_pids: Any = None,
) -> Side:
    mp = multiprocessing.get_context("spawn")
    ready, out = mp.Queue(), mp.Queue()
    generators = generator_processes(len(tokens))
    gos = [mp.Queue() for _ in range(generators)]
    processes = []
    for generator in range(generators):
        plan = Plan(
            generator=generator,
            tokens=tokens[generator::generators],
            urls=replicas.urls,
            workload=workload,
            server_ids=server_ids,
            preview_ids=preview_ids,
            warmup=warmup,
            duration=duration,
        )
        process = mp.Process(target=_generator_main, args=(plan, ready, gos[generator], out))
        process.start()
        processes.append(process)
    try:
        for _ in processes:
            ready.get(timeout=300)
        ctx.log("mcp_http: every client connected; load starts")
        start_at = time.time() + 0.5
        for go in gos:
            go.put(start_at)
        roles = {**watched, "load generator": [p.pid for p in processes if p.pid is not None]}
        side = Side(duration=duration)
        side.rss = {f"replica {index}": [] for index in range(len(replicas.pids))}
        stop = threading.Event()

        def sample_rss() -> None:
            while not stop.is_set():
                now = time.time() - start_at - warmup
                for index, pid in enumerate(replicas.pids):
                    side.rss[f"replica {index}"].append((now, proc_rss_bytes(pid)))
                stop.wait(1.0)

        sampler = threading.Thread(target=sample_rss, daemon=True)
        sampler.start()
        time.sleep(max(0.0, start_at + warmup - time.time()))
        pg = postgres_pids() if postgres_pids else []
        before = {role: [proc_cpu_seconds(pid) for pid in pids] for role, pids in roles.items()}
        before_pg = {pid: proc_cpu_seconds(pid) for pid in pg}
        time.sleep(max(0.0, start_at + warmup + duration - time.time()))
        after = {role: [proc_cpu_seconds(pid) for pid in pids] for role, pids in roles.items()}
        for role in roles:
            side.cpu[role] = sum(b - a for a, b in zip(before[role], after[role], strict=True))
        if postgres_pids:
            # Backends that came and went within the window are missed; the replicas' pools keep theirs.
            side.cpu["postgresql backends"] = sum(proc_cpu_seconds(pid) - cpu for pid, cpu in before_pg.items())
        outcomes = [out.get(timeout=120) for _ in processes]
        stop.set()
        sampler.join(timeout=5)
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
    failures = [detail for status, detail in outcomes if status == "error"]
    if failures:
        raise RuntimeError("; ".join(failures))
    for _, detail in outcomes:
        side.calls.extend(detail["calls"])
        side.errors.extend(detail["errors"])
    return side


# -- the case ---------------------------------------------------------------------------------------


def _policy(tokens: list[str]) -> str:
    from flexus_ops.gate.policy import token_principal

    people = []
    for index, token in enumerate(tokens):
        people.append(
            f'[[people]]\nid = "bench-{index:02d}"\nroles = ["operator"]\nprincipals = ["{token_principal(token)}"]\n'
        )
    return "\n".join(people)


def _postgres_backend_pids(admin: Any) -> Any:
    from sqlalchemy import text

    def pids() -> list[int]:
        with admin.connect() as db:
            rows = db.execute(
                text("SELECT pid FROM pg_stat_activity WHERE application_name = :name"), {"name": APPLICATION_NAME}
            )
            return [int(row[0]) for row in rows]

    return pids


def _per_second(calls: list[tuple[str, float, float]], duration: float) -> list[int]:
    """How many calls started in each second of the measured window."""
    counts = [0] * max(1, math.ceil(duration))
    for _op, started, _seconds in calls:
        counts[min(len(counts) - 1, max(0, int(started)))] += 1
    return counts


def _rss_growth(samples: list[tuple[float, float]], duration: float) -> tuple[float, float, float]:
    """(RSS at the start of the window, at its end, growth as a fraction), each end a mean of a few samples."""
    inside = [rss for t, rss in samples if 0 <= t <= duration and not math.isnan(rss)]
    if len(inside) < 2:
        return math.nan, math.nan, math.nan
    edge = max(1, min(RSS_EDGE_SAMPLES, len(inside) // 2))
    first = sum(inside[:edge]) / edge
    last = sum(inside[-edge:]) / edge
    return first, last, ratio(last - first, first)


def _log_problems(logs: list[Path]) -> list[str]:
    """Lines of the replicas' logs that say something went wrong (warnings and worse, tracebacks)."""
    found = []
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            if any(word in line for word in ("Traceback", "ERROR", "WARNING", "CRITICAL", "Exception")):
                found.append(f"{log.stem}: {line[:300]}")
    return found


def run(ctx: RunContext, result: CaseResult) -> None:
    from sqlalchemy import text

    warmup = float(ctx.pick(15, 1))
    duration = float(ctx.pick(120, 3))
    pg_url = postgres_url()
    try:
        schema_url, admin, schema = _postgres_schema(pg_url)
    except Exception as exc:
        raise Skip(f"no PostgreSQL reachable at {pg_url} ({type(exc).__name__})") from None
    tmp = Path(tempfile.mkdtemp(prefix="flexus-bench-mcphttp-"))
    try:
        _measure(ctx, result, tmp, f"{schema_url}&application_name={APPLICATION_NAME}", admin, warmup, duration)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        with admin.begin() as db:
            db.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _measure(
    ctx: RunContext, result: CaseResult, tmp: Path, store_url: str, admin: Any, warmup: float, duration: float
) -> None:
    # Bearer tokens made as `flexus-ops token new` makes them; the policy holds their principals (hashes).
    clients = ctx.pick(CLIENTS, 4)
    servers = ctx.pick(SERVERS, 30)
    tokens = ["fxt_" + secrets.token_urlsafe(32) for _ in range(clients)]
    (tmp / "policy.toml").write_text(_policy(tokens))
    base_env = env_without_secrets()
    shared_keys = {
        name: secrets.token_urlsafe(32)
        for name in ("FLEXUS_TOKEN_KEY", "FLEXUS_ENCRYPTION_KEY", "FLEXUS_MCP_STATE_KEY", "FLEXUS_AUDIT_KEY")
    }
    result.setup = {
        "ours": f"{REPLICAS} x flexus-ops mcp --transport http (own processes, stateless, SSE), one PostgreSQL "
        f"store (fresh schema), policy with {clients} people, a bearer token each (mcp-token: principals), "
        "log level info",
        "baseline": f"{REPLICAS} x bare MCPServer with one no-op tool over streamable HTTP "
        "(benchmarks/floor_http_server.py: stateless, SSE, no auth, no store), same load generator",
        "cloud": f"flexus-ops sim (own process), {servers} servers, no added latency",
        "clients": f"{clients} official mcp clients (streamable HTTP, default mode), own token each, "
        f"in {generator_processes(clients)} generator process(es) on the same machine; each call goes to the "
        "replica after the previous call's (no sticky sessions); closed loop, no think time",
        "mix": "flexus_list_servers (a random page of 50) 1/3, flexus_show_server (a random server) 1/3, "
        "previews of flexus_reboot_servers 1/6 and flexus_stop_servers 1/6 (one server, never confirmed)",
        "warm_up_seconds": warmup,
        "measured_seconds": duration,
        "cores": os.cpu_count(),
        "rss": "each replica's VmRSS every 1 s; growth = mean of the last 5 samples over the first 5 of the window",
    }
    with running_sim(ctx, servers=servers) as sim:
        server_ids, preview_ids = asyncio.run(_fleet(sim))
        env = {
            **base_env,
            **sim.env(),
            **shared_keys,
            "FLEXUS_STORE_URL": store_url,
            "FLEXUS_POLICY": str(tmp / "policy.toml"),
        }
        commands = [
            [ctx.flexus_ops, "mcp", "--transport", "http", "--host", "127.0.0.1", "--port"] for _ in range(REPLICAS)
        ]
        envs = [{**env, "FLEXUS_STATE_DIR": str(tmp / f"state{index}")} for index in range(REPLICAS)]
        with _replicas(commands, envs, "/readyz", tmp, "replica") as ours_replicas:
            ctx.log(f"mcp_http: ours, {clients} clients, {warmup:g} s warm-up + {duration:g} s")
            ours = _drive(
                ctx,
                ours_replicas,
                tokens,
                "mix",
                server_ids,
                preview_ids,
                warmup,
                duration,
                {"replicas": ours_replicas.pids, "sim": [sim.process.pid]},
                _postgres_backend_pids(admin),
            )
            alive = [process.poll() is None for process in ours_replicas.processes]
    # After they stopped (SIGTERM: drain, sign the audit checkpoint, exit 143), so shutdown trouble shows too.
    log_problems = _log_problems(ours_replicas.logs)
    exit_codes = [process.returncode for process in ours_replicas.processes]
    audit = _audit_verify(ctx, tmp, {**base_env, **shared_keys, "FLEXUS_STORE_URL": store_url})
    floor_commands = [[ctx.python, str(BENCH_DIR / "floor_http_server.py")] for _ in range(REPLICAS)]
    with _replicas(floor_commands, [base_env] * REPLICAS, "/mcp", tmp, "floor") as floor_replicas:
        ctx.log(f"mcp_http: bare MCPServer no-op, {clients} clients, {warmup:g} s warm-up + {duration:g} s")
        floor = _drive(
            ctx,
            floor_replicas,
            tokens,
            "noop",
            server_ids,
            preview_ids,
            warmup,
            duration,
            {"replicas": floor_replicas.pids},
        )
    _report(result, ours, floor, log_problems, alive, exit_codes, audit)


def _audit_verify(ctx: RunContext, tmp: Path, env: dict[str, str]) -> dict[str, Any]:
    """``flexus-ops audit verify`` over the shared store and both replicas' checkpoint files, after they
    stopped (each signs a last checkpoint on the way out): every preview was an audit append from one of two
    processes at once, and the chain must still verify."""
    import json

    from flexus_ops.gate.policy import os_principal

    policy = tmp / "verify-policy.toml"
    policy.write_text(f'[[people]]\nid = "auditor"\nroles = ["viewer"]\nprincipals = ["{os_principal()}"]\n')
    files = [str(path) for path in sorted(tmp.glob("state*/audit-checkpoints.jsonl"))]
    command = [ctx.flexus_ops, "audit", "verify", "--output", "json", "--checkpoints", *files]
    verify_env = {**env, "FLEXUS_STATE_DIR": str(tmp / "verify"), "FLEXUS_POLICY": str(policy)}
    done = subprocess.run(command, env=verify_env, capture_output=True, text=True, timeout=300, check=False)
    out: dict[str, Any] = {"exit_code": done.returncode, "checkpoint_files": len(files)}
    try:
        report = json.loads(done.stdout)
        out |= {"records": report.get("records"), "checkpoints": report.get("checkpoints_checked")}
        out["problems"] = report.get("problems", []) + report.get("unverifiable", [])
    except ValueError:
        out["output"] = (done.stdout + done.stderr)[-2000:]
    out.setdefault("output", done.stderr[-2000:])
    return out


async def _fleet(sim: Any) -> tuple[list[str], list[str]]:
    """Every server's id (for show), and those a preview acts on (ACTIVE, not locked or frozen)."""
    async with sim.client() as client:
        servers = await client.list_all_servers()
    usable = [s.id for s in servers if s.status == "ACTIVE" and not (s.task_state or s.locked or s.frozen)]
    return [s.id for s in servers], usable


def _report(
    result: CaseResult,
    ours: Side,
    floor: Side,
    log_problems: list[str],
    alive: list[bool],
    exit_codes: list[int],
    audit: dict[str, Any],
) -> None:
    sides = {"ours": ours, "baseline": floor}
    data: dict[str, Any] = {}
    for label, side in sides.items():
        latencies = [seconds for _, _, seconds in side.calls]
        per_second = len(latencies) / side.duration
        replica_cpu = side.cpu.get("replicas", math.nan)
        server_cpu = sum(side.cpu.get(role, 0.0) for role in ("replicas", "sim", "postgresql backends"))
        by_op: dict[str, list[float]] = {}
        for op, _, seconds in side.calls:
            by_op.setdefault(op, []).append(seconds)
        rss = {name: _rss_growth(samples, side.duration) for name, samples in side.rss.items()}
        data[label] = {
            "calls": len(latencies),
            "calls_per_second": per_second,
            "calls_per_replica_cpu_second": ratio(len(latencies), replica_cpu),
            "calls_per_server_side_cpu_second": ratio(len(latencies), server_cpu),
            "latency": summary(latencies),
            "latency_by_op": {op: summary(values) for op, values in by_op.items()},
            "cpu_seconds_in_window": side.cpu,
            "errors": len(side.errors),
            "error_samples": [f"{when:+.1f} s: {what}" for when, what in side.errors[:20]],
            "rss_start_end_growth": {name: list(values) for name, values in rss.items()},
            "rss_samples": side.rss,
            # Not every call: a 2-minute run makes ~90,000 of them (10 MB of JSON); the summaries above and the
            # calls per second of the window say what they said.
            "calls_per_second_of_window": _per_second(side.calls, side.duration),
        }
    data["ours"]["replica_log_problems"] = log_problems[:50]
    data["ours"]["replicas_alive_at_end"] = alive
    data["ours"]["replica_exit_codes_on_sigterm"] = exit_codes
    data["ours"]["audit_verify"] = audit
    result.data = data
    o, f = data["ours"], data["baseline"]
    throughput = ratio(o["calls_per_second"], f["calls_per_second"])
    data["throughput_ratio"] = throughput
    window = ours.duration

    def cores(side: Side, role: str) -> str:
        return f"{side.cpu.get(role, math.nan) / window:.2f}"

    result.figure(
        "calls/s, ours / bare MCPServer no-op",
        f"{o['calls_per_second']:.0f} / {f['calls_per_second']:.0f} ({fmt_ratio(throughput)}; "
        f"{o['calls']} / {f['calls']} calls in {window:g} s)",
    )
    result.figure(
        "calls per second per core of the replicas, ours / bare no-op",
        f"{o['calls_per_replica_cpu_second']:.0f} / {f['calls_per_replica_cpu_second']:.0f} "
        f"(ours with the sim and PostgreSQL backends counted too: {o['calls_per_server_side_cpu_second']:.0f})",
    )
    result.figure(
        "p50 / p99 latency, ours (all calls)",
        f"{fmt_seconds(o['latency'].get('median', math.nan))} / {fmt_seconds(o['latency'].get('p99', math.nan))}",
    )
    for op, stats in sorted(o["latency_by_op"].items()):
        result.figure(
            f"p50 / p99 latency, ours, {op}",
            f"{fmt_seconds(stats['median'])} / {fmt_seconds(stats['p99'])} (n={stats['n']})",
        )
    result.figure(
        "p50 / p99 latency, bare no-op",
        f"{fmt_seconds(f['latency'].get('median', math.nan))} / {fmt_seconds(f['latency'].get('p99', math.nan))}",
    )
    result.figure(
        "cores busy in the window (CPU s / s), ours: replicas / sim / PostgreSQL backends / load generator",
        f"{cores(ours, 'replicas')} / {cores(ours, 'sim')} / {cores(ours, 'postgresql backends')} / "
        f"{cores(ours, 'load generator')}",
    )
    result.figure(
        "cores busy in the window, bare no-op: replicas / load generator",
        f"{cores(floor, 'replicas')} / {cores(floor, 'load generator')}",
    )
    growths = []
    for name, (first, last, growth) in sorted(o["rss_start_end_growth"].items()):
        growths.append(growth)
        result.figure(
            f"RSS of ours, {name}: start / end of the window",
            f"{first / 2**20:.1f} MiB / {last / 2**20:.1f} MiB ({growth * 100:+.1f}%)",
        )
    result.figure("errors, ours / bare no-op", f"{o['errors']} / {f['errors']}")
    # The floor of the ratio on these cores: with every core busy, calls/s is cores / CPU per call. Were our
    # replicas to cost per call only what the bare server's do, the sim's, PostgreSQL's and the load
    # generator's CPU per call would remain on the same cores: no replica code could beat this ratio.
    per_call = {
        (label, role): side.cpu.get(role, math.nan) / max(1, data[label]["calls"])
        for label, side in (("ours", ours), ("baseline", floor))
        for role in ("replicas", "sim", "postgresql backends", "load generator")
    }
    bare_call = per_call["baseline", "replicas"] + per_call["baseline", "load generator"]
    rest_of_ours = sum(per_call["ours", role] for role in ("sim", "postgresql backends", "load generator"))
    ceiling = ratio(bare_call, per_call["baseline", "replicas"] + rest_of_ours)
    data["throughput_ceiling"] = ceiling
    result.figure(
        "CPU per call, ours: replicas / sim / PostgreSQL / load generator; bare: replicas / load generator",
        " / ".join(
            fmt_seconds(per_call["ours", role]) for role in ("replicas", "sim", "postgresql backends", "load generator")
        )
        + "; "
        + " / ".join(fmt_seconds(per_call["baseline", role]) for role in ("replicas", "load generator")),
    )
    result.figure(
        "throughput ratio ceiling when the cores are the limit (our replicas at the bare server's CPU per call)",
        f"{fmt_ratio(ceiling)} (measured {fmt_ratio(throughput)})",
    )
    result.goal(
        f"throughput >= {GOAL_THROUGHPUT}x a bare MCPServer no-op over HTTP",
        f"{fmt_ratio(throughput)} ({o['calls_per_second']:.0f} vs {f['calls_per_second']:.0f} calls/s; "
        f"p99 {fmt_seconds(o['latency'].get('p99', math.nan))} vs {fmt_seconds(f['latency'].get('p99', math.nan))})",
        throughput >= GOAL_THROUGHPUT,
    )
    crashed = [index for index, up in enumerate(alive) if not up]
    unclean = [code for code in exit_codes if code != EXIT_SIGTERM]
    measured = f"{o['errors']} errors in {o['calls'] + o['errors']} calls"
    if crashed:
        measured += f"; replica(s) {crashed} died"
    if unclean:
        measured += f"; replicas exited {exit_codes} on SIGTERM (expected {EXIT_SIGTERM})"
    if log_problems:
        measured += f"; {len(log_problems)} warning/error log line(s), first: {log_problems[0]}"
    if audit["exit_code"] != 0:
        why = "; ".join(audit.get("problems") or []) or audit["output"]
        measured += f"; audit verify exited {audit['exit_code']}: {why[-400:]}"
    else:
        measured += f"; audit chain intact ({audit.get('records')} records, {audit.get('checkpoints')} checkpoints)"
    if o["error_samples"]:
        measured += f"; first: {o['error_samples'][0]}"
    clean = o["errors"] == 0 and not crashed and not unclean and not log_problems and audit["exit_code"] == 0
    result.goal("zero errors", measured, clean)
    worst = max(growths) if growths and not any(math.isnan(g) for g in growths) else math.nan
    result.goal(
        f"resident memory growth < {GOAL_RSS_GROWTH * 100:.0f}% after warm-up",
        f"{worst * 100:+.1f}% (worst replica)",
        None if math.isnan(worst) else worst < GOAL_RSS_GROWTH,
    )


CASE = Case("mcp_http", "20 bearer-token clients on 2 MCP HTTP replicas sharing PostgreSQL vs a bare MCPServer", run)

__all__ = ["CASE"]
