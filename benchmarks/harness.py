"""What every case shares: the run context, sample statistics, goals with verdicts, and the result shape."""

from __future__ import annotations

import logging
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "benchmarks"
VENVS_DIR = BENCH_DIR / ".venvs"

Status = Literal["ok", "skipped", "error", "not_run"]


@dataclass
class RunContext:
    """What a case needs to know about this invocation."""

    quick: bool
    output_dir: Path
    skip_peers: bool = False
    # Results one case measured that another may reuse (cold_start's wire bytes for context_cost),
    # so one spawn is not paid twice and both figures come from the same runs.
    shared: dict[str, Any] = field(default_factory=dict)

    @property
    def python(self) -> str:
        return sys.executable

    @property
    def flexus_ops(self) -> str:
        """The installed console script, as MCP clients run it."""
        script = Path(sys.executable).parent / "flexus-ops"
        if not script.exists():
            raise RuntimeError(f"{script} is missing: run `pip install -e '.[dev]'` in this venv first")
        return str(script)

    def pick(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def log(self, message: str) -> None:
        # Progress goes to stderr: stdout carries only the final table.
        print(f"  {message}", file=sys.stderr, flush=True)


# -- statistics -----------------------------------------------------------------------------------


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation between closest ranks."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(samples: Sequence[float]) -> dict[str, float | int]:
    """Median and spread; p99 only means something with many samples, so it is kept for all but read
    only where a case asks for it."""
    if not samples:
        return {"n": 0}
    return {
        "n": len(samples),
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "p99": percentile(samples, 99),
    }


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


# -- formatting -----------------------------------------------------------------------------------


def fmt_seconds(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if value >= 1:
        return f"{value:.2f} s"
    if value >= 0.001:
        return f"{value * 1000:.1f} ms"
    return f"{value * 1e6:.0f} µs"


def fmt_spread(stats: dict[str, Any], fmt: Callable[[float], str] = fmt_seconds) -> str:
    """``median (min–max, n=N)``: the shape every timed figure is shown in."""
    if not stats.get("n"):
        return "n/a"
    if stats["n"] == 1:
        return f"{fmt(stats['median'])} (n=1)"
    return f"{fmt(stats['median'])} ({fmt(stats['min'])}–{fmt(stats['max'])}, n={stats['n']})"


def fmt_bytes(value: float) -> str:
    if value >= 1024 * 1024:
        return f"{value / 1024 / 1024:.1f} MiB"
    if value >= 1024:
        return f"{value / 1024:.1f} KiB"
    return f"{value:.0f} B"


def fmt_ratio(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}x"


# -- results --------------------------------------------------------------------------------------


@dataclass
class Goal:
    """One goal from the issue, the figure it is judged on, and whether it was met (None: not judged)."""

    goal: str
    measured: str
    met: bool | None
    note: str = ""

    @property
    def verdict(self) -> str:
        return {True: "met", False: "MISSED", None: "not judged"}[self.met]

    def to_json(self) -> dict[str, Any]:
        return {
            "goal": self.goal,
            "measured": self.measured,
            "met": self.met,
            "verdict": self.verdict,
            "note": self.note,
        }


@dataclass
class Figure:
    """A line of the figures table: what was measured, and its value with spread."""

    name: str
    value: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "value": self.value}


@dataclass
class CaseResult:
    name: str
    title: str
    status: Status = "ok"
    reason: str = ""
    setup: dict[str, Any] = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)
    # Every raw sample and every derived number, under stable keys, for anyone re-analysing a run.
    data: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def figure(self, name: str, value: str) -> None:
        self.figures.append(Figure(name, value))

    def goal(self, goal: str, measured: str, met: bool | None, note: str = "") -> None:
        self.goals.append(Goal(goal, measured, met, note))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "status": self.status,
            "reason": self.reason,
            "seconds": round(self.seconds, 3),
            "setup": self.setup,
            "figures": [f.to_json() for f in self.figures],
            "goals": [g.to_json() for g in self.goals],
            "data": self.data,
        }


CaseFn = Callable[[RunContext, CaseResult], None]


@dataclass(frozen=True)
class Case:
    name: str
    title: str
    run: CaseFn
    cheap: bool = True
    """Cheap enough in --quick for the CI smoke test (no network installs, a few seconds)."""


def run_case(case: Case, ctx: RunContext) -> CaseResult:
    """Run one case; a case that raises is recorded as an error with its reason, never hidden."""
    result = CaseResult(case.name, case.title)
    started = time.perf_counter()
    # Some libraries configure the root logger when used (MCPServer sets INFO); a case must not leave
    # that behind, or the next case would pay for logging every HTTP request.
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    quiet_libraries()
    try:
        case.run(ctx, result)
    except Skip as skip:
        result.status = "skipped"
        result.reason = str(skip)
    except Exception as exc:  # a broken case must not hide the others' figures
        import traceback

        result.status = "error"
        result.reason = f"{type(exc).__name__}: {exc}"
        result.data["traceback"] = traceback.format_exc()
        print(result.data["traceback"], file=sys.stderr)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    result.seconds = time.perf_counter() - started
    return result


def quiet_libraries() -> None:
    """What ``flexus-ops`` itself does at start (``cli._quiet_libraries``): a log line per HTTP request or
    per MCP message would be measured as overhead that no real deployment pays."""
    for name in ("httpx", "httpcore", "mcp", "uvicorn.access"):
        logging.getLogger(name).setLevel(logging.WARNING)


class Skip(Exception):
    """Raised by a case that cannot measure here; the reason goes into the table."""


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far, from /proc; NaN when it cannot be read."""
    try:
        # Fields 14 and 15 of stat (utime, stime), counted after the ")" that ends the command name.
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def env_without_secrets() -> dict[str, str]:
    """The environment for child processes, minus anything that would point them at a real cloud."""
    blocked = ("HUAWEICLOUD_", "HUAWEI_", "FLEXUS_")
    return {key: value for key, value in os.environ.items() if not key.startswith(blocked)}


def wait_answering(
    process: subprocess.Popen[bytes],
    log: Path,
    what: str,
    answers: Callable[[], bool],
    *,
    timeout: float = 60.0,
) -> None:
    """Until ``answers()`` is true (a connection refused counts as not yet), or the process dies or
    ``timeout`` passes; either failure names ``what`` and ends with the tail of its log."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            if answers():
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not answer within {timeout:g} s: {log.read_text()[-2000:]}")
        time.sleep(0.05)
