"""An accepted Beckn update reaches the ledger: POST /api/v1/orders/{id}/amend, with the platform's signed
on_update, records the new kW and window (append-only, idempotent by the on_update's message id), the
escrow follows them, and settlement uses the terms as of its instant."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import psycopg
from fastapi.testclient import TestClient

from ledger.orders import terms_as_of
from ledger.settlement_runs import load_inputs
from tests.ledger.agreements import PLATFORM, Deal, answer_message, party, wire
from tests.ledger.helpers import snapshot
from tests.ledger.test_api import BAP, P1, keys, order_body, window  # noqa: F401  (keys is a fixture)


def on_update(oid: str, *, kw: float, start: datetime, end: datetime, reference: str) -> dict:
    """The platform's signed on_update accepting new kW and window for order `oid` (test_api's order_body)."""
    deal = Deal(
        order_id=oid,
        provider_id=P1,
        meter_id=f"M-{P1}",
        window_start=start,
        window_end=end,
        power_kw=kw,
        price_gbp_per_mwh=312.25,
        transaction_id=f"txn-{oid}",
    )
    message = answer_message(deal, party(PLATFORM, "BPP"), action="on_update", bap=BAP, message_id=reference)
    return {"on_update": wire(message)}


def _entry(c: psycopg.Connection, entry_id: str) -> tuple | None:
    return c.execute("SELECT kind, amount, pending_id FROM ledger.entries WHERE id = %s", (entry_id,)).fetchone()


def test_amend_changes_terms_escrow_and_settlement_inputs(
    client: TestClient,
    keys: dict,  # noqa: F811
    conn: psycopg.Connection,
) -> None:
    oid = f"o-{uuid.uuid4().hex[:8]}"
    r = client.post("/api/v1/orders", json=order_body(oid), headers=keys["bap"])
    assert r.status_code == 201, r.text
    first_reserve = r.json()["reserve_pence"]
    registered_at = datetime.now(UTC)
    start, end = window()
    amend = on_update(oid, kw=100, start=start + timedelta(hours=1), end=end + timedelta(hours=2), reference="msg-1")
    for who in ("p1", "p2"):  # providers may not amend a buyer's order
        assert client.post(f"/api/v1/orders/{oid}/amend", json=amend, headers=keys[who]).status_code == 403
    r = client.post(f"/api/v1/orders/{oid}/amend", json=amend, headers=keys["bap"])
    assert r.status_code == 201, r.text
    new_reserve = r.json()["reserve_pence"]
    assert 0 < new_reserve != first_reserve
    order = client.get(f"/api/v1/orders/{oid}", headers=keys["finance"]).json()
    assert order["contracted_w"] == 100_000
    assert datetime.fromisoformat(order["window_start"]) == start + timedelta(hours=1)
    assert datetime.fromisoformat(order["window_end"]) == end + timedelta(hours=2)
    assert [a["seq"] for a in order["amendments"]] == [1]
    # The escrow follows the terms: the first reserve is voided, a new one holds the amended maximum.
    assert _entry(conn, f"order:{oid}:reserve:void")[0] == "void"
    assert _entry(conn, f"order:{oid}:reserve:a1")[:2] == ("pending", new_reserve)
    # A re-sent amendment (same reference) changes nothing.
    before = snapshot(conn)
    r = client.post(f"/api/v1/orders/{oid}/amend", json=amend, headers=keys["bap"])
    assert r.status_code == 200 and r.json()["status"] == "exists"
    assert snapshot(conn) == before
    # Settlement sees the terms as the ledger knew them at its instant.
    terms, _, _, _ = load_inputs(conn, oid, datetime.now(UTC))
    assert terms.contracted_w == 100_000 and terms.window_start == start + timedelta(hours=1)
    registered, _, _, _ = load_inputs(conn, oid, registered_at - timedelta(seconds=1))
    assert registered.contracted_w == 250_500 and registered.window_start == start
    assert terms_as_of(conn, registered, registered_at - timedelta(seconds=1)) == registered
    # Cancelling releases the amended reserve; an amendment after that is refused.
    assert client.post(f"/api/v1/orders/{oid}/cancel", json={}, headers=keys["bap"]).json()["status"] == "cancelled"
    assert _entry(conn, f"order:{oid}:cancel")[2] == f"order:{oid}:reserve:a1"
    amend2 = on_update(oid, kw=50, start=start + timedelta(hours=1), end=end + timedelta(hours=2), reference="msg-2")
    r = client.post(f"/api/v1/orders/{oid}/amend", json=amend2, headers=keys["bap"])
    assert r.status_code == 409 and r.json()["error"]["code"] == "order_cancelled"
