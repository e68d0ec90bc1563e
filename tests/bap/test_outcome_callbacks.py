"""The BAP's on_status handler (bap/service.py on_order) keeps the outcome the BPP reports from the ledger's
settlement runs, idempotently, and never lets a late message move its copy back."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from bap import orders, service
from beckn.errors import BecknError
from beckn.pipeline import Inbound
from kernel.db import session_scope
from schemas.flex import OrderView, order_view_to_order
from schemas.messages import OrderMessage
from schemas.outcome import LedgerOutcome, with_outcome
from tests.bap.order_callbacks import BPP, SPEC, T0, callback, stored_order


@pytest.fixture()
def tx(bap_db: str) -> str:
    return stored_order("COMPLETED")


def _on_status(tx: str, state: str, outcome: LedgerOutcome | None) -> Inbound:
    order = order_view_to_order(OrderView(SPEC, state, 150.0, 15.0, T0 + timedelta(hours=2)))
    if outcome is not None:
        order = with_outcome(order, outcome)
    return callback("on_status", tx, order)


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
