"""Time-driven order transitions (beat task bpp.advance_orders): ACCEPTED → IN-PROGRESS when the window
opens, → COMPLETED when it closes; each transition is announced to the buyer by an unsolicited on_status."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from beckn.errors import Role
from beckn.identity import load_or_create_identity
from beckn.models import outbox
from bpp import service
from bpp.catalog import CommitmentError
from bpp.models import Order, OrderEvent
from kernel.config import reset_settings
from kernel.db import session_scope

T0 = datetime(2026, 11, 24, 16, 0, tzinfo=UTC)


@pytest.fixture()
def order_id(isolated_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("FLEXMARKET_HOME", str(tmp_path))
    reset_settings()
    load_or_create_identity(tmp_path, "bpp.test", Role.BPP, "http://127.0.0.1:9/p")
    with session_scope("bpp") as s:
        o = Order(
            id=str(uuid.uuid4()),
            bpp_id="bpp.test",
            bap_id="bap.test",
            bap_uri="http://127.0.0.1:9/beckn",
            transaction_id=str(uuid.uuid4()),
            provider_id="p",
            item_id="i",
            power_kw=100,
            window_start=T0,
            window_end=T0 + timedelta(hours=1),
            meter_id="M",
            settlement_method="P415",
            price_gbp_per_mwh=100,
            state="ACCEPTED",
            city_code="GB-R13",
            country_code="GBR",
        )
        s.add(o)
        return o.id


def _states(order_id: str) -> list[tuple[str | None, str]]:
    with session_scope("bpp") as s:
        return [
            (e.from_state, e.to_state)
            for e in s.scalars(select(OrderEvent).where(OrderEvent.order_id == order_id).order_by(OrderEvent.id))
        ]


def test_window_opens_then_closes(order_id: str) -> None:
    with session_scope("bpp") as s:
        assert service.advance_orders(s, now=T0 - timedelta(minutes=1)) == []
    with session_scope("bpp") as s:
        [first] = service.advance_orders(s, now=T0 + timedelta(minutes=5))
    assert _states(order_id) == [("ACCEPTED", "IN-PROGRESS")]
    with session_scope("bpp") as s:
        [second] = service.advance_orders(s, now=T0 + timedelta(hours=2))
        bodies = [json.loads(bytes(r.body)) for r in s.execute(select(outbox).where(outbox.c.id.in_([first, second])))]
    assert _states(order_id) == [("ACCEPTED", "IN-PROGRESS"), ("IN-PROGRESS", "COMPLETED")]
    codes = [b["message"]["order"]["fulfillments"][0]["state"]["descriptor"]["code"] for b in bodies]
    assert sorted(codes) == ["COMPLETED", "IN-PROGRESS"]
    assert all(b["context"]["action"] == "on_status" and b["context"]["bpp_id"] == "bpp.test" for b in bodies)
    assert len({b["context"]["message_id"] for b in bodies}) == 2  # unsolicited: fresh message ids
    with session_scope("bpp") as s:
        assert service.advance_orders(s, now=T0 + timedelta(hours=3)) == []  # nothing twice


def test_illegal_transitions_refused(order_id: str) -> None:
    with session_scope("bpp") as s:
        order = s.get(Order, order_id)
        with pytest.raises(CommitmentError):
            service.transition(s, order, "CREATED")
        with pytest.raises(CommitmentError):
            service.transition(s, order, "SETTLED")
