"""CTSS benchmark on real 2023 signals: solve time, quality against baselines, and forecast regret.

All policies run on the same instances in one run; prints JSON and writes
``bench/results/scheduler.json``.

    .venv/bin/python bench/scheduler.py [--sizes 100,1000,10000] [--dates 2023-03-15,...] [--quick]

Instances: three sites of one provider — DC-North (GB, with a battery), DC-Iberia (ES, with on-site
solar) and DC-Nordic (NO) — 96 half-hour slots (48 h) from 00:00 UTC on each date. Signals are the
real series from ``../shared/data/grid/`` via ``grid.signals`` (GB market-index price for every region,
which has no price data of its own; carbon per region). Jobs come from the Alibaba GPU 2023 trace
(``../shared/data/jobs/alibaba_gpu2023_openb_pod_list_default.csv``) via ``bpp.workload.job_mix``
(BE → batch, LS → critical, 30% of movable jobs with a carbon threshold). Site capacity is sized from
the run-at-release load so that today's practice is (just) feasible: inflexible baseline = 50% of the
site's mean release load, capacity = baseline + 1.1 × its peak release load.

Sections
1. ``solve_time``: for each size, build + HiGHS time of CTSS (median of repeats), model size,
   binaries, status and MIP gap, with each baseline's run time on the same instance.
2. ``quality``: 1,000-job instances on several dates, planned on actual signals: cost, carbon and
   objective of CTSS vs run-at-release, greedy best-window and the GA, CTSS's MIP gap, each
   baseline's constraint violations (a baseline's numbers are only comparable when it has none).
3. ``forecast``: the same instances planned on day-ahead forecasts (``bpp.forecast`` gbm and
   naive_day, from the 28 days before), scored on actuals: regret = objective on actuals of the plan
   made on forecasts − that of the plan made on actuals; plus carbon-threshold breaches on actuals.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import highspy
import numpy as np

from bpp.baselines import genetic, greedy_best_window, run_at_release
from bpp.domain import Battery, Instance, Site, SolverSettings
from bpp.forecast import forecast_series
from bpp.plan import Plan, evaluate
from bpp.scheduler import plan_violations, solve, verify_plan
from bpp.workload import MixSettings, job_mix, synthetic_solar_kw
from grid.signals import SLOT, SLOTS_PER_DAY, load_region

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
OUT = ROOT / "bench" / "results" / "scheduler.json"
SITES = {"DC-North": "GB", "DC-Iberia": "ES", "DC-Nordic": "NO"}
HORIZON = 96
HISTORY_DAYS = 28


def _signals(start: datetime, regions: set[str]) -> dict[str, Any]:
    return {r: load_region(r, start, start + SLOT * HORIZON, SHARED / "grid") for r in regions}


def _forecasts(start: datetime, regions: set[str], model: str) -> dict[str, Any]:
    out = {}
    for r in regions:
        history = load_region(r, start - SLOT * (HISTORY_DAYS * SLOTS_PER_DAY), start, SHARED / "grid")
        out[r] = forecast_series(history, HORIZON, model)
    return out


def build_instance(
    start: datetime,
    n_jobs: int,
    seed: int,
    carbon_for_thresholds: dict[str, np.ndarray],
    actual: dict[str, Any],
) -> Instance:
    ids = list(SITES)
    jobs = job_mix(
        n_jobs,
        HORIZON,
        ids,
        [3.0, 2.0, 1.0],
        jobs_dir=SHARED / "jobs",
        seed=seed,
        home_carbon_g_per_kwh={s: carbon_for_thresholds[r] for s, r in SITES.items()},
        settings=MixSettings(),
    )
    price = {r: s.price_gbp_per_mwh for r, s in actual.items()}
    carbon = {r: s.carbon_g_per_kwh for r, s in actual.items()}
    probe = Instance(
        start,
        HORIZON,
        tuple(Site.build(s, r, HORIZON, capacity_kw=1e12) for s, r in SITES.items()),
        tuple(jobs),
        price,
        carbon,
    )
    load = run_at_release(probe).site_load_kw(probe)
    sites = []
    for k, (sid, region) in enumerate(SITES.items()):
        mean, peak = float(load[k].mean()), float(load[k].max())
        base = 0.5 * mean
        battery = solar = None
        solar_cap = 0.0
        if sid == "DC-North":
            battery = Battery(
                energy_kwh=2 * 0.5 * mean,
                charge_power_kw=0.5 * mean,
                discharge_power_kw=0.5 * mean,
                round_trip_efficiency=0.9,
                degradation_gbp_per_mwh=8.0,
            )
        if sid == "DC-Iberia":
            solar_cap = 0.3 * mean
            solar = synthetic_solar_kw(start, HORIZON, solar_cap, latitude_deg=40.4, longitude_deg=-3.7)
        sites.append(
            Site.build(
                sid,
                region,
                HORIZON,
                capacity_kw=base + 1.1 * peak,
                baseline_kw=base,
                solar_kw=solar if solar is not None else 0.0,
                solar_capacity_kw=solar_cap,
                battery=battery,
            )
        )
    return Instance(
        start,
        HORIZON,
        tuple(sites),
        tuple(jobs),
        price,
        carbon,
        solver=SolverSettings(time_limit_s=120.0, mip_rel_gap=1e-6),
    )


def _scores(inst: Instance, plan: Plan) -> dict[str, Any]:
    m = evaluate(inst, plan)
    return {
        "objective": round(m.objective, 4),
        "energy_cost_gbp": round(m.energy_cost_gbp, 4),
        "total_cost_gbp": round(m.total_cost_gbp, 4),
        "carbon_kg": round(m.carbon_kg, 3),
        "migration_cost_gbp": round(m.migration_cost_gbp, 4),
        "grid_energy_mwh": round(m.grid_energy_mwh, 4),
    }


def _run_policies(inst: Instance, ga_generations: int) -> dict[str, tuple[Plan, float]]:
    out: dict[str, tuple[Plan, float]] = {}
    t0 = time.perf_counter()
    plan = solve(inst, verify=False)
    out["ctss"] = (plan, time.perf_counter() - t0)
    verify_plan(inst, plan)
    for name, fn in (
        ("run_at_release", run_at_release),
        ("greedy_best_window", greedy_best_window),
        ("genetic", functools.partial(genetic, generations=ga_generations)),
    ):
        t0 = time.perf_counter()
        p = fn(inst)
        out[name] = (p, time.perf_counter() - t0)
    return out


def section_solve_time(start: datetime, sizes: list[int], repeats: int, ga_generations: int) -> list[dict[str, Any]]:
    actual = _signals(start, set(SITES.values()))
    carbon = {r: s.carbon_g_per_kwh for r, s in actual.items()}
    rows = []
    for n in sizes:
        inst = build_instance(start, n, seed=11, carbon_for_thresholds=carbon, actual=actual)
        times, highs, builds = [], [], []
        plan = None
        for _ in range(repeats if n <= 1000 else 1):
            t0 = time.perf_counter()
            plan = solve(inst, verify=False)
            times.append(time.perf_counter() - t0)
            highs.append(plan.solve_time_s)
            builds.append(plan.build_time_s)
        assert plan is not None
        verify_plan(inst, plan)
        pols = _run_policies(inst, ga_generations)
        rows.append(
            {
                "n_jobs": n,
                "n_jobs_movable": sum(j.movable for j in inst.jobs),
                "n_jobs_preemptible": sum(j.preemptible for j in inst.jobs),
                "n_slots": HORIZON,
                "n_regions": len(set(SITES.values())),
                "ctss_total_s_median": round(statistics.median(times), 4),
                "ctss_total_s_all": [round(x, 4) for x in times],
                "ctss_build_s_median": round(statistics.median(builds), 4),
                "ctss_highs_s_median": round(statistics.median(highs), 4),
                "status": plan.status,
                "mip_gap": plan.mip_gap,
                "n_columns": plan.n_columns,
                "n_rows": plan.n_rows,
                "n_binaries": plan.n_binaries,
                "ctss_objective": round(evaluate(inst, plan).objective, 4),
                "baselines_s": {k: round(v[1], 4) for k, v in pols.items() if k != "ctss"},
                "objectives": {k: round(evaluate(inst, v[0]).objective, 4) for k, v in pols.items()},
                "baseline_violations": {k: len(v[0].violations) for k, v in pols.items() if k != "ctss"},
            }
        )
        print(
            f"  solve_time n={n}: {rows[-1]['ctss_total_s_median']} s ({plan.status}, gap {plan.mip_gap:.2e})",
            file=sys.stderr,
        )
    return rows


def section_quality(
    dates: list[datetime], n_jobs: int, ga_generations: int, forecast_models: list[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    quality, regret = [], []
    for i, start in enumerate(dates):
        regions = set(SITES.values())
        actual = _signals(start, regions)
        fcs = {m: _forecasts(start, regions, m) for m in forecast_models}
        # thresholds drawn so every job is feasible under actuals and every forecast
        carbon_thr = {
            r: np.max([actual[r].carbon_g_per_kwh] + [fcs[m][r].carbon_g_per_kwh for m in fcs], axis=0) for r in regions
        }
        inst = build_instance(start, n_jobs, seed=100 + i, carbon_for_thresholds=carbon_thr, actual=actual)
        pols = _run_policies(inst, ga_generations)
        row: dict[str, Any] = {"date": start.date().isoformat(), "n_jobs": n_jobs, "policies": {}}
        for name, (plan, secs) in pols.items():
            v = plan_violations(inst, plan)
            row["policies"][name] = {
                **_scores(inst, plan),
                "run_s": round(secs, 4),
                "n_violations": len(v),
                "violations": v[:5],
            }
        ctss = pols["ctss"][0]
        row["ctss_mip_gap"] = ctss.mip_gap
        row["ctss_status"] = ctss.status
        for name in ("run_at_release", "greedy_best_window", "genetic"):
            b = row["policies"][name]
            row["policies"][name]["ctss_objective_saving_pct"] = round(
                100 * (b["objective"] - row["policies"]["ctss"]["objective"]) / abs(b["objective"]), 3
            )
        quality.append(row)
        print(
            f"  quality {row['date']}: "
            + ", ".join(f"{k} {v['objective']:.2f} ({v['n_violations']} viol)" for k, v in row["policies"].items()),
            file=sys.stderr,
        )
        # forecasts: plan on forecasts, score on actuals
        perfect = {name: evaluate(inst, p).objective for name, (p, _) in pols.items()}
        for m, fc in fcs.items():
            finst = replace(
                inst,
                price_gbp_per_mwh={r: s.price_gbp_per_mwh for r, s in fc.items()},
                carbon_g_per_kwh={r: s.carbon_g_per_kwh for r, s in fc.items()},
            )
            fpols = _run_policies(finst, ga_generations)
            r_row: dict[str, Any] = {"date": row["date"], "forecast_model": m, "policies": {}}
            for name, (plan, _secs) in fpols.items():
                on_actual = evaluate(inst, plan)
                breaches = [v for v in plan_violations(inst, plan) if "threshold" in v]
                r_row["policies"][name] = {
                    **_scores(inst, plan),
                    "objective_planned_on_forecast": round(evaluate(finst, plan).objective, 4),
                    "regret": round(on_actual.objective - perfect[name], 4),
                    "regret_pct": round(100 * (on_actual.objective - perfect[name]) / abs(perfect[name]), 3),
                    "threshold_breaches_on_actuals": len(breaches),
                    "n_violations_on_forecast": len(plan.violations),
                }
            regret.append(r_row)
            print(
                f"  forecast {row['date']} {m}: "
                + ", ".join(f"{k} regret {v['regret']:.2f}" for k, v in r_row["policies"].items()),
                file=sys.stderr,
            )
    return quality, regret


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="100,1000,10000")
    ap.add_argument("--dates", default="2023-02-15,2023-05-17,2023-08-16,2023-11-15")
    ap.add_argument("--timing-date", default="2023-06-14")
    ap.add_argument("--quality-jobs", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ga-generations", type=int, default=150)
    ap.add_argument("--forecast-models", default="gbm,naive_day")
    ap.add_argument("--quick", action="store_true", help="small sizes, one date (a smoke run)")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    if not (SHARED / "grid").is_dir():
        raise SystemExit("../shared/data is absent: this benchmark needs the real 2023 data")
    sizes = [int(x) for x in args.sizes.split(",")]
    dates = [datetime.fromisoformat(d).replace(tzinfo=UTC) for d in args.dates.split(",")]
    models = [m for m in args.forecast_models.split(",") if m]
    if args.quick:
        sizes, dates, args.repeats, args.ga_generations, args.quality_jobs = (
            [100, 1000],
            dates[:1],
            2,
            30,
            300,
        )
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    timing_start = datetime.fromisoformat(args.timing_date).replace(tzinfo=UTC)
    solve_rows = section_solve_time(timing_start, sizes, args.repeats, args.ga_generations)
    quality, regret = section_quality(dates, args.quality_jobs, args.ga_generations, models)
    result = {
        "benchmark": "bpp CTSS scheduler",
        "generated_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "highs": f"{highspy.Highs().version()}",
            "numpy": np.__version__,
            "highs_threads": 1,
        },
        "setup": {
            "horizon_slots": HORIZON,
            "sites": SITES,
            "price_note": "GB market index for every region (no ES/NO price data in ../shared)",
            "jobs": "Alibaba GPU 2023 trace via bpp.workload.job_mix (BE→batch, LS→critical)",
            "timing_date": args.timing_date,
            "quality_dates": [d.date().isoformat() for d in dates],
            "ga_generations": args.ga_generations,
            "objective": "cost_x_carbon (price × carbon / 150 g/kWh)",
            "max_deferral_min": 240,
        },
        "solve_time": solve_rows,
        "quality": quality,
        "forecast_regret": regret,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    out = Path(args.out)
    if args.quick and out == OUT:  # a smoke run never overwrites the recorded results
        out = OUT.with_name("scheduler_quick.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
