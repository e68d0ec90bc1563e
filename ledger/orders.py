"""Orders in PostgreSQL: register a confirmed order for settlement (idempotent by order_id, reserving
its maximum value in escrow as a pending transfer), cancel it before its window opens, read it back.

Orders from the Beckn network are registered only with the two signed messages that make them
(`register_agreed_order`: the buyer's confirm and the provider's on_confirm, verified by the pure
ledger/agreements.py and stored beside the order by ledger/agreements_db.py); their terms are those of
the signed on_confirm. The order's entries carry the agreement hash in their memo. `register_order` is
the registration itself, also used for token redemptions (ledger/tokens.py), which have no Beckn messages.

The order terms and the rules about them (gate closure, declared periods, maximum exposure) are the
pure ledger/settlement.py; meters are claimed through ledger/metering.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from grid.periods import is_period_aligned
from ledger import accounts as acct
from ledger import agreements_db
from ledger.accounts_db import ensure_accounts
from ledger.agreements import OrderAgreement, Verified, agreement_sha256, amendment_terms, with_agreement
from ledger.db import CLOCK_SKEW, iso, us
from ledger.errors import LedgerError, forbidden, not_found
from ledger.metering import claim_meter
from ledger.policies import get_policy
from ledger.settlement import OrderTerms, declared_periods, max_exposure_pence, reserve_transfer_id
from ledger.store import append_one
from ledger.transfers import TransferSpec
from schemas import limits

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


@dataclass(frozen=True, kw_only=True)
class OrderExtras:
    """What an order's ledger terms need that its Beckn messages do not carry."""

    supplier_id: str
    availability_price_millipence_per_mw_h: int | None
    resource_type: str
    policy_version: str


def register_agreed_order(
    conn: psycopg.Connection, agreement: OrderAgreement, extras: OrderExtras, now: datetime
) -> dict[str, Any]:
    """Register the order both parties signed (idempotent: the same messages again answer "exists"; the
    order with other messages or terms is a 409), and store the messages beside it."""
    a = agreement.terms
    terms = OrderTerms(
        a.order_id,
        a.provider_id,
        a.bap_id,
        a.meter_id,
        extras.supplier_id,
        a.window_start,
        a.window_end,
        a.contracted_w,
        a.price_millipence_per_mwh,
        extras.availability_price_millipence_per_mw_h,
        a.settlement_method,
        extras.resource_type,
        a.confirmed_at,
        extras.policy_version,
    )
    digest = agreement.sha256
    stored = agreements_db.order_agreement_hash(conn, a.order_id)
    if stored is not None and stored != digest:
        raise LedgerError(
            "order_conflict", f"order {a.order_id} is already registered with other signed messages", status=409
        )
    if stored is None:
        agreements_db.check_not_replayed(conn, agreement.confirm, agreement.on_confirm)
        agreements_db.check_hosting_platform(conn, a.provider_id, a.bpp_id)
    result = register_order(conn, terms, a.transaction_id, now, agreement=digest)
    if stored is None and result["status"] == "created":
        agreements_db.record(
            conn,
            kind="order",
            subject=a.order_id,
            transaction_id=a.transaction_id,
            bap_id=a.bap_id,
            provider_id=a.provider_id,
            buyer=agreement.confirm,
            provider=agreement.on_confirm,
            now=now,
        )
    return {**result, "agreement_sha256": digest.hex()}


def register_order(
    conn: psycopg.Connection,
    terms: OrderTerms,
    transaction_id: str,
    now: datetime,
    *,
    agreement: bytes | None = None,
) -> dict[str, Any]:
    """Register a confirmed order for settlement (idempotent by order_id) and reserve its maximum
    utilisation + availability value from the buyer into `escrow:<order>` as a pending transfer, whose
    memo carries the `agreement` hash (ledger/agreements.py), if any."""
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
                    memo=with_agreement(f"reserve for order {terms.order_id}", agreement),
                )
            ],
            rule_now_us=us(now),
        )
    return {"status": "created", **summary}


def cancel_order(conn: psycopg.Connection, order_id: str, now: datetime, reason: str = "") -> dict[str, Any]:
    """Cancel before the window opens (../shared/DESIGN.md order states); releases the reserve, and gives a token
    redemption's burned tokens back to their holder."""
    terms, _ = load_order(conn, order_id)
    row = conn.execute(
        "SELECT cancelled_at FROM ledger.order_cancellations WHERE order_id = %s", (order_id,)
    ).fetchone()
    if row is not None:
        return {"status": "exists", "order_id": order_id, "cancelled_at": iso(row[0])}
    if now >= terms_as_of(conn, terms).window_start:
        raise LedgerError("window_started", "an order can only be cancelled before its window opens", status=409)
    conn.execute(
        "INSERT INTO ledger.order_cancellations (order_id, cancelled_at, reason) VALUES (%s, %s, %s)",
        (order_id, now, reason[:500]),
    )
    reserve_id = current_reserve_id(conn, order_id)  # the latest amendment's reserve, if it was amended
    agreement = agreements_db.order_agreement_hash(conn, order_id)
    pending = conn.execute(
        _UNRESOLVED_PENDING_SQL,
        (reserve_id, reserve_id),
    ).fetchone()
    if pending is not None:
        append_one(
            conn,
            [
                TransferSpec(
                    f"order:{order_id}:cancel",
                    "void",
                    pending_id=reserve_id,
                    memo=with_agreement(f"order {order_id} cancelled", agreement),
                )
            ],
            rule_now_us=us(now),
        )
    returned = _return_redeemed_tokens(conn, order_id, now)
    return {
        "status": "cancelled",
        "order_id": order_id,
        "cancelled_at": iso(now),
        **({"tokens_returned": returned} if returned else {}),
    }


def _return_redeemed_tokens(conn: psycopg.Connection, order_id: str, now: datetime) -> int:
    """A token redemption's order (ledger/tokens.py `redeem`) cancelled before its window: the tokens it burned
    go back to the holder (redeemed:<provider>:<series> → holding:<holder>:<series>), in the cancel's
    transaction. The window lies inside the series' validity, so the tokens are still valid. Returns how many."""
    row = conn.execute(
        "SELECT r.redemption_id, r.series_id, r.holder_id, r.tokens, s.provider_id FROM ledger.cft_redemptions r "
        "JOIN ledger.cft_series s ON s.series_id = r.series_id WHERE r.order_id = %s",
        (order_id,),
    ).fetchone()
    if row is None:
        return 0
    redemption_id, series_id, holder_id, tokens, provider_id = row
    append_one(
        conn,
        [
            TransferSpec(
                f"cft:{redemption_id}:unburn",
                "single",
                acct.cft_ledger(series_id),
                acct.redeemed(provider_id, series_id),
                acct.holding(holder_id, series_id),
                tokens,
                memo=f"order {order_id} cancelled: {tokens} CFT back to {holder_id}",
            )
        ],
        rule_now_us=us(now),
    )
    return int(tokens)


_UNRESOLVED_PENDING_SQL = (
    "SELECT 1 FROM ledger.entries WHERE id = %s AND kind = 'pending' AND NOT EXISTS "
    "(SELECT 1 FROM ledger.entries r WHERE r.pending_id = %s AND r.kind IN ('post', 'void', 'expire'))"
)


# -- amendments (an accepted Beckn update: contracted kW and window) --------------------------------
def _amendments(conn: psycopg.Connection, order_id: str, as_of: datetime | None = None) -> list[tuple[Any, ...]]:
    """(seq, reference, window_start, window_end, contracted_w, amended_at, recorded_at, reserve_id), by seq."""
    rows = conn.execute(
        "SELECT seq, reference, window_start, window_end, contracted_w, amended_at, recorded_at, reserve_id "
        "FROM ledger.order_amendments WHERE order_id = %s AND (%s::timestamptz IS NULL OR recorded_at <= %s) "
        "ORDER BY seq",
        (order_id, as_of, as_of),
    ).fetchall()
    return list(rows)


def amended(terms: OrderTerms, amendment: Sequence[Any] | None) -> OrderTerms:
    """The order's terms under one amendment: its window and kW, and its gate closure (amended_at)."""
    if amendment is None:
        return terms
    return replace(
        terms,
        window_start=amendment[2].astimezone(UTC),
        window_end=amendment[3].astimezone(UTC),
        contracted_w=amendment[4],
        confirmed_at=amendment[5].astimezone(UTC),
    )


def terms_as_of(conn: psycopg.Connection, terms: OrderTerms, as_of: datetime | None = None) -> OrderTerms:
    """The order's terms as the ledger knew them at `as_of` (default: now): the latest amendment
    recorded at or before it, else the registered terms."""
    rows = _amendments(conn, terms.order_id, as_of)
    return amended(terms, rows[-1] if rows else None)


def current_reserve_id(conn: psycopg.Connection, order_id: str, as_of: datetime | None = None) -> str:
    """The pending transfer that holds the order's escrow as of `as_of`: the latest amendment's reserve."""
    for row in reversed(_amendments(conn, order_id, as_of)):
        if row[7]:
            return str(row[7])
    return reserve_transfer_id(order_id)


def amend_order(
    conn: psycopg.Connection,
    order_id: str,
    *,
    window_start: datetime,
    window_end: datetime,
    contracted_w: int,
    amended_at: datetime,
    reference: str,
    now: datetime,
    agreement: bytes | None = None,
) -> dict[str, Any]:
    """Amend a registered order before its window opens (append-only; idempotent by `reference`): the
    new terms apply from now, and the escrow follows them — the current reserve is voided and a new
    pending transfer reserves the amended maximum value; both entries carry the `agreement` hash."""
    base, _ = load_order(conn, order_id)
    if not reference or len(reference) > 200:
        raise LedgerError("reference_invalid", "reference is required (at most 200 characters)")
    done = conn.execute(
        "SELECT seq FROM ledger.order_amendments WHERE order_id = %s AND reference = %s", (order_id, reference)
    ).fetchone()
    if done is not None:
        return {"status": "exists", **amendment_summary(conn, order_id)}
    if conn.execute("SELECT 1 FROM ledger.order_cancellations WHERE order_id = %s", (order_id,)).fetchone():
        raise LedgerError("order_cancelled", f"order {order_id} is cancelled; it cannot be amended", status=409)
    current = terms_as_of(conn, base)
    if now >= current.window_start:
        raise LedgerError("window_started", "an order can only be amended before its window opens", status=409)
    if conn.execute("SELECT 1 FROM ledger.settlement_runs WHERE order_id = %s", (order_id,)).fetchone():
        raise LedgerError("order_settled", f"order {order_id} has settlement runs; it cannot be amended", status=409)
    if amended_at > now + CLOCK_SKEW:
        raise LedgerError("amended_in_future", "amended_at is later than the ledger's clock")
    seq = len(_amendments(conn, order_id)) + 1
    new = replace(
        current,
        window_start=window_start,
        window_end=window_end,
        contracted_w=contracted_w,
        confirmed_at=max(amended_at, base.confirmed_at),
    )
    validate_order(new)
    policy = get_policy(conn, new.policy_version)
    accepted, rejected = declared_periods(new.window_start, new.window_end, new.confirmed_at, policy)
    if not accepted:
        raise LedgerError(
            "after_gate_closure",
            "the amendment comes after gate closure for every period of its window; nothing to settle",
            rejected=[{"period": p.label(), "reason": why} for p, why in rejected],
        )
    reserve = max_exposure_pence(new, policy)
    old_id = current_reserve_id(conn, order_id)
    new_id = f"{reserve_transfer_id(order_id)}:a{seq}" if reserve > 0 else None
    pending = conn.execute(
        _UNRESOLVED_PENDING_SQL,
        (old_id, old_id),
    ).fetchone()
    if pending is not None:
        append_one(
            conn,
            [
                TransferSpec(
                    f"{old_id}:void",
                    "void",
                    pending_id=old_id,
                    memo=with_agreement(f"order {order_id} amended ({seq})", agreement),
                )
            ],
            rule_now_us=us(now),
        )
    if new_id is not None:
        timeout = new.window_end + timedelta(hours=policy.escrow_timeout_hours)
        append_one(
            conn,
            [
                TransferSpec(
                    new_id,
                    "pending",
                    acct.GBP,
                    acct.bap_cash(new.bap_id),
                    acct.escrow(order_id),
                    reserve,
                    timeout_us=us(timeout),
                    memo=with_agreement(f"reserve for order {order_id} (amendment {seq})", agreement),
                )
            ],
            rule_now_us=us(now),
        )
    conn.execute(
        "INSERT INTO ledger.order_amendments (order_id, seq, reference, window_start, window_end, contracted_w, "
        "amended_at, recorded_at, reserve_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (order_id, seq, reference, new.window_start, new.window_end, new.contracted_w, new.confirmed_at, now, new_id),
    )
    return {
        "status": "amended",
        "declared_periods": [p.label() for p in accepted],
        "rejected_periods": [{"period": p.label(), "reason": why} for p, why in rejected],
        "reserve_pence": reserve,
        **amendment_summary(conn, order_id),
    }


def amend_agreed_order(conn: psycopg.Connection, order_id: str, on_update: Verified, now: datetime) -> dict[str, Any]:
    """Amend an order with the provider's signed on_update (its platform, its transaction, the order's
    provider and item); the on_update is stored beside the order and its hash tagged onto the entries."""
    agreed = agreements_db.agreed_order(conn, order_id)
    change = amendment_terms(on_update, order=agreed)
    digest = agreement_sha256(None, on_update.sha256)
    stored = agreements_db.existing_hash(conn, "amendment", order_id, change.reference)
    if stored is not None and stored != digest:
        raise LedgerError(
            "order_conflict", f"amendment {change.reference} is already recorded from other signed bytes", status=409
        )
    if stored is None:
        agreements_db.check_not_replayed(conn, on_update)
    result = amend_order(
        conn,
        order_id,
        window_start=change.window_start,
        window_end=change.window_end,
        contracted_w=change.contracted_w,
        amended_at=change.amended_at,
        reference=change.reference,
        now=now,
        agreement=digest,
    )
    if stored is None and result["status"] == "amended":
        agreements_db.record(
            conn,
            kind="amendment",
            subject=order_id,
            reference=change.reference,
            transaction_id=agreed.transaction_id,
            bap_id=agreed.bap_id,
            provider_id=agreed.provider_id,
            buyer=None,
            provider=on_update,
            now=now,
        )
    return {**result, "agreement_sha256": digest.hex()}


def amendment_summary(conn: psycopg.Connection, order_id: str) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "amendments": [
            {
                "seq": r[0],
                "reference": r[1],
                "window_start": iso(r[2]),
                "window_end": iso(r[3]),
                "contracted_w": r[4],
                "amended_at": iso(r[5]),
                "recorded_at": iso(r[6]),
                "reserve_id": r[7],
            }
            for r in _amendments(conn, order_id)
        ],
    }


def order_summary(conn: psycopg.Connection, order_id: str) -> dict[str, Any]:
    """The order's current terms (the latest amendment applied), its amendments and settlement runs."""
    registered, transaction_id = load_order(conn, order_id)
    terms = terms_as_of(conn, registered)
    runs = conn.execute(
        "SELECT run, as_of, lines, inputs_sha256 FROM ledger.settlement_runs WHERE order_id = %s ORDER BY seq",
        (order_id,),
    ).fetchall()
    cancelled = conn.execute(
        "SELECT cancelled_at FROM ledger.order_cancellations WHERE order_id = %s", (order_id,)
    ).fetchone()
    agreement = agreements_db.order_agreement_hash(conn, order_id)
    return {
        **terms.to_json(),
        "confirmed_at": registered.to_json()["confirmed_at"],
        **amendment_summary(conn, order_id),
        "transaction_id": transaction_id,
        "agreement_sha256": None if agreement is None else agreement.hex(),
        "cancelled_at": None if cancelled is None else iso(cancelled[0]),
        "runs": [
            {"run": r[0], "as_of": iso(r[1]), "lines_pence": r[2], "inputs_sha256": bytes(r[3]).hex()} for r in runs
        ],
    }


def list_orders(
    conn: psycopg.Connection,
    *,
    role: str,
    participant_id: str | None,
    provider_id: str | None = None,
    bap_id: str | None = None,
    meter_id: str | None = None,
    transaction_id: str | None = None,
    window_from: datetime | None = None,
    window_to: datetime | None = None,
    cancelled: bool | None = None,
    after: str | None = None,
    limit: int = 100,
) -> dict[str, Any]:
    """Orders by id that this key may read (admin and finance all; a provider its own, a BAP the ones it
    registered; see `require_order_reader`), filtered; a window filter keeps orders overlapping [from, to);
    `after` pages."""
    where: list[str] = []
    args: dict[str, Any] = {}
    if role not in ("admin", "finance"):
        column = {"provider": "o.provider_id", "bap": "o.bap_id"}.get(role)
        if column is None or participant_id is None:
            raise forbidden("orders are read by finance, their BAP and their provider")
        where.append(f"{column} = %(me)s")
        args["me"] = participant_id
    for column, value in (
        ("provider_id", provider_id),
        ("bap_id", bap_id),
        ("meter_id", meter_id.removeprefix("der://") if meter_id else None),
        ("transaction_id", transaction_id),
    ):
        if value is not None:
            where.append(f"o.{column} = %({column})s")
            args[column] = value
    if window_from is not None:
        where.append("o.window_end > %(window_from)s")
        args["window_from"] = window_from
    if window_to is not None:
        where.append("o.window_start < %(window_to)s")
        args["window_to"] = window_to
    if cancelled is not None:
        where.append(
            ("" if cancelled else "NOT ") + "EXISTS (SELECT 1 FROM ledger.order_cancellations c "
            "WHERE c.order_id = o.order_id)"
        )
    if after is not None:
        where.append("o.order_id > %(after)s")
        args["after"] = after
    args["limit"] = max(1, min(limit, limits.MAX_PAGE_SIZE))
    columns = ", ".join(f"o.{c.strip()}" for c in ORDER_COLUMNS.split(","))
    rows = conn.execute(
        f"SELECT {columns}, o.transaction_id, o.registered_at, c.cancelled_at FROM ledger.orders o "
        "LEFT JOIN ledger.order_cancellations c ON c.order_id = o.order_id"
        + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY o.order_id LIMIT %(limit)s",
        args,
    ).fetchall()
    found = [
        {
            **order_from_row(r).to_json(),
            "transaction_id": r[14],
            "registered_at": iso(r[15]),
            "cancelled_at": None if r[16] is None else iso(r[16]),
        }
        for r in rows
    ]
    full = len(found) == args["limit"]
    return {"orders": found, "next_after": found[-1]["order_id"] if full else None}
