"""A battery-only provider sells storage flexibility end to end, on real processes.

The network runs on a simulated 2023 clock (as tests/e2e/test_simulated_clock.py, whose helpers this
uses) with the example catalog's battery-only provider, ``bess-01``, planned by its storage agent: a
buyer's search shows its ``storage`` offers; select → init → confirm re-plans the battery with the
order imposed; the provider's meter readings reach the ledger; and the ledger's own beat task settles
the order once the market clock passes the window, paying for the metered reduction.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from bap.client import order_in, order_of
from bpp.catalog import example_config
from flexmarket.runner import Network
from tests.e2e.helpers import bap_client, eventually, own_network
from tests.e2e.test_simulated_clock import SPEED, START, _ledger_key, _market_now, _readings

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PROVIDER = "bess-01"
OTHER_LOAD_KW = 300.0  # the example battery site's other load: its meter's usual import


def _storage_only_catalog() -> dict[str, Any]:
    """The example catalog with agents, keeping only its battery-only provider (the compute agents'
    600-job plans would cost the simulated clock hours at start-up)."""
    config = example_config(1, now=START - timedelta(days=1), agents=True)
    for platform in config["platforms"]:
        platform["providers"] = [p for p in platform["providers"] if p["id"] == PROVIDER]
    assert config["platforms"][0]["providers"], "the example catalog has no battery-only provider"
    return config


@pytest.fixture(scope="module")
def storage_network(pg_server_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    clock_env = {
        "FLEXMARKET_CLOCK_START": START.isoformat(),
        "FLEXMARKET_CLOCK_SPEED": str(SPEED),
        "FLEXMARKET_CLOCK_ANCHOR": datetime.now(UTC).isoformat(),
    }
    with own_network(
        pg_server_url,
        redis_url,
        tmp_path_factory.mktemp("storage"),
        prefix="fm_storage",
        providers_config=_storage_only_catalog(),
        env=clock_env,
    ) as net:
        yield net


def _first_window_after(offers: list[dict[str, Any]], earliest: datetime) -> dict[str, Any]:
    later = [o for o in offers if datetime.fromisoformat(o["window_start"]) >= earliest]
    assert later, f"no storage offer starts after {earliest}: {offers}"
    return min(later, key=lambda o: o["window_start"])


def test_a_storage_order_is_searched_confirmed_metered_and_settled(storage_network: Network) -> None:
    bap = bap_client(storage_network)
    now = _market_now()
    # confirm before the ledger's 60-minute gate closure, with time to place the order
    earliest = now + timedelta(minutes=100)
    search_start = now.replace(minute=0, second=0, microsecond=0)
    tx = bap.search(search_start, search_start + timedelta(hours=12), 100, region="GB-R13", resource_type="storage")[
        "transaction_id"
    ]
    view = bap.wait(tx, lambda v: len(v["offers"]) >= 1, timeout=30)
    assert {o["provider_id"] for o in view["offers"]} == {PROVIDER}
    assert all(o["resource_type"] == "storage" for o in view["offers"]), view["offers"]
    offer = _first_window_after(view["offers"], earliest)
    start, end = datetime.fromisoformat(offer["window_start"]), datetime.fromisoformat(offer["window_end"])
    kw = round(min(100.0, float(offer["available_kw"])), 1)

    for action, state in (("select", "QUOTED"), ("init", "CREATED"), ("confirm", "ACCEPTED")):
        bap.order(
            action,
            tx,
            offer["bpp_id"],
            PROVIDER,
            item_id=offer["item_id"],
            power_kw=kw,
            window_start=start,
            window_end=end,
            meter_id=None,
        )
        view = bap.wait(tx, order_in(PROVIDER, state), timeout=60)
    order = order_of(view, PROVIDER)
    assert order is not None and order["state"] == "ACCEPTED", order
    assert _market_now() < start - timedelta(minutes=60), "confirmed after gate closure: raise the lead time"

    finance = _ledger_key("finance")
    ledger_api = f"{storage_network.url('ledger')}/api/v1"
    auth = {"Authorization": f"Bearer {finance}"}
    ledger_order = eventually(
        lambda: (
            (r := httpx.get(f"{ledger_api}/orders/{order['order_id']}", headers=auth, timeout=10)).status_code == 200
            and r.json()
        ),
        timeout=30,
    )
    provider_key = _ledger_key("provider", PROVIDER)

    def post(readings: list[dict[str, Any]]) -> None:
        r = httpx.post(
            f"{ledger_api}/metering",
            json={"meter_id": ledger_order["meter_id"], "readings": readings},
            headers={"Authorization": f"Bearer {provider_key}"},
            timeout=30,
        )
        assert r.status_code in (200, 201), r.text

    # 20 days of the site's usual import for the baseline; the window's own readings (the battery
    # covering `kw` of the site's load) once the market clock has passed it
    post(_readings(start - timedelta(days=20), start - timedelta(days=1), OTHER_LOAD_KW))
    eventually(lambda: _market_now() >= end, timeout=(end - _market_now()).total_seconds() / SPEED + 10)
    post(_readings(start - timedelta(days=1), start, OTHER_LOAD_KW) + _readings(start, end, OTHER_LOAD_KW - kw))

    summary = eventually(
        lambda: (
            (s := httpx.get(f"{ledger_api}/orders/{order['order_id']}", headers=auth, timeout=10).json())["runs"] and s
        ),
        timeout=120,
        interval=0.5,
    )
    run = summary["runs"][0]
    assert int(run["lines_pence"]["utilisation"]) > 0, run  # paid for the metered reduction
