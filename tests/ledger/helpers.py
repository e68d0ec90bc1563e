"""Small helpers shared by the ledger's database tests."""

from __future__ import annotations

from typing import Any

import psycopg


def snapshot(conn: psycopg.Connection) -> tuple[Any, ...]:
    """Chain height, entry count and every balance row — to prove a refusal wrote nothing."""
    height = conn.execute("SELECT coalesce(max(height), 0) FROM ledger.links").fetchone()
    count = conn.execute("SELECT count(*) FROM ledger.entries").fetchone()
    balances = conn.execute(
        "SELECT account, debits_posted, credits_posted, debits_pending, credits_pending "
        "FROM ledger.balances ORDER BY account"
    ).fetchall()
    orders = conn.execute("SELECT count(*) FROM ledger.orders").fetchone()
    metering = conn.execute("SELECT count(*) FROM ledger.metering").fetchone()
    conn.rollback()
    return (height, count, tuple(balances), orders, metering)
