"""Account statements from PostgreSQL: opening balance, every entry of the period with its running
balance and inclusion proof, closing balance and a signed checkpoint (ledger/proofs.py verifies the
document offline; ledger/statement_csv.py is its CSV form).

Each entry of an order or a token sale names the agreement it carries (`agreement_sha256`: the hash its
hashed memo is tagged with, ledger/agreements.py), which GET /api/v1/orders/{order_id}/agreement returns with
the signed messages themselves.

Each settlement entry (`settle:<order>:<run>:…`) names the kind of meter reading it rests on (`reading_kind`: the
weakest kind among the run's declared periods — meter_operator, self_reported, estimated or missing,
ledger/allocation.py); other entries carry None.

Each statement also records the clock it was made under (`kernel.clock.describe()`), beside
`generated_at`; it is information for the reader, not part of what the proofs cover.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from beckn.keys import KeyPair
from kernel import clock
from ledger import accounts as acct
from ledger.accounts_db import account_info
from ledger.agreements import agreement_in_memo
from ledger.agreements_db import known_hashes
from ledger.checkpoints import create_checkpoint, entry_proofs, get_checkpoint, key_handovers
from ledger.db import from_us, iso, us
from ledger.errors import LedgerError
from ledger.proofs import STATEMENT_FORMAT, posted_delta


def statement(
    conn: psycopg.Connection, account: str, start: datetime, end: datetime, keypair: KeyPair | None = None
) -> dict[str, Any]:
    """Opening balance, every entry in [start, end) with its running balance, closing balance, and a
    signed checkpoint with an inclusion proof per entry (ledger/proofs.py verifies it offline)."""
    info = account_info(conn, account)
    if end <= start:
        raise LedgerError("period_invalid", "'to' must be after 'from'")
    from_us_, to_us_ = us(start), us(end)
    opening = _posted_sum(conn, account, from_us_)
    rows = conn.execute(
        "SELECT id, ledger, debit_account, credit_account, amount, kind, pending_id, timeout_us, time_us, memo, "
        "height, idx, canonical FROM ledger.entries WHERE (debit_account = %(a)s OR credit_account = %(a)s) "
        "AND time_us >= %(f)s AND time_us < %(t)s ORDER BY time_us, height, idx",
        {"a": account, "f": from_us_, "t": to_us_},
    ).fetchall()
    top = max((r[10] for r in rows), default=0)
    cp = get_checkpoint(conn, at_least=top) if top else get_checkpoint(conn)
    if cp is None:
        cp = create_checkpoint(conn, keypair)
    if cp is None:  # an empty ledger: nothing to prove, but still a valid (empty) statement needs a head
        raise LedgerError("empty_ledger", "the ledger has no entries yet; nothing to state", status=409)
    proofs = entry_proofs(conn, [(r[10], r[11]) for r in rows], cp["message"]["height"])
    tagged = {r[0]: h for r in rows if (h := agreement_in_memo(r[9])) is not None}
    held = known_hashes(conn, sorted(set(tagged.values())))  # a tag names an agreement only if the ledger holds it
    kinds = _reading_kinds(conn, [r[0] for r in rows])
    balance = opening
    out_rows = []
    market_clock = clock.current()
    for r in rows:
        delta = posted_delta(account, r[5], r[2], r[3], r[4])
        balance += delta
        out_rows.append(
            {
                "id": r[0],
                "time_us": r[8],
                "time": iso(from_us(r[8])),
                "kind": r[5],
                "debit_account": r[2],
                "credit_account": r[3],
                "amount": r[4],
                "pending_id": r[6],
                "memo": r[9],
                "agreement_sha256": tagged[r[0]] if tagged.get(r[0]) in held else None,
                "reading_kind": kinds.get(run) if (run := _settlement_run(r[0])) else None,
                "posted_delta": delta,
                "running_balance": balance,
                "canonical": bytes(r[12]).decode("utf-8"),
                "proof": proofs[(r[10], r[11])],
            }
        )
    return {
        "format": STATEMENT_FORMAT,
        "account": account,
        "ledger": info["ledger"],
        "unit": "pence" if info["ledger"] == acct.GBP else "tokens (1 = 1 MWh)",
        "balance_convention": "credits minus debits, posted entries only",
        "from": iso(start),
        "to": iso(end),
        "from_us": from_us_,
        "to_us": to_us_,
        "opening_balance": opening,
        "closing_balance": balance,
        "entry_count": len(out_rows),
        "entries": out_rows,
        "checkpoint": cp,
        "generated_at": iso(market_clock.now()),
        "clock": market_clock.describe(),
        # the ledger's key rotations, so any of its keys verifies the checkpoint offline (ledger/proofs.py)
        **({"key_handovers": handovers} if (handovers := key_handovers(conn)) else {}),
    }


def _posted_sum(conn: psycopg.Connection, account: str, before_us: int) -> int:
    row = conn.execute(
        "SELECT coalesce((SELECT sum(amount) FROM ledger.entries WHERE credit_account = %(a)s AND time_us < %(t)s "
        "AND kind IN ('single','post')), 0) - coalesce((SELECT sum(amount) FROM ledger.entries WHERE "
        "debit_account = %(a)s AND time_us < %(t)s AND kind IN ('single','post')), 0)",
        {"a": account, "t": before_us},
    ).fetchone()
    return int(row[0]) if row else 0


def _settlement_run(entry_id: str) -> tuple[str, str] | None:
    """(order id, run) of a settlement entry `settle:<order>:<run>:<line>[:reversal]`, else None."""
    parts = entry_id.split(":")
    return (parts[1], parts[2]) if len(parts) >= 4 and parts[0] == "settle" else None


def _reading_kinds(conn: psycopg.Connection, entry_ids: list[str]) -> dict[tuple[str, str], str | None]:
    """The reading kind each settlement run among `entry_ids` rests on (None: a run stored before kinds were)."""
    runs = sorted({run for e in entry_ids if (run := _settlement_run(e)) is not None})
    if not runs:
        return {}
    rows = conn.execute(
        "SELECT order_id, run, result->>'reading_kind' FROM ledger.settlement_runs "
        "WHERE (order_id, run) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
        ([o for o, _ in runs], [r for _, r in runs]),
    ).fetchall()
    return {(o, r): kind for o, r, kind in rows}
