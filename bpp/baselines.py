"""Baseline policies CTSS is compared against. All return a :class:`bpp.plan.Plan` scored on the
instance's signals, with ``plan.violations`` listing every constraint the policy could not honour
(empty = feasible, and then CTSS's objective can be no worse: its feasible set contains the plan).

- :func:`run_at_release` — every job starts at release at its home site (no shifting, no migration).
- :func:`greedy_best_window` — the Carbon Aware SDK rule per job: among the contiguous windows (and,
  with migration on, the allowed sites) where the job may run, pick the one with the lowest *mean*
  carbon intensity (earliest on ties); jobs are placed one by one in release order and a window is
  skipped if it would exceed remaining capacity or a committed reduction.
- :func:`genetic` — a genetic algorithm over (site, start) per job: tournament selection, uniform
  crossover, random-reset mutation, elitism; fitness = the instance objective + a penalty per kW·slot
  of capacity or commitment overload. Seeded with run-at-release and the greedy plan.

All three run every job as one contiguous block at full power (preemptible jobs too), keep batteries
idle and use all on-site solar up to the site load — so they are points of CTSS's feasible set
whenever they report no violations.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from bpp.domain import TOL, FloatArray, Instance, IntArray
from bpp.plan import Plan, evaluate, idle_battery_arrays, max_solar_use
from bpp.scheduler import contiguous_starts, eligibility, fixed_load_kw, fixed_run_fraction, plan_violations


@dataclass
class _Candidates:
    """Contiguous placements per movable job: arrays of site and start, and the run length."""

    site: dict[int, IntArray]
    start: dict[int, IntArray]
    need: dict[int, int]
    gating_waived: tuple[str, ...]


def _candidates(instance: Instance) -> _Candidates:
    el = eligibility(instance)
    site: dict[int, IntArray] = {}
    start: dict[int, IntArray] = {}
    need: dict[int, int] = {}
    for jx, job in enumerate(instance.jobs):
        if not job.movable:
            continue
        d = math.ceil(job.work_slots - TOL)
        need[jx] = d
        if jx in el.starts:
            site[jx], start[jx] = el.starts[jx]
        elif jx in el.slots:
            # contiguous runs at full power only where the job fits on its own
            site[jx], start[jx] = contiguous_starts(el.slots[jx], list(range(instance.n_sites)), d)
        else:
            site[jx] = np.zeros(0, dtype=np.int64)
            start[jx] = np.zeros(0, dtype=np.int64)
    return _Candidates(site, start, need, tuple(instance.jobs[j].id for j in el.gating_waived))


def _release_placement(instance: Instance, jx: int) -> tuple[int, int]:
    job = instance.jobs[jx]
    return instance.site_index(job.site_id), max(job.release_slot, 0)


def _plan_from_placements(
    instance: Instance,
    placements: dict[int, tuple[int, int]],
    policy: str,
    waived: tuple[str, ...],
    t0: float,
) -> Plan:
    S, T = instance.n_sites, instance.n_slots
    F = np.zeros((instance.n_jobs, S, T))
    for jx, job in enumerate(instance.jobs):
        if not job.movable:
            F[jx, instance.site_index(job.running_at_site or job.site_id)] = fixed_run_fraction(instance, job)
            continue
        k, tau = placements[jx]
        full = math.floor(job.work_slots + TOL)
        F[jx, k, tau : tau + full] = 1.0
        rest = job.work_slots - full
        if rest > TOL and tau + full < T:
            F[jx, k, tau + full] = rest
    charge, discharge, soc = idle_battery_arrays(instance)
    plan = Plan(
        policy=policy,
        run_fraction=F,
        charge_kw=charge,
        discharge_kw=discharge,
        soc_kwh=soc,
        solar_used_kw=max_solar_use(instance, F),
        gating_waived=waived,
        status="heuristic",
    )
    plan.solve_time_s = time.perf_counter() - t0
    plan.metrics = evaluate(instance, plan)
    plan.violations = plan_violations(instance, plan)
    return plan


def run_at_release(instance: Instance) -> Plan:
    """Every job at its home site from its release, contiguously — what the cluster does today."""
    t0 = time.perf_counter()
    waived = _candidates(instance).gating_waived if instance.actions.renewable_gating else ()
    placements = {jx: _release_placement(instance, jx) for jx, j in enumerate(instance.jobs) if j.movable}
    return _plan_from_placements(instance, placements, "run_at_release", waived, t0)


def _import_caps(instance: Instance) -> FloatArray:
    caps = instance.commitment_caps_kw()
    for k, s in enumerate(instance.sites):
        if s.grid_import_limit_kw is not None:
            caps[k] = np.minimum(caps[k], s.grid_import_limit_kw)
    return caps


def greedy_best_window(instance: Instance) -> Plan:
    """The Carbon Aware SDK rule, job by job in release order (see module docstring)."""
    t0 = time.perf_counter()
    cand = _candidates(instance)
    carbon = instance.carbon_matrix()
    csum = np.concatenate((np.zeros((instance.n_sites, 1)), np.cumsum(carbon, axis=1)), axis=1)
    cap = np.stack([s.capacity_kw for s in instance.sites])
    base = np.stack([s.baseline_kw for s in instance.sites])
    solar = np.stack([s.solar_kw for s in instance.sites])
    import_cap = _import_caps(instance)
    load = base + fixed_load_kw(instance)
    order = sorted(
        (jx for jx, j in enumerate(instance.jobs) if j.movable),
        key=lambda jx: (instance.jobs[jx].release_slot, instance.jobs[jx].id),
    )
    placements: dict[int, tuple[int, int]] = {}
    for jx in order:
        job = instance.jobs[jx]
        ss, tt, d = cand.site[jx], cand.start[jx], cand.need[jx]
        chosen = None
        if len(ss):
            mean = (csum[ss, tt + d] - csum[ss, tt]) / d
            for c in np.lexsort((tt, mean)):  # lowest mean intensity, earliest on ties
                k, tau = int(ss[c]), int(tt[c])
                new = load[k, tau : tau + d] + job.power_kw
                imp = np.maximum(new - solar[k, tau : tau + d], 0.0)
                if np.all(new <= cap[k, tau : tau + d] + TOL) and np.all(imp <= import_cap[k, tau : tau + d] + TOL):
                    chosen = (k, tau)
                    break
        if chosen is None:  # nowhere fits: fall back to release (the checker reports the violation)
            chosen = _release_placement(instance, jx)
        k, tau = chosen
        load[k, tau : tau + d] += job.power_kw
        placements[jx] = chosen
    return _plan_from_placements(instance, placements, "greedy_best_window", cand.gating_waived, t0)


def genetic(
    instance: Instance,
    *,
    population: int = 40,
    generations: int = 150,
    mutation_rate: float | None = None,
    tournament: int = 3,
    elite: int = 2,
    penalty_per_kw_slot: float = 10.0,
    seed: int = 0,
    time_limit_s: float = 60.0,
) -> Plan:
    """Genetic algorithm over contiguous (site, start) placements (see module docstring)."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    cand = _candidates(instance)
    S, T = instance.n_sites, instance.n_slots
    movers = [jx for jx, j in enumerate(instance.jobs) if j.movable]
    # Genes index a job's candidate list; jobs with no candidate get their release placement only.
    opts_site, opts_start = [], []
    for jx in movers:
        k0, t0_ = _release_placement(instance, jx)
        ss, tt = cand.site[jx], cand.start[jx]
        if not len(ss):
            ss, tt = np.array([k0]), np.array([t0_])
        opts_site.append(ss)
        opts_start.append(tt)
    n_opts = np.array([len(o) for o in opts_site], dtype=np.int64)
    offset = np.concatenate(([0], np.cumsum(n_opts)[:-1])) if len(movers) else np.zeros(0, np.int64)
    flat_site = np.concatenate(opts_site) if movers else np.zeros(0, np.int64)
    flat_start = np.concatenate(opts_start) if movers else np.zeros(0, np.int64)
    power = np.array([instance.jobs[jx].power_kw for jx in movers])
    need = np.array([cand.need[jx] for jx in movers], dtype=np.int64)
    mig = np.array([instance.jobs[jx].migration_cost_gbp for jx in movers])
    home = np.array([instance.site_index(instance.jobs[jx].site_id) for jx in movers], dtype=np.int64)
    base = np.stack([s.baseline_kw for s in instance.sites]) + fixed_load_kw(instance)
    cap = np.stack([s.capacity_kw for s in instance.sites])
    solar = np.stack([s.solar_kw for s in instance.sites])
    icap = _import_caps(instance)
    weight = instance.weight_matrix() * instance.mwh_per_kw_slot
    gw = instance.objective.gbp_weight
    n = len(movers)

    def fitness(genes: IntArray) -> FloatArray:
        P = len(genes)
        if n == 0:
            load = np.broadcast_to(base, (P, S, T))
            mcost = np.zeros(P)
        else:
            idx = offset[None, :] + genes
            site, start = flat_site[idx], flat_start[idx]
            diff = np.zeros((P, S, T + 1))
            pi = np.repeat(np.arange(P), n)
            np.add.at(diff, (pi, site.ravel(), start.ravel()), np.tile(power, P))
            np.add.at(diff, (pi, site.ravel(), (start + need[None, :]).ravel()), -np.tile(power, P))
            load = base[None] + np.cumsum(diff, axis=2)[:, :, :T]
            mcost = ((site != home[None, :]) * mig[None, :]).sum(axis=1)
        imp = np.maximum(load - solar[None], 0.0)
        obj = (imp * weight[None]).sum(axis=(1, 2)) + gw * mcost
        over = np.maximum(load - cap[None], 0.0).sum(axis=(1, 2))
        over += np.maximum(imp - np.where(np.isfinite(icap), icap, np.inf)[None], 0.0).sum(axis=(1, 2))
        penalised: FloatArray = obj + penalty_per_kw_slot * over
        return penalised

    def genes_of(placements: dict[int, tuple[int, int]]) -> IntArray:
        g = np.zeros(n, dtype=np.int64)
        for i, jx in enumerate(movers):
            k, tau = placements[jx]
            hit = np.flatnonzero((opts_site[i] == k) & (opts_start[i] == tau))
            g[i] = hit[0] if len(hit) else 0
        return g

    seeds = [genes_of({jx: _release_placement(instance, jx) for jx in movers})]
    greedy = greedy_best_window(instance)
    greedy_place = {}
    for jx in movers:
        on = np.argwhere(greedy.run_fraction[jx] > TOL)
        greedy_place[jx] = (int(on[0, 0]), int(on[:, 1].min()))
    seeds.append(genes_of(greedy_place))
    pop = (
        rng.integers(0, np.maximum(n_opts, 1)[None, :], size=(population, n))
        if n
        else np.zeros((population, 0), np.int64)
    )
    for i, s in enumerate(seeds[:population]):
        pop[i] = s
    fit = fitness(pop)
    rate = mutation_rate if mutation_rate is not None else (2.0 / n if n else 0.0)
    gens_run = 0
    for _ in range(generations):
        if time.perf_counter() - t0 > time_limit_s or n == 0:
            break
        gens_run += 1
        order = np.argsort(fit)
        new = [pop[order[e]] for e in range(min(elite, population))]
        while len(new) < population:
            a = _tournament(rng, fit, tournament)
            b = _tournament(rng, fit, tournament)
            mask = rng.random(n) < 0.5
            child = np.where(mask, pop[a], pop[b])
            mut = rng.random(n) < rate
            if mut.any():
                child = child.copy()
                child[mut] = rng.integers(0, n_opts[mut])
            new.append(child)
        pop = np.stack(new)
        fit = fitness(pop)
    best = pop[int(np.argmin(fit))]
    placements = {jx: (int(opts_site[i][best[i]]), int(opts_start[i][best[i]])) for i, jx in enumerate(movers)}
    plan = _plan_from_placements(instance, placements, "genetic", cand.gating_waived, t0)
    plan.notes.append(f"GA: population {population}, generations run {gens_run}, seed {seed}")
    return plan


def _tournament(rng: np.random.Generator, fit: FloatArray, k: int) -> int:
    idx = rng.integers(0, len(fit), size=k)
    return int(idx[np.argmin(fit[idx])])


POLICIES = {
    "run_at_release": run_at_release,
    "greedy_best_window": greedy_best_window,
    "genetic": genetic,
}
