"""Where and when each job may run, and the per-job pre-checks that name an impossible one.

Shared by the model builder (:mod:`bpp.scheduler.milp`: eligibility decides *which columns exist*), the
baselines (:mod:`bpp.baselines`) and the plan checker (:mod:`bpp.scheduler.verify`).

Rules, for a movable (flexible or batch, not yet running) job:

- **when**: its effective window ``[first, end)`` (:func:`bpp.domain.effective_window`: release to the
  earliest of deadline, release + duration + max deferral, and the horizon end);
- **where**: its allowed sites (:func:`bpp.domain.allowed_sites`);
- **carbon**: only slots whose grid carbon ≤ its threshold (:func:`carbon_ok_mask`);
- **gating**: a batch job under renewable gating only in green slots — waived (and reported in
  ``gating_waived``) when green slots alone cannot hold its work;
- **capacity on its own**: a contiguous job only starts where its full power fits in every covered slot
  next to the fixed load; a preemptible job only uses slots with some free capacity and must be able
  to collect its work there. Both are necessary conditions, so pruning on them is exact.

Critical and already-running jobs are fixed (:func:`fixed_run_fraction`): they have no placement to
choose, only a load the others must fit around.

Carbon thresholds vs deadlines: a threshold is a hard eligibility rule. If a job cannot collect its
work in slots under its threshold before its deadline, the pre-check raises
:class:`~bpp.scheduler.conflicts.SchedulingInfeasible` naming the job and the constraint — it never
runs the job in a dirtier slot to meet the deadline, nor misses the deadline to honour the threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from bpp.domain import (
    TOL,
    BoolArray,
    FloatArray,
    Instance,
    IntArray,
    Job,
    Priority,
    allowed_sites,
    effective_window,
)
from bpp.scheduler.conflicts import Conflict

# ----------------------------------------------------------------------------------------------
# Fixed work


def fixed_run_fraction(instance: Instance, job: Job) -> FloatArray:
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


def fixed_load_kw(instance: Instance) -> FloatArray:
    """(n_sites, n_slots) load of jobs the scheduler may not move (critical, already running)."""
    out = np.zeros((instance.n_sites, instance.n_slots))
    for job in instance.jobs:
        if job.movable:
            continue
        frac = fixed_run_fraction(instance, job)
        k = instance.site_index(job.running_at_site or job.site_id)
        out[k] += job.power_kw * frac
    return out


def free_capacity_kw(instance: Instance) -> FloatArray:
    """(n_sites, n_slots) capacity − baseline − fixed load: what movable jobs may use."""
    cap: FloatArray = np.stack([s.capacity_kw for s in instance.sites])
    base: FloatArray = np.stack([s.baseline_kw for s in instance.sites])
    return cap - base - fixed_load_kw(instance)


def carbon_ok_mask(instance: Instance, job: Job) -> BoolArray:
    """(n_sites, n_slots) slots whose grid carbon ≤ the job's threshold (all True when it has none or
    is critical: thresholds apply to flexible and batch work only)."""
    if job.carbon_threshold_g_per_kwh is None or job.priority is Priority.CRITICAL:
        return np.ones((instance.n_sites, instance.n_slots), dtype=bool)
    return instance.carbon_matrix() <= job.carbon_threshold_g_per_kwh + TOL


# ----------------------------------------------------------------------------------------------
# Placements of movable jobs


@dataclass
class Eligibility:
    """Per-job eligible placements (computed once per instance), keyed by job index."""

    window: dict[int, tuple[int, int]]
    sites: dict[int, list[int]]
    #: preemptible: job -> (n_sites, n_slots) mask of slots it may draw power in
    slots: dict[int, BoolArray]
    #: contiguous: job -> (site array, start array) of every block it may run as
    starts: dict[int, tuple[IntArray, IntArray]]
    #: batch jobs whose green gating had to be waived (not enough green slots)
    gating_waived: list[int]
    #: per-job pre-check failures (such a job has no placement at all)
    conflicts: list[Conflict]


def eligibility(instance: Instance, free_kw: FloatArray | None = None) -> Eligibility:
    """Eligible placements for every movable job, plus the per-job pre-check conflicts.

    ``free_kw`` = capacity − baseline − fixed load: a contiguous job can only start where its power
    fits in every covered slot on its own (a necessary condition, so pruning is exact)."""
    if free_kw is None:
        free_kw = free_capacity_kw(instance)
    acts = instance.actions
    carbon = instance.carbon_matrix()
    green = np.stack([s.green_mask(acts.green_solar_fraction) for s in instance.sites])
    el = Eligibility({}, {}, {}, {}, [], [])
    T = instance.n_slots
    for jx, job in enumerate(instance.jobs):
        if not job.movable:
            continue
        first, end = effective_window(job, T, acts, slot_minutes=instance.slot_minutes)
        el.window[jx] = (first, end)
        sites = allowed_sites(instance, job)
        el.sites[jx] = sites
        conflict = _window_conflict(instance, job, first, end, sites)
        if conflict is not None:
            el.conflicts.append(conflict)
            continue
        base = np.zeros((instance.n_sites, T), dtype=bool)
        base[sites, first:end] = True
        ok_carbon = base & carbon_ok_mask(instance, job)
        gate = acts.renewable_gating and job.priority is Priority.BATCH
        fits = free_kw >= (job.power_kw - TOL if not job.preemptible else TOL)
        mask = ok_carbon & fits
        if job.preemptible:
            if gate and _enough_room(job, mask & green, free_kw):
                mask = mask & green
            elif gate:
                el.gating_waived.append(jx)
            if _enough_room(job, mask, free_kw):
                el.slots[jx] = mask
                continue
        else:
            need = math.ceil(job.work_slots - TOL)
            s_arr, t_arr = contiguous_starts(mask, sites, need)
            if gate:
                gs, gt = contiguous_starts(mask & green, sites, need)
                if len(gs):
                    s_arr, t_arr = gs, gt
                else:
                    el.gating_waived.append(jx)
            if len(s_arr):
                el.starts[jx] = (s_arr, t_arr)
                continue
        el.conflicts.append(
            _why_no_placement(
                instance, job, window=(first, end), allowed=base, carbon_ok=ok_carbon, fits=fits, carbon=carbon
            )
        )
    return el


def _window_conflict(instance: Instance, job: Job, first: int, end: int, sites: list[int]) -> Conflict | None:
    """The job's window, the horizon or its regions leave it nowhere to run at all (None if they don't)."""
    need = math.ceil(job.work_slots - TOL)
    start_utc, end_utc = slot_span_utc(instance, first, end)
    if job.deadline_slot - max(job.release_slot, 0) < need:
        return Conflict(
            "window",
            (job.id,),
            f"needs {need} slots of work but release→deadline leaves {job.deadline_slot - max(job.release_slot, 0)}",
            site_id=instance.sites[instance.site_index(job.site_id)].id,
            start_utc=start_utc,
            end_utc=end_utc,
        )
    if end - first < need:
        acts = instance.actions
        return Conflict(
            "horizon",
            (job.id,),
            f"needs {need} slots but only {max(end - first, 0)} of its window lie inside the "
            f"{instance.n_slots}-slot horizon (with max deferral {acts.max_deferral_min} min)",
            site_id=job.site_id,
            start_utc=start_utc,
            end_utc=end_utc,
        )
    if not sites:
        return Conflict(
            "region",
            (job.id,),
            f"no site in allowed regions {list(job.allowed_regions or ())}"
            f"{'' if instance.actions.geographic_migration else ' (migration is off)'}",
            site_id=job.site_id,
        )
    return None


def _enough_room(job: Job, mask: BoolArray, free_kw: FloatArray) -> bool:
    """Can a preemptible job collect its work in ``mask`` on its own? Slots count by the share of the
    job's power that fits there (at its best site in that slot)."""
    share = np.where(mask, np.minimum(1.0, np.maximum(free_kw, 0.0) / job.power_kw), 0.0)
    return float(share.max(axis=0).sum()) >= job.work_slots - TOL


def runs_of(mask: BoolArray, length: int) -> IntArray:
    """Starts τ with mask[τ:τ+length] all True (mask: 1-D bool)."""
    n = len(mask)
    if length > n:
        return np.zeros(0, dtype=np.int64)
    c = np.concatenate(([0], np.cumsum(mask.astype(np.int64))))
    return np.flatnonzero(c[length:] - c[: n - length + 1] == length)


def contiguous_starts(mask: BoolArray, sites: list[int], need: int) -> tuple[IntArray, IntArray]:
    """(site, start) of every run of ``need`` eligible slots at the given sites."""
    ss, tt = [], []
    for k in sites:
        st = runs_of(mask[k], need)
        ss.append(np.full(len(st), k))
        tt.append(st)
    return np.concatenate(ss).astype(np.int64), np.concatenate(tt).astype(np.int64)


def _why_no_placement(
    instance: Instance,
    job: Job,
    *,
    window: tuple[int, int],
    allowed: BoolArray,
    carbon_ok: BoolArray,
    fits: BoolArray,
    carbon: FloatArray,
) -> Conflict:
    """Name the rule that leaves a job no placement: the carbon threshold or capacity. ``allowed`` is
    its window at its allowed sites, ``carbon_ok`` that under its threshold, ``fits`` where its power
    (contiguous) or some of it (preemptible) fits next to the fixed load."""
    need = math.ceil(job.work_slots - TOL)
    shape = "slots" if job.preemptible else "consecutive slots"
    start_utc, end_utc = slot_span_utc(instance, *window)
    site_ids = ", ".join(instance.sites[k].id for k in np.flatnonzero(allowed.any(axis=1)))
    if job.preemptible:
        carbon_room = int(carbon_ok.any(axis=0).sum()) >= need
    else:
        carbon_room = any(len(runs_of(carbon_ok[k], need)) for k in range(instance.n_sites))
    if not carbon_room:
        best = float(np.min(np.where(allowed, carbon, np.inf)))
        n_ok = int(carbon_ok.any(axis=0).sum())
        return Conflict(
            "carbon_threshold",
            (job.id,),
            f"needs {need} {shape} with carbon ≤ {job.carbon_threshold_g_per_kwh:g} gCO2/kWh before its "
            f"deadline (incl. max deferral) but only {n_ok} slot(s) at [{site_ids}] qualify "
            f"(lowest {best:.0f})",
            site_id=job.site_id,
            start_utc=start_utc,
            end_utc=end_utc,
        )
    return Conflict(
        "capacity",
        (job.id,),
        f"{job.power_kw:g} kW does not fit in the free capacity (capacity − baseline − critical/running "
        f"load) of [{site_ids}] for {need} {shape} in its window",
        site_id=job.site_id,
        start_utc=start_utc,
        end_utc=end_utc,
    )


# ----------------------------------------------------------------------------------------------
# Pre-checks of fixed work and shared helpers


def fixed_work_conflicts(instance: Instance) -> list[Conflict]:
    """Pre-checks for work the scheduler cannot move: critical deadlines, capacity of fixed load,
    committed caps below zero."""
    out: list[Conflict] = []
    for job in instance.jobs:
        if job.movable:
            continue
        start = max(job.release_slot, 0)
        finish = start + math.ceil(job.work_slots - TOL)
        if job.running_at_site is None and finish > job.deadline_slot:
            start_utc, end_utc = slot_span_utc(instance, start, finish)
            out.append(
                Conflict(
                    "window",
                    (job.id,),
                    f"critical job runs at release and finishes at slot {finish} > deadline {job.deadline_slot}",
                    site_id=job.site_id,
                    start_utc=start_utc,
                    end_utc=end_utc,
                )
            )
    free = free_capacity_kw(instance)
    fixed = [(j, fixed_run_fraction(instance, j)) for j in instance.jobs if not j.movable]
    for k, site in enumerate(instance.sites):
        for a, b in spans(np.flatnonzero(free[k] < -TOL)):
            ids = tuple(j.id for j, fr in fixed if (j.running_at_site or j.site_id) == site.id and fr[a:b].any())
            start_utc, end_utc = slot_span_utc(instance, a, b)
            out.append(
                Conflict(
                    "capacity",
                    ids,
                    f"baseline + critical/running load exceeds capacity by up to {-free[k, a:b].min():.1f} kW",
                    site_id=site.id,
                    start_utc=start_utc,
                    end_utc=end_utc,
                )
            )
    caps = instance.commitment_cap_by_slot_kw()
    for k, site in enumerate(instance.sites):
        for a, b in spans(np.flatnonzero(caps[k] < -TOL)):
            start_utc, end_utc = slot_span_utc(instance, a, b)
            out.append(
                Conflict(
                    "commitment",
                    (),
                    "committed reduction exceeds the baseline it was measured from (import cap < 0)",
                    site_id=site.id,
                    start_utc=start_utc,
                    end_utc=end_utc,
                    order_ids=orders_over(instance, site.id, a, b),
                )
            )
    return out


def orders_over(instance: Instance, site_id: str, a: int, b: int) -> tuple[str, ...]:
    """Ids of the committed orders at ``site_id`` whose window overlaps slots ``[a, b)``."""
    return tuple(
        c.order_id
        for c in instance.commitments
        if c.site_id == site_id and _overlaps(instance.window_slots(c.start_utc, c.end_utc), a, b)
    )


def _overlaps(window: tuple[int, int], a: int, b: int) -> bool:
    return window[0] < b and window[1] > a


def spans(idx: IntArray) -> list[tuple[int, int]]:
    """Consecutive runs [a, b) of sorted integer indices."""
    if len(idx) == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) > 1)
    starts = np.concatenate(([idx[0]], idx[breaks + 1]))
    ends = np.concatenate((idx[breaks] + 1, [idx[-1] + 1]))
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def slot_span_utc(instance: Instance, a: int, b: int) -> tuple[datetime | None, datetime | None]:
    """UTC start and end of slots ``[a, b)`` (None, None when the span is empty)."""
    if b <= a:
        return None, None
    return instance.slot_start(a), instance.slot_start(b)
