"""The storage model (bpp.storage): batteries behind one connection, slot length 15/30/60 min, export,
one direction per slot, and its checker recomputing every limit from a schedule."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bpp.storage as storage
from bpp.domain import Battery, Exclusivity, SocTarget
from bpp.storage import (
    Connection,
    StorageProblem,
    StorageSchedule,
    StorageSolveError,
    build_storage_lp,
    simultaneous_slots,
    soc_trajectory_kwh,
    solve_storage,
    storage_cost_gbp,
    storage_violations,
)

PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: a day at 30-minute slots: cheap night, negative midday (solar surplus), expensive evening
NEGATIVE_DAY = np.array([40.0] * 12 + [20.0] * 6 + [-30.0] * 8 + [30.0] * 8 + [120.0] * 8 + [60.0] * 6)
MW = Battery(2000.0, 1000.0, 1000.0, round_trip_efficiency=0.85)


def _ok(problem: StorageProblem, schedule: StorageSchedule) -> None:
    """Valid, one direction per slot, and the solver's objective is the cost recomputed from the schedule."""
    assert storage_violations(problem, schedule) == []
    assert not simultaneous_slots(schedule.charge_kw, schedule.discharge_kw).any()
    cost = storage_cost_gbp(problem, schedule.charge_kw, schedule.discharge_kw)
    assert schedule.objective_gbp == pytest.approx(cost, rel=1e-9, abs=1e-7)


def _raw_lp_schedule(problem: StorageProblem, monkeypatch: pytest.MonkeyPatch) -> np.ndarray:
    """Charge × discharge overlap of the plain LP (no mode binaries anywhere), as the model was before."""
    monkeypatch.setattr(storage, "exclusive_slot_mask", lambda *w, n_slots: np.zeros(n_slots, dtype=bool))
    model = build_storage_lp(problem)
    res = model.lp.solve(60.0, 1e-7, 1, reduced_cost_fixing=False)
    assert res.x is not None and res.n_integer == 0
    [block] = model.blocks
    return simultaneous_slots(res.x[block.charge_cols], res.x[block.discharge_cols])


# -- one direction per slot --------------------------------------------------------------------


def test_negative_price_day_never_charges_and_discharges_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    load = np.full(len(NEGATIVE_DAY), 800.0)
    problem = StorageProblem((MW,), NEGATIVE_DAY, site_load_kw=load, connection=Connection(import_limit_kw=3000.0))
    negative = int((NEGATIVE_DAY < 0).sum())
    binaries, objectives = {}, {}
    for rule in Exclusivity:
        schedule = solve_storage(replace(problem, exclusivity=rule))
        _ok(problem, schedule)
        binaries[rule], objectives[rule] = schedule.n_binaries, schedule.objective_gbp
    assert binaries[Exclusivity.WHERE_PRICES_NEGATIVE] == negative  # only where the price is negative
    assert binaries[Exclusivity.EVERY_SLOT] == len(NEGATIVE_DAY)
    assert 0 < binaries[Exclusivity.WHERE_USED] <= negative  # only where the LP did both
    assert max(objectives.values()) - min(objectives.values()) <= 1e-7 * abs(objectives[Exclusivity.EVERY_SLOT])
    # the plain LP burns energy in a charge-discharge loop at negative prices: the binaries are needed
    assert _raw_lp_schedule(problem, monkeypatch).any()


def test_where_used_stays_a_pure_lp_when_the_lp_does_one_direction() -> None:
    day = np.array([30.0] * 8 + [-5.0] * 2 + [90.0] * 6)
    problem = StorageProblem((MW,), day, site_load_kw=np.full(len(day), 1500.0), connection=Connection(1800.0))
    schedule = solve_storage(problem)
    _ok(problem, schedule)
    assert schedule.n_binaries == 0  # storing the cheap energy beats burning it: the LP is already exact
    every = solve_storage(replace(problem, exclusivity=Exclusivity.EVERY_SLOT))
    assert schedule.objective_gbp == pytest.approx(every.objective_gbp, rel=1e-9)


@PROPS
@given(
    prices=st.lists(st.floats(0.0, 300.0), min_size=4, max_size=24),
    eta_c=st.floats(0.7, 0.99),
    eta_d=st.floats(0.7, 0.99),
    degradation=st.floats(0.5, 20.0),
    load=st.floats(0.0, 300.0),
    export=st.booleans(),
)
def test_lp_never_needs_both_directions_at_non_negative_prices(
    prices: list[float], eta_c: float, eta_d: float, degradation: float, load: float, export: bool
) -> None:
    """The module docstring's claim: with prices ≥ 0 and η < 1 the plain LP (no binaries) does not
    charge and discharge in one slot."""
    battery = Battery(
        400.0, 200.0, 150.0, charge_efficiency=eta_c, discharge_efficiency=eta_d, degradation_gbp_per_mwh=degradation
    )
    price = np.array(prices)
    problem = StorageProblem(
        (battery,),
        price,
        export_price_gbp_per_mwh=0.8 * price if export else None,
        site_load_kw=np.full(len(price), load),
        connection=Connection(import_limit_kw=600.0, export_limit_kw=100.0),
    )
    model = build_storage_lp(problem)
    assert model.lp.arrays()[3].sum() == 0  # no price is negative, export never pays more: a pure LP
    res = model.lp.solve(60.0, 1e-7, 1)
    assert res.x is not None
    [block] = model.blocks
    assert not simultaneous_slots(res.x[block.charge_cols], res.x[block.discharge_cols]).any()
    _ok(problem, solve_storage(problem))


def test_zero_cost_ties_and_forced_dumps_are_resolved() -> None:
    """Zero prices and no degradation (ties), and a falling SoC maximum with nowhere to send the
    energy: the solver re-solves with binaries, and a dump it cannot do without both is infeasible."""
    tie = StorageProblem((replace(MW, round_trip_efficiency=0.9),), np.zeros(8))
    _ok(tie, solve_storage(tie))
    falling = replace(MW, soc_max_fraction_by_slot=(0.9, 0.9, 0.3, 0.3), soc_min_fraction=0.0)
    dump = StorageProblem((falling,), np.full(4, 50.0))  # no load, no export: SoC 50 % → 30 %
    with pytest.raises(StorageSolveError):
        solve_storage(dump)  # only self-discharge or a physically impossible loop could do it


# -- efficiencies, self-discharge, SoC profiles, targets, degradation ----------------------------


def test_separate_efficiencies_and_self_discharge_drive_the_soc() -> None:
    b = Battery(
        100.0, 40.0, 40.0, charge_efficiency=0.95, discharge_efficiency=0.8, self_discharge_fraction_per_hour=0.02
    )
    assert (b.eta_charge, b.eta_discharge) == (0.95, 0.8)
    soc = soc_trajectory_kwh(b, np.array([40.0, 0.0, 0.0]), np.array([0.0, 0.0, 20.0]), slot_hours=0.25)
    r = 0.98**0.25
    e0 = r * 50.0 + 0.95 * 40.0 * 0.25
    e1 = r * e0
    e2 = r * e1 - 20.0 * 0.25 / 0.8
    assert soc == pytest.approx([e0, e1, e2], rel=1e-12)
    assert Battery(100.0, 1.0, 1.0, round_trip_efficiency=0.81).eta_charge == pytest.approx(0.9)


def test_self_discharge_is_bought_back_to_the_terminal_level() -> None:
    leaky = replace(MW, self_discharge_fraction_per_hour=0.01)
    problem = StorageProblem((leaky,), np.full(24, 50.0), slot_minutes=60)
    schedule = solve_storage(problem)
    _ok(problem, schedule)
    # the battery must put back what it lost to reach its initial level again
    assert schedule.soc_kwh[0, -1] == pytest.approx(leaky.initial_soc_kwh, rel=1e-6)
    assert schedule.charge_kw.sum() > 0


def test_soc_profiles_and_targets_bind_and_the_checker_sees_them() -> None:
    n = 16
    battery = replace(
        MW,
        soc_min_fraction_by_slot=tuple([0.1] * 8 + [0.6] * 8),
        soc_max_fraction_by_slot=tuple([0.5] * 4 + [0.9] * 12),
        soc_targets=(SocTarget(slot=11, soc_min_fraction=0.85),),
    )
    price = np.array([30.0] * 8 + [200.0] * 8)  # it would rather empty itself in the expensive half
    problem = StorageProblem((battery,), price, site_load_kw=np.full(n, 500.0))
    schedule = solve_storage(problem)
    _ok(problem, schedule)
    soc = schedule.soc_kwh[0] / battery.energy_kwh
    assert soc[:4].max() <= 0.5 + 1e-9 and soc[8:].min() >= 0.6 - 1e-9 and soc[11] >= 0.85 - 1e-9
    # the checker finds a schedule that misses the target (recomputed, not read from the solver)
    lazy = replace(schedule, charge_kw=np.zeros((1, n)), discharge_kw=np.zeros((1, n)))
    lazy = replace(lazy, soc_kwh=soc_trajectory_kwh(battery, lazy.charge_kw[0], lazy.discharge_kw[0])[None, :])
    lazy = replace(lazy, import_kw=np.full(n, 500.0), export_kw=np.zeros(n))
    problems = storage_violations(problem, lazy)
    assert any("target" in v for v in problems) and any("outside" in v for v in problems)


def test_degradation_is_charged_on_throughput() -> None:
    price = np.array([10.0, 10.0, 110.0, 110.0])
    cheap = StorageProblem((replace(MW, round_trip_efficiency=1.0),), price, site_load_kw=np.full(4, 1000.0))
    schedule = solve_storage(cheap)
    _ok(cheap, schedule)
    assert schedule.discharge_kw.sum() > 0
    # the spread is £100/MWh: £50/MWh of throughput (each way) takes it all, £49 leaves a margin
    worn = replace(cheap, batteries=(replace(cheap.batteries[0], degradation_gbp_per_mwh=50.1),))
    assert solve_storage(worn).discharge_kw.sum() == pytest.approx(0.0, abs=1e-6)
    used = replace(cheap, batteries=(replace(cheap.batteries[0], degradation_gbp_per_mwh=49.0),))
    assert solve_storage(used).discharge_kw.sum() > 0


# -- export, several batteries, connection limits ---------------------------------------------


def test_export_only_with_an_export_price_and_within_the_limit() -> None:
    price = np.array([20.0] * 4 + [150.0] * 4)
    conn = Connection(import_limit_kw=2000.0, export_limit_kw=300.0)
    no_price = StorageProblem((MW,), price, connection=conn)
    s0 = solve_storage(no_price)
    _ok(no_price, s0)
    assert s0.export_kw.max() == pytest.approx(0.0, abs=1e-9)  # nowhere to sell: it stays idle
    with_price = replace(no_price, export_price_gbp_per_mwh=price * 0.9)
    s1 = solve_storage(with_price)
    _ok(with_price, s1)
    assert s1.export_kw.max() == pytest.approx(300.0, rel=1e-6)
    assert s1.objective_gbp < s0.objective_gbp


def test_export_paying_more_than_import_never_flows_both_ways() -> None:
    price = np.full(6, 40.0)
    problem = StorageProblem(
        (MW,),
        price,
        export_price_gbp_per_mwh=np.full(6, 60.0),  # a meter running both ways would print money
        site_load_kw=np.full(6, 100.0),
        connection=Connection(import_limit_kw=500.0, export_limit_kw=500.0),
    )
    schedule = solve_storage(problem)
    _ok(problem, schedule)
    assert not simultaneous_slots(schedule.import_kw, schedule.export_kw).any()


def test_several_batteries_share_one_connection() -> None:
    n = 8
    price = np.array([10.0] * 4 + [100.0] * 4)
    batteries = tuple(replace(MW, energy_kwh=800.0 * (k + 1), charge_power_kw=400.0) for k in range(3))
    shared = StorageProblem(batteries, price, site_load_kw=np.full(n, 200.0), connection=Connection(700.0))
    schedule = solve_storage(shared)
    _ok(shared, schedule)
    assert schedule.charge_kw.shape == (3, n)
    assert schedule.import_kw.max() == pytest.approx(700.0, rel=1e-6)  # the shared limit binds
    alone = [solve_storage(replace(shared, batteries=(b,), connection=Connection())) for b in batteries]
    # together they can take less than the sum of what each would take alone
    assert schedule.charge_kw.sum() < sum(s.charge_kw.sum() for s in alone) - 1.0
    over = replace(schedule, import_kw=schedule.import_kw + 50.0, export_kw=schedule.export_kw)
    assert any("import − export" in v for v in storage_violations(shared, over))


# -- slot length -------------------------------------------------------------------------------


@pytest.mark.parametrize("minutes", [15, 30])
def test_finer_slots_reach_the_hourly_optimum_on_hourly_prices(minutes: int) -> None:
    """Hourly prices held over 15- or 30-minute slots: any finer schedule averages to an hourly one of
    the same cost, so the optimum is the same."""
    hourly = np.array([60, 50, 40, 35, 40, 70, 110, 130, 90, 70, 60, 80], dtype=float)
    per_hour = 60 // minutes
    battery = replace(MW, degradation_gbp_per_mwh=2.0)
    coarse = StorageProblem((battery,), hourly, slot_minutes=60, site_load_kw=np.full(12, 400.0))
    fine = StorageProblem(
        (battery,), np.repeat(hourly, per_hour), slot_minutes=minutes, site_load_kw=np.full(12 * per_hour, 400.0)
    )
    a, b = solve_storage(coarse), solve_storage(fine)
    _ok(coarse, a)
    _ok(fine, b)
    assert b.objective_gbp == pytest.approx(a.objective_gbp, rel=1e-6)


def test_bad_problems_name_the_field() -> None:
    with pytest.raises(ValueError, match="slot_minutes"):
        StorageProblem((MW,), np.zeros(4), slot_minutes=20)
    with pytest.raises(ValueError, match="export_price_gbp_per_mwh"):
        StorageProblem((MW,), np.zeros(4), export_price_gbp_per_mwh=np.zeros(3))
    with pytest.raises(ValueError, match="import_price_gbp_per_mwh"):
        StorageProblem((MW,), np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="export_limit_kw"):
        Connection(export_limit_kw=-1.0)
    with pytest.raises(ValueError, match="soc_min_fraction_by_slot"):
        StorageProblem((replace(MW, soc_min_fraction_by_slot=(0.1,) * 3),), np.zeros(4))


@st.composite
def _problems(draw: st.DrawFn) -> StorageProblem:
    """Random storage problems: 1–3 batteries with every feature, any slot length, prices of either sign;
    feasible by construction (an idle battery meets every bound, target and the terminal level)."""
    minutes = draw(st.sampled_from([15, 30, 60]))
    n = draw(st.integers(4, 16))
    batteries = []
    for _ in range(draw(st.integers(1, 3))):
        energy = draw(st.floats(100.0, 2000.0))
        lo = draw(st.floats(0.0, 0.3))
        leak = draw(st.floats(0.0, 0.02))  # an idle battery keeps ≥ 0.5 · 0.98^16 ≈ 0.36 > lo
        slot = draw(st.integers(0, n - 1))
        idle_at_target = 0.5 * (1.0 - leak) ** (minutes / 60.0 * (slot + 1))
        batteries.append(
            Battery(
                energy,
                draw(st.floats(10.0, energy)),
                draw(st.floats(10.0, energy)),
                charge_efficiency=draw(st.floats(0.7, 1.0)),
                discharge_efficiency=draw(st.floats(0.7, 1.0)),
                self_discharge_fraction_per_hour=leak,
                soc_min_fraction=lo,
                soc_max_fraction=draw(st.floats(0.6, 1.0)),
                initial_soc_fraction=0.5,
                terminal_soc_fraction=lo,
                degradation_gbp_per_mwh=draw(st.floats(0.0, 10.0)),
                soc_targets=(SocTarget(slot, draw(st.floats(lo, idle_at_target))),),
            )
        )
    price = np.array(draw(st.lists(st.floats(-50.0, 200.0), min_size=n, max_size=n)))
    export = draw(st.one_of(st.none(), st.floats(-20.0, 20.0)))
    return StorageProblem(
        tuple(batteries),
        price,
        export_price_gbp_per_mwh=None if export is None else price - export,
        site_load_kw=np.array(draw(st.lists(st.floats(0.0, 1000.0), min_size=n, max_size=n))),
        connection=Connection(import_limit_kw=5000.0, export_limit_kw=draw(st.floats(0.0, 500.0))),
        slot_minutes=minutes,
        exclusivity=draw(st.sampled_from(list(Exclusivity))),
    )


@PROPS
@given(problem=_problems())
def test_every_schedule_passes_the_checker_and_its_objective_is_recomputed(problem: StorageProblem) -> None:
    """Whatever the features and prices (negative too): one direction per slot, at the battery and at
    the meter, every limit kept, and the solver's objective equal to the cost of the schedule."""
    schedule = solve_storage(problem)
    _ok(problem, schedule)
    assert not simultaneous_slots(schedule.import_kw, schedule.export_kw).any()
