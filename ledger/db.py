"""Connections, transactions and time helpers shared by the ledger's use cases (raw psycopg 3).

Conventions of every use-case module (accounts_db, transfers_db, policies, orders, metering, prices,
settlement_runs, tokens, checkpoints, statements, verify, api_keys):

* Every function that writes takes an open connection whose transaction the caller owns
  (`in_transaction(conn, fn)` gives one, retrying on unique-key races), writes its own rows first and
  the ledger entries last (ledger/store.py: the chain lock must be the last lock taken).
* Functions take `now` explicitly where the rules depend on the clock; production callers pass market
  time, `kernel.clock.now()` (kernel/clock.py: wall time, or the deployment's simulated clock);
  tests may pass another instant.
* Money never leaves integer pence; quantities arrive already converted to integer units
  (Wh, W, pence/MWh) by the HTTP/CLI layers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import psycopg

from grid.periods import require_utc
from kernel import db
from ledger.store import RETRYABLE

T = TypeVar("T")
# How far ahead of the ledger's clock a caller's instant may be (confirmations, readings, as_of).
CLOCK_SKEW = timedelta(seconds=5)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --- time ----------------------------------------------------------------------------------------


def us(t: datetime) -> int:
    """Aware datetime → integer microseconds since the epoch (UTC), exactly."""
    t = require_utc(t)
    delta = t - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


def iso(t: datetime) -> str:
    return require_utc(t).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- connections ---------------------------------------------------------------------------------


def conninfo(url: str | None = None) -> str:
    return db.libpq_url(url or db.database_url())


def connect(url: str | None = None, **kwargs: Any) -> psycopg.Connection:
    """An autocommit connection: reads never leave a transaction open, and every unit of work is an
    explicit `with conn.transaction():` (or `in_transaction`)."""
    kwargs.setdefault("autocommit", True)
    # No server-side auto-prepare: a pipeline that aborts (lock timeout, retried batch) can drop a
    # statement psycopg still believes prepared ("prepared statement _pg3_N does not exist").
    kwargs.setdefault("prepare_threshold", None)
    return psycopg.connect(conninfo(url), **kwargs)


@contextmanager
def connection(url: str | None = None) -> Iterator[psycopg.Connection]:
    conn = connect(url)
    try:
        yield conn
    finally:
        conn.close()


def in_transaction(conn: psycopg.Connection, fn: Callable[[psycopg.Connection], T], attempts: int = 4) -> T:
    """Run `fn(conn)` in a transaction; a unique-key race with a concurrent writer (two registrations of
    one order, two runs of one settlement) is retried, and the retry sees the winner's row."""
    for attempt in range(attempts):
        try:
            with conn.transaction():
                return fn(conn)
        except RETRYABLE:
            if attempt == attempts - 1:
                raise
            time.sleep(0.01 * (attempt + 1))
    raise AssertionError("unreachable")


def ensure_schema(url: str | None = None) -> None:
    """Migrate to head when the ledger tables are missing (a fresh embedded database)."""
    with connection(url) as conn:  # the first ledger table and the newest
        present = conn.execute("SELECT to_regclass('ledger.links'), to_regclass('ledger.key_handovers')").fetchone()
    if present is None or None in present:
        db.upgrade(url)
