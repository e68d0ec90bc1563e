"""CTSS: the carbon- and price-aware temporal/spatial scheduler, an exact MILP solved by HiGHS.

Formulation (sites s, slots t, slot length h = 0.5 h, all sparse, built in :func:`build_model`):

Variables
- ``x[j,s,t] ∈ [0,1]`` for each *preemptible* job j (interruptible and checkpointable) and each
  eligible (site, slot): the fraction of its power it draws there. Continuous: these jobs are an LP
  (a transportation structure: supply = work, demand = site capacity per slot).
- ``y[j,s,τ] ∈ {0,1}`` for each *contiguous* job (not preemptible) and each feasible start τ at an
  allowed site: it runs at full power in slots τ..τ+d−1. These are the only binaries, and there are
  few: starts are limited to the job's deferral window (release … release + max deferral, 9 starts
  with the default 4 h), to sites it may use, and to starts whose every slot passes the job's carbon
  threshold, gating rule and single-job capacity check; critical and already-running jobs have no
  variables at all (their load is a constant).
- ``g[s,t] ≥ 0`` grid import (kW); ``u[s,t] ∈ [0, solar_kw]`` solar used; per battery
  ``c, d, e`` (see :mod:`bpp.storage`).

Constraints
- completion: ``Σ_{s,t} x[j,s,t] = work_j`` (preemptible) / ``Σ_{s,τ} y[j,s,τ] = 1`` (contiguous);
  eligibility (release, deadline, max deferral, allowed regions, carbon ≤ threshold for
  flexible/batch, renewable gating) is enforced by *which columns exist*, so a job can only be
  placed where every rule allows it;
- one place at a time: ``Σ_s x[j,s,t] ≤ 1`` (only where a job has ≥ 2 eligible sites in a slot);
- capacity: ``baseline + fixed + Σ p_j·x + Σ p_j·y_cover ≤ capacity_kw`` per (s,t);
- balance: ``g = baseline + fixed + compute + c − d − u`` per (s,t);
- grid import cap: ``g ≤ min(grid_import_limit_kw, committed-reduction cap)`` (column bound);
- battery dynamics and SoC bounds (:mod:`bpp.storage`).

Objective: ``Σ_{s,t} weight[s,t] · g[s,t] · h/1000`` (weight from :class:`bpp.domain.ObjectiveSpec`,
default price × carbon_factor) + migration cost (per job moved; per fraction of work moved for
preemptible jobs) + battery degradation, plus a 1e-9-scale tie-breaker that prefers earlier work so
equal-cost plans do not defer gratuitously (reported objectives exclude it).

Solving exactly, fast (:meth:`bpp.lp.LPParts.solve`): the LP relaxation is solved first — with
the assignment structure it is integral or nearly so (on the 1,000-job benchmark a few dozen of ~7,000
binaries are fractional). Reduced-cost fixing then restricts the MILP to the binaries whose reduced
cost is within δ of the LP bound (all continuous columns stay), HiGHS solves that small MILP, and the
gap it reports is certified against the LP bound for the *full* model (widening δ, or falling back
to the full MILP, when the restriction cannot prove it). ``Plan.mip_gap`` is that certified gap.

Carbon thresholds vs deadlines: a threshold is a hard eligibility rule. If a job cannot collect its
work in slots under its threshold before its deadline, the pre-check raises
:class:`SchedulingInfeasible` naming the job and the constraint — it never runs the job in a dirtier
slot to meet the deadline, nor misses the deadline to honour the threshold.

Infeasibility: per-job pre-checks (window, horizon, regions, carbon threshold, capacity) first; if
HiGHS still proves the model infeasible (jobs competing for capacity, committed reductions), an
*elastic* re-solve makes capacity and import caps soft with a penalty on the violation and minimises
the total violation: the rows it has to violate, and the jobs it places there, are the conflict.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from datetime import datetime

import numpy as np

from bpp.domain import (
    MWH_PER_KW_SLOT,
    TOL,
    CommittedReduction,
    Instance,
    Job,
    Priority,
    allowed_sites,
    effective_window,
    iso,
)
from bpp.lp import LPParts, LPResult
from bpp.storage import BatteryBlock, add_battery_block, battery_violations

#: tie-breaker per kW per slot of delay from the earliest slot, so equal-cost plans run work early
#: instead of deferring it for nothing. It must exceed HiGHS's optimality tolerance (~1e-7) to act, and
#: is tiny against real weights (£100/MWh ≈ 0.05 per kW-slot): it never gives up more than
#: ``tie_break_bound`` of true objective. Reported objectives exclude it.
TIE_BREAK = 1e-7


# ----------------------------------------------------------------------------------------------
# Errors


@dataclass(frozen=True)
class Conflict:
    """One reason an instance has no plan. ``kind``: ``window`` (deadline before release+duration),
    ``horizon`` (window outside the planning horizon), ``region`` (no allowed site), ``carbon_threshold``,
    ``capacity``, ``commitment`` (a committed reduction), ``import_limit``."""

    kind: str
    job_ids: tuple[str, ...]
    detail: str
    site_id: str | None = None
    start_utc: datetime | None = None
    end_utc: datetime | None = None
    order_ids: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "job_ids": list(self.job_ids),
            "site_id": self.site_id,
            "start_utc": iso(self.start_utc) if self.start_utc else None,
            "end_utc": iso(self.end_utc) if self.end_utc else None,
            "order_ids": list(self.order_ids),
            "detail": self.detail,
        }


class SchedulingError(RuntimeError):
    """The solver failed for a reason other than proven infeasibility (time limit, numerical)."""


class SchedulingInfeasible(SchedulingError):
    """No plan satisfies every constraint; ``conflicts`` names the jobs and constraints involved."""

    def __init__(self, conflicts: list[Conflict], stage: str) -> None:
        self.conflicts = conflicts
        self.stage = stage  # "pre-check" | "solver"
        lines = [f"infeasible schedule ({stage}): {len(conflicts)} conflict(s)"]
        for c in conflicts[:20]:
            jobs = ", ".join(c.job_ids[:12]) + (" …" if len(c.job_ids) > 12 else "")
            where = f" at {c.site_id}" if c.site_id else ""
            when = f" {iso(c.start_utc)}–{iso(c.end_utc)}" if c.start_utc and c.end_utc else ""
            orders = f" orders [{', '.join(c.order_ids)}]" if c.order_ids else ""
            lines.append(f"  - {c.kind}{where}{when}{orders}: jobs [{jobs}] — {c.detail}")
        if len(conflicts) > 20:
            lines.append(f"  … and {len(conflicts) - 20} more")
        super().__init__("\n".join(lines))

    @property
    def job_ids(self) -> set[str]:
        return {j for c in self.conflicts for j in c.job_ids}

    @property
    def kinds(self) -> set[str]:
        return {c.kind for c in self.conflicts}


class PlanViolation(AssertionError):
    """A plan breaks a constraint (raised by :func:`verify_plan`)."""

    def __init__(self, violations: list[str]) -> None:
        self.violations = violations
        super().__init__("plan violates constraints:\n  - " + "\n  - ".join(violations[:30]))


# ----------------------------------------------------------------------------------------------
# Plans


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
    run_fraction: np.ndarray
    charge_kw: np.ndarray
    discharge_kw: np.ndarray
    soc_kwh: np.ndarray
    solar_used_kw: np.ndarray
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

    def site_load_kw(self, instance: Instance) -> np.ndarray:
        """(n_sites, n_slots) baseline + compute load."""
        power = np.array([j.power_kw for j in instance.jobs]) if instance.jobs else np.zeros(0)
        compute = np.einsum("j,jst->st", power, self.run_fraction) if instance.jobs else 0.0
        base = np.stack([s.baseline_kw for s in instance.sites])
        return base + compute

    def grid_import_kw(self, instance: Instance) -> np.ndarray:
        """(n_sites, n_slots) grid import implied by the plan (clipped at tiny negatives)."""
        g = self.site_load_kw(instance) + self.charge_kw - self.discharge_kw - self.solar_used_kw
        return np.where(np.abs(g) < 1e-7, 0.0, g)

    def job_energy_by_site_kwh(self, instance: Instance) -> np.ndarray:
        power = np.array([j.power_kw for j in instance.jobs])
        return (self.run_fraction.sum(axis=2) * power[:, None]) * (MWH_PER_KW_SLOT * 1000)


def idle_battery_arrays(instance: Instance) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """charge, discharge, SoC of idle batteries (SoC held at its initial level)."""
    z = np.zeros((instance.n_sites, instance.n_slots))
    soc = z.copy()
    for k, s in enumerate(instance.sites):
        if s.battery is not None:
            soc[k] = s.battery.initial_soc_kwh
    return z, z.copy(), soc


def max_solar_use(
    instance: Instance,
    run_fraction: np.ndarray,
    charge: np.ndarray | None = None,
    discharge: np.ndarray | None = None,
) -> np.ndarray:
    """Solar used when a policy uses all it can (up to the site's load; no export)."""
    power = np.array([j.power_kw for j in instance.jobs]) if instance.jobs else np.zeros(0)
    load = np.stack([s.baseline_kw for s in instance.sites])
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
            degradation += float(plan.discharge_kw[k].sum()) * MWH_PER_KW_SLOT * s.battery.degradation_gbp_per_mwh
    gw = instance.objective.gbp_weight
    return PlanMetrics(
        objective=float((w * g).sum() * MWH_PER_KW_SLOT + gw * (migration + degradation)),
        energy_cost_gbp=float((price * g).sum() * MWH_PER_KW_SLOT),
        carbon_kg=float((carbon * g).sum() * MWH_PER_KW_SLOT),
        migration_cost_gbp=float(migration),
        degradation_gbp=float(degradation),
        grid_energy_mwh=float(g.sum() * MWH_PER_KW_SLOT),
    )


# ----------------------------------------------------------------------------------------------
# Eligibility (shared by the builder, the pre-checks, the baselines and the plan checker)


def fixed_load_kw(instance: Instance) -> np.ndarray:
    """(n_sites, n_slots) load of jobs the scheduler may not move (critical, already running)."""
    out = np.zeros((instance.n_sites, instance.n_slots))
    for job in instance.jobs:
        if job.movable:
            continue
        frac = fixed_run_fraction(instance, job)
        k = instance.site_index(job.running_at_site or job.site_id)
        out[k] += job.power_kw * frac
    return out


def fixed_run_fraction(instance: Instance, job: Job) -> np.ndarray:
    """(n_slots,) fractions for a fixed job: full power from max(release, 0), a final partial slot if
    its remaining work is fractional, truncated at the horizon end."""
    frac = np.zeros(instance.n_slots)
    first = max(job.release_slot, 0)
    work = job.work_slots
    full = math.floor(work + TOL)
    a, b = min(first, instance.n_slots), min(first + full, instance.n_slots)
    frac[a:b] = 1.0
    rest = work - full
    if rest > TOL and first + full < instance.n_slots:
        frac[first + full] = rest
    return frac


def carbon_ok_mask(instance: Instance, job: Job) -> np.ndarray:
    """(n_sites, n_slots) slots whose grid carbon ≤ the job's threshold (all True when it has none or
    is critical: thresholds apply to flexible and batch work only)."""
    if job.carbon_threshold_g_per_kwh is None or job.priority is Priority.CRITICAL:
        return np.ones((instance.n_sites, instance.n_slots), dtype=bool)
    return instance.carbon_matrix() <= job.carbon_threshold_g_per_kwh + TOL


@dataclass
class _Eligibility:
    """Per-job eligible placements (computed once per instance)."""

    window: dict[int, tuple[int, int]]
    sites: dict[int, list[int]]
    # preemptible: job -> (n_sites, n_slots) bool
    slots: dict[int, np.ndarray]
    # contiguous: job -> (site array, start array)
    starts: dict[int, tuple[np.ndarray, np.ndarray]]
    gating_waived: list[int]
    conflicts: list[Conflict]


def _runs_of(mask: np.ndarray, length: int) -> np.ndarray:
    """Starts τ with mask[τ:τ+length] all True (mask: 1-D bool)."""
    n = len(mask)
    if length > n:
        return np.zeros(0, dtype=np.int64)
    c = np.concatenate(([0], np.cumsum(mask.astype(np.int64))))
    return np.flatnonzero(c[length:] - c[: n - length + 1] == length)


def eligibility(instance: Instance, free_kw: np.ndarray | None = None) -> _Eligibility:
    """Eligible placements for every movable job, plus the per-job pre-check conflicts.

    ``free_kw`` = capacity − baseline − fixed load: a contiguous job can only start where its power
    fits in every covered slot on its own (a necessary condition, so pruning is exact)."""
    if free_kw is None:
        free_kw = _free_capacity(instance)
    acts = instance.actions
    carbon = instance.carbon_matrix()
    green = np.stack([s.green_mask(acts.green_solar_fraction) for s in instance.sites])
    el = _Eligibility({}, {}, {}, {}, [], [])
    T = instance.n_slots
    for jx, job in enumerate(instance.jobs):
        if not job.movable:
            continue
        first, end = effective_window(job, T, acts)
        el.window[jx] = (first, end)
        sites = allowed_sites(instance, job)
        el.sites[jx] = sites
        need = math.ceil(job.work_slots - TOL)
        when = _when(instance, first, end)
        if job.deadline_slot - max(job.release_slot, 0) < need:
            el.conflicts.append(
                Conflict(
                    "window",
                    (job.id,),
                    f"needs {need} slots of work but release→deadline leaves "
                    f"{job.deadline_slot - max(job.release_slot, 0)}",
                    instance.sites[instance.site_index(job.site_id)].id,
                    *when,
                )
            )
            continue
        if end - first < need:
            el.conflicts.append(
                Conflict(
                    "horizon",
                    (job.id,),
                    f"needs {need} slots but only {max(end - first, 0)} of its window lie inside the "
                    f"{T}-slot horizon (with max deferral {acts.max_deferral_min} min)",
                    job.site_id,
                    *when,
                )
            )
            continue
        if not sites:
            el.conflicts.append(
                Conflict(
                    "region",
                    (job.id,),
                    f"no site in allowed regions {list(job.allowed_regions or ())}"
                    f"{'' if acts.geographic_migration else ' (migration is off)'}",
                    job.site_id,
                )
            )
            continue
        base = np.zeros((instance.n_sites, T), dtype=bool)
        base[sites, first:end] = True
        ok_carbon = base & carbon_ok_mask(instance, job)
        gate = acts.renewable_gating and job.priority is Priority.BATCH
        fits = free_kw >= (job.power_kw - TOL if not job.preemptible else TOL)
        if job.preemptible:
            mask = ok_carbon & fits
            if gate and _enough_room(job, mask & green, free_kw):
                mask = mask & green
            elif gate:
                el.gating_waived.append(jx)
            if not _enough_room(job, mask, free_kw):
                el.conflicts.append(_why(instance, job, base, ok_carbon, fits, first, end, carbon, preemptible=True))
                continue
            el.slots[jx] = mask
        else:
            mask = ok_carbon & fits
            s_arr, t_arr = _starts(mask, sites, need)
            if gate:
                gs, gt = _starts(mask & green, sites, need)
                if len(gs):
                    s_arr, t_arr = gs, gt
                else:
                    el.gating_waived.append(jx)
            if not len(s_arr):
                el.conflicts.append(_why(instance, job, base, ok_carbon, fits, first, end, carbon, preemptible=False))
                continue
            el.starts[jx] = (s_arr, t_arr)
    return el


def _enough_room(job: Job, mask: np.ndarray, free_kw: np.ndarray) -> bool:
    """Can a preemptible job collect its work in ``mask`` on its own? Slots count by the share of the
    job's power that fits there (at its best site in that slot)."""
    share = np.where(mask, np.minimum(1.0, np.maximum(free_kw, 0.0) / job.power_kw), 0.0)
    return float(share.max(axis=0).sum()) >= job.work_slots - TOL


def _starts(mask: np.ndarray, sites: list[int], need: int) -> tuple[np.ndarray, np.ndarray]:
    """(site, start) of every run of ``need`` eligible slots at the given sites."""
    ss, tt = [], []
    for k in sites:
        st = _runs_of(mask[k], need)
        ss.append(np.full(len(st), k))
        tt.append(st)
    return np.concatenate(ss).astype(np.int64), np.concatenate(tt).astype(np.int64)


def _when(instance: Instance, a: int, b: int) -> tuple[datetime | None, datetime | None]:
    if b <= a:
        return None, None
    return instance.slot_start(a), instance.slot_start(b)


def _why(
    instance: Instance,
    job: Job,
    base: np.ndarray,
    ok_carbon: np.ndarray,
    fits: np.ndarray,
    first: int,
    end: int,
    carbon: np.ndarray,
    preemptible: bool,
) -> Conflict:
    """Name the rule that leaves a job no placement: the carbon threshold or capacity."""
    need = math.ceil(job.work_slots - TOL)

    def has_room(m: np.ndarray) -> bool:
        if preemptible:
            return int(m.any(axis=0).sum()) >= need
        return any(len(_runs_of(m[k], need)) for k in range(instance.n_sites))

    when = _when(instance, first, end)
    site_ids = ", ".join(instance.sites[k].id for k in np.flatnonzero(base.any(axis=1)))
    if not has_room(ok_carbon):
        best = float(np.min(np.where(base, carbon, np.inf)))
        n_ok = int(ok_carbon.any(axis=0).sum())
        shape = "slots" if preemptible else "consecutive slots"
        return Conflict(
            "carbon_threshold",
            (job.id,),
            f"needs {need} {shape} with carbon ≤ {job.carbon_threshold_g_per_kwh:g} gCO2/kWh before its "
            f"deadline (incl. max deferral) but only {n_ok} slot(s) at [{site_ids}] qualify "
            f"(lowest {best:.0f})",
            job.site_id,
            *when,
        )
    return Conflict(
        "capacity",
        (job.id,),
        f"{job.power_kw:g} kW does not fit in the free capacity (capacity − baseline − critical/running "
        f"load) of [{site_ids}] for {need} {'slots' if preemptible else 'consecutive slots'} in its window",
        job.site_id,
        *when,
    )


def _free_capacity(instance: Instance) -> np.ndarray:
    cap = np.stack([s.capacity_kw for s in instance.sites])
    base = np.stack([s.baseline_kw for s in instance.sites])
    return cap - base - fixed_load_kw(instance)


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
            first, end = effective_window(job, instance.n_slots, instance.actions)
            total += TIE_BREAK * job.power_kw * job.work_slots * max(end - first, 0)
    return total


def _fixed_conflicts(instance: Instance) -> list[Conflict]:
    """Pre-checks for work the scheduler cannot move: critical deadlines, capacity of fixed load,
    committed caps below zero."""
    out: list[Conflict] = []
    for job in instance.jobs:
        if job.movable:
            continue
        start = max(job.release_slot, 0)
        finish = start + math.ceil(job.work_slots - TOL)
        if job.running_at_site is None and finish > job.deadline_slot:
            out.append(
                Conflict(
                    "window",
                    (job.id,),
                    f"critical job runs at release and finishes at slot {finish} > deadline {job.deadline_slot}",
                    job.site_id,
                    *_when(instance, start, finish),
                )
            )
    free = _free_capacity(instance)
    fixed = [(j, fixed_run_fraction(instance, j)) for j in instance.jobs if not j.movable]
    for k, site in enumerate(instance.sites):
        bad = np.flatnonzero(free[k] < -TOL)
        for a, b in _spans(bad):
            ids = tuple(j.id for j, fr in fixed if (j.running_at_site or j.site_id) == site.id and fr[a:b].any())
            out.append(
                Conflict(
                    "capacity",
                    ids,
                    f"baseline + critical/running load exceeds capacity by up to {-free[k, a:b].min():.1f} kW",
                    site.id,
                    *_when(instance, a, b),
                )
            )
    caps = instance.commitment_caps_kw()
    for k, site in enumerate(instance.sites):
        bad = np.flatnonzero(caps[k] < -TOL)
        for a, b in _spans(bad):
            orders = tuple(
                c.order_id
                for c in instance.commitments
                if c.site_id == site.id and instance.slot_of(c.start_utc) < b and instance.slot_of(c.end_utc) > a
            )
            out.append(
                Conflict(
                    "commitment",
                    (),
                    "committed reduction exceeds the baseline it was measured from (import cap < 0)",
                    site.id,
                    *_when(instance, a, b),
                    orders,
                )
            )
    return out


def _spans(idx: np.ndarray) -> list[tuple[int, int]]:
    """Consecutive runs [a, b) of sorted integer indices."""
    if len(idx) == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) > 1)
    starts = np.concatenate(([idx[0]], idx[breaks + 1]))
    ends = np.concatenate((idx[breaks] + 1, [idx[-1] + 1]))
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


# ----------------------------------------------------------------------------------------------
# The model


@dataclass
class Model:
    """A built CTSS model and the index maps needed to read a solution back."""

    lp: LPParts
    instance: Instance
    x_job: np.ndarray
    x_site: np.ndarray
    x_slot: np.ndarray
    x_cols: np.ndarray
    y_job: np.ndarray
    y_site: np.ndarray
    y_start: np.ndarray
    y_cols: np.ndarray
    g_cols: np.ndarray  # (n_sites, n_slots)
    u_cols: dict[int, tuple[np.ndarray, np.ndarray]]  # site -> (slots, cols)
    batteries: list[BatteryBlock]
    capacity_rows: np.ndarray  # (n_sites, n_slots)
    gating_waived: tuple[str, ...]
    build_time_s: float
    elastic_cap_cols: np.ndarray | None = None  # (n_sites, n_slots) slack on capacity rows
    elastic_import_cols: dict[tuple[int, int], int] | None = None  # (s,t) -> slack col on import cap


def build_model(instance: Instance, *, elastic: bool = False, skip_prechecks: bool = False) -> Model:
    """Build the CTSS MILP as sparse arrays (see the module docstring for the formulation).

    ``elastic``: capacity rows and grid-import caps get non-negative slack columns, the objective is
    the total slack (kW·slots) — used only to locate the conflict in an infeasible instance.
    Raises :class:`SchedulingInfeasible` from the pre-checks unless ``skip_prechecks``."""
    t0 = time.perf_counter()
    inst = instance
    S, T = inst.n_sites, inst.n_slots
    free = _free_capacity(inst)
    el = eligibility(inst, free)
    conflicts = _fixed_conflicts(inst) + el.conflicts
    if conflicts and not skip_prechecks:
        raise SchedulingInfeasible(conflicts, "pre-check")
    fixed = fixed_load_kw(inst)
    base = np.stack([s.baseline_kw for s in inst.sites])
    cap = np.stack([s.capacity_kw for s in inst.sites])
    weight = inst.weight_matrix() * MWH_PER_KW_SLOT  # objective per kW-slot of import
    gw = inst.objective.gbp_weight
    obj_on = 0.0 if elastic else 1.0
    lp = LPParts()

    # --- grid import, capacity and balance rows -------------------------------------------------
    import_ub = np.full((S, T), np.inf)
    for k, s in enumerate(inst.sites):
        if s.grid_import_limit_kw is not None:
            import_ub[k] = s.grid_import_limit_kw
    import_ub = np.minimum(import_ub, np.maximum(inst.commitment_caps_kw(), 0.0))
    g_cols = lp.add_cols(
        (obj_on * weight).ravel(), np.zeros(S * T), (np.full(S * T, np.inf) if elastic else import_ub.ravel())
    ).reshape(S, T)
    capacity_rows = lp.add_rows(np.full(S * T, -np.inf), (cap - base - fixed).ravel()).reshape(S, T)
    rhs = (base + fixed).ravel()
    balance_rows = lp.add_rows(rhs, rhs).reshape(S, T)
    lp.add_entries(balance_rows.ravel(), g_cols.ravel(), np.ones(S * T))

    elastic_cap_cols = None
    elastic_import_cols: dict[tuple[int, int], int] | None = None
    if elastic:
        elastic_cap_cols = lp.add_cols(np.ones(S * T), np.zeros(S * T), np.full(S * T, np.inf)).reshape(S, T)
        lp.add_entries(capacity_rows.ravel(), elastic_cap_cols.ravel(), -np.ones(S * T))
        finite = np.argwhere(np.isfinite(import_ub))
        elastic_import_cols = {}
        if len(finite):
            n = len(finite)
            cols = lp.add_cols(np.ones(n), np.zeros(n), np.full(n, np.inf))
            rows = lp.add_rows(np.full(n, -np.inf), import_ub[finite[:, 0], finite[:, 1]])
            lp.add_entries(rows, g_cols[finite[:, 0], finite[:, 1]], np.ones(n))
            lp.add_entries(rows, cols, -np.ones(n))
            for (k, t), c in zip(finite.tolist(), cols.tolist(), strict=True):
                elastic_import_cols[(k, t)] = c

    # --- solar --------------------------------------------------------------------------------
    u_cols: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for k, s in enumerate(inst.sites):
        slots = np.flatnonzero(s.solar_kw > 0)
        if len(slots):
            cols = lp.add_cols(np.zeros(len(slots)), np.zeros(len(slots)), s.solar_kw[slots])
            lp.add_entries(balance_rows[k, slots], cols, np.ones(len(slots)))
            u_cols[k] = (slots, cols)

    # --- batteries ----------------------------------------------------------------------------
    batteries: list[BatteryBlock] = []
    if inst.actions.storage_coordination:
        for k, s in enumerate(inst.sites):
            if s.battery is not None:
                batteries.append(add_battery_block(lp, k, s.battery, T, balance_rows[k], gw * obj_on))

    # --- preemptible jobs: x[j,s,t] -------------------------------------------------------------
    jobs = inst.jobs
    xj, xs, xt = [], [], []
    for jx, mask in el.slots.items():
        ss, tt = np.nonzero(mask)
        xj.append(np.full(len(ss), jx))
        xs.append(ss)
        xt.append(tt)
    x_job = np.concatenate(xj).astype(np.int64) if xj else np.zeros(0, dtype=np.int64)
    x_site = np.concatenate(xs).astype(np.int64) if xs else np.zeros(0, dtype=np.int64)
    x_slot = np.concatenate(xt).astype(np.int64) if xt else np.zeros(0, dtype=np.int64)
    power = np.array([j.power_kw for j in jobs]) if jobs else np.zeros(0)
    work = np.array([j.work_slots for j in jobs]) if jobs else np.zeros(0)
    mig = np.array([j.migration_cost_gbp for j in jobs]) if jobs else np.zeros(0)
    home = np.array([inst.site_index(j.site_id) for j in jobs], dtype=np.int64) if jobs else np.zeros(0, np.int64)
    first = np.array([el.window.get(jx, (0, 0))[0] for jx in range(len(jobs))], dtype=np.int64)
    if len(x_job):
        away = (x_site != home[x_job]).astype(float)
        cost = obj_on * (gw * mig[x_job] * away / work[x_job] + TIE_BREAK * power[x_job] * (x_slot - first[x_job]))
        x_cols = lp.add_cols(cost, np.zeros(len(x_job)), np.ones(len(x_job)))
        p = power[x_job]
        lp.add_entries(capacity_rows[x_site, x_slot], x_cols, p)
        lp.add_entries(balance_rows[x_site, x_slot], x_cols, -p)
        # completion rows, one per preemptible job
        pj = np.array(sorted(el.slots), dtype=np.int64)
        row_of = np.full(len(jobs), -1, dtype=np.int64)
        rows = lp.add_rows(work[pj], work[pj])
        row_of[pj] = rows
        lp.add_entries(row_of[x_job], x_cols, np.ones(len(x_job)))
        # one place at a time: only (job, slot) pairs with ≥ 2 eligible sites
        key = x_job * T + x_slot
        _, inv, counts = np.unique(key, return_inverse=True, return_counts=True)
        multi = counts[inv] > 1
        if multi.any():
            mk, minv = np.unique(key[multi], return_inverse=True)
            rows = lp.add_rows(np.full(len(mk), -np.inf), np.ones(len(mk)))
            lp.add_entries(rows[minv], x_cols[multi], np.ones(int(multi.sum())))
    else:
        x_cols = np.zeros(0, dtype=np.int64)

    # --- contiguous jobs: y[j,s,τ] --------------------------------------------------------------
    yj, ys, yt = [], [], []
    for jx, (ss, tt) in el.starts.items():
        yj.append(np.full(len(ss), jx))
        ys.append(ss)
        yt.append(tt)
    y_job = np.concatenate(yj).astype(np.int64) if yj else np.zeros(0, dtype=np.int64)
    y_site = np.concatenate(ys).astype(np.int64) if ys else np.zeros(0, dtype=np.int64)
    y_start = np.concatenate(yt).astype(np.int64) if yt else np.zeros(0, dtype=np.int64)
    if len(y_job):
        need = np.ceil(work - TOL).astype(np.int64)
        d = need[y_job]
        away = (y_site != home[y_job]).astype(float)
        # tie-breaker: Σ over covered slots of (t − first) = d·(τ − first) + d(d−1)/2
        tb = power[y_job] * (d * (y_start - first[y_job]) + d * (d - 1) / 2)
        cost = obj_on * (gw * mig[y_job] * away + TIE_BREAK * tb)
        y_cols = lp.add_cols(cost, np.zeros(len(y_job)), np.ones(len(y_job)), integer=True)
        rep = np.repeat(np.arange(len(y_job)), d)
        offs = np.arange(len(rep)) - np.repeat(np.cumsum(d) - d, d)
        slot = y_start[rep] + offs
        site = y_site[rep]
        p = power[y_job][rep]
        lp.add_entries(capacity_rows[site, slot], y_cols[rep], p)
        lp.add_entries(balance_rows[site, slot], y_cols[rep], -p)
        cj = np.array(sorted(el.starts), dtype=np.int64)
        row_of = np.full(len(jobs), -1, dtype=np.int64)
        rows = lp.add_rows(np.ones(len(cj)), np.ones(len(cj)))
        row_of[cj] = rows
        lp.add_entries(row_of[y_job], y_cols, np.ones(len(y_job)))
    else:
        y_cols = np.zeros(0, dtype=np.int64)

    return Model(
        lp=lp,
        instance=inst,
        x_job=x_job,
        x_site=x_site,
        x_slot=x_slot,
        x_cols=x_cols,
        y_job=y_job,
        y_site=y_site,
        y_start=y_start,
        y_cols=y_cols,
        g_cols=g_cols,
        u_cols=u_cols,
        batteries=batteries,
        capacity_rows=capacity_rows,
        gating_waived=tuple(jobs[jx].id for jx in el.gating_waived),
        build_time_s=time.perf_counter() - t0,
        elastic_cap_cols=elastic_cap_cols,
        elastic_import_cols=elastic_import_cols,
    )


def extract_plan(model: Model, x: np.ndarray, policy: str = "ctss") -> Plan:
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


def solve(instance: Instance, *, verify: bool = True) -> Plan:
    """The optimal CTSS plan. Raises :class:`SchedulingInfeasible` (naming jobs and constraints) when no
    plan exists, :class:`SchedulingError` when HiGHS stops without a feasible plan (e.g. time limit).
    The returned plan is checked by :func:`verify_plan` (``verify=False`` skips that, for benchmarks
    that time the solver alone — they verify afterwards)."""
    model = build_model(instance)
    res = model.lp.solve(instance.solver.time_limit_s, instance.solver.mip_rel_gap, instance.solver.threads)
    if res.status == "infeasible":
        raise _diagnose(instance)
    if res.x is None:
        raise SchedulingError(
            f"HiGHS stopped with status {res.status!r} and no feasible plan "
            f"({res.n_cols} columns, {res.n_integer} binaries)"
        )
    plan = _finish(model, res)
    if verify:
        verify_plan(instance, plan)
    return plan


def _finish(model: Model, res: LPResult, policy: str = "ctss") -> Plan:
    assert res.x is not None
    plan = extract_plan(model, res.x, policy)
    plan.status = res.status
    plan.mip_gap = res.mip_gap
    plan.solve_time_s = res.solve_time_s
    plan.n_binaries = res.n_integer
    plan.n_columns = res.n_cols
    plan.n_rows = res.n_rows
    plan.metrics = evaluate(model.instance, plan)
    return plan


def _diagnose(instance: Instance) -> SchedulingInfeasible:
    """Locate the conflict in a model HiGHS proved infeasible, by a two-stage elastic re-solve.

    Stage 1 makes capacity rows and grid-import caps soft and minimises the total violation (kW·slots):
    the rows it must violate are the constraints in conflict. Stage 2 keeps that minimal violation and
    moves every job it can *out* of the violated site-slots (minimising the movable load left there),
    so the jobs it still places there are exactly those that cannot be anywhere else — the jobs in
    conflict — rather than bystanders the first stage happened to put there."""
    model = build_model(instance, elastic=True, skip_prechecks=True)
    lp = model.lp
    tl, threads = instance.solver.time_limit_s, instance.solver.threads
    res = lp.solve(tl, 1e-6, threads)
    if res.x is None:
        return SchedulingInfeasible(
            [
                Conflict(
                    "unknown", (), f"HiGHS proved the model infeasible; locating the conflict failed ({res.status})"
                )
            ],
            "solver",
        )
    assert model.elastic_cap_cols is not None and model.elastic_import_cols is not None
    inst = instance
    S, T = inst.n_sites, inst.n_slots
    cap_slack = res.x[model.elastic_cap_cols]
    imp_slack = np.zeros((S, T))
    for (k, t), c in model.elastic_import_cols.items():
        imp_slack[k, t] = res.x[c]
    violated = (cap_slack > 1e-5) | (imp_slack > 1e-5)
    x = res.x
    if violated.any():
        # stage 2: total violation ≤ stage-1 optimum; minimise job load in the violated site-slots
        slack_cols = np.concatenate(
            [
                model.elastic_cap_cols.ravel(),
                np.fromiter(model.elastic_import_cols.values(), dtype=np.int64, count=len(model.elastic_import_cols)),
            ]
        )
        row = lp.add_rows(np.array([-np.inf]), np.array([res.objective * (1 + 1e-7) + 1e-6]))
        lp.add_entries(np.zeros(len(slack_cols), dtype=np.int64) + row[0], slack_cols, np.ones(len(slack_cols)))
        a_mat = lp.to_csc()
        load_cost = np.asarray(a_mat[model.capacity_rows[violated]].sum(axis=0)).ravel()
        job_cols = np.concatenate([model.x_cols, model.y_cols]).astype(np.int64)
        lp.clear_objective()
        lp.set_costs(job_cols, load_cost[job_cols])
        res2 = lp.solve(tl, 1e-6, threads)
        if res2.x is not None:
            x = res2.x
    plan = extract_plan(model, x)

    def jobs_at(k: int, a: int, b: int) -> tuple[str, ...]:
        return tuple(j.id for jx, j in enumerate(inst.jobs) if plan.run_fraction[jx, k, a:b].sum() > TOL)

    conflicts: list[Conflict] = []
    caps = inst.commitment_caps_kw()
    for k, site in enumerate(inst.sites):
        for a, b in _spans(np.flatnonzero(cap_slack[k] > 1e-5)):
            conflicts.append(
                Conflict(
                    "capacity",
                    jobs_at(k, a, b),
                    f"jobs that cannot run elsewhere within their windows need up to "
                    f"{cap_slack[k, a:b].max():.3f} kW more than capacity",
                    site.id,
                    *_when(inst, a, b),
                )
            )
        for a, b in _spans(np.flatnonzero(imp_slack[k] > 1e-5)):
            orders = tuple(
                c.order_id
                for c in inst.commitments
                if c.site_id == site.id and inst.slot_of(c.start_utc) < b and inst.slot_of(c.end_utc) > a
            )
            kind = "commitment" if np.isfinite(caps[k, a:b]).any() and orders else "import_limit"
            conflicts.append(
                Conflict(
                    kind,
                    jobs_at(k, a, b),
                    f"grid import must exceed its cap by up to {imp_slack[k, a:b].max():.3f} kW "
                    f"(site load that cannot move, after battery and solar)",
                    site.id,
                    *_when(inst, a, b),
                    orders,
                )
            )
    if not conflicts:
        conflicts.append(
            Conflict("unknown", (), "HiGHS proved the model infeasible but the elastic model needs no violation")
        )
    return SchedulingInfeasible(conflicts, "solver")


def max_reduction_kw(instance: Instance, plan: Plan, site_index: int, a: int, b: int) -> float:
    """The largest R such that some plan meets every constraint and keeps the site's grid import at
    least R kW below ``plan``'s import in every slot of ``[a, b)`` (an LP/MILP: max R)."""
    g_plan = plan.grid_import_kw(instance)[site_index, a:b]
    model = build_model(instance)
    lp = model.lp
    lp.clear_objective()
    r = lp.add_cols(np.array([-1.0]), np.zeros(1), np.array([max(float(g_plan.min()), 0.0)]))
    n = b - a
    rows = lp.add_rows(np.full(n, -np.inf), g_plan)
    lp.add_entries(rows, model.g_cols[site_index, a:b], np.ones(n))
    lp.add_entries(rows, np.full(n, r[0]), np.ones(n))
    res = lp.solve(instance.solver.time_limit_s, 1e-4, instance.solver.threads)
    if res.x is None:
        return 0.0
    return max(float(res.x[r[0]]), 0.0)


# ----------------------------------------------------------------------------------------------
# The plan checker: every invariant, recomputed from the instance (not from the model's columns)


def plan_violations(instance: Instance, plan: Plan, tol: float = 1e-5) -> list[str]:
    """Every constraint a plan breaks (empty list = feasible). Checked independently of the builder:
    - work: each job's total run fraction equals its remaining work; fractions in [0, 1];
    - when: only in [release, deadline), within max deferral, inside the horizon;
    - where: only at allowed sites (home only for critical/running work or without migration);
    - critical/running work exactly at its fixed run; contiguous jobs in one block at one site;
    - carbon: flexible/batch jobs only in slots with carbon ≤ their threshold;
    - gating: batch jobs only in green slots when gating applies to them;
    - one place at a time per slot; site load ≤ capacity; grid import ≥ 0, ≤ import limit and ≤ every
      committed reduction's cap; solar used ≤ solar available; batteries obey their physics.
    """
    inst = instance
    out: list[str] = []
    F = plan.run_fraction
    S, T = inst.n_sites, inst.n_slots
    if F.shape != (inst.n_jobs, S, T):
        return [f"run_fraction has shape {F.shape}, expected {(inst.n_jobs, S, T)}"]
    if np.any(-tol > F) or np.any(1 + tol < F):
        out.append("run fractions outside [0, 1]")
    carbon = inst.carbon_matrix()
    acts = inst.actions
    green = np.stack([s.green_mask(acts.green_solar_fraction) for s in inst.sites])
    waived = set(plan.gating_waived)
    for jx, job in enumerate(inst.jobs):
        f = F[jx]
        total = f.sum()
        # fixed work that runs past the horizon end is truncated there; movable work must fit inside
        need = job.work_slots if job.movable else float(fixed_run_fraction(inst, job).sum())
        if abs(total - need) > tol * max(1.0, need):
            out.append(f"job {job.id}: runs {total:.4f} slots of work, needs {need:g}")
        used = np.argwhere(f > tol)
        if len(used) == 0:
            continue
        sites_used = sorted(set(used[:, 0].tolist()))
        slots_used = used[:, 1]
        if np.any(f.sum(axis=0) > 1 + tol):
            out.append(f"job {job.id}: more than its full power in one slot (runs at two sites at once)")
        if not job.movable:
            k = inst.site_index(job.running_at_site or job.site_id)
            expect = np.zeros((S, T))
            expect[k] = fixed_run_fraction(inst, job)
            if np.max(np.abs(f - expect)) > tol:
                what = "critical" if job.priority is Priority.CRITICAL else "running"
                out.append(
                    f"job {job.id}: {what} job moved from its fixed run at {inst.sites[k].id} "
                    f"from slot {max(job.release_slot, 0)}"
                )
            if (
                job.running_at_site is None
                and max(job.release_slot, 0) + math.ceil(job.work_slots - TOL) > job.deadline_slot
            ):
                out.append(f"job {job.id}: critical job misses its deadline")
            continue
        if slots_used.min() < max(job.release_slot, 0):
            out.append(f"job {job.id}: runs before its release (slot {slots_used.min()} < {job.release_slot})")
        last = int(slots_used.max())
        if last >= job.deadline_slot:
            out.append(f"job {job.id}: runs in slot {last} at/after its deadline slot {job.deadline_slot}")
        if last >= job.release_slot + job.duration_slots + acts.max_deferral_slots:
            out.append(
                f"job {job.id}: finishes later than release + duration + max deferral ({acts.max_deferral_min} min)"
            )
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
        gated = acts.renewable_gating and job.priority is Priority.BATCH and job.id not in waived
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
    load = plan.site_load_kw(inst)
    cap = np.stack([s.capacity_kw for s in inst.sites])
    over = load - cap
    if np.any(over > tol * np.maximum(1.0, cap)):
        k, t = np.unravel_index(int(np.argmax(over)), over.shape)
        out.append(f"site {inst.sites[k].id}: load {load[k, t]:.1f} kW > capacity {cap[k, t]:.1f} kW in slot {t}")
    solar = np.stack([s.solar_kw for s in inst.sites])
    if np.any(plan.solar_used_kw < -tol) or np.any(plan.solar_used_kw > solar + tol):
        out.append("solar used outside [0, available]")
    g = plan.grid_import_kw(inst)
    scale = np.maximum(1.0, np.abs(load))
    if np.any(g < -tol * scale):
        k, t = np.unravel_index(int(np.argmin(g)), g.shape)
        out.append(f"site {inst.sites[k].id}: grid import {g[k, t]:.3f} kW < 0 (export) in slot {t}")
    for k, s in enumerate(inst.sites):
        if s.grid_import_limit_kw is not None and np.any(g[k] > s.grid_import_limit_kw + tol * scale[k]):
            out.append(f"site {s.id}: grid import above its limit {s.grid_import_limit_kw} kW")
    for c in inst.commitments:
        k = inst.site_index(c.site_id)
        a = inst.slot_of(c.start_utc)
        for i, capv in enumerate(c.max_import_kw()):
            t = a + i
            if 0 <= t < T and g[k, t] > capv + tol * max(1.0, abs(capv)):
                out.append(
                    f"order {c.order_id}: site {c.site_id} imports {g[k, t]:.2f} kW in slot {t} "
                    f"> baseline {c.baseline_kw[i]:.2f} − committed {c.reduction_kw:.2f} kW"
                )
    for k, s in enumerate(inst.sites):
        if s.battery is None or not inst.actions.storage_coordination:
            if np.any(np.abs(plan.charge_kw[k]) > tol) or np.any(np.abs(plan.discharge_kw[k]) > tol):
                out.append(f"site {s.id}: battery used without a battery or with storage coordination off")
            continue
        out.extend(battery_violations(s, s.battery, plan.charge_kw[k], plan.discharge_kw[k], plan.soc_kwh[k]))
    return out


def verify_plan(instance: Instance, plan: Plan, tol: float = 1e-5) -> None:
    """Raise :class:`PlanViolation` if the plan breaks any constraint (see :func:`plan_violations`)."""
    v = plan_violations(instance, plan, tol)
    if v:
        raise PlanViolation(v)


# ----------------------------------------------------------------------------------------------
# Receding horizon


def advance_jobs(instance: Instance, plan: Plan, now_slot: int) -> tuple[list[Job], list[str]]:
    """The jobs of ``instance`` re-expressed from slot ``now_slot`` (which becomes slot 0), with the work
    ``plan`` did before it counted as done. Returns (remaining jobs, ids of completed jobs).

    - finished work is dropped;
    - a contiguous (or critical) job that has started keeps running where it is: it becomes a fixed
      ``running_at_site`` job from slot 0 — already-running work is never moved by a re-plan;
    - a preemptible job that has started keeps its progress (``work_done_slots``) and may be re-placed;
      its migration cost is now counted from the site it last ran at (that is where its checkpoint is);
    - release and deadline shift by ``now_slot`` (a release may become negative: already released)."""
    if not 0 <= now_slot <= instance.n_slots:
        raise ValueError(f"now_slot {now_slot} outside 0..{instance.n_slots}")
    out: list[Job] = []
    done_ids: list[str] = []
    for jx, job in enumerate(instance.jobs):
        f = plan.run_fraction[jx, :, :now_slot]
        done = float(f.sum())
        remaining = job.work_slots - done
        if remaining <= TOL:
            done_ids.append(job.id)
            continue
        shifted = replace(job, release_slot=job.release_slot - now_slot, deadline_slot=job.deadline_slot - now_slot)
        if done <= TOL:
            if job.running_at_site is not None:  # was running but paused? cannot happen; keep fixed
                shifted = replace(shifted, release_slot=0)
            out.append(shifted)
            continue
        ran = np.argwhere(f > TOL)
        last_site = instance.sites[int(ran[np.argmax(ran[:, 1]), 0])].id  # where its latest slot ran
        new_done = job.work_done_slots + done
        if job.preemptible:
            out.append(replace(shifted, work_done_slots=new_done, site_id=last_site))
        else:
            new_done = round(new_done)
            out.append(replace(shifted, work_done_slots=float(new_done), running_at_site=last_site, release_slot=0))
    return out, done_ids


def replan(
    instance: Instance,
    plan: Plan,
    now_slot: int,
    *,
    price_gbp_per_mwh: dict[str, np.ndarray] | None = None,
    carbon_g_per_kwh: dict[str, np.ndarray] | None = None,
    commitments: tuple[CommittedReduction, ...] | None = None,
) -> tuple[Instance, Plan]:
    """Re-plan from ``now_slot`` to the end of the current horizon with running work fixed, on updated
    signals (arrays for the remaining slots, by region; omitted regions keep the current ones) and
    commitments. Returns the new (shifted) instance and its optimal plan."""
    n = instance.n_slots - now_slot
    if n <= 0:
        raise ValueError("nothing left to re-plan: now_slot is at or past the horizon end")
    jobs, _ = advance_jobs(instance, plan, now_slot)
    price = {r: a[now_slot:] for r, a in instance.price_gbp_per_mwh.items()}
    carbon = {r: a[now_slot:] for r, a in instance.carbon_g_per_kwh.items()}
    price.update(price_gbp_per_mwh or {})
    carbon.update(carbon_g_per_kwh or {})
    new = replace(
        instance,
        start_utc=instance.slot_start(now_slot),
        n_slots=n,
        sites=tuple(s.sliced(now_slot, instance.n_slots) for s in instance.sites),
        jobs=tuple(jobs),
        price_gbp_per_mwh=price,
        carbon_g_per_kwh=carbon,
        commitments=instance.commitments if commitments is None else tuple(commitments),
    )
    sites = []
    for k, s in enumerate(new.sites):
        b = s.battery
        if b is not None and instance.actions.storage_coordination and now_slot > 0:
            # the battery continues from the SoC the plan left it at
            soc = float(plan.soc_kwh[k, now_slot - 1]) / b.energy_kwh
            soc = min(max(soc, b.soc_min_fraction), b.soc_max_fraction)
            term = b.terminal_soc_fraction if b.terminal_soc_fraction is not None else b.initial_soc_fraction
            b = replace(b, initial_soc_fraction=soc, terminal_soc_fraction=min(term, b.soc_max_fraction))
            s = replace(s, battery=b)
        sites.append(s)
    new = replace(new, sites=tuple(sites))
    return new, solve(new)
