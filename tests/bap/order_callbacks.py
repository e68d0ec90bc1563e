"""What the BAP's order-callback tests share: one order o-1 (provider p, item i, 100 kW, 16:00–17:00) stored in
a fresh transaction, and a verified inbound callback from its BPP carrying a Beckn order."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from bap.models import BapOrder, Transaction
from beckn.errors import Role
from beckn.identity import Identity
from beckn.keys import KeyPair
from beckn.pipeline import Inbound, Verified
from kernel.db import session_scope
from schemas.core import Context
from schemas.core import Order as BecknOrder
from schemas.flex import OrderSpec
from schemas.messages import OrderMessage

T0 = datetime(2026, 11, 24, 16, 0, tzinfo=UTC)
BPP = "bpp.test"
ME = Identity("bap.test.flexmarket.local", Role.BAP, "http://127.0.0.1:9/beckn", KeyPair.generate())
SPEC = OrderSpec("p", "i", 100.0, T0, T0 + timedelta(hours=1), "M", "P415", "o-1")


def stored_order(state: str) -> str:
    """A new transaction holding order o-1 in `state`; its id."""
    tx = str(uuid.uuid4())
    with session_scope("bap") as s:
        s.add(Transaction(id=tx, request={}, city_code="GB-R13", country_code="GBR"))
        s.add(
            BapOrder(
                transaction_id=tx,
                bpp_id=BPP,
                provider_id="p",
                bpp_uri="http://127.0.0.1:9/p",
                item_id="i",
                order_id="o-1",
                power_kw=100.0,
                window_start=T0,
                window_end=T0 + timedelta(hours=1),
                state=state,
                price_gbp_per_mwh=150.0,
            )
        )
    return tx


def callback(action: str, tx: str, order: BecknOrder) -> Inbound:
    """The BPP's `action` (on_status, on_cancel, …) for `order` in `tx`, as the pipeline hands it over verified."""
    ctx = Context(action=action, message_id=str(uuid.uuid4()), transaction_id=tx, bpp_id=BPP)
    return Inbound(
        action=action,
        raw=b"{}",
        payload={},
        context=ctx,
        message=OrderMessage(order=order),
        error=None,
        receiver=ME,
        verified=Verified(BPP, "k", "http://127.0.0.1:9/p"),
        authorization="Signature …",
        gateway_authorization=None,
    )
