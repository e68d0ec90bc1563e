"""The battery model in the site scheduler: the Battery type's fields and checks, one direction per
slot at negative prices, SoC profiles and targets, self-discharge and throughput degradation in CTSS
plans, the plan checker, and battery fields in agent configs."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpp.agent_config import SiteConfig, battery_from_config
from bpp.domain import (
    MWH_PER_KW_SLOT,
    Battery,
    ControlActions,
    Exclusivity,
    Instance,
    ObjectiveKind,
    ObjectiveSpec,
    Site,
    SocTarget,
)
from bpp.plan import evaluate
from bpp.scheduler import build_model, plan_violations, replan, solve
from bpp.storage import simultaneous_slots, soc_trajectory_kwh
from tests.bpp.ctss_helpers import START

COST = ObjectiveSpec(kind=ObjectiveKind.COST)
PROPS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BATTERY = Battery(2000.0, 1000.0, 1000.0, round_trip_efficiency=0.85)


def _instance(price: np.ndarray, battery: Battery, *, actions: ControlActions | None = None) -> Instance:
    n = len(price)
    site = Site.build("DC", "GB", n, capacity_kw=3000.0, baseline_kw=800.0, battery=battery)
    return Instance(
        START,
        n,
        (site,),
        (),
        {"GB": price},
        {"GB": np.full(n, 150.0)},
        objective=COST,
        actions=actions or ControlActions(),
    )


# -- the Battery type --------------------------------------------------------------------------


def test_round_trip_is_split_unless_both_efficiencies_are_given() -> None:
    assert BATTERY.eta_charge == pytest.approx(np.sqrt(0.85)) == BATTERY.eta_discharge
    both = replace(BATTERY, charge_efficiency=0.97, discharge_efficiency=0.9)
    assert (both.eta_charge, both.eta_discharge) == (0.97, 0.9)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"charge_efficiency": 0.9}, "charge_efficiency and discharge_efficiency"),
        ({"charge_efficiency": 1.2, "discharge_efficiency": 0.9}, "charge_efficiency"),
        ({"self_discharge_fraction_per_hour": 1.0}, "self_discharge_fraction_per_hour"),
        ({"soc_min_fraction_by_slot": (0.5, 0.95), "soc_max_fraction_by_slot": (0.9, 0.9)}, "soc_min_fraction_by_slot"),
        ({"soc_max_fraction_by_slot": (0.9, 1.5)}, "soc_max_fraction_by_slot"),
        ({"soc_targets": (SocTarget(3, 0.95),)}, "soc_targets"),
        ({"degradation_gbp_per_mwh": float("nan")}, "degradation_gbp_per_mwh"),
    ],
)
def test_bad_battery_fields_are_named(fields: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        replace(BATTERY, **fields)


def test_soc_bounds_per_slot_include_targets_and_terminal_level() -> None:
    b = replace(
        BATTERY,
        soc_min_fraction_by_slot=(0.1, 0.2, 0.3, 0.1),
        soc_targets=(SocTarget(1, 0.8), SocTarget(9, 0.5)),  # slot 9 is outside a 4-slot horizon
    )
    assert b.soc_lower_kwh(4) == pytest.approx([200.0, 1600.0, 600.0, 1000.0])
    assert b.sliced(1, 3).soc_targets == (SocTarget(0, 0.8),)
    assert b.sliced(1, 3).soc_min_fraction_by_slot == (0.2, 0.3)


# -- CTSS plans --------------------------------------------------------------------------------


NEGATIVE_DAY = np.array([40.0] * 12 + [20.0] * 6 + [-30.0] * 8 + [30.0] * 8 + [120.0] * 8 + [60.0] * 6)


def test_negative_price_day_plan_has_no_slot_both_charging_and_discharging() -> None:
    inst = _instance(NEGATIVE_DAY, BATTERY)
    plan = solve(inst)  # verified: the checker rejects both directions in one slot
    assert not simultaneous_slots(plan.charge_kw[0], plan.discharge_kw[0]).any()
    assert plan.n_binaries == int((NEGATIVE_DAY < 0).sum())
    assert plan.charge_kw[0, NEGATIVE_DAY < 0].sum() > 0  # it is paid to charge there


def test_where_used_exclusivity_reaches_the_same_plan_value() -> None:
    static = solve(_instance(NEGATIVE_DAY, BATTERY))
    lazy = solve(_instance(NEGATIVE_DAY, BATTERY, actions=ControlActions(battery_exclusivity=Exclusivity.WHERE_USED)))
    assert not simultaneous_slots(lazy.charge_kw[0], lazy.discharge_kw[0]).any()
    assert lazy.n_binaries <= static.n_binaries
    assert lazy.metrics is not None and static.metrics is not None
    assert lazy.metrics.objective == pytest.approx(static.metrics.objective, rel=1e-7)


def test_every_slot_exclusivity_adds_a_binary_per_slot() -> None:
    actions = ControlActions(battery_exclusivity=Exclusivity.EVERY_SLOT)
    model = build_model(_instance(NEGATIVE_DAY, BATTERY, actions=actions))
    assert len(model.batteries[0].mode_cols) == len(NEGATIVE_DAY)


@PROPS
@given(
    prices=st.lists(st.floats(0.0, 300.0), min_size=4, max_size=16),
    eta=st.floats(0.6, 0.99),
    degradation=st.floats(0.5, 30.0),
)
def test_non_negative_prices_give_a_pure_lp_that_never_does_both(
    prices: list[float], eta: float, degradation: float
) -> None:
    battery = replace(BATTERY, round_trip_efficiency=eta, degradation_gbp_per_mwh=degradation)
    inst = _instance(np.array(prices), battery)
    model = build_model(inst)
    assert len(model.batteries[0].mode_cols) == 0
    res = model.lp.solve()
    assert res.x is not None and res.n_integer == 0
    block = model.batteries[0]
    assert not simultaneous_slots(res.x[block.charge_cols], res.x[block.discharge_cols]).any()


def test_plan_checker_rejects_both_directions_and_broken_dynamics() -> None:
    inst = _instance(np.array([30.0, 30.0, 90.0, 90.0]), BATTERY)
    plan = solve(inst)
    loop = plan.charge_kw.copy()
    loop[0, 0] += 100.0
    dis = plan.discharge_kw.copy()
    dis[0, 0] += 100.0 * BATTERY.eta_charge * BATTERY.eta_discharge  # SoC-neutral: only the checker sees it
    soc = soc_trajectory_kwh(BATTERY, loop[0], dis[0])[None, :]
    bad = replace(plan, charge_kw=loop, discharge_kw=dis, soc_kwh=soc)
    assert any("same slot" in v for v in plan_violations(inst, bad))
    wrong = replace(plan, soc_kwh=plan.soc_kwh + 1.0)
    assert any("dynamics" in v for v in plan_violations(inst, wrong))


def test_target_profile_and_self_discharge_in_a_ctss_plan() -> None:
    battery = replace(
        BATTERY,
        self_discharge_fraction_per_hour=0.01,
        soc_max_fraction_by_slot=tuple([0.6] * 4 + [0.9] * 12),
        soc_targets=(SocTarget(slot=9, soc_min_fraction=0.85),),  # "85 % by 05:00"
    )
    inst = _instance(np.array([30.0] * 8 + [200.0] * 8), battery)
    plan = solve(inst)
    soc = plan.soc_kwh[0] / battery.energy_kwh
    assert soc[:4].max() <= 0.6 + 1e-9 and soc[9] >= 0.85 - 1e-9
    assert plan.soc_kwh[0] == pytest.approx(soc_trajectory_kwh(battery, plan.charge_kw[0], plan.discharge_kw[0]))
    missed = replace(inst, sites=(replace(inst.sites[0], battery=replace(battery, soc_targets=())),))
    lazy = solve(missed)  # without the target it sells in the expensive half before slot 9
    assert lazy.soc_kwh[0, 9] < 0.85 * battery.energy_kwh - 1.0
    assert any("target" in v for v in plan_violations(inst, lazy))


def test_replan_keeps_later_targets_and_profiles() -> None:
    battery = replace(BATTERY, soc_min_fraction_by_slot=tuple([0.1] * 6 + [0.7] * 6), soc_targets=(SocTarget(8, 0.8),))
    inst = _instance(np.array([30.0] * 6 + [150.0] * 6), battery)
    plan = solve(inst)
    new, new_plan = replan(inst, plan, 4)
    b = new.sites[0].battery
    assert b is not None and b.soc_targets == (SocTarget(4, 0.8),) and len(b.soc_min_fraction_by_slot or ()) == 8
    assert new_plan.soc_kwh[0, 4] >= 0.8 * b.energy_kwh - 1e-6


def test_degradation_is_charged_on_throughput_in_plan_metrics() -> None:
    battery = replace(BATTERY, degradation_gbp_per_mwh=3.0)
    inst = _instance(np.array([10.0, 10.0, 120.0, 120.0]), battery)
    plan = solve(inst)
    throughput_mwh = (plan.charge_kw.sum() + plan.discharge_kw.sum()) * MWH_PER_KW_SLOT
    assert plan.charge_kw.sum() > 0
    assert evaluate(inst, plan).degradation_gbp == pytest.approx(3.0 * throughput_mwh)


# -- agent configs ------------------------------------------------------------------------------


SITE = {"id": "s1", "region": "GB", "capacity_kw": 1000}
BASIC = {"energy_kwh": 400, "charge_power_kw": 100, "discharge_power_kw": 100}


def test_agent_config_accepts_every_battery_field_and_writes_daily_rules_per_horizon() -> None:
    battery = {
        **BASIC,
        "charge_efficiency": 0.96,
        "discharge_efficiency": 0.94,
        "self_discharge_fraction_per_hour": 0.001,
        "degradation_gbp_per_mwh": 4.5,
        "soc_min_fraction_daily": [0.1] * 12 + [0.3] * 36,
        "soc_max_fraction_daily": 0.95,
        "soc_targets_daily": [{"time_utc": "07:00", "soc_min_fraction": 0.8}],
    }
    config = SiteConfig.from_dict({**SITE, "battery": battery})
    site = config.materialise(datetime(2026, 1, 5, 5, 0, tzinfo=UTC), 96)
    b = site.battery
    assert b is not None and (b.eta_charge, b.eta_discharge) == (0.96, 0.94)
    # 05:00 start: 07:00 ends slot 3, then every 48 slots
    assert b.soc_targets == (SocTarget(3, 0.8), SocTarget(51, 0.8))
    assert b.soc_min_fraction_by_slot is not None and b.soc_min_fraction_by_slot[:3] == (0.1, 0.1, 0.3)
    assert b.soc_max_fraction_by_slot == (0.95,) * 96


@pytest.mark.parametrize(
    ("battery", "message"),
    [
        ({**BASIC, "energy_kwh": "big"}, "battery.energy_kwh must be a finite number"),
        ({"energy_kwh": 1, "charge_power_kw": 1}, "battery.discharge_power_kw is required"),
        ({**BASIC, "export_kw": 5}, "unknown battery fields"),
        ({**BASIC, "charge_efficiency": 0.9}, "charge_efficiency and discharge_efficiency"),
        ({**BASIC, "soc_min_fraction_daily": [0.1] * 47}, "battery.soc_min_fraction_daily"),
        ({**BASIC, "soc_targets_daily": [{"time_utc": "7am", "soc_min_fraction": 0.8}]}, "time_utc"),
        ({**BASIC, "soc_targets_daily": [{"time_utc": "07:00", "soc_min_fraction": 2}]}, "soc_min_fraction"),
        ({**BASIC, "soc_targets_daily": [{"time_utc": "07:00", "soc_min_fraction": 0.95}]}, "soc_targets_daily"),
        ({**BASIC, "self_discharge_fraction_per_hour": -0.1}, "self_discharge_fraction_per_hour"),
        ({**BASIC, "charge_power_kw": 2e6}, "battery.charge_power_kw must be at most"),
    ],
)
def test_agent_config_battery_errors_name_the_field(battery: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SiteConfig.from_dict({**SITE, "battery": battery})


def test_battery_round_trips_through_its_dict() -> None:
    b = replace(
        BATTERY,
        charge_efficiency=0.96,
        discharge_efficiency=0.94,
        soc_max_fraction_by_slot=(0.9, 0.8),
        soc_targets=(SocTarget(1, 0.5),),
    )
    assert Battery.from_dict(b.to_dict()) == b


def test_readme_battery_example_is_a_valid_config() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Batteries in an agent config", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```json\n(.*?)```", section, re.DOTALL)
    assert block, "the README's battery section has no JSON example"
    config = json.loads("{" + block.group(1) + "}")
    battery, rules = battery_from_config(config["battery"], "battery")
    assert battery.eta_charge == 0.95 and rules is not None and rules.soc_targets_daily
