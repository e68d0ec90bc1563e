"""A provider's load-shift schedule on the shared network's real processes: a data centre joins with an agent, and
`GET /{slug}/providers/{id}/schedule` on the BPP answers the plan its published offers come from — each offer's
window lies in the plan's slots, its kW is no more than the meter's planned import in any of them (a compute
site's import cannot go below zero, and an offer is a reduction of that import), and its expected carbon is the
mean of the schedule's carbon over its window (the same signals)."""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Any

import httpx
import pytest

from bpp.provider_file import provider_template
from flexmarket.runner import Network
from tests.e2e.helpers import rows
from tests.e2e.test_offers_stay_true import _admin

pytestmark = pytest.mark.e2e

PROVIDER_ID = "dc-schedule-e2e"


def _published(network: Network) -> tuple[datetime, list[dict[str, Any]]]:
    db = network.manifest["database_url"]
    [(anchor,)] = rows(db, "select agent_anchor_utc from bpp.providers where provider_id = %s", PROVIDER_ID)
    specs = rows(db, "select spec from bpp.offers where provider_id = %s and active", PROVIDER_ID)
    return anchor, [spec for (spec,) in specs]


def test_a_providers_schedule_is_the_plan_its_offers_come_from(network: Network, bpp_platform: dict[str, Any]) -> None:
    url, auth = _admin(network, bpp_platform)
    data = provider_template(PROVIDER_ID)
    data["agent"]["jobs"]["n_jobs"] = 60  # a small job mix: the BPP plans it within the request
    assert httpx.post(url, json=data, headers=auth, timeout=120).status_code == 201
    schedule_url = f"{bpp_platform['url']}/providers/{PROVIDER_ID}/schedule"
    try:
        anchor, offers = _published(network)
        answer = httpx.get(schedule_url, timeout=120)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert (body["provider_id"], body["resource_type"]) == (PROVIDER_ID, "compute")
        assert body["sites"] == [data["agent"]["sites"][0]["id"]]
        assert datetime.fromisoformat(body["plan_start_utc"]) == anchor  # the published plan's own start
        slots = body["slots"]
        assert all(a["end"] == b["start"] for a, b in itertools.pairwise(slots))
        assert offers, "the joined provider published no offer"
        by_start = {datetime.fromisoformat(s["start"]): s for s in slots}
        for offer in offers:
            start, end = datetime.fromisoformat(offer["window_start"]), datetime.fromisoformat(offer["window_end"])
            window = [s for t, s in by_start.items() if start <= t < end]
            assert window and datetime.fromisoformat(window[-1]["end"]) == end, offer["item_id"]
            assert offer["available_kw"] <= min(s["planned_kw"] for s in window) + 1e-3, (offer, window)
            mean_carbon = sum(s["carbon_g_per_kwh"] for s in window) / len(window)
            assert offer["expected_carbon_g_per_kwh"] == pytest.approx(mean_carbon, abs=0.11), (offer, window)
        for key in ("baseline_cost_gbp", "planned_cost_gbp", "baseline_carbon_kg", "planned_carbon_kg"):
            assert isinstance(body["totals"][key], float | int)
        first = slots[2]["start"]
        part = httpx.get(schedule_url, params={"start": first, "end": slots[4]["start"]}, timeout=120)
        assert part.status_code == 200 and part.json()["slots"] == slots[2:4]
        bad = httpx.get(schedule_url, params={"start": slots[4]["start"], "end": first}, timeout=30)
        assert bad.status_code == 400 and bad.json()["error"]["message"].startswith("end:"), bad.text
        static = static_provider(network, bpp_platform)
        missing = httpx.get(f"{bpp_platform['url']}/providers/{static}/schedule", timeout=30)
        assert missing.status_code == 404 and "no planning agent" in missing.json()["error"]["message"]
    finally:
        httpx.delete(f"{url}/{PROVIDER_ID}", headers=auth, timeout=30)


def static_provider(network: Network, bpp_platform: dict[str, Any]) -> str:
    """A provider of the platform's providers file: static offers, no agent."""
    sql = (
        "select provider_id from bpp.providers where bpp_id = %s and (agent is null or agent::text = 'null') "
        "order by provider_id limit 1"
    )
    [(provider_id,)] = rows(network.manifest["database_url"], sql, bpp_platform["subscriber_id"])
    return str(provider_id)
