"""The CTSS MILP: :func:`build_model` assembles it as sparse arrays; :func:`extract_plan` reads a
solution back through the :class:`Model`'s index maps.

Formulation (sites s, slots t of ``instance.slot_minutes``, slot length h = slot_minutes / 60 hours,
all sparse):

Variables
- ``x[j,s,t] ∈ [0,1]`` for each *preemptible* job j (interruptible and checkpointable) and each
  eligible (site, slot): the fraction of its power it draws there. Continuous: these jobs are an LP
  (a transportation structure: supply = work, demand = site capacity per slot).
- ``y[j,s,τ] ∈ {0,1}`` for each *contiguous* job (not preemptible) and each feasible start τ at an
  allowed site: it runs at full power in slots τ..τ+d−1. These are the only binaries besides the
  battery mode binaries of negative-price slots (below), and there are
  few: starts are limited to the job's deferral window (release … release + max deferral, 9 starts
  with the default 4 h), to sites it may use, and to starts whose every slot passes the job's carbon
  threshold, gating rule and single-job capacity check; critical and already-running jobs have no
  variables at all (their load is a constant).
- ``g[s,t] ≥ 0`` grid import (kW); ``u[s,t] ∈ [0, solar_kw]`` solar used; per battery
  ``c, d, e`` (see :mod:`bpp.storage`).

Constraints
- completion: ``Σ_{s,t} x[j,s,t] = work_j`` (preemptible) / ``Σ_{s,τ} y[j,s,τ] = 1`` (contiguous);
  eligibility (release, deadline, max deferral, allowed regions, carbon ≤ threshold for
  flexible/batch, renewable gating) is enforced by *which columns exist*
  (:mod:`bpp.scheduler.eligibility`), so a job can only be placed where every rule allows it;
- one place at a time: ``Σ_s x[j,s,t] ≤ 1`` (only where a job has ≥ 2 eligible sites in a slot);
- capacity: ``baseline + fixed + Σ p_j·x + Σ p_j·y_cover ≤ capacity_kw`` per (s,t);
- balance: ``g = baseline + fixed + compute + c − d − u`` per (s,t);
- grid import cap: ``g ≤ min(grid_import_limit_kw, committed-reduction cap)`` (column bound);
  committed reductions are half-hourly (:meth:`bpp.domain.Instance.commitment_half_hours`): a half hour
  of one slot (30- and 60-minute plans) is a column bound, a half hour of two 15-minute slots a row on
  their mean, ``(g[s,t] + g[s,t+1]) / 2 ≤ cap`` — the energy the half hour's meter reading sees;
- battery dynamics and SoC bounds (:mod:`bpp.storage`), with a charge-or-discharge binary per slot
  only where the objective weight is negative (or every slot on request: ``battery_exclusivity``).

Objective: ``Σ_{s,t} weight[s,t] · g[s,t] · h/1000`` (weight from :class:`bpp.domain.ObjectiveSpec`,
default price × carbon_factor) + migration cost (per job moved; per fraction of work moved for
preemptible jobs) + battery degradation, plus a 1e-9-scale tie-breaker that prefers earlier work so
equal-cost plans do not defer gratuitously (reported objectives exclude it).

The *elastic* variant (``build_model(elastic=True)``, used only by :mod:`bpp.scheduler.diagnosis`)
adds non-negative slack to the capacity rows and grid-import caps and minimises the slack alone.

Invariants of the builder: columns and rows are appended in one fixed order (site rows, elastic slack,
solar, batteries, preemptible jobs, contiguous jobs), every block is a vectorised numpy append to
:class:`bpp.lp.LPParts` (no per-entry Python loop over jobs × slots), and the plan a solution gives is
read only through the index maps the builder returns.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from bpp.domain import TOL, BoolArray, FloatArray, HalfHourCap, Instance, IntArray, effective_window
from bpp.lp import LPParts
from bpp.plan import Plan, idle_battery_arrays
from bpp.scheduler.conflicts import SchedulingInfeasible
from bpp.scheduler.eligibility import (
    Eligibility,
    eligibility,
    fixed_load_kw,
    fixed_run_fraction,
    fixed_work_conflicts,
    free_capacity_kw,
)
from bpp.storage import BatteryBlock, add_battery_block, exclusive_slot_mask

#: tie-breaker per kW per slot of delay from the earliest slot, so equal-cost plans run work early
#: instead of deferring it for nothing. It must exceed HiGHS's optimality tolerance (~1e-7) to act, and
#: is tiny against real weights (£100/MWh ≈ 0.05 per kW-slot): it never gives up more than
#: ``tie_break_bound`` of true objective. Reported objectives exclude it.
TIE_BREAK = 1e-7


@dataclass
class Model:
    """A built CTSS model and the index maps needed to read a solution back."""

    lp: LPParts
    instance: Instance
    x_job: IntArray
    x_site: IntArray
    x_slot: IntArray
    x_cols: IntArray
    y_job: IntArray
    y_site: IntArray
    y_start: IntArray
    y_cols: IntArray
    g_cols: IntArray  # (n_sites, n_slots)
    u_cols: dict[int, tuple[IntArray, IntArray]]  # site -> (slots, cols)
    batteries: list[BatteryBlock]
    capacity_rows: IntArray  # (n_sites, n_slots)
    gating_waived: tuple[str, ...]
    build_time_s: float
    elastic_cap_cols: IntArray | None = None  # (n_sites, n_slots) slack on capacity rows
    elastic_import_cols: dict[tuple[int, int], int] | None = None  # (s,t) -> slack col on import cap
    #: elastic slack on committed half hours of several slots: (site, slots, slack col)
    elastic_mean_cols: list[tuple[int, tuple[int, ...], int]] | None = None


def build_model(
    instance: Instance,
    *,
    elastic: bool = False,
    skip_prechecks: bool = False,
    exclusive_slots: BoolArray | None = None,
) -> Model:
    """Build the CTSS MILP as sparse arrays (see the module docstring for the formulation).

    ``elastic``: capacity rows and grid-import caps get non-negative slack columns, the objective is
    the total slack (kW·slots) — used only to locate the conflict in an infeasible instance.
    ``exclusive_slots`` (n_sites, n_slots): extra slots whose battery gets a charge-or-discharge binary.
    Raises :class:`SchedulingInfeasible` from the pre-checks unless ``skip_prechecks``."""
    t0 = time.perf_counter()
    el = _eligible_placements(instance, skip_prechecks=skip_prechecks)
    objective_on = 0.0 if elastic else 1.0  # the elastic model minimises slack only
    lp = LPParts()
    site = _add_site_rows(lp, instance, objective_on=objective_on, elastic=elastic)
    slack = _add_elastic_slack(lp, site) if elastic else None
    mean_slack = _add_mean_caps(lp, instance, site, elastic=elastic)
    u_cols = _add_solar(lp, instance, site.balance_rows)
    batteries = _add_batteries(
        lp, instance, site.balance_rows, objective_on=objective_on, exclusive_slots=exclusive_slots
    )
    jobs = _JobVectors.of(instance, el)
    x = _add_preemptible_jobs(lp, instance, el, site=site, jobs=jobs, objective_on=objective_on)
    y = _add_contiguous_jobs(lp, instance, el, site=site, jobs=jobs, objective_on=objective_on)
    return Model(
        lp=lp,
        instance=instance,
        x_job=x.job,
        x_site=x.site,
        x_slot=x.slot,
        x_cols=x.cols,
        y_job=y.job,
        y_site=y.site,
        y_start=y.slot,
        y_cols=y.cols,
        g_cols=site.g_cols,
        u_cols=u_cols,
        batteries=batteries,
        capacity_rows=site.capacity_rows,
        gating_waived=tuple(instance.jobs[jx].id for jx in el.gating_waived),
        build_time_s=time.perf_counter() - t0,
        elastic_cap_cols=None if slack is None else slack[0],
        elastic_import_cols=None if slack is None else slack[1],
        elastic_mean_cols=mean_slack if elastic else None,
    )


# ----------------------------------------------------------------------------------------------
# The steps of build_model, in the order they append columns and rows


def _eligible_placements(instance: Instance, *, skip_prechecks: bool) -> Eligibility:
    """Eligible placements of every movable job; raise the pre-check conflicts unless skipped."""
    el = eligibility(instance, free_capacity_kw(instance))
    conflicts = fixed_work_conflicts(instance) + el.conflicts
    if conflicts and not skip_prechecks:
        raise SchedulingInfeasible(conflicts, "pre-check")
    return el


@dataclass(frozen=True)
class _SiteRows:
    """Per (site, slot), each (n_sites, n_slots): the grid-import column and its upper bound, the
    capacity row (jobs' load ≤ capacity − baseline − fixed load) and the balance row
    (g − compute − c + d + u = baseline + fixed load)."""

    g_cols: IntArray
    import_ub: FloatArray
    capacity_rows: IntArray
    balance_rows: IntArray


def _add_site_rows(lp: LPParts, instance: Instance, *, objective_on: float, elastic: bool) -> _SiteRows:
    """Grid import columns (costed at the objective weight, capped at the import limit and committed
    reductions unless elastic), capacity rows and balance rows."""
    S, T = instance.n_sites, instance.n_slots
    fixed = fixed_load_kw(instance)
    base = np.stack([s.baseline_kw for s in instance.sites])
    cap = np.stack([s.capacity_kw for s in instance.sites])
    weight = instance.weight_matrix() * instance.mwh_per_kw_slot  # objective per kW-slot of import
    import_ub = np.full((S, T), np.inf)
    for k, s in enumerate(instance.sites):
        if s.grid_import_limit_kw is not None:
            import_ub[k] = s.grid_import_limit_kw
    import_ub = np.minimum(import_ub, np.maximum(instance.commitment_caps_kw(), 0.0))
    g_ub = np.full(S * T, np.inf) if elastic else import_ub.ravel()
    g_cols = lp.add_cols((objective_on * weight).ravel(), np.zeros(S * T), g_ub).reshape(S, T)
    capacity_rows = lp.add_rows(np.full(S * T, -np.inf), (cap - base - fixed).ravel()).reshape(S, T)
    rhs = (base + fixed).ravel()
    balance_rows = lp.add_rows(rhs, rhs).reshape(S, T)
    lp.add_entries(balance_rows.ravel(), g_cols.ravel(), np.ones(S * T))
    return _SiteRows(g_cols, import_ub, capacity_rows, balance_rows)


def _add_elastic_slack(lp: LPParts, site: _SiteRows) -> tuple[IntArray, dict[tuple[int, int], int]]:
    """Unit-cost slack on every capacity row and on every finite grid-import cap (which becomes a
    row, ``g − slack ≤ cap``, since the elastic g column is unbounded)."""
    S, T = site.g_cols.shape
    cap_cols = lp.add_cols(np.ones(S * T), np.zeros(S * T), np.full(S * T, np.inf)).reshape(S, T)
    lp.add_entries(site.capacity_rows.ravel(), cap_cols.ravel(), -np.ones(S * T))
    finite = np.argwhere(np.isfinite(site.import_ub))
    import_cols: dict[tuple[int, int], int] = {}
    if len(finite):
        n = len(finite)
        cols = lp.add_cols(np.ones(n), np.zeros(n), np.full(n, np.inf))
        rows = lp.add_rows(np.full(n, -np.inf), site.import_ub[finite[:, 0], finite[:, 1]])
        lp.add_entries(rows, site.g_cols[finite[:, 0], finite[:, 1]], np.ones(n))
        lp.add_entries(rows, cols, -np.ones(n))
        for (k, t), c in zip(finite.tolist(), cols.tolist(), strict=True):
            import_cols[(k, t)] = c
    return cap_cols, import_cols


def _add_mean_caps(
    lp: LPParts, instance: Instance, site: _SiteRows, *, elastic: bool
) -> list[tuple[int, tuple[int, ...], int]]:
    """Committed half hours of several slots (15-minute plans): ``mean_t g[s,t] ≤ cap`` over the slots
    of the half hour; elastic: with a unit-cost slack column each. Returns (site, slots, slack col)."""
    caps: list[HalfHourCap] = instance.commitment_mean_caps()
    out: list[tuple[int, tuple[int, ...], int]] = []
    if not caps:
        return out
    rows = lp.add_rows(np.full(len(caps), -np.inf), np.array([h.cap_kw for h in caps]))
    for row, h in zip(rows.tolist(), caps, strict=True):
        n = len(h.slots)
        lp.add_entries(np.full(n, row), site.g_cols[h.site_index, list(h.slots)], np.full(n, 1.0 / n))
    if elastic:
        cols = lp.add_cols(np.ones(len(caps)), np.zeros(len(caps)), np.full(len(caps), np.inf))
        lp.add_entries(rows, cols, -np.ones(len(caps)))
        out = [(h.site_index, h.slots, int(c)) for h, c in zip(caps, cols.tolist(), strict=True)]
    return out


def _add_solar(lp: LPParts, instance: Instance, balance_rows: IntArray) -> dict[int, tuple[IntArray, IntArray]]:
    """Solar used ``u[s,t] ∈ [0, solar_kw]`` in the slots with sun; site -> (slots, columns)."""
    u_cols: dict[int, tuple[IntArray, IntArray]] = {}
    for k, s in enumerate(instance.sites):
        slots = np.flatnonzero(s.solar_kw > 0)
        if len(slots):
            cols = lp.add_cols(np.zeros(len(slots)), np.zeros(len(slots)), s.solar_kw[slots])
            lp.add_entries(balance_rows[k, slots], cols, np.ones(len(slots)))
            u_cols[k] = (slots, cols)
    return u_cols


def _add_batteries(
    lp: LPParts,
    instance: Instance,
    balance_rows: IntArray,
    *,
    objective_on: float,
    exclusive_slots: BoolArray | None,
) -> list[BatteryBlock]:
    """One battery block per site battery when storage coordination is on (:mod:`bpp.storage`), with
    a charge-or-discharge binary in the slots :func:`bpp.storage.exclusive_slot_mask` picks (negative
    objective weight, or every slot) and in ``exclusive_slots`` (n_sites, n_slots) if given."""
    batteries: list[BatteryBlock] = []
    if instance.actions.storage_coordination:
        gbp_weight = instance.objective.gbp_weight * objective_on
        weight = instance.weight_matrix()
        for k, s in enumerate(instance.sites):
            if s.battery is not None:
                mask = exclusive_slot_mask(instance.actions.battery_exclusivity, weight[k], n_slots=instance.n_slots)
                if exclusive_slots is not None:
                    mask |= exclusive_slots[k]
                batteries.append(
                    add_battery_block(
                        lp,
                        k,
                        s.battery,
                        n_slots=instance.n_slots,
                        balance_rows=balance_rows[k],
                        gbp_weight=gbp_weight,
                        slot_hours=instance.slot_hours,
                        exclusive_slots=mask,
                    )
                )
    return batteries


@dataclass(frozen=True)
class _JobVectors:
    """Per job (indexed by job): power, work, migration cost, home site and first eligible slot."""

    power: FloatArray
    work: FloatArray
    migration: FloatArray
    home: IntArray
    first: IntArray

    @classmethod
    def of(cls, instance: Instance, el: Eligibility) -> _JobVectors:
        jobs = instance.jobs
        return cls(
            power=np.array([j.power_kw for j in jobs]) if jobs else np.zeros(0),
            work=np.array([j.work_slots for j in jobs]) if jobs else np.zeros(0),
            migration=np.array([j.migration_cost_gbp for j in jobs]) if jobs else np.zeros(0),
            home=np.array([instance.site_index(j.site_id) for j in jobs], dtype=np.int64)
            if jobs
            else np.zeros(0, np.int64),
            first=np.array([el.window.get(jx, (0, 0))[0] for jx in range(len(jobs))], dtype=np.int64),
        )


@dataclass(frozen=True)
class _Placements:
    """Columns of one job family: for column i, job ``job[i]`` at site ``site[i]`` in slot ``slot[i]``
    (preemptible: the slot it draws power in; contiguous: its start)."""

    job: IntArray
    site: IntArray
    slot: IntArray
    cols: IntArray

    @classmethod
    def index(cls, per_job: dict[int, tuple[IntArray, IntArray]]) -> _Placements:
        """(job, site, slot) of every candidate column, jobs in ``per_job``'s order; no columns yet."""
        jj, ss, tt = [], [], []
        for jx, (sites, slots) in per_job.items():
            jj.append(np.full(len(sites), jx))
            ss.append(sites)
            tt.append(slots)

        def cat(parts: list[IntArray]) -> IntArray:
            return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)

        return cls(cat(jj), cat(ss), cat(tt), np.zeros(0, dtype=np.int64))


def _add_preemptible_jobs(
    lp: LPParts, instance: Instance, el: Eligibility, *, site: _SiteRows, jobs: _JobVectors, objective_on: float
) -> _Placements:
    """``x[j,s,t] ∈ [0,1]`` per eligible (site, slot): load on capacity and balance rows, completion
    rows ``Σ x = work``, and one-place-at-a-time rows."""
    x = _Placements.index({jx: _nonzero2(mask) for jx, mask in el.slots.items()})
    if not len(x.job):
        return x
    cols = lp.add_cols(_preemptible_costs(instance, x, jobs, objective_on), np.zeros(len(x.job)), np.ones(len(x.job)))
    _add_site_load(lp, site, cols, sites=x.site, slots=x.slot, power_kw=jobs.power[x.job])
    pj = np.array(sorted(el.slots), dtype=np.int64)
    _add_completion_rows(lp, instance.n_jobs, job_ids=pj, rhs=jobs.work[pj], col_job=x.job, cols=cols)
    _add_one_place_rows(lp, x, cols, instance.n_slots)
    return _Placements(x.job, x.site, x.slot, cols)


def _add_contiguous_jobs(
    lp: LPParts, instance: Instance, el: Eligibility, *, site: _SiteRows, jobs: _JobVectors, objective_on: float
) -> _Placements:
    """``y[j,s,τ] ∈ {0,1}`` per feasible start: full power on every covered slot's capacity and
    balance rows, completion rows ``Σ y = 1``."""
    y = _Placements.index(el.starts)
    if not len(y.job):
        return y
    d = _covered_slots(y, jobs)
    cost = _contiguous_costs(instance, y, jobs, objective_on)
    cols = lp.add_cols(cost, np.zeros(len(y.job)), np.ones(len(y.job)), integer=True)
    rep = np.repeat(np.arange(len(y.job)), d)  # one entry per covered slot
    offs = np.arange(len(rep)) - np.repeat(np.cumsum(d) - d, d)
    _add_site_load(lp, site, cols[rep], sites=y.site[rep], slots=y.slot[rep] + offs, power_kw=jobs.power[y.job][rep])
    cj = np.array(sorted(el.starts), dtype=np.int64)
    _add_completion_rows(lp, instance.n_jobs, job_ids=cj, rhs=np.ones(len(cj)), col_job=y.job, cols=cols)
    return _Placements(y.job, y.site, y.slot, cols)


def _covered_slots(y: _Placements, jobs: _JobVectors) -> IntArray:
    """Slots each contiguous column runs for (the job's remaining work, rounded up)."""
    return np.ceil(jobs.work - TOL).astype(np.int64)[y.job]


def _away(p: _Placements, jobs: _JobVectors) -> FloatArray:
    """1.0 for columns away from the job's home site (they pay its migration cost), else 0.0."""
    away: FloatArray = (p.site != jobs.home[p.job]).astype(float)
    return away


def _preemptible_costs(instance: Instance, x: _Placements, jobs: _JobVectors, objective_on: float) -> FloatArray:
    """Objective of each x column: the migration cost of the fraction of work it moves away from home,
    plus the tie-breaker on the kW it delays by (slot − first eligible slot)."""
    migration = instance.objective.gbp_weight * jobs.migration[x.job] * _away(x, jobs) / jobs.work[x.job]
    tie_break = TIE_BREAK * jobs.power[x.job] * (x.slot - jobs.first[x.job])
    cost: FloatArray = objective_on * (migration + tie_break)
    return cost


def _contiguous_costs(instance: Instance, y: _Placements, jobs: _JobVectors, objective_on: float) -> FloatArray:
    """Objective of each y column: the job's migration cost if the block is away from home, plus the
    tie-breaker over its covered slots: Σ (t − first) = d·(τ − first) + d(d−1)/2 kW-weighted."""
    d = _covered_slots(y, jobs)
    delay_kw_slots = jobs.power[y.job] * (d * (y.slot - jobs.first[y.job]) + d * (d - 1) / 2)
    migration = instance.objective.gbp_weight * jobs.migration[y.job] * _away(y, jobs)
    cost: FloatArray = objective_on * (migration + TIE_BREAK * delay_kw_slots)
    return cost


def _nonzero2(mask: BoolArray) -> tuple[IntArray, IntArray]:
    """(row, column) indices of the True entries of a 2-D mask."""
    rows, cols = np.nonzero(mask)
    return rows.astype(np.int64, copy=False), cols.astype(np.int64, copy=False)


def _add_site_load(
    lp: LPParts, site: _SiteRows, cols: IntArray, *, sites: IntArray, slots: IntArray, power_kw: FloatArray
) -> None:
    """Columns drawing ``power_kw`` at (site, slot): + on the capacity row, − on the balance row."""
    lp.add_entries(site.capacity_rows[sites, slots], cols, power_kw)
    lp.add_entries(site.balance_rows[sites, slots], cols, -power_kw)


def _add_completion_rows(
    lp: LPParts, n_jobs: int, *, job_ids: IntArray, rhs: FloatArray, col_job: IntArray, cols: IntArray
) -> None:
    """One equality row per job in ``job_ids`` (sorted): the sum of its columns equals ``rhs``."""
    row_of = np.full(n_jobs, -1, dtype=np.int64)
    row_of[job_ids] = lp.add_rows(rhs, rhs)
    lp.add_entries(row_of[col_job], cols, np.ones(len(col_job)))


def _add_one_place_rows(lp: LPParts, x: _Placements, cols: IntArray, n_slots: int) -> None:
    """``Σ_s x[j,s,t] ≤ 1``, only for (job, slot) pairs with ≥ 2 eligible sites."""
    key = x.job * n_slots + x.slot
    _, inv, counts = np.unique(key, return_inverse=True, return_counts=True)
    multi = counts[inv] > 1
    if multi.any():
        mk, minv = np.unique(key[multi], return_inverse=True)
        rows = lp.add_rows(np.full(len(mk), -np.inf), np.ones(len(mk)))
        lp.add_entries(rows[minv], cols[multi], np.ones(int(multi.sum())))


# ----------------------------------------------------------------------------------------------
# Reading a solution, and the tie-breaker's size


def extract_plan(model: Model, x: FloatArray, policy: str = "ctss") -> Plan:
    """Read a plan (run fractions, battery, solar) back from a solution vector."""
    inst = model.instance
    S, T = inst.n_sites, inst.n_slots
    F = np.zeros((inst.n_jobs, S, T))
    if len(model.x_cols):
        F[model.x_job, model.x_site, model.x_slot] = np.clip(x[model.x_cols], 0.0, 1.0)
    if len(model.y_cols):
        on = np.rint(x[model.y_cols]) > 0.5
        for jx, k, tau in zip(
            model.y_job[on].tolist(), model.y_site[on].tolist(), model.y_start[on].tolist(), strict=True
        ):
            job = inst.jobs[jx]
            F[jx, k, tau : tau + math.ceil(job.work_slots - TOL)] = 1.0
    for jx, job in enumerate(inst.jobs):
        if not job.movable:
            F[jx, inst.site_index(job.running_at_site or job.site_id)] = fixed_run_fraction(inst, job)
    charge, discharge, soc = idle_battery_arrays(inst)
    for b in model.batteries:
        charge[b.site_index] = np.clip(x[b.charge_cols], 0.0, None)
        discharge[b.site_index] = np.clip(x[b.discharge_cols], 0.0, None)
        soc[b.site_index] = x[b.soc_cols]
    solar = np.zeros((S, T))
    for k, (slots, cols) in model.u_cols.items():
        solar[k, slots] = np.clip(x[cols], 0.0, None)
    return Plan(
        policy=policy,
        run_fraction=F,
        charge_kw=charge,
        discharge_kw=discharge,
        soc_kwh=soc,
        solar_used_kw=solar,
        gating_waived=model.gating_waived,
        build_time_s=model.build_time_s,
    )


def tie_break_cost(instance: Instance, plan: Plan) -> float:
    """The tie-breaker's value for a plan: Σ TIE_BREAK · power · (slot − first eligible slot)."""
    total = 0.0
    t = np.arange(instance.n_slots)
    for jx, job in enumerate(instance.jobs):
        if job.movable:
            first = max(job.release_slot, 0)
            total += TIE_BREAK * job.power_kw * float((plan.run_fraction[jx].sum(axis=0) * (t - first)).sum())
    return total


def tie_break_bound(instance: Instance) -> float:
    """How much true objective an optimal plan can give up to the tie-breaker, at most: the largest
    tie-breaker value any plan can have (every job finishing as late as it may)."""
    total = 0.0
    for job in instance.jobs:
        if job.movable:
            first, end = effective_window(job, instance.n_slots, instance.actions, slot_minutes=instance.slot_minutes)
            total += TIE_BREAK * job.power_kw * job.work_slots * max(end - first, 0)
    return total
