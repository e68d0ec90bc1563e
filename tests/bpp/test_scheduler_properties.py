"""Property tests of CTSS over random instances, and brute-force checks of optimality."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpp.baselines import POLICIES
from bpp.domain import Instance, Job, Priority, Site
from bpp.plan import Plan
from bpp.scheduler import (
    SchedulingInfeasible,
    build_model,
    plan_violations,
    replan,
    solve,
    tie_break_bound,
    tie_break_cost,
)
from tests.bpp.ctss_helpers import START, brute_force, instances, signals

PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_invariants_directly(inst: Instance, plan: Plan) -> None:
    """The issue's invariants, computed here from the raw instance (not via verify_plan)."""
    F = plan.run_fraction
    for jx, job in enumerate(inst.jobs):
        on = np.argwhere(F[jx] > 1e-6)
        # every job completes, by its deadline
        assert F[jx].sum() == pytest.approx(job.duration_slots, abs=1e-5), job.id
        assert on[:, 1].max() < job.deadline_slot, f"{job.id} misses its deadline"
        assert on[:, 1].min() >= job.release_slot, f"{job.id} runs before release"
        if job.priority is Priority.CRITICAL:
            # critical: at release, at home, contiguous, never migrated
            home = inst.site_index(job.site_id)
            assert set(on[:, 0].tolist()) == {home}, f"critical {job.id} migrated"
            assert sorted(on[:, 1].tolist()) == list(range(job.release_slot, job.release_slot + job.duration_slots))
        elif job.carbon_threshold_g_per_kwh is not None:
            carbon = inst.carbon_matrix()
            assert all(carbon[k, t] <= job.carbon_threshold_g_per_kwh + 1e-9 for k, t in on), job.id
        if not job.preemptible:
            assert len(set(on[:, 0].tolist())) == 1
            ts = sorted(on[:, 1].tolist())
            assert ts == list(range(ts[0], ts[0] + job.duration_slots)), f"{job.id} not contiguous"
    power = np.array([j.power_kw for j in inst.jobs])
    load = np.stack([s.baseline_kw for s in inst.sites]) + np.einsum("j,jst->st", power, F)
    cap = np.stack([s.capacity_kw for s in inst.sites])
    assert np.all(load <= cap + 1e-5), "capacity exceeded"
    grid = load + plan.charge_kw - plan.discharge_kw - plan.solar_used_kw
    for c in inst.commitments:
        k = inst.site_index(c.site_id)
        a = inst.slot_of(c.start_utc)
        for i, b in enumerate(c.baseline_kw):
            assert grid[k, a + i] <= b - c.reduction_kw + 1e-5, "committed reduction broken"


@PROPS
@given(inst=instances())
def test_ctss_plans_satisfy_every_constraint_and_beat_feasible_baselines(inst: Instance) -> None:
    try:
        plan = solve(inst)
    except SchedulingInfeasible as e:
        # then no baseline may have found a feasible plan either
        for name, policy in POLICIES.items():
            b = policy(inst) if name != "genetic" else policy(inst, generations=20)
            assert b.violations, f"CTSS said infeasible ({e}) but {name} found a feasible plan"
        assert e.conflicts and all(c.kind for c in e.conflicts)
        return
    assert plan.status == "optimal"
    assert plan_violations(inst, plan) == []
    _check_invariants_directly(inst, plan)
    assert plan.metrics is not None
    for name, policy in POLICIES.items():
        b = policy(inst) if name != "genetic" else policy(inst, generations=20)
        assert b.metrics is not None
        if not b.violations:
            # CTSS minimises objective + tie-breaker, so it can trail a baseline by the baseline's own
            # tie-breaker value at most (plus solver tolerance)
            slack = tie_break_cost(inst, b) + 1e-6 * max(1.0, abs(b.metrics.objective))
            assert plan.metrics.objective <= b.metrics.objective + slack, name


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inst=instances(contiguous_only=True, max_jobs=4))
def test_ctss_matches_brute_force_on_contiguous_instances(inst: Instance) -> None:
    best = brute_force(inst)
    try:
        plan = solve(inst)
    except SchedulingInfeasible:
        assert best is None, "CTSS reported infeasible but enumeration found a plan"
        return
    assert best is not None, "CTSS found a plan that enumeration says cannot exist"
    assert plan.metrics is not None
    assert plan.metrics.objective == pytest.approx(best, rel=1e-6, abs=tie_break_bound(inst) + 1e-9)


def test_brute_force_agrees_on_a_capacity_bound_instance() -> None:
    """A hand-made instance where capacity forces a non-greedy choice: two 60 kW jobs, 100 kW site."""
    rng = np.random.default_rng(3)
    price, carbon = signals(rng, 10)
    price["GB"] = np.array([10, 10, 50, 50, 50, 50, 50, 90, 90, 90], dtype=float)
    sites = (Site.build("S0", "GB", 10, capacity_kw=100.0),)
    jobs = (Job("A", 60.0, 2, 0, 10), Job("B", 60.0, 2, 0, 10))
    inst = Instance(START, 10, sites, jobs, {"GB": price["GB"]}, {"GB": carbon["GB"]})
    plan = solve(inst)
    best = brute_force(inst)
    assert plan.metrics is not None and best is not None
    assert plan.metrics.objective == pytest.approx(best, rel=1e-9)
    # they cannot both take the cheap slots 0–1
    F = plan.run_fraction
    assert not (F[0, 0, 0] > 0.5 and F[1, 0, 0] > 0.5)
    assert math.isclose(F.sum(), 4.0)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inst=instances(with_commitment=False), data=st.data())
def test_replan_fixes_running_work_and_conserves_progress(inst: Instance, data: st.DataObject) -> None:
    try:
        plan = solve(inst)
    except SchedulingInfeasible:
        return
    now = data.draw(st.integers(1, inst.n_slots - 1))
    factor = data.draw(st.sampled_from([0.5, 1.0, 3.0]))
    price = {r: a[now:] * factor for r, a in inst.price_gbp_per_mwh.items()}
    # the old plan's remainder is feasible for the re-plan, so the re-plan can never be infeasible
    new_inst, new_plan = replan(inst, plan, now, price_gbp_per_mwh=price)
    assert plan_violations(new_inst, new_plan) == []
    by_id = {j.id: jx for jx, j in enumerate(new_inst.jobs)}
    for jx, job in enumerate(inst.jobs):
        before = plan.run_fraction[jx, :, :now]
        done = before.sum()
        if job.id not in by_id:
            assert done == pytest.approx(job.duration_slots, abs=1e-5)  # finished before now
            continue
        nx = by_id[job.id]
        # progress is conserved: work before now + work after = duration
        assert done + new_plan.run_fraction[nx].sum() == pytest.approx(job.duration_slots, abs=1e-5)
        started = done > 1e-6
        if started and not job.preemptible:
            # running work keeps running where it is, from the first slot, without a pause
            k = int(np.argwhere(before > 1e-6)[-1, 0])
            rest = round(job.duration_slots - done)
            assert new_plan.run_fraction[nx, k, :rest].tolist() == [1.0] * rest
            assert new_inst.jobs[nx].running_at_site == inst.sites[k].id


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inst=instances(max_jobs=8))
def test_reduced_cost_fixing_finds_the_full_milp_optimum(inst: Instance) -> None:
    """The LP-first, reduced-cost-fixed solve must agree with HiGHS on the whole MILP."""
    try:
        model = build_model(inst)
    except SchedulingInfeasible:
        return
    fast = model.lp.solve(reduced_cost_fixing=True)
    full = model.lp.solve(reduced_cost_fixing=False)
    assert (fast.x is None) == (full.x is None)
    if full.x is None:
        return
    assert fast.status == full.status == "optimal"
    # Both are optimal within their certified gaps, so they agree within the sum of those gaps — plus the
    # objective change that HiGHS's feasibility tolerances (1e-7 on rows and bounds, applied to the scaled
    # model) allow: 1e-5 relative. Seen on a Hypothesis example (reproduced on the code before the
    # architecture split): the LP relaxation, integral and so returned with gap 0, was 1.68e-6 (7e-6
    # relative) above the full MILP's optimum — one of the two points sits inside a tolerance, not a bug.
    allowed = fast.mip_gap * abs(fast.objective) + full.mip_gap * abs(full.objective) + 1e-5 * abs(full.objective)
    assert abs(fast.objective - full.objective) <= allowed + 1e-6, (
        fast.objective,
        full.objective,
        fast.mip_gap,
        full.mip_gap,
    )
    # HiGHS stops on a relative gap of 1e-6 or an absolute one of 1e-6 (mip_abs_gap): near-zero objectives
    # (3e-6 in one example, relative gap 0.21) are certified by the absolute criterion.
    assert fast.mip_gap <= 1e-6 + 1e-12 or fast.mip_gap * abs(fast.objective) <= 1e-6 + 1e-12
