"""Small helpers shared by the ledger's database tests."""

from __future__ import annotations

from typing import Any

import psycopg

from ledger.api_keys import create_api_key
from ledger.db import connection


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


def bearer_keys(ledger_url: str, **who: tuple[str, str | None]) -> dict[str, dict[str, str]]:
    """API keys made for the test: name → (role, participant id) in, name → Authorization header out."""
    with connection(ledger_url) as conn, conn.transaction():
        made = {name: create_api_key(conn, role, participant) for name, (role, participant) in who.items()}
    return {k: {"Authorization": f"Bearer {v}"} for k, v in made.items()}


def role_keys(
    ledger_url: str, *, providers: tuple[str, ...] = (), baps: tuple[str, ...] = (), suppliers: tuple[str, ...] = ()
) -> dict[str, dict[str, str]]:
    """`admin` and `finance` keys plus one per participant, named p1…, bap/bap2…, sup/sup2… in order."""

    def named(prefix: str, ids: tuple[str, ...], numbered_first: bool) -> dict[str, str]:
        return {(f"{prefix}{i + 1}" if numbered_first or i else prefix): pid for i, pid in enumerate(ids)}

    who: dict[str, tuple[str, str | None]] = {"admin": ("admin", None), "finance": ("finance", None)}
    who |= {name: ("provider", pid) for name, pid in named("p", providers, True).items()}
    who |= {name: ("bap", pid) for name, pid in named("bap", baps, False).items()}
    who |= {name: ("supplier", pid) for name, pid in named("sup", suppliers, False).items()}
    return bearer_keys(ledger_url, **who)
