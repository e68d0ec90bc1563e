"""bpp/outcomes.py: order outcomes flow back from the ledger's settlement runs to the BPP's order and, in an
unsolicited signed on_status, to its buyer; idempotent, never backwards."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import select

from beckn.models import outbox
from bpp import lifecycle, outcomes
from bpp.models import Order, OrderEvent
from kernel.db import session_scope
from schemas.core import Order as BecknOrder
from schemas.outcome import LedgerOutcome, read_outcome
from tests.bpp.conftest import T0

AFTER = T0 + timedelta(hours=2)  # the window (16:00–17:00) has closed


class FakeLedger:
    def __init__(self) -> None:
        self.outcomes: dict[str, LedgerOutcome | Exception] = {}
        self.asked: list[tuple[str, str]] = []

    def outcome(self, provider_id: str, order_id: str) -> LedgerOutcome | None:
        self.asked.append((provider_id, order_id))
        found = self.outcomes.get(order_id)
        if isinstance(found, Exception):
            raise found
        return found


def _sync(ledger: FakeLedger, now: datetime = AFTER) -> list[int]:
    with session_scope("bpp") as s:
        return outcomes.sync_outcomes(s, ledger, now)


def _sent(ids: list[int]) -> list[dict[str, Any]]:
    with session_scope("bpp") as s:
        return [json.loads(bytes(r.body)) for r in s.execute(select(outbox).where(outbox.c.id.in_(ids)))]


def _order(order_id: str) -> Order:
    with session_scope("bpp") as s:
        o = s.get(Order, order_id)
        assert o is not None
        s.expunge(o)
        return o


def test_the_ledgers_outcome_reaches_the_order_and_its_buyer(order_id: str) -> None:
    ledger = FakeLedger()
    partial = LedgerOutcome("PARTIALLY-DELIVERED", "II", Decimal("62.500"), 1250)
    ledger.outcomes[order_id] = partial
    assert _sync(ledger) == [] and ledger.asked == []  # still ACCEPTED here: its window is not over at this BPP
    with session_scope("bpp") as s:
        lifecycle.advance_orders(s, now=AFTER)  # → IN-PROGRESS → COMPLETED (provisional)
    [sent] = _sent(_sync(ledger))
    assert sent["context"]["action"] == "on_status" and sent["context"]["bap_id"] == "bap.test"
    assert read_outcome(BecknOrder.model_validate(sent["message"]["order"])) == partial
    assert sent["message"]["order"]["fulfillments"][0]["state"]["descriptor"]["code"] == "PARTIALLY-DELIVERED"
    o = _order(order_id)
    assert (o.state, o.settlement_run, o.delivered_energy_kwh, o.settled_amount_pence) == (
        "PARTIALLY-DELIVERED",
        "II",
        62.5,
        1250,
    )
    assert _sync(ledger) == []  # the same run again: nothing new, nothing sent

    # A later run restates it (a revised reading): COMPLETED, a new on_status.
    ledger.outcomes[order_id] = LedgerOutcome("COMPLETED", "SF", Decimal("100.000"), 1500)
    [restated] = _sent(_sync(ledger))
    assert restated["message"]["order"]["fulfillments"][0]["state"]["descriptor"]["code"] == "COMPLETED"
    # An earlier run's outcome (a stale read) changes nothing.
    ledger.outcomes[order_id] = partial
    assert _sync(ledger) == [] and _order(order_id).settlement_run == "SF"

    # The final run: SETTLED, after which the ledger is no longer asked about it.
    ledger.outcomes[order_id] = LedgerOutcome("SETTLED", "DF", Decimal("100.000"), 1500)
    assert len(_sync(ledger)) == 1 and _order(order_id).state == "SETTLED"
    ledger.asked.clear()
    assert _sync(ledger) == [] and ledger.asked == []
    with session_scope("bpp") as s:
        trail = [
            (e.from_state, e.to_state)
            for e in s.scalars(select(OrderEvent).where(OrderEvent.order_id == order_id).order_by(OrderEvent.id))
        ]
    assert trail[-3:] == [
        ("COMPLETED", "PARTIALLY-DELIVERED"),
        ("PARTIALLY-DELIVERED", "COMPLETED"),
        ("COMPLETED", "SETTLED"),
    ]


def test_an_unreadable_ledger_leaves_the_order_for_the_next_run(order_id: str) -> None:
    with session_scope("bpp") as s:
        lifecycle.advance_orders(s, now=AFTER)
    ledger = FakeLedger()
    ledger.outcomes[order_id] = outcomes.LedgerReadError("ledger answered 503")
    assert _sync(ledger) == [] and _order(order_id).state == "COMPLETED"
    ledger.outcomes[order_id] = LedgerOutcome("COMPLETED", "II", Decimal("100.000"), 1500)
    assert len(_sync(ledger)) == 1 and _order(order_id).settlement_run == "II"


def _ledger_api(request: httpx.Request) -> httpx.Response:
    assert request.headers["authorization"] == "Bearer flk_p"
    if request.url.path == "/api/v1/orders/known":
        return httpx.Response(200, json={"order_id": "known", "runs": [{"run": "II"}, {"run": "SF"}]})
    if request.url.path == "/api/v1/settlement/known/SF":
        result = {"delivered_wh": "100000", "contracted_wh": "100000"}
        return httpx.Response(200, json={"run": "SF", "lines_pence": {"utilisation": 1500}, "result": result})
    if request.url.path == "/api/v1/orders/unsettled":
        return httpx.Response(200, json={"order_id": "unsettled", "runs": []})
    if request.url.path == "/api/v1/orders/broken":
        return httpx.Response(503, json={"error": {"code": "unavailable"}})
    return httpx.Response(404, json={"error": {"code": "not_found"}})


def test_reading_the_ledger_with_the_providers_key() -> None:
    with httpx.Client(transport=httpx.MockTransport(_ledger_api)) as client:
        ledger = outcomes.LedgerOutcomes(client, "http://ledger.test/", {"p": "flk_p"})
        assert ledger.outcome("p", "known") == LedgerOutcome("COMPLETED", "SF", Decimal("100.000"), 1500)
        assert ledger.outcome("p", "unsettled") is None
        assert ledger.outcome("p", "never-registered") is None
        assert ledger.outcome("no-key", "known") is None  # no key for this provider: not read
        try:
            ledger.outcome("p", "broken")
        except outcomes.LedgerReadError as exc:
            assert "503" in str(exc)
        else:
            raise AssertionError("a 503 must be an error, not 'no outcome'")


def test_the_least_recently_checked_orders_are_asked_about_first(order_id: str, monkeypatch: Any) -> None:
    with session_scope("bpp") as s:
        first = s.get(Order, order_id)
        assert first is not None
        s.add(Order(**{**_columns(first), "id": "second", "transaction_id": "tx-2"}))
    with session_scope("bpp") as s:
        lifecycle.advance_orders(s, now=AFTER)
        before = {o.id: o.updated_at for o in s.scalars(select(Order))}
    monkeypatch.setattr(outcomes, "BATCH", 1)
    ledger = FakeLedger()
    for i in range(4):
        _sync(ledger, AFTER + timedelta(minutes=i))
    assert [oid for _, oid in ledger.asked] == [order_id, "second", order_id, "second"]  # by turns, none starved
    with session_scope("bpp") as s:
        assert {o.id: o.updated_at for o in s.scalars(select(Order))} == before  # a check is not a change


def _columns(o: Order) -> dict[str, Any]:
    return {c.key: getattr(o, c.key) for c in Order.__table__.columns if c.key not in ("created_at", "updated_at")}
