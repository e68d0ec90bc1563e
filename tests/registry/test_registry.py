"""Registry over HTTP (in-process ASGI, real PostgreSQL): subscribe with proof of key possession,
operator approval, key rotation, lookup filters; and operator onboarding through the CLI."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from beckn import envelope, signing
from beckn.keys import KeyPair
from kernel.config import reset_settings


@pytest.fixture()
def client(isolated_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("FLEXMARKET_HOME", str(tmp_path))
    monkeypatch.setenv("FLEXMARKET_REGISTRY_OPERATOR_TOKEN", "op-secret")
    reset_settings()
    from registry.main import create_app

    with TestClient(create_app()) as c:
        yield c


OP = {"X-Operator-Token": "op-secret"}


def subscription(sid: str, pair: KeyPair, city: str = "GB-R13", type: str = "BPP", **extra: object) -> dict:
    return {
        "subscriber_id": sid,
        "url": f"http://127.0.0.1:9/{sid}",
        "type": type,
        "domain": "deg:flexibility",
        "location": {"city": {"code": city}, "country": {"code": "GBR"}},
        "key_id": pair.unique_key_id,
        "signing_public_key": pair.signing_public_key_b64,
        "encr_public_key": pair.encryption_public_key_b64,
        "nonce": str(uuid.uuid4()),
        **extra,
    }


def post_signed(client: TestClient, body: dict, signer: KeyPair, sid: str, **headers: str):  # type: ignore[no-untyped-def]
    raw = envelope.dumps(body)
    auth = signing.authorization_header(raw, signer.signing_private_key, sid, signer.unique_key_id)
    return client.post(
        "/subscribe", content=raw, headers={"Authorization": auth, "Content-Type": "application/json", **headers}
    )


def lookup(client: TestClient, **filters: object) -> list[dict]:
    r = client.post("/lookup", json=filters)
    assert r.status_code == 200, r.text
    return r.json()


def test_subscribe_waits_for_operator_then_is_listed(client: TestClient) -> None:
    pair = KeyPair.generate()
    r = post_signed(client, subscription("dc-a.example", pair), pair, "dc-a.example")
    assert r.json() == {"status": "UNDER_SUBSCRIPTION"}
    assert lookup(client, subscriber_id="dc-a.example", status="SUBSCRIBED") == []
    assert lookup(client, subscriber_id="dc-a.example")[0]["status"] == "UNDER_SUBSCRIPTION"
    assert client.post("/admin/subscribers/dc-a.example/approve").status_code == 401
    assert (
        client.post("/admin/subscribers/dc-a.example/approve", headers={"Authorization": "Bearer wrong"}).status_code
        == 401
    )
    r = client.post("/admin/subscribers/dc-a.example/approve", headers={"Authorization": "Bearer op-secret"})
    assert r.json()["status"] == "SUBSCRIBED"
    [row] = lookup(client, subscriber_id="dc-a.example", status="SUBSCRIBED")
    assert row["signing_public_key"] == pair.signing_public_key_b64
    assert row["key_id"] == row["unique_key_id"] == pair.unique_key_id


def test_operator_token_subscribes_at_once(client: TestClient) -> None:
    pair = KeyPair.generate()
    r = post_signed(client, subscription("dc-b.example", pair), pair, "dc-b.example", **OP)
    assert r.json() == {"status": "SUBSCRIBED"}


def test_rotation_signed_by_current_key_is_approved_and_both_keys_listed(client: TestClient) -> None:
    old, new = KeyPair.generate(), KeyPair.generate()
    post_signed(client, subscription("dc-c.example", old), old, "dc-c.example", **OP)
    r = post_signed(client, subscription("dc-c.example", new), old, "dc-c.example")
    assert r.json() == {"status": "SUBSCRIBED"}
    keys = {row["key_id"] for row in lookup(client, subscriber_id="dc-c.example", status="SUBSCRIBED")}
    assert keys == {old.unique_key_id, new.unique_key_id}
    # A new key signed by a stranger's key is refused.
    stranger = KeyPair.generate()
    r = post_signed(client, subscription("dc-c.example", KeyPair.generate()), stranger, "dc-c.example")
    assert r.status_code == 401


@pytest.mark.parametrize("case", ["unsigned", "wrong_signature", "other_subscriber", "bad_key", "missing_city"])
def test_bad_subscriptions_refused_and_nothing_written(client: TestClient, case: str) -> None:
    pair = KeyPair.generate()
    body = subscription("dc-bad.example", pair)
    if case == "unsigned":
        r = client.post("/subscribe", json=body)
        assert r.status_code == 401
    elif case == "wrong_signature":
        r = post_signed(client, body, KeyPair.generate(), "dc-bad.example")
        assert r.status_code == 401
    elif case == "other_subscriber":
        r = post_signed(client, body, pair, "someone-else.example")
        assert r.status_code == 401
    elif case == "bad_key":
        body["signing_public_key"] = "bm90IGEga2V5"
        r = post_signed(client, body, pair, "dc-bad.example")
        assert r.status_code in (400, 401)
    else:
        body["location"] = {"country": {"code": "GBR"}}
        r = post_signed(client, body, pair, "dc-bad.example")
        assert r.status_code == 400
    assert r.json()["error"]["message"]
    assert lookup(client, subscriber_id="dc-bad.example") == []


def test_lookup_filters(client: TestClient) -> None:
    for sid, city, type in [
        ("l1.example", "GB-R13", "BPP"),
        ("l2.example", "GB-R1", "BPP"),
        ("l3.example", "GB-R13", "BAP"),
    ]:
        pair = KeyPair.generate()
        post_signed(client, subscription(sid, pair, city, type), pair, sid, **OP)
    got = {
        r["subscriber_id"]
        for r in lookup(
            client,
            type="BPP",
            domain="deg:flexibility",
            location={"city": {"code": "GB-R13"}, "country": {"code": "GBR"}},
        )
    }
    assert got == {"l1.example"}
    assert {r["subscriber_id"] for r in lookup(client, city="GB-R1")} == {"l2.example"}
    assert {r["subscriber_id"] for r in lookup(client, type="BAP")} == {"l3.example"}
    assert lookup(client, domain="retail") == []
    assert client.post("/lookup", content=b"nope", headers={"Content-Type": "application/json"}).status_code == 400


def test_expired_key_is_not_valid_for_verification(client: TestClient) -> None:
    from beckn.registry_client import _parse_time

    pair = KeyPair.generate()
    now = datetime.now(UTC)
    body = subscription(
        "dc-old.example",
        pair,
        valid_from=(now - timedelta(days=10)).isoformat(),
        valid_until=(now - timedelta(days=1)).isoformat(),
    )
    post_signed(client, body, pair, "dc-old.example", **OP)
    [row] = lookup(client, subscriber_id="dc-old.example")
    assert _parse_time(row["valid_until"]) < now


def test_cli_registry_add_and_list(isolated_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEXMARKET_HOME", str(tmp_path))
    reset_settings()
    from flexmarket.cli import app

    pair = KeyPair.generate()
    runner = CliRunner(env={"COLUMNS": "250"})
    r = runner.invoke(
        app,
        [
            "registry",
            "add",
            "--subscriber-id",
            "dc-cli.example",
            "--type",
            "BPP",
            "--url",
            "http://127.0.0.1:9/dc",
            "--signing-public-key",
            pair.signing_public_key_b64,
            "--domain",
            "deg:flexibility",
            "--city",
            "GB-R13",
            "--city",
            "GB-R12",
        ],
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app,
        [
            "registry",
            "add",
            "--subscriber-id",
            "dc-cli2.example",
            "--type",
            "XYZ",
            "--url",
            "http://127.0.0.1:9/dc",
            "--signing-public-key",
            pair.signing_public_key_b64,
        ],
    )
    assert r.exit_code == 2 and "type must be" in r.output
    from kernel.db import session_scope
    from registry import service
    from schemas.registry import LookupRequest

    with session_scope("registry") as s:
        rows = service.lookup(s, LookupRequest(subscriber_id="dc-cli.example", status="SUBSCRIBED"))
        assert {r["location"]["city"]["code"] for r in rows} == {"GB-R13", "GB-R12"}
        assert service.lookup(s, LookupRequest(subscriber_id="dc-cli2.example")) == []
    r = runner.invoke(app, ["registry", "list"])
    assert r.exit_code == 0 and "dc-cli.example" in r.output
