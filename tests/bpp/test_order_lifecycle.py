"""Time-driven order transitions (beat task bpp.advance_orders): ACCEPTED → IN-PROGRESS when the window
opens, → COMPLETED when it closes; each transition is announced to the buyer by an unsolicited on_status."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from beckn.models import outbox
from bpp import lifecycle
from bpp.catalog import CommitmentError
from bpp.models import Order, OrderEvent
from kernel.db import session_scope

T0 = datetime(2026, 11, 24, 16, 0, tzinfo=UTC)


def _states(order_id: str) -> list[tuple[str | None, str]]:
    with session_scope("bpp") as s:
        return [
            (e.from_state, e.to_state)
            for e in s.scalars(select(OrderEvent).where(OrderEvent.order_id == order_id).order_by(OrderEvent.id))
        ]


def test_window_opens_then_closes(order_id: str) -> None:
    with session_scope("bpp") as s:
        assert lifecycle.advance_orders(s, now=T0 - timedelta(minutes=1)) == []
    with session_scope("bpp") as s:
        [first] = lifecycle.advance_orders(s, now=T0 + timedelta(minutes=5))
    assert _states(order_id) == [("ACCEPTED", "IN-PROGRESS")]
    with session_scope("bpp") as s:
        [second] = lifecycle.advance_orders(s, now=T0 + timedelta(hours=2))
        bodies = [json.loads(bytes(r.body)) for r in s.execute(select(outbox).where(outbox.c.id.in_([first, second])))]
    assert _states(order_id) == [("ACCEPTED", "IN-PROGRESS"), ("IN-PROGRESS", "COMPLETED")]
    codes = [b["message"]["order"]["fulfillments"][0]["state"]["descriptor"]["code"] for b in bodies]
    assert sorted(codes) == ["COMPLETED", "IN-PROGRESS"]
    assert all(b["context"]["action"] == "on_status" and b["context"]["bpp_id"] == "bpp.test" for b in bodies)
    assert len({b["context"]["message_id"] for b in bodies}) == 2  # unsolicited: fresh message ids
    with session_scope("bpp") as s:
        assert lifecycle.advance_orders(s, now=T0 + timedelta(hours=3)) == []  # nothing twice


def test_illegal_transitions_refused(order_id: str) -> None:
    with session_scope("bpp") as s:
        order = s.get(Order, order_id)
        with pytest.raises(CommitmentError):
            lifecycle.transition(s, order, "CREATED")
        with pytest.raises(CommitmentError):
            lifecycle.transition(s, order, "SETTLED")
