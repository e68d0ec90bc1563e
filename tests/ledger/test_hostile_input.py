"""Careless and hostile input at the ledger's edges (schemas/limits.py): the HTTP API answers a 4xx that
names the field — never a 500 — and writes nothing; the metering CSV import refuses the whole file naming
the line and column."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ledger.cli import ledger_app, metering_app
from ledger.db import connection
from schemas import limits
from tests.ledger.agreements import Deal, order_request, party, signed_pair
from tests.ledger.helpers import role_keys, snapshot

TAG = uuid.uuid4().hex[:6]
P1, BAP = f"dch-{TAG}", f"baph-{TAG}"


@pytest.fixture(scope="module")
def keys(ledger_url: str) -> dict[str, dict[str, str]]:
    return role_keys(ledger_url, providers=(P1,), baps=(BAP,))


def prices_count(conn: psycopg.Connection) -> int:
    n = conn.execute("SELECT count(*) FROM ledger.prices").fetchone()
    conn.rollback()
    return int(n[0]) if n else 0


def order(path: str = "", value: Any = None) -> dict[str, Any]:
    """POST /api/v1/orders whose on_confirm — signed by the platform, so only its content is hostile — has
    `value` at `path` (dot-separated keys and list indexes under message.order)."""
    start = (datetime.now(UTC) + timedelta(hours=30)).replace(minute=0, second=0, microsecond=0)
    deal = Deal(
        order_id=f"oh-{uuid.uuid4().hex[:8]}",
        provider_id=P1,
        meter_id=f"MH-{TAG}",
        window_start=start,
        window_end=start + timedelta(hours=1),
        power_kw=250,
        price_gbp_per_mwh=300,
    )

    def edit(payload: dict[str, Any]) -> None:
        *parents, last = [int(k) if k.isdigit() else k for k in path.split(".")]
        node: Any = payload["message"]["order"]
        for k in parents:
            node = node[k]
        node[last] = value

    return order_request(*signed_pair(deal, party(BAP), mutate_on_confirm=edit if path else None), supplier_id="sup-h")


KW = "items.0.quantity.selected.measure.value"
TIME = "fulfillments.0.stops.0.time.range"


def deep(n: int) -> bytes:
    return b'{"a":' * n + b"1" + b"}" * n


PAST = (datetime.now(UTC) - timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
TRANSFER = {"id": "t", "debit_account": "bap:x:cash", "credit_account": "provider:y:revenue", "amount": 1}

# (what, key, path, body (dict → JSON, bytes → raw), status, the field the message must name)
CASES: list[tuple[str, str, str, Any, int, str]] = [
    ("NUL in an id", "bap", "/api/v1/orders", order("id", "o\x00x"), 400, "on_confirm.message.order.id"),
    (
        "NUL in a meter id",
        "bap",
        "/api/v1/orders",
        order("fulfillments.0.stops.0.location.address", "der://M\x00"),
        400,
        "location.address",
    ),
    ("control char in a reason", "bap", "/api/v1/orders/none/cancel", {"reason": "a\x07b"}, 400, "reason"),
    ("id longer than 200", "bap", "/api/v1/orders", order("id", "o" * 201), 400, "on_confirm.message.order.id"),
    ("1e308 kW", "bap", "/api/v1/orders", order(KW, "1e308"), 400, KW),
    ("1 TW as a string", "bap", "/api/v1/orders", order(KW, "1000000000"), 400, "measure.value"),
    (
        "order window centuries ahead",
        "bap",
        "/api/v1/orders",
        order(TIME, {"start": "2226-01-01T16:00:00Z", "end": "2226-01-01T18:00:00Z"}),
        422,
        "stops[0].time",
    ),
    ("2**70 kW", "bap", "/api/v1/orders", order(KW, str(2**70)), 400, "measure.value"),
    ("NaN price", "bap", "/api/v1/orders", order("items.0.price.value", "NaN"), 400, "price.value"),
    ("1e308 price", "bap", "/api/v1/orders", order("items.0.price.value", "1e308"), 400, "price.value"),
    (
        "not base64",
        "bap",
        "/api/v1/orders",
        {**order(), "confirm": {"body_base64": "@@@@", "authorization": "x"}},
        400,
        "confirm.body_base64",
    ),
    ("2**70 pence", "finance", "/api/v1/transfers", {**TRANSFER, "amount": 2**70}, 400, "amount"),
    ("2**70 tokens", "p1", "/api/v1/cft/mint", {"id": "m", "series_id": "s", "tokens": 2**70}, 400, "tokens"),
    ("NUL in a memo", "finance", "/api/v1/transfers", {**TRANSFER, "memo": "x\x00"}, 400, "memo"),
    (
        "an agreement tag forged into a memo",
        "finance",
        "/api/v1/transfers",
        {**TRANSFER, "memo": "refund [agreement " + "ab" * 32 + "]"},
        400,
        "memo",
    ),
    ("deep JSON", "finance", "/api/v1/transfers", deep(5000), 400, "body"),
    ("deep JSON, 33 levels", "finance", "/api/v1/transfers", deep(33), 400, "body"),
    (
        "metering period_start 0 (1970)",
        "p1",
        "/api/v1/metering",
        {"meter_id": f"MH-{TAG}", "readings": [{"period_start": 0, "energy_kwh": 1}]},
        422,
        "period_start",
    ),
    (
        "metering 1e308 kWh",
        "p1",
        "/api/v1/metering",
        {"meter_id": f"MH-{TAG}", "readings": [{"period_start": PAST.isoformat(), "energy_kwh": 1e308}]},
        400,
        "energy_kwh",
    ),
    (
        "NUL in a meter id (metering)",
        "p1",
        "/api/v1/metering",
        {"meter_id": "M\x00", "readings": [{"period_start": PAST.isoformat(), "energy_kwh": 1}]},
        400,
        "meter_id",
    ),
    (
        "price period_start 0 (1970)",
        "finance",
        "/api/v1/prices",
        {"source": "t", "prices": [{"period_start": 0, "imbalance_price_gbp_per_mwh": 50}]},
        400,
        "period_start",
    ),
    (
        "price a century ahead",
        "finance",
        "/api/v1/prices",
        {"source": "t", "prices": [{"period_start": "2126-01-01T00:00:00Z", "imbalance_price_gbp_per_mwh": 50}]},
        400,
        "period_start",
    ),
    (
        "price 1e308 £/MWh",
        "finance",
        "/api/v1/prices",
        {"source": "t", "prices": [{"period_start": PAST.isoformat(), "imbalance_price_gbp_per_mwh": 1e308}]},
        400,
        "imbalance_price_gbp_per_mwh",
    ),
    (
        "NUL in a price source",
        "finance",
        "/api/v1/prices",
        {"source": "a\x00", "prices": [{"period_start": PAST.isoformat(), "imbalance_price_gbp_per_mwh": 5}]},
        400,
        "source",
    ),
]


@pytest.mark.parametrize(("what", "key", "path", "body", "status", "field"), CASES, ids=[c[0] for c in CASES])
def test_ledger_api_refuses_hostile_input(
    client: TestClient,
    keys: dict[str, dict[str, str]],
    conn: psycopg.Connection,
    what: str,
    key: str,
    path: str,
    body: Any,
    status: int,
    field: str,
) -> None:
    before, prices = snapshot(conn), prices_count(conn)
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = client.post(path, content=raw, headers={**keys[key], "content-type": "application/json"})
    assert r.status_code == status, r.text
    message = r.json()["error"]["message"]
    assert field in message, message
    assert snapshot(conn) == before and prices_count(conn) == prices, f"{what}: a refused request wrote a row"


def test_ledger_api_refuses_a_body_over_1_mib_before_reading_it(
    client: TestClient, keys: dict[str, dict[str, str]], conn: psycopg.Connection
) -> None:
    before = snapshot(conn)
    big = b'{"id": "' + b"x" * limits.MAX_BODY_BYTES + b'"}'
    headers = {**keys["finance"], "content-type": "application/json"}
    r = client.post("/api/v1/transfers", content=big, headers=headers)
    assert r.status_code == 413 and "exceeds" in r.json()["error"]["message"]
    # streamed without a Content-Length: counted while it arrives
    chunks = iter([b'{"id": "', b"x" * limits.MAX_BODY_BYTES, b'"}'])
    r = client.post("/api/v1/transfers", content=chunks, headers=headers)
    assert r.status_code == 413
    assert snapshot(conn) == before


def _widest_prices(n: int) -> bytes:
    """n price rows with the widest legal values, as compact JSON (distinct half-hours in 2020-2022)."""
    first = datetime(2020, 1, 1, tzinfo=UTC)
    widest = f"-{int(limits.MAX_PRICE_GBP_PER_MWH)}.00000"
    rows = [
        {
            "period_start": (first + timedelta(minutes=30 * i)).isoformat(timespec="microseconds"),
            "imbalance_price_gbp_per_mwh": widest,
            "market_index_price_gbp_per_mwh": widest,
        }
        for i in range(n)
    ]
    return json.dumps({"source": "x" * 200, "prices": rows}, separators=(",", ":")).encode()


def _widest_readings(n: int) -> bytes:
    """n readings with the widest legal values for one meter with a 128-character id (2020-2022)."""
    first = datetime(2020, 1, 1, tzinfo=UTC)
    widest = f"-{int(limits.MAX_ENERGY_KWH_PER_PERIOD)}.000"
    rows = [
        {"period_start": (first + timedelta(minutes=30 * i)).isoformat(timespec="microseconds"), "energy_kwh": widest}
        for i in range(n)
    ]
    meter = f"MW-{TAG}-" + "m" * (128 - len(f"MW-{TAG}-"))  # ledger/metering.py: meter ids of 1-128
    return json.dumps({"meter_id": meter, "readings": rows}, separators=(",", ":")).encode()


def test_a_metering_request_within_the_row_limit_fits_the_body_limit(
    client: TestClient, keys: dict[str, dict[str, str]]
) -> None:
    headers = {**keys["p1"], "content-type": "application/json"}
    r = client.post("/api/v1/metering", content=_widest_readings(limits.MAX_ROWS_PER_REQUEST + 1), headers=headers)
    assert r.status_code == 400 and "readings" in r.json()["error"]["message"], r.text
    body = _widest_readings(limits.MAX_ROWS_PER_REQUEST)
    assert len(body) <= limits.MAX_BODY_BYTES
    r = client.post("/api/v1/metering", content=body, headers=headers)
    assert r.status_code in (200, 201), r.text


def test_a_bulk_request_within_the_row_limit_fits_the_body_limit(
    client: TestClient, keys: dict[str, dict[str, str]], conn: psycopg.Connection
) -> None:
    """The row limit and the body limit agree: the most rows of the widest values are accepted, not a 413;
    one row more is refused naming the list, and writes nothing."""
    headers = {**keys["finance"], "content-type": "application/json"}
    before = prices_count(conn)
    too_many = _widest_prices(limits.MAX_ROWS_PER_REQUEST + 1)
    r = client.post("/api/v1/prices", content=too_many, headers=headers)
    assert r.status_code == 400 and "prices" in r.json()["error"]["message"], r.text
    assert prices_count(conn) == before
    body = _widest_prices(limits.MAX_ROWS_PER_REQUEST)
    assert len(body) <= limits.MAX_BODY_BYTES
    r = client.post("/api/v1/prices", content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert prices_count(conn) == before + limits.MAX_ROWS_PER_REQUEST


def test_ledger_validation_errors_are_400_naming_the_field(client: TestClient, keys: dict[str, dict[str, str]]) -> None:
    r = client.post("/api/v1/transfers", json={**TRANSFER, "amount": "lots"}, headers=keys["finance"])
    assert r.status_code == 400 and "amount" in r.json()["error"]["message"]


def test_ledger_path_and_query_with_nul_are_400_naming_them(
    client: TestClient, keys: dict[str, dict[str, str]]
) -> None:
    for path, named in (
        ("/api/v1/orders/o%00x", "path"),
        ("/api/v1/transfers/t%00x", "path"),
        ("/api/v1/accounts/a%00b", "path"),
        ("/api/v1/orders/o%1bx/cancel", "path"),
        ("/api/v1/orders?provider_id=a%00b", "query.provider_id"),
        ("/api/v1/statements/acc?from=2023-01-01T00:00:00Z&to=x%00", "query.to"),
    ):
        method = client.post if path.endswith("/cancel") else client.get
        r = method(path, headers=keys["admin"])
        assert r.status_code == 400, (path, r.status_code, r.text)
        assert r.json()["error"]["message"].startswith(named), (path, r.text)


def test_openapi_documents_the_real_statuses(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    responses = doc["paths"]["/api/v1/transfers"]["post"]["responses"]
    assert {"400", "401", "403", "409", "413", "429"} <= set(responses)


# -- the metering CSV import -------------------------------------------------------------------------------
runner = CliRunner()


@pytest.mark.parametrize(
    ("what", "row", "named"),
    [
        ("NUL in meter_id", "M\x00X,{t},1", "meter_id"),
        ("meter_id longer than 255", "M" + "x" * 300 + ",{t},1", "meter_id"),
        ("1e308 kWh", "MH,{t},1e308", "energy_kwh"),
        ("beyond any site", "MH,{t},600000", "energy_kwh"),
        ("period_start 1970", "MH,1970-01-01T00:00:00Z,1", "period_start_utc"),
        ("period_start a century ahead", "MH,2126-01-01T00:00:00Z,1", "period_start_utc"),
        ("control char in energy", "MH,{t},1\x07", "energy_kwh"),
        ("NUL in provider_id", "MH,{t},1,p\x00", "provider_id"),
        ("too many columns", "MH,{t},1,p,extra", "columns"),
        ("NaN kWh", "MH,{t},NaN", "energy_kwh"),
    ],
)
def test_metering_import_refuses_hostile_rows(cli_db: str, tmp_path: Path, what: str, row: str, named: str) -> None:
    f = tmp_path / "m.csv"
    good = f"MH-{TAG}-ok,{PAST.isoformat()},1"
    f.write_text("meter_id,period_start_utc,energy_kwh,provider_id\n" + good + "\n" + row.format(t=PAST.isoformat()))
    with connection(cli_db) as c:
        before = snapshot(c)
    r = runner.invoke(metering_app, ["import", str(f), "--provider", P1])
    assert r.exit_code == 1, r.output
    assert named in r.output and "line 3" in r.output, r.output
    with connection(cli_db) as c:
        assert snapshot(c) == before, f"{what}: the import wrote a row"


def test_metering_import_refuses_a_file_that_is_not_utf8(cli_db: str, tmp_path: Path) -> None:
    f = tmp_path / "m.csv"
    f.write_bytes(b"meter_id,period_start_utc,energy_kwh\nM\xff\xfe," + PAST.isoformat().encode() + b",1\n")
    r = runner.invoke(metering_app, ["import", str(f), "--provider", P1])
    assert r.exit_code == 1 and "not a readable CSV" in r.output, r.output


@pytest.mark.parametrize(
    ("what", "period_start"),
    [("period_start 1970", "1970-01-01T00:00:00Z"), ("a century ahead", "2126-01-01T00:00:00Z")],
)
def test_price_import_refuses_instants_out_of_history(
    cli_db: str, tmp_path: Path, what: str, period_start: str
) -> None:
    f = tmp_path / "prices.csv"
    f.write_text(
        "period_start_utc,period_end_utc,imbalance_price_gbp_per_mwh,market_index_price_gbp_per_mwh\n"
        f"{PAST.isoformat()},,80.5,81\n{period_start},,90,91\n"
    )
    with connection(cli_db) as c:
        before = prices_count(c)
    r = runner.invoke(ledger_app, ["import-prices", str(f)])
    assert r.exit_code == 2, r.output
    assert "period_start" in r.output, (what, r.output)
    with connection(cli_db) as c:
        assert prices_count(c) == before, f"{what}: the import wrote a row"
