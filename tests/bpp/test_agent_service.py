"""The BPP's catalog from its compute agent, on real PostgreSQL: offers come from the optimal plan,
a confirm re-plans with the reduction (or is refused with the agent's reason), every decision is
stored and queryable, and any process rebuilds the same agent with the orders accepted so far."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from bpp import agent_service, service
from bpp.catalog import CommitmentError, example_config, parse_config
from bpp.domain import slots_between
from bpp.models import Offer, Order, OrderEvent, Provider
from bpp.storage_agent import StorageAgent
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
        offers = s.scalars(select(Offer).where(Offer.active, Offer.provider_id == "dc-01")).all()
        assert offers, "the agent published no offer"
        assert all(o.item_id.endswith("-compute") and o.spec["resource_type"] == "compute" for o in offers)
        storage = s.scalars(select(Offer).where(Offer.active, Offer.provider_id == "bess-01")).all()
        assert storage, "the example's battery-only provider published no offer"
        assert all(o.item_id.endswith("-storage") and o.spec["resource_type"] == "storage" for o in storage)
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
        compute = s.scalars(select(Offer).where(Offer.active, Offer.provider_id == "dc-01")).all()
        offer = max(compute, key=lambda o: o.available_kw)
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


def test_a_battery_only_provider_sells_storage_and_confirms_through_its_storage_agent(platform) -> None:  # type: ignore[no-untyped-def]
    """bess-01 is planned by a storage agent: a confirm re-plans the battery with the order imposed,
    an order the battery cannot add on top is refused with the reason, and a rebuilt agent (any
    process) replays the accepted order as a cap on the meter's net import."""
    with session_scope("bpp") as s:
        storage = s.scalars(select(Offer).where(Offer.active, Offer.provider_id == "bess-01")).all()
        offer = max(storage, key=lambda o: o.available_kw)
        first = _order(s, offer, round(offer.available_kw * 0.5, 1))
        agent_service.commit(s, first, offer.location_id)
        service.transition(s, first, "ACCEPTED", "confirmed")
        too_much = _order(s, offer, offer.available_kw)
        with pytest.raises(CommitmentError) as e:
            agent_service.commit(s, too_much, offer.location_id)
        assert e.value.kind == "quantity_unavailable" and "cannot hold net import" in str(e.value)
        [refusal] = agent_service.query_decisions(
            s, platform.subscriber_id, agent_service.DecisionQuery(provider_id="bess-01", action="refuse")
        )
        assert refusal["order_id"] == too_much.id
        row = s.get(Provider, (offer.bpp_id, offer.provider_id))
        agent = agent_service.build_agent(s, row)
        assert agent.resource_type == "storage"
        [c] = agent.summary()["commitments"]
        assert c["order_id"] == first.id and c["reduction_kw"] == first.power_kw
        assert isinstance(agent, StorageAgent)
        net = agent.plan()[offer.location_id].net_import_kw
        a = slots_between(agent.now_utc, first.window_start)
        for i, base in enumerate(c["baseline_kw"]):
            assert net[a + i] <= base - first.power_kw + 1e-6
        # an update goes through the same planner: a smaller order is fine, one beyond the battery is not
        window = {"start": first.window_start, "end": first.window_end}
        agent_service.check_update(s, first, offer.location_id, power_kw=first.power_kw / 2, **window)
        with pytest.raises(CommitmentError) as e:
            agent_service.check_update(s, first, offer.location_id, power_kw=offer.available_kw * 3, **window)
        assert e.value.kind == "update_not_possible"


def test_confirms_of_one_provider_are_decided_one_at_a_time(platform, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A site never over-sells under concurrency: while one confirm of a provider is being decided (its
    transaction open), a second confirm of another of its offers waits, then plans with the first accepted."""
    planned_with: list[str] = []
    build = agent_service.build_agent

    def recording_build(session, row, **kw):  # type: ignore[no-untyped-def]
        if threading.current_thread().name == "second":  # what the second confirm's plan imposes
            planned_with.extend(o.id for o, _ in agent_service.accepted_orders(session, row))
        return build(session, row, **kw)

    monkeypatch.setattr(agent_service, "build_agent", recording_build)
    with session_scope("bpp") as s:
        compute = s.scalars(select(Offer).where(Offer.active, Offer.provider_id == "dc-01")).all()
        first_offer, second_offer = sorted(compute, key=lambda o: o.window_start)[:2]
        first = _order(s, first_offer, round(first_offer.available_kw * 0.2, 1)).id
        second = _order(s, second_offer, round(second_offer.available_kw * 0.2, 1)).id
    events: list[str] = []

    def confirm_first() -> None:
        with session_scope("bpp") as s:
            o = s.get(Order, first)
            agent_service.commit(s, o, first_offer.location_id)
            service.transition(s, o, "ACCEPTED", "confirmed")
            events.append("first decided")
            time.sleep(1.0)  # the transaction stays open a while
            events.append("first commits")

    def confirm_second() -> None:
        time.sleep(0.3)
        with session_scope("bpp") as s:
            o = s.get(Order, second)
            agent_service.commit(s, o, second_offer.location_id)
            events.append("second decided")

    threads = [threading.Thread(target=confirm_first), threading.Thread(target=confirm_second, name="second")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert events == ["first decided", "first commits", "second decided"]
    assert planned_with == [first]  # the second plan imposed the first order
