"""cold_start: spawn to answered ``initialize`` + ``tools/list`` over stdio, with the raw driver in
``wire.py``. Ours (``flexus-ops mcp``), the floor (a bare ``MCPServer`` with one tool), and the peer
Huawei Cloud MCP servers, each in its own venv. Ours and the floor then call one tool (a one-server
listing; the floor's ``ping``), and spawn to that answer is reported beside it: ours answers the catalog
before its server is built, so the catalog's time alone would hide what the first call waits for.

Each server gets one untimed warm-up spawn first (page cache, ``.pyc`` files, our state directory's
key file and database), then the timed runs go round-robin with a rotating order, so a noisy moment
on the machine lands on every server alike.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
from dataclasses import dataclass, field
from typing import Any

from .harness import BENCH_DIR, Case, CaseResult, RunContext, env_without_secrets, fmt_ratio, fmt_spread, ratio, summary
from .peers import prepare_all
from .wire import Probe, isolated_home, probe

GOAL_OVER_FLOOR = 1.05  # ours / the bare MCPServer, default configuration (#15)
NORMAL_START = "flexus-ops, normal start"


@dataclass
class Target:
    name: str
    command: list[str] | None
    env: dict[str, str]
    unavailable: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    call: tuple[str, dict[str, Any]] | None = None
    """A tool call after the catalog, timed from the spawn too (ours and the floor; the peers' tools need a cloud)."""


def targets(ctx: RunContext, state_dir: str) -> list[Target]:
    base = env_without_secrets()
    ours = Target(
        "flexus-ops",
        [ctx.flexus_ops, "mcp"],
        # No credentials: the default, embedded sandbox; a temp state dir, so no developer's store is used.
        {**base, "FLEXUS_STATE_DIR": state_dir},
        info={"command": "flexus-ops mcp", "state": "temp FLEXUS_STATE_DIR, embedded sandbox"},
        call=("flexus_list_servers", {"limit": 1}),
    )
    floor = Target(
        "floor (bare MCPServer, 1 tool)",
        [ctx.python, str(BENCH_DIR / "floor_server.py")],
        base,
        info={"command": "python benchmarks/floor_server.py"},
        call=("ping", {"x": 1}),
    )
    # The start every other configuration gets (credentials, a policy file, ...: see tools/mcp_fast.py), and
    # ours before the fast start: reported beside it, not a goal.
    normal = Target(
        NORMAL_START,
        [ctx.flexus_ops, "mcp"],
        {**base, "FLEXUS_STATE_DIR": state_dir, "FLEXUS_MCP_FAST_START": "0"},
        info={"command": "FLEXUS_MCP_FAST_START=0 flexus-ops mcp", "state": "as ours"},
        call=("flexus_list_servers", {"limit": 1}),
    )
    found = [ours, floor, normal]
    for peer in prepare_all(ctx):
        env = {**base, "HOME": str(isolated_home()), **peer.spec.env}
        info = {"requirements": peer.spec.requirements, "versions": peer.versions, "command": peer.command}
        found.append(Target(peer.spec.name, peer.command, env, peer.unavailable, info))
    return found


def probe_target(target: Target) -> Probe:
    assert target.command is not None
    return probe(target.command, target.env, cwd=tempfile.gettempdir(), call=target.call)


def run(ctx: RunContext, result: CaseResult) -> None:
    runs = ctx.pick(10, 3)
    state_dir = tempfile.mkdtemp(prefix="flexus-bench-state-")
    try:
        _measure(ctx, result, runs, state_dir)
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


def _measure(ctx: RunContext, result: CaseResult, runs: int, state_dir: str) -> None:
    all_targets = targets(ctx, state_dir)
    live: list[Target] = []
    warmups: dict[str, Probe] = {}
    unavailable: dict[str, str] = {}
    for target in all_targets:
        if target.unavailable:
            unavailable[target.name] = target.unavailable
            continue
        try:
            warmups[target.name] = probe_target(target)
            live.append(target)
        except Exception as exc:  # a peer that will not start here is reported, not fatal
            if target.name.startswith(("flexus-ops", "floor")):
                raise
            unavailable[target.name] = f"unavailable: did not start: {str(exc)[:400]}"
    samples: dict[str, list[dict[str, Any]]] = {target.name: [] for target in live}
    for index in range(runs):
        shift = index % len(live)
        for target in live[shift:] + live[:shift]:
            ctx.log(f"cold_start run {index + 1}/{runs}: {target.name}")
            samples[target.name].append(probe_target(target).to_json())

    totals = {name: [s["seconds_total"] for s in runs_] for name, runs_ in samples.items()}
    stats = {name: summary(values) for name, values in totals.items()}
    ours_name, floor_name = all_targets[0].name, all_targets[1].name
    ours_median = stats[ours_name]["median"]
    over_floor = ratio(ours_median, stats[floor_name]["median"])
    result.setup = {
        "runs": runs,
        "measure": "spawn -> initialize answered -> notifications/initialized -> tools/list answered (raw JSON-RPC)",
        "first_call": "then one tools/call (ours: flexus_list_servers limit 1 on the sandbox; the floor: ping), "
        "timed from the same spawn; reported, not a goal",
        "warm_up": "one untimed spawn per server first",
        "servers": {t.name: t.info for t in all_targets},
    }
    result.data = {
        "samples": samples,
        "warmup": {name: p.to_json() for name, p in warmups.items()},
        "seconds_total": stats,
        "seconds_initialize": {
            name: summary([s["seconds_initialize"] for s in runs_]) for name, runs_ in samples.items()
        },
        "seconds_first_call": {
            name: summary([s["seconds_first_call"] for s in runs_])
            for name, runs_ in samples.items()
            if runs_ and runs_[0].get("seconds_first_call") is not None
        },
        "unavailable": unavailable,
        "ours_over_floor": over_floor,
    }
    # context_cost reads the wire bytes from these same runs (the normal start's are the same bytes).
    ctx.shared["wire"] = {name: runs_[-1] for name, runs_ in samples.items() if name != NORMAL_START}
    ctx.shared["wire_unavailable"] = unavailable
    for target in all_targets:
        if target.name in stats:
            tools = samples[target.name][-1]["tools"]
            result.figure(f"{target.name} ({tools} tools)", fmt_spread(stats[target.name]))
        else:
            result.figure(target.name, unavailable[target.name])
    result.figure("ours / floor", fmt_ratio(over_floor))
    if NORMAL_START in stats:
        result.figure(
            f"{NORMAL_START} / floor", fmt_ratio(ratio(stats[NORMAL_START]["median"], stats[floor_name]["median"]))
        )
    calls = result.data["seconds_first_call"]
    if ours_name in calls and floor_name in calls:
        result.figure(
            "first tools/call answered, ours (flexus_list_servers, 1 server) / floor (ping)",
            f"{fmt_spread(calls[ours_name])} / {fmt_spread(calls[floor_name])} "
            f"({fmt_ratio(ratio(calls[ours_name]['median'], calls[floor_name]['median']))})",
        )
    if NORMAL_START in calls:
        result.figure(f"first tools/call answered, {NORMAL_START}", fmt_spread(calls[NORMAL_START]))
    result.goal(f"<= {GOAL_OVER_FLOOR:.2f}x the floor", fmt_ratio(over_floor), over_floor <= GOAL_OVER_FLOOR)
    for target in all_targets[3:]:
        goal = f"faster than {target.name}"
        if target.name not in stats:
            result.goal(goal, unavailable[target.name], None)
            continue
        theirs = stats[target.name]["median"]
        result.goal(goal, f"ours {statistics.median(totals[ours_name]):.2f} s vs {theirs:.2f} s", ours_median < theirs)


CASE = Case("cold_start", "spawn to answered initialize + tools/list over stdio", run, cheap=False)
