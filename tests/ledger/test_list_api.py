"""GET /api/v1/accounts and GET /api/v1/orders: finance and admin read all, a participant only its own."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from ledger import accounts as acct
from ledger.accounts_db import ensure_accounts
from ledger.db import connection
from tests.ledger.agreements import Deal, order_request, party, signed_pair
from tests.ledger.helpers import role_keys

TAG = uuid.uuid4().hex[:6]
P1, P2, BAP, BAP2, SUP = f"dc1-{TAG}", f"dc2-{TAG}", f"bap-{TAG}", f"bapx-{TAG}", f"sup-{TAG}"


@pytest.fixture(scope="module")
def keys(ledger_url: str) -> dict[str, dict[str, str]]:
    return role_keys(ledger_url, providers=(P1, P2), baps=(BAP, BAP2), suppliers=(SUP,))


@pytest.fixture(scope="module")
def orders(client: TestClient, keys: dict[str, dict[str, str]], ledger_url: str) -> dict[str, str]:
    start = (datetime.now(UTC) + timedelta(hours=30)).replace(minute=0, second=0, microsecond=0)
    made = {}
    for i, provider in enumerate((P1, P1, P2)):
        oid = f"lo-{TAG}-{i}"
        deal = Deal(
            order_id=oid,
            provider_id=provider,
            meter_id=f"der://M-{provider}",
            window_start=start + timedelta(hours=i),
            window_end=start + timedelta(hours=i + 1),
            power_kw=100,
            price_gbp_per_mwh=200,
            transaction_id=f"txn-{oid}",
        )
        body = order_request(*signed_pair(deal, party(BAP)), supplier_id=SUP)
        r = client.post("/api/v1/orders", json=body, headers=keys["bap"])
        assert r.status_code in (200, 201), r.text
        made[oid] = provider
    with connection(ledger_url) as conn, conn.transaction():
        ensure_accounts(conn, [acct.provider_revenue(P1), acct.provider_revenue(P2), acct.provider_penalties(P1)])
    return made


def _order_ids(client: TestClient, headers: dict[str, str], **params: object) -> set[str]:
    r = client.get("/api/v1/orders", params={"bap_id": BAP, **params}, headers=headers)
    assert r.status_code == 200, r.text
    return {o["order_id"] for o in r.json()["orders"]}


def test_orders_listed_to_whom_may_read_them(
    client: TestClient, keys: dict[str, dict[str, str]], orders: dict[str, str]
) -> None:
    everyone = set(orders)
    assert _order_ids(client, keys["finance"]) == everyone
    assert _order_ids(client, keys["admin"]) == everyone
    assert _order_ids(client, keys["bap"]) == everyone
    assert _order_ids(client, keys["bap2"]) == set()  # another BAP sees none of them
    assert _order_ids(client, keys["p1"]) == {o for o, p in orders.items() if p == P1}
    assert _order_ids(client, keys["p2"]) == {o for o, p in orders.items() if p == P2}
    # a provider cannot widen its view with a filter naming another provider
    assert _order_ids(client, keys["p1"], provider_id=P2) == set()
    assert client.get("/api/v1/orders", headers=keys["sup"]).status_code == 403
    assert client.get("/api/v1/orders").status_code == 401
    # filters, limit and paging
    assert _order_ids(client, keys["finance"], provider_id=P2) == {o for o, p in orders.items() if p == P2}
    assert _order_ids(client, keys["finance"], cancelled=True) == set()
    page = client.get("/api/v1/orders", params={"bap_id": BAP, "limit": 2}, headers=keys["finance"]).json()
    assert len(page["orders"]) == 2 and page["next_after"] == page["orders"][-1]["order_id"]
    rest = _order_ids(client, keys["finance"], limit=2, after=page["next_after"])
    assert {o["order_id"] for o in page["orders"]} | rest == everyone
    one = client.get("/api/v1/orders", params={"bap_id": BAP, "limit": 1}, headers=keys["finance"]).json()
    assert one["orders"][0]["transaction_id"].startswith("txn-") and one["orders"][0]["cancelled_at"] is None
    assert client.get("/api/v1/orders", params={"limit": 0}, headers=keys["finance"]).status_code == 400
    assert client.get("/api/v1/orders", params={"limit": 10_001}, headers=keys["finance"]).status_code == 400


def _account_names(client: TestClient, headers: dict[str, str], **params: object) -> set[str]:
    r = client.get("/api/v1/accounts", params={"limit": 1000, **params}, headers=headers)
    assert r.status_code == 200, r.text
    return {a["name"] for a in r.json()["accounts"]}


def test_accounts_listed_to_whom_may_read_them(
    client: TestClient, keys: dict[str, dict[str, str]], orders: dict[str, str]
) -> None:
    mine_p1 = _account_names(client, keys["p1"])
    assert acct.provider_revenue(P1) in mine_p1 and acct.provider_penalties(P1) in mine_p1
    assert all(acct.can_read(n, "provider", P1) for n in mine_p1)
    assert acct.provider_revenue(P2) not in mine_p1
    assert _account_names(client, keys["p1"], owner_id=P2) == set()
    everyone = _account_names(client, keys["finance"], owner_id=P1) | _account_names(
        client, keys["finance"], owner_id=P2
    )
    assert {acct.provider_revenue(P1), acct.provider_revenue(P2)} <= everyone
    assert _account_names(client, keys["admin"], prefix=acct.provider_revenue(P2)) == {acct.provider_revenue(P2)}
    r = client.get("/api/v1/accounts", params={"owner_id": P1}, headers=keys["finance"]).json()
    assert all("balance" in a for a in r["accounts"])
    assert client.get("/api/v1/accounts").status_code == 401
