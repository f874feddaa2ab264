"""A secrets scan over every test session: it fails the run if any secret a test used (an SK, a bearer
token, a password) shows up in a log record or in any file the tests left behind (stores, audit logs,
key files, policies), whatever test wrote it.

Secrets are found by name: module-level string constants of the test modules called ``SK``,
``PASSWORD``, ``*_PASSWORD``, ``*SECRET*`` or ``TOKEN``; and a secret made while a test runs (a password
the gate generated at preview) is handed to ``remember``.
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

import pytest

SECRET_NAME = re.compile(r"^(SK|TOKEN|[A-Z_]*PASSWORD|[A-Z_]*SECRET[A-Z_]*)$")
_records: list[str] = []
_remembered: dict[str, str] = {}


def remember(where: str, value: str) -> None:
    """A secret a test saw made (e.g. a generated password): the end-of-session scan looks for it too."""
    _remembered[f"{where} #{len(_remembered)}"] = value


class _Recorder(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            _records.append(record.getMessage() + (f"\n{record.exc_text}" if record.exc_text else ""))
        except Exception:  # a broken log call is not this scan's business
            _records.append(str(record.msg))


def known_secrets() -> dict[str, str]:
    found: dict[str, str] = dict(_remembered)
    for name, module in list(sys.modules.items()):
        if not name.startswith("tests.") or module is None:
            continue
        for attr, value in vars(module).items():
            if isinstance(value, str) and len(value) >= 8 and SECRET_NAME.match(attr):
                found[f"{name}.{attr}"] = value
    return found


def pytest_configure(config: pytest.Config) -> None:
    root = logging.getLogger()
    root.addHandler(_Recorder(level=logging.INFO))
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    secrets = known_secrets()
    logs = "\n".join(_records)
    base = Path(session.config._tmp_path_factory.getbasetemp())  # type: ignore[attr-defined]
    leaks: list[str] = []
    for where, value in secrets.items():
        if value in logs:
            leaks.append(f"{where} appears in a log record")
    for path in base.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        content = path.read_bytes()
        leaks.extend(f"{where} appears in {path}" for where, value in secrets.items() if value.encode() in content)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(
            f"secrets scan: {len(secrets)} secret(s) looked for in {len(_records)} log records and the files "
            f"under {base}: {'LEAKS FOUND' if leaks else 'none found'}"
        )
        for leak in leaks:
            reporter.write_line(f"  LEAK: {leak}", red=True)
    if leaks:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
