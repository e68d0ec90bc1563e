"""The agent facade, the decision log, the baselines and the job-mix builder."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from bpp.agent import CommitRefused, ComputeAgent
from bpp.baselines import genetic, greedy_best_window, run_at_release
from bpp.decisions import decisions_for_plan, query, settle
from bpp.domain import ControlActions, Instance, Job, ObjectiveKind, ObjectiveSpec, Priority, Site, iso
from bpp.scheduler import solve
from bpp.signal_providers import SignalUpdate, series_provider
from bpp.storage_agent import StorageAgent
from bpp.workload import job_mix, read_alibaba, read_gaia
from grid.signals import SignalSeries
from tests.bpp.ctss_helpers import START

H = 48


def _series(region: str, price: np.ndarray, carbon: np.ndarray) -> SignalSeries:
    return SignalSeries(region, START, price, carbon)


def _synthetic_signals(days: int = 3) -> dict[str, SignalSeries]:
    t = np.arange(48 * days)
    price = 70 + 50 * np.sin(2 * np.pi * (t - 20) / 48)
    return {
        "GB": _series("GB", price, 180 + 80 * np.sin(2 * np.pi * (t - 24) / 48)),
        "NO": _series("NO", price, np.full(len(t), 20.0)),
    }


CONFIG = {
    "provider_id": "dc-op",
    "start_utc": iso(START),
    "horizon_slots": H,
    "sites": [
        {
            "id": "DC-North",
            "region": "GB",
            "capacity_kw": 400,
            "baseline_kw": 100,
            "solar": {"capacity_kw": 100, "latitude_deg": 52, "longitude_deg": 0},
            "battery": {
                "energy_kwh": 200,
                "charge_power_kw": 50,
                "discharge_power_kw": 50,
                "round_trip_efficiency": 0.9,
                "degradation_gbp_per_mwh": 5,
            },
        },
        {"id": "DC-Nordic", "region": "NO", "capacity_kw": 200, "baseline_kw": 40},
    ],
    "jobs": {
        "list": [
            {
                "id": "ML-2847",
                "power_kw": 120,
                "duration_slots": 4,
                "release_slot": 31,
                "deadline_slot": 48,
                "priority": "flexible",
                "carbon_threshold_g_per_kwh": 240,
                "site_id": "DC-North",
                "allowed_regions": ["GB"],
            },
            {
                "id": "LS-0",
                "power_kw": 30,
                "duration_slots": 6,
                "release_slot": 0,
                "deadline_slot": 6,
                "priority": "critical",
                "site_id": "DC-North",
            },
            {
                "id": "ckpt",
                "power_kw": 60,
                "duration_slots": 6,
                "release_slot": 0,
                "deadline_slot": 30,
                "priority": "batch",
                "interruptible": True,
                "checkpointable": True,
                "site_id": "DC-North",
                "migration_cost_gbp": 0.5,
            },
            {
                "id": "LS-1",
                "power_kw": 80,
                "duration_slots": 10,
                "release_utc": iso(START + timedelta(hours=8)),
                "deadline_utc": iso(START + timedelta(hours=13)),
                "priority": "critical",
                "site_id": "DC-North",
            },
        ]
    },
    "actions": {"max_deferral_min": 480},
    "objective": {"kind": "cost_x_carbon"},
    "offers": {"window_slots": 4, "levels": [0.5, 1.0]},
}


def _agent() -> ComputeAgent:
    return ComputeAgent.from_config(json.loads(json.dumps(CONFIG)), signals=_synthetic_signals())


def test_agent_plans_logs_and_explains_deferral_by_threshold() -> None:
    agent = _agent()
    plan = agent.plan()
    assert plan.status == "optimal"
    recs = agent.decisions(job_id="ML-2847")
    assert len(recs) == 1
    r = recs[0]
    carbon = _synthetic_signals()["GB"].carbon_g_per_kwh
    assert carbon[31:35].max() > 240  # the release slots are above its threshold → deferred for it
    assert r.action == "defer" and "> threshold 240" in r.rationale and r.deferral_min > 0
    assert r.rationale.startswith("Job ML-2847 (120 kW)")
    assert all(carbon[t] <= 240 for t in range(agent.instance.slot_of(r.start_utc), agent.instance.slot_of(r.end_utc)))
    d = r.to_dict()
    json.dumps(d)
    assert {
        "job_id",
        "site_id",
        "start_utc",
        "end_utc",
        "expected_saving_gbp",
        "expected_saving_kg",
        "rationale",
    } <= set(d)
    crit = agent.decisions(job_id="LS-1")[0]
    assert crit.action == "run_at_release" and crit.start_utc == START + timedelta(hours=8)
    assert agent.decisions(action="migrate")  # the checkpointable job goes to the clean region
    summary = agent.summary()
    json.dumps(summary)
    assert summary["n_jobs_planned"] == 4


def test_agent_offer_commit_refuse_and_replan() -> None:
    agent = _agent()
    offers = agent.offers()
    assert offers and all(o.resource_type == "compute" for o in offers)
    o = max(offers, key=lambda x: x.max_kw)
    check = agent.can_commit(o.site_id, o.start_utc, o.end_utc, o.max_kw)
    assert check.ok, check.reason
    too_much = agent.can_commit(o.site_id, o.start_utc, o.end_utc, o.max_kw * 3 + 50)
    assert not too_much.ok
    red = agent.commit("order-1", o.site_id, o.start_utc, o.end_utc, o.max_kw)
    g = agent.plan().grid_import_kw(agent.instance)
    k = agent.instance.site_index(o.site_id)
    a, b = agent.instance.slot_of(o.start_utc), agent.instance.slot_of(o.end_utc)
    assert np.all(g[k, a:b] <= np.array(red.baseline_kw) - o.max_kw + 1e-5)
    with pytest.raises(CommitRefused) as ei:
        agent.commit("order-2", o.site_id, o.start_utc, o.end_utc, 10_000.0)
    assert "order-2" in str(agent.decisions(action="refuse")[0].rationale)
    assert ei.value.reason
    assert [c.order_id for c in agent.commitments] == ["order-1"]  # the refused one changed nothing
    # price spike + move the clock: running work stays, the order stays honoured
    before = agent.plan()
    running = {
        j.id
        for jx, j in enumerate(agent.instance.jobs)
        if before.run_fraction[jx, :, 1].sum() > 0 and not j.preemptible
    }
    assert running == {"LS-0"}
    spike = SignalUpdate(
        "GB",
        START + timedelta(hours=3),
        START + timedelta(hours=6),
        price_gbp_per_mwh=2000.0,
        reason="price spike",
    )
    agent.replan(spike, now_utc=START + timedelta(hours=1))
    assert agent.now_utc == START + timedelta(hours=1)
    inst = agent.instance
    for jx, j in enumerate(inst.jobs):
        if j.id in running:
            assert j.running_at_site is not None
            assert agent.plan().run_fraction[jx, :, 0].sum() == 1.0
    assert agent.decisions(action="replan")[-1].rationale.startswith("Re-plan at")
    assert "price spike" in agent.decisions(action="replan")[-1].rationale
    new_g = agent.plan().grid_import_kw(inst)
    a2 = inst.slot_of(o.start_utc)
    if a2 >= 0:
        assert np.all(new_g[k, a2 : a2 + (b - a)] <= np.array(red.baseline_kw) - o.max_kw + 1e-5)
    assert query(agent.decisions(), site_id="DC-North", start_utc=START, end_utc=START + timedelta(hours=24))


def test_a_battery_on_a_compute_site_cannot_get_a_second_planner() -> None:
    """One planner per site: with storage coordination off the battery would need its own agent
    selling the same meter, so the config is refused, naming the field; and a storage agent cannot
    be built from a compute provider's config."""
    cfg = json.loads(json.dumps(CONFIG))
    cfg["actions"]["storage_coordination"] = False
    with pytest.raises(ValueError, match=r"sites\[0\]\.battery: .*actions\.storage_coordination"):
        ComputeAgent.from_config(cfg, signals=_synthetic_signals())
    with pytest.raises(ValueError, match=r"agent\.kind"):
        StorageAgent.from_config(CONFIG, signals=_synthetic_signals())


def test_settle_fills_actuals_and_differs_from_expected_when_signals_differ() -> None:
    sig = _synthetic_signals()
    actual = {r: SignalSeries(r, START, s.price_gbp_per_mwh * 1.5, s.carbon_g_per_kwh + 30) for r, s in sig.items()}
    cfg = json.loads(json.dumps(CONFIG))
    agent = ComputeAgent.from_config(cfg, signals=sig)
    agent._actuals = series_provider(actual)
    recs = [r for r in agent.settle() if r.job_id]
    assert recs
    for r in recs:
        assert r.actual_cost_gbp == pytest.approx(1.5 * r.expected_cost_gbp, rel=1e-9, abs=1.0)
        assert r.actual_carbon_kg > r.expected_carbon_kg


def test_decisions_and_settle_are_consistent_with_the_plan() -> None:
    sites = (Site.build("A", "GB", H, capacity_kw=500.0), Site.build("B", "NO", H, capacity_kw=500.0))
    t = np.arange(H)
    price = {"GB": 60 + 40 * np.sin(t / 5), "NO": 60 + 40 * np.sin(t / 5)}
    carbon = {"GB": 200 + 50 * np.sin(t / 7), "NO": np.full(H, 15.0)}
    jobs = tuple(Job(f"j{i}", 50.0, 2, i, i + 12, Priority.BATCH, site_id="A") for i in range(6))
    inst = Instance(START, H, sites, jobs, price, carbon, objective=ObjectiveSpec(kind=ObjectiveKind.CARBON))
    plan = solve(inst)
    recs = decisions_for_plan(inst, plan)
    by_job = {r.job_id: r for r in recs}
    for jx, j in enumerate(jobs):
        r = by_job[j.id]
        e = plan.run_fraction[jx] * j.power_kw * 0.5 / 1000
        assert r.expected_carbon_kg == pytest.approx(float((e * inst.carbon_matrix()).sum()))
        assert r.expected_saving_kg == pytest.approx(r.reference_carbon_kg - r.expected_carbon_kg)
        assert r.action == "migrate"
    same = settle(recs, inst, plan)
    assert all(r.actual_saving_gbp == pytest.approx(r.expected_saving_gbp) for r in same if r.job_id)


# -- baselines --------------------------------------------------------------------------------------


def test_greedy_picks_the_contiguous_window_of_lowest_mean_intensity() -> None:
    carbon = np.array([200, 90, 300, 100, 100, 250, 80, 400, 300, 300, 300, 300], dtype=float)
    # best single slot is 6 (80) but best 2-slot mean is slots 3–4 (100) — the SDK's window rule
    site = (Site.build("A", "GB", 12, capacity_kw=500.0),)
    inst = Instance(
        START,
        12,
        site,
        (Job("j", 10.0, 2, 0, 12, Priority.BATCH),),
        {"GB": np.full(12, 50.0)},
        {"GB": carbon},
        actions=ControlActions(max_deferral_min=600),
    )
    plan = greedy_best_window(inst)
    assert np.flatnonzero(plan.run_fraction[0, 0]).tolist() == [3, 4]
    assert plan.violations == []
    rel = run_at_release(inst)
    assert np.flatnonzero(rel.run_fraction[0, 0]).tolist() == [0, 1]
    ga = genetic(inst, generations=30)
    assert ga.violations == []
    assert solve(inst).metrics.objective <= min(ga.metrics.objective, plan.metrics.objective) + 1e-9


def test_baselines_report_violations_they_cannot_avoid() -> None:
    carbon = np.array([300] * 2 + [100] * 10, dtype=float)
    site = (Site.build("A", "GB", 12, capacity_kw=500.0),)
    inst = Instance(
        START,
        12,
        site,
        (Job("j", 10.0, 2, 0, 12, carbon_threshold_g_per_kwh=150.0),),
        {"GB": np.full(12, 50.0)},
        {"GB": carbon},
    )
    assert any("threshold" in v for v in run_at_release(inst).violations)
    assert greedy_best_window(inst).violations == []


# -- job mix ----------------------------------------------------------------------------------------


def test_job_mix_from_the_real_alibaba_trace_maps_classes_and_power(shared_dir: Path) -> None:
    jobs_dir = shared_dir / "data" / "jobs"
    tasks = read_alibaba(jobs_dir / "alibaba_gpu2023_openb_pod_list_default.csv")
    jobs = job_mix(200, 96, ["A", "B"], [1.0, 1.0], jobs_dir=jobs_dir, offset_rows=0)
    assert len(jobs) == 200
    for t, j in zip(tasks[:200], jobs, strict=True):
        assert j.power_kw == pytest.approx(1.2 * (0.4 * t.gpus + 0.01 * t.cores), abs=1e-3)
        assert j.priority is t.priority
        assert 0 <= j.release_slot < j.deadline_slot <= 96
        if j.priority is Priority.CRITICAL:
            assert j.deadline_slot == j.release_slot + j.duration_slots
    # the README's class shares: LS ≈ 57%, BE ≈ 42% over the whole file
    share = np.mean([t.priority is Priority.CRITICAL for t in tasks])
    assert 0.5 < share < 0.65
    gaia = read_gaia(jobs_dir / "gaia_pai_1k.csv")
    assert len(gaia) == 1000 and all(t.priority is Priority.BATCH for t in gaia)


def test_job_mix_synthetic_fallback_has_the_trace_statistics(tmp_path: Path) -> None:
    jobs = job_mix(3000, 96, ["A"], jobs_dir=tmp_path, seed=3)  # no trace here → synthetic
    assert jobs[0].id.startswith("S")
    crit = np.mean([j.priority is Priority.CRITICAL for j in jobs])
    assert abs(crit - 0.571) < 0.04
    one_slot = np.mean([j.duration_slots == 1 for j in jobs])
    assert 0.55 < one_slot < 0.85  # median run time ≈ 10 min


def test_green_gating_is_visible_in_the_decision_log() -> None:
    solar = np.array([0, 0, 10, 50, 90, 100, 95, 60, 10, 0, 0, 0], dtype=float)
    site = (Site.build("DC-Iberia", "ES", 12, capacity_kw=500.0, solar_kw=solar, solar_capacity_kw=100.0),)
    jobs = (Job("sunny", 50.0, 2, 0, 12, Priority.BATCH), Job("night", 20.0, 2, 9, 12, Priority.BATCH))
    inst = Instance(
        START,
        12,
        site,
        jobs,
        {"ES": np.full(12, 50.0)},
        {"ES": np.full(12, 100.0)},
        actions=ControlActions(renewable_gating=True, max_deferral_min=360),
    )
    recs = {r.job_id: r for r in decisions_for_plan(inst, solve(inst)) if r.job_id}
    assert "green_gating" in recs["sunny"].actions and recs["sunny"].deferral_min >= 120
    assert "release slots not green" in recs["sunny"].rationale
    assert "gating_waived" in recs["night"].actions
