"""The meter-data role over HTTP: a meter operator registers Ed25519 keys and posts signed readings; a reading
signed with a wrong key, altered after signing, signed with a key that is not registered (or not its own, or
revoked) is refused and nothing is stored; providers' own readings stay `self_reported`; signed kWh (exports)."""

from __future__ import annotations

import base64
import copy
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from beckn.keys import public_key_b64
from ledger.meter_data import READINGS_FORMAT, sign_readings
from tests.ledger.helpers import bearer_keys, snapshot

TAG = uuid.uuid4().hex[:6]
PROVIDER, OPERATOR, OTHER_OPERATOR = f"dc-{TAG}", f"mo-{TAG}", f"mo2-{TAG}"
METER = f"M-{TAG}"
README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def keys(ledger_url: str) -> dict[str, dict[str, str]]:
    return bearer_keys(
        ledger_url,
        admin=("admin", None),
        provider=("provider", PROVIDER),
        operator=("meter_operator", OPERATOR),
        other_operator=("meter_operator", OTHER_OPERATOR),
    )


@pytest.fixture(scope="module")
def signing_key(client: TestClient, keys: dict[str, dict[str, str]]) -> tuple[str, Ed25519PrivateKey]:
    key = Ed25519PrivateKey.generate()
    r = client.post("/api/v1/meter-data-keys", json={"public_key": public_key_b64(key)}, headers=keys["operator"])
    assert r.status_code == 201, r.text
    assert r.json()["participant_id"] == OPERATOR and r.json()["revoked_at"] is None
    return r.json()["key_id"], key


def past_period(hours: int = 5) -> datetime:
    return (datetime.now(UTC) - timedelta(hours=hours)).replace(minute=0, second=0, microsecond=0)


def payload(energy_kwh: str = "12.5", hours: int = 5, meter: str = METER) -> dict[str, Any]:
    return {
        "format": READINGS_FORMAT,
        "meter_id": meter,
        "correction": False,
        "readings": [{"period_start": past_period(hours).isoformat(), "energy_kwh": energy_kwh}],
    }


def signed(body: dict[str, Any], key_id: str, key: Ed25519PrivateKey) -> dict[str, Any]:
    return {"payload": body, "key_id": key_id, "signature": sign_readings(body, key)}


def refused(
    client: TestClient, conn: psycopg.Connection, headers: dict[str, str], body: Any, status: int, code: str, field: str
) -> None:
    before = snapshot(conn)
    r = client.post("/api/v1/metering/signed", json=body, headers=headers)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and field in error["message"], error
    assert snapshot(conn) == before  # nothing stored


def provider_reading(client: TestClient, keys: dict[str, dict[str, str]], hours: int, energy_kwh: str) -> None:
    body = {"meter_id": METER, "readings": [{"period_start": past_period(hours).isoformat(), "energy_kwh": energy_kwh}]}
    r = client.post("/api/v1/metering", json=body, headers=keys["provider"])
    assert r.status_code == 201 and r.json()["reading_kind"] == "self_reported", r.text


def test_signed_readings_are_stored_beside_the_providers_own(
    client: TestClient, keys: dict[str, dict[str, str]], conn: psycopg.Connection, signing_key: tuple[str, Any]
) -> None:
    key_id, key = signing_key
    provider_reading(client, keys, 5, "20")  # the provider registers its meter and claims 20 kWh
    body = signed(payload("12.5"), key_id, key)
    r = client.post("/api/v1/metering/signed", json=body, headers=keys["operator"])
    assert r.status_code == 201, r.text
    assert (r.json()["reading_kind"], r.json()["accepted"]) == ("meter_operator", 1)
    rows = conn.execute(
        "SELECT reading_kind, version, energy_wh, signer_key_id, signature, source FROM ledger.metering "
        "WHERE meter_id = %s AND period_start = %s ORDER BY reading_kind",
        (METER, past_period(5)),
    ).fetchall()
    conn.rollback()
    assert [r[:4] for r in rows] == [("meter_operator", 1, 12_500, key_id), ("self_reported", 1, 20_000, None)]
    assert bytes(rows[0][4]) == base64.b64decode(body["signature"]) and rows[0][5] == f"meter_operator:{key_id}"
    # the same signed post again is a duplicate within its source; a signed correction is a new version
    refused(client, conn, keys["operator"], body, 409, "duplicate_readings", "already recorded as meter_operator")
    fix = signed({**payload("13"), "correction": True}, key_id, key)
    assert client.post("/api/v1/metering/signed", json=fix, headers=keys["operator"]).json()["corrections"] == 1
    listed = client.get("/api/v1/meter-data-keys", headers=keys["operator"]).json()["keys"]
    assert [k["key_id"] for k in listed] == [key_id]


def test_forged_altered_or_unregistered_signatures_are_refused(
    client: TestClient, keys: dict[str, dict[str, str]], conn: psycopg.Connection, signing_key: tuple[str, Any]
) -> None:
    key_id, key = signing_key
    provider_reading(client, keys, 6, "20")
    good = signed(payload("9", hours=6), key_id, key)
    wrong_key = signed(payload("9", hours=6), key_id, Ed25519PrivateKey.generate())
    refused(client, conn, keys["operator"], wrong_key, 403, "signature_invalid", "signature")
    altered = copy.deepcopy(good)
    altered["payload"]["readings"][0]["energy_kwh"] = "0"  # the provider (or anyone on the path) edits it
    refused(client, conn, keys["operator"], altered, 403, "signature_invalid", "signature")
    refused(client, conn, keys["operator"], {**good, "key_id": "mdk-0000000000000000"}, 403, "key_unknown", "key_id")
    refused(client, conn, keys["other_operator"], good, 403, "forbidden", "key_id")  # not its key
    refused(client, conn, keys["operator"], {**good, "signature": "not base64!"}, 422, "signature_invalid", "signature")
    refused(client, conn, keys["provider"], good, 403, "role_forbidden", "meter_operator")
    unformatted = {k: v for k, v in payload("9", hours=6).items() if k != "format"}
    refused(client, conn, keys["operator"], signed(unformatted, key_id, key), 422, "payload_invalid", "payload.format")
    unknown_meter = signed(payload("9", hours=6, meter=f"M-nobody-{TAG}"), key_id, key)
    refused(client, conn, keys["operator"], unknown_meter, 404, "unknown_meter", "meter_id")
    too_much = signed(payload("500000.001", hours=6), key_id, key)  # a valid signature over an invalid payload
    refused(client, conn, keys["operator"], too_much, 400, "invalid_request", "payload.readings.0.energy_kwh")
    future = signed(payload("9", hours=-2), key_id, key)
    refused(client, conn, keys["operator"], future, 422, "malformed_readings", "has not ended")
    # a meter operator's key does not post unsigned readings
    unsigned = {"meter_id": METER, "readings": good["payload"]["readings"]}
    r = client.post("/api/v1/metering", json=unsigned, headers=keys["operator"])
    assert r.status_code == 403 and "signed" in r.json()["error"]["message"]
    assert client.post("/api/v1/metering/signed", json=good, headers=keys["operator"]).status_code == 201


def test_key_rotation_and_revocation(
    client: TestClient, keys: dict[str, dict[str, str]], conn: psycopg.Connection
) -> None:
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    made = [
        client.post("/api/v1/meter-data-keys", json={"public_key": public_key_b64(k)}, headers=keys["other_operator"])
        for k in (old, new)
    ]
    old_id, new_id = (m.json()["key_id"] for m in made)
    assert client.post(f"/api/v1/meter-data-keys/{old_id}/revoke", headers=keys["operator"]).status_code == 403
    r = client.post(f"/api/v1/meter-data-keys/{old_id}/revoke", headers=keys["other_operator"])
    assert r.status_code == 200 and r.json()["revoked_at"] is not None
    assert client.post(f"/api/v1/meter-data-keys/{old_id}/revoke", headers=keys["admin"]).status_code == 409
    provider_reading(client, keys, 7, "20")
    refused(client, conn, keys["other_operator"], signed(payload(hours=7), old_id, old), 403, "key_revoked", "key_id")
    ok = client.post(
        "/api/v1/metering/signed", json=signed(payload(hours=7), new_id, new), headers=keys["other_operator"]
    )
    assert ok.status_code == 201, ok.text


@pytest.mark.parametrize(
    ("headers", "body", "status", "field"),
    [
        ("operator", {"public_key": "AAAA"}, 422, "public_key"),  # 3 bytes, not 32
        ("operator", {"public_key": "%%%"}, 422, "public_key"),
        ("operator", {"public_key": public_key_b64(Ed25519PrivateKey.generate()), "participant_id": "x"}, 403, ""),
        ("provider", {"public_key": public_key_b64(Ed25519PrivateKey.generate())}, 403, "meter_operator"),
        ("admin", {"public_key": public_key_b64(Ed25519PrivateKey.generate())}, 422, "participant_id"),
    ],
)
def test_key_registration_refusals(
    client: TestClient, keys: dict[str, dict[str, str]], headers: str, body: dict[str, str], status: int, field: str
) -> None:
    r = client.post("/api/v1/meter-data-keys", json=body, headers=keys[headers])
    assert r.status_code == status and field in r.json()["error"]["message"], r.text


def test_a_key_is_registered_once(client: TestClient, keys: dict[str, dict[str, str]]) -> None:
    body = {"public_key": public_key_b64(Ed25519PrivateKey.generate())}
    assert client.post("/api/v1/meter-data-keys", json=body, headers=keys["operator"]).status_code == 201
    again = client.post("/api/v1/meter-data-keys", json=body, headers=keys["other_operator"])
    assert again.status_code == 409 and again.json()["error"]["code"] == "public_key_registered"


def test_net_export_is_signed_kwh(
    client: TestClient, keys: dict[str, dict[str, str]], conn: psycopg.Connection
) -> None:
    provider_reading(client, keys, 8, "-12.5")  # a battery discharging beyond the site's load
    stored = conn.execute(
        "SELECT energy_wh FROM ledger.metering WHERE meter_id = %s AND period_start = %s", (METER, past_period(8))
    ).fetchone()
    conn.rollback()
    assert stored == (-12_500,)
    body = {"meter_id": METER, "readings": [{"period_start": past_period(9).isoformat(), "energy_kwh": "-500000.001"}]}
    r = client.post("/api/v1/metering", json=body, headers=keys["provider"])
    assert r.status_code == 400 and "energy_kwh" in r.json()["error"]["message"]


def test_the_readme_signed_readings_example_verifies(
    client: TestClient, keys: dict[str, dict[str, str]], conn: psycopg.Connection
) -> None:
    """The README's example request, signed with a fresh registered key, is accepted as it stands."""
    text = README.read_text()
    block = re.search(r"<!-- signed-readings-example -->\s*```json\n(.*?)```", text, re.DOTALL)
    assert block is not None, "README: the signed-readings example block is missing"
    example = json.loads(block.group(1))
    key = Ed25519PrivateKey.generate()
    r = client.post("/api/v1/meter-data-keys", json={"public_key": public_key_b64(key)}, headers=keys["operator"])
    meter, readings = example["payload"]["meter_id"], example["payload"]["readings"]
    first = {"meter_id": meter, "readings": readings}  # the provider names its meter first
    assert client.post("/api/v1/metering", json=first, headers=keys["provider"]).status_code in (201, 409)
    example |= {"key_id": r.json()["key_id"], "signature": sign_readings(example["payload"], key)}
    posted = client.post("/api/v1/metering/signed", json=example, headers=keys["operator"])
    assert posted.status_code == 201, posted.text
    assert posted.json()["reading_kind"] == "meter_operator"
