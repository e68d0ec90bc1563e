"""Storage benchmark: flexmarket's storage model against FlexMeasures' ``device_scheduler`` on the same
instances, in one run; prints JSON and writes ``bench/results/storage.json``.

    .venv/bin/python bench/storage.py [--repeats 5] [--out bench/results/storage.json]

Instances (real GB 2023 market-index prices from ``../shared/data/grid/``, half-hourly: averaged per
hour for hourly slots, held for both quarter hours for 15-minute slots; export earns the import price
less £10/MWh; a site load of its own behind the meter):

1. ``1_battery_24h_hourly``: one battery, 24 hourly slots;
2. ``1_battery_48h_15min``: one battery, 192 quarter-hour slots;
3. ``10_batteries_48h_15min_shared``: ten different batteries behind one connection (import and export
   limits shared), 192 quarter-hour slots;
4. ``negative_prices_day``: one battery on 2023-09-24, the 2023 day with the most negative half hours.

Both solvers get every battery field the two models share: power limits, charge and discharge
efficiencies, SoC bounds, the initial and terminal SoC, degradation per MWh of throughput (in FlexMeasures
a device-level flow commitment priced ± the degradation), the connection's import and export limits and
both prices (an EMS-level flow commitment: upwards deviations at the import price, downwards at the export
price). Self-discharge is left at 0 because FlexMeasures loses stock within a step as well (its
``loss_coefficients``), a different model. Both run HiGHS with the relative MIP gap set to 1e-7
(FlexMeasures' ``FLEXMEASURES_LP_SOLVER_OPTIONS``), on one thread.

The benchmark trusts neither solver: it recomputes each objective from the returned schedule (import cost
− export revenue + degradation) and checks every schedule itself against the physical limits (power, one
direction per slot, SoC recomputed from the flows and its bounds, terminal level, connection limits).
Goals: equal objectives (±1e-6 relative), 0 violations, flexmarket ≥ 10× faster (median wall time of
``--repeats`` solves, model building included on both sides).

FlexMeasures is optional (``pip install .[storage-bench]``). It pins its own versions of libraries this
project uses (redis < 8, for one), so install it into a separate venv that sees this one's packages, and
run the benchmark with that venv's python; without it the FlexMeasures column is skipped with a message.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import highspy
import numpy as np

from bpp.domain import Battery, SolverSettings
from bpp.storage import Connection, StorageProblem, solve_storage
from grid.signals import load_region

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
OUT = ROOT / "bench" / "results" / "storage.json"
MIP_REL_GAP = 1e-7
EXPORT_SPREAD_GBP_PER_MWH = 10.0
TOL_KW = 1e-4


# -- instances ------------------------------------------------------------------------------------


def _prices(day: datetime, half_hours: int, slot_minutes: int) -> np.ndarray:
    """GB market-index prices from ``day`` 00:00 UTC at ``slot_minutes`` resolution."""
    series = load_region("GB", day, day + timedelta(minutes=30 * half_hours), SHARED / "grid")
    p = np.asarray(series.price_gbp_per_mwh, dtype=float)
    if slot_minutes == 60:
        return p.reshape(-1, 2).mean(axis=1)
    if slot_minutes == 15:
        return np.repeat(p, 2)
    return p


def _site_load_kw(n_slots: int, slot_minutes: int, mean_kw: float) -> np.ndarray:
    """A deterministic daily load shape: ±30 % around ``mean_kw``, peaking at 18:00."""
    hours = np.arange(n_slots) * slot_minutes / 60.0
    return mean_kw * (1.0 + 0.3 * np.cos((hours - 18.0) / 24.0 * 2 * np.pi))


def _problem(
    batteries: tuple[Battery, ...],
    day: datetime,
    half_hours: int,
    slot_minutes: int,
    *,
    load_kw: float,
    conn: Connection,
) -> StorageProblem:
    price = _prices(day, half_hours, slot_minutes)
    return StorageProblem(
        batteries,
        price,
        export_price_gbp_per_mwh=price - EXPORT_SPREAD_GBP_PER_MWH,
        site_load_kw=_site_load_kw(len(price), slot_minutes, load_kw),
        connection=conn,
        slot_minutes=slot_minutes,
        solver=SolverSettings(mip_rel_gap=MIP_REL_GAP, threads=1),
    )


ONE = Battery(
    2000.0,
    1000.0,
    1000.0,
    charge_efficiency=0.95,
    discharge_efficiency=0.93,
    soc_min_fraction=0.1,
    soc_max_fraction=0.95,
    initial_soc_fraction=0.5,
    degradation_gbp_per_mwh=4.0,
)


def _fleet(n: int) -> tuple[Battery, ...]:
    rng = np.random.default_rng(7)
    out = []
    for _ in range(n):
        energy = float(rng.choice([500.0, 1000.0, 1500.0, 2000.0]))
        out.append(
            replace(
                ONE,
                energy_kwh=energy,
                charge_power_kw=energy * float(rng.choice([0.25, 0.5, 1.0])),
                discharge_power_kw=energy * float(rng.choice([0.25, 0.5, 1.0])),
                charge_efficiency=float(rng.uniform(0.9, 0.97)),
                discharge_efficiency=float(rng.uniform(0.9, 0.97)),
                initial_soc_fraction=float(rng.uniform(0.2, 0.8)),
                degradation_gbp_per_mwh=float(rng.uniform(1.0, 8.0)),
            )
        )
    return tuple(out)


def instances() -> dict[str, StorageProblem]:
    june, negative = datetime(2023, 6, 14, tzinfo=UTC), datetime(2023, 9, 24, tzinfo=UTC)
    site = Connection(import_limit_kw=2500.0, export_limit_kw=1000.0)
    return {
        "1_battery_24h_hourly": _problem((ONE,), june, 48, 60, load_kw=600.0, conn=site),
        "1_battery_48h_15min": _problem((ONE,), june, 96, 15, load_kw=600.0, conn=site),
        "10_batteries_48h_15min_shared": _problem(
            _fleet(10), june, 96, 15, load_kw=2000.0, conn=Connection(import_limit_kw=6000.0, export_limit_kw=3000.0)
        ),
        "negative_prices_day": _problem((ONE,), negative, 48, 30, load_kw=600.0, conn=site),
    }


# -- the benchmark's own objective and checks -----------------------------------------------------


def objective_gbp(problem: StorageProblem, charge_kw: np.ndarray, discharge_kw: np.ndarray) -> float:
    """Import cost − export revenue at the meter's net flow, plus degradation on throughput (£)."""
    h = problem.slot_minutes / 60.0
    net = problem.load_kw + charge_kw.sum(axis=0) - discharge_kw.sum(axis=0)
    export_price = problem.export_price_gbp_per_mwh
    assert export_price is not None
    energy = float(
        np.sum(problem.import_price_gbp_per_mwh * np.maximum(net, 0.0) - export_price * np.maximum(-net, 0.0))
    )
    wear = sum(
        b.degradation_gbp_per_mwh * float(charge_kw[k].sum() + discharge_kw[k].sum())
        for k, b in enumerate(problem.batteries)
    )
    return (energy + wear) * h / 1000.0


def violations(problem: StorageProblem, charge_kw: np.ndarray, discharge_kw: np.ndarray) -> list[str]:
    """Every physical limit a schedule breaks, recomputed here from the flows alone."""
    h = problem.slot_minutes / 60.0
    out: list[str] = []
    for k, b in enumerate(problem.batteries):
        c, d = charge_kw[k], discharge_kw[k]
        if c.min() < -TOL_KW or c.max() > b.charge_power_kw + TOL_KW:
            out.append(f"battery {k}: charge power out of range")
        if d.min() < -TOL_KW or d.max() > b.discharge_power_kw + TOL_KW:
            out.append(f"battery {k}: discharge power out of range")
        if np.any(np.minimum(c, d) > TOL_KW):
            out.append(f"battery {k}: charges and discharges in one slot")
        soc, level = np.empty(len(c)), b.energy_kwh * b.initial_soc_fraction
        for t in range(len(c)):
            level += b.eta_charge * c[t] * h - d[t] * h / b.eta_discharge
            soc[t] = level
        tol_kwh = 1e-6 * b.energy_kwh
        if (
            soc.min() < b.soc_min_fraction * b.energy_kwh - tol_kwh
            or soc.max() > b.soc_max_fraction * b.energy_kwh + tol_kwh
        ):
            out.append(f"battery {k}: SoC out of bounds")
        if soc[-1] < b.terminal_soc_kwh - tol_kwh:
            out.append(f"battery {k}: ends below its terminal SoC")
    net = problem.load_kw + charge_kw.sum(axis=0) - discharge_kw.sum(axis=0)
    conn = problem.connection
    if conn.import_limit_kw is not None and net.max() > conn.import_limit_kw + TOL_KW:
        out.append("connection: import above its limit")
    if -net.min() > conn.export_limit_kw + TOL_KW:
        out.append("connection: export above its limit")
    return out


# -- the two solvers ----------------------------------------------------------------------------


@dataclass
class Run:
    charge_kw: np.ndarray
    discharge_kw: np.ndarray
    seconds: list[float]
    solver_objective_gbp: float
    extra: dict[str, Any]


def run_flexmarket(problem: StorageProblem, repeats: int) -> Run:
    times, schedule = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        schedule = solve_storage(problem)
        times.append(time.perf_counter() - t0)
    assert schedule is not None
    extra = {"status": schedule.status, "mip_gap": schedule.mip_gap, "n_binaries": schedule.n_binaries}
    return Run(schedule.charge_kw, schedule.discharge_kw, times, schedule.objective_gbp, extra)


def flexmeasures_runner() -> Callable[[StorageProblem, int], Run] | None:
    """FlexMeasures' device_scheduler as a runner, or None (with a message) when it is not installed."""
    try:
        import pandas as pd
        from flask import Flask
        from flexmeasures import __version__ as fm_version
        from flexmeasures.data.models.planning import FlowCommitment
        from flexmeasures.data.models.planning.linear_optimization import device_scheduler
    except ImportError as exc:
        print(f"flexmeasures is not importable ({exc}); skipping the FlexMeasures column", file=sys.stderr)
        return None
    app = Flask("storage-bench")
    app.config.update(
        LOGGING_LEVEL="INFO",
        FLEXMEASURES_LP_SOLVER=os.environ.get("FLEXMEASURES_LP_SOLVER", "highspy"),
        FLEXMEASURES_LP_SOLVER_OPTIONS={"mip_rel_gap": MIP_REL_GAP},
    )

    def inputs(problem: StorageProblem) -> dict[str, Any]:
        """The problem as device_scheduler's arguments. Stock is in kW·slots (its flows add per step)."""
        n, h = problem.n_slots, problem.slot_minutes / 60.0
        index = pd.date_range("2023-01-01", periods=n, freq=f"{problem.slot_minutes}min", tz="UTC")
        devices, initial = [], []

        def frame(columns: dict[str, Any]) -> pd.DataFrame:
            """A device's constraints with every column device_scheduler reads (NaN = none)."""
            names = ("min", "max", "equals", "derivative min", "derivative max", "derivative equals")
            return pd.DataFrame({**dict.fromkeys(names, np.nan), **columns}, index=index)

        for b in problem.batteries:
            e0 = b.initial_soc_kwh
            lo = np.full(n, b.soc_min_kwh)
            lo[-1] = max(lo[-1], b.terminal_soc_kwh)
            columns = {
                "min": (lo - e0) / h,
                "max": (np.full(n, b.soc_max_kwh) - e0) / h,
                "derivative min": -b.discharge_power_kw,
                "derivative max": b.charge_power_kw,
                "derivative up efficiency": b.eta_charge,
                "derivative down efficiency": b.eta_discharge,
            }
            devices.append(frame(columns))
            initial.append(e0 / h)
        devices.append(frame({"derivative equals": problem.load_kw}))  # the site's own load, fixed
        initial.append(0.0)
        conn = problem.connection
        ems = pd.DataFrame(
            {
                "derivative max": np.inf if conn.import_limit_kw is None else conn.import_limit_kw,
                "derivative min": -conn.export_limit_kw,
            },
            index=index,
        )
        per_kw_slot = h / 1000.0
        assert problem.export_price_gbp_per_mwh is not None
        commitments = [
            FlowCommitment(
                name="net energy",
                index=index,
                quantity=0.0,
                upwards_deviation_price=pd.Series(problem.import_price_gbp_per_mwh * per_kw_slot, index=index),
                downwards_deviation_price=pd.Series(problem.export_price_gbp_per_mwh * per_kw_slot, index=index),
            )
        ]
        for k, b in enumerate(problem.batteries):
            wear = b.degradation_gbp_per_mwh * per_kw_slot
            commitments.append(
                FlowCommitment(
                    name=f"wear {k}",
                    index=index,
                    device=k,
                    quantity=0.0,
                    upwards_deviation_price=wear,
                    downwards_deviation_price=-wear,
                )
            )
        return {
            "device_constraints": devices,
            "ems_constraints": ems,
            "commitments": commitments,
            "initial_stock": initial,
        }

    def run(problem: StorageProblem, repeats: int) -> Run:
        times: list[float] = []
        with app.app_context():
            for _ in range(repeats):
                args = inputs(problem)
                t0 = time.perf_counter()
                planned, costs, results, _model = device_scheduler(**args)
                times.append(time.perf_counter() - t0)
        power = np.array([np.asarray(p, dtype=float) for p in planned[: len(problem.batteries)]])
        status = str(results.solver.termination_condition)
        extra = {"status": status, "version": fm_version, "backend": app.config["FLEXMEASURES_LP_SOLVER"]}
        return Run(np.maximum(power, 0.0), np.maximum(-power, 0.0), times, float(costs), extra)

    return run


# -- main -----------------------------------------------------------------------------------------


def _summary(problem: StorageProblem, run: Run) -> dict[str, Any]:
    return {
        "objective_gbp": round(objective_gbp(problem, run.charge_kw, run.discharge_kw), 6),
        "solver_objective_gbp": round(run.solver_objective_gbp, 6),
        "median_s": round(statistics.median(run.seconds), 5),
        "violations": violations(problem, run.charge_kw, run.discharge_kw),
        **run.extra,
    }


def compare(
    name: str, problem: StorageProblem, repeats: int, fm: Callable[[StorageProblem, int], Run] | None
) -> dict[str, Any]:
    ours = _summary(problem, run_flexmarket(problem, repeats))
    row: dict[str, Any] = {
        "instance": name,
        "n_batteries": len(problem.batteries),
        "n_slots": problem.n_slots,
        "slot_minutes": problem.slot_minutes,
        "negative_price_slots": int((problem.import_price_gbp_per_mwh < 0).sum()),
        "flexmarket": ours,
    }
    if fm is not None:
        theirs = _summary(problem, fm(problem, repeats))
        rel = abs(ours["objective_gbp"] - theirs["objective_gbp"]) / max(abs(theirs["objective_gbp"]), 1e-9)
        speedup = theirs["median_s"] / max(ours["median_s"], 1e-9)
        row["flexmeasures"] = theirs
        row["objective_rel_diff"] = rel
        row["speedup"] = round(speedup, 1)
        row["goals_met"] = {
            "equal_objective_1e-6": rel <= 1e-6,
            "no_violations": not ours["violations"] and not theirs["violations"],
            "at_least_10x_faster": speedup >= 10.0,
        }
    print(json.dumps(row), file=sys.stderr)
    return row


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", default="", help="comma-separated instance names (default: all)")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    if not (SHARED / "grid").is_dir():
        raise SystemExit("../shared/data is absent: this benchmark needs the real 2023 data")
    fm = flexmeasures_runner()
    chosen = {n: p for n, p in instances().items() if not args.only or n in args.only.split(",")}
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    rows = [compare(name, problem, args.repeats, fm) for name, problem in chosen.items()]
    result = {
        "benchmark": "storage model: flexmarket vs FlexMeasures device_scheduler",
        "generated_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "highs": f"{highspy.Highs().version()}",
            "numpy": np.__version__,
            "threads": 1,
        },
        "setup": {
            "mip_rel_gap": MIP_REL_GAP,
            "repeats": args.repeats,
            "prices": "GB market index 2023 (../shared/data/grid); export = import − £10/MWh",
            "flexmeasures": "included" if fm is not None else "not installed: column skipped",
        },
        "instances": rows,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
