"""The BAP keeps who cancelled an order as the BPP's on_cancel says (Beckn `cancellation.cancelled_by`) and shows
it in its order view (bap/service.py `order_json`, which the transaction and procurement views use). The
market log's entry for a provider's cancellation runs on real processes in tests/e2e/test_procurement_failures.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from bap import service
from bap.models import BapOrder
from kernel.db import session_scope
from schemas.core import Order as BecknOrder
from schemas.flex import OrderCancellation, OrderView, order_view_to_order
from tests.bap.order_callbacks import SPEC, T0, callback, stored_order


@pytest.fixture()
def tx(bap_db: str) -> str:
    """A transaction with one ACCEPTED order, o-1."""
    return stored_order("ACCEPTED")


def received(tx: str, order: BecknOrder) -> dict[str, Any]:
    """The BAP's order view after the on_cancel carrying `order`."""
    with session_scope("bap") as s:
        service.on_order(s, callback("on_cancel", tx, order), 0)
    return view_of(tx)


def view_of(tx: str) -> dict[str, Any]:
    with session_scope("bap") as s:
        [o] = s.scalars(select(BapOrder).where(BapOrder.transaction_id == tx)).all()
        return service.order_json(o)


@pytest.mark.parametrize("by", ["CONSUMER", "PROVIDER"])
def test_the_order_view_shows_who_cancelled(tx: str, by: Any) -> None:
    cancelled = OrderView(SPEC, "CANCELLED", 150.0, 15.0, T0, cancellation=OrderCancellation(by, "cooling failure"))
    view = received(tx, order_view_to_order(cancelled))
    assert (view["state"], view["cancelled_by"], view["cancellation_reason"]) == ("CANCELLED", by, "cooling failure")


def test_a_bpp_that_does_not_say_who_cancelled_is_shown_as_not_saying(tx: str) -> None:
    order = order_view_to_order(
        OrderView(SPEC, "CANCELLED", 150.0, 15.0, T0, cancellation=OrderCancellation("PROVIDER", "maintenance"))
    )
    assert order.cancellation is not None
    order.cancellation.cancelled_by = None  # another BPP's on_cancel without it (the field is optional in Beckn)
    view = received(tx, order)
    assert (view["state"], view["cancelled_by"], view["cancellation_reason"]) == ("CANCELLED", None, "maintenance")


def test_an_order_not_cancelled_has_no_one_who_cancelled_it(tx: str) -> None:
    view = view_of(tx)
    assert (view["state"], view["cancelled_by"], view["cancellation_reason"]) == ("ACCEPTED", None, None)
