"""GET /api/v1/metering/{meter_id}: the reading per half hour that settlement would use (ledger/metering.py
`settled_readings`, the one rule settlement runs use too): a meter operator's reading beats a self-reported
one received later, within a kind the latest version wins, nothing received after `as_of` counts. A provider's
key reads only its own meters (403 otherwise), finance and admin any; an unknown meter is 404; `from`/`to`
must be aware, ordered and at most MAX_ROWS_PER_REQUEST half-hours apart (400 naming the field)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beckn.keys import public_key_b64
from ledger import meter_data, metering
from ledger.db import connect, in_transaction
from ledger.meter_data import READINGS_FORMAT, VerifiedSignature, sign_readings
from schemas import limits
from tests.ledger.helpers import bearer_keys

TAG = uuid.uuid4().hex[:6]
PROVIDER, OTHER, OPERATOR = f"dc-r-{TAG}", f"dc-o-{TAG}", f"mo-r-{TAG}"
METER = f"MR-{TAG}"


@pytest.fixture(scope="module")
def keys(ledger_url: str) -> dict[str, dict[str, str]]:
    return bearer_keys(
        ledger_url,
        admin=("admin", None),
        finance=("finance", None),
        provider=("provider", PROVIDER),
        other=("provider", OTHER),
        operator=("meter_operator", OPERATOR),
        bap=("bap", f"bap-{TAG}"),
    )


def _period(hours_ago: int) -> datetime:
    return (datetime.now(UTC) - timedelta(hours=hours_ago)).replace(minute=0, second=0, microsecond=0)


def _post_self(client: TestClient, headers: dict[str, str], at: datetime, kwh: str, correction: bool = False) -> None:
    body = {
        "meter_id": METER,
        "correction": correction,
        "readings": [{"period_start": at.isoformat(), "energy_kwh": kwh}],
    }
    r = client.post("/api/v1/metering", json=body, headers=headers)
    assert r.status_code == 201, r.text


def _post_signed(client: TestClient, keys: dict[str, dict[str, str]], at: datetime, kwh: str) -> None:
    key = Ed25519PrivateKey.generate()
    r = client.post("/api/v1/meter-data-keys", json={"public_key": public_key_b64(key)}, headers=keys["operator"])
    assert r.status_code == 201, r.text
    payload = {
        "format": READINGS_FORMAT,
        "meter_id": METER,
        "correction": False,
        "readings": [{"period_start": at.isoformat(), "energy_kwh": kwh}],
    }
    body = {"payload": payload, "key_id": r.json()["key_id"], "signature": sign_readings(payload, key)}
    r = client.post("/api/v1/metering/signed", json=body, headers=keys["operator"])
    assert r.status_code == 201, r.text


def _read(client: TestClient, headers: dict[str, str], start: datetime, end: datetime, meter: str = METER) -> Any:
    return client.get(
        f"/api/v1/metering/{meter}", params={"from": start.isoformat(), "to": end.isoformat()}, headers=headers
    )


def test_the_reading_settlement_uses_is_served_the_operators_first(
    client: TestClient, keys: dict[str, dict[str, str]]
) -> None:
    signed_at, corrected_at, plain_at = _period(8), _period(7), _period(6)
    _post_self(client, keys["provider"], plain_at, "40.5")  # registers the meter to PROVIDER
    _post_signed(client, keys, signed_at, "12.5")
    _post_self(client, keys["provider"], signed_at, "99")  # received later, but self-reported: it loses
    _post_self(client, keys["provider"], corrected_at, "20")
    _post_self(client, keys["provider"], corrected_at, "-3.25", correction=True)  # the latest version wins
    r = _read(client, keys["provider"], _period(9), _period(5))
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["meter_id"], body["provider_id"]) == (METER, PROVIDER)
    got = [(datetime.fromisoformat(x["period_start"]), x["energy_kwh"], x["kind"]) for x in body["readings"]]
    assert got == [
        (signed_at, "12.500", "meter_operator"),
        (corrected_at, "-3.250", "self_reported"),
        (plain_at, "40.500", "self_reported"),
    ]
    # [from, to): a window that ends where the signed period starts holds none of them
    assert _read(client, keys["provider"], _period(9), signed_at).json()["readings"] == []
    for reader in ("finance", "admin"):
        assert _read(client, keys[reader], _period(9), _period(5)).json() == body


def test_a_provider_reads_only_its_own_meters(client: TestClient, keys: dict[str, dict[str, str]]) -> None:
    _post_self(client, keys["provider"], _period(10), "1")
    r = _read(client, keys["other"], _period(11), _period(9))
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", r.text
    r = _read(client, keys["bap"], _period(11), _period(9))
    assert r.status_code == 403 and r.json()["error"]["code"] == "role_forbidden", r.text
    assert _read(client, keys["operator"], _period(11), _period(9)).status_code == 403
    assert _read(client, {}, _period(11), _period(9)).status_code == 401
    r = _read(client, keys["admin"], _period(11), _period(9), meter=f"nope-{TAG}")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", r.text


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "2026-01-01T00:00:00", "to": "2026-01-02T00:00:00Z"}, "from"),  # naive
        ({"from": "2026-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "to"),  # empty
        ({"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "to"),  # backwards
        ({"to": "2026-01-02T00:00:00Z"}, "from"),  # missing
    ],
)
def test_bad_ranges_are_refused_naming_the_field(
    client: TestClient, keys: dict[str, dict[str, str]], params: dict[str, str], field: str
) -> None:
    r = client.get(f"/api/v1/metering/{METER}", params=params, headers=keys["admin"])
    assert r.status_code == 400, r.text
    assert field in r.json()["error"]["message"], r.text


def test_at_most_max_rows_per_request_half_hours(client: TestClient, keys: dict[str, dict[str, str]]) -> None:
    _post_self(client, keys["provider"], _period(12), "2")
    end = _period(1)
    widest = end - timedelta(minutes=30) * limits.MAX_ROWS_PER_REQUEST
    assert _read(client, keys["provider"], widest, end).status_code == 200
    r = _read(client, keys["provider"], widest - timedelta(minutes=30), end)
    assert r.status_code == 400 and "to" in r.json()["error"]["message"], r.text


# Postings of one period: (kind, kWh) in the order they are received.
postings = st.lists(
    st.tuples(st.sampled_from(["self_reported", "meter_operator"]), st.integers(-5_000, 5_000)), min_size=1, max_size=6
)


@pytest.fixture(scope="module")
def operator_key_id(ledger_url: str) -> str:
    """A registered meter-operator key the stored signed readings name (the signature itself is not re-checked)."""
    with connect(ledger_url) as c:
        key = in_transaction(
            c, lambda t: meter_data.register_keypair(t, OPERATOR, Ed25519PrivateKey.generate(), now=datetime.now(UTC))
        )
    return str(key.key_id)


def _ingest(
    conn: psycopg.Connection,
    meter: str,
    reading: metering.Reading,
    origin: metering.ReadingOrigin,
    *,
    now: datetime,
    correction: bool,
) -> None:
    def store(c: psycopg.Connection) -> dict[str, Any]:
        return metering.ingest_metering(
            c, meter, [reading], provider_id=PROVIDER, now=now, correction=correction, origin=origin
        )

    in_transaction(conn, store)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=postings, cut=st.integers(0, 6))
def test_settlement_rule_over_any_sequence_of_postings(
    conn: psycopg.Connection, operator_key_id: str, sequence: list[tuple[str, int]], cut: int
) -> None:
    """Whatever was posted, in whatever order: the reading that counts as of any instant is the latest version of
    the meter operator's if it sent one by then, else the latest self-reported one (none: no reading)."""
    meter, at = f"MH-{uuid.uuid4().hex[:10]}", _period(3)
    base = datetime.now(UTC) - timedelta(minutes=10)
    in_transaction(conn, lambda c: metering.claim_meter(c, meter, PROVIDER))
    stored: list[tuple[str, int]] = []  # (kind, Wh) as stored, in the order received
    for i, (kind, wh) in enumerate(sequence):
        origin = metering.SELF_REPORTED if kind == "self_reported" else VerifiedSignature(operator_key_id, b"sig")
        mine = [v for k, v in stored if k == kind]
        value = wh + 1 if mine and mine[-1] == wh else wh  # a correction must change the value
        _ingest(
            conn, meter, metering.Reading(at, value), origin, now=base + timedelta(seconds=i), correction=bool(mine)
        )
        stored.append((kind, value))
    as_of = base + timedelta(seconds=cut - 1)  # postings 0 .. cut-1 were received by then
    known = dict(stored[:cut])  # kind → its latest value received by as_of
    want = next(((k, known[k]) for k in ("meter_operator", "self_reported") if k in known), None)
    got = metering.settled_readings(conn, meter, at, at + timedelta(minutes=30), as_of=as_of)
    conn.rollback()
    assert [(r.kind, r.energy_wh) for r in got] == ([] if want is None else [want])
