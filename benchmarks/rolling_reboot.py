"""rolling_reboot: a rolling reboot of 1,000 sandbox servers in waves of 100, through the whole gate.

Preview, then one confirmation, then wave by wave: each wave re-read against the plan, recorded and
audited in the store, submitted, its job followed to the end, its servers read back at ACTIVE, before the
next wave is sent. The lower bound is what no rollout that waits for each wave can beat: per wave one job
time plus one poll interval (the job's end is seen at the next poll), so ``waves x (job + poll)``.
The sim runs in its own process (real HTTP on loopback); the store is SQLite in a temporary directory.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from .harness import Case, CaseResult, RunContext, fmt_ratio, fmt_seconds, fmt_spread, ratio, summary
from .sim import Sim, running_sim

FULL = {"fleet": 2_000, "servers": 1_000, "wave": 100, "job_seconds": 2.0, "latency_ms": 30.0, "poll": 0.25}
QUICK = {"fleet": 700, "servers": 300, "wave": 100, "job_seconds": 0.5, "latency_ms": 5.0, "poll": 0.1}


async def _rollout(sim: Sim, p: dict[str, Any], state_dir: Path) -> dict[str, Any]:
    from flexus_ops.core.plans import ChangeOutput
    from flexus_ops.core.tools import Caller
    from flexus_ops.gate.policy import Person, Policy, Role
    from flexus_ops.gate.secrets import Keys
    from flexus_ops.gate.store import Store
    from flexus_ops.registry.registry import Registry

    # A constant poll interval (max == base): the bound assumes the job's end is seen within one poll.
    settings = sim.settings(state_dir=state_dir, job_poll_seconds=p["poll"], job_poll_max_seconds=p["poll"])
    keys = Keys.load(state_dir)
    caller = Caller("os:bench", "cli")
    registry = Registry(
        settings=settings,
        client=sim.client(job_poll_seconds=p["poll"], job_poll_max_seconds=p["poll"]),
        store=Store(settings.resolved_store_url, keys.audit),
        policy=Policy(people=[Person(id="bench", roles=[Role.OPERATOR], principals=["os:bench"])]),
        keys=keys,
    )
    try:
        fleet = await registry.client.list_all_servers()
        ids = [s.id for s in fleet if s.status == "ACTIVE" and not s.locked and not s.task_state][: p["servers"]]
        if len(ids) != p["servers"]:
            raise RuntimeError(f"the sim has {len(ids)} idle ACTIVE servers, {p['servers']} needed")
        arguments = {"servers": ids, "waves": {"size": p["wave"]}}
        preview = await registry.call(caller, "flexus_reboot_servers", arguments)
        assert isinstance(preview, ChangeOutput) and preview.preview is not None
        started = time.perf_counter()
        result = await registry.confirm_action(caller, preview.preview.action_id, wait=True, wait_seconds=float("inf"))
        total = time.perf_counter() - started
        if result.status != "succeeded":
            raise RuntimeError(f"the rollout ended {result.status}: {result.message}")
        records = registry.store.audit_records()
        starts = [r.at for r in records if r.event == "wave_started"]
        ends = [r.at for r in records if r.event == "wave_finished"]
        return {
            "total": total,
            "waves": len(preview.preview.plan.waves),
            "wave_seconds": [end - start for start, end in zip(starts, ends, strict=True)],
            "between_waves_seconds": [start - end for end, start in zip(ends, starts[1:], strict=False)],
        }
    finally:
        await registry.aclose()


def run(ctx: RunContext, result: CaseResult) -> None:
    p = QUICK if ctx.quick else FULL
    reps = ctx.pick(3, 1)
    result.setup = {
        **p,
        "repetitions": reps,
        "path": "preview, one confirmation (wait), then per wave: re-read, record + audit, submit, poll the "
        "job, read back ACTIVE, record + audit",
        "lower_bound": "waves x (job_seconds + poll interval)",
        "store": "SQLite in a temporary directory",
    }
    runs: list[dict[str, Any]] = []
    for rep in range(reps):
        with (
            running_sim(ctx, servers=p["fleet"], job_seconds=p["job_seconds"], latency_ms=p["latency_ms"]) as sim,
            tempfile.TemporaryDirectory() as state,
        ):
            ctx.log(f"rolling_reboot rep {rep + 1}/{reps}")
            runs.append(asyncio.run(_rollout(sim, p, Path(state))))
    totals = [r["total"] for r in runs]
    waves = runs[0]["waves"]
    bound = waves * (p["job_seconds"] + p["poll"])
    over = ratio(statistics.median(totals), bound)
    per_wave = [x for r in runs for x in r["wave_seconds"]]
    between = [x for r in runs for x in r["between_waves_seconds"]]
    result.data = {
        "runs": runs,
        "lower_bound_seconds": bound,
        "total_seconds": summary(totals),
        "over_lower_bound": over,
    }
    result.figure(f"rolling reboot, {p['servers']} servers in {waves} waves", fmt_spread(summary(totals)))
    terms = f"{waves} x ({p['job_seconds']:g} s job + {p['poll']:g} s poll)"
    result.figure("lower bound", f"{fmt_seconds(bound)} ({terms})")
    result.figure("one wave, start to finish", fmt_spread(summary(per_wave)))
    result.figure("from a wave's end to the next wave's start", fmt_spread(summary(between)))
    result.goal("within 1.15x of the lower bound", fmt_ratio(over), over <= 1.15)


CASE = Case("rolling_reboot", "a rolling reboot of 1,000 servers in waves of 100 vs its lower bound", run)
