"""A sweep over every fault with a CLI form, through the real `flexus-ops` command: each ends with the exit
code README's table gives it, exactly one line on stderr that names what failed (the client's own "cloud
retry" notices aside), and no traceback anywhere."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.faults.kit import BlackHole, Proxy, active_server, cli, cli_env, existing_store, posts, problem_lines
from tests.live import serve
from tests.procs import free_port

# README, "The CLI": the exit codes this sweep expects.
CLOUD, STORE, UNKNOWN = 3, 4, 5
STOP = ["call", "flexus_stop_servers", "--args", json.dumps({"servers": ["web-01"]})]
LIST = ["call", "flexus_list_servers", "--args", json.dumps({"limit": 1})]


@dataclass
class Run:
    env: dict[str, str]
    args: list[str]
    after: Callable[[], None] = lambda: None  # checks on what the fault left behind


def unusable_store_url(tmp_path: Path, _stack: ExitStack) -> Run:
    return Run(cli_env(tmp_path, FLEXUS_STORE_URL="mysql://flexus@db.internal/flexus"), STOP)


def unparsable_store_url(tmp_path: Path, _stack: ExitStack) -> Run:
    return Run(cli_env(tmp_path, FLEXUS_STORE_URL="not a database url"), STOP)


def refused_store(tmp_path: Path, _stack: ExitStack) -> Run:
    return Run(cli_env(tmp_path, FLEXUS_STORE_URL=f"postgresql://x@127.0.0.1:{free_port()}/db"), STOP)


def read_only_store(tmp_path: Path, stack: ExitStack) -> Run:
    path = existing_store(tmp_path)
    live = stack.enter_context(serve())
    args = ["call", "flexus_stop_servers", "--args", json.dumps({"servers": [active_server(live.sandbox)]})]
    env = cli_env(tmp_path, endpoint=live.url, FLEXUS_STORE_URL=f"sqlite:///file:{path}?mode=ro&uri=true")

    def nothing_written() -> None:
        assert posts(live.sandbox) == []

    return Run(env, args, nothing_written)


def locked_store(tmp_path: Path, stack: ExitStack) -> Run:
    holder = sqlite3.connect(existing_store(tmp_path), isolation_level=None)
    stack.callback(holder.close)
    holder.execute("BEGIN EXCLUSIVE")  # released when the connection closes
    return Run(cli_env(tmp_path, FLEXUS_DB_STATEMENT_TIMEOUT="1"), STOP)


def black_hole_store(tmp_path: Path, stack: ExitStack) -> Run:
    hole = stack.enter_context(BlackHole())
    url = f"postgresql://x@127.0.0.1:{hole.port}/db"
    return Run(cli_env(tmp_path, FLEXUS_STORE_URL=url, FLEXUS_DB_CONNECT_TIMEOUT="2"), STOP)


def black_hole_cloud(tmp_path: Path, stack: ExitStack) -> Run:
    hole = stack.enter_context(BlackHole())
    return Run(cli_env(tmp_path, endpoint=hole.url, FLEXUS_READ_DEADLINE="2"), LIST)


def refused_cloud(tmp_path: Path, _stack: ExitStack) -> Run:
    # Connections refused: the read is retried (each retry told on stderr), then fails in one line.
    endpoint = f"http://127.0.0.1:{free_port()}"
    return Run(cli_env(tmp_path, endpoint=endpoint, FLEXUS_READ_DEADLINE="2"), LIST)


def lost_write_answer(tmp_path: Path, stack: ExitStack) -> Run:
    live = stack.enter_context(serve(job_seconds=0.2))
    proxy = stack.enter_context(Proxy(live.url))
    env = cli_env(tmp_path, endpoint=proxy.url)
    args = json.dumps({"servers": [active_server(live.sandbox)]})
    preview = cli(env, "call", "flexus_stop_servers", "--args", args)
    assert preview.returncode == 0, preview.stderr
    token = json.loads(preview.stdout)["preview"]["confirmation_token"]
    proxy.drop_post_answers = 1

    def sent_once() -> None:
        assert proxy.dropped == 1 and len(posts(live.sandbox)) == 1

    return Run(env, ["call", "flexus_stop_servers", "--args", args, "--confirm", token], sent_once)


def bad_region(tmp_path: Path, _stack: ExitStack) -> Run:
    return Run(cli_env(tmp_path, FLEXUS_REGION="x@evil.example:9/"), LIST)


def state_dir_is_a_file(tmp_path: Path, _stack: ExitStack) -> Run:
    path = tmp_path / "not-a-dir"
    path.write_text("I am a file\n")
    return Run(cli_env(path), STOP)


def broken_policy(tmp_path: Path, _stack: ExitStack) -> Run:
    policy = tmp_path / "policy.toml"
    policy.write_text('[[people]\nid = "me"\n')
    return Run(cli_env(tmp_path, FLEXUS_POLICY=str(policy)), STOP)


CASES: list[tuple[Callable[[Path, ExitStack], Run], int, str]] = [
    (unusable_store_url, STORE, "FLEXUS_STORE_URL"),
    (unparsable_store_url, STORE, "FLEXUS_STORE_URL"),
    (refused_store, STORE, "cannot reach"),
    (read_only_store, STORE, "read-only"),
    (locked_store, STORE, "locked"),
    (black_hole_store, STORE, "cannot reach"),
    (black_hole_cloud, CLOUD, "network:"),
    (refused_cloud, CLOUD, "network:"),
    (lost_write_answer, UNKNOWN, "outcome unknown"),
    (bad_region, STORE, "FLEXUS_REGION"),
    (state_dir_is_a_file, STORE, "not-a-dir"),
    (broken_policy, STORE, "policy file"),
]


@pytest.mark.parametrize(("fault", "code", "word"), CASES, ids=[case[0].__name__ for case in CASES])
def test_every_fault_is_one_line_with_its_exit_code(
    tmp_path: Path, fault: Callable[[Path, ExitStack], Run], code: int, word: str
) -> None:
    with ExitStack() as stack:
        run = fault(tmp_path, stack)
        result = cli(run.env, *run.args, bound=60)  # a failure bound: a hang is a failure too
        run.after()
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    lines = problem_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("flexus-ops: ") and word in lines[0], lines[0]
    assert result.returncode == code, result.stderr
    assert result.stdout == ""
