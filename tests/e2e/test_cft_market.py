"""Compute Flex Tokens in the market, end to end on the shared network's real processes (issue 12): a provider's
series is in its catalog; the BAP buys tokens as a Beckn order, settled delivery versus payment on the ledger; a
purchase beyond what is left is refused and the reason reaches the BAP; a flexibility order paid with tokens burns
them on the ledger, which registers the provider's obligation for the order.

Provider and window: `dc-north-scotland` on the north platform (600 kW evening offer 16:00–20:00 tomorrow; its
series: 600 kW over those 4 h = 2 tokens at 90% of £150/MWh = £135). No other e2e test orders on that evening
offer (the others use the London providers' evenings, and the north provider's mornings). The obligation's
settlement needs metering and the market clock past tomorrow's window, which this test cannot wait for: it
asserts the obligation's registered terms instead.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx

from bap.client import BapApiError, order_in, order_of
from flexmarket.runner import BAP_ID, Network
from tests.e2e.helpers import bap_client, eventually, tomorrow_window

NORTH = "north-platform.bpp.flexmarket.local"
PROVIDER = "dc-north-scotland"
EVENING_ITEM = f"{PROVIDER}-evening-peak"


def _ledger(network: Network, path: str) -> tuple[int, Any]:
    finance = network.manifest["participants"]["ledger"]["api_keys"]["finance"]
    r = httpx.get(f"{network.url('ledger')}/api/v1{path}", headers={"Authorization": f"Bearer {finance}"})
    return r.status_code, r.json()


def _balance_pence(network: Network, account: str) -> int:
    status, body = _ledger(network, f"/balances/{account}")
    if status == 404:
        return 0  # not opened yet
    assert status == 200, body
    return int(body["balance"]) if "balance" in body else int(body["credits_posted"]) - int(body["debits_posted"])


def _series_seen(bap: Any, start: datetime, end: datetime) -> tuple[str, dict[str, Any]]:
    """Search the north until the provider's series is in a catalog (the BPP mints it at start, through a worker)."""
    found: dict[str, Any] = {}

    def search() -> bool:
        tx = bap.search(start, end, 500, city_code="GB-R1")["transaction_id"]
        try:
            view = bap.wait(tx, lambda v: any(s["provider_id"] == PROVIDER for s in v["token_offers"]), timeout=5)
        except TimeoutError:
            return False
        found.update(tx=tx, series=next(s for s in view["token_offers"] if s["provider_id"] == PROVIDER))
        return True

    eventually(search, timeout=90, interval=1)
    return found["tx"], found["series"]


def _buy(bap: Any, tx: str, series_id: str, tokens: int) -> dict[str, Any]:
    body = {"transaction_id": tx, "bpp_id": NORTH, "provider_id": PROVIDER, "series_id": series_id, "tokens": tokens}
    started = bap._post("/tokens/buy", body)
    ref = started["token_order_ref"]

    def finished(view: dict[str, Any]) -> bool:
        order = next(o for o in view["token_orders"] if o["token_order_ref"] == ref)
        return order["state"] in ("ACCEPTED", "FAILED")

    view = bap.wait(tx, finished, timeout=30)
    return next(o for o in view["token_orders"] if o["token_order_ref"] == ref)


def test_buy_tokens_then_pay_an_order_with_them(network: Network) -> None:
    bap = bap_client(network)
    start, end = tomorrow_window(16, 2)
    tx, series = _series_seen(bap, start, end)
    series_id = series["series_id"]
    assert series["tokens_available"] == 2
    assert Decimal(series["price_gbp_per_token"]) == Decimal("135.00")
    assert datetime.fromisoformat(series["valid_from"]) == start
    assert datetime.fromisoformat(series["valid_to"]) == start.replace(hour=20)
    assert all(o["item_id"] != series_id for o in bap.transaction(tx)["offers"])  # not taken for a flex offer

    # -- buying one token: delivery versus payment on the ledger, with the BAP's signed confirm
    cash, revenue = f"bap:{BAP_ID}:cash", f"provider:{PROVIDER}:revenue"
    cash_before, revenue_before = _balance_pence(network, cash), _balance_pence(network, revenue)
    bought = _buy(bap, tx, series_id, 1)
    assert bought["state"] == "ACCEPTED", bought
    assert bought["order_id"] and Decimal(bought["price_gbp_per_token"]) == Decimal("135.00")
    status, info = _ledger(network, f"/cft/series/{series_id}")
    assert status == 200 and info["holdings"].get(BAP_ID) == 1 and info["holdings"].get(PROVIDER) == 1, info
    assert _balance_pence(network, cash) == cash_before - 13_500
    assert _balance_pence(network, revenue) == revenue_before + 13_500
    held = bap._get("/tokens")["holdings"]
    assert {"series_id": series_id, "provider_id": PROVIDER, "tokens": 1} == {
        k: v
        for k, v in next(h for h in held if h["series_id"] == series_id).items()
        if k != "valid_from" and k != "valid_to"
    }

    # -- two more than the one left: refused, the reason reaching the BAP, nothing sold
    refused = _buy(bap, tx, series_id, 2)
    assert refused["state"] == "FAILED" and "1 available" in (refused["last_error"] or ""), refused
    reasons = [f["reason"] for f in bap.failures(tx) if f["kind"] == "refused"]
    assert any("2 tokens asked, 1 available" in r for r in reasons), reasons
    assert _ledger(network, f"/cft/series/{series_id}")[1]["holdings"].get(BAP_ID) == 1

    # -- an order paid with tokens must be whole MWh: 400 kW over 2 h is 0.8 MWh
    try:
        bap.order(
            "select",
            tx,
            NORTH,
            PROVIDER,
            item_id=EVENING_ITEM,
            power_kw=400,
            window_start=start,
            window_end=end,
            settlement_method="CFT",
        )
        raise AssertionError("a CFT order of 0.8 MWh was accepted")
    except BapApiError as exc:
        assert exc.status == 400 and "power_kw" in str(exc.body), exc.body

    # -- 500 kW over 16:00–18:00 = 1 MWh, paid with the token: confirmed, then redeemed on the ledger
    terms = {"item_id": EVENING_ITEM, "power_kw": 500, "window_start": start, "window_end": end}
    for action, state in (("select", "QUOTED"), ("init", "CREATED"), ("confirm", "ACCEPTED")):
        bap.order(action, tx, NORTH, PROVIDER, settlement_method="CFT", **terms)
        view = bap.wait(tx, order_in(PROVIDER, state), timeout=30)
    order = order_of(view, PROVIDER)
    assert order is not None and order["settlement_method"] == "CFT"
    order_id = order["order_id"]

    def redeemed() -> dict[str, Any] | None:
        status, body = _ledger(network, f"/orders/cft-{order_id}")
        return body if status == 200 else None

    obligation = eventually(redeemed, timeout=30, interval=0.5)
    assert obligation["provider_id"] == PROVIDER and obligation["bap_id"] == BAP_ID
    assert obligation["settlement_method"] == "CFT" and obligation["contracted_w"] == 500_000
    assert obligation["price_millipence_per_mwh"] == 0  # utilisation prepaid with the token
    assert datetime.fromisoformat(obligation["window_start"]) == start
    assert datetime.fromisoformat(obligation["window_end"]) == end
    info = _ledger(network, f"/cft/series/{series_id}")[1]
    assert info["provider_invariant"]["redeemed"] == 1 and info["provider_invariant"]["holds"], info
    assert info["holdings"].get(BAP_ID, 0) == 0
    assert _ledger(network, f"/orders/{order_id}")[0] == 404  # not registered a second time


def test_a_procurement_redeems_held_tokens_where_that_is_cheaper(network: Network) -> None:
    """The orchestrator's choice weighs redeeming held tokens against buying spot (bap/procurement_tokens.py): with
    the policy's token value (£0: tokens already paid for) below every spot price, the procurement pays the north
    provider's remaining evening hours with the BAP's token — a Beckn order paid with tokens, redeemed on the
    ledger, not registered twice. Runs after the test above, which leaves one token of the series for sale and
    the offer's 18:00–20:00 free."""
    bap = bap_client(network)
    start, _ = tomorrow_window(18, 2)
    tx, series = _series_seen(bap, start, start.replace(hour=20))
    series_id = series["series_id"]
    assert _buy(bap, tx, series_id, 1)["state"] == "ACCEPTED"
    half = [start.replace(minute=30 * (i % 2), hour=18 + i // 2) for i in range(4)]
    slots = [{"start": t.isoformat(), "end": (t + (half[1] - half[0])).isoformat(), "target_kw": 500} for t in half]
    operator = {"Authorization": f"Bearer {network.manifest['participants']['bap']['api_keys']['operator']}"}
    created = httpx.post(f"{network.url('bap')}/api/v1/procurements", json={"slots": slots}, headers=operator).json()

    def final() -> dict[str, Any] | None:
        v = httpx.get(f"{network.url('bap')}/api/v1/procurements/{created['procurement_id']}", headers=operator).json()
        return v if v["status"] not in ("collecting", "ordering", "pending_approval") else None

    view = eventually(final, timeout=90, interval=0.5)
    assert view["status"] == "covered", view["status_reason"]
    paid_with_tokens = [o for o in view["orders"] if o["settlement_method"] == "CFT" and o["state"] == "ACCEPTED"]
    assert [o["provider_id"] for o in paid_with_tokens] == [PROVIDER], view["orders"]
    assert paid_with_tokens[0]["power_kw"] == 500  # 1 MWh over 18:00–20:00: one whole token
    assert any("paid with tokens" in e["message"] for e in view["market_log"] if e["kind"] == "chosen")
    order_id = paid_with_tokens[0]["order_id"]
    eventually(lambda: _ledger(network, f"/orders/cft-{order_id}")[0] == 200, timeout=30, interval=0.5)
    assert _ledger(network, f"/orders/{order_id}")[0] == 404
    info = _ledger(network, f"/cft/series/{series_id}")[1]
    assert info["provider_invariant"]["redeemed"] == 2 and info["holdings"].get(BAP_ID, 0) == 0, info
    # the three books agree on it: the ledger's obligation `cft-<id>` is the order (bap/reconcile.py)
    report = httpx.post(
        f"{network.url('bap')}/api/v1/reconciliation/run",
        json={"transaction_id": view["transaction_ids"][0]},
        headers=operator,
        timeout=60,
    ).json()
    assert report.get("unreadable") in (None, [], {}), report
    assert [d for d in report["differences"] if d["order_id"] == order_id] == [], json.dumps(report["differences"])
