"""Every offer in a search states, beside its planned kW, the reduction it expects to be paid for against the
settlement baseline (bpp/paid_reduction.py, README "Offers that stay true"), on the shared network's real
processes: a site without metered history on the ledger says null with the reason; once its provider has posted
30 days of readings to the ledger and the BPP worker has re-planned (`bpp.replan`, which restates static offers'
expected paid from the ledger, bpp/replan.py), a later search's offers for that site state a number — here the
site's readings sit at its stated baseline, so the whole offered kW — while the other sites still say null."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from celery import Celery

from flexmarket.runner import Network
from tests.e2e.helpers import bap_client, eventually

pytestmark = pytest.mark.e2e

PROVIDER, METER = "dc-02", "MTR-0002"  # bpp/catalog.py example_config: provider 2
SITE_KW = 2400.0  # its stated baseline (example_config: 2000 + 400 × 1)
PROVIDERS = {"dc-01", "dc-02", "dc-03"}


def _search(network: Network) -> list[dict[str, Any]]:
    bap = bap_client(network)
    now = datetime.now(UTC)
    tx = bap.search(now + timedelta(hours=1), now + timedelta(hours=47), 50, region="GB-R13")["transaction_id"]
    view = bap.wait(tx, lambda v: {o["provider_id"] for o in v["offers"]} >= PROVIDERS, timeout=30)
    offers: list[dict[str, Any]] = view["offers"]
    return offers


def _post_history(network: Network) -> None:
    """30 whole days of the site's readings at its stated baseline, with the provider's own ledger key."""
    key = network.manifest["participants"]["ledger"]["api_keys"]["providers"][PROVIDER]
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - timedelta(days=30)
    readings = [
        {"period_start": (start + timedelta(minutes=30) * i).isoformat(), "energy_kwh": f"{SITE_KW / 2:.3f}"}
        for i in range(30 * 48)
    ]
    r = httpx.post(
        f"{network.url('ledger')}/api/v1/metering",
        json={"meter_id": METER, "readings": readings},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert r.status_code == 201, r.text


def _refreshed(offers: list[dict[str, Any]]) -> bool:
    """The re-plan has restated every offer: ours with a number, the others with what the ledger said."""
    ours = [o for o in offers if o["provider_id"] == PROVIDER]
    others = [o for o in offers if o["provider_id"] in PROVIDERS - {PROVIDER}]
    return (
        bool(ours)
        and all(o["expected_paid_kw"] is not None for o in ours)
        and all("the ledger holds no readings" in (o["expected_paid_reason"] or "") for o in others)
    )


def test_search_offers_state_their_expected_paid_reduction(network: Network, redis_url: str, celery_queue: str) -> None:
    before = _search(network)
    assert before
    for offer in before:  # no site has metered history on the ledger yet
        assert "expected_paid_kw" in offer and offer["expected_paid_kw"] is None, offer
        assert "no metered history for site" in offer["expected_paid_reason"], offer

    _post_history(network)
    # the BPP worker re-plans (as its beat does every FLEXMARKET_REPLAN_INTERVAL_S): static offers restated
    Celery(broker=redis_url).send_task("bpp.replan", queue=f"{celery_queue}.bpp")
    after = eventually(lambda: _refreshed(offers := _search(network)) and offers, timeout=45, interval=1)

    ours = [o for o in after if o["provider_id"] == PROVIDER]
    for offer in ours:  # readings at the planned import: the whole offered kW is expected to be paid
        assert float(offer["expected_paid_kw"]) == float(offer["available_kw"]), offer
        assert offer["expected_paid_reason"] is None, offer
    others = [o for o in after if o["provider_id"] in PROVIDERS - {PROVIDER}]
    assert {o["provider_id"] for o in others} == PROVIDERS - {PROVIDER}
    for offer in others:
        assert offer["expected_paid_kw"] is None, offer
        assert offer["expected_paid_reason"].startswith("no metered history for site dc-0"), offer
        assert "the ledger holds no readings of meter MTR-" in offer["expected_paid_reason"], offer
