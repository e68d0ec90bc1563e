"""Day-ahead and two-day-ahead forecasts of price and carbon per region, from history only.

Pure (numpy + scikit-learn). The scheduler plans on these forecasts; evaluation scores them against
actuals with rolling origins, so a model never sees data at or after the slot it forecasts from.

Models
- ``naive_day`` — seasonal naive, period one day: each future slot repeats the most recent *known*
  value at the same time of day (for leads beyond 24 h that is still the last observed day, since
  "yesterday" of day two is not known at the origin).
- ``naive_week`` — seasonal naive, period one week: the same slot seven days earlier.
- ``gbm`` — scikit-learn ``HistGradientBoostingRegressor``, one "direct" model for all leads, refit
  at every call on the last ``train_days`` of the history. Each training row is an (origin, lead)
  pair; features are the lead, local time of day and day of week of the target (the region's civil
  time, because demand follows clocks — the data itself stays in UTC), and lag statistics known at
  the origin (same slot on the last known day, the day before, a week before, the 7-day same-slot
  mean, the last value, and the 24 h mean and spread). Lags and the target are taken relative to the
  24 h mean, so the trees learn shapes rather than levels and carry over between seasons.

``BASELINE`` is the seasonal naive the stronger model is judged against; see its comment for why.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from threadpoolctl import threadpool_limits

from grid.signals import (
    SLOT_MINUTES,
    SLOTS_PER_DAY,
    SLOTS_PER_WEEK,
    SignalSeries,
    epoch_slot,
    slot_to_datetime,
)

MODELS = ("naive_day", "naive_week", "gbm")
#: The comparison baseline. Measured by bench/forecast.py (2023, months 3/6/9/12, 48 h ahead) the daily
#: seasonal naive has lower MAE and sMAPE than the weekly one everywhere (GB carbon MAE 44.6 vs 59.1
#: g/kWh, GB price 24.8 vs 26.6 £/MWh, ES, CAISO) and lower MAPE everywhere but Norway's near-zero
#: carbon: wind and sun drive both signals and persist over days, while a week-old value belongs to
#: another weather regime. Judging the GBM against the stronger naive is the honest comparison.
BASELINE = "naive_day"
SIGNALS = ("price", "carbon")
SIGNAL_UNITS = {"price": "GBP/MWh", "carbon": "gCO2/kWh"}

#: civil time zone per region, for the time-of-day / day-of-week features only
REGION_TZ = {
    "GB": "Europe/London",
    "ES": "Europe/Madrid",
    "NO": "Europe/Oslo",
    "US-CAL-CISO": "America/Los_Angeles",
}
MAX_HORIZON_SLOTS = SLOTS_PER_WEEK
#: the GBM needs a week of lags before its first training origin and some origins to learn from
GBM_MIN_HISTORY_SLOTS = SLOTS_PER_WEEK + 2 * SLOTS_PER_DAY


@dataclass(frozen=True)
class GBMConfig:
    """Training knobs. Defaults keep one fit well under a second on two cores (measured in the
    benchmark) so the scheduler's regret experiment can refit per origin."""

    train_days: int = 90
    origin_stride_slots: int = 24  # two training origins a day: ~17k (origin, lead) rows for 90 days
    max_iter: int = 80
    learning_rate: float = 0.08
    max_leaf_nodes: int = 15
    min_samples_leaf: int = 40
    loss: str = "absolute_error"  # robust to price spikes; MAE is minimised by the median
    random_state: int = 0
    #: fit carbon in log space: errors become relative (what MAPE scores) and forecasts stay positive
    log_carbon: bool = True
    #: one OpenMP thread: on two shared cores a second thread contends with the scheduler and can
    #: make a fit 5-10x slower; one thread is steady
    n_threads: int = 1


# --------------------------------------------------------------------------------------------------
# Features


@lru_cache(maxsize=8192)
def _local_calendar_day(region: str, epoch_day: int) -> tuple[np.ndarray, np.ndarray]:
    """Local half-hour of day (wall clock, 0..47) and local weekday for the 48 slots of one UTC day."""
    tz = ZoneInfo(REGION_TZ.get(region, "UTC"))
    first = epoch_day * SLOTS_PER_DAY
    slot_of_day = np.empty(SLOTS_PER_DAY, dtype=np.int16)
    weekday = np.empty(SLOTS_PER_DAY, dtype=np.int16)
    for k in range(SLOTS_PER_DAY):
        local = slot_to_datetime(first + k).astimezone(tz)
        slot_of_day[k] = (local.hour * 60 + local.minute) // SLOT_MINUTES
        weekday[k] = local.weekday()
    return slot_of_day, weekday


def _local_calendar(region: str, first_epoch_slot: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Local calendar features for ``n`` consecutive UTC slots, built from cached whole UTC days
    (zoneinfo lookups per slot would dominate a forecast call otherwise)."""
    d0 = first_epoch_slot // SLOTS_PER_DAY
    d1 = (first_epoch_slot + n - 1) // SLOTS_PER_DAY
    days = [_local_calendar_day(region, d) for d in range(d0, d1 + 1)]
    off = first_epoch_slot - d0 * SLOTS_PER_DAY
    slot_of_day = np.concatenate([d[0] for d in days])[off : off + n]
    weekday = np.concatenate([d[1] for d in days])[off : off + n]
    return slot_of_day, weekday


def _lag_features(
    y: np.ndarray,
    origins: np.ndarray,
    leads: np.ndarray,
    slot_of_day: np.ndarray,
    weekday: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Feature matrix and the level (24 h mean before the origin) for (origin, lead) pairs.

    ``origins[k]`` is the index of the first slot *not* known; the target is ``origins + leads - 1``.
    Every lag index is < origin by construction (checked), so no row can see its own future.
    """
    target = origins + leads - 1
    days_back = (leads + SLOTS_PER_DAY - 1) // SLOTS_PER_DAY  # ceil: last day whose same slot is known
    d1 = target - SLOTS_PER_DAY * days_back
    d2 = d1 - SLOTS_PER_DAY
    wk = target - SLOTS_PER_WEEK
    if not ((d1 < origins).all() and (wk < origins).all() and (origins >= SLOTS_PER_WEEK).all()):
        raise RuntimeError("lag feature would read at or after its origin, or before the history")

    csum = np.concatenate(([0.0], np.cumsum(y)))
    csum2 = np.concatenate(([0.0], np.cumsum(y * y)))

    level = (csum[origins] - csum[origins - SLOTS_PER_DAY]) / SLOTS_PER_DAY
    var = (csum2[origins] - csum2[origins - SLOTS_PER_DAY]) / SLOTS_PER_DAY - level**2
    spread = np.sqrt(np.maximum(var, 0.0))
    same_slot_week = np.mean([y[d1 - SLOTS_PER_DAY * j] for j in range(7)], axis=0)

    x = np.column_stack(
        [
            leads,
            slot_of_day[target],
            weekday[target],
            y[d1] - level,
            y[d2] - level,
            y[wk] - level,
            same_slot_week - level,
            y[origins - 1] - level,
            level,
            spread,
        ]
    ).astype(np.float64)
    return x, level


def _check(history: SignalSeries, horizon_slots: int, model: str, signal: str) -> np.ndarray:
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose from {MODELS}")
    if signal not in SIGNALS:
        raise ValueError(f"unknown signal {signal!r}; choose from {SIGNALS}")
    if not 1 <= horizon_slots <= MAX_HORIZON_SLOTS:
        raise ValueError(f"horizon_slots must be in 1..{MAX_HORIZON_SLOTS}, got {horizon_slots}")
    y = np.asarray(history.signal(signal), dtype=np.float64)
    need = {
        "naive_day": SLOTS_PER_DAY * math.ceil(horizon_slots / SLOTS_PER_DAY),
        "naive_week": SLOTS_PER_WEEK,
        "gbm": GBM_MIN_HISTORY_SLOTS,
    }[model]
    if len(y) < need:
        raise ValueError(f"model {model!r} needs at least {need} slots of history, got {len(y)}")
    return y


def seasonal_naive(y: np.ndarray, horizon_slots: int, period_slots: int) -> np.ndarray:
    """Repeat the last known value at the same phase of ``period_slots``: for lead h (1-based) the
    value ``period · ceil(h / period)`` slots before the target."""
    n = len(y)
    leads = np.arange(1, horizon_slots + 1)
    back = period_slots * ((leads + period_slots - 1) // period_slots)
    repeated: np.ndarray = y[n + leads - 1 - back].astype(np.float64)
    return repeated


def _fit_predict_gbm(
    y: np.ndarray, region: str, start_utc: datetime, horizon_slots: int, config: GBMConfig
) -> np.ndarray:
    # Lazy: scikit-learn takes ~1 s to import and only this model needs it, while every BPP process
    # imports this module (the agents' forecast signal providers) and most plan on actual signals.
    from sklearn.ensemble import HistGradientBoostingRegressor

    n = len(y)
    first_origin = max(SLOTS_PER_WEEK, n - config.train_days * SLOTS_PER_DAY)
    # Training origins step back from the forecast origin n, so they share its time of day (a model per
    # origin phase learns e.g. "midnight origin, lead 36 = noon tomorrow"); only targets < n are used.
    origins = np.arange(n - config.origin_stride_slots, first_origin - 1, -config.origin_stride_slots)
    leads = np.arange(1, horizon_slots + 1)
    o_grid, l_grid = np.meshgrid(origins, leads, indexing="ij")
    keep = o_grid + l_grid - 1 < n
    o_train, l_train = o_grid[keep], l_grid[keep]

    slot_of_day, weekday = _local_calendar(region, epoch_slot(start_utc), n + horizon_slots)
    x_train, level_train = _lag_features(y, o_train, l_train, slot_of_day, weekday)
    target_train = y[o_train + l_train - 1] - level_train

    gbm = HistGradientBoostingRegressor(
        loss=config.loss,
        learning_rate=config.learning_rate,
        max_iter=config.max_iter,
        max_leaf_nodes=config.max_leaf_nodes,
        min_samples_leaf=config.min_samples_leaf,
        early_stopping=False,  # deterministic, and no random validation split across time
        random_state=config.random_state,
    )
    x_pred, level_pred = _lag_features(y, np.full(horizon_slots, n), leads, slot_of_day, weekday)
    with threadpool_limits(limits=config.n_threads, user_api="openmp"):
        gbm.fit(x_train, target_train)
        predicted: np.ndarray = gbm.predict(x_pred) + level_pred
        return predicted


def forecast(
    history: SignalSeries,
    horizon_slots: int,
    model: str = "gbm",
    signal: str = "carbon",
    *,
    config: GBMConfig | None = None,
) -> np.ndarray:
    """Forecast ``signal`` ("price" £/MWh or "carbon" gCO2/kWh) for the ``horizon_slots`` slots
    starting at ``history.end_utc``, from ``history`` alone (every slot of it lies before the first
    forecast slot). Returns float64 of length ``horizon_slots``. Deterministic.

    History needed: ``naive_day`` a whole number of days covering the horizon, ``naive_week`` one
    week, ``gbm`` nine days (more is better: it trains on the last ``config.train_days``).
    Gap-filled slots in the history are used as if observed (they are the loader's best estimate).
    """
    y = _check(history, horizon_slots, model, signal)
    if model == "naive_day":
        return seasonal_naive(y, horizon_slots, SLOTS_PER_DAY)
    if model == "naive_week":
        return seasonal_naive(y, horizon_slots, SLOTS_PER_WEEK)
    config = config or GBMConfig()
    if signal == "carbon" and config.log_carbon and (y > 0).all():
        log_forecast = _fit_predict_gbm(np.log(y), history.region, history.start_utc, horizon_slots, config)
        carbon: np.ndarray = np.exp(log_forecast)
        return carbon
    return _fit_predict_gbm(y, history.region, history.start_utc, horizon_slots, config)


# --------------------------------------------------------------------------------------------------
# Evaluation


#: a diagnostic MAPE over actuals at least this far from zero, to show where raw MAPE's weight sits
MAPE_DIAGNOSTIC_FLOOR = {"price": 10.0}


def error_metrics(
    actual: np.ndarray, predicted: np.ndarray, mape_floor: float | None = None
) -> dict[str, float | int | None]:
    """MAPE as the issue asks, plus robust companions, because MAPE divides by the actual: GB prices
    reach zero and go negative (606 negative market-index slots in the file), where one slot's error
    explodes MAPE without the forecast being any worse in £. MAE (in the signal's unit) is stable and
    is what costs money; sMAPE is bounded (0–200 %) and scale-free, so regions compare. MAPE skips
    exact zeros (undefined) and counts them; with ``mape_floor`` a second MAPE over
    ``|actual| >= mape_floor`` shows how much of the raw figure comes from near-zero slots."""
    actual = np.asarray(actual, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    err = np.abs(predicted - actual)

    def mape(mask: np.ndarray) -> float | None:
        return float(100 * np.mean(err[mask] / np.abs(actual[mask]))) if mask.any() else None

    nonzero = actual != 0
    denom = np.abs(actual) + np.abs(predicted)
    smape_terms = np.divide(2 * err, denom, out=np.zeros_like(err), where=denom > 0)
    out: dict[str, float | int | None] = {
        "mape_pct": mape(nonzero),
        "smape_pct": float(100 * np.mean(smape_terms)),
        "mae": float(np.mean(err)),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "n_points": len(actual),
        "n_zero_actuals_skipped_by_mape": int((~nonzero).sum()),
    }
    if mape_floor is not None:
        out["mape_pct_abs_actual_ge_floor"] = mape(np.abs(actual) >= mape_floor)
    return out


@dataclass
class _Pool:
    actual: list[np.ndarray] = field(default_factory=list)
    predicted: dict[str, list[np.ndarray]] = field(default_factory=dict)
    lead: list[np.ndarray] = field(default_factory=list)
    seconds: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, values: np.ndarray, seconds: float | None = None) -> None:
        self.predicted.setdefault(name, []).append(values)
        if seconds is not None:
            self.seconds.setdefault(name, []).append(seconds)


def _ratio(a: float | int | None, b: float | int | None) -> float | None:
    return None if a is None or not b else float(a) / float(b)


def _summarise(pool: _Pool, baseline: str, mape_floor: float | None) -> dict[str, Any]:
    actual = np.concatenate(pool.actual)
    lead = np.concatenate(pool.lead)
    day_one = lead <= SLOTS_PER_DAY
    out: dict[str, Any] = {"models": {}}
    for name, chunks in pool.predicted.items():
        pred = np.concatenate(chunks)
        metrics: dict[str, Any] = error_metrics(actual, pred, mape_floor)
        # Day one vs day two ahead: the scheduler's 48 h horizon leans on both.
        by_day = [error_metrics(actual[m], pred[m]) for m in (day_one, ~day_one) if m.any()]
        metrics["mape_pct_by_day_ahead"] = [d["mape_pct"] for d in by_day]
        metrics["mae_by_day_ahead"] = [d["mae"] for d in by_day]
        if name in pool.seconds:
            metrics["seconds_per_forecast_mean"] = float(np.mean(pool.seconds[name]))
            metrics["seconds_per_forecast_max"] = float(np.max(pool.seconds[name]))
        out["models"][name] = metrics
    base = out["models"].get(baseline)
    if base:
        keys = ["mape_pct", "smape_pct", "mae"] + (["mape_pct_abs_actual_ge_floor"] if mape_floor else [])
        out["ratio_vs_baseline"] = {
            name: {k: _ratio(m[k], base[k]) for k in keys} for name, m in out["models"].items() if name != baseline
        }
    return out


def evaluate(
    series: SignalSeries,
    months: list[int],
    horizon_slots: int = 2 * SLOTS_PER_DAY,
    *,
    models: tuple[str, ...] = MODELS,
    signals: tuple[str, ...] = SIGNALS,
    origin_step_slots: int = SLOTS_PER_DAY,
    year: int | None = None,
    config: GBMConfig | None = None,
    baseline: str = BASELINE,
    history_days: int | None = None,
) -> dict[str, Any]:
    """Rolling-origin evaluation on held-out months.

    Origins run from the first slot of each month (UTC) every ``origin_step_slots`` while the whole
    horizon stays inside ``series``. At each origin every model gets only ``series`` *before* the
    origin (a slice of it) and forecasts ``horizon_slots``; errors are pooled over
    all origins and leads per month and overall. Target slots the loader gap-filled are not scored
    (they are not observations). For GB carbon NESO's published forecast is scored on the same
    slots as a reference (``neso``); note it is issued much closer to real time than 24–48 h, so it
    is an optimistic reference, not a like-for-like competitor.

    ``history_days`` caps what each origin sees (default: everything before it), to measure the
    cost of short histories.

    Returns ``{"region", "horizon_slots", "baseline", ..., "signals": {signal: {"unit", "n_origins",
    "mape_floor", "overall": summary, "by_month": {month: summary}}}}`` where a summary holds per
    model ``mape_pct``, ``smape_pct``, ``mae`` (signal unit), ``rmse``, the same by day ahead,
    seconds per forecast (fit + predict), and ``ratio_vs_baseline`` (model / baseline per metric).
    """
    if baseline not in models:
        raise ValueError(f"baseline {baseline!r} must be among the evaluated models {models}")
    if not all(1 <= m <= 12 for m in months):
        raise ValueError(f"months must be 1..12, got {months}")
    year = year if year is not None else series.start_utc.year
    history_slots = (history_days or 0) * SLOTS_PER_DAY
    tz_utc = series.start_utc.tzinfo
    result: dict[str, Any] = {
        "region": series.region,
        "horizon_slots": horizon_slots,
        "origin_step_slots": origin_step_slots,
        "months": list(months),
        "year": year,
        "baseline": baseline,
        "history_days": history_days,
        "signals": {},
    }
    for signal in signals:
        actual_all = series.signal(signal)
        filled_all = series.filled_mask(signal)
        neso = series.carbon_forecast_g_per_kwh if signal == "carbon" else None
        overall = _Pool()
        by_month: dict[int, _Pool] = {}
        n_origins = 0
        for month in months:
            m_start = datetime(year, month, 1, tzinfo=tz_utc)
            m_end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=tz_utc)
            first = max(series.index_of(m_start), 0)
            last = min(series.index_of(m_end), len(series) - horizon_slots + 1)
            pool = by_month.setdefault(month, _Pool())
            for origin in range(first, last, origin_step_slots):
                history = series.slice(0 if history_days is None else max(0, origin - history_slots), origin)
                try:
                    for name in models:
                        _check(history, horizon_slots, name, signal)
                except ValueError:
                    continue  # not enough history before this origin for some model
                keep = ~filled_all[origin : origin + horizon_slots]
                if not keep.any():
                    continue
                n_origins += 1
                actual = actual_all[origin : origin + horizon_slots][keep]
                lead = np.arange(1, horizon_slots + 1)[keep]
                for p in (pool, overall):
                    p.actual.append(actual)
                    p.lead.append(lead)
                for name in models:
                    t0 = time.perf_counter()
                    pred = forecast(history, horizon_slots, name, signal, config=config)
                    seconds = time.perf_counter() - t0
                    for p in (pool, overall):
                        p.add(name, pred[keep], seconds)
                if neso is not None:
                    for p in (pool, overall):
                        p.add("neso", neso[origin : origin + horizon_slots][keep])
        if n_origins == 0:
            raise ValueError(f"no usable forecast origins for {signal} in months {months} of {year}")
        floor = MAPE_DIAGNOSTIC_FLOOR.get(signal)
        result["signals"][signal] = {
            "unit": SIGNAL_UNITS[signal],
            "n_origins": n_origins,
            "mape_floor": floor,
            "overall": _summarise(overall, baseline, floor),
            "by_month": {m: _summarise(p, baseline, floor) for m, p in by_month.items() if p.actual},
        }
    return result


def forecast_series(
    history: SignalSeries, horizon_slots: int, model: str = "gbm", config: GBMConfig | None = None
) -> SignalSeries:
    """Both signals forecast into a :class:`SignalSeries` starting at ``history.end_utc`` — what the
    scheduler plans on. No NESO forecast or imbalance price is attached."""
    return SignalSeries(
        region=history.region,
        start_utc=history.end_utc,
        price_gbp_per_mwh=forecast(history, horizon_slots, model, "price", config=config),
        carbon_g_per_kwh=forecast(history, horizon_slots, model, "carbon", config=config),
        price_source=f"{model} forecast of {history.price_source or 'price'}",
    )
