"""Offers that stay true (bpp/replan.py), on real PostgreSQL: a re-plan moves the plan forward with every
accepted order imposed, re-publishes what it leaves and withdraws what it no longer can deliver — a later
select of a withdrawn offer is refused naming the offer and why — the decision log records what changed, a
signal update re-plans (and every later rebuild of the agent applies it), and the beat task re-plans every
provider the platform hosts, one worker per provider at a time."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import func, select

from beckn.errors import BecknError
from bpp import agent_service, replan, service
from bpp.catalog import PlatformConfig, example_config, load_config
from bpp.models import Offer, Order, Provider
from bpp.signal_providers import SignalUpdate
from kernel.config import reset_settings
from kernel.db import session_scope
from schemas.flex import OrderSpec, order_spec_to_order
from schemas.messages import OrderMessage


@pytest.fixture()
def platform(isolated_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PlatformConfig:
    """The example platform (a compute and a battery-only provider, both with agents), from a providers file
    the beat task reads too, published as at start-up."""
    path = tmp_path / "providers.json"
    path.write_text(json.dumps(example_config(1, agents=True)))
    monkeypatch.setenv("FLEXMARKET_PROVIDERS_FILE", str(path))
    reset_settings()
    p = load_config(path)[0]
    with session_scope("bpp") as s:
        service.sync_platform(s, p)
    return p


def _anchor(bpp_id: str, provider_id: str) -> Any:
    with session_scope("bpp") as s:
        row = s.get(Provider, (bpp_id, provider_id))
        assert row is not None
        return row.agent_anchor_utc


def _accept(s: Any, offer: Offer, power_kw: float) -> Order:
    o = Order(
        id=str(uuid.uuid4()),
        bpp_id=offer.bpp_id,
        bap_id="bap",
        bap_uri="http://x",
        transaction_id=str(uuid.uuid4()),
        provider_id=offer.provider_id,
        item_id=offer.item_id,
        power_kw=power_kw,
        window_start=offer.window_start,
        window_end=offer.window_end,
        meter_id=offer.meter_id,
        settlement_method="P415",
        price_gbp_per_mwh=offer.price_gbp_per_mwh,
        state="CREATED",
        city_code="GB-R13",
        country_code="GBR",
    )
    s.add(o)
    s.flush()
    agent_service.commit(s, o, offer.location_id)
    service.transition(s, o, "ACCEPTED", "confirmed")
    return o


def _select(bpp_id: str, offer: Offer) -> Any:
    """A select of the offer as the pipeline hands it to the BPP's acceptance check."""
    spec = OrderSpec(offer.provider_id, offer.item_id, 10, offer.window_start, offer.window_end)
    return SimpleNamespace(
        action="select",
        message=OrderMessage(order=order_spec_to_order(spec)),
        receiver=SimpleNamespace(subscriber_id=bpp_id),
        context=SimpleNamespace(bap_id="bap", transaction_id=str(uuid.uuid4())),
    )


def _replans(s: Any, bpp_id: str, provider_id: str) -> list[dict[str, Any]]:
    q = agent_service.DecisionQuery(provider_id=provider_id, action="replan")
    return [d for d in agent_service.query_decisions(s, bpp_id, q) if ":replan-" in d["decision_id"]]


def test_a_sold_out_offer_is_withdrawn_and_a_later_select_refused_naming_it(platform: PlatformConfig) -> None:
    bpp_id = platform.subscriber_id
    with session_scope("bpp") as s:
        compute = s.scalars(select(Offer).where(Offer.active, Offer.provider_id == "dc-01")).all()
        offer = max(compute, key=lambda o: o.available_kw)
        item, sold_kw = offer.item_id, offer.available_kw
        order_id = _accept(s, offer, sold_kw).id
        service.accept_order(s, _select(bpp_id, offer), 0)  # still on sale until the re-plan
    provider = platform.provider("dc-01")
    assert provider is not None
    result = replan.replan_provider(
        bpp_id, provider, now=_anchor(bpp_id, "dc-01") + timedelta(minutes=1), trigger=replan.Periodic()
    )
    assert result.skipped is None and result.withdrawn >= 1
    with session_scope("bpp") as s:
        row = s.get(Offer, (bpp_id, "dc-01", item))
        assert row is not None and not row.active and row.withdrawn_at is not None
        assert "less than 1 kW" in (row.withdrawn_reason or "")
        with pytest.raises(BecknError) as refused:
            service.accept_order(s, _select(bpp_id, row), 0)
        assert refused.value.kind == "item_not_found"
        assert item in refused.value.message and "withdrawn" in refused.value.message
        assert "less than 1 kW" in refused.value.message
        [record] = _replans(s, bpp_id, "dc-01")
        withdrawn = {w["offer_id"]: w for w in record["details"]["offers"]["withdrawn"]}
        assert withdrawn[item]["available_kw"] == sold_kw and "less than 1 kW" in withdrawn[item]["reason"]
        assert "periodic re-plan" in record["rationale"]
        # the committed order stays imposed on the new plan: any process rebuilds it from the new anchor
        rebuilt = agent_service.build_agent(s, s.get(Provider, (bpp_id, "dc-01")))  # type: ignore[arg-type]
        assert [c["order_id"] for c in rebuilt.summary()["commitments"]] == [order_id]
        assert item not in {o.item_id for o in agent_service.catalog_of(rebuilt)}


def test_a_signal_update_replans_and_every_later_plan_applies_it(platform: PlatformConfig) -> None:
    from bpp import tasks

    bpp_id = platform.subscriber_id
    anchor = _anchor(bpp_id, "dc-01")
    with session_scope("bpp") as s:
        before = {o.item_id: o.price_gbp_per_mwh for o in s.scalars(select(Offer).where(Offer.active))}
    spike = SignalUpdate(
        region="GB",  # the agents' signal region (their sites' catalog city code is GB-R13)
        start_utc=anchor + timedelta(hours=4),
        end_utc=anchor + timedelta(hours=8),
        price_gbp_per_mwh=2500.0,
        reason="price spike",
    )
    assert tasks.signal_update(spike.to_dict()) == 2  # both providers plan a site on GB
    with session_scope("bpp") as s:
        row = s.get(Provider, (bpp_id, "dc-01"))
        assert row is not None and row.signal_updates == [spike.to_dict()]
        [record] = _replans(s, bpp_id, "dc-01")
        assert "price spike" in record["rationale"] and "2500" in record["rationale"]
        changes = record["details"]["offers"]
        assert changes["added"] or changes["withdrawn"] or changes["changed"], "a £2,500/MWh spike changed nothing"
        for c in changes["changed"]:
            assert set(c) - {"offer_id"} <= {"available_kw", "price_gbp_per_mwh"}
            for v in c.values():
                assert v == c["offer_id"] or v["before"] != v["after"]
        after = {o.item_id: (o.available_kw, o.price_gbp_per_mwh) for o in s.scalars(select(Offer).where(Offer.active))}
        assert {k for k in after} != set(before) or any(after[k][1] != before[k] for k in after)
        # a confirm rebuilds the agent with the stored update: it plans what the published offers came from
        rebuilt = {
            o.item_id: (o.available_kw, o.price_gbp_per_mwh)
            for o in agent_service.catalog_of(agent_service.build_agent(s, row))
        }
        assert {k: v for k, v in after.items() if k.startswith("dc-01")} == rebuilt


def test_the_beat_task_replans_every_hosted_provider(platform: PlatformConfig) -> None:
    from bpp import tasks
    from kernel.celery_app import BEAT_SCHEDULE

    assert BEAT_SCHEDULE["bpp-replan"]["task"] == "bpp.replan"
    assert tasks.replan_agents() == 2
    with session_scope("bpp") as s:
        for provider_id in ("dc-01", "bess-01"):
            [record] = _replans(s, platform.subscriber_id, provider_id)
            assert set(record["details"]["offers"]) == {"added", "withdrawn", "changed"}


def test_a_provider_being_replanned_elsewhere_is_skipped(platform: PlatformConfig) -> None:
    provider = platform.provider("dc-01")
    assert provider is not None
    with session_scope("bpp") as other:  # another worker holds the provider's lock
        assert (
            other.scalar(select(func.pg_advisory_xact_lock(replan.lock_key(platform.subscriber_id, "dc-01"))))
            is not False
        )
        result = replan.replan_provider(
            platform.subscriber_id, provider, now=_anchor(platform.subscriber_id, "dc-01"), trigger=replan.Periodic()
        )
    assert result.skipped == "another worker is re-planning it"
    with session_scope("bpp") as s:
        assert _replans(s, platform.subscriber_id, "dc-01") == []
