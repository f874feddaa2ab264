"""Shared fixtures. Every test starts from a clean environment: a developer's real credentials in the
shell must never leak into a test, nor steer it at the real cloud."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.live import LiveSandbox, serve

pytest_plugins = ["tests.secret_scan"]


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    for name in list(os.environ):
        if name.startswith(("HUAWEICLOUD_", "FLEXUS_", "SLACK_")):
            monkeypatch.delenv(name)


@pytest.fixture
def live() -> Iterator[LiveSandbox]:
    with serve() as running:
        yield running


# Read at import: the autouse fixture below clears FLEXUS_* so no test sees a developer's settings.
POSTGRES_URL = os.environ.get("FLEXUS_TEST_POSTGRES_URL")
REQUIRE_POSTGRES = bool(os.environ.get("FLEXUS_TEST_REQUIRE_POSTGRES"))
HOW = (
    "set FLEXUS_TEST_POSTGRES_URL=postgresql://USER@HOST:5432/DB to run the PostgreSQL store tests "
    "(.ci/run sets it to the local server)"
)


def _skip_or_fail(reason: str) -> None:
    # CI sets FLEXUS_TEST_REQUIRE_POSTGRES: there a missing server is a broken run, not a skip.
    if REQUIRE_POSTGRES:
        pytest.fail(reason)
    pytest.skip(reason)


def _postgres_schema_url() -> Iterator[str]:
    if not POSTGRES_URL:
        _skip_or_fail(f"no PostgreSQL configured: {HOW}")
    admin_url = POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        admin = create_engine(admin_url)
        with admin.begin() as db:
            schema = f"flexus_test_{uuid.uuid4().hex[:12]}"
            db.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # any failure to reach it is a reason to skip, said plainly
        _skip_or_fail(f"PostgreSQL at {POSTGRES_URL} is not reachable ({type(exc).__name__}): {HOW}")
    separator = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as db:
            db.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The gate's store on the embedded default and on a real PostgreSQL (one schema per test)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
    else:
        yield from _postgres_schema_url()
