"""A throwaway PostgreSQL cluster that tests may stop and start (a database that goes away mid-execution).

One cluster per test session, on its own free port, under /tmp (outside pytest's private temp dir, which
the `postgres` user cannot enter), removed at the end. initdb refuses to run as root, so as root (CI) the
cluster runs as the `postgres` user through runuser."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.procs import free_port

PG_BIN = Path(os.environ.get("FLEXUS_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


@dataclass
class Cluster:
    """A PostgreSQL cluster of our own: trust auth for `postgres`, loopback only."""

    root: Path
    port: int
    as_user: list[str]  # the command prefix that runs a PostgreSQL binary as the cluster's owner

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _ctl(self, *args: str) -> None:
        _run([*self.as_user, str(PG_BIN / "pg_ctl"), "-D", str(self.data), *args])

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root / 'sockets'}"
        self._ctl("-l", str(self.root / "server.log"), "-w", "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-m", mode, "-w", "stop")

    def new_database(self) -> str:
        """A fresh database, so tests sharing the cluster never see each other's rows."""
        name = f"flexus_{uuid.uuid4().hex[:12]}"
        admin = create_engine(
            self.url().replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
        )
        try:
            with admin.connect() as db:
                db.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        return self.url(name)


def _run(command: list[str]) -> None:
    """Run a PostgreSQL tool; when it fails, say what it printed (its log is in the cluster's dir)."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {(done.stderr or done.stdout).strip()}")


def _runner() -> list[str] | str:
    """How to run PostgreSQL's binaries here, or why they cannot be run."""
    if not (PG_BIN / "initdb").is_file() or not (PG_BIN / "pg_ctl").is_file():
        return f"no PostgreSQL binaries in {PG_BIN} (set FLEXUS_TEST_PG_BIN to their directory)"
    if os.geteuid() != 0:
        return []  # initdb runs as any user but root
    if shutil.which("runuser") is None:
        return "running as root, and runuser (to run initdb as postgres) is missing"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "running as root, and there is no postgres user to run initdb as"
    return ["runuser", "-u", "postgres", "--"]


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    runner = _runner()
    if isinstance(runner, str):
        pytest.skip(f"no throwaway PostgreSQL cluster: {runner}")
    root = Path(tempfile.mkdtemp(prefix="flexus-pg-"))
    if runner:
        owner = pwd.getpwnam("postgres")
        os.chown(root, owner.pw_uid, owner.pw_gid)
    cluster = Cluster(root, free_port(), runner)
    try:
        _run([*runner, "mkdir", "-m", "700", str(root / "sockets")])
        _run([*runner, str(PG_BIN / "initdb"), "-D", str(cluster.data), "-A", "trust", "-U", "postgres", "--no-sync"])
        cluster.start()
        yield cluster
    finally:
        if (root / "data" / "postmaster.pid").exists():
            subprocess.run(
                [*runner, str(PG_BIN / "pg_ctl"), "-D", str(cluster.data), "-m", "immediate", "stop"],
                capture_output=True,
                timeout=60,
                check=False,
            )
        shutil.rmtree(root, ignore_errors=True)
