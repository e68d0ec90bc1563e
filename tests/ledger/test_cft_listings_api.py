"""The secondary market over HTTP (ledger/api/listings.py): who may list, buy and cancel, the buyer's signed
confirm as the only way its cash moves, refusals as 4xx naming the reason that write nothing, and the holder's
own /cft/transfer beside it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from ledger import accounts as acct
from tests.ledger.agreements import party, token_confirm, wire
from tests.ledger.helpers import role_keys, snapshot

TAG = uuid.uuid4().hex[:6]
P1, BAP, BAP2, SUP = f"dcl-{TAG}", f"bapl-{TAG}", f"bapm-{TAG}", f"supl-{TAG}"
FUNDS = acct.bap_cash(f"funding-{TAG}")


@pytest.fixture(scope="module")
def keys(ledger_url: str) -> dict[str, dict[str, str]]:
    return role_keys(ledger_url, providers=(P1,), baps=(BAP, BAP2), suppliers=(SUP,))


def refused(
    client: TestClient, conn: psycopg.Connection, path: str, headers: dict, body: Any, status: int, code: str
) -> str:
    before = snapshot(conn)
    r = client.post(path, json=body, headers=headers)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code, r.json()
    assert snapshot(conn) == before, "a refused request changed the ledger"
    return str(r.json()["error"]["message"])


def _series(client: TestClient, keys: dict) -> str:
    """A series of P1 with 6 tokens minted; 4 of them sold to BAP for nothing (its signed confirm)."""
    sid = f"sl-{uuid.uuid4().hex[:6]}"
    now = datetime.now(UTC)
    series = {
        "series_id": sid,
        "provider_id": P1,
        "valid_from": now.isoformat(),
        "valid_to": (now + timedelta(days=2)).isoformat(),
        "declared_capacity_kw": "200",
    }
    assert client.post("/api/v1/cft/series", headers=keys["p1"], json=series).status_code == 201
    mint = {"id": f"m-{sid}", "series_id": sid, "tokens": 6}
    assert client.post("/api/v1/cft/mint", headers=keys["p1"], json=mint).status_code == 201
    ok = token_confirm(party(BAP), provider_id=P1, series_id=sid, tokens=4, price_gbp="0")
    sale = {"id": f"s-{sid}", "series_id": sid, "buyer_id": BAP, "tokens": 4, "price_gbp": "0", "confirm": wire(ok)}
    assert client.post("/api/v1/cft/sell", headers=keys["p1"], json=sale).status_code == 201
    return sid


def _fund(client: TestClient, keys: dict, bap: str, pence: int) -> None:
    """Finance credits a BAP's cash (a generic GBP transfer)."""
    for name in (FUNDS, acct.bap_cash(bap)):
        client.post("/api/v1/accounts", json={"name": name}, headers=keys["admin"])
    move = {
        "id": f"fund-{uuid.uuid4().hex[:8]}",
        "ledger": "GBP",
        "debit_account": FUNDS,
        "credit_account": acct.bap_cash(bap),
        "amount": pence,
    }
    assert client.post("/api/v1/transfers", json=move, headers=keys["finance"]).status_code == 201


def _balance(client: TestClient, keys: dict, name: str) -> int:
    return int(client.get(f"/api/v1/accounts/{name}", headers=keys["finance"]).json()["balance"])


def test_list_browse_buy_and_cancel(client: TestClient, keys: dict, conn: psycopg.Connection) -> None:
    sid = _series(client, keys)
    listing = {"id": f"l-{sid}", "series_id": sid, "tokens": 4, "price_gbp_per_token": "12.50"}
    # the seller is the key's participant; an admin or finance key cannot list anybody's tokens
    refused(client, conn, "/api/v1/cft/listings", keys["admin"], listing, 403, "role_forbidden")
    refused(client, conn, "/api/v1/cft/listings", keys["bap2"], listing, 409, "insufficient_tokens")  # holds none
    bad = {**listing, "price_gbp_per_token": "1.234"}
    assert "price_gbp_per_token" in refused(
        client, conn, "/api/v1/cft/listings", keys["bap"], bad, 422, "invalid_value"
    )
    r = client.post("/api/v1/cft/listings", headers=keys["bap"], json=listing)
    assert r.status_code == 201, r.text
    assert (r.json()["seller_id"], r.json()["tokens_left"], r.json()["state"]) == (BAP, 4, "open")
    assert client.post("/api/v1/cft/listings", headers=keys["bap"], json=listing).status_code == 200  # a retry
    # the provider lists its own unsold tokens too
    own = {"id": f"lp-{sid}", "series_id": sid, "tokens": 2, "price_gbp_per_token": "11.00"}
    assert client.post("/api/v1/cft/listings", headers=keys["p1"], json=own).status_code == 201

    # anyone with a key browses open listings of a series, cheapest first
    seen = client.get(f"/api/v1/cft/listings?series_id={sid}", headers=keys["sup"]).json()["listings"]
    assert [(x["listing_id"], x["price_gbp_per_token"]) for x in seen] == [
        (f"lp-{sid}", "11.00"),
        (f"l-{sid}", "12.50"),
    ]

    path = f"/api/v1/cft/listings/l-{sid}/buy"

    def order(tokens: int, price: str, signer: str = BAP2) -> dict[str, Any]:
        signed = token_confirm(party(signer), provider_id=BAP, series_id=sid, tokens=tokens, price_gbp=price)
        return {"id": f"b-{uuid.uuid4().hex[:8]}", "tokens": tokens, "confirm": wire(signed)}

    refused(client, conn, path, keys["p1"], order(2, "25.00"), 403, "role_forbidden")  # only a BAP buys
    refused(client, conn, path, keys["bap2"], {"id": "b-x", "tokens": 2}, 400, "invalid_request")  # no confirm
    refused(client, conn, path, keys["bap2"], order(2, "25.00", signer=BAP), 422, "signer_mismatch")
    refused(client, conn, path, keys["bap2"], order(2, "20.00"), 422, "terms_mismatch")  # signed another price
    refused(client, conn, path, keys["bap"], order(1, "12.50", signer=BAP), 422, "buyer_is_seller")
    refused(client, conn, path, keys["bap2"], order(5, "62.50"), 409, "insufficient_tokens")
    msg = refused(client, conn, path, keys["bap2"], order(2, "25.00"), 409, "insufficient_funds")
    assert "2500 pence" in msg
    refused(client, conn, "/api/v1/cft/listings/nope/buy", keys["bap2"], order(1, "12.50"), 404, "not_found")

    _fund(client, keys, BAP2, 6_000)  # enough for two purchases: a replayed confirm is refused for itself
    good = order(2, "25.00")
    r = client.post(path, headers=keys["bap2"], json=good)
    assert r.status_code == 201, r.text
    assert {t["debit_account"] for t in r.json()["transfers"]} == {acct.listing(f"l-{sid}", sid), acct.bap_cash(BAP2)}
    assert _balance(client, keys, acct.bap_cash(BAP2)) == 3_500 and _balance(client, keys, acct.bap_cash(BAP)) == 2_500
    assert client.get(f"/api/v1/cft/series/{sid}", headers=keys["bap2"]).json()["holdings"][BAP2] == 2
    assert client.post(path, headers=keys["bap2"], json=good).status_code == 200  # a retry: bought once
    replay = {**good, "id": f"b-{uuid.uuid4().hex[:8]}"}
    refused(client, conn, path, keys["bap2"], replay, 409, "agreement_replayed")  # one confirm pays once

    # only the seller cancels; the tokens left return to its holding
    cancel = f"/api/v1/cft/listings/l-{sid}/cancel"
    refused(client, conn, cancel, keys["bap2"], None, 403, "forbidden")
    refused(client, conn, cancel, keys["admin"], None, 403, "role_forbidden")
    r = client.post(cancel, headers=keys["bap"])
    assert r.status_code == 200 and (r.json()["state"], r.json()["tokens_returned"]) == ("cancelled", 2), r.text
    view = client.get(f"/api/v1/cft/listings/l-{sid}", headers=keys["finance"]).json()
    assert view["state"] == "cancelled" and [p["tokens"] for p in view["purchases"]] == [2]
    assert client.get(f"/api/v1/cft/series/{sid}", headers=keys["bap"]).json()["holdings"][BAP] == 2
    refused(client, conn, path, keys["bap2"], order(1, "12.50"), 409, "listing_cancelled")

    # the holder gives a token away with its own key (/cft/transfer, no price: no confirm)
    gift = {"id": f"g-{sid}", "series_id": sid, "from_id": BAP2, "to_id": BAP, "tokens": 1}
    assert client.post("/api/v1/cft/transfer", headers=keys["bap2"], json=gift).status_code == 201
    assert client.get(f"/api/v1/cft/series/{sid}", headers=keys["bap"]).json()["holdings"][BAP] == 3


def test_the_bap_counts_tokens_it_bought_on_the_secondary_market(
    client: TestClient, keys: dict, ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bap/tokens.py `holdings` reads the BAP's holding accounts on the ledger: tokens bought from a listing
    count (the series was never in one of its catalogs), tokens it has listed do not."""
    from bap import tokens as bap_tokens
    from kernel.db import session_scope

    sid = _series(client, keys)  # BAP holds 4
    listing = {"id": f"l-{sid}", "series_id": sid, "tokens": 3, "price_gbp_per_token": "2.00"}
    assert client.post("/api/v1/cft/listings", headers=keys["bap"], json=listing).status_code == 201
    _fund(client, keys, BAP2, 200)
    signed = token_confirm(party(BAP2), provider_id=BAP, series_id=sid, tokens=1, price_gbp="2.00")
    buy = {"id": f"b-{sid}", "tokens": 1, "confirm": wire(signed)}
    assert client.post(f"/api/v1/cft/listings/l-{sid}/buy", headers=keys["bap2"], json=buy).status_code == 201
    series = client.get(f"/api/v1/cft/series/{sid}", headers=keys["bap"]).json()
    valid_from, valid_to = datetime.fromisoformat(series["valid_from"]), datetime.fromisoformat(series["valid_to"])

    def held_by(who: str, bap_id: str, **only: Any) -> dict[str, Any]:
        def ledger_call(method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
            r = client.request(method, f"/api/v1{path}", json=body, headers=keys[who])
            return r.status_code, r.json()

        monkeypatch.setattr(bap_tokens, "ledger_call", ledger_call)
        monkeypatch.setattr(bap_tokens, "my_id", lambda: bap_id)
        with session_scope("bap", ledger_url) as session:
            return bap_tokens.holdings(session, **only)

    assert held_by("bap2", BAP2)[sid] == (P1, valid_from, valid_to, 1)
    assert held_by("bap", BAP)[sid] == (P1, valid_from, valid_to, 1)  # 4 − 3 listed
    assert sid not in held_by("bap2", BAP2, providers={"someone-else"})
    later = (valid_to + timedelta(hours=1), valid_to + timedelta(hours=2))
    assert sid not in held_by("bap2", BAP2, window=later)
