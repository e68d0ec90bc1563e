"""The plan checker: every invariant of a plan, recomputed from the instance (not from the model's
columns), so a builder bug cannot hide behind the same bug in its check. CTSS plans are verified before
they are returned; the baselines report what they break in ``Plan.violations``.
"""

from __future__ import annotations

import math

import numpy as np

from bpp.domain import TOL, BoolArray, FloatArray, Instance, Job, Priority, allowed_sites
from bpp.plan import Plan
from bpp.scheduler.eligibility import fixed_run_fraction
from bpp.storage import battery_violations


class PlanViolation(AssertionError):
    """A plan breaks a constraint (raised by :func:`verify_plan`)."""

    def __init__(self, violations: list[str]) -> None:
        self.violations = violations
        super().__init__("plan violates constraints:\n  - " + "\n  - ".join(violations[:30]))


def verify_plan(instance: Instance, plan: Plan, tol: float = 1e-5) -> None:
    """Raise :class:`PlanViolation` if the plan breaks any constraint (see :func:`plan_violations`)."""
    v = plan_violations(instance, plan, tol)
    if v:
        raise PlanViolation(v)


def plan_violations(instance: Instance, plan: Plan, tol: float = 1e-5) -> list[str]:
    """Every constraint a plan breaks (empty list = feasible). Checked independently of the builder:
    - work: each job's total run fraction equals its remaining work; fractions in [0, 1];
    - when: only in [release, deadline), within max deferral, inside the horizon;
    - where: only at allowed sites (home only for critical/running work or without migration);
    - critical/running work exactly at its fixed run; contiguous jobs in one block at one site;
    - carbon: flexible/batch jobs only in slots with carbon ≤ their threshold;
    - gating: batch jobs only in green slots when gating applies to them;
    - one place at a time per slot; site load ≤ capacity; grid import ≥ 0, ≤ import limit and, in every
      committed half hour, its mean over the plan slots the half hour covers ≤ the order's cap (one slot
      at 30 and 60 minutes, two at 15); solar used ≤ solar available; batteries obey their physics
      (:func:`bpp.storage.battery_violations`: power limits, never charging and discharging in one slot,
      SoC recomputed with both efficiencies and self-discharge, per-slot SoC bounds, targets, terminal level).
    Every rule is in the instance's own slots: deferral in slots of ``slot_minutes``, battery energy per
    slot of ``slot_hours``.
    """
    inst = instance
    F = plan.run_fraction
    S, T = inst.n_sites, inst.n_slots
    if F.shape != (inst.n_jobs, S, T):
        return [f"run_fraction has shape {F.shape}, expected {(inst.n_jobs, S, T)}"]
    out: list[str] = []
    if np.any(-tol > F) or np.any(1 + tol < F):
        out.append("run fractions outside [0, 1]")
    carbon = inst.carbon_matrix()
    green = np.stack([s.green_mask(inst.actions.green_solar_fraction) for s in inst.sites])
    waived = set(plan.gating_waived)
    for jx, job in enumerate(inst.jobs):
        out.extend(
            _job_violations(inst, job, F[jx], carbon=carbon, green=green, gating_waived=job.id in waived, tol=tol)
        )
    out.extend(_site_violations(inst, plan, tol))
    out.extend(_battery_use_violations(inst, plan, tol))
    return out


def _job_violations(
    inst: Instance, job: Job, f: FloatArray, *, carbon: FloatArray, green: BoolArray, gating_waived: bool, tol: float
) -> list[str]:
    """What one job's (n_sites, n_slots) run fractions ``f`` break."""
    out: list[str] = []
    total = f.sum()
    # fixed work that runs past the horizon end is truncated there; movable work must fit inside
    need = job.work_slots if job.movable else float(fixed_run_fraction(inst, job).sum())
    if abs(total - need) > tol * max(1.0, need):
        out.append(f"job {job.id}: runs {total:.4f} slots of work, needs {need:g}")
    used = np.argwhere(f > tol)
    if len(used) == 0:
        return out
    sites_used = sorted(set(used[:, 0].tolist()))
    if np.any(f.sum(axis=0) > 1 + tol):
        out.append(f"job {job.id}: more than its full power in one slot (runs at two sites at once)")
    if not job.movable:
        return out + _fixed_job_violations(inst, job, f, tol)
    acts = inst.actions
    slots_used = used[:, 1]
    if slots_used.min() < max(job.release_slot, 0):
        out.append(f"job {job.id}: runs before its release (slot {slots_used.min()} < {job.release_slot})")
    last = int(slots_used.max())
    if last >= job.deadline_slot:
        out.append(f"job {job.id}: runs in slot {last} at/after its deadline slot {job.deadline_slot}")
    if last >= job.release_slot + job.duration_slots + acts.max_deferral_slots(inst.slot_minutes):
        out.append(f"job {job.id}: finishes later than release + duration + max deferral ({acts.max_deferral_min} min)")
    allowed = set(allowed_sites(inst, job))
    bad_sites = [inst.sites[k].id for k in sites_used if k not in allowed]
    if bad_sites:
        out.append(f"job {job.id}: runs at sites it may not use: {bad_sites}")
    thr = job.carbon_threshold_g_per_kwh
    if thr is not None:
        dirty = [(inst.sites[k].id, int(t)) for k, t in used if carbon[k, t] > thr + TOL]
        if dirty:
            k0, t0 = dirty[0]
            out.append(
                f"job {job.id}: runs at {k0} slot {t0} with carbon "
                f"{carbon[inst.site_index(k0), t0]:.0f} > threshold {thr:g}"
            )
    gated = acts.renewable_gating and job.priority is Priority.BATCH and not gating_waived
    if gated and any(not green[k, t] for k, t in used):
        out.append(f"job {job.id}: batch job runs outside green (solar ≥ {acts.green_solar_fraction:.0%}) slots")
    if not job.preemptible:
        d = math.ceil(job.work_slots - TOL)
        if len(sites_used) != 1:
            out.append(f"job {job.id}: non-preemptible job split across sites")
        else:
            row = f[sites_used[0]]
            on = np.flatnonzero(row > tol)
            if len(on) != d or on[-1] - on[0] + 1 != d or np.any(np.abs(row[on] - 1.0) > tol):
                out.append(f"job {job.id}: non-preemptible job not run contiguously at full power for {d} slots")
    return out


def _fixed_job_violations(inst: Instance, job: Job, f: FloatArray, tol: float) -> list[str]:
    """A critical or running job must run exactly its fixed run (and a critical one meet its deadline)."""
    out: list[str] = []
    k = inst.site_index(job.running_at_site or job.site_id)
    expect = np.zeros((inst.n_sites, inst.n_slots))
    expect[k] = fixed_run_fraction(inst, job)
    if np.max(np.abs(f - expect)) > tol:
        what = "critical" if job.priority is Priority.CRITICAL else "running"
        out.append(
            f"job {job.id}: {what} job moved from its fixed run at {inst.sites[k].id} "
            f"from slot {max(job.release_slot, 0)}"
        )
    if job.running_at_site is None and max(job.release_slot, 0) + math.ceil(job.work_slots - TOL) > job.deadline_slot:
        out.append(f"job {job.id}: critical job misses its deadline")
    return out


def _site_violations(inst: Instance, plan: Plan, tol: float) -> list[str]:
    """Capacity, solar availability, no export, import limits and committed reductions' caps."""
    out: list[str] = []
    load = plan.site_load_kw(inst)
    cap = np.stack([s.capacity_kw for s in inst.sites])
    over = load - cap
    if np.any(over > tol * np.maximum(1.0, cap)):
        k, t = (int(i) for i in np.unravel_index(int(np.argmax(over)), over.shape))
        out.append(f"site {inst.sites[k].id}: load {load[k, t]:.1f} kW > capacity {cap[k, t]:.1f} kW in slot {t}")
    solar = np.stack([s.solar_kw for s in inst.sites])
    if np.any(plan.solar_used_kw < -tol) or np.any(plan.solar_used_kw > solar + tol):
        out.append("solar used outside [0, available]")
    g = plan.grid_import_kw(inst)
    scale = np.maximum(1.0, np.abs(load))
    if np.any(g < -tol * scale):
        k, t = (int(i) for i in np.unravel_index(int(np.argmin(g)), g.shape))
        out.append(f"site {inst.sites[k].id}: grid import {g[k, t]:.3f} kW < 0 (export) in slot {t}")
    for k, s in enumerate(inst.sites):
        if s.grid_import_limit_kw is not None and np.any(g[k] > s.grid_import_limit_kw + tol * scale[k]):
            out.append(f"site {s.id}: grid import above its limit {s.grid_import_limit_kw} kW")
    for h in inst.commitment_half_hours():
        mean_kw = float(g[h.site_index, list(h.slots)].mean())
        if mean_kw > h.cap_kw + tol * max(1.0, abs(h.cap_kw)):
            out.append(
                f"order {h.order_id}: site {inst.sites[h.site_index].id} imports {mean_kw:.2f} kW on average "
                f"in slots {list(h.slots)} > its committed cap {h.cap_kw:.2f} kW (baseline − reduction)"
            )
    return out


def _battery_use_violations(inst: Instance, plan: Plan, tol: float) -> list[str]:
    """Batteries obey their physics, and no battery is used where none is modelled."""
    out: list[str] = []
    for k, s in enumerate(inst.sites):
        if s.battery is None or not inst.actions.storage_coordination:
            if np.any(np.abs(plan.charge_kw[k]) > tol) or np.any(np.abs(plan.discharge_kw[k]) > tol):
                out.append(f"site {s.id}: battery used without a battery or with storage coordination off")
            continue
        out.extend(
            battery_violations(
                s,
                s.battery,
                charge_kw=plan.charge_kw[k],
                discharge_kw=plan.discharge_kw[k],
                soc_kwh=plan.soc_kwh[k],
                slot_hours=inst.slot_hours,
            )
        )
    return out
