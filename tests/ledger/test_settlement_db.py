"""Settlement on the database: orders, metering, prices, runs II→…→DF, restatement by reversal,
reproducibility from stored inputs, idempotent Celery task, and refusals that write nothing."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from fractions import Fraction
from pathlib import Path

import psycopg
import pytest

from grid.periods import PERIOD
from ledger import accounts as acct
from ledger import tasks
from ledger.accounts_db import account_info
from ledger.db import connect, in_transaction
from ledger.errors import LedgerError
from ledger.metering import Reading, ingest_metering
from ledger.orders import cancel_order
from ledger.policies import create_policy, get_policy
from ledger.prices import PriceRow, ingest_prices, read_prices_csv
from ledger.settlement import RUNS, OrderTerms, inputs_digest, settle
from ledger.settlement_runs import ledger_lines_for_order, load_inputs, settle_due, stored_run
from ledger.verify import verify_ledger
from schemas.limits import MAX_ENERGY_WH_PER_PERIOD
from tests.ledger.agreements import register_signed
from tests.ledger.conftest import utc
from tests.ledger.helpers import snapshot
from tests.ledger.test_store_db import assert_append_only

START = utc(2023, 12, 5, 17)  # Tuesday, GMT
END = START + timedelta(hours=1)
GBP300 = 30_000_000


@pytest.fixture
def conn(ledger_url: str):
    c = connect(ledger_url)
    yield c
    c.close()


def terms(
    tag: str,
    start: datetime = START,
    hours: float = 1,
    *,
    confirmed: datetime | None = None,
    policy: str = "p415-v1",
    kw: int = 1000,
    meter: str | None = None,
) -> OrderTerms:
    return OrderTerms(
        f"o-{tag}",
        f"dc-{tag}",
        f"bap-{tag}",
        meter or f"M-{tag}",
        f"sup-{tag}",
        start,
        start + timedelta(hours=hours),
        kw * 1000,
        GBP300,
        None,
        "P415",
        "compute",
        confirmed or start - timedelta(days=1),
        policy,
    )


def history(start: datetime, days: int = 40, wh: int = 1_000_000, after: int = 8) -> list[Reading]:
    out, t = [], start - timedelta(days=days)
    while t < start + after * PERIOD:
        out.append(Reading(t, wh))
        t += PERIOD
    return out


def register(conn: psycopg.Connection, t: OrderTerms, now: datetime | None = None) -> dict:
    """The order registered as the BAP does: with the buyer's confirm and the provider's on_confirm, signed."""
    return register_signed(conn, t, now or t.confirmed_at)


def meter(
    conn: psycopg.Connection, t: OrderTerms, readings: list[Reading], now: datetime, correction: bool = False
) -> dict:
    return in_transaction(
        conn,
        lambda c: ingest_metering(c, t.meter_id, readings, provider_id=t.provider_id, now=now, correction=correction),
    )


def seeded_order(conn: psycopg.Connection, tag: str, policy: str = "p415-v1") -> OrderTerms:
    t = terms(tag, policy=policy)
    register(conn, t)
    readings = {r.period_start: r for r in history(START)}
    readings[START] = Reading(START, 500_000)  # full delivery
    readings[START + PERIOD] = Reading(START + PERIOD, 800_000)  # 40 %
    meter(conn, t, list(readings.values()), END + timedelta(hours=3))
    prices = [PriceRow(START, 5_000_000, None), PriceRow(START + PERIOD, 12_345_678, 9_000_000)]
    in_transaction(conn, lambda c: ingest_prices(c, prices, "test", START - timedelta(days=1)))
    return t


def balance(conn: psycopg.Connection, name: str) -> int:
    return account_info(conn, name)["balance"]


def test_register_order_reserves_and_is_idempotent(conn: psycopg.Connection) -> None:
    tag = uuid.uuid4().hex[:8]
    t = terms(tag)
    out = register(conn, t)
    assert out["status"] == "created" and out["reserve_pence"] == 30_000  # 0.5 MWh... 1 MW × 1 h × £300
    assert out["declared_periods"] == ["2023-12-05/35", "2023-12-05/36"]
    assert account_info(conn, acct.escrow(t.order_id))["credits_pending"] == 30_000
    before = snapshot(conn)
    assert register(conn, t)["status"] == "exists"
    with pytest.raises(LedgerError) as err:
        register(conn, OrderTerms(**{**t.__dict__, "contracted_w": 999_000}))
    assert err.value.status == 409
    assert snapshot(conn) == before


def test_gate_closure(conn: psycopg.Connection) -> None:
    tag = uuid.uuid4().hex[:8]
    before = snapshot(conn)
    with pytest.raises(LedgerError) as err:
        register(conn, terms(tag, confirmed=START - timedelta(minutes=20)))  # after both gates (16:00, 16:30)
    assert err.value.code == "after_gate_closure" and err.value.status == 422
    assert snapshot(conn) == before
    out = register(conn, terms(tag, confirmed=START - timedelta(minutes=30)))  # 16:30: the 17:30 gate exactly
    assert out["declared_periods"] == ["2023-12-05/36"] and out["rejected_periods"][0]["period"] == "2023-12-05/35"


def test_metering_refusals_write_nothing(conn: psycopg.Connection) -> None:
    tag = uuid.uuid4().hex[:8]
    t = terms(tag)
    register(conn, t)
    now = END + timedelta(hours=1)
    meter(conn, t, [Reading(START, 1000)], now)
    before = snapshot(conn)
    bad = [
        ([Reading(START + timedelta(minutes=10), 5)], "malformed_readings", "not the start of a half-hour"),
        ([Reading(now, 5)], "malformed_readings", "has not ended"),
        ([Reading(END, MAX_ENERGY_WH_PER_PERIOD + 1)], "malformed_readings", "beyond ±500000 kWh"),
        ([Reading(END, -MAX_ENERGY_WH_PER_PERIOD - 1)], "malformed_readings", "beyond ±500000 kWh"),
        ([Reading(END, 1), Reading(END, 2)], "malformed_readings", "twice"),
        ([Reading(END, 1), Reading(START, 1000)], "duplicate_readings", "already recorded"),
    ]
    for readings, code, why in bad:
        with pytest.raises(LedgerError) as err:
            meter(conn, t, readings, now)
        assert err.value.code == code and why in err.value.message
    with pytest.raises(LedgerError) as err:  # another provider's meter
        in_transaction(
            conn, lambda c: ingest_metering(c, t.meter_id, [Reading(END, 1)], provider_id="intruder", now=now)
        )
    assert err.value.status == 403
    assert snapshot(conn) == before
    assert meter(conn, t, [Reading(START, 1200)], now, correction=True)["corrections"] == 1
    versions = conn.execute(
        "SELECT version, energy_wh FROM ledger.metering WHERE meter_id = %s ORDER BY version", (t.meter_id,)
    ).fetchall()
    assert versions == [(1, 1000), (2, 1200)]


def test_runs_restatement_reproducibility_and_idempotent_task(conn: psycopg.Connection, ledger_url: str) -> None:
    tag = uuid.uuid4().hex[:8]
    t = seeded_order(conn, tag)
    ii_at = END + timedelta(hours=3)
    assert settle_due(ledger_url, END - timedelta(minutes=1), order_ids=[t.order_id]) == []  # window open
    out = settle_due(ledger_url, ii_at, order_ids=[t.order_id])
    assert [(o.run, o.lines) for o in out] == [
        ("II", {"utilisation": 21_000, "availability": 0, "shortfall": 3_704, "supplier_compensation": 6_897})
    ]
    assert balance(conn, acct.provider_revenue(t.provider_id)) == 21_000
    assert balance(conn, acct.provider_penalties(t.provider_id)) == -3_704
    assert balance(conn, acct.supplier_compensation(t.supplier_id)) == 6_897
    esc = account_info(conn, acct.escrow(t.order_id))
    assert (esc["balance"], esc["credits_pending"]) == (0, 0)

    # running again, directly or as the Celery task, appends nothing
    task = tasks.settle_due
    before = snapshot(conn)
    assert settle_due(ledger_url, ii_at, order_ids=[t.order_id]) == []
    task.apply(args=[ii_at.isoformat()]).get()
    task.apply(args=[ii_at.isoformat()]).get()
    assert snapshot(conn) == before

    # a meter correction arrives; SF (due 14 days after the window) restates by reversal + new entries
    meter(conn, t, [Reading(START + PERIOD, 700_000)], END + timedelta(days=3), correction=True)
    assert settle_due(ledger_url, END + timedelta(days=13), order_ids=[t.order_id]) == []  # SF not due yet
    sf = settle_due(ledger_url, END + timedelta(days=15), order_ids=[t.order_id])
    assert [o.run for o in sf] == ["SF"]
    assert sf[0].lines == {"utilisation": 24_000, "availability": 0, "shortfall": 2_469, "supplier_compensation": 7_882}
    ids = {tr["id"].split(":", 2)[2] for tr in sf[0].transfers}
    assert ids == {
        "SF:utilisation:reversal",
        "SF:utilisation",
        "SF:shortfall:reversal",
        "SF:shortfall",
        "SF:supplier_compensation:reversal",
        "SF:supplier_compensation",
    }
    assert conn.execute(
        "SELECT count(*) FROM ledger.entries WHERE id LIKE %s", (f"settle:{t.order_id}:II:%",)
    ).fetchone() == (4,)  # the II entries are untouched
    assert ledger_lines_for_order(conn, t.order_id) == sf[0].lines
    assert balance(conn, acct.provider_revenue(t.provider_id)) == 24_000

    # catch up to DF: later runs change nothing, so they append nothing; then there is nothing left
    rest = settle_due(ledger_url, END + timedelta(days=900), order_ids=[t.order_id])
    assert [o.run for o in rest] == list(RUNS[2:]) and all(o.transfers == [] for o in rest)
    assert settle_due(ledger_url, END + timedelta(days=901), order_ids=[t.order_id]) == []

    # reproducibility: every stored run recomputed from stored inputs equals the run and the ledger
    for run in RUNS:
        stored = stored_run(conn, t.order_id, run)
        _, policy, inputs, _ = load_inputs(conn, t.order_id, stored["as_of"], run)
        again = settle(inputs, policy)
        assert again.lines == stored["lines_pence"]
        assert inputs_digest(inputs, policy, stored["as_of"]).hex() == stored["inputs_sha256"]
        assert ledger_lines_for_order(conn, t.order_id, upto_run=run) == again.lines
    conn.rollback()

    for table, assignment in (
        ("orders", "contracted_w = contracted_w"),
        ("metering", "energy_wh = energy_wh"),
        ("prices", "source = source"),
        ("settlement_runs", "lines = lines"),
    ):
        assert_append_only(conn, table, assignment)
    assert verify_ledger(conn).ok


def test_late_metering_is_estimated_then_restated(conn: psycopg.Connection, ledger_url: str) -> None:
    tag = uuid.uuid4().hex[:8]
    t = terms(tag)
    register(conn, t)
    meter(conn, t, [r for r in history(START) if not START <= r.period_start < END], END + timedelta(hours=4))
    ii = settle_due(ledger_url, END + timedelta(days=1), order_ids=[t.order_id])[0]
    assert ii.lines["utilisation"] == 0 and ii.transfers[0]["kind"] == "void"  # reserve released
    result = stored_run(conn, t.order_id, "II")["result"]
    # no reading yet: estimated as no delivery, so the shortfall is charged until a reading restates it
    assert {(p["status"], p["reading_kind"], p["delivered_wh"]) for p in result["periods"]} == {
        ("settled", "estimated", "0")
    }
    assert result["reading_kind"] == "estimated"
    assert {p["shortfall_wh"] for p in result["periods"]} == {"500000"}
    meter(conn, t, [Reading(START, 600_000), Reading(START + PERIOD, 600_000)], END + timedelta(days=2))
    sf = settle_due(ledger_url, END + timedelta(days=14), order_ids=[t.order_id])[0]
    assert sf.lines["utilisation"] == 24_000  # 2 × 0.4 MWh × £300, paid directly now the reserve is gone
    assert balance(conn, acct.provider_revenue(t.provider_id)) == 24_000


def test_policies_dfs_and_buyer_pays(conn: psycopg.Connection, ledger_url: str) -> None:
    dfs = seeded_order(conn, uuid.uuid4().hex[:8], policy="dfs-v1")
    dno = seeded_order(conn, uuid.uuid4().hex[:8], policy="dno-v1")
    out = {
        o.order_id: o for o in settle_due(ledger_url, END + timedelta(hours=3), order_ids=[dfs.order_id, dno.order_id])
    }
    assert out[dfs.order_id].lines["shortfall"] == 0 and out[dfs.order_id].lines["utilisation"] == 21_000
    assert out[dno.order_id].lines["utilisation"] == 15_000
    comp = next(tr for tr in out[dno.order_id].transfers if tr["id"].endswith("supplier_compensation"))
    assert comp["debit_account"] == acct.bap_cash(dno.bap_id)  # buyer pays


def test_cancelled_order_releases_reserve_and_is_not_settled(conn: psycopg.Connection, ledger_url: str) -> None:
    tag = uuid.uuid4().hex[:8]
    t = terms(tag)
    register(conn, t)
    with pytest.raises(LedgerError):
        in_transaction(conn, lambda c: cancel_order(c, t.order_id, START + PERIOD))  # too late
    in_transaction(conn, lambda c: cancel_order(c, t.order_id, START - timedelta(hours=2), "grid ok"))
    assert account_info(conn, acct.escrow(t.order_id))["credits_pending"] == 0
    assert settle_due(ledger_url, END + timedelta(days=30), order_ids=[t.order_id]) == []


def test_unknown_policy_and_custom_policy(conn: psycopg.Connection) -> None:
    tag = uuid.uuid4().hex[:8]
    with pytest.raises(LedgerError) as err:
        register(conn, terms(tag, policy="nope-v9"))
    assert err.value.code == "unknown_policy"
    params = {**get_policy(conn, "p415-v1").to_json(), "scrp_millipence_per_mwh": 8_721_000}
    conn.rollback()
    out = in_transaction(conn, lambda c: create_policy(c, f"custom-{tag}", params))
    assert out["status"] == "created"
    with pytest.raises(LedgerError) as err:
        in_transaction(conn, lambda c: create_policy(c, f"custom-{tag}", {**params, "rebound_periods": 2}))
    assert err.value.status == 409


@pytest.mark.parametrize(("day", "first_period"), [(utc(2023, 3, 26, 0, 0), 1), (utc(2023, 10, 29, 0, 0), 3)])
def test_clock_change_days_with_real_prices(
    conn: psycopg.Connection, ledger_url: str, shared_dir: Path, day: datetime, first_period: int
) -> None:
    """Both clock-change days end to end with the real Elexon prices (../shared/data/grid)."""
    tag = uuid.uuid4().hex[:8]
    t = terms(tag, start=day, hours=2, kw=400)
    register(conn, t)
    readings = {r.period_start: r for r in history(day, days=70, wh=500_000)}
    for i in range(4):
        readings[day + i * PERIOD] = Reading(day + i * PERIOD, 300_000 if i < 2 else 450_000)
    meter(conn, t, list(readings.values()), day + timedelta(hours=6))
    rows = [
        r
        for r in read_prices_csv(shared_dir / "data/grid/gb_system_prices_2023-01_2024-05.csv")
        if day - timedelta(hours=1) <= r.period_start < day + timedelta(hours=3)
    ]
    in_transaction(conn, lambda c: ingest_prices(c, rows, "elexon", day - timedelta(days=1)))
    out = settle_due(ledger_url, day + timedelta(hours=6), order_ids=[t.order_id])[0]
    periods = stored_run(conn, t.order_id, "II")["result"]["periods"]
    assert [p["period"] for p in periods] == [f"{day.date()}/{first_period + i}" for i in range(4)]
    assert all(p["status"] == "settled" for p in periods)
    assert [Fraction(p["delivered_wh"]) for p in periods] == [200_000, 200_000, 50_000, 50_000]
    # utilisation: (0.2 + 0.2 + 0.05 + 0.05) MWh × £300 = £150
    assert out.lines["utilisation"] == 15_000
    expected = Fraction(0)
    price_of = {r.period_start: r for r in rows}
    for i in (2, 3):  # 150 kWh short in each of the last two periods
        r = price_of.get(day + i * PERIOD)
        price = (
            None
            if r is None
            else (
                r.imbalance_millipence_per_mwh
                if r.imbalance_millipence_per_mwh is not None
                else r.market_index_millipence_per_mwh
            )
        )
        if price is not None:
            expected += Fraction(150_000 * max(price, 0), 10**9)
    assert out.lines["shortfall"] == round(expected)
