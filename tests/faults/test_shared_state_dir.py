"""Fault: several processes share one state dir (replicas on one host, a benchmark's workers) and start
at the same moment. Each must end up with the same audit checkpoint key, and none may read it half written
(an empty key file used to fail with "An Ed25519 private key is 32 bytes long")."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from flexus_ops.gate.audit import SIGNING_KEY_FILE, CheckpointSigner


def _load(path: str, start: multiprocessing.synchronize.Barrier, results: multiprocessing.Queue) -> None:
    start.wait()
    try:
        results.put(CheckpointSigner.load(Path(path)).key_id)
    except Exception as exc:  # reported to the test, which fails naming it
        results.put(f"error: {type(exc).__name__}: {exc}")


def test_processes_racing_for_the_first_checkpoint_key_all_get_one_whole_key(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    for round_ in range(4):
        keys = tmp_path / f"round{round_}" / "keys"
        keys.mkdir(parents=True, mode=0o700)
        (keys.parent).chmod(0o700)
        path = keys / SIGNING_KEY_FILE
        workers = 8
        start = context.Barrier(workers)
        results: multiprocessing.Queue = context.Queue()
        processes = [context.Process(target=_load, args=(str(path), start, results)) for _ in range(workers)]
        for process in processes:
            process.start()
        seen = [results.get(timeout=60) for _ in processes]
        for process in processes:
            process.join(timeout=60)
        assert len(set(seen)) == 1 and not seen[0].startswith("error"), seen
        assert sorted(p.name for p in keys.iterdir()) == [SIGNING_KEY_FILE], "no draft left behind"
