"""Offers that stay true, on the shared network's real processes: a data centre joins with an agent, a buyer
confirms the whole of one of its offers, the BPP worker's beat task `bpp.replan` re-plans, the sold-out offer is
withdrawn, and a later select of it is refused naming the offer and why (never a broken order)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from celery import Celery

from bap.client import order_in, order_of
from bpp.provider_file import provider_template
from flexmarket.runner import Network
from tests.e2e.conftest import Signer
from tests.e2e.helpers import bap_client, eventually, rows
from tests.e2e.test_bad_input import assert_nack, request
from tests.e2e.test_provider_join import _order, _slug

pytestmark = pytest.mark.e2e

PROVIDER_ID = "dc-replan-e2e"


def _admin(network: Network, bpp_platform: dict[str, Any]) -> tuple[str, dict[str, str]]:
    bpp = network.manifest["participants"]["bpp"]
    return f"{bpp['base_url']}/admin/{_slug(bpp_platform)}/providers", {"Authorization": f"Bearer {bpp['admin_token']}"}


def _buy_all_of_one_offer(network: Network) -> dict[str, Any]:
    bap = bap_client(network)
    now = datetime.now(UTC)
    tx = bap.search(now + timedelta(hours=3), now + timedelta(hours=47), 1, region="GB-R13")["transaction_id"]
    view = bap.wait(tx, lambda v: any(o["provider_id"] == PROVIDER_ID for o in v["offers"]), timeout=30)
    ours = [o for o in view["offers"] if o["provider_id"] == PROVIDER_ID]
    offer = max(ours, key=lambda o: float(o["available_kw"]))
    start, end = datetime.fromisoformat(offer["window_start"]), datetime.fromisoformat(offer["window_end"])
    for action, state in (("select", "QUOTED"), ("init", "CREATED"), ("confirm", "ACCEPTED")):
        bap.order(
            action,
            tx,
            offer["bpp_id"],
            PROVIDER_ID,
            item_id=offer["item_id"],
            power_kw=float(offer["available_kw"]),
            window_start=start,
            window_end=end,
        )
        view = bap.wait(tx, order_in(PROVIDER_ID, state), timeout=60)
    order = order_of(view, PROVIDER_ID)
    assert order is not None and order["state"] == "ACCEPTED", order
    return offer


def test_a_replan_withdraws_a_sold_out_offer_and_a_later_select_is_refused(
    network: Network, bpp_platform: dict[str, Any], bap_signer: Signer, redis_url: str, celery_queue: str
) -> None:
    url, auth = _admin(network, bpp_platform)
    data = provider_template(PROVIDER_ID)
    data["agent"]["jobs"]["n_jobs"] = 60  # a small job mix: the BPP plans it within the request
    assert httpx.post(url, json=data, headers=auth, timeout=120).status_code == 201
    try:
        offer = _buy_all_of_one_offer(network)
        item = offer["item_id"]
        db = network.manifest["database_url"]
        # the BPP worker re-plans (as its beat does every FLEXMARKET_REPLAN_INTERVAL_S)
        Celery(broker=redis_url).send_task("bpp.replan", queue=f"{celery_queue}.bpp")
        sql = "select active, withdrawn_reason from bpp.offers where provider_id = %s and item_id = %s"
        [(active, reason)] = eventually(lambda: (r := rows(db, sql, PROVIDER_ID, item)) and not r[0][0] and r, 90)
        assert not active and "less than 1 kW" in reason
        select = {"order": _order(PROVIDER_ID, offer)}
        refused = bap_signer.post(bpp_platform["url"] + "/select", request(bap_signer, bpp_platform, "select", select))
        body = assert_nack(refused, 200, "30004", item)
        assert "withdrawn" in body["error"]["message"] and "less than 1 kW" in body["error"]["message"]
        decisions = httpx.get(
            f"{bpp_platform['url']}/decisions", params={"provider_id": PROVIDER_ID, "action": "replan"}, timeout=10
        )
        assert decisions.status_code == 200, decisions.text  # the re-plan's record names the withdrawn offer
        records = [d for d in decisions.json() if ":replan-" in d["decision_id"]]
        assert any(item in {w["offer_id"] for w in d["details"]["offers"]["withdrawn"]} for d in records), records
    finally:
        httpx.delete(f"{url}/{PROVIDER_ID}", headers=auth, timeout=30)
