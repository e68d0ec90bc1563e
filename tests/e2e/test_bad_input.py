"""Bad input gets a Beckn NACK with an error code and a message — never a 500 — and leaves no row
behind (inbox, orders and outbox counts are unchanged)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from beckn import envelope
from flexmarket.runner import Network
from schemas.flex import OrderSpec, order_spec_to_order
from tests.e2e.conftest import Signer
from tests.e2e.helpers import bap_headers, eventually, rows, scalar, tomorrow_window

pytestmark = pytest.mark.e2e

COUNTS = (
    "select (select count(*) from bpp.inbox), (select count(*) from bpp.orders), "
    "(select count(*) from bpp.outbox), (select count(*) from bpp.order_events)"
)


def request(signer: Signer, platform: dict[str, Any], action: str, message: dict[str, Any], **ctx: Any) -> dict:
    c = envelope.context(
        action,
        bap_id=signer.identity.subscriber_id,
        bap_uri=signer.identity.url,
        transaction_id=envelope.new_id(),
        bpp_id=platform["subscriber_id"],
        bpp_uri=platform["url"],
        city_code="GB-R13",
        country_code="GBR",
    )
    c.update(ctx)
    return {"context": c, "message": message}


def order_msg(provider: str = "dc-01", item: str = "dc-01-evening-peak", kw: float = 100) -> dict[str, Any]:
    start, end = tomorrow_window()
    return {"order": order_spec_to_order(OrderSpec(provider, item, kw, start, end)).dump()}


def assert_nack(resp: httpx.Response, status: int, code: str, contains: str = "") -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["message"]["ack"]["status"] == "NACK"
    assert body["error"]["code"] == code, body
    assert contains.lower() in body["error"]["message"].lower(), body
    return body


@pytest.fixture()
def unchanged(db_url: str):  # type: ignore[no-untyped-def]
    before = rows(db_url, COUNTS)
    yield
    time.sleep(0.3)  # anything wrongly enqueued would have had time to write
    assert rows(db_url, COUNTS) == before


@pytest.mark.usefixtures("unchanged")
class TestBppRefuses:
    def test_malformed_json(self, bap_signer: Signer, bpp_platform: dict) -> None:
        r = bap_signer.post(bpp_platform["url"] + "/select", b'{"context": {"action": "select",')
        assert_nack(r, 400, "30000", "malformed JSON")

    def test_schema_violation_names_the_path(self, bap_signer: Signer, bpp_platform: dict) -> None:
        msg = order_msg()
        msg["order"]["items"][0]["quantity"]["selected"]["measure"]["value"] = "lots"
        body = assert_nack(
            bap_signer.post(bpp_platform["url"] + "/select", request(bap_signer, bpp_platform, "select", msg)),
            400,
            "30000",
        )
        assert "measure.value" in body["error"]["paths"]

    def test_unknown_action(self, bap_signer: Signer, bpp_platform: dict) -> None:
        r = bap_signer.post(bpp_platform["url"] + "/frobnicate", request(bap_signer, bpp_platform, "frobnicate", {}))
        assert_nack(r, 404, "40001", "unknown action")

    def test_wrong_domain(self, bap_signer: Signer, bpp_platform: dict) -> None:
        r = bap_signer.post(
            bpp_platform["url"] + "/select",
            request(bap_signer, bpp_platform, "select", order_msg(), domain="retail:1.1.0"),
        )
        assert_nack(r, 400, "30000", "domain")

    def test_unknown_provider(self, bap_signer: Signer, bpp_platform: dict) -> None:
        r = bap_signer.post(
            bpp_platform["url"] + "/select",
            request(bap_signer, bpp_platform, "select", order_msg(provider="dc-nowhere")),
        )
        assert_nack(r, 200, "30001", "dc-nowhere")

    def test_unknown_item(self, bap_signer: Signer, bpp_platform: dict) -> None:
        r = bap_signer.post(
            bpp_platform["url"] + "/init",
            request(bap_signer, bpp_platform, "init", order_msg(item="dc-01-no-such-item")),
        )
        assert_nack(r, 200, "30004", "dc-01-no-such-item")

    def test_confirm_never_initialised(self, bap_signer: Signer, bpp_platform: dict) -> None:
        r = bap_signer.post(bpp_platform["url"] + "/confirm", request(bap_signer, bpp_platform, "confirm", order_msg()))
        assert_nack(r, 200, "30010", "init first")

    def test_status_of_unknown_order(self, bap_signer: Signer, bpp_platform: dict) -> None:
        r = bap_signer.post(
            bpp_platform["url"] + "/status", request(bap_signer, bpp_platform, "status", {"order_id": "no-such-order"})
        )
        assert_nack(r, 200, "30010")

    def test_unsupported_update_target(self, bap_signer: Signer, bpp_platform: dict) -> None:
        msg = {"update_target": "billing", **order_msg()}
        r = bap_signer.post(bpp_platform["url"] + "/update", request(bap_signer, bpp_platform, "update", msg))
        assert_nack(r, 400, "30012", "update_target")

    def test_tampered_body(self, bap_signer: Signer, bpp_platform: dict) -> None:
        body = envelope.dumps(request(bap_signer, bpp_platform, "select", order_msg()))
        headers = bap_signer.headers(body)
        tampered = body.replace(b'"100.0"', b'"900.0"')
        assert tampered != body
        r = httpx.post(bpp_platform["url"] + "/select", content=tampered, headers=headers)
        assert_nack(r, 401, "30016", "signature")
        assert r.headers["WWW-Authenticate"].startswith("Signature")

    def test_unsigned(self, bap_signer: Signer, bpp_platform: dict) -> None:
        r = httpx.post(
            bpp_platform["url"] + "/select",
            content=envelope.dumps(request(bap_signer, bpp_platform, "select", order_msg())),
            headers={"Content-Type": "application/json"},
        )
        assert_nack(r, 401, "30016", "missing")

    def test_expired_signature(self, bap_signer: Signer, bpp_platform: dict) -> None:
        r = bap_signer.post(
            bpp_platform["url"] + "/select",
            request(bap_signer, bpp_platform, "select", order_msg()),
            created=int(time.time()) - 120,
            validity_s=60,
        )
        assert_nack(r, 401, "30016", "expired")

    def test_signature_from_the_future(self, bap_signer: Signer, bpp_platform: dict) -> None:
        r = bap_signer.post(
            bpp_platform["url"] + "/select",
            request(bap_signer, bpp_platform, "select", order_msg()),
            created=int(time.time()) + 30,
        )
        assert_nack(r, 401, "30016", "future")

    def test_signer_is_not_the_context_sender(self, bap_signer: Signer, bpp_platform: dict) -> None:
        r = bap_signer.post(
            bpp_platform["url"] + "/select",
            request(bap_signer, bpp_platform, "select", order_msg(), bap_id="someone-else.example"),
        )
        assert_nack(r, 401, "30016", "context names")

    def test_callback_url_not_the_registered_one(self, bap_signer: Signer, bpp_platform: dict) -> None:
        r = bap_signer.post(
            bpp_platform["url"] + "/select",
            request(bap_signer, bpp_platform, "select", order_msg(), bap_uri="http://evil.example/beckn"),
        )
        assert_nack(r, 400, "30000", "registered")

    def test_stale_message(self, bap_signer: Signer, bpp_platform: dict) -> None:
        r = bap_signer.post(
            bpp_platform["url"] + "/select",
            request(bap_signer, bpp_platform, "select", order_msg(), timestamp="2026-01-01T00:00:00.000Z"),
        )
        assert_nack(r, 400, "30022", "expired")

    def test_unknown_platform(self, bap_signer: Signer, network: Network) -> None:
        r = bap_signer.post(network.url("bpp") + "/no-such-platform/select", b"{}")
        assert r.status_code == 404 and r.json()["message"]["ack"]["status"] == "NACK"


def test_gateway_refuses_malformed_search(network: Network, bap_signer: Signer, db_url: str) -> None:
    before = scalar(db_url, "select count(*) from gateway.inbox")
    r = bap_signer.post(network.url("gateway") + "/search", b"not json")
    assert_nack(r, 400, "10000", "malformed JSON")
    r = bap_signer.post(network.url("gateway") + "/search", b'{"context": {"action": "search"}}')
    assert_nack(r, 400, "10000")
    assert scalar(db_url, "select count(*) from gateway.inbox") == before


def test_bap_nacks_callback_for_unknown_transaction(network: Network, bpp_signer: Signer, db_url: str) -> None:
    ident = bpp_signer.identity
    bap = network.manifest["participants"]["bap"]
    ctx = envelope.context(
        "on_status",
        bap_id=bap["subscriber_id"],
        bap_uri=bap["url"],
        transaction_id=envelope.new_id(),
        bpp_id=ident.subscriber_id,
        bpp_uri=ident.url,
        city_code="GB-R13",
        country_code="GBR",
    )
    before = scalar(db_url, "select count(*) from bap.inbox")
    r = bpp_signer.post(bap["url"] + "/on_status", {"context": ctx, "message": order_msg()})
    assert_nack(r, 200, "20008", "unknown transaction")
    assert scalar(db_url, "select count(*) from bap.inbox") == before


def test_bap_client_api_refuses_bad_requests(network: Network, db_url: str) -> None:
    api = network.url("bap") + "/api/v1"
    key = bap_headers(network)
    before = scalar(db_url, "select count(*) from bap.transactions")
    bad = {"window_start": "2026-11-24T16:00:00", "window_end": "x", "power_kw": -1}
    r = httpx.post(api + "/search", json=bad, headers=key)
    assert r.status_code == 400 and r.json()["error"]["message"]
    r = httpx.post(
        api + "/search",
        json={"window_start": "2026-11-24T18:00:00Z", "window_end": "2026-11-24T16:00:00Z", "power_kw": 10},
        headers=key,
    )
    assert r.status_code == 400 and "after" in r.json()["error"]["message"]
    r = httpx.post(api + "/confirm", json={"transaction_id": "nope", "bpp_id": "x", "provider_id": "y"}, headers=key)
    assert r.status_code == 404
    r = httpx.post(api + "/plan", json={"transaction_id": "nope", "target_kw": 5}, headers=key)
    assert r.status_code == 404
    assert httpx.post(api + "/search", json=bad).status_code == 401  # without a key: refused before validation
    assert scalar(db_url, "select count(*) from bap.transactions") == before


def test_duplicate_delivery_processed_once(bap_signer: Signer, bpp_platform: dict, db_url: str) -> None:
    payload = request(bap_signer, bpp_platform, "select", order_msg())
    body = envelope.dumps(payload)
    mid = payload["context"]["message_id"]
    for _ in range(3):
        r = httpx.post(bpp_platform["url"] + "/select", content=body, headers=bap_signer.headers(body))
        assert r.status_code == 200 and r.json()["message"]["ack"]["status"] == "ACK"
    assert scalar(db_url, "select count(*) from bpp.inbox where message_id = %s", mid) == 1
    eventually(lambda: scalar(db_url, "select count(*) from bpp.outbox where message_id = %s", mid) == 1)
    time.sleep(0.5)
    assert scalar(db_url, "select count(*) from bpp.outbox where message_id = %s", mid) == 1
