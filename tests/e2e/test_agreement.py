"""After every action of the lifecycle — accepted or refused — the BAP, the BPP and the ledger agree on the
order (state, kW, window): the BAP's client API, the BPP's ops view and the ledger's order (admin key)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from bap.client import BapClient, order_of
from flexmarket.runner import Network
from tests.e2e.helpers import bap_client, eventually, tomorrow_window

pytestmark = pytest.mark.e2e

PROVIDER, ITEM = "dc-02", "dc-02-evening-peak"  # 19:00–20:00: a slot the other e2e tests leave free


def _views(network: Network, bap: BapClient, tx: str) -> tuple[dict[str, Any], dict | None, dict | None]:
    o = order_of(bap.transaction(tx), PROVIDER)
    assert o is not None
    bpp = led = None
    if o["order_id"]:
        r = httpx.get(f"{network.url('bpp')}/dc-platform/orders/{o['order_id']}")
        bpp = r.json() if r.status_code == 200 else None
        admin = network.manifest["participants"]["ledger"]["api_keys"]["admin"]
        r = httpx.get(
            f"{network.url('ledger')}/api/v1/orders/{o['order_id']}", headers={"Authorization": f"Bearer {admin}"}
        )
        led = r.json() if r.status_code == 200 else None
    return o, bpp, led


def _terms(o: dict[str, Any]) -> tuple[float, datetime, datetime]:
    return (float(o["power_kw"]), datetime.fromisoformat(o["window_start"]), datetime.fromisoformat(o["window_end"]))


def _agree(network: Network, bap: BapClient, tx: str, state: str) -> bool:
    """True when all three hold the same order in `state` (the ledger: registered once accepted, with the
    same kW and window; cancelled exactly when the order is)."""
    o, bpp, led = _views(network, bap, tx)
    if o["state"] != state:
        return False
    if state in ("SELECTING", "QUOTED"):
        return bpp is None and led is None
    if bpp is None or bpp["state"] != state or _terms(bpp) != _terms(o):
        return False
    if state == "CREATED":
        return led is None
    if led is None:
        return False
    led_terms = (
        led["contracted_w"] / 1000,
        datetime.fromisoformat(led["window_start"]),
        datetime.fromisoformat(led["window_end"]),
    )
    return led_terms == _terms(o) and (led["cancelled_at"] is not None) == (state == "CANCELLED")


def _act(network: Network, bap: BapClient, tx: str, action: str, state: str, **kw: Any) -> dict[str, Any]:
    before = {c["message_id"] for c in bap.transaction(tx)["callbacks"]}
    sent = bap.order(action, tx, "dc-platform.bpp.flexmarket.local", PROVIDER, **kw)
    # the answer arrived …
    bap.wait(tx, lambda v: sent["message_id"] in {c["message_id"] for c in v["callbacks"]} - before, timeout=30)
    # … and all three agree (the ledger's registration, amendment or cancellation is asynchronous)
    eventually(lambda: _agree(network, bap, tx, state), timeout=30)
    o, _, _ = _views(network, bap, tx)
    return o


def test_bap_bpp_and_ledger_agree_after_every_action(network: Network) -> None:
    bap = bap_client(network)
    start, end = tomorrow_window(19, 1)
    tx = bap.search(start, end, 100, region="GB-R13")["transaction_id"]
    bap.wait(tx, lambda v: any(o["item_id"] == ITEM for o in v["offers"]), timeout=30)
    window = {"window_start": start, "window_end": end}
    o = _act(network, bap, tx, "select", "QUOTED", item_id=ITEM, power_kw=100, **window)
    o = _act(network, bap, tx, "init", "CREATED")
    o = _act(network, bap, tx, "confirm", "ACCEPTED")
    o = _act(network, bap, tx, "status", "ACCEPTED")
    assert o["last_error"] is None
    # An accepted update: 150 kW from 18:30 — the ledger is amended, the escrow follows.
    o = _act(network, bap, tx, "update", "ACCEPTED", power_kw=150, window_start=start - timedelta(minutes=30))
    assert _terms(o) == (150.0, start - timedelta(minutes=30), end) and o["last_error"] is None
    # A refused update (more than the offer holds): nothing moves anywhere, the refusal is visible.
    o = _act(network, bap, tx, "update", "ACCEPTED", power_kw=50_000, window_start=start, window_end=end)
    assert _terms(o) == (150.0, start - timedelta(minutes=30), end)
    assert o["last_error"] and o["last_error"].startswith("50002")
    failures = bap.failures(tx)
    assert [f["action"] for f in failures] == ["on_update"] and failures[0]["order"]["state"] == "ACCEPTED"
    # An update the BPP refuses outright (NACK: a window ending where it starts) changes nothing either.
    sent = bap.order("update", tx, "dc-platform.bpp.flexmarket.local", PROVIDER, window_end=o["window_start"])
    view = bap.wait(tx, lambda v: "not delivered" in ((order_of(v, PROVIDER) or {}).get("last_error") or ""))
    o = order_of(view, PROVIDER)
    assert o is not None and o["state"] == "ACCEPTED" and _terms(o) == (150.0, start - timedelta(minutes=30), end)
    assert any(f["message_id"] == sent["message_id"] and f["kind"] == "not_delivered" for f in view["failures"])
    assert _agree(network, bap, tx, "ACCEPTED")
    # A select on an accepted order is only a quote: the order stays ACCEPTED with its terms.
    o = _act(network, bap, tx, "select", "ACCEPTED", item_id=ITEM, power_kw=100, **window)
    assert _terms(o) == (150.0, start - timedelta(minutes=30), end)
    o = _act(network, bap, tx, "cancel", "CANCELLED", reason="test")
    assert o["last_error"] is None
