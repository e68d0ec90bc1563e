"""Other Beckn buyers get sensible answers (raw signed Beckn messages, tests/e2e/conftest.py Signer): a
national search (country only) reaches every BPP subscribed in the country; a search without a window is
answered with the current catalog; a search a BPP cannot answer gets an on_search with the error; a select
without a window takes the item's and says so in the quote."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from beckn import envelope
from flexmarket.runner import Network
from tests.e2e.conftest import Signer
from tests.e2e.helpers import bap_client, bap_headers, eventually, rows, tomorrow_window

pytestmark = pytest.mark.e2e


def _search(signer: Signer, tx: str, message: dict[str, Any], city: str | None = "GB-R13") -> dict[str, Any]:
    ctx = envelope.context(
        "search",
        bap_id=signer.identity.subscriber_id,
        bap_uri=signer.identity.url,
        transaction_id=tx,
        city_code=city or "",
        country_code="GBR",
    )
    return {"context": ctx, "message": message}


def _ack(r: httpx.Response) -> None:
    assert r.status_code == 200 and r.json()["message"]["ack"]["status"] == "ACK", r.text


def _empty_transaction(network: Network) -> str:
    """A transaction the BAP knows whose own search matched nothing (a window weeks away)."""
    far = (datetime.now(UTC) + timedelta(days=40)).replace(hour=16, minute=0, second=0, microsecond=0)
    return str(bap_client(network).search(far, far + timedelta(hours=1), 100)["transaction_id"])


def test_a_national_search_reaches_every_bpp_in_the_country(network: Network, bap_signer: Signer, db_url: str) -> None:
    platforms = {p["subscriber_id"] for p in network.manifest["participants"]["bpp"]["platforms"]}
    assert len(platforms) == 2  # London and North Scotland
    # Raw: a search naming only the country is ACKed by the gateway and fanned out to both cities' BPPs.
    payload = _search(bap_signer, envelope.new_id(), {"intent": {}}, city=None)
    assert "city" not in payload["context"]["location"]
    _ack(bap_signer.post(network.url("gateway") + "/search", payload))
    mid = payload["context"]["message_id"]

    def sent_to() -> set[str]:
        urls = rows(
            db_url, "select receiver_url from gateway.outbox where message_id = %s and action = %s", mid, "search"
        )
        return {u.rsplit("/", 2)[-2] for (u,) in urls}

    eventually(lambda: len(sent_to()) >= 2, timeout=20)
    assert sent_to() == {"dc-platform", "north-platform"}
    # Through the client API: "national": true, and offers come from both cities.
    start, end = tomorrow_window()
    r = httpx.post(
        network.url("bap") + "/api/v1/search",
        json={"window_start": start.isoformat(), "window_end": end.isoformat(), "power_kw": 100, "national": True},
        headers=bap_headers(network),
    )
    assert r.status_code == 202, r.text
    bap = bap_client(network)
    view = bap.wait(
        r.json()["transaction_id"],
        lambda v: {"dc-north-scotland", "dc-01"} <= {o["provider_id"] for o in v["offers"]},
        timeout=30,
    )
    assert view["failures"] == []


def test_a_search_without_a_window_gets_the_current_catalog(network: Network, bap_signer: Signer) -> None:
    tx = _empty_transaction(network)
    bap = bap_client(network)
    bap.wait(tx, lambda v: len(v["callbacks"]) >= 1, timeout=30)  # the far-away search: empty catalogs
    assert bap.transaction(tx)["offers"] == []
    payload = _search(bap_signer, tx, {"intent": {"tags": []}})  # no fulfillment, no window, no quantity
    _ack(bap_signer.post(network.url("gateway") + "/search", payload))
    view = bap.wait(tx, lambda v: {"dc-01-evening-peak", "dc-01-morning"} <= {o["item_id"] for o in v["offers"]})
    assert all(datetime.fromisoformat(o["window_end"]) > datetime.now(UTC) for o in view["offers"])


def test_a_search_the_bpp_cannot_answer_gets_an_on_search_error(network: Network, bap_signer: Signer) -> None:
    tx = _empty_transaction(network)
    start, end = tomorrow_window()
    # Well-formed Beckn, but a maximum price this BPP cannot read: it answers with the error, not silence.
    intent = {
        "fulfillment": {"stops": [{"time": {"range": {"start": start.isoformat(), "end": end.isoformat()}}}]},
        "item": {"quantity": {"selected": {"measure": {"value": "100", "unit": "kW"}}}},
        "tags": [
            {
                "descriptor": {"code": "flexibility_request"},
                "list": [{"descriptor": {"code": "max_price_gbp_per_mwh"}, "value": "cheap"}],
            }
        ],
    }
    payload = _search(bap_signer, tx, {"intent": intent})
    _ack(bap_signer.post(network.url("gateway") + "/search", payload))
    bap = bap_client(network)
    view = bap.wait(tx, lambda v: any(f["action"] == "on_search" for f in v["failures"]), timeout=30)
    failure = next(f for f in view["failures"] if f["action"] == "on_search")
    assert failure["kind"] == "refused" and failure["reason"].startswith("30000")
    listed = bap.failures(tx)
    assert any(f["message_id"] == payload["context"]["message_id"] for f in listed)


def test_a_select_without_a_window_takes_the_items(
    network: Network, bap_signer: Signer, bpp_platform: dict, db_url: str
) -> None:
    ctx = envelope.context(
        "select",
        bap_id=bap_signer.identity.subscriber_id,
        bap_uri=bap_signer.identity.url,
        transaction_id=envelope.new_id(),
        bpp_id=bpp_platform["subscriber_id"],
        bpp_uri=bpp_platform["url"],
        city_code="GB-R13",
        country_code="GBR",
    )
    order = {
        "provider": {"id": "dc-02"},
        "items": [{"id": "dc-02-morning", "quantity": {"selected": {"measure": {"value": "50", "unit": "kW"}}}}],
    }
    _ack(bap_signer.post(bpp_platform["url"] + "/select", {"context": ctx, "message": {"order": order}}))
    mid = ctx["message_id"]
    (body,) = eventually(
        lambda: rows(db_url, "select body from bpp.outbox where message_id = %s and action = 'on_select'", mid)
    )[0]
    answer = json.loads(bytes(body))
    assert "error" not in answer
    quoted = answer["message"]["order"]
    window = quoted["fulfillments"][0]["stops"][0]["time"]["range"]
    with open(network.manifest["participants"]["bpp"]["providers_file"]) as fh:
        catalog = json.load(fh)
    offers = [o for pl in catalog["platforms"] for p in pl["providers"] for o in p["offers"]]
    morning = next(o for o in offers if o["id"] == "dc-02-morning")
    assert datetime.fromisoformat(window["start"]) == datetime.fromisoformat(morning["window_start"])
    assert datetime.fromisoformat(window["end"]) == datetime.fromisoformat(morning["window_end"])
    tags = {t["descriptor"]["code"]: t["value"] for g in quoted.get("tags") or [] for t in g["list"]}
    assert tags.get("window_source") == "item"
