"""A store that answers at first, then stops answering mid-command (a frozen network path, a paused
database): the command must still end, with its one line and exit code. The caller gives up after the
store's timeouts; the thread stuck in the driver cannot be interrupted, so the command must not wait for
it at exit (the black-box finding: the error line was printed, then the process never exited)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import POSTGRES_URL
from tests.faults.kit import cli, cli_env, problem_lines

pytestmark = pytest.mark.slow


class FreezingProxy:
    """Forwards to PostgreSQL until the server has sent ``allow`` bytes on a connection, then goes
    silent on it, keeping the sockets open: the driver waits forever for an answer."""

    def __init__(self, target: tuple[str, int], allow: int) -> None:
        self.target, self.allow = target, allow
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, None), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, self.allow), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket, allow: int | None) -> None:
        sent = 0
        try:
            while data := source.recv(65536):
                if allow is not None and sent + len(data) > allow:
                    return  # frozen: the rest never arrives, and nothing is closed
                sink.sendall(data)
                sent += len(data)
        except OSError:
            return

    def close(self) -> None:
        self.server.close()
        for sock in self.sockets:
            sock.close()


@pytest.fixture
def frozen_after_startup() -> Iterator[str]:
    if not POSTGRES_URL:
        pytest.skip("needs FLEXUS_TEST_POSTGRES_URL")
    parts = urlsplit(POSTGRES_URL)
    # Enough for the connection's start-up and a few answers, not for a whole command.
    proxy = FreezingProxy((parts.hostname or "127.0.0.1", parts.port or 5432), allow=3000)
    try:
        yield POSTGRES_URL.replace(f":{parts.port or 5432}/", f":{proxy.port}/", 1)
    finally:
        proxy.close()


def test_a_store_that_freezes_mid_command_still_ends_the_command(frozen_after_startup: str, tmp_path: Path) -> None:
    env = cli_env(
        tmp_path / "state",
        FLEXUS_STORE_URL=frozen_after_startup,
        FLEXUS_DB_CONNECT_TIMEOUT="1",
        FLEXUS_DB_STATEMENT_TIMEOUT="1",
    )
    result = cli(env, "call", "flexus_stop_servers", "--args", '{"servers": ["web-01"]}', bound=90)
    assert result.returncode == 4, result.stderr
    (line,) = problem_lines(result.stderr)
    assert line.startswith("flexus-ops: store:") and "Traceback" not in result.stderr


def test_an_in_memory_store_is_refused(tmp_path: Path) -> None:
    result = cli(
        cli_env(tmp_path / "state", FLEXUS_STORE_URL="sqlite://"),
        "call",
        "flexus_stop_servers",
        "--args",
        '{"servers": ["web-01"]}',
    )
    assert result.returncode == 4 and "in-memory SQLite store" in result.stderr, result.stderr


def test_a_checkpoint_key_others_can_read_is_refused_before_anything_runs(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = cli_env(state)
    first = cli(env, "call", "flexus_stop_servers", "--args", '{"servers": ["web-01"]}')
    assert first.returncode == 0, first.stderr
    key = state / "keys" / "audit-checkpoint.key"
    assert key.exists()
    key.chmod(0o644)
    refused = cli(env, "call", "flexus_stop_servers", "--args", '{"servers": ["web-02"]}')
    assert refused.returncode == 4 and "audit-checkpoint.key" in refused.stderr, refused.stderr
