"""The BPP's book of one buyer's orders, for that buyer's reconciliation (bap/reconcile.py).

`POST <platform URL>/reconciliation/orders` answers a BAP with the platform's copy of the orders it placed
there. The request is authenticated like every Beckn message: a BECKN-006 `Authorization` signature over the
raw body by a key the registry holds for a subscriber of type BAP; a BAP reads only its own orders (the body's
`bap_id` must be the signer). It is a read: it changes nothing, so a replay within the signature's lifetime
gains nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from beckn import http, signing
from beckn.errors import Role
from beckn.registry_client import RegistryError, worker_registry
from bpp.models import Order
from kernel import clock
from kernel.config import get_settings
from schemas import limits


class BookRefused(Exception):
    """A request for the book that is refused (HTTP `status`, the message names the reason)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


class BookRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bap_id: limits.Name = Field(description="the signing BAP's subscriber id")
    transaction_id: limits.Identifier | None = Field(default=None, description="only this transaction's orders")
    after: limits.Identifier | None = Field(default=None, description="page: order ids after this one")
    limit: int = Field(default=limits.MAX_PAGE_SIZE, ge=1, le=limits.MAX_PAGE_SIZE)


def verify_bap(body: bytes, authorization: str | None) -> str:
    """The subscriber id of the BAP whose registered key signed `body`; BookRefused otherwise."""
    try:
        params = signing.parse_authorization(authorization)
    except signing.SignatureError as exc:
        raise BookRefused(401, "invalid_signature", str(exc)) from exc
    registry = worker_registry()
    try:
        record = http.run_with_client(lambda c: registry.key_for(c, params.subscriber_id, params.unique_key_id))
    except RegistryError as exc:
        raise BookRefused(503, "registry_unavailable", f"cannot verify the signature: {exc}") from exc
    if record is None:
        raise BookRefused(401, "invalid_signature", f"key {params.unique_key_id} of {params.subscriber_id} is unknown")
    if record.type != Role.BAP.value:
        raise BookRefused(403, "forbidden", f"{params.subscriber_id} is a {record.type}; only a BAP reads its book")
    if not record.valid_at(clock.wall_now()):
        raise BookRefused(401, "invalid_signature", f"key {params.unique_key_id} is outside its validity window")
    try:
        signing.verify(params, body, record.public_key, clock_skew_s=get_settings().clock_skew_s)
    except signing.SignatureError as exc:
        raise BookRefused(401, "invalid_signature", str(exc)) from exc
    return params.subscriber_id


def _iso(t: datetime) -> str:
    return t.isoformat()


def order_entry(o: Order) -> dict[str, Any]:
    return {
        "order_id": o.id,
        "transaction_id": o.transaction_id,
        "provider_id": o.provider_id,
        "state": o.state,
        "cancelled_by": o.cancelled_by,
        "power_kw": o.power_kw,
        "window_start": _iso(o.window_start),
        "window_end": _iso(o.window_end),
        "price_gbp_per_mwh": o.price_gbp_per_mwh,
        "settlement_run": o.settlement_run,
        "delivered_energy_kwh": o.delivered_energy_kwh,
        "settled_amount_pence": o.settled_amount_pence,
    }


def book(session: Session, bpp_id: str, signer: str, req: BookRequest) -> dict[str, Any]:
    """The platform's copy of the signer's orders, by order id, a page at a time (`next_after`)."""
    if req.bap_id != signer:
        raise BookRefused(403, "forbidden", f"bap_id: {signer} may read only its own orders, not {req.bap_id}'s")
    q = select(Order).where(Order.bpp_id == bpp_id, Order.bap_id == signer)
    if req.transaction_id is not None:
        q = q.where(Order.transaction_id == req.transaction_id)
    if req.after is not None:
        q = q.where(Order.id > req.after)
    orders = session.scalars(q.order_by(Order.id).limit(req.limit)).all()
    full = len(orders) == req.limit
    return {"orders": [order_entry(o) for o in orders], "next_after": orders[-1].id if full else None}
