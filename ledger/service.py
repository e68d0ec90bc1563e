"""Ledger use cases over PostgreSQL (raw psycopg 3; the rules themselves are in the pure modules).

Every function that writes takes an open connection whose transaction the caller owns
(`transaction(url)` gives one, retrying on unique-key races), writes its own rows first and the ledger
entries last (ledger/store.py: the chain lock must be the last lock taken). Functions take `now`
explicitly where the rules depend on the clock; production callers pass the wall clock, the demo and
tests may pass a simulated one (ledger/demo.py explains how that stays honest).

Money never leaves integer pence here; quantities arrive already converted to integer units
(Wh, W, pence/MWh) by the HTTP/CLI layers.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import io
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from grid.money import MAX_SAFE_INTEGER, gbp_per_mwh_to_millipence
from grid.periods import PERIOD, is_period_aligned, require_utc
from kernel import clock
from ledger import accounts as acct
from ledger import cft as cftrules
from ledger.canonical import canonical_json
from ledger.chain import CheckpointRef, EntryRoots, VerifyResult, describe_mismatch, entry_roots, verify_links
from ledger.errors import LedgerError, forbidden, not_found
from ledger.merkle import leaf_hash, levels, root_from_leaf_hashes
from ledger.proofs import STATEMENT_FORMAT, checkpoint_message, entry_proof, posted_delta, sign_checkpoint
from ledger.proofs import verify_checkpoint as verify_checkpoint_doc
from ledger.settlement import (
    BUILTIN_POLICIES,
    RUNS,
    EscrowState,
    OrderTerms,
    Policy,
    PolicyError,
    SettlementInputs,
    declared_periods,
    inputs_digest,
    max_exposure_pence,
    next_run,
    reserve_transfer_id,
    run_due_at,
    run_transfers,
    settle,
)
from ledger.store import RETRYABLE, RequestResult, append, append_one
from ledger.transfers import TransferError, TransferSpec

T = TypeVar("T")
CLOCK_SKEW = timedelta(seconds=5)
MAX_READINGS_PER_REQUEST = 20_000
RESERVED_PREFIXES = ("settle:", "order:", "cft:", "sys:")


def us(t: datetime) -> int:
    """Aware datetime → integer microseconds since the epoch (UTC), exactly."""
    t = require_utc(t)
    delta = t - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(value: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=value)


def iso(t: datetime) -> str:
    return require_utc(t).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def utcnow() -> datetime:
    return clock.now()


# --- connections ---------------------------------------------------------------------------------


def conninfo(url: str | None = None) -> str:
    from kernel import db

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


# --- accounts and balances -----------------------------------------------------------------------


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


# --- generic transfers -----------------------------------------------------------------------------


def check_client_transfer_ids(specs: Sequence[TransferSpec]) -> None:
    """Ids under the system's prefixes are reserved for settlement, orders and CFT operations."""
    for s in specs:
        if isinstance(s.id, str) and s.id.startswith(RESERVED_PREFIXES):
            raise TransferError(
                "id_reserved",
                f"transfer ids starting with {', '.join(RESERVED_PREFIXES)} are "
                "reserved for the ledger's own operations",
                transfer_id=s.id,
            )


def transfer_result_json(res: RequestResult) -> dict[str, Any]:
    return {"status": res.status, "height": res.height, "transfers": [e.as_json() for e in res.entries]}


def get_transfer(conn: psycopg.Connection, transfer_id: str) -> dict[str, Any]:
    row = conn.execute(
        "SELECT id, ledger, debit_account, credit_account, amount, kind, pending_id, timeout_us, time_us, memo, "
        "height, idx FROM ledger.entries WHERE id = %s",
        (transfer_id,),
    ).fetchone()
    if row is None:
        raise not_found(f"transfer {transfer_id!r}")
    out = dict(
        zip(
            (
                "id",
                "ledger",
                "debit_account",
                "credit_account",
                "amount",
                "kind",
                "pending_id",
                "timeout_us",
                "time_us",
                "memo",
                "height",
                "idx",
            ),
            row,
            strict=True,
        )
    )
    if out["kind"] == "pending":
        res = conn.execute("SELECT id, kind FROM ledger.entries WHERE pending_id = %s", (transfer_id,)).fetchone()
        out["resolved_by"] = None if res is None else {"id": res[0], "kind": res[1]}
    return out


# --- policies ----------------------------------------------------------------------------------------


def get_policy(conn: psycopg.Connection, version: str) -> Policy:
    """A stored policy; the built-in ones are stored on first use (policies are append-only)."""
    row = conn.execute("SELECT params FROM ledger.policies WHERE version = %s", (version,)).fetchone()
    if row is None:
        builtin = BUILTIN_POLICIES.get(version)
        if builtin is None:
            raise LedgerError(
                "unknown_policy",
                f"settlement policy {version!r} does not exist (built in: {', '.join(BUILTIN_POLICIES)})",
            )
        conn.execute(
            "INSERT INTO ledger.policies (version, params) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (version, json.dumps(builtin.to_json())),
        )
        row = conn.execute("SELECT params FROM ledger.policies WHERE version = %s", (version,)).fetchone()
        assert row is not None
    return Policy.from_json(version, row[0])


def create_policy(conn: psycopg.Connection, version: str, params: dict[str, Any]) -> dict[str, Any]:
    try:
        acct.check_id(version, "policy version")
        policy = Policy.from_json(version, params)
    except (PolicyError, acct.AccountNameError, TypeError) as exc:
        raise LedgerError("policy_invalid", str(exc)) from exc
    stored = policy.to_json()
    row = conn.execute("SELECT params FROM ledger.policies WHERE version = %s", (version,)).fetchone()
    if row is not None:
        if row[0] != stored:
            raise LedgerError(
                "policy_conflict",
                f"policy {version} already exists with other parameters; "
                "policies are immutable — publish a new version",
                status=409,
            )
        return {"status": "exists", "version": version, "params": stored}
    if version in BUILTIN_POLICIES and BUILTIN_POLICIES[version].to_json() != stored:
        raise LedgerError("policy_conflict", f"{version} is a built-in policy name", status=409)
    conn.execute("INSERT INTO ledger.policies (version, params) VALUES (%s, %s)", (version, json.dumps(stored)))
    return {"status": "created", "version": version, "params": stored}


# --- orders ------------------------------------------------------------------------------------------

_ORDER_COLUMNS = (
    "order_id, provider_id, bap_id, meter_id, supplier_id, window_start, window_end, contracted_w, "
    "price_millipence_per_mwh, availability_price_millipence_per_mw_h, settlement_method, resource_type, confirmed_at, "
    "policy_version"
)


def _order_from_row(r: Sequence[Any]) -> OrderTerms:
    return OrderTerms(
        r[0],
        r[1],
        r[2],
        r[3],
        r[4],
        r[5].astimezone(UTC),
        r[6].astimezone(UTC),
        r[7],
        r[8],
        r[9],
        r[10],
        r[11],
        r[12].astimezone(UTC),
        r[13],
    )


def load_order(conn: psycopg.Connection, order_id: str) -> tuple[OrderTerms, str]:
    row = conn.execute(
        f"SELECT {_ORDER_COLUMNS}, transaction_id FROM ledger.orders WHERE order_id = %s", (order_id,)
    ).fetchone()
    if row is None:
        raise not_found(f"order {order_id!r}")
    return _order_from_row(row), row[14]


def validate_order(terms: OrderTerms) -> None:
    try:
        for value, what in (
            (terms.order_id, "order_id"),
            (terms.provider_id, "provider_id"),
            (terms.bap_id, "bap_id"),
            (terms.supplier_id, "supplier_id"),
        ):
            acct.check_id(value, what)
    except acct.AccountNameError as exc:
        raise LedgerError("id_invalid", str(exc)) from exc
    if not terms.meter_id or len(terms.meter_id) > 128 or any(c.isspace() for c in terms.meter_id):
        raise LedgerError("meter_invalid", "meter_id must be 1-128 characters without spaces")
    for t, what in ((terms.window_start, "window_start"), (terms.window_end, "window_end")):
        if not is_period_aligned(t):
            raise LedgerError("window_invalid", f"{what} must be on a UTC half-hour boundary (…:00 or …:30)")
    if terms.window_end <= terms.window_start:
        raise LedgerError("window_invalid", "window_end must be after window_start")
    if terms.window_end - terms.window_start > timedelta(days=7):
        raise LedgerError("window_invalid", "a delivery window may not exceed 7 days")
    if terms.contracted_w <= 0 or terms.contracted_w > 10**12:
        raise LedgerError("quantity_invalid", "contracted_kw must be positive (and below 1 TW)")
    if not 0 <= terms.price_millipence_per_mwh <= 10**12:
        raise LedgerError("price_invalid", "price_gbp_per_mwh must be between 0 and 10,000,000")
    avail = terms.availability_price_millipence_per_mw_h
    if avail is not None and not 0 <= avail <= 10**12:
        raise LedgerError("price_invalid", "availability price must be between 0 and 10,000,000 £/MW/h")
    if terms.settlement_method not in ("P415", "CFT"):
        raise LedgerError("method_invalid", "settlement_method must be P415 or CFT")
    if terms.resource_type not in ("compute", "storage"):
        raise LedgerError("resource_type_invalid", "resource_type must be compute or storage")


def _claim_meter(conn: psycopg.Connection, meter_id: str, provider_id: str) -> None:
    conn.execute(
        "INSERT INTO ledger.meters (meter_id, provider_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
        (meter_id, provider_id),
    )
    row = conn.execute("SELECT provider_id FROM ledger.meters WHERE meter_id = %s", (meter_id,)).fetchone()
    if row is None or row[0] != provider_id:
        raise LedgerError("meter_owned_by_other", f"meter {meter_id} belongs to another provider", status=409)


def register_order(conn: psycopg.Connection, terms: OrderTerms, transaction_id: str, now: datetime) -> dict[str, Any]:
    """Register a confirmed order for settlement (idempotent by order_id) and reserve its maximum
    utilisation + availability value from the buyer into `escrow:<order>` as a pending transfer."""
    validate_order(terms)
    if terms.confirmed_at > now + CLOCK_SKEW:
        raise LedgerError("confirmed_in_future", "confirmed_at is later than the ledger's clock")
    if not transaction_id or len(transaction_id) > 200:
        raise LedgerError("transaction_invalid", "transaction_id is required (at most 200 characters)")
    policy = get_policy(conn, terms.policy_version)
    existing = conn.execute(
        f"SELECT {_ORDER_COLUMNS}, transaction_id FROM ledger.orders WHERE order_id = %s", (terms.order_id,)
    ).fetchone()
    accepted, rejected = declared_periods(terms.window_start, terms.window_end, terms.confirmed_at, policy)
    summary = {
        "order_id": terms.order_id,
        "declared_periods": [p.label() for p in accepted],
        "rejected_periods": [{"period": p.label(), "reason": why} for p, why in rejected],
        "reserve_pence": max_exposure_pence(terms, policy),
    }
    if existing is not None:
        if _order_from_row(existing) != terms or existing[14] != transaction_id:
            raise LedgerError(
                "order_conflict", f"order {terms.order_id} is already registered with different terms", status=409
            )
        return {"status": "exists", **summary}
    if not accepted:
        raise LedgerError(
            "after_gate_closure",
            "the order was confirmed after gate closure (1 h before start) "
            "for every period of its window; nothing to settle",
            rejected=summary["rejected_periods"],
        )
    _claim_meter(conn, terms.meter_id, terms.provider_id)
    conn.execute(
        f"INSERT INTO ledger.orders ({_ORDER_COLUMNS}, transaction_id, registered_at) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            terms.order_id,
            terms.provider_id,
            terms.bap_id,
            terms.meter_id,
            terms.supplier_id,
            terms.window_start,
            terms.window_end,
            terms.contracted_w,
            terms.price_millipence_per_mwh,
            terms.availability_price_millipence_per_mw_h,
            terms.settlement_method,
            terms.resource_type,
            terms.confirmed_at,
            terms.policy_version,
            transaction_id,
            now,
        ),
    )
    names = [
        acct.bap_cash(terms.bap_id),
        acct.provider_revenue(terms.provider_id),
        acct.provider_penalties(terms.provider_id),
        acct.supplier_compensation(terms.supplier_id),
        acct.POT,
        acct.escrow(terms.order_id),
    ]
    ensure_accounts(conn, names)
    reserve = summary["reserve_pence"]
    if reserve > 0:
        timeout = terms.window_end + timedelta(hours=policy.escrow_timeout_hours)
        append_one(
            conn,
            [
                TransferSpec(
                    reserve_transfer_id(terms.order_id),
                    "pending",
                    acct.GBP,
                    acct.bap_cash(terms.bap_id),
                    acct.escrow(terms.order_id),
                    reserve,
                    timeout_us=us(timeout),
                    memo=f"reserve for order {terms.order_id}",
                )
            ],
            rule_now_us=us(now),
        )
    return {"status": "created", **summary}


def cancel_order(conn: psycopg.Connection, order_id: str, now: datetime, reason: str = "") -> dict[str, Any]:
    """Cancel before the window opens (../shared/DESIGN.md order states); releases the reserve."""
    terms, _ = load_order(conn, order_id)
    row = conn.execute(
        "SELECT cancelled_at FROM ledger.order_cancellations WHERE order_id = %s", (order_id,)
    ).fetchone()
    if row is not None:
        return {"status": "exists", "order_id": order_id, "cancelled_at": iso(row[0])}
    if now >= terms.window_start:
        raise LedgerError("window_started", "an order can only be cancelled before its window opens", status=409)
    conn.execute(
        "INSERT INTO ledger.order_cancellations (order_id, cancelled_at, reason) VALUES (%s, %s, %s)",
        (order_id, now, reason[:500]),
    )
    pending = conn.execute("SELECT 1 FROM ledger.entries WHERE id = %s", (reserve_transfer_id(order_id),)).fetchone()
    if pending is not None:
        append_one(
            conn,
            [
                TransferSpec(
                    f"order:{order_id}:cancel",
                    "void",
                    pending_id=reserve_transfer_id(order_id),
                    memo=f"order {order_id} cancelled",
                )
            ],
            rule_now_us=us(now),
        )
    return {"status": "cancelled", "order_id": order_id, "cancelled_at": iso(now)}


def order_summary(conn: psycopg.Connection, order_id: str) -> dict[str, Any]:
    terms, transaction_id = load_order(conn, order_id)
    runs = conn.execute(
        "SELECT run, as_of, lines, inputs_sha256 FROM ledger.settlement_runs WHERE order_id = %s ORDER BY seq",
        (order_id,),
    ).fetchall()
    cancelled = conn.execute(
        "SELECT cancelled_at FROM ledger.order_cancellations WHERE order_id = %s", (order_id,)
    ).fetchone()
    return {
        **terms.to_json(),
        "transaction_id": transaction_id,
        "cancelled_at": None if cancelled is None else iso(cancelled[0]),
        "runs": [
            {"run": r[0], "as_of": iso(r[1]), "lines_pence": r[2], "inputs_sha256": bytes(r[3]).hex()} for r in runs
        ],
    }


# --- metering and prices --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reading:
    period_start: datetime
    energy_wh: int


def ingest_metering(
    conn: psycopg.Connection,
    meter_id: str,
    readings: Sequence[Reading],
    *,
    provider_id: str | None,
    now: datetime,
    correction: bool = False,
    source: str = "api",
) -> dict[str, Any]:
    """Store half-hourly readings for one meter, all or nothing. Malformed or duplicate readings are
    refused with a reason; a correction is stored as a new version (the old one stays)."""
    if not readings:
        raise LedgerError("no_readings", "at least one reading is required")
    if len(readings) > MAX_READINGS_PER_REQUEST:
        raise LedgerError("too_many_readings", f"at most {MAX_READINGS_PER_REQUEST} readings per request")
    problems: list[str] = []
    seen: set[datetime] = set()
    for r in readings:
        label = r.period_start.isoformat() if isinstance(r.period_start, datetime) else repr(r.period_start)
        if not isinstance(r.period_start, datetime) or r.period_start.tzinfo is None:
            problems.append(f"{label}: period_start must be an aware UTC instant")
            continue
        if not is_period_aligned(r.period_start):
            problems.append(f"{label}: not the start of a half-hour period")
        if r.period_start + PERIOD > now + CLOCK_SKEW:
            problems.append(f"{label}: the period has not ended yet")
        if type(r.energy_wh) is not int or r.energy_wh < 0:
            problems.append(f"{label}: energy must be a non-negative number of kWh")
        elif r.energy_wh > MAX_SAFE_INTEGER:
            problems.append(f"{label}: energy is implausibly large")
        if r.period_start in seen:
            problems.append(f"{label}: appears twice in this request")
        seen.add(r.period_start)
    if problems:
        raise LedgerError(
            "malformed_readings",
            f"{len(problems)} malformed reading(s): " + "; ".join(problems[:10]),
            problems=problems[:100],
        )
    row = conn.execute("SELECT provider_id FROM ledger.meters WHERE meter_id = %s", (meter_id,)).fetchone()
    if row is None:
        if provider_id is None:
            raise LedgerError("unknown_meter", f"meter {meter_id} is not registered; name its provider")
        if not meter_id or len(meter_id) > 128 or any(c.isspace() for c in meter_id):
            raise LedgerError("meter_invalid", "meter_id must be 1-128 characters without spaces")
        _claim_meter(conn, meter_id, provider_id)
    elif provider_id is not None and row[0] != provider_id:
        raise forbidden(f"meter {meter_id} belongs to another provider")
    starts = [r.period_start for r in readings]
    latest = {
        r[0].astimezone(UTC): (r[1], r[2])
        for r in conn.execute(
            "SELECT DISTINCT ON (period_start) period_start, version, energy_wh FROM ledger.metering "
            "WHERE meter_id = %s AND period_start = ANY(%s) ORDER BY period_start, version DESC",
            (meter_id, starts),
        )
    }
    dupes = []
    for r in readings:
        prev = latest.get(r.period_start.astimezone(UTC))
        if prev is None:
            continue
        if not correction:
            dupes.append(
                f"{iso(r.period_start)}: already recorded (version {prev[0]}, {prev[1]} Wh); "
                "send correction=true to supersede it"
            )
        elif prev[1] == r.energy_wh:
            dupes.append(f"{iso(r.period_start)}: correction repeats the current value {prev[1]} Wh")
    if dupes:
        raise LedgerError(
            "duplicate_readings",
            f"{len(dupes)} duplicate reading(s): " + "; ".join(dupes[:10]),
            status=409,
            problems=dupes[:100],
        )
    versions = [latest.get(r.period_start.astimezone(UTC), (0, 0))[0] + 1 for r in readings]
    with conn.cursor().copy(
        "COPY ledger.metering (meter_id, period_start, version, energy_wh, received_at, source) FROM STDIN"
    ) as copy:
        for r, v in zip(readings, versions, strict=True):
            copy.write_row((meter_id, r.period_start, v, r.energy_wh, now, source[:100]))
    return {
        "status": "created",
        "meter_id": meter_id,
        "accepted": len(readings),
        "corrections": sum(1 for v in versions if v > 1),
    }


@dataclass(frozen=True)
class PriceRow:
    period_start: datetime
    imbalance_millipence_per_mwh: int | None
    market_index_millipence_per_mwh: int | None


def ingest_prices(conn: psycopg.Connection, rows: Sequence[PriceRow], source: str, now: datetime) -> dict[str, int]:
    """Insert-only: an existing period keeps its price; a different value is counted as a conflict."""
    if not rows:
        return {"inserted": 0, "unchanged": 0, "conflicts": 0}
    for r in rows:
        if not is_period_aligned(r.period_start):
            raise LedgerError("price_invalid", f"{r.period_start.isoformat()} is not a half-hour period start")
    cols = (
        [r.period_start for r in rows],
        [r.imbalance_millipence_per_mwh for r in rows],
        [r.market_index_millipence_per_mwh for r in rows],
    )
    existing = {
        r[0].astimezone(UTC): (r[1], r[2])
        for r in conn.execute(
            "SELECT period_start, imbalance_millipence_per_mwh, market_index_millipence_per_mwh "
            "FROM ledger.prices WHERE period_start = ANY(%s)",
            (cols[0],),
        )
    }
    inserted = conn.execute(
        "INSERT INTO ledger.prices (period_start, imbalance_millipence_per_mwh, market_index_millipence_per_mwh, "
        "source, received_at) SELECT p, i, m, %s, %s "
        "FROM unnest(%s::timestamptz[], %s::int8[], %s::int8[]) AS u(p, i, m) ON CONFLICT (period_start) DO NOTHING",
        (source[:300], now, *cols),
    ).rowcount
    conflicts = sum(
        1
        for r in rows
        if (old := existing.get(r.period_start.astimezone(UTC))) is not None
        and old != (r.imbalance_millipence_per_mwh, r.market_index_millipence_per_mwh)
    )
    return {"inserted": inserted, "unchanged": len(rows) - inserted - conflicts, "conflicts": conflicts}


def read_prices_csv(path: Path) -> list[PriceRow]:
    """Elexon system prices as in ../shared/data/grid/gb_system_prices_2023-01_2024-05.csv (see its
    README): period_start_utc, period_end_utc, imbalance_price_gbp_per_mwh, market_index_price_gbp_per_mwh;
    empty cells are missing prices. £/MWh (up to 5 decimals) → integer milli-pence/MWh."""
    out = []
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            start = datetime.fromisoformat(row["period_start_utc"].replace("Z", "+00:00"))

            def pence(text: str | None, what: str) -> int | None:
                return None if not text else gbp_per_mwh_to_millipence(text, what)

            out.append(
                PriceRow(
                    start,
                    pence(row.get("imbalance_price_gbp_per_mwh"), "imbalance price"),
                    pence(row.get("market_index_price_gbp_per_mwh"), "market index price"),
                )
            )
    return out


# --- settlement ------------------------------------------------------------------------------------------


def load_inputs(
    conn: psycopg.Connection, order_id: str, as_of: datetime
) -> tuple[OrderTerms, Policy, SettlementInputs, bool]:
    """Everything settle() needs, exactly as the ledger knew it at `as_of` (rule 12)."""
    terms, _ = load_order(conn, order_id)
    policy = get_policy(conn, terms.policy_version)
    lookback = timedelta(days=policy.baseline.lookback_days + 2)
    lo = terms.window_start - lookback
    hi = terms.window_end + (policy.rebound_periods + 1) * PERIOD
    readings = {
        r[0].astimezone(UTC): r[1]
        for r in conn.execute(
            "SELECT DISTINCT ON (period_start) period_start, energy_wh FROM ledger.metering "
            "WHERE meter_id = %s AND period_start >= %s AND period_start < %s AND received_at <= %s "
            "ORDER BY period_start, version DESC",
            (terms.meter_id, lo, hi, as_of),
        )
    }
    event_days: set[date] = set()
    for r in conn.execute(
        f"SELECT {_ORDER_COLUMNS} FROM ledger.orders o WHERE meter_id = %s AND window_end > %s AND "
        "window_start < %s AND registered_at <= %s AND NOT EXISTS (SELECT 1 FROM ledger.order_cancellations c "
        "WHERE c.order_id = o.order_id AND c.cancelled_at <= %s)",
        (terms.meter_id, lo, hi, as_of, as_of),
    ):
        other = _order_from_row(r)
        other_policy = policy if other.policy_version == policy.version else get_policy(conn, other.policy_version)
        accepted, _ = declared_periods(other.window_start, other.window_end, other.confirmed_at, other_policy)
        event_days.update(p.settlement_date for p in accepted)
    imbalance: dict[datetime, int | None] = {}
    market: dict[datetime, int | None] = {}
    for r in conn.execute(
        "SELECT period_start, imbalance_millipence_per_mwh, market_index_millipence_per_mwh FROM ledger.prices "
        "WHERE period_start >= %s AND period_start < %s AND received_at <= %s",
        (terms.window_start, terms.window_end, as_of),
    ):
        imbalance[r[0].astimezone(UTC)] = r[1]
        market[r[0].astimezone(UTC)] = r[2]
    cancelled = (
        conn.execute(
            "SELECT 1 FROM ledger.order_cancellations WHERE order_id = %s AND cancelled_at <= %s", (order_id, as_of)
        ).fetchone()
        is not None
    )
    return terms, policy, SettlementInputs(terms, readings, frozenset(event_days), imbalance, market), cancelled


@dataclass
class RunOutcome:
    order_id: str
    status: str  # settled | not_due | complete | cancelled
    run: str | None = None
    lines: dict[str, int] = field(default_factory=dict)
    transfers: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "status": self.status,
            "run": self.run,
            "lines_pence": self.lines,
            "transfers": self.transfers,
            "reason": self.reason,
        }


def _escrow_state(conn: psycopg.Connection, order_id: str, as_of_us: int) -> EscrowState | None:
    pid = reserve_transfer_id(order_id)
    row = conn.execute(
        "SELECT amount, timeout_us FROM ledger.entries WHERE id = %s AND kind = 'pending'", (pid,)
    ).fetchone()
    if row is None:
        return None
    resolved = conn.execute("SELECT 1 FROM ledger.entries WHERE pending_id = %s", (pid,)).fetchone() is not None
    usable = not resolved and (row[1] is None or row[1] > as_of_us)
    return EscrowState(pid, row[0], usable)


def run_settlement(conn: psycopg.Connection, order_id: str, as_of: datetime, *, force: bool = False) -> RunOutcome:
    """Perform the order's next settlement run if it is due at `as_of` (II→SF→R1→R2→R3→RF→DF).

    Idempotent: the run row's primary key (order_id, run) and the deterministic transfer ids mean a
    second attempt — a Celery retry, two beat ticks — finds the run done and appends nothing."""
    terms, policy, inputs, cancelled = load_inputs(conn, order_id, as_of)
    if cancelled:
        return RunOutcome(order_id, "cancelled", reason="order cancelled before its window")
    done = conn.execute(
        "SELECT run, lines FROM ledger.settlement_runs WHERE order_id = %s ORDER BY seq", (order_id,)
    ).fetchall()
    run = next_run([r[0] for r in done])
    if run is None:
        return RunOutcome(order_id, "complete", reason="all runs II..DF done")
    if as_of < terms.window_end:
        return RunOutcome(order_id, "not_due", run, reason="the delivery window has not closed")
    if not force and as_of < run_due_at(terms, run, policy):
        accepted, _ = declared_periods(terms.window_start, terms.window_end, terms.confirmed_at, policy)
        metered = all(p.start_utc in inputs.readings for p in accepted)
        if not (run == "II" and metered):
            return RunOutcome(
                order_id, "not_due", run, reason=f"{run} falls due at {iso(run_due_at(terms, run, policy))}"
            )
    result = settle(inputs, policy)
    previous = {k: int(v) for k, v in done[-1][1].items()} if done else None
    as_of_us = us(as_of)
    escrow = _escrow_state(conn, order_id, as_of_us) if previous is None else None
    planned = run_transfers(terms, run, result.lines, previous, policy, escrow)
    conn.execute(
        "INSERT INTO ledger.settlement_runs (order_id, run, seq, as_of, policy_version, inputs_sha256, lines, result) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (
            order_id,
            run,
            RUNS.index(run) + 1,
            as_of,
            policy.version,
            inputs_digest(inputs, policy, as_of),
            json.dumps(result.lines),
            json.dumps(result.to_json()),
        ),
    )
    specs = [
        TransferSpec(
            t.id,
            t.kind,
            acct.GBP if t.kind == "single" else None,
            t.debit_account if t.kind == "single" else None,
            t.credit_account if t.kind == "single" else None,
            t.amount if t.kind in ("single", "post") else None,
            t.pending_id,
            None,
            t.memo,
        )
        for t in planned
    ]
    entries: list[dict[str, Any]] = []
    if specs:
        ensure_accounts(conn, [n for t in planned for n in (t.debit_account, t.credit_account)])
        entries = [e.as_json() for e in append_one(conn, specs, rule_now_us=as_of_us).entries]
    return RunOutcome(order_id, "settled", run, dict(result.lines), entries)


def settle_due(
    url: str | None, now: datetime, *, order_ids: Sequence[str] | None = None, force: bool = False
) -> list[RunOutcome]:
    """Every run that is due at `now`, each in its own transaction, catching up in order. Re-running
    is a no-op (nothing new falls due)."""
    outcomes: list[RunOutcome] = []
    with connection(url) as conn:
        if order_ids is None:
            order_ids = [
                r[0]
                for r in conn.execute(
                    "SELECT o.order_id FROM ledger.orders o WHERE o.window_end <= %s "
                    "AND NOT EXISTS (SELECT 1 FROM ledger.order_cancellations c WHERE c.order_id = o.order_id) "
                    "AND (SELECT count(*) FROM ledger.settlement_runs r WHERE r.order_id = o.order_id) < 7 "
                    "ORDER BY o.window_end, o.order_id",
                    (now,),
                )
            ]
            conn.commit()
        for oid in order_ids:
            for _ in RUNS:
                outcome = in_transaction(conn, lambda c, oid=oid: run_settlement(c, oid, now, force=force))
                if outcome.status != "settled":
                    break
                outcomes.append(outcome)
                if force:
                    break
    return outcomes


def stored_run(conn: psycopg.Connection, order_id: str, run: str) -> dict[str, Any]:
    row = conn.execute(
        "SELECT as_of, policy_version, inputs_sha256, lines, result FROM ledger.settlement_runs "
        "WHERE order_id = %s AND run = %s",
        (order_id, run),
    ).fetchone()
    if row is None:
        raise not_found(f"run {run} of order {order_id}")
    return {
        "order_id": order_id,
        "run": run,
        "as_of": row[0].astimezone(UTC),
        "policy_version": row[1],
        "inputs_sha256": bytes(row[2]).hex(),
        "lines_pence": row[3],
        "result": row[4],
    }


def ledger_lines_for_order(conn: psycopg.Connection, order_id: str, upto_run: str | None = None) -> dict[str, int]:
    """Net amount per settlement line as the ledger holds it (payments minus reversals)."""
    out = dict.fromkeys(("utilisation", "availability", "shortfall", "supplier_compensation"), 0)
    allowed = RUNS if upto_run is None else RUNS[: RUNS.index(upto_run) + 1]
    for tid, amount in conn.execute(
        "SELECT id, amount FROM ledger.entries WHERE id LIKE %s AND kind = 'single'", (f"settle:{order_id}:%",)
    ):
        parts = tid.split(":")  # settle:<order>:<run>:<line>[:reversal]
        run, line = parts[2], parts[3]
        if run not in allowed or line not in out:
            continue
        out[line] += -amount if len(parts) == 5 and parts[4] == "reversal" else amount
    return out


# --- compute flex tokens --------------------------------------------------------------------------------


def _series(conn: psycopg.Connection, series_id: str) -> cftrules.Series:
    row = conn.execute(
        "SELECT series_id, provider_id, valid_from, valid_to, declared_capacity_w, max_tokens "
        "FROM ledger.cft_series WHERE series_id = %s",
        (series_id,),
    ).fetchone()
    if row is None:
        raise not_found(f"CFT series {series_id!r}")
    return cftrules.Series(row[0], row[1], row[2].astimezone(UTC), row[3].astimezone(UTC), row[4], row[5])


def create_series(
    conn: psycopg.Connection,
    series_id: str,
    provider_id: str,
    valid_from: datetime,
    valid_to: datetime,
    declared_capacity_w: int,
    now: datetime,
) -> dict[str, Any]:
    try:
        acct.check_id(series_id, "series_id")
        acct.check_id(provider_id, "provider_id")
    except acct.AccountNameError as exc:
        raise LedgerError("id_invalid", str(exc)) from exc
    tokens = cftrules.max_tokens(declared_capacity_w, valid_from, valid_to)
    if valid_to <= now:
        raise LedgerError("window_invalid", "the validity window has already ended")
    row = conn.execute(
        "SELECT provider_id, valid_from, valid_to, declared_capacity_w FROM ledger.cft_series WHERE series_id = %s",
        (series_id,),
    ).fetchone()
    out = {
        "series_id": series_id,
        "provider_id": provider_id,
        "valid_from": iso(valid_from),
        "valid_to": iso(valid_to),
        "declared_capacity_w": declared_capacity_w,
        "max_tokens": tokens,
        "ledger": acct.cft_ledger(series_id),
    }
    if row is not None:
        if (row[0], row[1], row[2], row[3]) != (provider_id, valid_from, valid_to, declared_capacity_w):
            raise LedgerError("series_conflict", f"series {series_id} exists with different terms", status=409)
        return {"status": "exists", **out}
    conn.execute(
        "INSERT INTO ledger.ledgers (code, kind, unit) VALUES (%s, 'token', 'token (1 MWh)')",
        (acct.cft_ledger(series_id),),
    )
    conn.execute(
        "INSERT INTO ledger.cft_series (series_id, provider_id, valid_from, valid_to, declared_capacity_w, "
        "max_tokens) VALUES (%s, %s, %s, %s, %s, %s)",
        (series_id, provider_id, valid_from, valid_to, declared_capacity_w, tokens),
    )
    issuance = acct.issuance(provider_id, series_id)
    ensure_accounts(
        conn,
        [
            issuance,
            acct.holding(provider_id, series_id),
            acct.redeemed(provider_id, series_id),
            acct.expired(provider_id, series_id),
        ],
        limits={issuance: tokens},
    )
    return {"status": "created", **out}


def _cft_append(
    conn: psycopg.Connection, specs: list[TransferSpec], now: datetime, series: cftrules.Series, what: str
) -> RequestResult:
    try:
        return append_one(conn, specs, rule_now_us=us(now))
    except TransferError as exc:
        if exc.code == "exceeds_limit":
            minted = conn.execute(
                "SELECT debits_posted - credits_posted FROM ledger.balances WHERE account = %s",
                (acct.issuance(series.provider_id, series.series_id),),
            ).fetchone()
            raise LedgerError(
                "exceeds_capacity",
                f"minting would exceed series {series.series_id}'s declared "
                f"capacity of {series.max_tokens} tokens ({minted[0] if minted else 0} minted)",
                status=409,
            ) from exc
        if exc.code == "exceeds_credits" and (exc.transfer_id or "").endswith((":tokens", ":burn")):
            raise LedgerError(
                "insufficient_tokens", f"{what}: the holder does not hold enough tokens ({exc.message})", status=409
            ) from exc
        raise


def mint(conn: psycopg.Connection, op_id: str, series_id: str, tokens: int, now: datetime) -> dict[str, Any]:
    series = _series(conn, series_id)
    cftrules.check_tradable(series, now)
    res = _cft_append(
        conn,
        [
            TransferSpec(
                f"cft:{op_id}:tokens",
                "single",
                acct.cft_ledger(series_id),
                acct.issuance(series.provider_id, series_id),
                acct.holding(series.provider_id, series_id),
                tokens,
                memo=f"mint {tokens} CFT of {series_id}",
            )
        ],
        now,
        series,
        "mint",
    )
    return transfer_result_json(res)


def trade(
    conn: psycopg.Connection,
    op_id: str,
    series_id: str,
    seller_id: str,
    buyer_id: str,
    tokens: int,
    price_pence: int,
    now: datetime,
    *,
    payer_account: str | None = None,
    payee_account: str | None = None,
) -> dict[str, Any]:
    """Sell (seller = the series' provider) or transfer on a secondary market: tokens and payment in
    one linked batch — delivery versus payment, both or neither."""
    series = _series(conn, series_id)
    cftrules.check_tradable(series, now)
    try:
        acct.check_id(buyer_id, "buyer_id")
        acct.check_id(seller_id, "seller_id")
    except acct.AccountNameError as exc:
        raise LedgerError("id_invalid", str(exc)) from exc
    if buyer_id == seller_id:
        raise LedgerError("accounts_must_differ", "buyer and seller must differ")
    if type(price_pence) is not int or price_pence < 0 or price_pence > MAX_SAFE_INTEGER:
        raise LedgerError("amount_invalid", "price must be a non-negative amount")
    payer = payer_account or acct.bap_cash(buyer_id)
    payee = payee_account or (
        acct.provider_revenue(seller_id) if seller_id == series.provider_id else acct.bap_cash(seller_id)
    )
    names = [acct.holding(buyer_id, series_id)]
    specs = [
        TransferSpec(
            f"cft:{op_id}:tokens",
            "single",
            acct.cft_ledger(series_id),
            acct.holding(seller_id, series_id),
            acct.holding(buyer_id, series_id),
            tokens,
            memo=f"{tokens} CFT of {series_id} from {seller_id} to {buyer_id}",
        )
    ]
    if price_pence > 0:
        try:
            for n in (payer, payee):
                if acct.describe(n).ledger != acct.GBP:
                    raise LedgerError("ledger_mismatch", f"payment account {n} is not a GBP account")
        except acct.AccountNameError as exc:
            raise LedgerError("account_invalid", str(exc)) from exc
        names += [payer, payee]
        specs.append(
            TransferSpec(
                f"cft:{op_id}:payment",
                "single",
                acct.GBP,
                payer,
                payee,
                price_pence,
                memo=f"payment for {tokens} CFT of {series_id}",
            )
        )
    # Accounts for the sender must already exist: a holder that never received tokens cannot send any.
    ensure_accounts(conn, names)
    return transfer_result_json(_cft_append(conn, specs, now, series, "transfer"))


def redeem(
    conn: psycopg.Connection,
    op_id: str,
    series_id: str,
    holder_id: str,
    tokens: int,
    period_start: datetime,
    period_end: datetime,
    meter_id: str,
    supplier_id: str,
    now: datetime,
    policy_version: str = "p415-v1",
) -> dict[str, Any]:
    """Burn `tokens` and oblige the provider to reduce load by the matching power in the period;
    the obligation is an order (settlement_method CFT, utilisation prepaid) settled like any other."""
    series = _series(conn, series_id)
    try:
        acct.check_id(op_id, "redemption id")
        acct.check_id(holder_id, "holder_id")
    except acct.AccountNameError as exc:
        raise LedgerError("id_invalid", str(exc)) from exc
    order_id = f"cft-{op_id}"
    existing = conn.execute(
        "SELECT series_id, holder_id, tokens, order_id FROM ledger.cft_redemptions WHERE redemption_id = %s", (op_id,)
    ).fetchone()
    if existing is not None:
        terms, _ = load_order(conn, existing[3])
        same = (
            existing[0],
            existing[1],
            existing[2],
            terms.window_start,
            terms.window_end,
            terms.meter_id,
            terms.supplier_id,
        ) == (series_id, holder_id, tokens, period_start, period_end, meter_id, supplier_id)
        if not same:
            raise LedgerError("id_conflict", f"redemption {op_id} already exists with different content", status=409)
        return {"status": "exists", "redemption_id": op_id, "order_id": existing[3], "tokens": tokens}
    if type(tokens) is not int or tokens <= 0 or tokens > MAX_SAFE_INTEGER:
        raise LedgerError("amount_not_positive", "tokens must be a positive integer")
    policy = get_policy(conn, policy_version)
    cftrules.check_redemption(series, tokens, now, period_start, period_end, policy.gate_closure_minutes)
    power_w = cftrules.redemption_power_w(tokens, period_start, period_end)
    terms = OrderTerms(
        order_id,
        series.provider_id,
        holder_id,
        meter_id,
        supplier_id,
        period_start,
        period_end,
        power_w,
        0,
        None,
        "CFT",
        "compute",
        now,
        policy_version,
    )
    register_order(conn, terms, f"cft-redemption:{op_id}", now)
    conn.execute(
        "INSERT INTO ledger.cft_redemptions (redemption_id, series_id, holder_id, tokens, order_id, "
        "redeemed_at) VALUES (%s, %s, %s, %s, %s, %s)",
        (op_id, series_id, holder_id, tokens, order_id, now),
    )
    res = _cft_append(
        conn,
        [
            TransferSpec(
                f"cft:{op_id}:burn",
                "single",
                acct.cft_ledger(series_id),
                acct.holding(holder_id, series_id),
                acct.redeemed(series.provider_id, series_id),
                tokens,
                memo=f"redeem {tokens} CFT for order {order_id}",
            )
        ],
        now,
        series,
        "redeem",
    )
    return {
        "status": "created",
        "redemption_id": op_id,
        "order_id": order_id,
        "tokens": tokens,
        "load_reduction_kw": str(power_w / 1000),
        "transfers": [e.as_json() for e in res.entries],
    }


def expire_due(conn: psycopg.Connection, now: datetime) -> dict[str, int]:
    """Expire remaining tokens of ended series and pending transfers past their timeout."""
    now_us_ = us(now)
    requests: list[list[TransferSpec]] = []
    for series_id, provider_id in conn.execute(
        "SELECT series_id, provider_id FROM ledger.cft_series WHERE valid_to <= %s", (now,)
    ).fetchall():
        ledger = acct.cft_ledger(series_id)
        for name, credits, debits, debits_pending in conn.execute(
            "SELECT b.account, b.credits_posted, b.debits_posted, b.debits_pending FROM ledger.balances b "
            "JOIN ledger.accounts a ON a.name = b.account WHERE a.ledger = %s AND a.name LIKE 'holding:%%' "
            "AND b.credits_posted - b.debits_posted - b.debits_pending > 0",
            (ledger,),
        ).fetchall():
            holder = name.split(":")[1]
            requests.append(
                [
                    TransferSpec(
                        cftrules.expire_transfer_id(series_id, holder, credits),
                        "single",
                        ledger,
                        name,
                        acct.expired(provider_id, series_id),
                        credits - debits - debits_pending,
                        memo=f"tokens of {series_id} expired",
                    )
                ]
            )
    for (pid,) in conn.execute(
        "SELECT p.id FROM ledger.entries p WHERE p.kind = 'pending' AND p.timeout_us <= %s AND NOT EXISTS "
        "(SELECT 1 FROM ledger.entries r WHERE r.pending_id = p.id) ORDER BY p.timeout_us LIMIT 10000",
        (now_us_,),
    ).fetchall():
        requests.append(
            [TransferSpec(f"sys:expire:{pid}", "expire", pending_id=pid, memo="pending transfer timed out")]
        )
    if not requests:
        return {"tokens_expired": 0, "pending_expired": 0}
    results = append(conn, requests, rule_now_us=now_us_)
    created = [(req, r) for req, r in zip(requests, results, strict=True) if r.status == "created"]
    return {
        "tokens_expired": sum(r.entries[0].amount for req, r in created if req[0].kind == "single"),
        "pending_expired": sum(1 for req, _ in created if req[0].kind == "expire"),
    }


def provider_tokens(conn: psycopg.Connection, provider_id: str | None = None) -> dict[str, cftrules.ProviderTokens]:
    series = {
        r[0]: r[1]
        for r in conn.execute(
            "SELECT series_id, provider_id FROM ledger.cft_series WHERE %s::text IS NULL OR provider_id = %s",
            (provider_id, provider_id),
        )
    }
    if not series:
        return {}
    ledgers = [acct.cft_ledger(s) for s in series]
    nets = {
        r[0]: r[1]
        for r in conn.execute(
            "SELECT b.account, b.credits_posted - b.debits_posted FROM ledger.balances b JOIN ledger.accounts a "
            "ON a.name = b.account WHERE a.ledger = ANY(%s)",
            (ledgers,),
        )
    }
    return cftrules.provider_invariant(nets, series)


def series_info(conn: psycopg.Connection, series_id: str) -> dict[str, Any]:
    s = _series(conn, series_id)
    tokens = provider_tokens(conn, s.provider_id)
    ledger = acct.cft_ledger(series_id)
    holdings = {
        r[0].split(":")[1]: r[1]
        for r in conn.execute(
            "SELECT b.account, b.credits_posted - b.debits_posted FROM ledger.balances b JOIN ledger.accounts a "
            "ON a.name = b.account WHERE a.ledger = %s AND a.name LIKE 'holding:%%' ORDER BY 1",
            (ledger,),
        )
    }
    pt = tokens.get(s.provider_id)
    return {
        "series_id": s.series_id,
        "provider_id": s.provider_id,
        "valid_from": iso(s.valid_from),
        "valid_to": iso(s.valid_to),
        "declared_capacity_w": s.declared_capacity_w,
        "max_tokens": s.max_tokens,
        "holdings": holdings,
        "provider_invariant": None
        if pt is None
        else {
            "minted": pt.minted,
            "outstanding": pt.outstanding,
            "redeemed": pt.redeemed,
            "expired": pt.expired,
            "holds": pt.holds,
        },
    }


# --- keys, checkpoints -------------------------------------------------------------------------------------


def ledger_keypair(keys_dir: Path | None = None):  # -> beckn.keys.KeyPair
    from beckn.keys import load_or_create_keypair
    from kernel.config import get_settings

    return load_or_create_keypair((keys_dir or get_settings().keys_dir) / "ledger.json")


def existing_public_key_b64(keys_dir: Path | None = None) -> str | None:
    """The ledger key's public half if the key file exists (verification must not create a key)."""
    from kernel.config import get_settings

    path = (keys_dir or get_settings().keys_dir) / "ledger.json"
    if not path.is_file():
        return None
    return str(json.loads(path.read_text())["signing_public_key"])


def public_key_b64(keypair: Any) -> str:
    return keypair.signing_public_key_b64


def link_hashes(conn: psycopg.Connection, upto: int) -> list[bytes]:
    return [
        bytes(r[0])
        for r in conn.execute("SELECT link_hash FROM ledger.links WHERE height <= %s ORDER BY height", (upto,))
    ]


def _checkpoint_doc(row: Sequence[Any]) -> dict[str, Any]:
    message = json.loads(bytes(row[0]))
    return {
        "message": message,
        "signed_bytes_b64": base64.b64encode(bytes(row[0])).decode(),
        "signature_b64": base64.b64encode(bytes(row[1])).decode(),
        "public_key_b64": row[2],
    }


def get_checkpoint(
    conn: psycopg.Connection, height: int | None = None, *, at_least: int | None = None
) -> dict[str, Any] | None:
    if height is not None:
        q, args = "SELECT message, signature, public_key FROM ledger.checkpoints WHERE height = %s", (height,)
    else:
        q = (
            "SELECT message, signature, public_key FROM ledger.checkpoints WHERE height >= %s "
            "ORDER BY height DESC LIMIT 1"
        )
        args = (at_least or 0,)
    row = conn.execute(q, args).fetchone()
    return None if row is None else _checkpoint_doc(row)


def create_checkpoint(
    conn: psycopg.Connection, keypair: Any = None, now: datetime | None = None, publish_dir: Path | None = None
) -> dict[str, Any] | None:
    """Sign the current chain head (idempotent per height) and publish it outside the database."""
    head = conn.execute("SELECT height, link_hash FROM ledger.links ORDER BY height DESC LIMIT 1").fetchone()
    if head is None:
        return None
    height = head[0]
    existing = get_checkpoint(conn, height)
    if existing is not None:
        return existing
    keypair = keypair or ledger_keypair()
    hashes = link_hashes(conn, height)
    links_root = root_from_leaf_hashes([leaf_hash(h) for h in hashes])
    count = conn.execute(
        "SELECT coalesce(sum(entry_count), 0) FROM ledger.links WHERE height <= %s", (height,)
    ).fetchone()
    message = checkpoint_message(
        height=height,
        head_hash=bytes(head[1]),
        links_root=links_root,
        entry_count=int(count[0]) if count else 0,
        time_us=us(now or utcnow()),
        key_id=keypair.unique_key_id,
    )
    doc = sign_checkpoint(keypair.signing_private_key, message)
    conn.execute(
        "INSERT INTO ledger.checkpoints (height, head_hash, links_root, entry_count, time_us, key_id, public_key, "
        "message, signature) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (height) DO NOTHING",
        (
            height,
            bytes(head[1]),
            links_root,
            message["entry_count"],
            message["time_us"],
            keypair.unique_key_id,
            public_key_b64(keypair),
            base64.b64decode(doc["signed_bytes_b64"]),
            base64.b64decode(doc["signature_b64"]),
        ),
    )
    stored = get_checkpoint(conn, height)
    assert stored is not None
    if publish_dir is not None:
        publish_dir.mkdir(parents=True, exist_ok=True)
        (publish_dir / f"checkpoint-{height:012d}.json").write_text(json.dumps(stored, indent=2, sort_keys=True))
    return stored


def default_publish_dir() -> Path:
    from kernel.config import get_settings

    return get_settings().home / "ledger" / "checkpoints"


def inclusion_proof(conn: psycopg.Connection, transfer_id: str, keypair: Any = None) -> dict[str, Any]:
    row = conn.execute("SELECT height, idx, canonical FROM ledger.entries WHERE id = %s", (transfer_id,)).fetchone()
    if row is None:
        raise not_found(f"transfer {transfer_id!r}")
    cp = get_checkpoint(conn, at_least=row[0]) or create_checkpoint(conn, keypair)
    assert cp is not None
    proofs = _proofs(conn, [(row[0], row[1])], cp["message"]["height"])
    return {
        "transfer_id": transfer_id,
        "canonical": bytes(row[2]).decode(),
        "proof": proofs[(row[0], row[1])],
        "checkpoint": cp,
    }


def _proofs(
    conn: psycopg.Connection, positions: Sequence[tuple[int, int]], cp_height: int
) -> dict[tuple[int, int], dict[str, Any]]:
    heights = sorted({h for h, _ in positions})
    if not heights:
        return {}
    batch: dict[int, list[bytes]] = {h: [] for h in heights}
    for h, canonical in conn.execute(
        "SELECT height, canonical FROM ledger.entries WHERE height = ANY(%s) ORDER BY height, idx", (heights,)
    ):
        batch[h].append(leaf_hash(bytes(canonical)))
    prev = {
        r[0]: bytes(r[1])
        for r in conn.execute("SELECT height, prev_hash FROM ledger.links WHERE height = ANY(%s)", (heights,))
    }
    link_levels = levels([leaf_hash(h) for h in link_hashes(conn, cp_height)])
    return {(h, i): entry_proof(batch[h], i, h, prev[h], link_levels) for h, i in positions}


# --- statements ------------------------------------------------------------------------------------------------


def statement(
    conn: psycopg.Connection, account: str, start: datetime, end: datetime, keypair: Any = None
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
    proofs = _proofs(conn, [(r[10], r[11]) for r in rows], cp["message"]["height"])
    balance = opening
    out_rows = []
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
        "generated_at": iso(utcnow()),
    }


def _posted_sum(conn: psycopg.Connection, account: str, before_us: int) -> int:
    row = conn.execute(
        "SELECT coalesce((SELECT sum(amount) FROM ledger.entries WHERE credit_account = %(a)s AND time_us < %(t)s "
        "AND kind IN ('single','post')), 0) - coalesce((SELECT sum(amount) FROM ledger.entries WHERE "
        "debit_account = %(a)s AND time_us < %(t)s AND kind IN ('single','post')), 0)",
        {"a": account, "t": before_us},
    ).fetchone()
    return int(row[0]) if row else 0


STATEMENT_CSV_COLUMNS = (
    "record",
    "time",
    "time_us",
    "id",
    "kind",
    "debit_account",
    "credit_account",
    "amount",
    "posted_delta",
    "running_balance",
    "pending_id",
    "memo",
    "canonical",
    "proof",
)


def statement_csv(doc: dict[str, Any]) -> str:
    """The statement as CSV for spreadsheets: an `opening` row, one `entry` row per entry (with its
    canonical bytes and proof as JSON), a `closing` row and a `checkpoint` row (JSON)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(STATEMENT_CSV_COLUMNS)
    w.writerow(
        [
            "opening",
            doc["from"],
            doc["from_us"],
            "",
            "",
            "",
            doc["account"],
            "",
            "",
            doc["opening_balance"],
            "",
            f"{doc['ledger']} {doc['unit']}",
            "",
            "",
        ]
    )
    for e in doc["entries"]:
        w.writerow(
            [
                "entry",
                e["time"],
                e["time_us"],
                e["id"],
                e["kind"],
                e["debit_account"],
                e["credit_account"],
                e["amount"],
                e["posted_delta"],
                e["running_balance"],
                e["pending_id"] or "",
                e["memo"],
                e["canonical"],
                json.dumps(e["proof"], separators=(",", ":")),
            ]
        )
    w.writerow(
        ["closing", doc["to"], doc["to_us"], "", "", "", doc["account"], "", "", doc["closing_balance"], "", "", "", ""]
    )
    w.writerow(
        [
            "checkpoint",
            "",
            doc["checkpoint"]["message"]["time_us"],
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            json.dumps(doc["checkpoint"], separators=(",", ":"), sort_keys=True),
        ]
    )
    return buf.getvalue()


def statement_from_csv(text: str) -> dict[str, Any]:
    """Rebuild the JSON statement from its CSV form (so the CSV verifies offline too)."""
    rows = list(csv.DictReader(io.StringIO(text)))
    opening = next(r for r in rows if r["record"] == "opening")
    closing = next(r for r in rows if r["record"] == "closing")
    cp = next(r for r in rows if r["record"] == "checkpoint")
    ledger, _, unit = opening["memo"].partition(" ")
    entries = [
        {
            "id": r["id"],
            "time": r["time"],
            "time_us": int(r["time_us"]),
            "kind": r["kind"],
            "debit_account": r["debit_account"],
            "credit_account": r["credit_account"],
            "amount": int(r["amount"]),
            "posted_delta": int(r["posted_delta"]),
            "running_balance": int(r["running_balance"]),
            "pending_id": r["pending_id"] or None,
            "memo": r["memo"],
            "canonical": r["canonical"],
            "proof": json.loads(r["proof"]),
        }
        for r in rows
        if r["record"] == "entry"
    ]
    return {
        "format": STATEMENT_FORMAT,
        "account": opening["credit_account"],
        "ledger": ledger,
        "unit": unit,
        "from": opening["time"],
        "to": closing["time"],
        "from_us": int(opening["time_us"]),
        "to_us": int(closing["time_us"]),
        "opening_balance": int(opening["running_balance"]),
        "closing_balance": int(closing["running_balance"]),
        "entry_count": len(entries),
        "entries": entries,
        "checkpoint": json.loads(cp["proof"]),
    }


# --- verification ------------------------------------------------------------------------------------------------


@dataclass
class LedgerReport:
    chain: VerifyResult
    problems: list[str]
    seconds: float
    chain_seconds: float = 0.0  # the re-hashing part alone

    @property
    def ok(self) -> bool:
        return self.chain.ok and not self.problems

    def summary(self) -> str:
        if self.ok:
            return (
                self.chain.summary()
                + f"; balances match entries; Σ debits = Σ credits per ledger ({self.seconds:.2f} s)"
            )
        first = self.chain.summary() if not self.chain.ok else self.problems[0]
        return first if first.startswith("TAMPERED") else f"TAMPERED: {first}"


ENTRY_VERIFY_SQL = (
    "SELECT height, idx, id, ledger, debit_account, credit_account, amount, kind, pending_id, "
    "timeout_us, time_us, memo, canonical FROM ledger.entries"
)
# The canonical entry form (ledger/canonical.py) written as a SQL expression over the columns:
# PostgreSQL's JSON string escaping (to_json) is RFC 8785's — \" \\ \b \f \n \r \t, other C0
# controls as lower-case \u00xx, everything else verbatim — and the keys are in canonical order.
# tests/ledger/test_verify_modes_db.py checks it byte for byte against encode_entry on hard strings.
SQL_CANONICAL = (
    "convert_to('{\"amount\":' || amount || ',\"credit\":' || to_json(credit_account)::text"
    " || ',\"debit\":' || to_json(debit_account)::text || ',\"id\":' || to_json(id)::text"
    " || ',\"kind\":' || to_json(kind)::text || ',\"ledger\":' || to_json(ledger)::text"
    " || ',\"memo\":' || to_json(memo)::text || ',\"pending_id\":' || coalesce(to_json(pending_id)::text, 'null')"
    " || ',\"time_us\":' || time_us || ',\"timeout_us\":' || coalesce(timeout_us::text, 'null')"
    " || ',\"v\":1}', 'UTF8')"
)
ENTRY_VERIFY_SQL_CHECKED = f"SELECT height, idx, id, canonical, {SQL_CANONICAL} = canonical FROM ledger.entries"
PARALLEL_VERIFY_MIN_ENTRIES = 150_000


def _conn_dsn(conn: psycopg.Connection) -> str:
    password = conn.info.password
    return psycopg.conninfo.make_conninfo(conn.info.dsn, **({"password": password} if password else {}))


def verify_entry_range(
    dsn: str, snapshot: str, lo: int | None, hi: int | None, fetch_rows: int = 20_000, local_encoding: bool = False
) -> EntryRoots:
    """The entry pass over heights lo..hi, reading the very snapshot the coordinating transaction exported
    (pg_export_snapshot), so every worker process sees the same ledger."""
    with psycopg.connect(dsn) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        conn.execute(psycopg.sql.SQL("SET TRANSACTION SNAPSHOT {}").format(psycopg.sql.Literal(snapshot)))
        return _entry_pass(conn, lo, hi, fetch_rows, local_encoding)


def _entry_pass(
    conn: psycopg.Connection, lo: int | None, hi: int | None, fetch_rows: int, local_encoding: bool
) -> EntryRoots:
    bounds = (-(2**63) if lo is None else lo, 2**63 - 1 if hi is None else hi)
    where = " WHERE height >= %s AND height <= %s ORDER BY height, idx"
    with conn.cursor(name="verify_range", binary=True) as cur:
        cur.execute((ENTRY_VERIFY_SQL if local_encoding else ENTRY_VERIFY_SQL_CHECKED) + where, bounds)
        part = entry_roots(_stream(cur, fetch_rows), sql_checked=not local_encoding)
    p = part.problem
    if p is not None and p.kind == "entry_content" and not local_encoding:
        row = conn.execute(
            ENTRY_VERIFY_SQL + " WHERE height = %s AND idx = %s", (p.height, p.idx), binary=True
        ).fetchone()
        if row is not None:
            part.problem = replace(p, message=f"{p.message} ({describe_mismatch(row)})")
    return part


def _split_heights(links: list[tuple[int, int]], workers: int) -> list[tuple[int | None, int | None]]:
    """Height ranges holding about the same number of entries each (the first and last are open-ended,
    so entries without a link are still read)."""
    total = sum(n for _, n in links)
    bounds: list[tuple[int | None, int | None]] = []
    lo: int | None = None
    acc = 0
    for height, n in links:
        acc += n
        if len(bounds) < workers - 1 and acc >= total * (len(bounds) + 1) / workers:
            bounds.append((lo, height))
            lo = height + 1
    bounds.append((lo, None))
    return bounds


def verify_ledger(
    conn: psycopg.Connection,
    public_key_b64: str | None = None,
    *,
    fetch_rows: int = 20_000,
    workers: int | None = None,
    local_encoding: bool = False,
) -> LedgerReport:
    """`ledger verify`: re-hash everything (ledger/chain.py), check every checkpoint's signature and
    claims, every balance against its entries, Σ debits = Σ credits per ledger, and the CFT invariant.
    Reads one consistent snapshot (REPEATABLE READ), so concurrent appends do not disturb it. Large
    ledgers are split by height across worker processes that import the same snapshot
    (pg_export_snapshot); the link pass and every comparison with signed checkpoints stay here."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    t0 = time.perf_counter()
    problems: list[str] = []
    chain_seconds = 0.0
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.commit()
    old_iso, old_ro = conn.isolation_level, conn.read_only
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    try:
        with conn.transaction():
            snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
            cps: dict[int, CheckpointRef] = {}
            for height, head, root, count, message, signature, stored_key in conn.execute(
                "SELECT height, head_hash, links_root, entry_count, message, signature, public_key "
                "FROM ledger.checkpoints ORDER BY height"
            ):
                key = public_key_b64 or stored_key
                doc = {
                    "message": json.loads(bytes(message)),
                    "signed_bytes_b64": base64.b64encode(bytes(message)).decode(),
                    "signature_b64": base64.b64encode(bytes(signature)).decode(),
                }
                ok, why = verify_checkpoint_doc(doc, key)
                m = doc["message"]
                if not ok:
                    problems.append(f"checkpoint at height {height}: {why}")
                elif (m["height"], m["head_hash"], m["links_root"], m["entry_count"]) != (
                    height,
                    bytes(head).hex(),
                    bytes(root).hex(),
                    count,
                ):
                    problems.append(f"checkpoint at height {height}: columns differ from the signed message")
                cps[height] = CheckpointRef(
                    m["height"], bytes.fromhex(m["head_hash"]), bytes.fromhex(m["links_root"]), m["entry_count"]
                )
            t_chain = time.perf_counter()
            with conn.cursor(name="verify_links", binary=True) as lc:
                lc.execute(
                    "SELECT height, prev_hash, merkle_root, entry_count, hashed_bytes, link_hash "
                    "FROM ledger.links ORDER BY height"
                )
                links = list(_stream(lc, 50_000))
            approx = sum(link[3] for link in links)
            n_workers = (
                workers
                if workers is not None
                else (min(4, os.cpu_count() or 1) if approx >= PARALLEL_VERIFY_MIN_ENTRIES else 1)
            )
            if n_workers > 1:
                bounds = _split_heights([(link[0], link[3]) for link in links], n_workers)
                # fork is cheap, and safe when this process runs no other threads (the CLI, the benchmark);
                # a threaded server (uvicorn, the group committer) spawns fresh interpreters instead.
                ctx = get_context("fork" if threading.active_count() == 1 else "spawn")
                with ProcessPoolExecutor(len(bounds), mp_context=ctx) as pool:
                    parts = list(
                        pool.map(
                            verify_entry_range,
                            [_conn_dsn(conn)] * len(bounds),
                            [snapshot] * len(bounds),
                            [b[0] for b in bounds],
                            [b[1] for b in bounds],
                            [fetch_rows] * len(bounds),
                            [local_encoding] * len(bounds),
                        )
                    )
            else:
                parts = [_entry_pass(conn, None, None, fetch_rows, local_encoding)]
            chain = verify_links(links, parts, cps)
            chain_seconds = time.perf_counter() - t_chain
            if chain.ok:
                problems += _check_balances(conn)
    finally:
        conn.isolation_level, conn.read_only = old_iso, old_ro
    return LedgerReport(chain, problems, time.perf_counter() - t0, chain_seconds)


def _stream(cur: psycopg.Cursor, size: int) -> Iterator[Any]:
    """Rows of a server-side cursor in large chunks (much faster than row-by-row iteration)."""
    while True:
        rows = cur.fetchmany(size)
        if not rows:
            return
        yield from rows


def _check_balances(conn: psycopg.Connection) -> list[str]:
    problems = []
    for row in conn.execute(
        """
        WITH legs AS (
            SELECT e.debit_account AS account,
                   CASE WHEN e.kind IN ('single','post') THEN e.amount ELSE 0 END AS dp, 0::bigint AS cp,
                   CASE WHEN e.kind = 'pending' THEN e.amount WHEN e.kind IN ('post','void','expire') THEN -p.amount
                        ELSE 0 END AS dpe, 0::bigint AS cpe
            FROM ledger.entries e LEFT JOIN ledger.entries p ON p.id = e.pending_id
            UNION ALL
            SELECT e.credit_account, 0, CASE WHEN e.kind IN ('single','post') THEN e.amount ELSE 0 END, 0,
                   CASE WHEN e.kind = 'pending' THEN e.amount WHEN e.kind IN ('post','void','expire') THEN -p.amount
                        ELSE 0 END
            FROM ledger.entries e LEFT JOIN ledger.entries p ON p.id = e.pending_id
        ), sums AS (
            SELECT account, sum(dp) dp, sum(cp) cp, sum(dpe) dpe, sum(cpe) cpe FROM legs GROUP BY account
        )
        SELECT coalesce(b.account, s.account), b.debits_posted, b.credits_posted, b.debits_pending, b.credits_pending,
               s.dp, s.cp, s.dpe, s.cpe
        FROM ledger.balances b FULL JOIN sums s ON s.account = b.account
        WHERE (coalesce(b.debits_posted, 0), coalesce(b.credits_posted, 0), coalesce(b.debits_pending, 0),
               coalesce(b.credits_pending, 0))
           IS DISTINCT FROM (coalesce(s.dp, 0), coalesce(s.cp, 0), coalesce(s.dpe, 0), coalesce(s.cpe, 0))
        ORDER BY 1 LIMIT 5
        """
    ):
        problems.append(
            f"balance of {row[0]} (debits/credits posted {row[1]}/{row[2]}, pending {row[3]}/{row[4]}) "
            f"does not equal the sum of its entries ({row[5]}/{row[6]}, pending {row[7]}/{row[8]})"
        )
    for ledger, dp, cp, dpe, cpe in conn.execute(
        "SELECT a.ledger, sum(b.debits_posted), sum(b.credits_posted), sum(b.debits_pending), sum(b.credits_pending) "
        "FROM ledger.balances b JOIN ledger.accounts a ON a.name = b.account GROUP BY a.ledger ORDER BY 1"
    ):
        if dp != cp or dpe != cpe:
            problems.append(f"ledger {ledger}: Σ debits {dp} ≠ Σ credits {cp} (pending {dpe} / {cpe})")
    for provider, t in provider_tokens(conn).items():
        if not t.holds:
            problems.append(
                f"CFT invariant broken for {provider}: minted {t.minted} ≠ outstanding {t.outstanding} "
                f"+ redeemed {t.redeemed} + expired {t.expired}"
            )
    return problems


def chain_head(conn: psycopg.Connection) -> dict[str, Any]:
    row = conn.execute(
        "SELECT height, link_hash, (SELECT coalesce(sum(entry_count), 0) FROM ledger.links) "
        "FROM ledger.links ORDER BY height DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return {"height": 0, "head_hash": None, "entry_count": 0}
    return {"height": row[0], "head_hash": bytes(row[1]).hex(), "entry_count": int(row[2])}


# --- API keys -------------------------------------------------------------------------------------------------

ROLES = ("admin", "finance", "provider", "bap", "supplier")


@dataclass(frozen=True)
class Principal:
    key_id: str
    role: str
    participant_id: str | None

    def require(self, *roles: str) -> None:
        if self.role not in roles:
            raise forbidden(f"this needs a {' or '.join(roles)} key; yours is a {self.role} key")

    def require_participant(self, role: str, participant_id: str) -> None:
        """Admins act for anyone; otherwise the key must be `role` for exactly this participant."""
        if self.role == "admin":
            return
        if self.role != role or self.participant_id != participant_id:
            raise forbidden(f"a {self.role} key for {self.participant_id} cannot act for {role} {participant_id}")


def create_api_key(conn: psycopg.Connection, role: str, participant_id: str | None = None, label: str = "") -> str:
    """A new key `flk_<key id>_<secret>`; only its SHA-256 is stored, so it is shown once."""
    if role not in ROLES:
        raise LedgerError("role_invalid", f"role must be one of {', '.join(ROLES)}")
    if role in ("admin", "finance"):
        if participant_id:
            raise LedgerError("participant_not_allowed", f"a {role} key is not bound to a participant")
        participant_id = None
    else:
        if not participant_id:
            raise LedgerError("participant_required", f"a {role} key needs the participant id it acts for")
        acct.check_id(participant_id, "participant_id")
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(24)
    conn.execute(
        "INSERT INTO ledger.api_keys (key_id, secret_sha256, role, participant_id, label) VALUES (%s, %s, %s, %s, %s)",
        (key_id, hashlib.sha256(secret.encode()).digest(), role, participant_id, label[:200]),
    )
    return f"flk_{key_id}_{secret}"


def authenticate(conn: psycopg.Connection, token: str | None) -> Principal | None:
    if not token or not token.startswith("flk_") or token.count("_") < 2:
        return None
    _, key_id, secret = token.split("_", 2)
    row = conn.execute(
        "SELECT secret_sha256, role, participant_id FROM ledger.api_keys WHERE key_id = %s AND revoked_at IS NULL",
        (key_id,),
    ).fetchone()
    if row is None or not hmac.compare_digest(bytes(row[0]), hashlib.sha256(secret.encode()).digest()):
        return None
    return Principal(key_id, row[1], row[2])


def revoke_api_key(conn: psycopg.Connection, key_id: str) -> bool:
    return (
        conn.execute(
            "UPDATE ledger.api_keys SET revoked_at = now() WHERE key_id = %s AND revoked_at IS NULL", (key_id,)
        ).rowcount
        == 1
    )


def ensure_schema(url: str | None = None) -> None:
    """Migrate to head when the ledger tables are missing (a fresh embedded database)."""
    from kernel import db

    with connection(url) as conn:
        present = conn.execute("SELECT to_regclass('ledger.links')").fetchone()
    if present is None or present[0] is None:
        db.upgrade(url)


def canonical_hash(doc: Any) -> str:
    return hashlib.sha256(canonical_json(doc)).hexdigest()
