"""The benchmark harness runs: `python -m benchmarks --quick` writes a well-formed report.

Benchmarks are not tests: nothing here looks at a timing or a verdict, only at the shape of what the
harness wrote, so a slow or noisy CI machine cannot fail it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.__main__ import cases

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_quick_run_writes_every_case(tmp_path: Path) -> None:
    registry = cases()
    cheap = [case.name for case in registry if case.cheap]
    assert cheap, "at least one case must be cheap enough for the smoke run"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--skip-peers",
            "--only",
            ",".join(cheap),
            "--output",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    report = json.loads((tmp_path / "latest.json").read_text())
    assert (tmp_path / "latest.md").read_text().startswith("# flexus-ops benchmarks")
    assert report["quick"] is True
    machine = report["machine"]
    assert machine["cpu_count"] and machine["python"] and "git_commit" in machine
    assert machine["packages"]["flexus-ops"]

    assert list(report["cases"]) == [case.name for case in registry]
    for name, case in report["cases"].items():
        assert case["name"] == name and case["title"]
        expected = {"ok", "skipped"} if name in cheap else {"not_run"}
        assert case["status"] in expected, f"{name}: {case['status']} {case['reason']}\n{case['data'].get('traceback')}"
        if case["status"] == "skipped":
            assert case["reason"], f"{name} was skipped without a reason"
        if case["status"] == "ok":
            assert case["goals"] and case["figures"], f"{name} measured nothing"
            for goal in case["goals"]:
                assert goal["goal"] and goal["measured"] and goal["verdict"] in {"met", "MISSED", "not judged"}
            assert case["data"], f"{name} kept no raw samples"
