"""A provider's load-shift schedule (bpp/schedule.py, bpp/schedule_service.py, `GET /{slug}/providers/{id}/schedule`):
the invariants of the pure shaping over random instances (energy moves but is not lost; orders are honoured; slots
are contiguous; totals agree with the plan's own score), then the use case and the route on real PostgreSQL with
the example's compute and battery-only agents and accepted orders."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, assume, given, settings
from sqlalchemy import select

from beckn.webapp import create_base_app
from bpp import agent_service, service
from bpp.agent import ComputeAgent
from bpp.baselines import run_at_release
from bpp.catalog import PlatformConfig, example_config, parse_config
from bpp.domain import CommittedReduction, Instance
from bpp.models import Offer, Order, Provider
from bpp.plan import Plan
from bpp.router import router
from bpp.schedule import (
    Horizon,
    Schedule,
    build_schedule,
    check_range,
    committed_caps_kw,
    committed_reduction_kw,
    compute_series,
)
from bpp.schedule_service import NoSchedule, ScheduleQuery, provider_schedule
from bpp.scheduler import SchedulingInfeasible, solve
from bpp.storage_agent import StorageAgent
from kernel.db import session_scope
from tests.bpp.ctss_helpers import START, instances

PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TOL_KWH = 1e-4


def _solved(inst: Instance) -> tuple[Plan, Plan]:
    try:
        plan = solve(inst)
    except SchedulingInfeasible:
        assume(False)
        raise
    return plan, run_at_release(inst)


def _schedule(inst: Instance, plan: Plan, baseline: Plan, **window: Any) -> Schedule:
    return build_schedule(
        provider_id="p",
        resource_type="compute",
        horizon=Horizon(start_utc=inst.start_utc, slot_minutes=inst.slot_minutes, n_slots=inst.n_slots),
        sites=compute_series(inst, plan, baseline),
        commitments=inst.commitments,
        as_of_utc=inst.start_utc,
        **window,
    )


def _shift_kwh(schedule: Schedule) -> float:
    hours = schedule.horizon.slot_hours
    return sum((s.baseline_kw - s.planned_kw) * hours for s in schedule.slots)


# -- the pure shaping ------------------------------------------------------------------------------------------
@PROPS
@given(instances(contiguous_only=True))
def test_with_no_battery_and_no_solar_shifting_conserves_energy(inst: Instance) -> None:
    """Every job runs inside the horizon in both plans (the instances release each job with room to finish), no
    battery stores and no solar offsets: Σ (baseline − planned) × h is zero — the plan moves energy, never drops it."""
    plan, baseline = _solved(inst)
    assert all(s.battery is None and not s.solar_kw.any() for s in inst.sites)
    sched = _schedule(inst, plan, baseline)
    moved_kwh = sum(abs(s.baseline_kw - s.planned_kw) * sched.horizon.slot_hours for s in sched.slots)
    assert _shift_kwh(sched) == pytest.approx(0.0, abs=TOL_KWH * max(1.0, moved_kwh))


@PROPS
@given(instances())
def test_the_energy_shifted_is_what_batteries_store_and_extra_solar_gives(inst: Instance) -> None:
    """With batteries and solar: Σ (baseline − planned) × h = (solar the plan uses beyond run-at-release's) − (net
    energy its batteries take in), both read from the plans' own arrays, not from the schedule."""
    plan, baseline = _solved(inst)
    h = inst.slot_hours
    extra_solar_kwh = float((plan.solar_used_kw.sum() - baseline.solar_used_kw.sum()) * h)
    stored_kwh = float((plan.charge_kw.sum() - plan.discharge_kw.sum()) * h)
    assert float(baseline.charge_kw.sum() + baseline.discharge_kw.sum()) == 0.0  # run-at-release leaves them idle
    sched = _schedule(inst, plan, baseline)
    assert _shift_kwh(sched) == pytest.approx(extra_solar_kwh - stored_kwh, abs=1e-3)


@PROPS
@given(instances())
def test_orders_are_honoured_slots_are_contiguous_and_totals_are_the_plans_score(inst: Instance) -> None:
    plan, baseline = _solved(inst)
    sched = _schedule(inst, plan, baseline)
    slots = sched.slots
    assert len(slots) == inst.n_slots and slots[0].start_utc == inst.start_utc
    assert all(a.end_utc == b.start_utc for a, b in itertools.pairwise(slots))
    assert all(s.end_utc - s.start_utc == timedelta(minutes=inst.slot_minutes) for s in slots)
    covered = {t for c in inst.commitments for t in range(inst.slot_of(c.start_utc), inst.slot_of(c.end_utc))}
    domain_caps, planned = inst.commitment_caps_kw(), plan.grid_import_kw(inst)  # the model's own caps
    for t, s in enumerate(slots):
        if t in covered:
            assert s.committed_cap_kw is not None and s.planned_kw <= s.committed_cap_kw + 1e-5
            expected = np.where(np.isfinite(domain_caps[:, t]), domain_caps[:, t], planned[:, t]).sum()
            assert s.committed_cap_kw == pytest.approx(expected)
            assert s.committed_reduction_kw == pytest.approx(sum(c.reduction_kw for c in inst.commitments))
        else:
            assert s.committed_cap_kw is None and s.committed_reduction_kw == 0.0
    assert plan.metrics is not None and baseline.metrics is not None
    assert sched.totals.planned_cost_gbp == pytest.approx(plan.metrics.energy_cost_gbp, abs=1e-6)
    assert sched.totals.baseline_cost_gbp == pytest.approx(baseline.metrics.energy_cost_gbp, abs=1e-6)
    assert sched.totals.planned_carbon_kg == pytest.approx(plan.metrics.carbon_kg, abs=1e-6)
    assert sched.totals.baseline_carbon_kg == pytest.approx(baseline.metrics.carbon_kg, abs=1e-6)


@PROPS
@given(instances(contiguous_only=True))
def test_a_range_keeps_the_slots_overlapping_it_and_totals_them(inst: Instance) -> None:
    plan, baseline = _solved(inst)
    whole = _schedule(inst, plan, baseline)
    start, end = START + timedelta(minutes=45), START + timedelta(hours=2, minutes=10)
    part = _schedule(inst, plan, baseline, start_utc=start, end_utc=end)
    assert [s.start_utc for s in part.slots] == [
        s.start_utc for s in whole.slots if s.end_utc > start and s.start_utc < end
    ]
    assert part.slots == whole.slots[1:5]
    kept = slice(1, 5)
    price = inst.price_matrix()[:, kept]
    planned = plan.grid_import_kw(inst)[:, kept]
    assert part.totals.planned_cost_gbp == pytest.approx(float((price * planned).sum() * inst.mwh_per_kw_slot))


def test_orders_on_a_60_minute_plan_and_a_15_minute_plan() -> None:
    """A half-hour order counts half its kW in a 60-minute slot and caps it; a 15-minute plan's two slots of a
    half hour carry its kW and cap each."""
    order = CommittedReduction(
        "o", "S", START + timedelta(hours=1, minutes=30), START + timedelta(hours=2), 40.0, (100.0,)
    )
    hourly = Horizon(start_utc=START, slot_minutes=60, n_slots=4)
    assert committed_reduction_kw([order], hourly).tolist() == [0.0, 20.0, 0.0, 0.0]
    assert committed_caps_kw([order], ["S"], hourly)[0, 1] == 60.0
    quarter = Horizon(start_utc=START, slot_minutes=15, n_slots=12)
    assert committed_reduction_kw([order], quarter).tolist() == [0.0] * 6 + [40.0, 40.0] + [0.0] * 4
    caps = committed_caps_kw([order], ["S", "T"], quarter)
    assert caps[0, 6] == caps[0, 7] == 60.0 and np.isinf(caps[1]).all() and np.isinf(caps[0, :6]).all()


def test_a_query_range_is_held_to_the_shared_limits() -> None:
    now = datetime(2026, 1, 24, 12, tzinfo=UTC)
    assert check_range(None, None, now) is None
    assert check_range(now - timedelta(days=2), now - timedelta(days=1), now) is None  # the past may be read
    assert check_range(now, now, now) == ("end", "must be after start")
    assert check_range(now, now + timedelta(days=32), now)[0] == "end"  # type: ignore[index]
    assert check_range(datetime(1999, 12, 31, tzinfo=UTC), None, now)[0] == "start"  # type: ignore[index]
    assert check_range(None, now + timedelta(days=91), now)[0] == "end"  # type: ignore[index]
    assert check_range(datetime(2026, 1, 1), None, now)[0] == "start"  # type: ignore[index]


# -- the use case and the route on PostgreSQL -----------------------------------------------------------------
@pytest.fixture()
def platform(isolated_db: str) -> PlatformConfig:
    p = parse_config(example_config(1, agents=True))[0]
    with session_scope("bpp") as s:
        service.sync_platform(s, p)
    return p


def _accept(s: Any, offer: Offer, kw: float) -> Order:
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
        state="CREATED",
        city_code="GB-R13",
        country_code="GBR",
    )
    s.add(o)
    s.flush()
    agent_service.commit(s, o, offer.location_id)
    service.transition(s, o, "ACCEPTED", "confirmed")
    return o


def _window(sched: Schedule, order: Order) -> list[Any]:
    return [x for x in sched.slots if order.window_start <= x.start_utc < order.window_end]


def test_a_compute_providers_schedule_is_its_plan_with_the_accepted_order(platform: PlatformConfig) -> None:
    with session_scope("bpp") as s:
        offer = max(
            s.scalars(select(Offer).where(Offer.active, Offer.provider_id == "dc-01")), key=lambda o: o.available_kw
        )
        order = _accept(s, offer, round(offer.available_kw * 0.5, 1))
        now = datetime.now(UTC)
        sched = provider_schedule(s, platform.subscriber_id, ScheduleQuery(provider_id="dc-01"), now=now)
        row = s.get(Provider, (platform.subscriber_id, "dc-01"))
        assert row is not None
        agent = agent_service.build_agent(s, row)
    assert isinstance(agent, ComputeAgent)
    inst, plan = agent.instance, agent.plan()
    assert sched.resource_type == "compute" and sched.as_of_utc == now
    assert sched.horizon.start_utc == row.agent_anchor_utc == inst.start_utc
    assert list(sched.site_ids) == [site.id for site in inst.sites]
    assert [x.planned_kw for x in sched.slots] == pytest.approx(plan.grid_import_kw(inst).sum(axis=0).tolist())
    in_window = _window(sched, order)
    assert in_window and all(x.committed_reduction_kw == pytest.approx(order.power_kw) for x in in_window)
    assert all(x.committed_cap_kw is not None and x.planned_kw <= x.committed_cap_kw + 1e-6 for x in in_window)
    assert all(x.committed_cap_kw is None for x in sched.slots if x not in in_window)
    body = sched.to_dict()
    assert set(body) == {
        "provider_id", "resource_type", "slot_minutes", "plan_start_utc", "as_of_utc", "sites", "slots", "totals"
    }  # fmt: skip
    assert set(body["totals"]) == {"baseline_cost_gbp", "planned_cost_gbp", "baseline_carbon_kg", "planned_carbon_kg"}


def test_a_battery_only_providers_baseline_is_its_idle_meter(platform: PlatformConfig) -> None:
    with session_scope("bpp") as s:
        offer = max(
            s.scalars(select(Offer).where(Offer.active, Offer.provider_id == "bess-01")), key=lambda o: o.available_kw
        )
        order = _accept(s, offer, round(offer.available_kw * 0.5, 1))
        sched = provider_schedule(s, platform.subscriber_id, ScheduleQuery(provider_id="bess-01"), now=START)
        row = s.get(Provider, (platform.subscriber_id, "bess-01"))
        assert row is not None
        agent = agent_service.build_agent(s, row)
    assert isinstance(agent, StorageAgent)
    assert sched.resource_type == "storage" and sched.horizon.start_utc == agent.now_utc
    slots = sched.slots
    assert len(slots) == agent.horizon_slots
    assert all(a.end_utc == b.start_utc for a, b in itertools.pairwise(slots))
    in_window = _window(sched, order)
    assert in_window and all(x.committed_reduction_kw == pytest.approx(order.power_kw) for x in in_window)
    for x in in_window:  # the battery discharges under the order: the meter imports at most the cap
        assert x.committed_cap_kw is not None and x.planned_kw <= x.committed_cap_kw + 1e-6
    # the meter's extra energy over the idle battery is what the batteries take in net (losses and refills)
    plan = agent.plan()
    stored_kwh = sum(
        float((p.schedule.charge_kw.sum() - p.schedule.discharge_kw.sum()) * p.problem.slot_hours)
        for p in plan.values()
    )
    assert sum((x.planned_kw - x.baseline_kw) * sched.horizon.slot_hours for x in slots) == pytest.approx(
        stored_kwh, abs=1e-3
    )
    assert any(abs(x.planned_kw - x.baseline_kw) > 1.0 for x in slots)  # the battery does move energy


def test_unknown_and_static_providers_have_no_schedule(isolated_db: str) -> None:
    p = parse_config(example_config(1))[0]  # static offers only
    with session_scope("bpp") as s:
        service.sync_platform(s, p)
        with pytest.raises(NoSchedule, match="no provider 'nobody'"):
            provider_schedule(s, p.subscriber_id, ScheduleQuery(provider_id="nobody"), now=START)
        with pytest.raises(NoSchedule, match="no planning agent"):
            provider_schedule(s, p.subscriber_id, ScheduleQuery(provider_id=p.providers[0].id), now=START)


def _client(platform: PlatformConfig) -> TestClient:
    app = create_base_app("bpp", "test", "test")
    app.include_router(router)
    app.state.platforms = {platform.slug: SimpleNamespace(subscriber_id=platform.subscriber_id)}
    return TestClient(app)


def test_the_route_answers_json_and_refuses_bad_input_naming_the_field(platform: PlatformConfig) -> None:
    client = _client(platform)
    url = f"/{platform.slug}/providers/dc-01/schedule"
    whole = client.get(url)
    assert whole.status_code == 200, whole.text
    body = whole.json()
    assert body["provider_id"] == "dc-01" and body["resource_type"] == "compute" and body["sites"]
    start = datetime.fromisoformat(body["slots"][4]["start"])
    part = client.get(url, params={"start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat()})
    assert part.status_code == 200 and part.json()["slots"] == body["slots"][4:6]
    for params, field in (
        ({"start": "2026-01-01T00:00:00"}, "start"),  # no UTC offset
        ({"start": "yesterday"}, "start"),
        ({"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"}, "end"),
        ({"start": "1999-01-01T00:00:00Z"}, "start"),
    ):
        refused = client.get(url, params=params)
        assert refused.status_code == 400, (params, refused.text)
        assert field in refused.json()["error"]["message"], refused.json()
    assert client.get(f"/{platform.slug}/providers/nobody/schedule").status_code == 404
    assert client.get("/no-such-platform/providers/dc-01/schedule").status_code == 404
