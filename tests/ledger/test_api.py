"""The HTTP API: keys and roles (tested both ways), idempotent writes, clear 4xx errors that write
nothing, and statements that verify offline."""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fastapi.testclient import TestClient

from ledger import accounts as acct
from ledger.proofs import verify_statement
from ledger.statement_csv import statement_from_csv
from tests.ledger.agreements import Deal, Mutate, order_request, party, signed_pair, token_confirm, wire
from tests.ledger.helpers import role_keys, snapshot

TAG = uuid.uuid4().hex[:6]
P1, P2, BAP, SUP = f"dc1-{TAG}", f"dc2-{TAG}", f"bap-{TAG}", f"sup-{TAG}"


@pytest.fixture(scope="module")
def keys(ledger_url: str) -> dict[str, dict[str, str]]:
    return role_keys(ledger_url, providers=(P1, P2), baps=(BAP,))


def window(hours_ahead: int = 30) -> tuple[datetime, datetime]:
    start = (datetime.now(UTC) + timedelta(hours=hours_ahead)).replace(minute=0, second=0, microsecond=0)
    return start, start + timedelta(hours=1)


_TERMS = (  # what the signed on_confirm states (everything else travels beside the messages)
    "provider_id",
    "window_start",
    "window_end",
    "contracted_kw",
    "price_gbp_per_mwh",
    "confirmed_at",
    "settlement_method",
)


def order_body(oid: str, provider: str = P1, *, mutate: Mutate | None = None, **over: object) -> dict[str, object]:
    """POST /api/v1/orders for order `oid`: the BAP's signed confirm and the platform's signed on_confirm
    carrying the terms (`over` changes a term before signing, or a field the messages do not carry);
    `mutate` edits the on_confirm's JSON before it is signed."""
    start, end = window()
    terms: dict[str, object] = {
        "provider_id": provider,
        "window_start": start,
        "window_end": end,
        "contracted_kw": 250.5,
        "price_gbp_per_mwh": 312.25,
        "confirmed_at": datetime.now(UTC),
        "settlement_method": "P415",
    }
    terms.update({k: v for k, v in over.items() if k in _TERMS})
    deal = Deal(
        order_id=oid,
        provider_id=str(terms["provider_id"]),
        meter_id=f"M-{provider}",
        window_start=terms["window_start"],  # type: ignore[arg-type]
        window_end=terms["window_end"],  # type: ignore[arg-type]
        power_kw=float(terms["contracted_kw"]),  # type: ignore[arg-type]
        price_gbp_per_mwh=float(terms["price_gbp_per_mwh"]),  # type: ignore[arg-type]
        settlement_method=str(terms["settlement_method"]),
        confirmed_at=terms["confirmed_at"],  # type: ignore[arg-type]
        transaction_id=f"txn-{oid}",
    )
    confirm, on_confirm = signed_pair(deal, party(BAP), mutate_on_confirm=mutate)
    extra = {k: v for k, v in over.items() if k not in _TERMS}
    return order_request(confirm, on_confirm, **{"supplier_id": SUP, **extra})  # type: ignore[arg-type]


def assert_refused(
    client: TestClient,
    conn: psycopg.Connection,
    method: str,
    path: str,
    headers: dict[str, str],
    status: int,
    code: str | None = None,
    **kwargs: object,
) -> dict:
    before = snapshot(conn)
    r = client.request(method, path, headers=headers, **kwargs)
    assert r.status_code == status, r.text
    body = r.json()
    assert "error" in body and body["error"]["message"]
    if code:
        assert body["error"]["code"] == code, body
    assert snapshot(conn) == before, "a refused request changed the ledger"
    return body


def test_authentication_required(client: TestClient, conn: psycopg.Connection) -> None:
    assert_refused(client, conn, "GET", f"/api/v1/accounts/{acct.provider_revenue(P1)}", {}, 401, "unauthorized")
    assert_refused(
        client,
        conn,
        "GET",
        f"/api/v1/accounts/{acct.provider_revenue(P1)}",
        {"Authorization": "Bearer flk_nope_nope"},
        401,
    )


def test_orders_roles_idempotency_and_bad_input(client: TestClient, keys: dict, conn: psycopg.Connection) -> None:
    oid = f"o-{uuid.uuid4().hex[:8]}"
    body = order_body(oid)
    r = client.post("/api/v1/orders", json=body, headers=keys["bap"])
    assert r.status_code == 201, r.text
    assert r.json()["reserve_pence"] == 7822  # 0.2505 MWh × £312.25 = 7821.8625p → 7822
    assert client.post("/api/v1/orders", json=body, headers=keys["bap"]).status_code == 200  # a duplicate callback
    # the same order re-registered with other terms (the platform signed other kW): refused
    assert_refused(
        client,
        conn,
        "POST",
        "/api/v1/orders",
        keys["bap"],
        409,
        "order_conflict",
        json=order_body(oid, contracted_kw=300),
    )
    assert_refused(client, conn, "POST", "/api/v1/orders", keys["p1"], 403, json=order_body("o-x" + oid))

    def measure(value: str) -> Mutate:
        def edit(payload: dict) -> None:
            payload["message"]["order"]["items"][0]["quantity"]["selected"]["measure"]["value"] = value

        return edit

    def method(payload: dict) -> None:
        payload["message"]["order"]["payments"][0]["tags"][0]["list"][0]["value"] = "BARTER"

    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    bad: list[tuple[dict, str]] = [
        ({"mutate": measure("1.2345")}, "quantity_invalid"),  # more decimals than W
        ({"mutate": measure("-5")}, "message_invalid"),
        ({"window_start": window()[0].replace(minute=10)}, "window_invalid"),
        ({"mutate": method}, "message_invalid"),
        ({"policy_version": "nope"}, "unknown_policy"),
        ({"provider_id": "bad:id"}, "id_invalid"),
        ({"confirmed_at": datetime.now(UTC) + timedelta(days=1)}, "confirmed_in_future"),
        ({"window_start": hour, "window_end": hour + timedelta(hours=1)}, "after_gate_closure"),
        ({"supplier_id": "x" * 201}, "invalid_request"),
        ({"contracted_kw": 300, "unknown_field": 1}, "invalid_request"),  # a term beside the messages
    ]
    for over, code in bad:
        assert_refused(
            client,
            conn,
            "POST",
            "/api/v1/orders",
            keys["bap"],
            400 if code in ("invalid_request", "message_invalid") else 422,  # unreadable input: 400 naming the field
            code,
            json=order_body(f"o-{uuid.uuid4().hex[:8]}", **over),  # type: ignore[arg-type]
        )
    r = client.post("/api/v1/orders", content=b"{not json", headers={**keys["bap"], "content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"
    # readers: the order's BAP and provider and finance; not another provider
    assert client.get(f"/api/v1/orders/{oid}", headers=keys["p1"]).status_code == 200
    assert client.get(f"/api/v1/orders/{oid}", headers=keys["finance"]).status_code == 200
    assert client.get(f"/api/v1/orders/{oid}", headers=keys["p2"]).status_code == 403


def test_metering_by_provider_key(client: TestClient, keys: dict, conn: psycopg.Connection) -> None:
    past = (datetime.now(UTC) - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    body = {
        "meter_id": f"M-{P2}",
        "readings": [
            {"period_start": past.isoformat(), "energy_kwh": "120.125"},
            {"period_start": (past + timedelta(minutes=30)).isoformat(), "energy_kwh": 119},
        ],
    }
    r = client.post("/api/v1/metering", json=body, headers=keys["p2"])
    assert r.status_code == 201 and r.json()["accepted"] == 2
    assert_refused(client, conn, "POST", "/api/v1/metering", keys["p2"], 409, "duplicate_readings", json=body)
    assert_refused(client, conn, "POST", "/api/v1/metering", keys["p1"], 403, json={**body, "correction": True})
    assert_refused(client, conn, "POST", "/api/v1/metering", keys["finance"], 403, json=body)
    future = {
        "meter_id": f"M-{P2}",
        "readings": [{"period_start": (past + timedelta(days=1)).isoformat(), "energy_kwh": 1}],
    }
    assert_refused(client, conn, "POST", "/api/v1/metering", keys["p2"], 422, "malformed_readings", json=future)
    frac = {"meter_id": f"M-{P2}", "readings": [{"period_start": past.isoformat(), "energy_kwh": "1.0005"}]}
    assert_refused(client, conn, "POST", "/api/v1/metering", keys["p2"], 422, "invalid_value", json=frac)


def test_transfers_idempotency_and_every_bad_input(client: TestClient, keys: dict, conn: psycopg.Connection) -> None:
    cash, rev = acct.bap_cash(BAP), acct.provider_revenue(P1)
    for name in (cash, rev, acct.provider_revenue(P2)):
        client.post("/api/v1/accounts", json={"name": name}, headers=keys["admin"])
    tid = f"adj-{uuid.uuid4().hex[:8]}"
    body = {"id": tid, "ledger": "GBP", "debit_account": cash, "credit_account": rev, "amount": 1234, "memo": "x"}
    r = client.post("/api/v1/transfers", json=body, headers=keys["finance"])
    assert r.status_code == 201 and r.json()["transfers"][0]["amount"] == 1234
    r2 = client.post("/api/v1/transfers", json=body, headers=keys["finance"])
    assert r2.status_code == 200 and r2.json()["status"] == "exists" and r2.json()["transfers"] == r.json()["transfers"]
    assert_refused(
        client, conn, "POST", "/api/v1/transfers", keys["finance"], 409, "id_conflict", json={**body, "amount": 1235}
    )
    cases = [
        ({"amount": 0}, 422, "amount_not_positive"),
        ({"amount": -7}, 422, "amount_not_positive"),
        ({"amount": 1.5}, 400, "invalid_request"),
        ({"amount": "12"}, 400, "invalid_request"),
        ({"credit_account": "provider:ghost:revenue"}, 422, "unknown_account"),
        ({"credit_account": "nonsense"}, 422, "unknown_account"),
        ({"credit_account": acct.holding(P1, "s")}, 422, "unknown_account"),
        ({"ledger": "CFT:s"}, 422, "ledger_not_allowed"),
        ({"debit_account": rev, "credit_account": cash, "amount": 10**12}, 409, "exceeds_credits"),  # overdraft
        ({"id": "settle:fake"}, 422, "id_reserved"),
        ({"surprise": 1}, 400, "invalid_request"),
    ]
    for over, status, code in cases:
        assert_refused(
            client,
            conn,
            "POST",
            "/api/v1/transfers",
            keys["finance"],
            status,
            code,
            json={**body, "id": f"bad-{uuid.uuid4().hex[:8]}", **over},
        )
    assert_refused(client, conn, "POST", "/api/v1/transfers", keys["p1"], 403, json={**body, "id": "p1-try"})
    # ledger mismatch: a GBP account against a token account (created with a series)
    now = datetime.now(UTC)
    sid = f"s-{uuid.uuid4().hex[:6]}"
    client.post(
        "/api/v1/cft/series",
        headers=keys["p1"],
        json={
            "series_id": sid,
            "provider_id": P1,
            "valid_from": now.isoformat(),
            "valid_to": (now + timedelta(days=2)).isoformat(),
            "declared_capacity_kw": "100",
        },
    )
    assert_refused(
        client,
        conn,
        "POST",
        "/api/v1/transfers",
        keys["finance"],
        422,
        "ledger_mismatch",
        json={**body, "id": f"lm-{uuid.uuid4().hex[:6]}", "credit_account": acct.holding(P1, sid)},
    )
    # linked batch: the second transfer overdraws, so neither happens
    batch = {
        "transfers": [
            {**body, "id": f"b1-{uuid.uuid4().hex[:6]}", "amount": 5},
            {
                **body,
                "id": f"b2-{uuid.uuid4().hex[:6]}",
                "debit_account": rev,
                "credit_account": cash,
                "amount": 10**12,
            },
        ]
    }
    assert_refused(client, conn, "POST", "/api/v1/transfers/batch", keys["finance"], 409, "exceeds_credits", json=batch)
    # two-phase over HTTP
    pid = f"hold-{uuid.uuid4().hex[:6]}"
    assert (
        client.post(
            "/api/v1/transfers",
            headers=keys["finance"],
            json={
                **body,
                "id": pid,
                "kind": "pending",
                "amount": 500,
                "expires_at": (now + timedelta(hours=1)).isoformat(),
            },
        ).status_code
        == 201
    )
    assert (
        client.post(
            "/api/v1/transfers",
            headers=keys["finance"],
            json={"id": f"{pid}-post", "kind": "post", "pending_id": pid, "amount": 200},
        ).status_code
        == 201
    )
    assert_refused(
        client,
        conn,
        "POST",
        "/api/v1/transfers",
        keys["finance"],
        409,
        "pending_already_resolved",
        json={"id": f"{pid}-void", "kind": "void", "pending_id": pid},
    )


def test_cft_refusals_over_http(client: TestClient, keys: dict, conn: psycopg.Connection) -> None:
    now = datetime.now(UTC)
    sid = f"s-{uuid.uuid4().hex[:6]}"
    r = client.post(
        "/api/v1/cft/series",
        headers=keys["p1"],
        json={
            "series_id": sid,
            "provider_id": P1,
            "valid_from": now.isoformat(),
            "valid_to": (now + timedelta(days=2)).isoformat(),
            "declared_capacity_kw": "100",
        },
    )
    assert r.status_code == 201 and r.json()["max_tokens"] == 4  # 100 kW × 48 h
    assert_refused(
        client,
        conn,
        "POST",
        "/api/v1/cft/series",
        keys["p2"],
        403,
        json={
            "series_id": sid + "x",
            "provider_id": P1,
            "valid_from": now.isoformat(),
            "valid_to": (now + timedelta(days=2)).isoformat(),
            "declared_capacity_kw": "100",
        },
    )
    assert (
        client.post(
            "/api/v1/cft/mint", headers=keys["p1"], json={"id": f"m-{sid}", "series_id": sid, "tokens": 4}
        ).status_code
        == 201
    )
    assert_refused(
        client,
        conn,
        "POST",
        "/api/v1/cft/mint",
        keys["p1"],
        409,
        "exceeds_capacity",
        json={"id": f"m2-{sid}", "series_id": sid, "tokens": 1},
    )
    assert_refused(
        client,
        conn,
        "POST",
        "/api/v1/cft/mint",
        keys["p1"],
        400,
        "invalid_request",
        json={"id": f"m3-{sid}", "series_id": sid, "tokens": 0},
    )
    assert (
        client.post(
            "/api/v1/cft/sell",
            headers=keys["p1"],
            json={
                "id": f"sell-{sid}",
                "series_id": sid,
                "buyer_id": BAP,
                "tokens": 2,
                "price_gbp": "600.00",
                "confirm": wire(token_confirm(party(BAP), provider_id=P1, series_id=sid, tokens=2, price_gbp="600.00")),
            },
        ).status_code
        == 201
    )
    start = (now + timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    redeem = {
        "id": f"r-{sid}",
        "series_id": sid,
        "holder_id": BAP,
        "tokens": 2,
        "period_start": start.isoformat(),
        "period_end": (start + timedelta(hours=1)).isoformat(),
        "meter_id": f"M-{P1}",
        "supplier_id": SUP,
    }
    assert client.post("/api/v1/cft/redeem", headers=keys["bap"], json=redeem).status_code == 201
    assert client.post("/api/v1/cft/redeem", headers=keys["bap"], json=redeem).status_code == 200  # retry
    assert_refused(
        client,
        conn,
        "POST",
        "/api/v1/cft/redeem",
        keys["bap"],
        409,
        "insufficient_tokens",
        json={**redeem, "id": f"r2-{sid}"},
    )  # double redemption under a new id
    assert_refused(client, conn, "POST", "/api/v1/cft/redeem", keys["p2"], 403, json={**redeem, "id": f"r3-{sid}"})
    info = client.get(f"/api/v1/cft/series/{sid}", headers=keys["p1"]).json()
    assert info["provider_invariant"]["holds"] and info["provider_invariant"]["redeemed"] == 2


def test_statement_access_both_ways_and_offline_verification(
    client: TestClient, keys: dict, conn: psycopg.Connection
) -> None:
    cash, rev1, rev2 = acct.bap_cash(BAP), acct.provider_revenue(P1), acct.provider_revenue(P2)
    for name in (cash, rev1, rev2):
        client.post("/api/v1/accounts", json={"name": name}, headers=keys["admin"])
    t0 = datetime.now(UTC) - timedelta(seconds=1)
    for i, (acc, amount) in enumerate([(rev1, 100), (rev2, 200), (rev1, 300)]):
        assert client.post(
            "/api/v1/transfers",
            headers=keys["finance"],
            json={
                "id": f"st-{TAG}-{i}",
                "ledger": "GBP",
                "debit_account": cash,
                "credit_account": acc,
                "amount": amount,
            },
        ).status_code in (200, 201)
    t1 = datetime.now(UTC) + timedelta(seconds=1)
    q = {"from": t0.isoformat(), "to": t1.isoformat()}
    # a provider reads its own accounts and nobody else's; finance reads all
    r = client.get(f"/api/v1/statements/{rev1}", params=q, headers=keys["p1"])
    assert r.status_code == 200, r.text
    assert client.get(f"/api/v1/statements/{rev2}", params=q, headers=keys["p1"]).status_code == 403
    assert client.get(f"/api/v1/statements/{rev2}", params=q, headers=keys["p2"]).status_code == 200
    assert client.get(f"/api/v1/statements/{cash}", params=q, headers=keys["p1"]).status_code == 403
    assert client.get(f"/api/v1/statements/{rev2}", params=q, headers=keys["finance"]).status_code == 200
    assert client.get(f"/api/v1/balances/{rev2}", headers=keys["p1"]).status_code == 403
    assert client.get(f"/api/v1/balances/{rev1}", headers=keys["p1"]).json()["balance"] >= 400
    assert client.get(f"/api/v1/accounts/{rev1}", headers=keys["p2"]).status_code == 403

    doc = r.json()
    mine = [e for e in doc["entries"] if e["id"].startswith(f"st-{TAG}")]
    assert [e["amount"] for e in mine] == [100, 300]
    assert doc["closing_balance"] == doc["opening_balance"] + sum(e["posted_delta"] for e in doc["entries"])
    public = client.get("/api/v1/checkpoints/public-key").json()["public_key_b64"]
    assert verify_statement(doc, public).ok
    # tampering with the statement is detected offline
    bad = copy.deepcopy(doc)
    bad["entries"][-1]["amount"] += 1
    assert not verify_statement(bad, public).ok
    bad = copy.deepcopy(doc)
    bad["closing_balance"] += 1
    assert not verify_statement(bad, public).ok
    csv_text = client.get(f"/api/v1/statements/{rev1}", params={**q, "format": "csv"}, headers=keys["p1"]).text
    assert csv_text.startswith("record,time") and "opening" in csv_text and "checkpoint" in csv_text
    assert verify_statement(statement_from_csv(csv_text), public).ok
    # balance as of an instant before the first transfer excludes it
    before = client.get(f"/api/v1/balances/{rev1}", params={"as_of": t0.isoformat()}, headers=keys["p1"]).json()
    now_bal = client.get(f"/api/v1/balances/{rev1}", headers=keys["p1"]).json()
    assert now_bal["balance"] - before["balance"] >= 400


def test_settlement_checkpoint_and_verify_endpoints(client: TestClient, keys: dict, conn: psycopg.Connection) -> None:
    assert client.post("/api/v1/settlement/run", json={}, headers=keys["p1"]).status_code == 403
    assert_refused(
        client,
        conn,
        "POST",
        "/api/v1/settlement/run",
        keys["finance"],
        422,
        "as_of_in_future",
        json={"as_of": (datetime.now(UTC) + timedelta(days=1)).isoformat()},
    )
    assert client.post("/api/v1/settlement/run", json={}, headers=keys["finance"]).status_code == 200
    cp = client.post("/api/v1/checkpoints", headers=keys["finance"])
    assert cp.status_code == 201
    assert client.get("/api/v1/checkpoints/latest").json()["message"]["height"] == cp.json()["message"]["height"]
    v = client.get("/api/v1/verify", headers=keys["finance"]).json()
    assert v["ok"], v
    assert client.get("/api/v1/verify", headers=keys["bap"]).status_code == 200  # a buyer may check the chain
    assert client.get("/api/v1/verify", headers=keys["p1"]).status_code == 403
    key = client.post("/api/v1/apikeys", json={"role": "supplier", "participant_id": SUP}, headers=keys["admin"])
    assert key.status_code == 201
    sup = {"Authorization": f"Bearer {key.json()['api_key']}"}
    assert client.get(f"/api/v1/balances/{acct.supplier_compensation(SUP)}", headers=sup).status_code in (200, 404)
    assert client.get(f"/api/v1/balances/{acct.provider_revenue(P1)}", headers=sup).status_code == 403
