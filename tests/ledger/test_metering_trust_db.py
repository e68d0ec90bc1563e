"""Tests an attacker would write, on the database: a meter operator's signed reading overrides the provider's
own and restates a run made on it; a withheld reading of an under-delivered period still pays the shortfall at
DF; two obligations on one meter (an order and a token redemption) are not paid twice for the same energy."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from grid.periods import PERIOD
from ledger import accounts as acct
from ledger.checkpoints import ledger_keypair
from ledger.db import in_transaction
from ledger.meter_data import READINGS_FORMAT, register_keypair, sign_readings, verify_readings_signature
from ledger.metering import Reading, ingest_metering
from ledger.prices import PriceRow, ingest_prices
from ledger.proofs import verify_statement
from ledger.settlement import RUNS, OrderTerms
from ledger.settlement_runs import ledger_lines_for_order, load_inputs, settle_due, stored_run
from ledger.statement_csv import statement_csv, statement_from_csv
from ledger.statements import statement
from ledger.tokens import create_series, mint, redeem, trade
from tests.ledger.conftest import utc
from tests.ledger.test_settlement_db import balance, history, meter, register, terms

GBP300 = 30_000_000
IMBALANCE = 10_000_000  # £100/MWh


@dataclass(frozen=True)
class Operator:
    participant_id: str
    key_id: str
    private_key: Ed25519PrivateKey


@pytest.fixture
def operator(conn: psycopg.Connection) -> Operator:
    key = Ed25519PrivateKey.generate()
    participant = f"mo-{uuid.uuid4().hex[:6]}"
    registered = in_transaction(conn, lambda c: register_keypair(c, participant, key, now=utc(2023, 1, 1)))
    return Operator(participant, registered.key_id, key)


def operator_posts(
    conn: psycopg.Connection, op: Operator, meter_id: str, readings: list[Reading], now: datetime
) -> dict[str, Any]:
    """What POST /api/v1/metering/signed does (tests/ledger/test_meter_data_api.py covers the HTTP edge)."""
    payload = {
        "format": READINGS_FORMAT,
        "meter_id": meter_id,
        "readings": [
            {"period_start": r.period_start.isoformat(), "energy_kwh": str(Decimal(r.energy_wh) / 1000)}
            for r in readings
        ],
    }
    signature = sign_readings(payload, op.private_key)

    def post(c: psycopg.Connection) -> dict[str, Any]:
        verified = verify_readings_signature(
            c, payload, key_id=op.key_id, signature_b64=signature, participant_id=op.participant_id
        )
        return ingest_metering(c, meter_id, readings, provider_id=None, now=now, origin=verified)

    return in_transaction(conn, post)


def prices(conn: psycopg.Connection, start: datetime, periods: int = 2) -> None:
    rows = [PriceRow(start + i * PERIOD, IMBALANCE, None) for i in range(periods)]
    in_transaction(conn, lambda c: ingest_prices(c, rows, "test", start - timedelta(days=1)))


def test_meter_operator_reading_overrides_self_reported_and_restates(
    conn: psycopg.Connection, ledger_url: str, operator: Operator
) -> None:
    start = utc(2024, 1, 9, 17)  # a Tuesday, GMT
    end = start + timedelta(hours=1)
    t = terms(uuid.uuid4().hex[:8], start)
    register(conn, t)
    prices(conn, start)
    claimed = [r for r in history(start) if not start <= r.period_start < end]
    claimed += [Reading(start, 500_000), Reading(start + PERIOD, 500_000)]  # claims full delivery
    meter(conn, t, claimed, end + timedelta(hours=3))
    ii = settle_due(ledger_url, end + timedelta(hours=4), order_ids=[t.order_id])
    assert [(o.run, o.lines["utilisation"]) for o in ii] == [("II", 30_000)]
    assert stored_run(conn, t.order_id, "II")["result"]["reading_kind"] == "self_reported"

    # the meter operator's reading shows no reduction at all: it wins, and the next run restates at once
    actual = [Reading(start, 1_000_000), Reading(start + PERIOD, 1_000_000)]
    assert operator_posts(conn, operator, t.meter_id, actual, end + timedelta(days=2))["reading_kind"] == (
        "meter_operator"
    )
    sf = settle_due(ledger_url, end + timedelta(days=3), order_ids=[t.order_id])  # SF falls due at 14 days
    assert [o.run for o in sf] == ["SF"] and sf[0].reason.startswith("restatement")
    assert sf[0].lines == {"utilisation": 0, "availability": 0, "shortfall": 10_000, "supplier_compensation": 0}
    assert balance(conn, acct.provider_revenue(t.provider_id)) == 0
    result = stored_run(conn, t.order_id, "SF")["result"]
    assert result["reading_kind"] == "meter_operator"
    assert [p["reading_kind"] for p in result["periods"]] == ["meter_operator", "meter_operator"]
    assert settle_due(ledger_url, end + timedelta(days=4), order_ids=[t.order_id]) == []  # nothing new: not due

    # a later self-reported "correction" does not displace the meter operator's reading
    meter(conn, t, [Reading(start, 400_000)], end + timedelta(days=5), correction=True)
    _, _, inputs, _ = load_inputs(conn, t.order_id, end + timedelta(days=6), "R1")
    assert (inputs.readings[start], inputs.reading_kinds[start]) == (1_000_000, "meter_operator")
    assert conn.execute(
        "SELECT reading_kind, version, energy_wh FROM ledger.metering WHERE meter_id = %s AND period_start = %s "
        "ORDER BY reading_kind, version",
        (t.meter_id, start),
    ).fetchall() == [("meter_operator", 1, 1_000_000), ("self_reported", 1, 500_000), ("self_reported", 2, 400_000)]

    # every statement line says which reading it rests on
    doc = in_transaction(
        conn, lambda c: statement(c, acct.provider_revenue(t.provider_id), start, datetime.now(UTC) + timedelta(days=1))
    )
    kinds = {e["id"].split(":", 2)[2]: e["reading_kind"] for e in doc["entries"]}
    assert kinds == {"II:utilisation": "self_reported", "SF:utilisation:reversal": "meter_operator"}
    as_csv = statement_from_csv(statement_csv(doc))  # a column of the CSV too, and it still verifies offline
    assert [e["reading_kind"] for e in as_csv["entries"]] == [e["reading_kind"] for e in doc["entries"]]
    assert verify_statement(as_csv, ledger_keypair().signing_public_key_b64).ok


def test_withheld_reading_of_an_under_delivered_period_still_pays_the_shortfall_at_df(
    conn: psycopg.Connection, ledger_url: str
) -> None:
    start = utc(2024, 1, 16, 17)
    end = start + timedelta(hours=1)
    t = terms(uuid.uuid4().hex[:8], start)
    register(conn, t)
    prices(conn, start)
    # the provider delivered nothing and withholds both event readings (the history is there)
    meter(conn, t, [r for r in history(start) if not start <= r.period_start < end], end + timedelta(hours=3))
    out = settle_due(ledger_url, end + timedelta(days=900), order_ids=[t.order_id])
    assert [o.run for o in out] == list(RUNS)
    assert [p["reading_kind"] for p in stored_run(conn, t.order_id, "R3")["result"]["periods"]] == ["estimated"] * 2
    df = stored_run(conn, t.order_id, "DF")["result"]
    assert df["reading_kind"] == "missing"
    assert [(p["reading_kind"], p["delivered_wh"], p["shortfall_wh"]) for p in df["periods"]] == [
        ("missing", "0", "500000"),
        ("missing", "0", "500000"),
    ]
    lines = ledger_lines_for_order(conn, t.order_id)
    assert lines["shortfall"] == 10_000 and lines["utilisation"] == 0  # 1 MWh short × £100/MWh: as if posted
    assert balance(conn, acct.provider_penalties(t.provider_id)) == -10_000


def test_an_order_and_a_token_redemption_on_one_meter_are_not_paid_twice(
    conn: psycopg.Connection, ledger_url: str
) -> None:
    start = utc(2024, 1, 23, 17)
    end = start + timedelta(hours=1)
    tag = uuid.uuid4().hex[:8]
    order = terms(tag, start, kw=1000)  # 0.5 MWh per period at £300/MWh
    register(conn, order)
    prices(conn, start)
    series, holder, now = f"s-{tag}", f"bap2-{tag}", start - timedelta(days=2)
    in_transaction(
        conn,
        lambda c: create_series(
            c,
            series,
            provider_id=order.provider_id,
            valid_from=start - timedelta(days=3),
            valid_to=start + timedelta(days=3),
            declared_capacity_w=2_000_000,
            now=now,
        ),
    )
    in_transaction(conn, lambda c: mint(c, f"m-{tag}", series, 1, now))
    sale = dict(series_id=series, seller_id=order.provider_id, buyer_id=holder, tokens=1, price_pence=1, now=now)
    in_transaction(conn, lambda c: trade(c, f"sale-{tag}", **sale))  # type: ignore[arg-type]
    redemption = in_transaction(
        conn,
        lambda c: redeem(
            c,
            f"r-{tag}",
            series_id=series,
            holder_id=holder,
            tokens=1,  # 1 MWh over the hour: 1 MW, another 0.5 MWh per period on the same meter
            period_start=start,
            period_end=end,
            meter_id=order.meter_id,
            supplier_id=order.supplier_id,
            now=now,
        ),
    )
    # the meter turned down 0.6 MWh per period: more than either obligation, less than both (1 MWh)
    readings = [r for r in history(start) if not start <= r.period_start < end]
    readings += [Reading(start, 400_000), Reading(start + PERIOD, 400_000)]
    meter(conn, order, readings, end + timedelta(hours=3))
    ids = [order.order_id, redemption["order_id"]]
    settle_due(ledger_url, end + timedelta(hours=4), order_ids=ids)
    runs = {oid: stored_run(conn, oid, "II")["result"] for oid in ids}
    for i in range(2):
        periods = [runs[oid]["periods"][i] for oid in ids]
        delivered = Fraction(periods[0]["delivered_wh"])
        assert delivered == 600_000 and {p["delivered_wh"] for p in periods} == {"600000"}
        assert [Fraction(p["allocated_wh"]) for p in periods] == [300_000, 300_000]  # contracted 1:1
        assert sum(Fraction(p["allocated_wh"]) for p in periods) <= delivered
        assert periods[0]["sharing_orders"] == [redemption["order_id"]]
    # the order is paid for its share only: 2 × 0.3 MWh × £300, not 2 × 0.5 MWh; the redemption is prepaid
    assert stored_run(conn, order.order_id, "II")["lines_pence"]["utilisation"] == 18_000
    assert balance(conn, acct.provider_revenue(order.provider_id)) == 1 + 18_000  # token sale + utilisation
    paid_wh = sum(Fraction(p["allocated_wh"]) for oid in ids for p in runs[oid]["periods"])
    assert paid_wh == 1_200_000 <= 2 * 600_000  # Σ paid volume ≤ the metered delivery, over the window


def test_terms_of_an_orders_inputs_include_every_order_on_the_meter(conn: psycopg.Connection) -> None:
    start = utc(2024, 1, 30, 17)
    tag = uuid.uuid4().hex[:8]
    first = terms(tag, start, kw=1000)
    second = OrderTerms(
        **{**first.__dict__, "order_id": f"o2-{tag}", "window_start": start + PERIOD, "contracted_w": 3_000}
    )
    register(conn, first)
    register(conn, second)
    _, _, inputs, _ = load_inputs(conn, first.order_id, start + timedelta(hours=2))
    assert inputs.sharing_w == {
        start: {first.order_id: 1_000_000},
        start + PERIOD: {first.order_id: 1_000_000, second.order_id: 3_000},
    }


def test_an_order_registered_late_on_the_meter_restates_the_first_orders_run(
    conn: psycopg.Connection, ledger_url: str
) -> None:
    start = utc(2024, 2, 6, 17)
    end = start + timedelta(hours=1)
    tag = uuid.uuid4().hex[:8]
    first = terms(tag, start, kw=1000)
    register(conn, first)
    prices(conn, start)
    readings = [r for r in history(start) if not start <= r.period_start < end]
    readings += [Reading(start, 500_000), Reading(start + PERIOD, 500_000)]  # 0.5 MWh turned down per period
    meter(conn, first, readings, end + timedelta(hours=3))
    ii = settle_due(ledger_url, end + timedelta(hours=4), order_ids=[first.order_id])
    assert [(o.run, o.lines["utilisation"]) for o in ii] == [("II", 30_000)]  # all of it, alone on the meter
    # a second order on the meter, confirmed before gate closure but registered only after the window
    late = OrderTerms(**{**first.__dict__, "order_id": f"o-late-{tag}", "bap_id": f"bap-late-{tag}"})
    register(conn, late, end + timedelta(days=1))
    sf = settle_due(ledger_url, end + timedelta(days=2), order_ids=[first.order_id])
    assert [o.run for o in sf] == ["SF"] and sf[0].reason.startswith("restatement")
    assert sf[0].lines["utilisation"] == 15_000  # the delivery is now shared 1:1
    late_ii = settle_due(ledger_url, end + timedelta(days=2), order_ids=[late.order_id])
    assert late_ii[0].lines["utilisation"] == 15_000
    assert balance(conn, acct.provider_revenue(first.provider_id)) == 30_000  # paid once for 1 MWh, not twice
