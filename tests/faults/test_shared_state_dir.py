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


def test_a_process_whose_last_record_precedes_the_shared_key_record_does_not_sign_it(
    store_url: str, tmp_path: Path
) -> None:
    """Two processes on one state dir and one store: B records the shared checkpoint key after A's last
    record. A signing that record with the key would read as forged in `audit verify`."""
    from flexus_ops.gate.audit import Checkpointer
    from flexus_ops.gate.secrets import Keys
    from flexus_ops.gate.store import Store

    keys = Keys.load(tmp_path)
    a = Store(store_url, keys.audit, checkpoints=Checkpointer(tmp_path))
    b = Store(store_url, keys.audit, checkpoints=Checkpointer(tmp_path))
    try:
        event = {"person": "alice", "surface": "cli", "tool": None, "action_id": None, "detail": {}}
        a.append_audit("note", **event)  # A's last record
        b.append_audit("note", **event)
        assert b.flush_checkpoint() is not None  # B records the key, then signs its own record
        a.flush_checkpoint()  # A's record is older than the key record: nothing to sign with it
        report = a.audit_report()
        assert report.intact, report.problems + report.unverifiable
        assert report.checkpoints_checked >= 1
    finally:
        a.dispose()
        b.dispose()
