"""The BAP's client routes for the tokens' secondary market (bap/token_market.py) and the refusal to amend a
token-paid order (bap/service.py), in process (tests/bap/conftest.py: the BAP's app, no ledger configured):

- the pure rules: what a ledger answer becomes at the client API, a retried purchase, and the confirm the BAP
  signs for a purchase, which the ledger's own consent check (ledger/agreements.py) accepts for exactly that
  purchase and refuses for any other;
- bad input is a 400 naming the field before the ledger is asked; only operators write; every write, refused
  or not, has its audit row; a BAP without a ledger answers 503, an unreachable ledger 502 naming it;
- `update` of an order paid with tokens is a 409 naming settlement_method, and nothing is sent.

The routes working against a real ledger: tests/e2e/test_token_market_bap.py.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from bap import token_market
from bap.models import AuditEntry, BapOrder, Transaction
from beckn import signing
from beckn.errors import Role as BecknRole
from beckn.identity import Identity
from beckn.keys import KeyPair
from beckn.models import outbox as outbox_table
from kernel.config import reset_settings
from kernel.db import session_scope
from ledger.agreements import RegisteredKey, SignedMessage, TokenSale, check_token_consent, verify_message
from ledger.errors import LedgerError
from tests.bap.conftest import NOWHERE, Keys, bearer

BAP_ID = "bap.market.test"
SERIES = "dc-01-cft-20260124-evening"
LISTING: dict[str, Any] = {
    "listing_id": "l-1",
    "series_id": SERIES,
    "seller_id": "dc-01",
    "price_gbp_per_token": "135.00",
    "purchases": [{"purchase_id": "p-1", "buyer_id": BAP_ID, "tokens": 2, "price_gbp": "270.00"}],
}


# -- the pure rules --------------------------------------------------------------------------------------------
def test_a_ledger_refusal_keeps_its_status_code_and_message() -> None:
    error = {"error": {"code": "insufficient_tokens", "message": "2 tokens asked, 1 left"}}
    refused = token_market.refusal_of(409, error)
    assert (refused.status, refused.code, str(refused)) == (409, "insufficient_tokens", "2 tokens asked, 1 left")
    assert token_market.refusal_of(403, {"error": {"code": "forbidden", "message": "x"}}).status == 403


@pytest.mark.parametrize("status", [401, 500, 503, 302])
def test_a_ledger_failure_or_its_refusal_of_the_bap_key_is_a_502_naming_the_ledger(status: int) -> None:
    refused = token_market.refusal_of(status, {"error": {"code": "boom", "message": "down"}})
    assert refused.status == 502 and refused.code == "ledger_error"
    assert "ledger" in str(refused) and str(status) in str(refused) and "boom" in str(refused)
    assert token_market.refusal_of(500, {"detail": "no error object"}).status == 502


def test_a_retried_purchase_is_answered_from_the_listing_and_a_reused_id_is_a_conflict() -> None:
    before = token_market.prior_purchase(LISTING, "p-1", buyer_id=BAP_ID, tokens=2)
    assert before is not None and before["status"] == "exists" and before["price_gbp"] == "270.00"
    assert token_market.prior_purchase(LISTING, "p-2", buyer_id=BAP_ID, tokens=2) is None
    for other in ({"buyer_id": "someone-else", "tokens": 2}, {"buyer_id": BAP_ID, "tokens": 1}):
        with pytest.raises(token_market.MarketRefusal) as refused:
            token_market.prior_purchase(LISTING, "p-1", **other)  # type: ignore[arg-type]
        assert refused.value.status == 409 and "purchase_id" in str(refused.value)


class _Registry:
    """A key directory holding one BAP's key (the registry's role for the ledger)."""

    def __init__(self, me: Identity) -> None:
        self.registered = RegisteredKey(
            subscriber_id=me.subscriber_id,
            unique_key_id=me.unique_key_id,
            participant_type="BAP",
            public_key=me.keys.signing_private_key.public_key(),
            valid_from=None,
            valid_until=None,
        )

    def key(self, subscriber_id: str, unique_key_id: str) -> RegisteredKey | None:
        ok = (subscriber_id, unique_key_id) == (self.registered.subscriber_id, self.registered.unique_key_id)
        return self.registered if ok else None


def test_the_signed_confirm_is_the_ledgers_consent_to_exactly_that_purchase() -> None:
    me = Identity(BAP_ID, BecknRole.BAP, "http://127.0.0.1:9/beckn", KeyPair.generate())
    terms = token_market.purchase_terms(LISTING, 3)
    assert terms.price_gbp_per_token == Decimal("135.00") and terms.provider_id == "dc-01"
    wire = token_market.signed_confirm(me, terms)
    signed = SignedMessage.from_base64(wire["body_base64"], wire["authorization"], field="confirm")
    consent = verify_message(
        signed, _Registry(me), field="confirm", action="confirm", participant_type="BAP", now=datetime.now(UTC)
    )
    sale = TokenSale(series_id=SERIES, seller_id="dc-01", buyer_id=BAP_ID, tokens=3, price_pence=40_500)
    check_token_consent(consent, sale)  # 3 × £135.00, from the seller, signed by the buyer
    for other in (
        TokenSale(series_id=sale.series_id, seller_id="dc-01", buyer_id=BAP_ID, tokens=3, price_pence=40_000),
        TokenSale(series_id=sale.series_id, seller_id="dc-01", buyer_id=BAP_ID, tokens=2, price_pence=27_000),
        TokenSale(series_id=sale.series_id, seller_id="dc-02", buyer_id=BAP_ID, tokens=3, price_pence=40_500),
        TokenSale(series_id=sale.series_id, seller_id="dc-01", buyer_id="other-bap", tokens=3, price_pence=40_500),
    ):
        with pytest.raises(LedgerError):
            check_token_consent(consent, other)
    # a fresh Beckn confirm each time: the ledger pays one confirm once
    again = token_market.signed_confirm(me, terms)
    assert json.loads(base64.b64decode(again["body_base64"]))["context"]["message_id"] != consent.context["message_id"]
    params = signing.parse_authorization(wire["authorization"])
    assert (params.subscriber_id, params.unique_key_id) == (BAP_ID, me.unique_key_id)


# -- the routes, in process ------------------------------------------------------------------------------------
def _audit_rows(action: str) -> list[tuple[int, str | None]]:
    with session_scope("bap") as s:
        rows = s.execute(
            select(AuditEntry.status_code, AuditEntry.error_code)
            .where(AuditEntry.action == action)
            .order_by(AuditEntry.id)
        ).all()
        return [(r[0], r[1]) for r in rows]


BAD_INPUT: list[tuple[str, dict[str, Any], str]] = [
    ("/api/v1/tokens/listings", {"series_id": "s", "tokens": 2, "price_gbp_per_token": "1.234"}, "price_gbp_per_token"),
    ("/api/v1/tokens/listings", {"series_id": "s", "tokens": 2, "price_gbp_per_token": "0"}, "price_gbp_per_token"),
    ("/api/v1/tokens/listings", {"series_id": "s", "tokens": 2, "price_gbp_per_token": "1e9"}, "price_gbp_per_token"),
    ("/api/v1/tokens/listings", {"series_id": "s", "tokens": 2, "price_gbp_per_token": "NaN"}, "price_gbp_per_token"),
    ("/api/v1/tokens/listings", {"series_id": "s", "tokens": 0, "price_gbp_per_token": "1"}, "tokens"),
    ("/api/v1/tokens/listings", {"series_id": "s", "tokens": 1.5, "price_gbp_per_token": "1"}, "tokens"),
    ("/api/v1/tokens/listings", {"series_id": "a b", "tokens": 1, "price_gbp_per_token": "1"}, "series_id"),
    ("/api/v1/tokens/listings", {"tokens": 1, "price_gbp_per_token": "1"}, "series_id"),
    ("/api/v1/tokens/listings", {"series_id": "s", "tokens": 1, "price_gbp_per_token": "1", "seller": "x"}, "seller"),
    ("/api/v1/tokens/listings/l-1/buy", {"tokens": -1}, "tokens"),
    ("/api/v1/tokens/listings/l-1/buy", {"tokens": 1, "purchase_id": "x" * 300}, "purchase_id"),
    ("/api/v1/tokens/transfer", {"series_id": "s", "tokens": 1}, "to_id"),
    ("/api/v1/tokens/transfer", {"to_id": "b", "series_id": "s", "tokens": 10_000_000}, "tokens"),
]


@pytest.mark.parametrize(("path", "body", "field"), BAD_INPUT)
def test_bad_input_is_a_400_naming_the_field(
    client: TestClient, keys: Keys, path: str, body: dict[str, Any], field: str
) -> None:
    r = client.post(path, json=body, headers=bearer(keys.operator))
    assert r.status_code == 400, r.text
    assert field in r.json()["error"]["message"], r.json()


def test_only_operators_write_and_every_write_is_audited(client: TestClient, keys: Keys) -> None:
    listing = {"series_id": "s-1", "tokens": 1, "price_gbp_per_token": "12.50"}
    before = _audit_rows("list_tokens")
    for key in (keys.aggregator, keys.viewer):
        r = client.post("/api/v1/tokens/listings", json=listing, headers=bearer(key))
        assert r.status_code == 403 and r.json()["error"]["code"] == "role_forbidden", r.text
    # an operator's valid request reaches the ledger — which this BAP does not have: 503, and said so
    r = client.post("/api/v1/tokens/listings", json=listing, headers=bearer(keys.operator))
    assert r.status_code == 503 and r.json()["error"]["code"] == "ledger_not_configured", r.text
    assert "FLEXMARKET_LEDGER_URL" in r.json()["error"]["message"]
    assert _audit_rows("list_tokens")[len(before) :] == [
        (403, "role_forbidden"),
        (403, "role_forbidden"),
        (503, "ledger_not_configured"),
    ]
    r = client.get("/api/v1/tokens/listings", params={"series_id": "s-1"}, headers=bearer(keys.viewer))
    assert r.status_code == 503, r.text  # a viewer may read


@pytest.fixture()
def unreachable_ledger(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("FLEXMARKET_LEDGER_URL", NOWHERE)  # connections are refused at once
    reset_settings()
    yield
    monkeypatch.delenv("FLEXMARKET_LEDGER_URL")
    reset_settings()


@pytest.mark.usefixtures("unreachable_ledger")
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/v1/tokens/listings", None),
        ("POST", "/api/v1/tokens/listings", {"series_id": "s", "tokens": 1, "price_gbp_per_token": "2"}),
        ("POST", "/api/v1/tokens/listings/l-1/buy", {"tokens": 1}),
        ("POST", "/api/v1/tokens/listings/l-1/cancel", None),
        ("POST", "/api/v1/tokens/transfer", {"to_id": "b", "series_id": "s", "tokens": 1}),
    ],
)
def test_an_unreachable_ledger_is_a_502_naming_it(
    client: TestClient, keys: Keys, method: str, path: str, body: dict[str, Any] | None
) -> None:
    r = client.request(method, path, json=body, headers=bearer(keys.operator))
    assert r.status_code == 502, r.text
    assert r.json()["error"]["code"] == "ledger_unreachable" and "ledger" in r.json()["error"]["message"]


# -- amending an order paid with tokens ------------------------------------------------------------------------
TX = "tx-token-market"


@pytest.fixture(scope="module")
def orders(keys: Keys) -> None:
    """Two initialised orders (the BPP assigned their ids) in one operator transaction: one paid with tokens,
    one under P415."""
    day = (datetime.now(UTC) + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    start, end = day + timedelta(hours=16), day + timedelta(hours=18)
    with session_scope("bap") as s:
        request = {"window_start": start.isoformat(), "window_end": end.isoformat(), "power_kw": 500.0}
        s.add(Transaction(id=TX, request=request, city_code="GB-R13", country_code="GBR"))
        for provider, method in (("dc-cft", "CFT"), ("dc-p415", "P415")):
            s.add(
                BapOrder(
                    transaction_id=TX,
                    bpp_id="bpp.market.test",
                    provider_id=provider,
                    bpp_uri=f"{NOWHERE}/bpp",
                    item_id=f"{provider}-evening",
                    order_id=f"ord-{provider}",
                    power_kw=500.0,
                    window_start=start,
                    window_end=end,
                    settlement_method=method,
                    state="ACCEPTED",
                )
            )


def _outbox_rows() -> int:
    with session_scope("bap") as s:
        return int(s.scalar(select(func.count()).select_from(outbox_table)) or 0)


@pytest.mark.usefixtures("orders")
def test_an_update_of_a_token_paid_order_is_refused_naming_settlement_method(client: TestClient, keys: Keys) -> None:
    before = _outbox_rows()
    order = {"transaction_id": TX, "bpp_id": "bpp.market.test"}
    r = client.post(
        "/api/v1/update", json={**order, "provider_id": "dc-cft", "power_kw": 250}, headers=bearer(keys.operator)
    )
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert error["code"] == "not_amendable" and error["message"].startswith("settlement_method: a token-paid order")
    assert "cancel it" in error["message"]
    # nor may an update switch a P415 order to tokens
    switch = {**order, "provider_id": "dc-p415", "settlement_method": "CFT"}
    r = client.post("/api/v1/update", json=switch, headers=bearer(keys.operator))
    assert r.status_code == 409 and "settlement_method" in r.json()["error"]["message"], r.text
    assert _outbox_rows() == before  # nothing was sent
    # the P415 order itself may still be amended (the update is queued for its BPP)
    r = client.post(
        "/api/v1/update", json={**order, "provider_id": "dc-p415", "power_kw": 250}, headers=bearer(keys.operator)
    )
    assert r.status_code == 202, r.text
    assert _outbox_rows() == before + 1
