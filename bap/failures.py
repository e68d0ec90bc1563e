"""What the aggregator is told when an action the BAP accepted failed anywhere: refused by the BPP, failed
for good at its worker, undeliverable within the delivery TTL, or failed at the BAP itself (the ledger
registration). Each shows on its order (`last_error`; the state stays what the BPP last reported) and in
`failures()` (GET /api/v1/failures and the transaction view)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bap import orders
from bap.models import BapOrder, Transaction
from beckn.models import outbox as outbox_table
from kernel import clock
from kernel.db import raw

_ORDER_ACTIONS = frozenset({"select", "init", "confirm", "status", "update", "cancel"})


def _order_named_by(session: Session, tx: str, bpp_id: str | None, message: dict[str, Any]) -> BapOrder | None:
    """The order a request or callback body names: its provider (select/init/confirm/update) or order id."""
    sent = message.get("order")
    order: dict[str, Any] = sent if isinstance(sent, dict) else {}
    listed = order.get("items")
    items: list[Any] = listed if isinstance(listed, list) and listed else [{}]
    return orders.named_by(
        session,
        tx,
        bpp_id,
        provider_id=(order.get("provider") or {}).get("id"),
        item_id=items[0].get("id") if isinstance(items[0], dict) else None,
        order_id=message.get("order_id") or order.get("id"),
    )


def _mark_failed(o: BapOrder, what: str) -> None:
    """The failure shows on the order; its state stays what the BPP last said (never pretends)."""
    o.last_error = what[:2000]
    o.updated_at = clock.now()


def outbox_failed(session: Session, failed: list[tuple[Any, str]]) -> None:
    """beckn.outbox hook: requests the BPP refused (NACK) or that could not be delivered within the
    delivery TTL show on their order (the failures endpoint lists the outbox rows themselves)."""
    for row, error in failed:
        payload = json.loads(bytes(row.body))
        ctx = payload.get("context") or {}
        if ctx.get("action") not in _ORDER_ACTIONS:
            continue
        o = _order_named_by(session, str(ctx.get("transaction_id")), ctx.get("bpp_id"), payload.get("message") or {})
        if o is not None:
            _mark_failed(o, f"{ctx['action']} not delivered: {error}")


def ledger_failed(session: Session, row: Any, reason: str) -> list[int]:
    """beckn.processing failure handler: a callback whose ledger step failed for good (registration,
    cancellation or amendment) shows on its order; the failures endpoint lists the inbox row."""
    payload = json.loads(bytes(row.body))
    ctx = payload.get("context") or {}
    o = _order_named_by(session, str(ctx.get("transaction_id")), ctx.get("bpp_id"), payload.get("message") or {})
    if o is not None:
        _mark_failed(o, f"ledger step of {row.action} failed: {reason}")
    return []


def failures(
    session: Session, transaction_id: str | None = None, limit: int = 200, *, aggregator_id: str | None = None
) -> list[dict[str, Any]]:
    """Every action that failed after the BAP accepted it, newest first: requests refused by the BPP
    (NACK) or undeliverable within the delivery TTL (outbox FAILED), callbacks that carry an error (the
    BPP refused, or failed processing it), a search the gateway could not deliver to a BPP
    (`fan_out_failed`, its report naming the BPP), and callbacks whose processing here failed for good
    (the ledger registration)."""
    out: list[dict[str, Any]] = []
    tx_filter = "AND transaction_id = %(tx)s" if transaction_id else ""
    if aggregator_id is not None:  # an aggregator's key: only the transactions it started (bap/auth.py)
        tx_filter += " AND transaction_id IN (SELECT id FROM transactions WHERE aggregator_id = %(agg)s)"
    params = {"tx": transaction_id, "limit": limit, "agg": aggregator_id}
    for r in raw(session).execute(
        "SELECT id, action, receiver_url, transaction_id, message_id, attempts, last_error, body "
        f"FROM outbox WHERE status = 'FAILED' {tx_filter} ORDER BY id DESC LIMIT %(limit)s",
        params,
    ):
        body = json.loads(bytes(r[7]))
        ctx = body.get("context") or {}
        o = _order_named_by(session, r[3], ctx.get("bpp_id"), body.get("message") or {})
        out.append(
            {
                "kind": "not_delivered",
                "action": r[1],
                "transaction_id": r[3],
                "message_id": r[4],
                "to": r[2],
                "attempts": r[5],
                "reason": r[6],
                **_order_ref(o),
            }
        )
    for r in raw(session).execute(
        "SELECT id, action, sender_id, transaction_id, message_id, status, error, body, received_at FROM inbox "
        "WHERE (status = 'FAILED' OR position('\"error\"'::bytea in body) > 0) "
        f"{tx_filter} ORDER BY id DESC LIMIT %(limit)s",
        params,
    ):
        body = json.loads(bytes(r[7]))
        error = body.get("error") if isinstance(body.get("error"), dict) else None
        if r[5] != "FAILED" and error is None:
            continue  # "error" appeared somewhere else in the body
        o = _order_named_by(session, r[3], r[2], body.get("message") or {})
        named_bpp = (body.get("context") or {}).get("bpp_id")
        if r[5] == "FAILED":
            kind, reason = "processing_failed", r[6]
        elif r[1] == "on_search" and r[2] != named_bpp:  # signed by the gateway: its fan-out report
            kind, reason = "fan_out_failed", f"{error.get('code')}: {error.get('message')}" if error else ""
        else:
            kind, reason = "refused", f"{error.get('code')}: {error.get('message')}" if error else ""
        out.append(
            {
                "kind": kind,
                "action": r[1],
                "transaction_id": r[3],
                "message_id": r[4],
                "from": r[2],
                **({"bpp_id": named_bpp} if kind == "fan_out_failed" else {}),
                "reason": reason,
                "received_at": r[8].isoformat(),
                **_order_ref(o),
            }
        )
    return out


def _order_ref(o: BapOrder | None) -> dict[str, Any]:
    if o is None:
        return {"order": None}
    return {"order": {"bpp_id": o.bpp_id, "provider_id": o.provider_id, "order_id": o.order_id, "state": o.state}}


def delivery_failures(session: Session, limit: int = 100, *, aggregator_id: str | None = None) -> list[dict[str, Any]]:
    stmt = select(outbox_table).where(outbox_table.c.status == "FAILED")
    if aggregator_id is not None:  # an aggregator's key: only the transactions it started (bap/auth.py)
        owned = select(Transaction.id).where(Transaction.aggregator_id == aggregator_id)
        stmt = stmt.where(outbox_table.c.transaction_id.in_(owned))
    rows = session.execute(stmt.order_by(outbox_table.c.id.desc()).limit(limit)).all()
    return [
        {
            "id": r.id,
            "action": r.action,
            "to": r.receiver_url,
            "transaction_id": r.transaction_id,
            "attempts": r.attempts,
            "last_error": r.last_error,
        }
        for r in rows
    ]
