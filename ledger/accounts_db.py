"""Chart accounts and balances in PostgreSQL: open accounts (with their zero balance rows), read an
account with its current balances, and a balance as of an instant recomputed from the journal.

The chart itself (names, ledgers, flags, who may read what) is the pure ledger/accounts.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import psycopg

from ledger import accounts as acct
from ledger.db import iso, us
from ledger.errors import LedgerError, not_found
from schemas import limits


def ensure_accounts(conn: psycopg.Connection, names: Iterable[str], limits: dict[str, int] | None = None) -> None:
    """Create chart accounts (and their zero balance rows) that do not exist yet."""
    specs = [acct.describe(n) for n in sorted(set(names))]
    if not specs:
        return
    limits = limits or {}
    rows = [(s.name, s.ledger, s.flags, limits.get(s.name), s.owner_kind, s.owner_id) for s in specs]
    conn.execute(
        "INSERT INTO ledger.accounts (name, ledger, flags, max_net_debit, owner_kind, owner_id) "
        "SELECT * FROM unnest(%s::text[], %s::text[], %s::int4[], %s::int8[], %s::text[], %s::text[]) "
        "ON CONFLICT (name) DO NOTHING",
        [list(col) for col in zip(*rows, strict=True)],
    )
    conn.execute(
        "INSERT INTO ledger.balances (account, flags, max_net_debit) "
        "SELECT name, flags, max_net_debit FROM ledger.accounts WHERE name = ANY(%s) "
        "ON CONFLICT (account) DO NOTHING",
        ([s.name for s in specs],),
    )


def create_account(conn: psycopg.Connection, name: str) -> dict[str, Any]:
    try:
        spec = acct.describe(name)
    except acct.AccountNameError as exc:
        raise LedgerError("account_invalid", str(exc)) from exc
    if spec.ledger != acct.GBP:
        raise LedgerError("account_invalid", "CFT accounts are created with their series (POST /api/v1/cft/series)")
    ensure_accounts(conn, [name])
    return account_info(conn, name)


def account_info(conn: psycopg.Connection, name: str) -> dict[str, Any]:
    row = conn.execute(
        "SELECT a.name, a.ledger, a.flags, a.max_net_debit, a.owner_kind, a.owner_id, b.debits_posted, "
        "b.credits_posted, b.debits_pending, b.credits_pending FROM ledger.accounts a "
        "JOIN ledger.balances b ON b.account = a.name WHERE a.name = %s",
        (name,),
    ).fetchone()
    if row is None:
        raise not_found(f"account {name!r}")
    return {
        "name": row[0],
        "ledger": row[1],
        "flags": row[2],
        "max_net_debit": row[3],
        "owner_kind": row[4],
        "owner_id": row[5],
        "debits_posted": row[6],
        "credits_posted": row[7],
        "debits_pending": row[8],
        "credits_pending": row[9],
        "balance": row[7] - row[6],
        "pending_balance": row[9] - row[8],
    }


def balance_as_of(conn: psycopg.Connection, name: str, at: datetime) -> dict[str, Any]:
    """Posted and pending balance of `name` from the journal, counting entries with time ≤ `at`."""
    info = account_info(conn, name)
    at_us = us(at)
    row = conn.execute(
        """
        SELECT
          coalesce(sum(CASE WHEN e.kind IN ('single','post') AND e.credit_account = %(a)s THEN e.amount END), 0)
        - coalesce(sum(CASE WHEN e.kind IN ('single','post') AND e.debit_account = %(a)s THEN e.amount END), 0),
          coalesce(sum(CASE WHEN e.kind = 'pending' AND e.credit_account = %(a)s THEN e.amount
                            WHEN e.kind = 'pending' AND e.debit_account = %(a)s THEN -e.amount
                            WHEN e.kind IN ('post','void','expire') AND e.credit_account = %(a)s THEN -p.amount
                            WHEN e.kind IN ('post','void','expire') AND e.debit_account = %(a)s THEN p.amount
                       END), 0),
          count(*)
        FROM ledger.entries e LEFT JOIN ledger.entries p ON p.id = e.pending_id
        WHERE (e.debit_account = %(a)s OR e.credit_account = %(a)s) AND e.time_us <= %(t)s
        """,
        {"a": name, "t": at_us},
    ).fetchone()
    assert row is not None
    return {
        "account": name,
        "ledger": info["ledger"],
        "as_of": iso(at),
        "as_of_us": at_us,
        "balance": int(row[0]),
        "pending_balance": int(row[1]),
        "entries": int(row[2]),
    }


def list_accounts(
    conn: psycopg.Connection,
    *,
    role: str,
    participant_id: str | None,
    ledger: str | None = None,
    owner_kind: str | None = None,
    owner_id: str | None = None,
    prefix: str | None = None,
    after: str | None = None,
    limit: int = 100,
) -> dict[str, Any]:
    """Accounts with their balances, by name, that this key may read (ledger/accounts.py `can_read`: admin
    and finance all; a provider, BAP or supplier key only the accounts it owns), filtered; `after` pages."""
    where: list[str] = []
    args: dict[str, Any] = {}
    if role not in ("admin", "finance"):
        if participant_id is None:
            return {"accounts": [], "next_after": None}
        where.append("a.owner_id = %(me)s AND a.owner_kind IN (%(role)s, 'participant')")
        args.update(me=participant_id, role=role)
    for column, value in (("a.ledger", ledger), ("a.owner_kind", owner_kind), ("a.owner_id", owner_id)):
        if value is not None:
            where.append(f"{column} = %({column[2:]})s")
            args[column[2:]] = value
    if prefix:
        where.append("starts_with(a.name, %(prefix)s)")
        args["prefix"] = prefix
    if after is not None:
        where.append("a.name > %(after)s")
        args["after"] = after
    args["limit"] = max(1, min(limit, limits.MAX_PAGE_SIZE))
    rows = conn.execute(
        "SELECT a.name, a.ledger, a.flags, a.max_net_debit, a.owner_kind, a.owner_id, b.debits_posted, "
        "b.credits_posted, b.debits_pending, b.credits_pending FROM ledger.accounts a "
        "JOIN ledger.balances b ON b.account = a.name"
        + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY a.name LIMIT %(limit)s",
        args,
    ).fetchall()
    accounts = [
        {
            "name": r[0],
            "ledger": r[1],
            "flags": r[2],
            "max_net_debit": r[3],
            "owner_kind": r[4],
            "owner_id": r[5],
            "debits_posted": r[6],
            "credits_posted": r[7],
            "debits_pending": r[8],
            "credits_pending": r[9],
            "balance": r[7] - r[6],
            "pending_balance": r[9] - r[8],
        }
        for r in rows
    ]
    full = len(accounts) == args["limit"]
    return {"accounts": accounts, "next_after": accounts[-1]["name"] if full else None}
