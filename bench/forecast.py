"""Forecast benchmark: rolling-origin MAPE of the GBM against the seasonal-naive baselines.

For each region, on held-out 2023 months, forecasts 48 h (96 slots) from origins every 23.5 h (so the
origins cycle through every time of day), each model seeing only the data before its origin. Prints
JSON and writes ``bench/results/forecast.json``.

    .venv/bin/python bench/forecast.py [--months 3,6,9,12] [--step 47] [--regions GB,ES,NO,US-CAL-CISO]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bpp import forecast as fc
from grid import signals

RESULTS = Path(__file__).resolve().parent / "results" / "forecast.json"
YEAR = 2023


def _compact(signal_result: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of one region/signal: per model MAPE, sMAPE, MAE, time; ratios."""
    overall = signal_result["overall"]
    models = {
        name: {
            k: m.get(k)
            for k in (
                "mape_pct",
                "mape_pct_abs_actual_ge_floor",
                "smape_pct",
                "mae",
                "mape_pct_by_day_ahead",
                "seconds_per_forecast_mean",
            )
            if k in m
        }
        for name, m in overall["models"].items()
    }
    by_month = {
        str(month): {name: round(m["mape_pct"], 2) for name, m in summary["models"].items() if m["mape_pct"]}
        for month, summary in signal_result["by_month"].items()
    }
    return {
        "unit": signal_result["unit"],
        "n_origins": signal_result["n_origins"],
        "n_points": next(iter(overall["models"].values()))["n_points"],
        "mape_floor": signal_result["mape_floor"],
        "models": models,
        "ratio_vs_baseline": overall.get("ratio_vs_baseline"),
        "mape_pct_by_month": by_month,
    }


def run(
    months: list[int], step: int, regions: list[str], data_dir: Path, short_history_days: int | None = 28
) -> dict[str, Any]:
    t_start = time.perf_counter()
    out: dict[str, Any] = {
        "generated_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "data_dir": str(data_dir),
        "year": YEAR,
        "held_out_months": months,
        "horizon_slots": 96,
        "origin_step_slots": step,
        "baseline": fc.BASELINE,
        "gbm_config": asdict(fc.GBMConfig()),
        "notes": [
            "Rolling origin: at each origin every model sees only the slots before it; the GBM is refit"
            " per origin on the preceding train_days.",
            "Gap-filled actuals (NESO 91-slot gap, bad zeros, empty market-index prices) are not scored.",
            "Non-GB regions carry the GB market-index price (no other price data), so price is evaluated for GB only.",
            "MAPE is unstable for prices near zero or negative: read sMAPE and MAE (GBP/MWh) alongside;"
            " mape_pct_abs_actual_ge_floor scores only |price| >= mape_floor.",
            "neso = NESO's published carbon forecast on the same slots: issued closer to real time than"
            " 24-48 h and with weather inputs, so an optimistic reference, not a like-for-like model.",
        ],
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "regions": {},
        "detail": {},
    }
    start, end = datetime(YEAR, 1, 1, tzinfo=UTC), datetime(YEAR + 1, 1, 1, tzinfo=UTC)
    for region in regions:
        series = signals.load_region(region, start, end, data_dir)
        sigs = ("price", "carbon") if region == signals.GB else ("carbon",)
        t0 = time.perf_counter()
        result = fc.evaluate(series, months, 96, signals=sigs, origin_step_slots=step)
        result["seconds"] = time.perf_counter() - t0
        out["detail"][region] = result
        out["regions"][region] = {sig: _compact(result["signals"][sig]) for sig in sigs}
        print(f"{region}: {result['seconds']:.1f} s", file=sys.stderr, flush=True)
    if short_history_days and signals.GB in regions:
        # bench/scheduler.py and bpp.agent forecast from 28 days of history: how much does that cost?
        series = signals.load_region(signals.GB, start, end, data_dir)
        result = fc.evaluate(
            series, months, 96, models=("naive_day", "gbm"), origin_step_slots=step, history_days=short_history_days
        )
        out["gb_short_history"] = {
            "history_days": short_history_days,
            **{sig: _compact(result["signals"][sig]) for sig in ("price", "carbon")},
        }
    out["total_seconds"] = time.perf_counter() - t_start
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--months", default="3,6,9,12")
    parser.add_argument("--step", type=int, default=47, help="slots between forecast origins")
    parser.add_argument("--regions", default=",".join(signals.REGIONS))
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--short-history-days", type=int, default=28, help="0 to skip the GB short-history run")
    args = parser.parse_args(argv)

    data_dir = args.data_dir or signals.default_data_dir()
    months = [int(m) for m in args.months.split(",")]
    result = run(months, args.step, args.regions.split(","), data_dir, args.short_history_days or None)
    summary = {k: v for k, v in result.items() if k != "detail"}
    print(json.dumps(summary, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
