"""The compute scheduler's slot length (15, 30 or 60 minutes) as data: one small problem planned at every
length, a finer grid that can only help (shown by construction), half-hourly offers that never over-sell
a sub-slot, signals taken to the plan's slots, and bad lengths refused with the field named."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpp.agent import ComputeAgent
from bpp.domain import (
    PLAN_SLOT_MINUTES,
    Battery,
    CommittedReduction,
    ControlActions,
    Instance,
    Job,
    ObjectiveKind,
    ObjectiveSpec,
    Priority,
    Site,
    check_slot_minutes,
    half_hours_to_slots,
    iso,
)
from bpp.offers import OfferSettings, derive_offers, half_hourly_mean_kw, half_hourly_min_kw, offered_kw
from bpp.plan import Plan, evaluate
from bpp.provider_file import check_provider, provider_template
from bpp.scheduler import max_reduction_kw, plan_violations, solve, verify_plan
from bpp.signal_providers import to_plan_slots
from bpp.storage import soc_trajectory_kwh, storage_violations
from bpp.storage_agent import StorageAgent
from grid.signals import SignalSeries
from tests.bpp.ctss_helpers import START

HALF_HOURS = 16  # an 8-hour horizon
HOUR = timedelta(hours=1)
END = START + 8 * HOUR
#: half-hourly signals of the problem every test plans (price £/MWh, carbon g/kWh)
PRICE = np.array([90, 70, 40, 35, 30, 45, 80, 120, 110, 60, 20, 25, 50, 95, 130, 100], dtype=float)
CARBON = np.array([250, 230, 180, 160, 150, 170, 210, 260, 240, 190, 140, 150, 180, 220, 270, 240], dtype=float)


def _job(job_id: str, power_kw: float, minutes: tuple[int, int, int], slot_minutes: int, **kw: Any) -> Job:
    """A job stated in minutes — (duration, release, deadline), multiples of 60, so it is the same job
    at every slot length."""
    duration, release, deadline = (m // slot_minutes for m in minutes)
    return Job(job_id, power_kw, duration, release, deadline, **kw)


def small_instance(slot_minutes: int, *, battery: bool = True, commitment: bool = True) -> Instance:
    """One site, a battery without self-discharge, a critical job, a contiguous and a preemptible job,
    and one committed half-hour pair — the same problem whatever the slot length."""
    n = HALF_HOURS * 30 // slot_minutes
    jobs = (
        _job("crit", 80.0, (60, 60, 120), slot_minutes, priority=Priority.CRITICAL),
        _job("block", 150.0, (120, 0, 480), slot_minutes),
        _job(
            "malleable",
            100.0,
            (180, 60, 480),
            slot_minutes,
            interruptible=True,
            checkpointable=True,
        ),
    )
    bat = Battery(energy_kwh=200.0, charge_power_kw=60.0, discharge_power_kw=60.0, round_trip_efficiency=0.9)
    site = Site.build("S", "GB", n, capacity_kw=600.0, baseline_kw=100.0, battery=bat if battery else None)
    commitments = (CommittedReduction("o1", "S", START + 7 * HOUR, END, 20.0, (250.0, 250.0)),) if commitment else ()
    return Instance(
        START,
        n,
        (site,),
        jobs,
        {"GB": to_plan_slots(PRICE, slot_minutes)},
        {"GB": to_plan_slots(CARBON, slot_minutes)},
        commitments,
        ControlActions(max_deferral_min=360),
        ObjectiveSpec(kind=ObjectiveKind.COST),
        slot_minutes=slot_minutes,
    )


# -- signals on the plan's slots ------------------------------------------------------------------


def test_signals_are_repeated_at_15_and_averaged_at_60() -> None:
    assert to_plan_slots(np.array([10.0, 30.0]), 15).tolist() == [10.0, 10.0, 30.0, 30.0]
    assert to_plan_slots(np.array([10.0, 30.0, 50.0, 70.0]), 60).tolist() == [20.0, 60.0]
    assert to_plan_slots(np.array([10.0, 30.0]), 30).tolist() == [10.0, 30.0]
    with pytest.raises(ValueError, match="60-minute"):
        to_plan_slots(np.array([10.0, 30.0, 50.0]), 60)


@given(
    half_hourly=st.lists(st.floats(-100, 500), min_size=2, max_size=24).filter(lambda v: len(v) % 2 == 0),
    power=st.lists(st.floats(0, 1000), min_size=24, max_size=24),
)
def test_the_plan_slot_signal_prices_the_same_energy(half_hourly: list[float], power: list[float]) -> None:
    """A schedule of constant power per plan slot costs the same on the plan's signal as on the
    half-hourly one: a 60-minute slot's two half hours carry equal energy (the mean is energy-weighted)
    and a 15-minute slot lies inside one half hour."""
    values = np.array(half_hourly)
    n = len(values)
    hourly_kw = np.array(power[: n // 2])
    on_half_hours = float((values * np.repeat(hourly_kw, 2) * 0.5).sum())
    assert float((to_plan_slots(values, 60) * hourly_kw * 1.0).sum()) == pytest.approx(on_half_hours, abs=1e-6)
    quarter_kw = np.array(power[: 2 * n] if 2 * n <= 24 else np.resize(power, 2 * n))
    on_quarters = float((to_plan_slots(values, 15) * quarter_kw * 0.25).sum())
    assert on_quarters == pytest.approx(float((values * half_hourly_mean_kw(quarter_kw, 15) * 0.5).sum()), abs=1e-6)


@given(per_slot=st.lists(st.floats(0, 1000), min_size=2, max_size=16).filter(lambda v: len(v) % 2 == 0))
def test_half_hourly_profiles_from_sub_slots(per_slot: list[float]) -> None:
    kw = np.array(per_slot)
    low = half_hourly_min_kw(kw, 15)
    assert np.all(low <= kw[0::2]) and np.all(low <= kw[1::2])
    assert np.all((low == kw[0::2]) | (low == kw[1::2]))
    assert half_hourly_mean_kw(kw, 15) == pytest.approx((kw[0::2] + kw[1::2]) / 2)
    assert half_hourly_min_kw(kw, 60).tolist() == np.repeat(kw, 2).tolist()  # each hour: two equal half hours
    assert offered_kw(kw, 15) == pytest.approx(kw.min())


# -- the same problem at every slot length ----------------------------------------------------------


@pytest.mark.parametrize("slot_minutes", PLAN_SLOT_MINUTES)
def test_the_same_problem_plans_and_verifies_at_every_slot_length(slot_minutes: int) -> None:
    inst = small_instance(slot_minutes)
    plan = solve(inst)
    assert plan_violations(inst, plan) == []
    per_hour = 60 // slot_minutes
    for jx, job in enumerate(inst.jobs):
        ran = np.flatnonzero(plan.run_fraction[jx].sum(axis=0) > 1e-6)
        assert plan.run_fraction[jx].sum() == pytest.approx(job.work_slots, abs=1e-6)
        assert ran.max() < job.deadline_slot  # finished by its deadline
        if job.priority is Priority.CRITICAL:  # never moved: exactly release … release + duration
            assert ran.tolist() == list(range(job.release_slot, job.release_slot + job.duration_slots))
            assert job.release_slot == 1 * per_hour
    # the committed hour: its mean import per half hour stays under the cap
    g = half_hourly_mean_kw(plan.grid_import_kw(inst)[0], slot_minutes)
    assert np.all(g[14:16] <= 230.0 + 1e-5)


def _refined(plan: Plan, coarse: Instance, fine: Instance) -> Plan:
    """``plan`` (on ``coarse``) run on ``fine``'s shorter slots: every slot's decisions held for each of
    its sub-slots, the SoC recomputed on the fine slots (the battery has no self-discharge, so it
    passes through the same end-of-coarse-slot levels)."""
    per = coarse.slot_minutes // fine.slot_minutes
    charge = np.repeat(plan.charge_kw, per, axis=1)
    discharge = np.repeat(plan.discharge_kw, per, axis=1)
    soc = np.zeros_like(charge)
    for k, site in enumerate(fine.sites):
        if site.battery is not None:
            soc[k] = soc_trajectory_kwh(site.battery, charge[k], discharge[k], slot_hours=fine.slot_hours)
    return Plan(
        policy="refined",
        run_fraction=np.repeat(plan.run_fraction, per, axis=2),
        charge_kw=charge,
        discharge_kw=discharge,
        soc_kwh=soc,
        solar_used_kw=np.repeat(plan.solar_used_kw, per, axis=1),
    )


@pytest.mark.parametrize(("coarse_minutes", "fine_minutes"), [(30, 15), (60, 30), (60, 15)])
def test_a_finer_grid_can_only_help(coarse_minutes: int, fine_minutes: int) -> None:
    """By construction: the coarse optimum, held for each sub-slot, is a feasible fine plan (it verifies)
    with the same objective, so the fine optimum costs at most as much."""
    coarse, fine = small_instance(coarse_minutes), small_instance(fine_minutes)
    coarse_plan, fine_plan = solve(coarse), solve(fine)
    refined = _refined(coarse_plan, coarse, fine)
    verify_plan(fine, refined)
    assert coarse_plan.metrics is not None and fine_plan.metrics is not None
    assert evaluate(fine, refined).objective == pytest.approx(coarse_plan.metrics.objective, rel=1e-9, abs=1e-9)
    gap = 1e-6 * abs(coarse_plan.metrics.objective) + 1e-4
    assert fine_plan.metrics.objective <= coarse_plan.metrics.objective + gap


def test_a_finer_grid_helps_strictly_when_prices_change_inside_a_slot() -> None:
    """An hour of work over half-hourly prices 100, 10, 10, 100: 30-minute slots run it in the two cheap
    half hours, hour slots only see two hours averaging 55."""
    prices = np.array([100.0, 10.0, 10.0, 100.0])
    cost = {}
    for minutes in (30, 60):
        n = 4 * 30 // minutes
        inst = Instance(
            START,
            n,
            (Site.build("S", "GB", n, capacity_kw=500.0),),
            (Job("h", 100.0, 60 // minutes, 0, n),),
            {"GB": to_plan_slots(prices, minutes)},
            {"GB": np.full(n, 150.0)},
            objective=ObjectiveSpec(kind=ObjectiveKind.COST),
            slot_minutes=minutes,
        )
        plan = solve(inst)
        assert plan.metrics is not None
        cost[minutes] = plan.metrics.energy_cost_gbp
    assert cost[30] == pytest.approx(100.0 * 1.0 * 10.0 / 1000)  # 0.1 MWh at £10
    assert cost[60] == pytest.approx(100.0 * 1.0 * 55.0 / 1000)


# -- offers stay half-hourly and never over-sell a sub-slot -----------------------------------------


@st.composite
def small_sites(draw: st.DrawFn) -> Instance:
    slot_minutes = draw(st.sampled_from([15, 60]))
    n = 8 * 30 // slot_minutes  # 4 hours
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    price = np.round(rng.uniform(20, 150, 8), 1)
    battery = None
    if draw(st.booleans()):
        battery = Battery(energy_kwh=120.0, charge_power_kw=40.0, discharge_power_kw=40.0, round_trip_efficiency=0.9)
    site = Site.build(
        "S", "GB", n, capacity_kw=400.0, baseline_kw=float(draw(st.sampled_from([50.0, 120.0]))), battery=battery
    )
    per_hour = 60 // slot_minutes
    jobs = []
    for i in range(draw(st.integers(1, 3))):
        hours = draw(st.integers(1, 2))
        release_h = draw(st.integers(0, 4 - hours))
        pre = draw(st.booleans())
        jobs.append(
            Job(
                f"j{i}",
                float(draw(st.sampled_from([40.0, 90.0]))),
                hours * per_hour,
                release_h * per_hour,
                n,
                priority=draw(st.sampled_from([Priority.FLEXIBLE, Priority.BATCH, Priority.CRITICAL])),
                interruptible=pre,
                checkpointable=pre,
            )
        )
    return Instance(
        START,
        n,
        (site,),
        tuple(jobs),
        {"GB": to_plan_slots(price, slot_minutes)},
        {"GB": to_plan_slots(np.full(8, 150.0), slot_minutes)},
        actions=ControlActions(max_deferral_min=240),
        objective=ObjectiveSpec(kind=ObjectiveKind.COST),
        slot_minutes=slot_minutes,
    )


def _check_offers(inst: Instance) -> int:
    """Every offer of ``inst``'s plan is on half-hour boundaries with one baseline per half hour, never
    states more than any sub-slot of its window can deliver on its own, and is deliverable as a whole.
    Returns how many offers there were."""
    plan = solve(inst)
    cfg = OfferSettings(window_slots=2, lead_slots=0, min_offer_kw=1.0, levels=(1.0,))
    offers = derive_offers(inst, plan, cfg)
    for o in offers:
        for edge in (o.start_utc, o.end_utc):
            assert edge.minute % 30 == 0 and edge.second == 0 and edge.microsecond == 0
        assert o.end_utc - o.start_utc == timedelta(minutes=30 * cfg.window_slots)
        assert len(o.baseline_kw) == cfg.window_slots  # one baseline per half hour
        a, b = inst.window_slots(o.start_utc, o.end_utc)
        for t in range(a, b):  # what each sub-slot alone can deliver below the plan
            assert o.max_kw <= max_reduction_kw(inst, plan, 0, t, t + 1) + 1e-6
        # and the whole order is deliverable: the plan with it imposed exists and verifies
        order = CommittedReduction("buy", "S", o.start_utc, o.end_utc, o.max_kw, o.baseline_kw)
        committed = replace(inst, commitments=(order,))
        verify_plan(committed, solve(committed))
    return len(offers)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inst=small_sites())
def test_offers_are_half_hourly_and_never_exceed_a_sub_slot(inst: Instance) -> None:
    _check_offers(inst)


@pytest.mark.parametrize("slot_minutes", [15, 60])
def test_the_small_problem_offers_half_hours_at_15_and_60(slot_minutes: int) -> None:
    assert _check_offers(small_instance(slot_minutes)) > 0


# -- the agent plans at its site's slot length --------------------------------------------------------


def _agent_config(slot_minutes: int) -> dict[str, Any]:
    return {
        "provider_id": "p",
        "start_utc": iso(START),
        "horizon_slots": HALF_HOURS,
        "slot_minutes": slot_minutes,
        "sites": [
            {
                "id": "S",
                "region": "GB",
                "capacity_kw": 600.0,
                "baseline_kw": 100.0,
                "battery": {"energy_kwh": 200.0, "charge_power_kw": 60.0, "discharge_power_kw": 60.0},
            }
        ],
        "jobs": {
            "list": [
                {
                    "id": "a",
                    "power_kw": 150.0,
                    "duration_min": 120,
                    "release_slot": 0,
                    "deadline_utc": iso(END),
                },
                {
                    "id": "c",
                    "power_kw": 50.0,
                    "duration_min": 60,
                    "release_utc": iso(START + HOUR),
                    "deadline_utc": iso(END),
                    "priority": "critical",
                },
            ]
        },
        "actions": {"max_deferral_min": 360},
        "objective": {"kind": "cost"},
        "offers": {"window_slots": 2, "lead_slots": 0, "min_offer_kw": 1.0, "levels": [1.0]},
    }


def _series() -> dict[str, SignalSeries]:
    return {"GB": SignalSeries("GB", START, np.tile(PRICE, 2), np.tile(CARBON, 2))}


@pytest.mark.parametrize("slot_minutes", PLAN_SLOT_MINUTES)
def test_the_agent_plans_at_its_slot_length_and_sells_half_hours(slot_minutes: int) -> None:
    agent = ComputeAgent.from_config(_agent_config(slot_minutes), signals=_series())
    inst = agent.instance
    assert inst.slot_minutes == slot_minutes and inst.n_slots == HALF_HOURS * 30 // slot_minutes
    assert inst.price_gbp_per_mwh["GB"].tolist() == to_plan_slots(PRICE, slot_minutes).tolist()
    verify_plan(inst, agent.plan())
    offers = agent.offers()
    assert offers
    o = max(offers, key=lambda x: x.max_kw)
    assert o.start_utc.minute % 30 == 0 and len(o.baseline_kw) == 2
    red = agent.commit("order-1", "S", o.start_utc, o.end_utc, o.max_kw)  # the offer is deliverable
    assert red.baseline_kw == pytest.approx(o.baseline_kw, abs=1e-3)  # the offer's baseline, per half hour
    verify_plan(agent.instance, agent.plan())
    assert agent.summary()["slot_minutes"] == slot_minutes


# -- bad slot lengths and times off the plan's slots are refused, naming the field ------------------


@pytest.mark.parametrize("bad", [20, 0, 45, "30", True])
def test_bad_slot_lengths_are_refused_with_the_field_named(bad: Any) -> None:
    with pytest.raises(ValueError, match="slot_minutes"):
        check_slot_minutes(bad)
    with pytest.raises(ValueError, match="slot_minutes"):
        replace(small_instance(30), slot_minutes=bad)
    with pytest.raises(ValueError, match=r"agent\.slot_minutes"):
        ComputeAgent.from_config(_agent_config(bad), signals=_series())
    data = provider_template("dc")
    data["agent"]["slot_minutes"] = bad
    assert "agent.slot_minutes" in [e.field for e in check_provider(data)]


def test_times_off_the_plan_slots_are_refused_with_the_field_named() -> None:
    with pytest.raises(ValueError, match="max_deferral_min"):
        replace(small_instance(60), actions=ControlActions(max_deferral_min=90))
    cfg = _agent_config(60)
    cfg["jobs"]["list"][0]["duration_min"] = 90
    with pytest.raises(ValueError, match=r"jobs.list\[0\].duration_min"):
        ComputeAgent.from_config(cfg, signals=_series())
    cfg = _agent_config(30)
    cfg["jobs"]["list"][1]["release_utc"] = iso(START + timedelta(minutes=15))
    with pytest.raises(ValueError, match=r"jobs.list\[1\].release_utc"):
        ComputeAgent.from_config(cfg, signals=_series())
    cfg = _agent_config(60)
    cfg["horizon_slots"] = 15  # 7.5 hours is not whole hours
    with pytest.raises(ValueError, match=r"agent\.horizon_slots"):
        ComputeAgent.from_config(cfg, signals=_series())
    cfg = _agent_config(60)
    cfg["offers"]["window_slots"] = 3  # 90-minute windows would split an hour slot
    with pytest.raises(ValueError, match=r"agent\.offers\.window_slots"):
        ComputeAgent.from_config(cfg, signals=_series())
    with pytest.raises(ValueError, match="start_utc"):
        replace(small_instance(60), start_utc=START + timedelta(minutes=30))
    data = provider_template("dc")
    data["agent"].update(slot_minutes=60, horizon_slots=95)
    data["agent"]["actions"]["max_deferral_min"] = 90
    fields = [e.field for e in check_provider(data)]
    assert "agent.horizon_slots" in fields and "agent.actions" in fields
    data = provider_template("dc")
    data["agent"]["slot_minutes"] = 15
    assert check_provider(data) == []


@pytest.mark.parametrize("slot_minutes", PLAN_SLOT_MINUTES)
def test_a_battery_only_provider_plans_at_its_slot_length_and_sells_half_hours(slot_minutes: int) -> None:
    cfg = _agent_config(slot_minutes)
    del cfg["jobs"], cfg["actions"], cfg["sites"][0]["capacity_kw"]
    cfg["kind"] = "storage"
    agent = StorageAgent.from_config(cfg, signals=_series())
    assert agent.horizon_slots == HALF_HOURS * 30 // slot_minutes
    offers = agent.offers()
    assert offers
    o = max(offers, key=lambda x: x.max_kw)
    assert o.start_utc.minute % 30 == 0 and len(o.baseline_kw) == 2
    red = agent.commit("order-1", "S", o.start_utc, o.end_utc, o.max_kw)
    [site] = agent.plan().values()
    assert site.problem.slot_minutes == slot_minutes
    assert storage_violations(site.problem, site.schedule) == []
    a, b = half_hours_to_slots(2 * o.start_utc.hour, 2 * o.end_utc.hour, slot_minutes)
    caps = np.repeat(np.asarray(red.max_import_kw()), 2) if slot_minutes == 15 else np.asarray(red.max_import_kw())
    if slot_minutes == 60:
        caps = caps.reshape(-1, 2).min(axis=1)
    assert np.all(site.net_import_kw[a:b] <= caps + 1e-5)  # every plan slot of the order meets its cap
