"""The whole network on one simulated clock (kernel/clock.py): a small network replays an afternoon of
January 2023 at 240× real time, an order is bought through Beckn, metered through the ledger's API, and the
ledger's own Celery beat task (`ledger.settle_due`) settles it once the simulated clock passes the window.

Nothing here settles in the test's process: if any participant read the wall clock for a market rule (the
BPP's gate on confirm, the ledger's registration or metering receipt times, the settlement run's due time),
the order would be refused or the run would never fall due, and the test would fail.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from bap.client import order_in, order_of
from bpp.catalog import example_config
from flexmarket.runner import Network
from kernel import clock
from tests.e2e.helpers import bap_client, eventually, own_network

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SPEED = 240.0  # simulated seconds per real second: 30 simulated minutes pass in 7.5 s
START = datetime(2023, 1, 24, 14, 0, tzinfo=UTC)  # a real DFS day; offers are for 16:00–20:00 UTC
HALF_HOUR = timedelta(minutes=30)


@pytest.fixture(scope="module")
def sim_network(pg_server_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    """A network of its own (database, queue, home) on a simulated clock started at START."""
    # The example catalog offers "tomorrow" 16:00–20:00 UTC: made as of the day before, that is START's day.
    clock_env = {
        "FLEXMARKET_CLOCK_START": START.isoformat(),
        "FLEXMARKET_CLOCK_SPEED": str(SPEED),
        "FLEXMARKET_CLOCK_ANCHOR": datetime.now(UTC).isoformat(),
    }
    with own_network(
        pg_server_url,
        redis_url,
        tmp_path_factory.mktemp("simclock"),
        prefix="fm_simclock",
        providers_config=example_config(2, now=START - timedelta(days=1)),
        env=clock_env,
    ) as net:
        yield net


def _ledger_key(role: str, participant: str | None = None) -> str:
    who = ["--participant", participant] if participant else []
    out = subprocess.run(
        [sys.executable, "-m", "flexmarket", "ledger", "apikey", "create", "--role", role, *who],
        capture_output=True,
        text=True,
        check=True,
        env=os.environ.copy(),
    )
    return out.stdout.strip().splitlines()[-1]


def _market_now() -> datetime:
    return clock.now()


def _window_after(now: datetime, lead: timedelta) -> tuple[datetime, datetime]:
    """The first half hour starting at least `lead` after `now` (the ledger's gate closure is 60 min)."""
    t = now + lead
    start = t.replace(minute=0, second=0, microsecond=0) + (HALF_HOUR if t.minute >= 30 else timedelta(0))
    if start < t:
        start += HALF_HOUR
    return start, start + HALF_HOUR


def _readings(first: datetime, end: datetime, kw: float) -> list[dict[str, Any]]:
    """Half-hourly kWh at a constant `kw` for the periods from `first` to `end`."""
    out = []
    t = first
    while t < end:
        out.append({"period_start": t.isoformat(), "energy_kwh": f"{kw / 2:.3f}"})
        t += HALF_HOUR
    return out


def test_an_order_settles_through_the_ledgers_own_task_on_a_simulated_2023_clock(sim_network: Network) -> None:
    assert clock.describe()["kind"] == "simulated"
    # Every participant reports the same market time (within what a few real seconds of requests cost).
    health = httpx.get(f"{sim_network.url('ledger')}/api/v1/healthz", timeout=10).json()
    their_now = datetime.fromisoformat(health["market_time"])
    assert abs((their_now - _market_now()).total_seconds()) < 10 * SPEED, (their_now, _market_now())
    assert their_now.year == 2023

    now = _market_now()
    lead = timedelta(minutes=120)  # the ledger's gate closure is 60 min; the rest is time to place the order
    start, end = _window_after(max(now, START.replace(hour=16) - lead), lead)
    assert end <= START.replace(hour=20), f"the network took too long to start: market time {now}"

    bap = bap_client(sim_network)
    tx = bap.search(start, end, 200, region="GB-R13")["transaction_id"]
    view = bap.wait(tx, lambda v: len(v["offers"]) >= 1, timeout=30)
    offer = view["offers"][0]
    provider, bpp_id, item = offer["provider_id"], offer["bpp_id"], offer["item_id"]
    kw = min(200.0, float(offer["available_kw"]))
    for action, state in (("select", "QUOTED"), ("init", "CREATED"), ("confirm", "ACCEPTED")):
        bap.order(
            action, tx, bpp_id, provider, item_id=item, power_kw=kw, window_start=start, window_end=end, meter_id=None
        )
        view = bap.wait(tx, order_in(provider, state), timeout=30)
    order = order_of(view, provider)
    assert order is not None and order["state"] == "ACCEPTED", order
    assert _market_now() < start - timedelta(minutes=60), "confirmed after gate closure: raise the lead time"

    # The BAP registers the order with the ledger; its registration time is market time (2023).
    finance = _ledger_key("finance")
    ledger_api = f"{sim_network.url('ledger')}/api/v1"
    auth = {"Authorization": f"Bearer {finance}"}
    ledger_order = eventually(
        lambda: (
            (r := httpx.get(f"{ledger_api}/orders/{order['order_id']}", headers=auth, timeout=10)).status_code == 200
            and r.json()
        ),
        timeout=30,
    )
    assert ledger_order["runs"] == []

    # The provider's meter readings reach the ledger through its API: 20 days of history for the baseline
    # now, the window's own once the market clock has passed it (the ledger refuses periods not yet ended).
    meter = ledger_order["meter_id"]
    provider_key = _ledger_key("provider", provider)

    def post(readings: list[dict[str, Any]]) -> None:
        r = httpx.post(
            f"{ledger_api}/metering",
            json={"meter_id": meter, "readings": readings},
            headers={"Authorization": f"Bearer {provider_key}"},
            timeout=30,
        )
        assert r.status_code in (200, 201), r.text

    site_kw = 2000.0
    post(_readings(start - timedelta(days=20), start - timedelta(days=1), site_kw))
    eventually(lambda: _market_now() >= end, timeout=(end - _market_now()).total_seconds() / SPEED + 10)
    assert httpx.get(f"{ledger_api}/orders/{order['order_id']}", headers=auth, timeout=10).json()["runs"] == []
    post(_readings(start - timedelta(days=1), start, site_kw) + _readings(start, end, site_kw - kw))

    # Nobody asks for settlement: the ledger's beat task settles run II once the market clock passes the window.
    summary = eventually(
        lambda: (
            (s := httpx.get(f"{ledger_api}/orders/{order['order_id']}", headers=auth, timeout=10).json())["runs"] and s
        ),
        timeout=90,
        interval=0.5,
    )
    run = summary["runs"][0]
    assert run["run"] == "II"
    as_of = datetime.fromisoformat(run["as_of"])
    assert end <= as_of < end + timedelta(days=1), (as_of, end)  # settled on the market clock, not the wall clock
    stored = httpx.get(f"{ledger_api}/settlement/{order['order_id']}/II", headers=auth, timeout=10).json()
    assert stored["clock"]["kind"] == "simulated"
    assert datetime.fromisoformat(stored["clock"]["start"]) == START
    assert float(stored["clock"]["speed"]) == SPEED
    assert int(run["lines_pence"]["utilisation"]) > 0, run  # paid for the metered reduction
