"""Fixtures for the ledger tests.

- `ledger_home` (session, autouse): FLEXMARKET_HOME in a temporary folder, so the ledger's signing key
  and published checkpoints never land in the working tree.
- `ledger_url` (session, autouse): a database of the ledger tests' own, migrated to head.
- `fresh_db`: a database of its own for a test that tampers with the chain or needs an empty ledger —
  cloned from a migrated template, which is much faster than migrating each time.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from kernel import db
from kernel.config import environment, reset_settings
from ledger.api.signed import key_directory
from ledger.db import connect
from ledger.main import create_app
from tests.ledger.agreements import TEST_KEYS


@pytest.fixture(scope="session", autouse=True)
def ledger_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("ledger-home")
    with environment({"FLEXMARKET_HOME": str(home)}):
        yield home


@pytest.fixture(scope="session", autouse=True)
def ledger_url(pg_server_url: str, _template_db: str) -> Iterator[str]:
    """The ledger tests' own database, made the process's DATABASE_URL for them. Not the session database:
    the end-to-end network's ledger runs there and signs checkpoints with its own key, and a ledger refuses
    checkpoints by a key that is not the one in force (ledger/checkpoints.py)."""
    url = _clone(pg_server_url, _template_db, "fm_ledger")
    db.dispose_engines()
    with environment({"DATABASE_URL": url}):
        yield url
    db.dispose_engines()
    db.drop_database(pg_server_url, url)


@pytest.fixture(scope="session")
def _template_db(pg_server_url: str) -> Iterator[str]:
    url = db.create_database(pg_server_url, "fm_ltpl")
    db.upgrade(url)
    db.dispose_engines()
    yield url
    db.drop_database(pg_server_url, url)


def _clone(pg_server_url: str, template_url: str, prefix: str) -> str:
    """A new database copied from the migrated template (much faster than migrating)."""
    template = psycopg.conninfo.conninfo_to_dict(db.libpq_url(template_url))["dbname"]
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    info = psycopg.conninfo.conninfo_to_dict(pg_server_url)
    info["dbname"] = name
    return db.conninfo_to_url(psycopg.conninfo.make_conninfo(**info))


@pytest.fixture
def fresh_db(pg_server_url: str, _template_db: str) -> Iterator[str]:
    url = _clone(pg_server_url, _template_db, "fm_lfresh")
    yield url
    db.drop_database(pg_server_url, url)


@pytest.fixture
def cli_db(ledger_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Point the CLI's ensure_services() at the session database and Redis (no embedded servers)."""
    monkeypatch.setenv("DATABASE_URL", ledger_url)
    monkeypatch.setenv("REDIS_URL", redis_url)
    reset_settings()
    yield ledger_url
    reset_settings()


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture
def conn(ledger_url: str) -> Iterator[psycopg.Connection]:
    """A connection to the ledger tests' database."""
    c = connect(ledger_url)
    yield c
    c.close()


@pytest.fixture(scope="module")
def client(ledger_url: str) -> Iterator[TestClient]:
    """The ledger's HTTP API in process, on the ledger tests' database; signed messages are checked
    against the test parties' keys (tests/ledger/agreements.py `TEST_KEYS`) instead of the registry."""
    app = create_app()
    app.dependency_overrides[key_directory] = lambda: TEST_KEYS
    with TestClient(app) as c:
        yield c
