"""Offers derived from the optimal plan, and the battery LP."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpp.domain import (
    MWH_PER_KW_SLOT,
    SLOT_HOURS,
    Battery,
    CommittedReduction,
    Instance,
    Job,
    ObjectiveKind,
    ObjectiveSpec,
    Site,
)
from bpp.offers import OfferSettings, derive_offers
from bpp.scheduler import SchedulingInfeasible, solve, verify_plan
from bpp.storage import battery_violations, soc_trajectory_kwh, storage_instance, summarise_storage
from tests.bpp.ctss_helpers import START

T = 12
COST = ObjectiveSpec(kind=ObjectiveKind.COST)


def _inst(
    jobs: list[Job],
    price: np.ndarray,
    battery: Battery | None = None,
    cap: float = 500.0,
    baseline: float = 0.0,
) -> Instance:
    site = Site.build("DC-North", "GB", T, capacity_kw=cap, baseline_kw=baseline, battery=battery)
    return Instance(START, T, (site,), tuple(jobs), {"GB": price}, {"GB": np.full(T, 150.0)}, objective=COST)


def _commit(inst: Instance, plan, a: int, b: int, q: float) -> Instance:
    g = plan.grid_import_kw(inst)[0, a:b]
    c = CommittedReduction("o", inst.sites[0].id, inst.slot_start(a), inst.slot_start(b), q, tuple(g))
    return replace(inst, commitments=(*inst.commitments, c))


def test_offer_quantity_is_exactly_what_can_be_committed() -> None:
    price = np.array([50, 50, 80, 80, 100, 100, 60, 60, 40, 40, 90, 90], dtype=float)
    jobs = [Job("a", 100.0, 2, 0, 12), Job("b", 60.0, 2, 2, 10), Job("crit", 30.0, 4, 4, 8, "critical")]
    inst = _inst(jobs, price)
    plan = solve(inst)
    cfg = OfferSettings(window_slots=2, lead_slots=0, min_offer_kw=1.0)
    offers = derive_offers(inst, plan, cfg)
    assert offers, "the plan has movable load: some window must offer a reduction"
    for o in offers:
        a, b = inst.slot_of(o.start_utc), inst.slot_of(o.end_utc)
        solve(_commit(inst, plan, a, b, o.max_kw))  # the offered maximum is deliverable
        with pytest.raises(SchedulingInfeasible):  # and 1 kW more is not
            solve(_commit(inst, plan, a, b, o.max_kw + 1.0))
        assert o.min_kw <= o.max_kw == o.available_kw
        assert o.price_gbp_per_mwh == pytest.approx(
            max(o.marginal_cost_gbp_per_mwh, o.average_cost_gbp_per_mwh, 0) * 1.1 + 5.0, abs=0.02
        )
        assert o.min_duration_min == o.max_duration_min == 60
        assert o.tags()["resource_type"] == "compute" and o.tags()["price_unit"] == "GBP/MWh"


def test_offer_cost_is_the_objective_delta_of_the_re_solve() -> None:
    # one job that would run in the cheap window: shedding it there moves it to a dearer slot
    price = np.array([10, 10, 30, 30, 80, 80, 80, 80, 80, 80, 80, 80], dtype=float)
    inst = _inst([Job("a", 100.0, 2, 0, 4)], price)
    plan = solve(inst)
    assert plan.run_fraction[0, 0, :2].tolist() == [1.0, 1.0]
    offers = derive_offers(
        inst,
        plan,
        OfferSettings(window_slots=2, lead_slots=0, levels=(1.0,), margin_fraction=0.0, margin_gbp_per_mwh=0.0),
    )
    first = [o for o in offers if o.start_utc == START]
    assert len(first) == 1
    o = first[0]
    assert o.max_kw == pytest.approx(100.0, abs=0.01)
    # by hand: the job moves from £10 to £30 slots → £20/MWh for every MWh not drawn in the window
    assert o.marginal_cost_gbp_per_mwh == pytest.approx(20.0, abs=0.05)
    assert o.price_gbp_per_mwh == pytest.approx(20.0, abs=0.05)


def test_no_offers_when_nothing_can_move() -> None:
    price = np.linspace(10, 100, T)
    inst = _inst([Job("crit", 50.0, 12, 0, 12, "critical")], price)
    assert derive_offers(inst, solve(inst), OfferSettings(lead_slots=0)) == []


# -- battery --------------------------------------------------------------------------------------


def test_battery_arbitrage_charges_cheap_discharges_dear_with_sqrt_eta_losses() -> None:
    price = np.array([10] * 4 + [200] * 4 + [50] * 4, dtype=float)
    bat = Battery(
        energy_kwh=100.0,
        charge_power_kw=50.0,
        discharge_power_kw=50.0,
        round_trip_efficiency=0.81,
        soc_min_fraction=0.0,
        soc_max_fraction=1.0,
        initial_soc_fraction=0.0,
    )
    site = Site.build("B", "GB", T, capacity_kw=1000.0, baseline_kw=60.0, battery=bat)
    inst = storage_instance(site, START, price, np.full(T, 100.0), objective=COST)
    plan = solve(inst)
    verify_plan(inst, plan)
    ch, dis = plan.charge_kw[0], plan.discharge_kw[0]
    assert ch[:4].sum() > 0 and ch[4:].sum() == pytest.approx(0.0, abs=1e-6)
    assert dis[4:8].sum() > 0 and dis[:4].sum() == pytest.approx(0.0, abs=1e-6)
    # energy accounting with √η each way: delivered = η · bought
    assert dis.sum() == pytest.approx(0.81 * ch.sum(), rel=1e-6)
    assert plan.soc_kwh[0] == pytest.approx(soc_trajectory_kwh(bat, ch, dis), abs=1e-6)
    s = summarise_storage(inst, plan)[0]
    assert s.arbitrage_saving_gbp > 0


def test_battery_idles_when_spread_does_not_cover_losses_and_degradation() -> None:
    price = np.array([90] * 6 + [100] * 6, dtype=float)  # 10% spread < 19% losses
    bat = Battery(100.0, 50.0, 50.0, round_trip_efficiency=0.81)
    site = Site.build("B", "GB", T, capacity_kw=1000.0, baseline_kw=60.0, battery=bat)
    plan = solve(storage_instance(site, START, price, np.full(T, 100.0), objective=COST))
    assert plan.discharge_kw.sum() == pytest.approx(0.0, abs=1e-6)
    price = np.array([10] * 6 + [100] * 6, dtype=float)
    bat = Battery(100.0, 50.0, 50.0, round_trip_efficiency=1.0, degradation_gbp_per_mwh=200.0)
    site = Site.build("B", "GB", T, capacity_kw=1000.0, baseline_kw=60.0, battery=bat)
    plan = solve(storage_instance(site, START, price, np.full(T, 100.0), objective=COST))
    assert plan.discharge_kw.sum() == pytest.approx(0.0, abs=1e-6)


def test_battery_arbitrages_carbon_under_the_carbon_objective() -> None:
    carbon = np.array([50] * 6 + [300] * 6, dtype=float)
    bat = Battery(100.0, 50.0, 50.0, round_trip_efficiency=0.9)
    site = Site.build("B", "GB", T, capacity_kw=1000.0, baseline_kw=60.0, battery=bat)
    inst = storage_instance(site, START, np.full(T, 80.0), carbon, objective=ObjectiveSpec(kind=ObjectiveKind.CARBON))
    plan = solve(inst)
    assert plan.charge_kw[0, :6].sum() > 0 and plan.discharge_kw[0, 6:].sum() > 0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), eta=st.sampled_from([0.7, 0.9, 1.0]), red=st.floats(5.0, 80.0))
def test_storage_offer_and_commitment_respect_battery_physics(seed: int, eta: float, red: float) -> None:
    rng = np.random.default_rng(seed)
    price = rng.uniform(-20, 200, T).round(1)
    bat = Battery(80.0, 40.0, 40.0, round_trip_efficiency=eta, degradation_gbp_per_mwh=5.0)
    site = Site.build("B", "GB", T, capacity_kw=1000.0, baseline_kw=50.0, battery=bat)
    inst = storage_instance(site, START, price, rng.uniform(50, 250, T))
    plan = solve(inst)
    assert (
        battery_violations(
            site, bat, charge_kw=plan.charge_kw[0], discharge_kw=plan.discharge_kw[0], soc_kwh=plan.soc_kwh[0]
        )
        == []
    )
    offers = derive_offers(
        inst, plan, OfferSettings(window_slots=2, lead_slots=0, levels=(1.0,)), resource_type="storage"
    )
    for o in offers:
        assert o.response_time_s == 1 and o.resource_type == "storage"
        # the battery can never shed more than baseline load + planned charging
        a = inst.slot_of(o.start_utc)
        assert o.max_kw <= min(50.0 + plan.charge_kw[0, a : a + 2].min() + 40.0, 50.0 + 40.0) + 1e-6
    # a commitment within what the first window offers is honoured with the battery physics intact
    if offers:
        o = offers[0]
        a, b = inst.slot_of(o.start_utc), inst.slot_of(o.end_utc)
        p2 = solve(_commit(inst, plan, a, b, min(red, o.max_kw)))
        verify_plan(_commit(inst, plan, a, b, min(red, o.max_kw)), p2)


def test_soc_starts_and_ends_where_required() -> None:
    bat = Battery(100.0, 50.0, 50.0, initial_soc_fraction=0.5, terminal_soc_fraction=0.8)
    site = Site.build("B", "GB", T, capacity_kw=1000.0, baseline_kw=10.0, battery=bat)
    plan = solve(storage_instance(site, START, np.full(T, 50.0), np.full(T, 100.0), objective=COST))
    assert plan.soc_kwh[0, -1] >= 80.0 - 1e-6
    stored = plan.soc_kwh[0, -1] - 50.0
    assert stored == pytest.approx(
        np.sqrt(0.9) * plan.charge_kw[0].sum() * SLOT_HOURS - plan.discharge_kw[0].sum() * SLOT_HOURS / np.sqrt(0.9),
        abs=1e-6,
    )
    assert MWH_PER_KW_SLOT == SLOT_HOURS / 1000
    assert START + timedelta(hours=6) == START.replace(hour=6)
