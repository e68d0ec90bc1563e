"""Fixtures for the ledger tests.

- `ledger_home` (session, autouse): FLEXMARKET_HOME in a temporary folder, so the ledger's signing key
  and published checkpoints never land in the working tree.
- `ledger_url`: the session database (tests/conftest.py `db_url`, migrated to head).
- `fresh_db`: a database of its own for a test that tampers with the chain or needs an empty ledger —
  cloned from a migrated template, which is much faster than migrating each time.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from kernel import db
from kernel.config import reset_settings


@pytest.fixture(scope="session", autouse=True)
def ledger_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("ledger-home")
    old = os.environ.get("FLEXMARKET_HOME")
    os.environ["FLEXMARKET_HOME"] = str(home)
    reset_settings()
    yield home
    if old is None:
        os.environ.pop("FLEXMARKET_HOME", None)
    else:
        os.environ["FLEXMARKET_HOME"] = old
    reset_settings()


@pytest.fixture(scope="session")
def ledger_url(db_url: str) -> str:
    return db_url


@pytest.fixture(scope="session")
def _template_db(pg_server_url: str) -> Iterator[str]:
    url = db.create_database(pg_server_url, "fm_ltpl")
    db.upgrade(url)
    db.dispose_engines()
    yield url
    db.drop_database(pg_server_url, url)


@pytest.fixture
def fresh_db(pg_server_url: str, _template_db: str) -> Iterator[str]:
    template = psycopg.conninfo.conninfo_to_dict(db.libpq_url(_template_db))["dbname"]
    name = f"fm_lfresh_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    info = psycopg.conninfo.conninfo_to_dict(pg_server_url)
    info["dbname"] = name
    url = db.conninfo_to_url(psycopg.conninfo.make_conninfo(**info))
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
