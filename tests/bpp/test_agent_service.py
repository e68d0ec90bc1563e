"""The BPP's catalog from its compute agent, on real PostgreSQL: offers come from the optimal plan,
a confirm re-plans with the reduction (or is refused with the agent's reason), every decision is
stored and queryable, and any process rebuilds the same agent with the orders accepted so far."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from bpp import agent_service, service
from bpp.catalog import CommitmentError, example_config, parse_config
from bpp.models import Offer, Order, OrderEvent, Provider
from kernel.db import session_scope


@pytest.fixture()
def platform(isolated_db: str):  # type: ignore[no-untyped-def]
    p = parse_config(example_config(1, agents=True))[0]
    with session_scope("bpp") as s:
        service.sync_platform(s, p)
    return p


def _order(s, offer: Offer, kw: float, state: str = "CREATED") -> Order:  # type: ignore[no-untyped-def]
    o = Order(
        id=str(uuid.uuid4()),
        bpp_id=offer.bpp_id,
        bap_id="bap",
        bap_uri="http://x",
        transaction_id=str(uuid.uuid4()),
        provider_id=offer.provider_id,
        item_id=offer.item_id,
        power_kw=kw,
        window_start=offer.window_start,
        window_end=offer.window_end,
        meter_id=offer.meter_id,
        settlement_method="P415",
        price_gbp_per_mwh=offer.price_gbp_per_mwh,
        state=state,
        city_code="GB-R13",
        country_code="GBR",
    )
    s.add(o)
    s.flush()
    return o


def test_offers_and_decisions_come_from_the_plan(platform) -> None:  # type: ignore[no-untyped-def]
    with session_scope("bpp") as s:
        offers = s.scalars(select(Offer).where(Offer.active)).all()
        assert offers, "the agent published no offer"
        assert all(o.item_id.endswith("-compute") for o in offers)
        assert all(
            o.window_start >= datetime.now(UTC).replace(minute=0, second=0, microsecond=0).replace(hour=0)
            for o in offers
        )
        assert all(o.spec["marginal_cost_gbp_per_mwh"] is not None for o in offers)
        # price = cost plus the configured margin (10% and £5/MWh)
        for o in offers:
            assert o.price_gbp_per_mwh >= o.spec["marginal_cost_gbp_per_mwh"] - 1e-6
        defer = agent_service.query_decisions(s, platform.subscriber_id, agent_service.DecisionQuery(action="defer"))
        assert defer and all("deferred" in d["rationale"] for d in defer)
        job = defer[0]["job_id"]
        assert {
            d["job_id"]
            for d in agent_service.query_decisions(s, platform.subscriber_id, agent_service.DecisionQuery(job_id=job))
        } == {job}


def test_confirm_replans_and_refuses_what_the_schedule_cannot_honour(platform) -> None:  # type: ignore[no-untyped-def]
    with session_scope("bpp") as s:
        offer = max(s.scalars(select(Offer).where(Offer.active)).all(), key=lambda o: o.available_kw)
        first = _order(s, offer, round(offer.available_kw * 0.5, 1))
        agent_service.commit(s, first, offer.location_id)
        service.transition(s, first, "ACCEPTED", "confirmed")
        commits = agent_service.query_decisions(s, platform.subscriber_id, agent_service.DecisionQuery(action="commit"))
        assert [d["order_id"] for d in commits] == [first.id]
        too_much = _order(s, offer, round(offer.available_kw * 4, 1))
        with pytest.raises(CommitmentError) as e:
            agent_service.commit(s, too_much, offer.location_id)
        assert e.value.kind == "quantity_unavailable" and "cannot honour" in str(e.value)
        refusals = agent_service.query_decisions(
            s, platform.subscriber_id, agent_service.DecisionQuery(action="refuse")
        )
        assert [d["order_id"] for d in refusals] == [too_much.id]
        # Any process rebuilds the agent with the accepted order replayed as a constraint.
        row = s.get(Provider, (offer.bpp_id, offer.provider_id))
        agent = agent_service.build_agent(s, row)
        [c] = agent.summary()["commitments"]
        assert c["order_id"] == first.id and c["reduction_kw"] == first.power_kw
        inst, plan = agent.instance, agent.plan()
        k = inst.site_index(offer.location_id)
        a, b = inst.slot_of(first.window_start), inst.slot_of(first.window_end)
        grid = plan.grid_import_kw(inst)[k, a:b]
        assert all(g <= base - first.power_kw + 1e-6 for g, base in zip(grid, c["baseline_kw"], strict=True))
        assert s.scalars(select(OrderEvent).where(OrderEvent.order_id == first.id)).all()
