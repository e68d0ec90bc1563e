"""A schedule and its score: what the scheduler (:mod:`bpp.scheduler`) and the baselines
(:mod:`bpp.baselines`) return, and what the decision log, the offers and the storage summary read.

Pure (numpy only). A :class:`Plan` is arrays over (job, site, slot) and (site, slot); everything else a
plan implies — site load, grid import, energy by job — is computed from those arrays and the
:class:`bpp.domain.Instance` it was made for, so it never disagrees with them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bpp.domain import FloatArray, Instance


@dataclass(frozen=True)
class PlanMetrics:
    """A plan scored on one set of signals. ``objective`` excludes the tie-breaker."""

    objective: float
    energy_cost_gbp: float
    carbon_kg: float
    migration_cost_gbp: float
    degradation_gbp: float
    grid_energy_mwh: float

    @property
    def total_cost_gbp(self) -> float:
        return self.energy_cost_gbp + self.migration_cost_gbp + self.degradation_gbp

    def to_dict(self) -> dict[str, float]:
        d = dict(self.__dict__)
        d["total_cost_gbp"] = self.total_cost_gbp
        return d


@dataclass(eq=False)
class Plan:
    """A schedule. ``run_fraction[j, s, t]`` is the fraction of job j's power drawn at site s in slot t
    (1 for every running slot of a contiguous job). Site arrays are (n_sites, n_slots) kW; SoC is kWh at
    the end of each slot (zeros for sites without a modelled battery)."""

    policy: str
    run_fraction: FloatArray
    charge_kw: FloatArray
    discharge_kw: FloatArray
    soc_kwh: FloatArray
    solar_used_kw: FloatArray
    status: str = "optimal"
    mip_gap: float = 0.0
    solve_time_s: float = 0.0
    build_time_s: float = 0.0
    n_binaries: int = 0
    n_columns: int = 0
    n_rows: int = 0
    gating_waived: tuple[str, ...] = ()
    metrics: PlanMetrics | None = None
    #: constraints a baseline policy could not honour (CTSS plans are always verified: empty)
    violations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def site_load_kw(self, instance: Instance) -> FloatArray:
        """(n_sites, n_slots) baseline + compute load."""
        base: FloatArray = np.stack([s.baseline_kw for s in instance.sites])
        if not instance.jobs:
            return base + 0.0
        power = np.array([j.power_kw for j in instance.jobs])
        compute: FloatArray = np.einsum("j,jst->st", power, self.run_fraction)
        return base + compute

    def grid_import_kw(self, instance: Instance) -> FloatArray:
        """(n_sites, n_slots) grid import implied by the plan (clipped at tiny negatives)."""
        g = self.site_load_kw(instance) + self.charge_kw - self.discharge_kw - self.solar_used_kw
        return np.where(np.abs(g) < 1e-7, 0.0, g)

    def job_energy_by_site_kwh(self, instance: Instance) -> FloatArray:
        """(n_jobs, n_sites) energy each job draws at each site over the horizon."""
        power = np.array([j.power_kw for j in instance.jobs])
        energy: FloatArray = (self.run_fraction.sum(axis=2) * power[:, None]) * (instance.mwh_per_kw_slot * 1000)
        return energy


def idle_battery_arrays(instance: Instance) -> tuple[FloatArray, FloatArray, FloatArray]:
    """charge, discharge, SoC of idle batteries (SoC from its initial level, less self-discharge)."""
    z = np.zeros((instance.n_sites, instance.n_slots))
    soc = z.copy()
    for k, s in enumerate(instance.sites):
        if s.battery is not None:
            kept = s.battery.retention_per_slot(instance.slot_hours) ** np.arange(1, instance.n_slots + 1)
            soc[k] = s.battery.initial_soc_kwh * kept
    return z, z.copy(), soc


def max_solar_use(
    instance: Instance,
    run_fraction: FloatArray,
    charge: FloatArray | None = None,
    discharge: FloatArray | None = None,
) -> FloatArray:
    """Solar used when a policy uses all it can (up to the site's load; no export)."""
    power = np.array([j.power_kw for j in instance.jobs]) if instance.jobs else np.zeros(0)
    load: FloatArray = np.stack([s.baseline_kw for s in instance.sites])
    if instance.jobs:
        load = load + np.einsum("j,jst->st", power, run_fraction)
    if charge is not None:
        load = load + charge
    if discharge is not None:
        load = load - discharge
    solar = np.stack([s.solar_kw for s in instance.sites])
    return np.clip(np.minimum(solar, load), 0.0, None)


def evaluate(instance: Instance, plan: Plan) -> PlanMetrics:
    """Score a plan on ``instance``'s signals (pass ``instance.with_signals(actuals)`` to settle)."""
    g = plan.grid_import_kw(instance)
    w = instance.weight_matrix()
    price = instance.price_matrix()
    carbon = instance.carbon_matrix()
    migration = 0.0
    for jx, job in enumerate(instance.jobs):
        if not job.movable or job.migration_cost_gbp == 0:
            continue
        home = instance.site_index(job.site_id)
        away = plan.run_fraction[jx].sum() - plan.run_fraction[jx, home].sum()
        migration += job.migration_cost_gbp * away / job.work_slots
    degradation = 0.0
    for k, s in enumerate(instance.sites):
        if s.battery is not None:
            throughput_kw_slots = float(plan.charge_kw[k].sum() + plan.discharge_kw[k].sum())
            degradation += throughput_kw_slots * instance.mwh_per_kw_slot * s.battery.degradation_gbp_per_mwh
    gw = instance.objective.gbp_weight
    mwh_per_kw_slot = instance.mwh_per_kw_slot
    return PlanMetrics(
        objective=float((w * g).sum() * mwh_per_kw_slot + gw * (migration + degradation)),
        energy_cost_gbp=float((price * g).sum() * mwh_per_kw_slot),
        carbon_kg=float((carbon * g).sum() * mwh_per_kw_slot),
        migration_cost_gbp=float(migration),
        degradation_gbp=float(degradation),
        grid_energy_mwh=float(g.sum() * mwh_per_kw_slot),
    )
