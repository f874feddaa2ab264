"""``python -m benchmarks [--quick] [--only NAME[,NAME]] [--output DIR] [--skip-peers]``

Runs each case, prints the goals table, and writes ``latest.json`` (every raw sample, the machine,
the versions, the git commit) and ``latest.md`` (the tables) into the output directory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from .harness import BENCH_DIR, ROOT, Case, CaseResult, RunContext, run_case

PACKAGES = (
    "flexus-ops",
    "mcp",
    "httpx",
    "pydantic",
    "starlette",
    "uvicorn",
    "sqlalchemy",
    "huaweicloudsdkecs",
    "huaweicloudsdkcore",
)


def cases() -> list[Case]:
    # One module per case; imported here so `--list` and the smoke test see the same registry.
    from . import (
        call_overhead,
        cold_start,
        context_cost,
        fleet_power,
        list_all,
        mcp_http,
        rolling_reboot,
        select_resolve,
        slack_ack,
        store,
    )

    return [
        fleet_power.CASE,
        rolling_reboot.CASE,
        list_all.CASE,
        select_resolve.CASE,
        call_overhead.CASE,
        cold_start.CASE,
        context_cost.CASE,
        slack_ack.CASE,
        store.CASE,
        mcp_http.CASE,
    ]


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    status = _git("status", "--porcelain")
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "packages": versions,
        "git_commit": _git("rev-parse", "HEAD"),
        # Uncommitted changes mean the figures belong to the commit plus a diff; say so.
        "git_dirty": bool(status) if status is not None else None,
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def goals_table(results: list[CaseResult]) -> list[str]:
    lines = ["| case | goal | measured | verdict |", "|---|---|---|---|"]
    for result in results:
        if result.status != "ok":
            lines.append(f"| {result.name} | — | {result.status}: {result.reason} | — |")
            continue
        for goal in result.goals:
            note = f" ({goal.note})" if goal.note else ""
            lines.append(f"| {result.name} | {goal.goal} | {goal.measured}{note} | {goal.verdict} |")
    return lines


def figures_table(results: list[CaseResult]) -> list[str]:
    lines = ["| case | figure | median (min–max, n) |", "|---|---|---|"]
    for result in results:
        for figure in result.figures:
            lines.append(f"| {result.name} | {figure.name} | {figure.value} |")
    return lines


def markdown(report: dict[str, Any], results: list[CaseResult]) -> str:
    m = report["machine"]
    dirty = " (with uncommitted changes)" if m["git_dirty"] else ""
    header = [
        "# flexus-ops benchmarks",
        "",
        f"Command: `{report['command']}`  ",
        f"When: {report['started_at']} UTC, {report['seconds']:.0f} s  ",
        f"Commit: `{m['git_commit']}`{dirty}  ",
        f"Machine: {m['cpu_count']} x {m['cpu_model']}, {m['platform']}, Python {m['python']}, "
        f"load average at start {', '.join(f'{x:.2f}' for x in m['load_average_at_start'] or [])}  ",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v),
        "",
        "Every figure is a median over repetitions in this run, with its spread (min–max) and count;",
        "every ratio is against a baseline measured in the same run on the same machine.",
        "",
        "## Goals",
        "",
        *goals_table(results),
        "",
        "## Figures",
        "",
        *figures_table(results),
        "",
        "## Setups",
        "",
    ]
    for result in results:
        if result.setup:
            header.append(f"- **{result.name}**: " + "; ".join(f"{k}: {v}" for k, v in result.setup.items()))
    return "\n".join(header) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and one repetition (CI smoke)")
    parser.add_argument("--only", action="append", default=[], help="case name(s), comma-separated or repeated")
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "results", help="where latest.json/.md go")
    parser.add_argument("--skip-peers", action="store_true", help="do not install or run the peer MCP servers")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    args = parser.parse_args(argv)

    registry = cases()
    if args.list:
        for case in registry:
            print(f"{case.name:15} {case.title}")
        return 0
    wanted = [name.strip() for item in args.only for name in item.split(",") if name.strip()]
    known = {case.name for case in registry}
    unknown = [name for name in wanted if name not in known]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; cases: {', '.join(sorted(known))}")

    args.output.mkdir(parents=True, exist_ok=True)
    ctx = RunContext(quick=args.quick, output_dir=args.output, skip_peers=args.skip_peers)
    started_at = datetime.now(UTC)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "command": shlex.join(["python", "-m", "benchmarks", *(argv if argv is not None else sys.argv[1:])]),
        "quick": args.quick,
        "started_at": started_at.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine(),
    }
    results: list[CaseResult] = []
    for case in registry:
        if wanted and case.name not in wanted:
            # Listed anyway, so a reader of the JSON sees which cases this run left out.
            results.append(CaseResult(case.name, case.title, status="not_run", reason="not selected (--only)"))
            continue
        print(f"[{case.name}] {case.title}", file=sys.stderr, flush=True)
        result = run_case(case, ctx)
        print(f"[{case.name}] {result.status} in {result.seconds:.1f} s {result.reason}", file=sys.stderr, flush=True)
        results.append(result)
    report["seconds"] = time.perf_counter() - started
    report["machine"]["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    report["cases"] = {result.name: result.to_json() for result in results}

    (args.output / "latest.json").write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n")
    ran = [result for result in results if result.status != "not_run"]
    text = markdown(report, ran)
    (args.output / "latest.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
