"""Who cancelled an order (Beckn 1.1 `Cancellation.cancelled_by`): CONSUMER for the buyer's Beckn cancel, PROVIDER
for the provider's (bpp/admin.py; its own test is tests/bpp/test_admin.py). The BPP keeps it on the order
(bpp/lifecycle.py `cancel`, CHECKed by the database: set exactly when CANCELLED), every order it sends afterwards
says it, and orders cancelled before migration 0017 are filled in from their history."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest
from alembic.script import ScriptDirectory
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from beckn import envelope
from beckn.models import outbox
from bpp import book, lifecycle, service
from bpp.catalog import CommitmentError
from bpp.models import Order, OrderEvent
from kernel import clock, db
from kernel.db import session_scope
from schemas.core import Order as BecknOrder
from schemas.flex import OrderCancellation, OrderSpec, OrderView, order_view_to_order

T0 = datetime(2026, 11, 24, 16, 0, tzinfo=UTC)  # the conftest order's window opens here
MIGRATION = "0017_bpp_cancelled_by"


@pytest.fixture()
def before_the_window() -> Iterator[datetime]:
    """Market time an hour before the conftest order's window opens."""
    now = T0 - timedelta(hours=1)
    clock.set_clock(clock.SimulatedClock(start=now, anchor=datetime.now(UTC), speed=1.0))
    yield now
    clock.set_clock(None)


def request_row(order_id: str, action: str, message: dict[str, Any]) -> SimpleNamespace:
    """An accepted Beckn request from the conftest order's buyer, as beckn.processing hands it to service.process."""
    with session_scope("bpp") as s:
        o = s.get(Order, order_id)
        assert o is not None
        tx = o.transaction_id
    ctx = envelope.context(
        action,
        bap_id="bap.test",
        bap_uri="http://127.0.0.1:9/beckn",
        transaction_id=tx,
        bpp_id="bpp.test",
        bpp_uri="http://127.0.0.1:9/p",
        city_code="GB-R13",
        country_code="GBR",
    )
    body = envelope.dumps({"context": ctx, "message": message})
    return SimpleNamespace(body=body, action=action, receiver_id="bpp.test", gateway_id=None)


def processed(row: SimpleNamespace) -> dict[str, Any]:
    """service.process the request; the callback it queued."""
    with session_scope("bpp") as s:
        [outbox_id] = service.process(s, row)
    with session_scope("bpp") as s:
        body = s.scalar(select(outbox.c.body).where(outbox.c.id == outbox_id))
    assert body is not None
    answer: dict[str, Any] = json.loads(bytes(body))
    return answer


def stored(order_id: str) -> Order:
    with session_scope("bpp") as s:
        o = s.get(Order, order_id)
        assert o is not None
        s.expunge(o)
        return o


# -- the Beckn form -------------------------------------------------------------------------------------------
SPEC = OrderSpec("p", "i", 100.0, T0, T0 + timedelta(hours=1), "M", "P415", "o-1")


@given(st.sampled_from(["CONSUMER", "PROVIDER"]), st.text(min_size=1, max_size=200))
def test_the_beckn_order_says_who_cancelled_and_why(by: Any, reason: str) -> None:
    view = OrderView(SPEC, "CANCELLED", 150.0, 15.0, T0, cancellation=OrderCancellation(by, reason))
    sent = BecknOrder.model_validate(order_view_to_order(view).dump())  # as the buyer parses it
    assert sent.cancellation is not None
    assert sent.cancellation.cancelled_by == by
    assert sent.cancellation.reason == {"descriptor": {"name": reason}}


@pytest.mark.parametrize("state", ["CREATED", "ACCEPTED", "IN-PROGRESS", "COMPLETED", "SETTLED", None])
def test_only_a_cancelled_order_has_a_cancellation_and_a_cancelled_one_always_has(state: str | None) -> None:
    assert order_view_to_order(OrderView(SPEC, state, 150.0, 15.0, T0)).cancellation is None
    with pytest.raises(ValueError, match="cancellation"):
        OrderView(SPEC, state, 150.0, 15.0, T0, cancellation=OrderCancellation("PROVIDER", "maintenance"))
    with pytest.raises(ValueError, match="CANCELLED"):
        OrderView(SPEC, "CANCELLED", 150.0, 15.0, T0)


# -- the BPP ----------------------------------------------------------------------------------------------------
def test_the_buyers_cancel_is_the_consumers(order_id: str, before_the_window: datetime) -> None:
    answer = processed(request_row(order_id, "cancel", {"order_id": order_id, "descriptor": {"name": "not needed"}}))
    assert answer["context"]["action"] == "on_cancel" and "error" not in answer
    cancellation = answer["message"]["order"]["cancellation"]
    assert cancellation == {"cancelled_by": "CONSUMER", "reason": {"descriptor": {"name": "not needed"}}}
    o = stored(order_id)
    assert (o.state, o.cancelled_by, o.cancellation_reason) == ("CANCELLED", "CONSUMER", "not needed")
    assert book.order_entry(o)["cancelled_by"] == "CONSUMER"  # the buyer's reconciliation read says it too
    with session_scope("bpp") as s:
        [event] = s.scalars(select(OrderEvent).where(OrderEvent.order_id == order_id))
        assert event.reason == "cancelled by the consumer: not needed"


def test_a_later_status_still_says_the_provider_cancelled(order_id: str, before_the_window: datetime) -> None:
    with session_scope("bpp") as s:
        order = s.get(Order, order_id)
        assert order is not None
        lifecycle.cancel(s, order, by="PROVIDER", reason="cooling plant failure", now=before_the_window)
    answer = processed(request_row(order_id, "status", {"order_id": order_id}))
    assert answer["context"]["action"] == "on_status"
    assert answer["message"]["order"]["cancellation"]["cancelled_by"] == "PROVIDER"
    # the buyer cannot cancel it again, and asking does not make it the buyer's
    refused = processed(request_row(order_id, "cancel", {"order_id": order_id}))
    assert refused["error"]["message"].startswith(f"order {order_id} is CANCELLED")
    assert refused["message"]["order"]["cancellation"]["cancelled_by"] == "PROVIDER"
    assert stored(order_id).cancelled_by == "PROVIDER"


@pytest.mark.parametrize("by", ["CONSUMER", "PROVIDER"])
def test_no_one_cancels_once_the_window_has_opened(order_id: str, by: Any) -> None:
    with session_scope("bpp") as s:
        order = s.get(Order, order_id)
        assert order is not None
        with pytest.raises(CommitmentError, match="only before the window opens"):
            lifecycle.cancel(s, order, by=by, reason="too late", now=T0)
    o = stored(order_id)
    assert (o.state, o.cancelled_by, o.cancellation_reason) == ("ACCEPTED", None, None)


def test_cancelled_is_entered_only_by_saying_who_cancelled(order_id: str) -> None:
    with session_scope("bpp") as s:
        order = s.get(Order, order_id)
        assert order is not None
        with pytest.raises(ValueError, match="who cancelled"):
            lifecycle.transition(s, order, "CANCELLED", "no one said who")
    assert stored(order_id).state == "ACCEPTED"


@pytest.mark.parametrize(
    "values",
    [
        {"state": "CANCELLED"},  # cancelled, but by no one
        {"state": "CANCELLED", "cancelled_by": "SYSTEM"},  # not a party Beckn names
        {"cancelled_by": "PROVIDER"},  # ACCEPTED, yet cancelled by someone
    ],
)
def test_the_database_holds_the_invariant(order_id: str, values: dict[str, str]) -> None:
    with pytest.raises(IntegrityError, match="orders_cancelled_by"), session_scope("bpp") as s:
        s.execute(update(Order).where(Order.id == order_id).values(**values))


# -- migration 0017 ---------------------------------------------------------------------------------------------
def test_orders_cancelled_before_the_migration_are_filled_in_from_their_history(pg_server_url: str) -> None:
    url = db.create_database(pg_server_url, "fm_cancelled_by")
    before = ScriptDirectory.from_config(db.alembic_config(url)).get_revision(MIGRATION).down_revision
    assert isinstance(before, str)
    try:
        db.upgrade(url, before)
        with psycopg.connect(db.libpq_url(url)) as conn:
            for order_id, state, event_reason in [
                ("by-buyer", "CANCELLED", "grid need passed"),
                ("by-provider", "CANCELLED", "cancelled by the provider: cooling plant failure"),
                ("accepted", "ACCEPTED", "confirmed"),
            ]:
                conn.execute(
                    "INSERT INTO bpp.orders (id, bpp_id, bap_id, bap_uri, transaction_id, provider_id, item_id, "
                    "power_kw, window_start, window_end, meter_id, settlement_method, price_gbp_per_mwh, state, "
                    "city_code, country_code) VALUES (%s, 'bpp', 'bap', 'http://b', %s, 'p', 'i', 100, %s, %s, 'M', "
                    "'P415', 100, %s, 'GB-R13', 'GBR')",
                    (order_id, str(uuid.uuid4()), T0, T0 + timedelta(hours=1), state),
                )
                conn.execute(
                    "INSERT INTO bpp.order_events (order_id, from_state, to_state, reason) "
                    "VALUES (%s, 'ACCEPTED', %s, %s)",
                    (order_id, state if state == "CANCELLED" else "ACCEPTED", event_reason),
                )
        db.upgrade(url, MIGRATION)
        with psycopg.connect(db.libpq_url(url)) as conn:
            got = dict(conn.execute("SELECT id, cancelled_by FROM bpp.orders").fetchall())
        assert got == {"by-buyer": "CONSUMER", "by-provider": "PROVIDER", "accepted": None}
        db.downgrade(url, before)  # and back: the column and its checks go
        with psycopg.connect(db.libpq_url(url)) as conn:
            columns = {c.name for c in conn.execute("SELECT * FROM bpp.orders LIMIT 0").description or []}
        assert "cancelled_by" not in columns and "cancellation_reason" in columns
    finally:
        db.drop_database(pg_server_url, url)
