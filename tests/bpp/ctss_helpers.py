"""Shared helpers for the CTSS tests: random small instances (hypothesis) and a brute-force optimum."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime

import numpy as np
from hypothesis import strategies as st

from bpp.domain import (
    MWH_PER_KW_SLOT,
    Battery,
    CommittedReduction,
    ControlActions,
    Instance,
    Job,
    ObjectiveKind,
    ObjectiveSpec,
    Priority,
    Site,
    allowed_sites,
    effective_window,
)
from bpp.scheduler import carbon_ok_mask

START = datetime(2023, 6, 1, tzinfo=UTC)
REGIONS = ("GB", "NO")


def signals(rng: np.random.Generator, n_slots: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    t = np.arange(n_slots)
    price = {r: np.round(60 + 40 * np.sin(t / 3 + k) + rng.normal(0, 15, n_slots), 1) for k, r in enumerate(REGIONS)}
    carbon = {
        r: np.round(np.clip(180 + 80 * np.sin(t / 4 + 2 * k) + rng.normal(0, 20, n_slots), 5, None), 0)
        for k, r in enumerate(REGIONS)
    }
    return price, carbon


@st.composite
def instances(
    draw: st.DrawFn,
    *,
    contiguous_only: bool = False,
    max_jobs: int = 6,
    with_battery: bool = True,
    with_commitment: bool = True,
) -> Instance:
    """Small random instances: 1–2 sites, 8–16 slots, 1–max_jobs jobs, optional battery, solar,
    carbon thresholds, a committed reduction; every objective kind."""
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    n_slots = draw(st.integers(8, 16))
    n_sites = draw(st.integers(1, 2))
    price, carbon = signals(rng, n_slots)
    sites = []
    for k in range(n_sites):
        cap = float(draw(st.sampled_from([80.0, 120.0, 200.0])))
        base = float(draw(st.sampled_from([0.0, 20.0])))
        battery = None
        if with_battery and not contiguous_only and draw(st.booleans()):
            battery = Battery(
                energy_kwh=60.0,
                charge_power_kw=30.0,
                discharge_power_kw=30.0,
                round_trip_efficiency=draw(st.sampled_from([0.81, 0.9, 1.0])),
                degradation_gbp_per_mwh=draw(st.sampled_from([0.0, 10.0])),
            )
        solar_cap = 0.0 if contiguous_only else float(draw(st.sampled_from([0.0, 40.0])))
        solar = solar_cap * np.clip(np.sin(np.pi * (np.arange(n_slots) - 2) / (n_slots - 4)), 0, None)
        sites.append(
            Site.build(
                f"S{k}",
                REGIONS[k],
                n_slots,
                capacity_kw=cap,
                baseline_kw=base,
                solar_kw=solar,
                solar_capacity_kw=solar_cap,
                battery=battery,
            )
        )
    jobs = []
    n_jobs = draw(st.integers(1, max_jobs))
    for i in range(n_jobs):
        d = draw(st.integers(1, 3))
        r = draw(st.integers(0, n_slots - d))
        slack = draw(st.integers(0, 6))
        pri = draw(st.sampled_from(list(Priority)))
        pre = (not contiguous_only) and draw(st.booleans())
        thr = draw(st.sampled_from([None, None, 150.0, 220.0]))
        jobs.append(
            Job(
                id=f"J{i}",
                power_kw=float(draw(st.sampled_from([10.0, 25.0, 40.0, 60.0]))),
                duration_slots=d,
                release_slot=r,
                deadline_slot=min(r + d + slack, n_slots),
                priority=pri,
                carbon_threshold_g_per_kwh=thr,
                interruptible=pre,
                checkpointable=pre,
                site_id=f"S{draw(st.integers(0, n_sites - 1))}",
                migration_cost_gbp=float(draw(st.sampled_from([0.0, 0.5]))),
            )
        )
    commitments: tuple[CommittedReduction, ...] = ()
    if with_commitment and draw(st.booleans()):
        k = draw(st.integers(0, n_sites - 1))
        a = draw(st.integers(0, n_slots - 2))
        n = draw(st.integers(1, 2))
        base = float(draw(st.sampled_from([50.0, 100.0])))
        commitments = (
            CommittedReduction(
                "O1",
                f"S{k}",
                START.replace(hour=a // 2, minute=30 * (a % 2)),
                START.replace(hour=(a + n) // 2, minute=30 * ((a + n) % 2)),
                float(draw(st.sampled_from([10.0, 30.0]))),
                (base,) * n,
            ),
        )
    actions = ControlActions(
        max_deferral_min=int(draw(st.sampled_from([60, 120, 240]))),
        geographic_migration=draw(st.booleans()),
        storage_coordination=draw(st.booleans()),
        renewable_gating=(not contiguous_only) and draw(st.booleans()),
    )
    kind = draw(st.sampled_from(list(ObjectiveKind)))
    return Instance(
        START,
        n_slots,
        tuple(sites),
        tuple(jobs),
        price,
        carbon,
        commitments,
        actions,
        ObjectiveSpec(kind=kind),
    )


def brute_force(instance: Instance) -> float | None:
    """The optimal objective by enumerating every combination of (site, start) of every movable job
    (contiguous jobs only, no battery, no solar); None if no combination is feasible. Independent of
    the scheduler's model: checks every rule from the raw instance."""
    inst = instance
    assert all(not j.preemptible for j in inst.jobs)
    assert all(s.battery is None or not inst.actions.storage_coordination for s in inst.sites)
    assert all(not s.solar_kw.any() for s in inst.sites)
    assert not inst.actions.renewable_gating
    T = inst.n_slots
    cap = np.stack([s.capacity_kw for s in inst.sites])
    load0 = np.stack([s.baseline_kw for s in inst.sites]).astype(float)
    caps = inst.commitment_caps_kw()
    for s in inst.sites:
        if s.grid_import_limit_kw is not None:
            raise NotImplementedError
    options: list[list[tuple[int, int]]] = []
    movers = []
    for job in inst.jobs:
        d = job.duration_slots
        if not job.movable:
            k = inst.site_index(job.site_id)
            r = max(job.release_slot, 0)
            if r + d > job.deadline_slot:
                return None
            load0[k, r : min(r + d, T)] += job.power_kw
            continue
        first, end = effective_window(job, T, inst.actions)
        ok = carbon_ok_mask(inst, job)
        opts = [
            (k, tau)
            for k in allowed_sites(inst, job)
            for tau in range(first, end - d + 1)
            if ok[k, tau : tau + d].all()
        ]
        if not opts:
            return None
        options.append(opts)
        movers.append(job)
    w = inst.weight_matrix() * MWH_PER_KW_SLOT
    gw = inst.objective.gbp_weight
    best = math.inf
    for combo in itertools.product(*options):
        load = load0.copy()
        mig = 0.0
        for job, (k, tau) in zip(movers, combo, strict=True):
            load[k, tau : tau + job.duration_slots] += job.power_kw
            if inst.sites[k].id != job.site_id:
                mig += job.migration_cost_gbp
        if np.any(load > cap + 1e-9) or np.any(load > caps + 1e-9):
            continue
        best = min(best, float((w * load).sum() + gw * mig))
    return None if best == math.inf else best
