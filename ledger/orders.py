"""Orders in PostgreSQL: register a confirmed order for settlement (idempotent by order_id, reserving
its maximum value in escrow as a pending transfer), cancel it before its window opens, read it back.

The order terms and the rules about them (gate closure, declared periods, maximum exposure) are the
pure ledger/settlement.py; meters are claimed through ledger/metering.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from grid.periods import is_period_aligned
from ledger import accounts as acct
from ledger.accounts_db import ensure_accounts
from ledger.db import CLOCK_SKEW, iso, us
from ledger.errors import LedgerError, not_found
from ledger.metering import claim_meter
from ledger.policies import get_policy
from ledger.settlement import OrderTerms, declared_periods, max_exposure_pence, reserve_transfer_id
from ledger.store import append_one
from ledger.transfers import TransferSpec

ORDER_COLUMNS = (
    "order_id, provider_id, bap_id, meter_id, supplier_id, window_start, window_end, contracted_w, "
    "price_millipence_per_mwh, availability_price_millipence_per_mw_h, settlement_method, resource_type, confirmed_at, "
    "policy_version"
)


def order_from_row(r: Sequence[Any]) -> OrderTerms:
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
        f"SELECT {ORDER_COLUMNS}, transaction_id FROM ledger.orders WHERE order_id = %s", (order_id,)
    ).fetchone()
    if row is None:
        raise not_found(f"order {order_id!r}")
    return order_from_row(row), row[14]


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
        f"SELECT {ORDER_COLUMNS}, transaction_id FROM ledger.orders WHERE order_id = %s", (terms.order_id,)
    ).fetchone()
    accepted, rejected = declared_periods(terms.window_start, terms.window_end, terms.confirmed_at, policy)
    reserve = max_exposure_pence(terms, policy)
    summary = {
        "order_id": terms.order_id,
        "declared_periods": [p.label() for p in accepted],
        "rejected_periods": [{"period": p.label(), "reason": why} for p, why in rejected],
        "reserve_pence": reserve,
    }
    if existing is not None:
        if order_from_row(existing) != terms or existing[14] != transaction_id:
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
    claim_meter(conn, terms.meter_id, terms.provider_id)
    conn.execute(
        f"INSERT INTO ledger.orders ({ORDER_COLUMNS}, transaction_id, registered_at) "
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
