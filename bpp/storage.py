"""Battery storage: the battery block of the site LP, and the storage agent's own battery LP.

The block (used by :mod:`bpp.scheduler.milp` for every site with a battery when storage coordination is
on) has, per slot t, charge ``c[t] ∈ [0, charge_power_kw]``, discharge ``d[t] ∈ [0,
discharge_power_kw]`` and end-of-slot state of charge ``e[t] ∈ [soc_min_kwh, soc_max_kwh]``, with

    e[t] = e[t−1] + √η · c[t] · h − d[t] · h / √η        (e[−1] = initial_soc_kwh, h = slot hours)
    e[T−1] ≥ terminal_soc_kwh

and the site balance adds ``+c − d`` to grid import. Degradation is charged on discharged energy.
Because the model is an LP, "arbitrage against price and carbon" is simply the objective's per-MWh
weight (:class:`bpp.domain.ObjectiveSpec`) acting on the import the battery shifts; covering site
load during a committed reduction falls out of the reduction's cap on grid import.

A stand-alone battery (a storage-only provider, or a site whose compute agent runs with storage
coordination off) is planned by solving :func:`storage_instance`: the same LP with the site's other load as a fixed
profile — the scheduler with no jobs — so the storage agent and the compute agent share one
formulation, one plan checker and one offer derivation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

from bpp.domain import (
    MWH_PER_KW_SLOT,
    SLOT_HOURS,
    TOL,
    Battery,
    CommittedReduction,
    ControlActions,
    FloatArray,
    Instance,
    IntArray,
    ObjectiveSpec,
    Site,
    SolverSettings,
)
from bpp.lp import LPParts
from bpp.plan import Plan


@dataclass(frozen=True)
class BatteryBlock:
    """Column and row indices of one site's battery in the site LP."""

    site_index: int
    charge_cols: IntArray
    discharge_cols: IntArray
    soc_cols: IntArray


def add_battery_block(
    lp: LPParts, site_index: int, battery: Battery, *, n_slots: int, balance_rows: IntArray, gbp_weight: float
) -> BatteryBlock:
    """Append the battery's columns and SoC rows to ``lp``; link it to the site's balance rows
    (``grid − load − c + d + solar = fixed``, so the battery enters with −1 on charge, +1 on discharge)."""
    eta = battery.one_way_efficiency
    c = lp.add_cols(np.zeros(n_slots), np.zeros(n_slots), np.full(n_slots, battery.charge_power_kw))
    deg = battery.degradation_gbp_per_mwh * MWH_PER_KW_SLOT * gbp_weight
    d = lp.add_cols(np.full(n_slots, deg), np.zeros(n_slots), np.full(n_slots, battery.discharge_power_kw))
    soc_lb = np.full(n_slots, battery.soc_min_kwh)
    soc_lb[-1] = max(soc_lb[-1], battery.terminal_soc_kwh)
    e = lp.add_cols(np.zeros(n_slots), soc_lb, np.full(n_slots, battery.soc_max_kwh))
    # Balance rows: −c + d
    lp.add_entries(balance_rows, c, -np.ones(n_slots))
    lp.add_entries(balance_rows, d, np.ones(n_slots))
    # Dynamics rows: e[t] − e[t−1] − √η h c[t] + (h/√η) d[t] = (initial if t == 0 else 0)
    rhs = np.zeros(n_slots)
    rhs[0] = battery.initial_soc_kwh
    rows = lp.add_rows(rhs, rhs)
    lp.add_entries(rows, e, np.ones(n_slots))
    lp.add_entries(rows[1:], e[:-1], -np.ones(n_slots - 1))
    lp.add_entries(rows, c, np.full(n_slots, -eta * SLOT_HOURS))
    lp.add_entries(rows, d, np.full(n_slots, SLOT_HOURS / eta))
    return BatteryBlock(site_index, c, d, e)


def soc_trajectory_kwh(battery: Battery, charge_kw: FloatArray, discharge_kw: FloatArray) -> FloatArray:
    """End-of-slot SoC implied by a charge/discharge schedule (the plan checker recomputes it)."""
    eta = battery.one_way_efficiency
    delta = eta * charge_kw * SLOT_HOURS - discharge_kw * SLOT_HOURS / eta
    return battery.initial_soc_kwh + np.cumsum(delta)


def battery_violations(
    site: Site,
    battery: Battery,
    *,
    charge_kw: FloatArray,
    discharge_kw: FloatArray,
    soc_kwh: FloatArray,
    tol: float = 1e-5,
) -> list[str]:
    """Every way a battery schedule breaks the battery's physics or bounds (empty = valid)."""
    out: list[str] = []
    scale = max(1.0, battery.energy_kwh)
    if np.any(charge_kw < -tol) or np.any(charge_kw > battery.charge_power_kw + tol):
        out.append(f"site {site.id}: battery charge outside [0, {battery.charge_power_kw}] kW")
    if np.any(discharge_kw < -tol) or np.any(discharge_kw > battery.discharge_power_kw + tol):
        out.append(f"site {site.id}: battery discharge outside [0, {battery.discharge_power_kw}] kW")
    expected = soc_trajectory_kwh(battery, charge_kw, discharge_kw)
    if np.max(np.abs(expected - soc_kwh), initial=0.0) > tol * scale:
        out.append(f"site {site.id}: battery SoC does not follow √η charge/discharge dynamics")
    if np.any(soc_kwh < battery.soc_min_kwh - tol * scale) or np.any(soc_kwh > battery.soc_max_kwh + tol * scale):
        out.append(f"site {site.id}: battery SoC outside [{battery.soc_min_kwh}, {battery.soc_max_kwh}] kWh")
    if len(soc_kwh) and soc_kwh[-1] < battery.terminal_soc_kwh - tol * scale:
        out.append(f"site {site.id}: battery ends at {soc_kwh[-1]:.1f} kWh < terminal {battery.terminal_soc_kwh} kWh")
    return out


# -- the stand-alone storage plan ----------------------------------------------------------------


@dataclass(frozen=True)
class StoragePlanSummary:
    """What a battery plan does, in money and carbon, against leaving the battery idle."""

    site_id: str
    charged_mwh: float
    discharged_mwh: float
    equivalent_full_cycles: float
    energy_cost_gbp: float
    idle_energy_cost_gbp: float
    carbon_kg: float
    idle_carbon_kg: float
    degradation_gbp: float

    @property
    def arbitrage_saving_gbp(self) -> float:
        return self.idle_energy_cost_gbp - self.energy_cost_gbp - self.degradation_gbp

    def to_dict(self) -> dict[str, float | str]:
        d: dict[str, float | str] = dict(self.__dict__)
        d["arbitrage_saving_gbp"] = self.arbitrage_saving_gbp
        return d


def storage_instance(
    site: Site,
    start_utc: datetime,
    price_gbp_per_mwh: FloatArray,
    carbon_g_per_kwh: FloatArray,
    *,
    objective: ObjectiveSpec | None = None,
    commitments: tuple[CommittedReduction, ...] = (),
    solver: SolverSettings | None = None,
) -> Instance:
    """A job-less instance: the site's baseline is its net non-battery load (e.g. the compute agent's
    planned load when the two run separately); the only decisions are the battery and solar use."""
    if site.battery is None:
        raise ValueError(f"site {site.id} has no battery")
    return Instance(
        start_utc=start_utc,
        n_slots=site.n_slots,
        sites=(site,),
        jobs=(),
        price_gbp_per_mwh={site.region: np.asarray(price_gbp_per_mwh, dtype=float)},
        carbon_g_per_kwh={site.region: np.asarray(carbon_g_per_kwh, dtype=float)},
        commitments=tuple(commitments),
        actions=ControlActions(storage_coordination=True, geographic_migration=False),
        objective=objective or ObjectiveSpec(),
        solver=solver or SolverSettings(),
    )


def summarise_storage(instance: Instance, plan: Plan) -> list[StoragePlanSummary]:
    """Per-battery summary of a plan."""
    out = []
    price = instance.price_matrix()
    carbon = instance.carbon_matrix()
    for k, site in enumerate(instance.sites):
        b = site.battery
        if b is None:
            continue
        ch = plan.charge_kw[k]
        dis = plan.discharge_kw[k]
        grid = plan.grid_import_kw(instance)[k]
        idle = np.maximum(grid - ch + dis, 0.0)
        out.append(
            StoragePlanSummary(
                site_id=site.id,
                charged_mwh=float(ch.sum() * MWH_PER_KW_SLOT),
                discharged_mwh=float(dis.sum() * MWH_PER_KW_SLOT),
                equivalent_full_cycles=float(dis.sum() * SLOT_HOURS / b.energy_kwh),
                energy_cost_gbp=float((grid * price[k]).sum() * MWH_PER_KW_SLOT),
                idle_energy_cost_gbp=float((idle * price[k]).sum() * MWH_PER_KW_SLOT),
                carbon_kg=float((grid * carbon[k]).sum() * MWH_PER_KW_SLOT),
                idle_carbon_kg=float((idle * carbon[k]).sum() * MWH_PER_KW_SLOT),
                degradation_gbp=float(dis.sum() * MWH_PER_KW_SLOT * b.degradation_gbp_per_mwh),
            )
        )
    return out


__all__ = [
    "TOL",
    "BatteryBlock",
    "StoragePlanSummary",
    "add_battery_block",
    "battery_violations",
    "soc_trajectory_kwh",
    "storage_instance",
    "summarise_storage",
]
