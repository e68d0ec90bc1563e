"""The grid-events webhook (`POST /api/v1/grid-events`): an operator key or an HMAC-SHA256 signature of the
body; idempotent on the event id (the same body answers the same procurement, another body under the same id
is refused); a higher modification number replaces the earlier procurement; a PRICE_SPIKE the policy buys
nothing for is recorded in the market log, not procured."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

import bap.orchestrator_router
from bap.models import Procurement
from kernel.config import reset_settings
from kernel.db import session_scope
from tests.bap.conftest import Keys, bearer

SECRET = "s3cret-shared-with-the-grid-operator"


@pytest.fixture
def webhook(bap_db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    monkeypatch.setenv("FLEXMARKET_GRID_WEBHOOK_SECRET", SECRET)
    reset_settings()
    kicked: list[str] = []
    monkeypatch.setattr(bap.orchestrator_router, "_kick", kicked.append)
    yield kicked
    monkeypatch.delenv("FLEXMARKET_GRID_WEBHOOK_SECRET")
    reset_settings()


def _event(event_id: str, kind: str = "DR_EVENT", kw: float = 400.0, modification: int = 0) -> dict[str, Any]:
    start = (datetime.now(UTC) + timedelta(days=1)).replace(hour=17, minute=0, second=0, microsecond=0)
    half = timedelta(minutes=30)
    return {
        "event_id": event_id,
        "kind": kind,
        "modification_number": modification,
        "intervals": [
            {"start": (start + i * half).isoformat(), "end": (start + (i + 1) * half).isoformat(), "target_kw": kw}
            for i in range(2)
        ],
    }


def _signed(client: TestClient, body: dict[str, Any], secret: str = SECRET) -> Any:
    raw = json.dumps(body).encode()
    signature = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    return client.post(
        "/api/v1/grid-events",
        content=raw,
        headers={"content-type": "application/json", "X-Flexmarket-Signature": signature},
    )


def test_a_signed_event_is_accepted_and_a_badly_signed_one_refused(client: TestClient, webhook: list[str]) -> None:
    r = _signed(client, _event("ev-hmac-1"))
    assert r.status_code == 202, r.text
    assert r.json()["created"] is True and webhook == [r.json()["procurement_id"]]
    assert _signed(client, _event("ev-hmac-2"), secret="wrong").status_code == 401
    tampered = _event("ev-hmac-3")
    raw = json.dumps(tampered).encode()
    good = "sha256=" + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
    tampered["intervals"][0]["target_kw"] = 9000.0
    r = client.post("/api/v1/grid-events", json=tampered, headers={"X-Flexmarket-Signature": good})
    assert r.status_code == 401
    # the signature opens only the webhook, not the rest of the API
    assert client.get("/api/v1/procurements", headers={"X-Flexmarket-Signature": good}).status_code == 401


def test_events_are_idempotent_and_modifications_replace(client: TestClient, keys: Keys, webhook: list[str]) -> None:
    first = client.post("/api/v1/grid-events", json=_event("ev-idem"), headers=bearer(keys.operator)).json()
    again = client.post("/api/v1/grid-events", json=_event("ev-idem"), headers=bearer(keys.operator))
    assert again.status_code == 202 and again.json()["procurement_id"] == first["procurement_id"]
    assert again.json()["created"] is False
    other = client.post("/api/v1/grid-events", json=_event("ev-idem", kw=500.0), headers=bearer(keys.operator))
    assert other.status_code == 409 and "different body" in other.json()["error"]["message"]
    modified = client.post(
        "/api/v1/grid-events", json=_event("ev-idem", kw=500.0, modification=1), headers=bearer(keys.operator)
    ).json()
    assert modified["created"] is True and modified["procurement_id"] != first["procurement_id"]
    with session_scope("bap") as s:
        old = s.get(Procurement, first["procurement_id"])
        assert old is not None and "replaced by modification 1" in (old.choice or {})["cancel_requested"]
    # viewers and aggregators may not send grid events
    assert client.post("/api/v1/grid-events", json=_event("ev-v"), headers=bearer(keys.viewer)).status_code == 403


def test_a_price_spike_the_policy_buys_nothing_for_is_recorded(
    client: TestClient, keys: Keys, webhook: list[str]
) -> None:
    r = client.post(
        "/api/v1/grid-events", json=_event("spike-1", kind="PRICE_SPIKE", kw=0.0), headers=bearer(keys.operator)
    )
    assert r.status_code == 202 and r.json() == {"procurement_id": None, "status": "recorded", "created": False}
    log = client.get("/api/v1/market-log", headers=bearer(keys.viewer)).json()
    assert any(e["kind"] == "grid_signal" and "PRICE_SPIKE spike-1" in e["message"] for e in log)
    assert webhook == []
