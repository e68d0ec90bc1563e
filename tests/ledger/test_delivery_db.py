"""An order's delivery so far (ledger/delivery.py, GET /api/v1/orders/{id}/delivery): per declared period,
pending before it ends, awaiting_reading after it ends without a reading (never a shortfall by itself),
metered with this order's share of the meter's delivery once a reading and a baseline exist. Read only: it
writes no run. Only the order's BAP, its provider, admin and finance read it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from fractions import Fraction

import psycopg
import pytest
from fastapi.testclient import TestClient

from grid.periods import PERIOD
from ledger.db import connect
from ledger.delivery import delivery_so_far
from ledger.metering import Reading
from tests.ledger.helpers import bearer_keys, snapshot
from tests.ledger.test_settlement_db import START, history, meter, register, terms

BASE_WH = 1_000_000  # the site's baseline: 2 MW over a half hour


@pytest.fixture
def conn(ledger_url: str) -> Iterator[psycopg.Connection]:
    c = connect(ledger_url)
    yield c
    c.close()


def _seed(conn: psycopg.Connection, tag: str, first_wh: int | None, second_wh: int | None) -> str:
    """A 1 MW order over START's hour on a 2 MW site, with 40 days of history and the given window readings."""
    t = terms(tag)
    register(conn, t)
    meter(conn, t, history(START, wh=BASE_WH, after=0), START)
    for at, wh in ((START, first_wh), (START + PERIOD, second_wh)):
        if wh is not None:  # each reading arrives a minute after its period ends
            meter(conn, t, [Reading(at, wh)], at + PERIOD + timedelta(minutes=1))
    return t.order_id


def _periods(conn: psycopg.Connection, order_id: str, minutes_after_start: int) -> list[dict]:
    return delivery_so_far(conn, order_id, START + timedelta(minutes=minutes_after_start))["periods"]


def test_metered_periods_show_the_orders_share_and_unended_ones_are_pending(conn: psycopg.Connection) -> None:
    order_id = _seed(conn, uuid.uuid4().hex[:8], first_wh=500_000, second_wh=800_000)
    before = snapshot(conn)
    during = _periods(conn, order_id, 45)
    assert [p["state"] for p in during] == ["metered", "pending"]
    assert during[0]["delivered_fraction"] == "1.0000"  # 2 MW baseline − 1 MW metered = the whole 1 MW
    assert Fraction(during[0]["delivered_wh"]) == Fraction(500_000)
    assert during[1]["delivered_wh"] is None and during[1]["delivered_fraction"] is None
    after = _periods(conn, order_id, 90)
    assert [p["state"] for p in after] == ["metered", "metered"]
    assert after[1]["delivered_fraction"] == "0.4000"  # 200 of 500 kWh
    assert after[1]["reading_kind"] == "self_reported"
    assert snapshot(conn) == before  # read only: no run, no transfer


def test_an_ended_period_without_a_reading_awaits_it_and_is_not_a_shortfall(conn: psycopg.Connection) -> None:
    order_id = _seed(conn, uuid.uuid4().hex[:8], first_wh=BASE_WH, second_wh=None)
    periods = _periods(conn, order_id, 90)
    assert periods[0]["state"] == "metered" and periods[0]["delivered_fraction"] == "0.0000"
    assert periods[1]["state"] == "awaiting_reading" and periods[1]["delivered_fraction"] is None


def test_only_the_orders_parties_read_its_delivery(
    conn: psycopg.Connection, client: TestClient, ledger_url: str
) -> None:
    tag = uuid.uuid4().hex[:8]
    order_id = _seed(conn, tag, first_wh=700_000, second_wh=None)
    keys = bearer_keys(
        ledger_url,
        bap=("bap", f"bap-{tag}"),
        other_bap=("bap", f"bap-x-{tag}"),
        provider=("provider", f"dc-{tag}"),
        finance=("finance", None),
    )
    for who in ("bap", "provider", "finance"):
        r = client.get(f"/api/v1/orders/{order_id}/delivery", headers=keys[who])
        assert r.status_code == 200, (who, r.text)
        body = r.json()
        assert [p["state"] for p in body["periods"]] == ["metered", "awaiting_reading"]  # the wall clock is past 2023
        assert body["periods"][0]["delivered_fraction"] == "0.6000"
    assert client.get(f"/api/v1/orders/{order_id}/delivery", headers=keys["other_bap"]).status_code == 403
    assert client.get(f"/api/v1/orders/o-missing-{tag}/delivery", headers=keys["finance"]).status_code == 404
    assert client.get(f"/api/v1/orders/{order_id}/delivery").status_code == 401


@pytest.mark.parametrize("minutes", [0, 29])
def test_the_first_period_is_pending_until_it_ends(conn: psycopg.Connection, minutes: int) -> None:
    order_id = _seed(conn, uuid.uuid4().hex[:8], first_wh=None, second_wh=None)
    assert [p["state"] for p in _periods(conn, order_id, minutes)] == ["pending", "pending"]
