"""Finding the buyer's order a request or callback is about.

An order's identity is its own `id` (the BAP's order reference), not (transaction, BPP, provider): one
procurement may hold several orders with one provider (different offers), and a re-purchase from a provider
after a cancellation is a new order. Within a transaction at most one order per (BPP, provider, item) is open
(not CANCELLED) at a time — a partial unique index holds that — so a message naming the item names the order.
Once the BPP has assigned its order id (at init), that id names it.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from bap.models import BapOrder

CLOSED_STATES = ("CANCELLED",)


class AmbiguousOrder(LookupError):
    """Several open orders match and the request did not say which (name its item_id)."""


def open_order(session: Session, tx: str, bpp_id: str, provider_id: str, item_id: str | None = None) -> BapOrder | None:
    """The open order with this provider (and item, when given) in this transaction."""
    q = select(BapOrder).where(
        BapOrder.transaction_id == tx,
        BapOrder.bpp_id == bpp_id,
        BapOrder.provider_id == provider_id,
        BapOrder.state.not_in(CLOSED_STATES),
    )
    if item_id is not None:
        q = q.where(BapOrder.item_id == item_id)
    found = session.scalars(q.limit(2)).all()
    if len(found) > 1:
        raise AmbiguousOrder(
            f"{len(found)} open orders with {provider_id} at {bpp_id} in transaction {tx}: name the item_id"
        )
    return found[0] if found else None


def by_bpp_order_id(session: Session, tx: str, order_id: str) -> BapOrder | None:
    return session.scalars(
        select(BapOrder).where(BapOrder.transaction_id == tx, BapOrder.order_id == order_id).limit(1)
    ).first()


def named_by(
    session: Session, tx: str, bpp_id: str | None, *, provider_id: str | None, item_id: str | None, order_id: str | None
) -> BapOrder | None:
    """The order a message names: the BPP's order id first, then the open order for its provider and item,
    then (a callback of a cancelled order) the latest order for that provider and item."""
    if order_id:
        found = by_bpp_order_id(session, tx, order_id)
        if found is not None:
            return found
    if not (provider_id and bpp_id):
        return None
    try:
        found = open_order(session, tx, bpp_id, provider_id, item_id)
    except AmbiguousOrder:
        return None
    if found is not None:
        return found
    q = select(BapOrder).where(
        BapOrder.transaction_id == tx, BapOrder.bpp_id == bpp_id, BapOrder.provider_id == provider_id
    )
    if item_id is not None:
        q = q.where(BapOrder.item_id == item_id)
    return session.scalars(q.order_by(BapOrder.updated_at.desc()).limit(1)).first()
