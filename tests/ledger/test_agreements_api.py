"""The ledger registers orders and moves a buyer's cash for tokens only with the parties' signed Beckn
messages: the attacks below are refused with a 4xx naming the reason and write nothing; the real path
stores the messages, serves them for offline re-verification and ties the order's statement lines to them."""

from __future__ import annotations

import base64
import csv
import io
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from beckn import signing
from ledger import accounts as acct
from ledger.agreements import agreement_sha256
from tests.ledger.agreements import (
    TEST_KEYS,
    Deal,
    answer_message,
    confirm_message,
    order_request,
    party,
    signed_pair,
    token_confirm,
    wire,
)
from tests.ledger.helpers import role_keys, snapshot

TAG = uuid.uuid4().hex[:6]
P1, BAP, BAP2, SUP = f"dca-{TAG}", f"bapa-{TAG}", f"bapb-{TAG}", f"supa-{TAG}"


@pytest.fixture(scope="module")
def keys(ledger_url: str) -> dict[str, dict[str, str]]:
    return role_keys(ledger_url, providers=(P1,), baps=(BAP, BAP2))


def deal(provider: str = P1, **over: Any) -> Deal:
    start = (datetime.now(UTC) + timedelta(hours=30)).replace(minute=0, second=0, microsecond=0)
    base = Deal(
        order_id=f"oa-{uuid.uuid4().hex[:8]}",
        provider_id=provider,
        meter_id=f"M-{provider}",
        window_start=start,
        window_end=start + timedelta(hours=1),
        power_kw=250.5,
        price_gbp_per_mwh=312.25,
    )
    return replace(base, **over)


def refused(
    client: TestClient, conn: psycopg.Connection, path: str, headers: dict, body: dict, status: int, code: str
) -> str:
    before = snapshot(conn)
    agreements = _agreements(conn)
    r = client.post(path, json=body, headers=headers)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code, r.json()
    assert snapshot(conn) == before and _agreements(conn) == agreements, "a refused request changed the ledger"
    return str(r.json()["error"]["message"])


def _agreements(conn: psycopg.Connection) -> int:
    n = conn.execute("SELECT count(*) FROM ledger.agreements").fetchone()
    conn.rollback()
    return int(n[0]) if n else 0


def test_the_real_path_stores_both_messages_and_ties_the_entries_to_them(
    client: TestClient, keys: dict, conn: psycopg.Connection
) -> None:
    d = deal()
    confirm, on_confirm = signed_pair(d, party(BAP))
    body = order_request(confirm, on_confirm, supplier_id=SUP)
    t0 = datetime.now(UTC) - timedelta(seconds=1)
    r = client.post("/api/v1/orders", json=body, headers=keys["bap"])
    assert r.status_code == 201, r.text
    digest = agreement_sha256(confirm.sha256(), on_confirm.sha256()).hex()
    assert r.json()["agreement_sha256"] == digest and r.json()["reserve_pence"] == 7822
    again = client.post("/api/v1/orders", json=body, headers=keys["bap"])  # the BAP's retry: idempotent
    assert again.status_code == 200 and again.json()["status"] == "exists"
    order = client.get(f"/api/v1/orders/{d.order_id}", headers=keys["p1"]).json()
    assert order["contracted_w"] == 250_500 and order["transaction_id"] == d.transaction_id
    assert order["agreement_sha256"] == digest

    # the agreement, re-verified offline against the parties' registered keys
    doc = client.get(f"/api/v1/orders/{d.order_id}/agreement", headers=keys["p1"]).json()
    assert doc["agreement_sha256"] == digest
    for name, want in (("confirm", confirm), ("on_confirm", on_confirm)):
        raw = base64.b64decode(doc[name]["body_base64"])
        assert raw == want.body and doc[name]["authorization"] == want.authorization
        params = signing.parse_authorization(doc[name]["authorization"])
        key = TEST_KEYS.key(params.subscriber_id, params.unique_key_id)
        assert key is not None
        signing.verify(params, raw, key.public_key, now=params.created)
    assert client.get(f"/api/v1/orders/{d.order_id}/agreement", headers=keys["finance"]).status_code == 200
    assert client.get(f"/api/v1/orders/{d.order_id}/agreement", headers=keys["bap2"]).status_code == 403

    # the statement line of the reserve carries the agreement hash (in its hashed memo)
    q = {"from": t0.isoformat(), "to": (datetime.now(UTC) + timedelta(seconds=1)).isoformat()}
    st = client.get(f"/api/v1/statements/{acct.escrow(d.order_id)}", params=q, headers=keys["finance"]).json()
    assert [e["agreement_sha256"] for e in st["entries"]] == [digest]
    assert digest in st["entries"][0]["memo"] and digest in st["entries"][0]["canonical"]
    csv_text = client.get(
        f"/api/v1/statements/{acct.escrow(d.order_id)}", params={**q, "format": "csv"}, headers=keys["finance"]
    ).text
    lines = [r for r in csv.DictReader(io.StringIO(csv_text)) if r["record"] == "entry"]
    assert [r["agreement_sha256"] for r in lines] == [digest]

    # a cancellation's entry carries it too
    client.post(f"/api/v1/orders/{d.order_id}/cancel", json={}, headers=keys["bap"])
    cancelled = conn.execute(
        "SELECT memo FROM ledger.entries WHERE id = %s", (f"order:{d.order_id}:cancel",)
    ).fetchone()
    conn.rollback()
    assert cancelled is not None and cancelled[0].endswith(f"[agreement {digest}]")


def test_forged_on_confirms_are_refused(client: TestClient, keys: dict, conn: psycopg.Connection) -> None:
    d = deal()
    confirm, on_confirm = signed_pair(d, party(BAP))
    altered = replace(on_confirm, body=on_confirm.body.replace(b'"312.25"', b'"912.25"'))
    assert altered.body != on_confirm.body
    post = {"path": "/api/v1/orders", "headers": keys["bap"]}
    refused(
        client,
        conn,
        **post,
        body=order_request(confirm, altered, supplier_id=SUP),
        status=422,
        code="signature_invalid",
    )
    stranger = replace(party(f"bpp-unregistered-{TAG}", "BPP"))
    unknown = answer_message(d, replace(stranger, unique_key_id="never-registered"), bap=BAP)
    refused(client, conn, **post, body=order_request(confirm, unknown, supplier_id=SUP), status=422, code="key_unknown")
    # a platform that does not host the provider: signs for it in a transaction addressed to itself
    rogue = party(f"rogue-{TAG}", "BPP")
    r = client.post(
        "/api/v1/orders", json=order_request(*signed_pair(deal(), party(BAP)), supplier_id=SUP), headers=keys["bap"]
    )
    assert r.status_code == 201, r.text  # the provider's first agreement: its platform is the test platform
    forged = signed_pair(deal(), party(BAP), rogue)
    message = refused(
        client, conn, **post, body=order_request(*forged, supplier_id=SUP), status=422, code="signer_mismatch"
    )
    assert "hosted by" in message


def test_a_confirm_signed_by_another_bap_is_refused(client: TestClient, keys: dict, conn: psycopg.Connection) -> None:
    pair = signed_pair(deal(), party(BAP2))
    refused(client, conn, "/api/v1/orders", keys["bap"], order_request(*pair, supplier_id=SUP), 422, "signer_mismatch")
    # a provider's key cannot register orders at all
    refused(client, conn, "/api/v1/orders", keys["p1"], order_request(*pair, supplier_id=SUP), 403, "role_forbidden")


def test_a_replayed_on_confirm_is_refused(client: TestClient, keys: dict, conn: psycopg.Connection) -> None:
    d = deal()
    confirm, on_confirm = signed_pair(d, party(BAP))
    assert (
        client.post(
            "/api/v1/orders", json=order_request(confirm, on_confirm, supplier_id=SUP), headers=keys["bap"]
        ).status_code
        == 201
    )
    # the same on_confirm beside another confirm (re-signed, for another order): another exchange
    other = confirm_message(replace(d, order_id="oa-other"), party(BAP))
    post = {"path": "/api/v1/orders", "headers": keys["bap"]}
    refused(
        client, conn, **post, body=order_request(other, on_confirm, supplier_id=SUP), status=409, code="order_conflict"
    )
    # the order re-registered with other terms (supplier) from the same messages
    refused(
        client,
        conn,
        **post,
        body=order_request(confirm, on_confirm, supplier_id="sup-other"),
        status=409,
        code="order_conflict",
    )
    # the same signed confirm answered for another order id by the platform: the confirm backs one agreement
    second = answer_message(
        replace(d, order_id=f"oa-2-{uuid.uuid4().hex[:6]}"), party("bpp-platform.test", "BPP"), bap=BAP
    )
    refused(
        client,
        conn,
        **post,
        body=order_request(confirm, second, supplier_id=SUP),
        status=409,
        code="agreement_replayed",
    )


def test_amendments_need_the_platforms_signed_on_update(
    client: TestClient, keys: dict, conn: psycopg.Connection
) -> None:
    d = deal()
    bap, platform = party(BAP), party("bpp-platform.test", "BPP")
    assert (
        client.post(
            "/api/v1/orders", json=order_request(*signed_pair(d, bap), supplier_id=SUP), headers=keys["bap"]
        ).status_code
        == 201
    )
    changed = replace(d, power_kw=200.0)
    path = f"/api/v1/orders/{d.order_id}/amend"
    rogue_update = answer_message(changed, party(f"rogue-{TAG}", "BPP"), action="on_update", bap=BAP, message_id="u-1")
    refused(client, conn, path, keys["bap"], {"on_update": wire(rogue_update)}, 422, "signer_mismatch")
    update = answer_message(changed, platform, action="on_update", bap=BAP, message_id=f"u-{TAG}")
    r = client.post(path, json={"on_update": wire(update)}, headers=keys["bap"])
    assert r.status_code == 201, r.text
    assert r.json()["amendments"][-1]["contracted_w"] == 200_000
    assert client.post(path, json={"on_update": wire(update)}, headers=keys["bap"]).status_code == 200
    doc = client.get(f"/api/v1/orders/{d.order_id}/agreement", headers=keys["bap"]).json()
    assert doc["amendments"][0]["on_update"]["body_base64"] == wire(update)["body_base64"]
    assert doc["amendments"][0]["update"] is None


# -- tokens ----------------------------------------------------------------------------------------


def _series(client: TestClient, keys: dict) -> str:
    sid = f"sa-{uuid.uuid4().hex[:6]}"
    now = datetime.now(UTC)
    series = {
        "series_id": sid,
        "provider_id": P1,
        "valid_from": now.isoformat(),
        "valid_to": (now + timedelta(days=2)).isoformat(),
        "declared_capacity_kw": "100",
    }
    assert client.post("/api/v1/cft/series", headers=keys["p1"], json=series).status_code == 201
    assert (
        client.post(
            "/api/v1/cft/mint", headers=keys["p1"], json={"id": f"m-{sid}", "series_id": sid, "tokens": 4}
        ).status_code
        == 201
    )
    client.post("/api/v1/accounts", json={"name": acct.bap_cash(BAP)}, headers=keys["admin"])
    return sid


def test_a_provider_cannot_sell_tokens_from_a_buyers_cash_without_consent(
    client: TestClient, keys: dict, conn: psycopg.Connection
) -> None:
    sid = _series(client, keys)
    sale = {"id": f"s-{sid}", "series_id": sid, "buyer_id": BAP, "tokens": 2, "price_gbp": "600.00"}
    refused(client, conn, "/api/v1/cft/sell", keys["p1"], sale, 400, "invalid_request")  # no confirm at all
    # the provider signs a "confirm" itself (it holds no BAP key): not the buyer's consent
    forged = token_confirm(party(P1, "BPP"), provider_id=P1, series_id=sid, tokens=2, price_gbp="600.00")
    refused(client, conn, "/api/v1/cft/sell", keys["p1"], {**sale, "confirm": wire(forged)}, 422, "signer_mismatch")
    # the buyer's genuine confirm for a smaller sale cannot pay for a bigger one
    small = token_confirm(party(BAP), provider_id=P1, series_id=sid, tokens=1, price_gbp="300.00")
    refused(client, conn, "/api/v1/cft/sell", keys["p1"], {**sale, "confirm": wire(small)}, 422, "terms_mismatch")
    # with the buyer's signed confirm for exactly this sale it goes through, once
    ok = token_confirm(party(BAP), provider_id=P1, series_id=sid, tokens=2, price_gbp="600.00")
    r = client.post("/api/v1/cft/sell", headers=keys["p1"], json={**sale, "confirm": wire(ok)})
    assert r.status_code == 201, r.text
    payment = next(t for t in r.json()["transfers"] if t["id"].endswith(":payment"))
    assert payment["debit_account"] == acct.bap_cash(BAP) and payment["memo"].endswith(
        f"[agreement {r.json()['agreement_sha256']}]"
    )
    assert client.post("/api/v1/cft/sell", headers=keys["p1"], json={**sale, "confirm": wire(ok)}).status_code == 200
    replay = {**sale, "id": f"s2-{sid}", "confirm": wire(ok)}
    refused(client, conn, "/api/v1/cft/sell", keys["p1"], replay, 409, "agreement_replayed")


def test_secondary_transfers_need_the_senders_own_key(client: TestClient, keys: dict, conn: psycopg.Connection) -> None:
    sid = _series(client, keys)
    ok = token_confirm(party(BAP), provider_id=P1, series_id=sid, tokens=2, price_gbp="0")
    sale = {"id": f"s-{sid}", "series_id": sid, "buyer_id": BAP, "tokens": 2, "price_gbp": "0", "confirm": wire(ok)}
    assert client.post("/api/v1/cft/sell", headers=keys["p1"], json=sale).status_code == 201
    move = {"id": f"t-{sid}", "series_id": sid, "from_id": BAP, "to_id": BAP2, "tokens": 1}
    # anyone but the holder: admin and finance by the permission table, another bap or provider by the route
    for who, code in (
        ("p1", "forbidden"),
        ("admin", "role_forbidden"),
        ("bap2", "forbidden"),
        ("finance", "role_forbidden"),
    ):
        refused(client, conn, "/api/v1/cft/transfer", keys[who], move, 403, code)
    # the holder's own key, but a price debits the receiver's cash: its signed confirm is needed
    priced = {**move, "price_gbp": "10.00"}
    refused(client, conn, "/api/v1/cft/transfer", keys["bap"], priced, 422, "consent_required")
    assert client.post("/api/v1/cft/transfer", headers=keys["bap"], json=move).status_code == 201
