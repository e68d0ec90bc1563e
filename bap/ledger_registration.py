"""Registering the BAP's orders with the ledger (Celery: beckn.process_inbox → `ledger_process`): an accepted
order with both signed messages, an amendment with the provider's signed on_update, a cancellation; an order
paid with Compute Flex Tokens is redeemed instead (bap/tokens.py)."""

from __future__ import annotations

import base64
import json
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from bap import tokens
from bap.models import CatalogOffer
from beckn import http
from beckn.models import outbox as outbox_table
from kernel.config import get_settings
from schemas.core import Order
from schemas.flex import OrderSpec, order_to_spec
from schemas.outcome import ledger_order_id

log = structlog.get_logger(__name__)


# -- ledger registration (Celery: beckn.process_inbox → ledger_process) -----------------------------
def _signed(body: bytes, authorization: str) -> dict[str, str]:
    """A signed message as the ledger takes it: the exact bytes (base64) and the Authorization header."""
    return {"body_base64": base64.b64encode(body).decode("ascii"), "authorization": authorization}


def _sent_confirm(session: Session, transaction_id: str, message_id: str) -> dict[str, str]:
    """The confirm this on_confirm answers (same transaction and message id), as the BAP signed and sent it:
    the outbox keeps the exact bytes and the Authorization header of the delivery attempt."""
    sent = session.execute(
        select(outbox_table.c.body, outbox_table.c.last_authorization).where(
            outbox_table.c.action == "confirm",
            outbox_table.c.transaction_id == transaction_id,
            outbox_table.c.message_id == message_id,
        )
    ).first()
    if sent is None or not sent.last_authorization:  # not yet recorded as sent: the sweep retries
        raise RuntimeError(f"no signed confirm {message_id} recorded for transaction {transaction_id}")
    return _signed(bytes(sent.body), sent.last_authorization)


def _resource_type(session: Session, ctx: dict[str, Any], spec: OrderSpec) -> str:
    """What the provider sells (compute | storage), from the catalog offer the order was placed on: the
    ledger's baseline rule depends on it, and the order messages do not carry it."""
    offer = session.get(CatalogOffer, (ctx["transaction_id"], ctx["bpp_id"], spec.provider_id, spec.item_id))
    return str((offer.spec if offer is not None else {}).get("resource_type") or "compute")


def ledger_process(session: Session, row: Any) -> list[int]:
    """Register an accepted order with the ledger (POST /api/v1/orders, with the signed confirm the BAP
    sent and the signed on_confirm it received), amend it (with the signed on_update) or cancel it there.
    Idempotent: the ledger answers an identical re-registration with the existing order. Raises on
    failure, so the inbox row keeps the error and the sweep retries it (FAILED, visibly, after the last
    attempt)."""
    settings = get_settings()
    payload = json.loads(bytes(row.body))
    ctx = payload["context"]
    order = Order.model_validate(payload["message"]["order"])
    spec = order_to_spec(order)
    headers = {"Authorization": f"Bearer {settings.ledger_api_key}"} if settings.ledger_api_key else {}
    base = f"{str(settings.ledger_url).rstrip('/')}/api/v1/orders"
    # The worker's pooled HTTP client (beckn/http.py): a fresh httpx client per call built a TLS context
    # each time, about 20 ms of CPU holding the GIL, and slowed every other task in the worker.
    if row.action == "on_cancel":
        # a token-paid order is the ledger's redemption obligation `cft-<order id>`: cancelling it before its
        # window returns the tokens (ledger/orders.py)
        ledger_id = ledger_order_id(str(spec.order_id), spec.settlement_method)
        r = http.post_sync(
            f"{base}/{ledger_id}/cancel", json.dumps({"reason": "cancelled on the Beckn network"}).encode(), headers
        )
        if r.status == 404:
            return []  # never registered (cancelled before acceptance): nothing to undo
    elif spec.settlement_method == "CFT" and row.action == "on_confirm":  # paid with tokens: redeemed, not registered
        tokens.redeem(session, spec)
        return []
    elif not row.authorization:
        raise RuntimeError(f"{row.action} {ctx['message_id']} has no Authorization header to prove it")
    elif row.action == "on_update":  # the accepted change of kW or window: the provider's signed on_update
        r = http.post_sync(
            f"{base}/{spec.order_id}/amend",
            json.dumps({"on_update": _signed(bytes(row.body), row.authorization)}).encode(),
            headers,
        )
    else:  # the terms are those of the signed on_confirm; the ledger checks both signatures
        r = http.post_sync(
            base,
            json.dumps(
                {
                    "confirm": _sent_confirm(session, ctx["transaction_id"], ctx["message_id"]),
                    "on_confirm": _signed(bytes(row.body), row.authorization),
                    "supplier_id": settings.default_supplier_id,
                    "resource_type": _resource_type(session, ctx, spec),
                }
            ).encode(),
            headers,
        )
    if r.status is None:
        raise RuntimeError(f"ledger unreachable: {r.error}")
    if r.status >= 300:
        raise RuntimeError(f"ledger answered {r.status}: {r.body[:300].decode('utf-8', 'replace')}")
    log.info("order registered with the ledger", order_id=spec.order_id, action=row.action, status=r.status)
    return []
