"""select_resolve: resolve a selection for a preview. The stop tool's plan for ``select: {name:
"api-gateway"}`` (about 1,000 of 10,000 servers: the API's fuzzy name filter, every page of its answer
read concurrently, narrowed to the prefix, a plan item per server) vs ``list_all_servers`` of the whole
fleet, on one ``flexus-ops sim`` over real HTTP, in the same run. Goal: no slower than listing the fleet.
"""

from __future__ import annotations

import asyncio
import statistics
import time

from .harness import Case, CaseResult, RunContext, fmt_ratio, fmt_spread, ratio, summary
from .sim import running_sim

FULL = {"servers": 10_000, "latency_ms": 30.0, "rate_limit": 200.0}
QUICK = {"servers": 1_000, "latency_ms": 5.0, "rate_limit": 200.0}
SELECTION = {"name": "api-gateway"}


def run(ctx: RunContext, result: CaseResult) -> None:
    from flexus_ops.core.tools import ToolContext
    from flexus_ops.registry.families.power import STOP

    p = QUICK if ctx.quick else FULL
    reps = ctx.pick(5, 1)
    result.setup = {
        "servers": p["servers"],
        "selection": SELECTION,
        "latency_ms": p["latency_ms"],
        "rate_limit_per_second": p["rate_limit"],
        "repetitions": reps,
        "sim": "one flexus-ops sim for both sides (reads change nothing); sides alternate, one warm-up call each",
    }
    args = STOP.input_model.model_validate({"select": SELECTION})
    sim_options = {"servers": p["servers"], "latency_ms": p["latency_ms"], "rate_limit": p["rate_limit"]}
    with running_sim(ctx, **sim_options) as sim, asyncio.Runner() as runner:
        client = sim.client()
        tool_ctx = ToolContext(client=client, person="bench", surface="bench")
        assert STOP.plan is not None
        plan_for = STOP.plan

        def resolve() -> int:
            return len(runner.run(plan_for(tool_ctx, args)).items)

        def list_fleet() -> int:
            return len(runner.run(client.list_all_servers()))

        matched = resolve()  # warm-up, not timed
        if list_fleet() != p["servers"] or not 0 < matched < p["servers"]:
            raise RuntimeError(f"the selection matched {matched} of {p['servers']}")
        samples: dict[str, list[float]] = {"select": [], "list_all": []}
        for rep in range(reps):
            order = [("select", resolve), ("list_all", list_fleet)]
            for name, fn in order if rep % 2 == 0 else reversed(order):
                ctx.log(f"select_resolve rep {rep + 1}/{reps}: {name}")
                started = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - started)
        runner.run(client.aclose())

    against = ratio(statistics.median(samples["select"]), statistics.median(samples["list_all"]))
    per_rep = [ratio(s, whole) for s, whole in zip(samples["select"], samples["list_all"], strict=True)]
    result.data = {
        "samples_seconds": samples,
        "matched": matched,
        "select_seconds": summary(samples["select"]),
        "list_all_seconds": summary(samples["list_all"]),
        "select_over_list_all": against,
        "per_rep": per_rep,
    }
    result.figure(f"resolve the selection ({matched:,} of {p['servers']:,})", fmt_spread(summary(samples["select"])))
    result.figure(f"list_all, {p['servers']:,} servers", fmt_spread(summary(samples["list_all"])))
    result.figure("select / list_all", f"{fmt_ratio(against)} (per rep {min(per_rep):.2f}–{max(per_rep):.2f}x)")
    result.goal("resolving a selection no slower than list_all of the fleet", fmt_ratio(against), against <= 1.0)


CASE = Case("select_resolve", "resolve a selection (about 1 in 10 servers) for a preview vs list_all", run)
