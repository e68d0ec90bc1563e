"""Careless and hostile input at every HTTP edge of the running network (schemas/limits.py): NUL and control
characters, numbers beyond the representation, JSON nested thousands deep, identifiers longer than their
column, windows past or centuries ahead, power beyond any site, bodies over 1 MiB. Each gets a 4xx (a NACK
at the Beckn endpoints) whose message names the field — never a 500 — and no row is written."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from beckn import envelope
from flexmarket.runner import Network
from schemas import limits
from schemas.flex import FlexRequest, OrderSpec, order_spec_to_order, request_to_intent
from tests.e2e.conftest import Signer
from tests.e2e.helpers import bap_headers, rows, tomorrow_window

pytestmark = pytest.mark.e2e

NOW = datetime.now(UTC)
PAST = (NOW - timedelta(days=2), NOW - timedelta(days=2) + timedelta(hours=2))
CENTURIES = (datetime(2226, 1, 1, 16, tzinfo=UTC), datetime(2226, 1, 1, 18, tzinfo=UTC))

BPP_ROWS = (
    "select (select count(*) from bpp.inbox), (select count(*) from bpp.orders), "
    "(select count(*) from bpp.outbox), (select count(*) from bpp.order_events)"
)
BAP_ROWS = (
    "select (select count(*) from bap.inbox), (select count(*) from bap.transactions), "
    "(select count(*) from bap.outbox)"
)
GATEWAY_ROWS = "select (select count(*) from gateway.inbox), (select count(*) from gateway.outbox)"
REGISTRY_ROWS = "select (select count(*) from registry.subscribers), (select count(*) from registry.subscriber_keys)"


def deep(n: int) -> bytes:
    return b'{"a":' * n + b"1" + b"}" * n


def order_msg(kw: float = 100, window: tuple[datetime, datetime] | None = None, **order: Any) -> dict[str, Any]:
    start, end = window or tomorrow_window()
    dumped = order_spec_to_order(OrderSpec("dc-01", "dc-01-evening-peak", kw, start, end)).dump()
    dumped.update(order)
    return {"order": dumped}


def search_msg(kw: float = 100, window: tuple[datetime, datetime] | None = None) -> dict[str, Any]:
    start, end = window or tomorrow_window()
    return {"intent": request_to_intent(FlexRequest(start, end, kw, None, None, None)).dump()}


def beckn(signer: Signer, action: str, message: dict[str, Any], to: dict[str, Any] | None, **ctx: Any) -> dict:
    """A message from `signer` (a BAP for requests, a BPP for callbacks), addressed to `to`."""
    callback = action.startswith("on_")
    me = signer.identity
    c = envelope.context(
        action,
        bap_id=to["subscriber_id"] if callback and to else me.subscriber_id,
        bap_uri=to["url"] if callback and to else me.url,
        transaction_id=envelope.new_id(),
        bpp_id=me.subscriber_id if callback else (to or {}).get("subscriber_id"),
        bpp_uri=me.url if callback else (to or {}).get("url"),
        city_code="GB-R13",
        country_code="GBR",
    )
    for k, v in ctx.items():
        if k == "city_code":
            c["location"]["city"]["code"] = v
        else:
            c[k] = v
    return {"context": c, "message": message}


def assert_refused(resp: httpx.Response, status: int, field: str) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    if "message" in body and isinstance(body["message"], dict):  # a Beckn NACK
        assert body["message"]["ack"]["status"] == "NACK", body
    text = json.dumps(body["error"])
    assert field in text, f"the refusal does not name {field}: {text}"
    return body


def settled(db_url: str, sql: str) -> list[tuple]:
    time.sleep(0.3)  # anything wrongly enqueued would have had time to write
    return rows(db_url, sql)


# -- Beckn endpoints (BPP, BAP, gateway): signed correctly, hostile content --------------------------------
def hostile_requests(bpp: dict[str, Any]) -> list[tuple[str, str, Any, int, str]]:
    """(what, action, payload (dict or raw bytes), status, field named) for a BAP's request to a BPP."""
    return [
        ("NUL in transaction_id", "select", beckn_args(bpp, transaction_id="t\x00x"), 400, "context.transaction_id"),
        ("NUL in city code", "select", beckn_args(bpp, city_code="GB\x00R13"), 400, "context.location.city.code"),
        ("control char in provider id", "select", beckn_args(bpp, msg=order_msg(provider={"id": "dc\x01"})), 400,
         "message.order.provider.id"),
        ("message_id of 300 chars", "select", beckn_args(bpp, message_id="m" * 300), 400, "context.message_id"),
        ("city code of 100 chars", "select", beckn_args(bpp, city_code="C" * 100), 400, "context.location.city.code"),
        ("order id of 300 chars", "select", beckn_args(bpp, msg=order_msg(id="o" * 300)), 400, "message.order.id"),
        ("order_id of 300 chars", "status", beckn_args(bpp, msg={"order_id": "o" * 300}), 400, "message.order_id"),
        ("2**70", "select", beckn_args(bpp, msg=order_msg(quantity=2**70)), 400, "message.order.quantity"),
        ("1e400", "select", "1e400", 400, "message.order.quantity"),
        ("window already past", "select", beckn_args(bpp, msg=order_msg(window=PAST)), 400, "time.range.end"),
        ("window centuries ahead", "confirm", beckn_args(bpp, msg=order_msg(window=CENTURIES)), 400,
         "time.range.start"),
        ("search window past", "search", beckn_args(bpp, msg=search_msg(window=PAST)), 400, "time.range.end"),
        ("search centuries ahead", "search", beckn_args(bpp, msg=search_msg(window=CENTURIES)), 400,
         "time.range.start"),
        ("1 TW", "select", beckn_args(bpp, msg=order_msg(kw=1e9)), 400, "measure.value"),
        ("deep JSON", "select", deep(5000), 400, "body"),
    ]  # fmt: skip


def beckn_args(bpp: dict[str, Any], msg: dict[str, Any] | None = None, **ctx: Any) -> dict[str, Any]:
    return {"message": msg or order_msg(), "ctx": ctx}


def payload_for(signer: Signer, action: str, spec: Any, to: dict[str, Any] | None) -> bytes:
    if isinstance(spec, bytes):
        return spec
    if spec == "1e400":  # a float beyond the double range: json.dumps cannot write it
        body = envelope.dumps(beckn(signer, action, order_msg(quantity=12345678901), to))
        return body.replace(b"12345678901", b"1e400")
    return envelope.dumps(beckn(signer, action, spec["message"], to, **spec["ctx"]))


def test_bpp_refuses_hostile_messages(bap_signer: Signer, bpp_platform: dict, db_url: str) -> None:
    before = rows(db_url, BPP_ROWS)
    for what, action, spec, status, field in hostile_requests(bpp_platform):
        body = payload_for(bap_signer, action, spec, bpp_platform)
        r = bap_signer.post(f"{bpp_platform['url']}/{action}", body)
        assert r.status_code < 500, (what, r.text)
        assert_refused(r, status, field)
    assert settled(db_url, BPP_ROWS) == before


def test_gateway_refuses_hostile_searches(network: Network, bap_signer: Signer, db_url: str) -> None:
    before = rows(db_url, GATEWAY_ROWS)
    cases = [
        ("NUL in transaction_id", search_msg(), {"transaction_id": "t\x00"}, "context.transaction_id"),
        ("transaction_id of 300 chars", search_msg(), {"transaction_id": "t" * 300}, "context.transaction_id"),
        ("NUL in the city", search_msg(), {"city_code": "\x00"}, "context.location.city.code"),
        ("window past", search_msg(window=PAST), {}, "time.range.end"),
        ("window centuries ahead", search_msg(window=CENTURIES), {}, "time.range.start"),
        ("2**70", {**search_msg(), "n": 2**70}, {}, "message.n"),
    ]
    for what, msg, ctx, field in cases:
        r = bap_signer.post(network.url("gateway") + "/search", beckn(bap_signer, "search", msg, None, **ctx))
        assert r.status_code < 500, (what, r.text)
        assert_refused(r, 400, field)
    assert_refused(bap_signer.post(network.url("gateway") + "/search", deep(5000)), 400, "body")
    assert settled(db_url, GATEWAY_ROWS) == before


def test_bap_refuses_hostile_callbacks(network: Network, bpp_signer: Signer, db_url: str) -> None:
    bap = network.manifest["participants"]["bap"]
    before = rows(db_url, BAP_ROWS)
    cases = [
        ("NUL in transaction_id", order_msg(), {"transaction_id": "\x00"}, "context.transaction_id"),
        ("message_id of 300 chars", order_msg(), {"message_id": "m" * 300}, "context.message_id"),
        ("NUL in the order", order_msg(id="o\x00"), {}, "message.order.id"),
        ("2**70", order_msg(quantity=2**70), {}, "message.order.quantity"),
        ("order id of 300 chars", order_msg(id="o" * 300), {}, "message.order.id"),
    ]
    for what, msg, ctx, field in cases:
        r = bpp_signer.post(bap["url"] + "/on_status", beckn(bpp_signer, "on_status", msg, bap, **ctx))
        assert r.status_code < 500, (what, r.text)
        assert_refused(r, 400, field)
    assert_refused(bpp_signer.post(bap["url"] + "/on_status", deep(5000)), 400, "body")
    assert settled(db_url, BAP_ROWS) == before


def test_beckn_body_over_1_mib_is_refused_before_it_is_read(bap_signer: Signer, bpp_platform: dict) -> None:
    big = b'{"context": {"x": "' + b"x" * limits.MAX_BODY_BYTES + b'"}}'
    r = httpx.post(bpp_platform["url"] + "/select", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["message"]["ack"]["status"] == "NACK"


# -- registry ------------------------------------------------------------------------------------------------
def test_registry_refuses_hostile_input(network: Network, db_url: str) -> None:
    reg = network.url("registry")
    before = rows(db_url, REGISTRY_ROWS)
    cases: list[tuple[str, str, Any, int, str]] = [
        ("NUL in subscriber_id", "/subscribe", {"subscriber_id": "a\x00b", "type": "BPP"}, 400, "subscriber_id"),
        ("subscriber_id of 300", "/subscribe", {"subscriber_id": "s" * 300, "type": "BPP"}, 400, "subscriber_id"),
        ("NUL in the city", "/lookup", {"location": {"city": {"code": "\x00"}}}, 400, "city"),
        ("city of 100 chars", "/lookup", {"city": "c" * 100}, 400, "city"),
        ("space in a key id", "/lookup", {"key_id": "a b"}, 400, "key_id"),
        ("2**70", "/lookup", {"subscriber_id": "x", "n": 2**70}, 400, "body.n"),
        ("1e400", "/lookup", b'{"subscriber_id": "x", "n": 1e400}', 400, "body.n"),
        ("deep JSON", "/lookup", deep(5000), 400, "body"),
        ("deep JSON", "/subscribe", deep(5000), 400, "body"),
        ("over 1 MiB", "/subscribe", b'{"x": "' + b"x" * limits.MAX_BODY_BYTES + b'"}', 413, "exceeds"),
    ]
    for what, path, body, status, field in cases:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        r = httpx.post(reg + path, content=raw, headers={"Content-Type": "application/json"}, timeout=10)
        assert r.status_code < 500, (what, r.text)
        assert_refused(r, status, field)
    assert settled(db_url, REGISTRY_ROWS) == before


# -- the BAP client API --------------------------------------------------------------------------------------
def test_bap_client_api_refuses_hostile_input(network: Network, db_url: str) -> None:
    api = network.url("bap") + "/api/v1"
    start, end = tomorrow_window()
    search = {"window_start": start.isoformat(), "window_end": end.isoformat(), "power_kw": 100}
    order = {"transaction_id": "t-1", "bpp_id": "b", "provider_id": "p"}
    iso = datetime.isoformat
    cases: list[tuple[str, str, Any, int, str]] = [
        ("NUL in the city", "/search", {**search, "city_code": "GB\x00"}, 400, "city_code"),
        ("city of 100 chars", "/search", {**search, "city_code": "C" * 100}, 400, "city_code"),
        ("1e308 kW", "/search", {**search, "power_kw": 1e308}, 400, "power_kw"),
        ("2**70 kW", "/search", {**search, "power_kw": 2**70}, 400, "power_kw"),
        ("beyond any site", "/search", {**search, "power_kw": 5e6}, 400, "power_kw"),
        ("price beyond any market", "/search", {**search, "max_price_gbp_per_mwh": 1e7}, 400, "max_price"),
        (
            "window past",
            "/search",
            {**search, "window_start": iso(PAST[0]), "window_end": iso(PAST[1])},
            400,
            "window_end",
        ),
        (
            "window centuries ahead",
            "/search",
            {**search, "window_start": iso(CENTURIES[0]), "window_end": iso(CENTURIES[1])},
            400,
            "window_start",
        ),
        ("NUL in transaction_id", "/confirm", {**order, "transaction_id": "t\x00"}, 400, "transaction_id"),
        ("transaction_id of 100", "/select", {**order, "transaction_id": "t" * 100}, 400, "transaction_id"),
        ("control char in reason", "/cancel", {**order, "reason": "r\x1b[2J"}, 400, "reason"),
        ("reason of 10,000 chars", "/cancel", {**order, "reason": "r" * 10_000}, 400, "reason"),
        ("1e308 kW order", "/select", {**order, "power_kw": 1e308}, 400, "power_kw"),
        (
            "order window past",
            "/init",
            {**order, "window_start": iso(PAST[0]), "window_end": iso(PAST[1])},
            400,
            "window_end",
        ),
        ("NUL in plan id", "/plan", {"transaction_id": "\x00", "target_kw": 5}, 400, "transaction_id"),
        ("2**70 target", "/plan", {"transaction_id": "t", "target_kw": 2**70}, 400, "target_kw"),
        ("deep JSON", "/search", deep(5000), 400, "body"),
        ("over 1 MiB", "/search", b'{"x": "' + b"x" * limits.MAX_BODY_BYTES + b'"}', 413, "exceeds"),
    ]
    before = rows(db_url, BAP_ROWS)
    headers = {"Content-Type": "application/json", **bap_headers(network, "operator")}
    for what, path, body, status, field in cases:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        r = httpx.post(api + path, content=raw, headers=headers, timeout=10)
        assert r.status_code < 500, (what, r.text)
        assert_refused(r, status, field)
    # streamed without a Content-Length: counted while it arrives
    chunks = iter([b'{"x": "', b"x" * limits.MAX_BODY_BYTES, b'"}'])
    r = httpx.post(api + "/search", content=chunks, headers=headers, timeout=10)
    assert r.status_code == 413
    for path in ("/transactions/t%00x", "/transactions/" + "t" * 300):
        r = httpx.get(api + path, headers=headers, timeout=10)
        assert 400 <= r.status_code < 500, (path, r.text)
    assert settled(db_url, BAP_ROWS) == before


def test_bpp_ops_endpoints_refuse_hostile_ids(network: Network, bpp_platform: dict) -> None:
    base = bpp_platform["url"]
    for path in ("/orders/o%00x", "/orders/" + "o" * 300, "/decisions?job_id=j%00", "/decisions?provider_id=a%01"):
        r = httpx.get(base + path, timeout=10)
        assert r.status_code in (400, 404), (path, r.text)


def test_openapi_documents_the_real_statuses(network: Network) -> None:
    bap = httpx.get(network.url("bap") + "/openapi.json", timeout=10).json()
    assert {"400", "404", "413", "429"} <= set(bap["paths"]["/api/v1/search"]["post"]["responses"])
    assert {"400", "401", "413", "429"} <= set(bap["paths"]["/beckn/{action}"]["post"]["responses"])
    gw = httpx.get(network.url("gateway") + "/openapi.json", timeout=10).json()
    assert {"400", "401", "413", "429"} <= set(gw["paths"]["/{action}"]["post"]["responses"])
    bpp = httpx.get(network.url("bpp") + "/openapi.json", timeout=10).json()
    assert {"400", "401", "404", "413", "429"} <= set(bpp["paths"]["/{slug}/{action}"]["post"]["responses"])
    reg = httpx.get(network.url("registry") + "/openapi.json", timeout=10).json()
    assert {"400", "413"} <= set(reg["paths"]["/lookup"]["post"]["responses"])
