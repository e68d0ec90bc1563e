"""The BAP's on_status handler (bap/service.py on_order) keeps the outcome the BPP reports from the ledger's
settlement runs, idempotently, and never lets a late message move its copy back."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from bap import orders, service
from bap.models import BapOrder, Transaction
from beckn.errors import BecknError, Role
from beckn.identity import Identity
from beckn.keys import KeyPair
from beckn.pipeline import Inbound, Verified
from kernel.db import session_scope
from schemas.core import Context
from schemas.flex import OrderSpec, OrderView, order_view_to_order
from schemas.messages import OrderMessage
from schemas.outcome import LedgerOutcome, with_outcome

T0 = datetime(2026, 11, 24, 16, 0, tzinfo=UTC)
BPP = "bpp.test"
ME = Identity("bap.test.flexmarket.local", Role.BAP, "http://127.0.0.1:9/beckn", KeyPair.generate())


@pytest.fixture()
def tx(bap_db: str) -> str:
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
                state="COMPLETED",
                price_gbp_per_mwh=150.0,
            )
        )
    return tx


def _on_status(tx: str, state: str, outcome: LedgerOutcome | None) -> Inbound:
    spec = OrderSpec("p", "i", 100.0, T0, T0 + timedelta(hours=1), "M", "P415", "o-1")
    order = order_view_to_order(OrderView(spec, state, 150.0, 15.0, T0 + timedelta(hours=2)))
    if outcome is not None:
        order = with_outcome(order, outcome)
    ctx = Context(action="on_status", message_id=str(uuid.uuid4()), transaction_id=tx, bpp_id=BPP)
    return Inbound(
        action="on_status",
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


def _receive(msg: Inbound) -> tuple[str, str | None, float | None, int | None]:
    with session_scope("bap") as s:
        service.on_order(s, msg, 0)
    with session_scope("bap") as s:
        o = orders.open_order(s, str(msg.context.transaction_id), BPP, "p")
        assert o is not None
        return o.state, o.settlement_run, o.delivered_energy_kwh, o.settled_amount_pence


def test_outcomes_are_kept_and_late_messages_change_nothing(tx: str) -> None:
    ii = LedgerOutcome("PARTIALLY-DELIVERED", "II", Decimal("62.500"), 1250)
    sf = LedgerOutcome("COMPLETED", "SF", Decimal("100.000"), 1500)
    df = LedgerOutcome("SETTLED", "DF", Decimal("100.000"), 1500)
    assert _receive(_on_status(tx, "PARTIALLY-DELIVERED", ii)) == ("PARTIALLY-DELIVERED", "II", 62.5, 1250)
    assert _receive(_on_status(tx, "PARTIALLY-DELIVERED", ii)) == ("PARTIALLY-DELIVERED", "II", 62.5, 1250)
    # the provisional COMPLETED of the window's close, delivered late: older news
    assert _receive(_on_status(tx, "COMPLETED", None))[:2] == ("PARTIALLY-DELIVERED", "II")
    assert _receive(_on_status(tx, "COMPLETED", sf)) == ("COMPLETED", "SF", 100.0, 1500)
    assert _receive(_on_status(tx, "PARTIALLY-DELIVERED", ii))[:2] == ("COMPLETED", "SF")  # an earlier run
    assert _receive(_on_status(tx, "SETTLED", df)) == ("SETTLED", "DF", 100.0, 1500)
    assert _receive(_on_status(tx, "IN-PROGRESS", None))[0] == "SETTLED"


def test_a_malformed_outcome_is_refused_naming_the_field(tx: str) -> None:
    msg = _on_status(tx, "COMPLETED", LedgerOutcome("COMPLETED", "II", Decimal("1"), 1))
    assert isinstance(msg.message, OrderMessage)
    group = msg.message.order.fulfillments[0].tags[-1]  # type: ignore[index]
    for tag in group.list_ or []:
        if tag.descriptor and tag.descriptor.code == "settlement_run":
            tag.value = "ZZ"
    with pytest.raises(BecknError) as refused, session_scope("bap") as s:
        service.on_order(s, msg, 0)
    assert "settlement_run" in str(refused.value)
    assert _receive(_on_status(tx, "COMPLETED", None))[:2] == ("COMPLETED", None)  # nothing was kept
