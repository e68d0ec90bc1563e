"""The tokens' secondary market through the BAP's client API, on the shared network's real processes (issue 12):
the provider lists tokens on the ledger, the BAP buys them through `POST /api/v1/tokens/listings/{id}/buy`
(its own signed confirm, delivery versus payment), lists them again, cancels, and gives them back with
`POST /api/v1/tokens/transfer`; every balance as the ledger states it. Refusals keep the ledger's status and
code; bad input is a 400 naming the field. An order paid with tokens cannot be amended: the BAP refuses the
update (409) and so does the BPP (a NACK naming settlement_method) when a buyer sends one anyway.

Provider and series: `dc-03` on the London platform (its series over tomorrow's evening offer: 1,000 kW × 4 h =
4 tokens). No other e2e test trades that series. The test ends with the BAP holding none of it again, so the
orchestrator's choice in other tests never sees these tokens; the CFT order it makes is only initialised (not
confirmed), so nothing is redeemed or committed.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from bap.client import BapApiError, order_in, order_of
from beckn import envelope
from flexmarket.runner import BAP_ID, Network
from schemas.flex import OrderSpec, order_spec_to_order
from tests.e2e.conftest import Signer
from tests.e2e.helpers import bap_client, bap_headers, eventually, tomorrow_window

pytestmark = pytest.mark.e2e

PROVIDER = "dc-03"
TAG = uuid.uuid4().hex[:8]


class Ledger:
    """The ledger's API with the manifest's keys: finance reads, the admin opens accounts, the provider sells."""

    def __init__(self, network: Network) -> None:
        self.url = f"{network.url('ledger')}/api/v1"
        self.keys = network.manifest["participants"]["ledger"]["api_keys"]

    def call(self, method: str, path: str, key: str, body: Any = None) -> httpx.Response:
        return httpx.request(method, self.url + path, json=body, headers={"Authorization": f"Bearer {key}"})

    def available_pence(self, account: str) -> int:
        """Credits − debits − reserved, as the market judges a buyer's cash (0 for an account not opened yet)."""
        r = self.call("GET", f"/accounts/{account}", self.keys["finance"])
        if r.status_code == 404:
            return 0
        assert r.status_code == 200, r.text
        body = r.json()
        return int(body["credits_posted"]) - int(body["debits_posted"]) - int(body["debits_pending"])

    def series(self, series_id: str) -> dict[str, Any]:
        r = self.call("GET", f"/cft/series/{series_id}", self.keys["finance"])
        assert r.status_code == 200, r.text
        return dict(r.json())

    def fund(self, bap_id: str, pence: int) -> None:
        """Finance credits the BAP's cash from a funding account (a generic GBP transfer)."""
        funding, cash = f"bap:funding-{TAG}:cash", f"bap:{bap_id}:cash"
        for name in (funding, cash):
            self.call("POST", "/accounts", self.keys["admin"], {"name": name})  # 409 when it exists: fine
        move: dict[str, Any] = {"id": f"fund-{uuid.uuid4().hex[:8]}", "ledger": "GBP", "debit_account": funding}
        move |= {"credit_account": cash, "amount": pence}
        r = self.call("POST", "/transfers", self.keys["finance"], move)
        assert r.status_code == 201, r.text


class Books:
    """What the ledger states about the trade: the BAP's cash, the provider's revenue and the series' tokens."""

    def __init__(self, ledger: Ledger, series_id: str) -> None:
        self.ledger, self.series_id = ledger, series_id

    def now(self) -> dict[str, int]:
        info = self.ledger.series(self.series_id)
        return {
            "bap_cash": self.ledger.available_pence(f"bap:{BAP_ID}:cash"),
            "provider_revenue": self.ledger.available_pence(f"provider:{PROVIDER}:revenue"),
            "bap_tokens": int(info["holdings"].get(BAP_ID, 0)),
            "provider_tokens": int(info["holdings"].get(PROVIDER, 0)),
            "listed": sum(int(v) for v in info["listed"].values()),
        }


def _post(network: Network, path: str, body: Any = None, role: str = "operator") -> httpx.Response:
    return httpx.post(f"{network.url('bap')}/api/v1{path}", json=body, headers=bap_headers(network, role), timeout=30)


def _get(network: Network, path: str, role: str = "viewer", **params: Any) -> httpx.Response:
    return httpx.get(f"{network.url('bap')}/api/v1{path}", params=params, headers=bap_headers(network, role))


def _refused(r: httpx.Response, status: int, code: str, names: str = "") -> None:
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code and names in r.json()["error"]["message"], r.json()


def test_the_bap_buys_lists_cancels_and_transfers_tokens_on_the_ledgers_market(network: Network) -> None:
    ledger = Ledger(network)
    start, _ = tomorrow_window(16)
    series_id = f"{PROVIDER}-cft-{start:%Y%m%d}-evening"
    # the BPP publishes and mints the series through a worker at start
    eventually(lambda: ledger.call("GET", f"/cft/series/{series_id}", ledger.keys["finance"]).status_code == 200, 90)
    books = Books(ledger, series_id)
    assert books.now()["provider_tokens"] >= 2

    # -- the provider lists 2 tokens at £150.00 on the ledger; the BAP's viewers see the listing
    listing_id = f"lp-{TAG}"
    listing = {"id": listing_id, "series_id": series_id, "tokens": 2, "price_gbp_per_token": "150.00"}
    r = ledger.call("POST", "/cft/listings", ledger.keys["providers"][PROVIDER], listing)
    assert r.status_code == 201, r.text
    r = _get(network, "/tokens/listings", series_id=series_id)
    assert r.status_code == 200, r.text
    seen = {x["listing_id"]: x for x in r.json()["listings"]}
    assert (seen[listing_id]["seller_id"], seen[listing_id]["price_gbp_per_token"]) == (PROVIDER, "150.00")
    assert seen[listing_id]["tokens_left"] == 2 and seen[listing_id]["state"] == "open"

    # -- bad input and refusals write nothing: 400 naming the field; the ledger's own 4xx and code
    available = ledger.available_pence(f"bap:{BAP_ID}:cash")
    if available < 30_000:  # the BAP pays from cash it holds: short of it, the purchase is refused
        _refused(_post(network, f"/tokens/listings/{listing_id}/buy", {"tokens": 2}), 409, "insufficient_funds")
        ledger.fund(BAP_ID, 30_000 - available)
    before = books.now()
    _refused(_post(network, f"/tokens/listings/{listing_id}/buy", {"tokens": 0}), 400, "invalid_request", "tokens")
    bad_price = {"series_id": series_id, "tokens": 1, "price_gbp_per_token": "1.005"}
    _refused(_post(network, "/tokens/listings", bad_price), 400, "invalid_request", "price_gbp_per_token")
    _refused(
        _post(network, f"/tokens/listings/{listing_id}/buy", {"tokens": 1}, role="aggregator"), 403, "role_forbidden"
    )
    _refused(_post(network, f"/tokens/listings/{listing_id}/buy", {"tokens": 3}), 409, "insufficient_tokens")
    _refused(_post(network, "/tokens/listings/no-such-listing/buy", {"tokens": 1}), 404, "not_found")
    assert books.now() == before

    # -- the BAP buys both: tokens escrow → BAP, £300.00 BAP cash → the provider's revenue, in one append
    purchase = {"tokens": 2, "purchase_id": f"bp-{TAG}"}
    r = _post(network, f"/tokens/listings/{listing_id}/buy", purchase)
    assert r.status_code == 201, r.text
    assert (r.json()["purchase_id"], Decimal(r.json()["price_gbp"])) == (f"bp-{TAG}", Decimal("300.00"))
    bought = books.now()
    assert bought == {
        **before,
        "bap_cash": before["bap_cash"] - 30_000,
        "provider_revenue": before["provider_revenue"] + 30_000,
        "bap_tokens": before["bap_tokens"] + 2,
        "listed": before["listed"] - 2,
    }
    assert bought["bap_cash"] == max(available, 30_000) - 30_000
    r = _post(network, f"/tokens/listings/{listing_id}/buy", purchase)  # a retry: bought once
    assert r.status_code == 200 and r.json()["status"] == "exists", r.text
    assert books.now() == bought
    held = {h["series_id"]: h["tokens"] for h in _get(network, "/tokens").json()["holdings"]}
    assert held[series_id] == bought["bap_tokens"]

    # -- the BAP lists them again at £170.00 (id generated and returned; a retry with it is the same listing)
    mine = {"series_id": series_id, "tokens": 2, "price_gbp_per_token": "170.00"}
    r = _post(network, "/tokens/listings", mine)
    assert r.status_code == 201, r.text
    my_listing = r.json()["listing_id"]
    assert (r.json()["seller_id"], r.json()["tokens_left"], r.json()["state"]) == (BAP_ID, 2, "open")
    assert books.now() == {**bought, "bap_tokens": bought["bap_tokens"] - 2, "listed": bought["listed"] + 2}
    r = _post(network, "/tokens/listings", {**mine, "listing_id": my_listing})
    assert r.status_code == 200 and r.json()["status"] == "exists", r.text
    _refused(_post(network, "/tokens/listings", {**mine, "tokens": 50}), 409, "insufficient_tokens")
    _refused(_post(network, f"/tokens/listings/{my_listing}/buy", {"tokens": 1}), 422, "buyer_is_seller")
    _refused(_post(network, f"/tokens/listings/{listing_id}/cancel"), 403, "forbidden")  # the provider's listing
    _refused(_post(network, f"/tokens/listings/{my_listing}/cancel", role="viewer"), 403, "role_forbidden")
    r = _get(network, "/tokens/listings", seller_id=BAP_ID, series_id=series_id)
    assert [x["listing_id"] for x in r.json()["listings"]] == [my_listing]

    # -- cancelled: the rest returns to the BAP's holding
    r = _post(network, f"/tokens/listings/{my_listing}/cancel")
    assert r.status_code == 200, r.text
    assert (r.json()["state"], r.json()["tokens_returned"]) == ("cancelled", 2)
    assert books.now() == bought

    # -- given back to the provider, unpriced: no money moves
    gift = {"to_id": PROVIDER, "series_id": series_id, "tokens": 2}
    r = _post(network, "/tokens/transfer", gift)
    assert r.status_code == 201, r.text
    transfer_id = r.json()["transfer_id"]
    after = books.now()
    assert after == {**bought, "bap_tokens": bought["bap_tokens"] - 2, "provider_tokens": bought["provider_tokens"] + 2}
    r = _post(network, "/tokens/transfer", {**gift, "transfer_id": transfer_id})  # a retry: given once
    assert r.status_code == 200, r.text
    assert books.now() == after
    r = _post(network, "/tokens/transfer", {**gift, "tokens": after["bap_tokens"] + 1})
    assert 400 <= r.status_code < 500 and r.json()["error"]["code"], r.text
    assert books.now() == after
    # conserved over the whole trade: the series' tokens and the money between the two
    assert sum(after[k] for k in ("bap_tokens", "provider_tokens", "listed")) == sum(
        before[k] for k in ("bap_tokens", "provider_tokens", "listed")
    )
    assert after["bap_cash"] + after["provider_revenue"] == before["bap_cash"] + before["provider_revenue"]


def test_an_order_paid_with_tokens_cannot_be_amended_at_either_edge(network: Network, bap_signer: Signer) -> None:
    bap = bap_client(network)
    start, end = tomorrow_window(16, 2)
    tx = bap.search(start, end, 500, region="GB-R13")["transaction_id"]
    view = bap.wait(tx, lambda v: any(o["provider_id"] == PROVIDER for o in v["offers"]), timeout=30)
    offer = next(o for o in view["offers"] if o["provider_id"] == PROVIDER)
    terms = {"item_id": offer["item_id"], "power_kw": 500, "window_start": start, "window_end": end}  # 1 MWh
    for action, state in (("select", "QUOTED"), ("init", "CREATED")):
        bap.order(action, tx, offer["bpp_id"], PROVIDER, settlement_method="CFT", **terms)
        view = bap.wait(tx, order_in(PROVIDER, state), timeout=30)
    order = order_of(view, PROVIDER)
    assert order is not None and order["settlement_method"] == "CFT" and order["order_id"]

    # the BAP refuses before anything is sent
    with pytest.raises(BapApiError) as refused:
        bap.order("update", tx, offer["bpp_id"], PROVIDER, power_kw=1000)
    assert refused.value.status == 409, refused.value.body
    assert refused.value.body["error"]["message"].startswith("settlement_method: a token-paid order cannot be amended")

    # and the BPP refuses such an update sent anyway, naming the field
    platform = next(
        p for p in network.manifest["participants"]["bpp"]["platforms"] if p["subscriber_id"] == offer["bpp_id"]
    )
    signer = bap_signer
    spec = OrderSpec(
        PROVIDER,
        offer["item_id"],
        1000,
        start,
        end,
        settlement_method="CFT",
        order_id=order["order_id"],
    )
    ctx = envelope.context(
        "update",
        bap_id=BAP_ID,
        bap_uri=signer.identity.url,
        transaction_id=tx,
        bpp_id=platform["subscriber_id"],
        bpp_uri=platform["url"],
        city_code="GB-R13",
        country_code="GBR",
    )
    message = {"update_target": "item,fulfillment", "order": order_spec_to_order(spec).dump()}
    r = signer.post(platform["url"] + "/update", {"context": ctx, "message": message})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["message"]["ack"]["status"] == "NACK" and body["error"]["code"] == "50002", body
    assert "settlement_method" in body["error"]["message"]
    assert body["error"]["paths"] == "message.order.payments[0].tags.settlement_method"
    assert order_of(bap.transaction(tx), PROVIDER)["power_kw"] == 500  # type: ignore[index]
    assert datetime.fromisoformat(order_of(bap.transaction(tx), PROVIDER)["window_start"]) == start  # type: ignore[index]
