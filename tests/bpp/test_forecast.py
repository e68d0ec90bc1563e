"""bpp.forecast: seasonal-naive baselines, the GBM, no look-ahead, metrics, rolling evaluation.

The real-data comparison reads ../shared (skips with a message when absent via ``shared_dir``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from bpp import forecast as fc
from grid.signals import SLOTS_PER_DAY, SLOTS_PER_WEEK, SignalSeries, coverage, load_gb, load_region

ROOT = Path(__file__).resolve().parents[2]
START = datetime(2023, 3, 1, tzinfo=UTC)


def _series(price: np.ndarray, carbon: np.ndarray, region: str = "GB", start: datetime = START) -> SignalSeries:
    return SignalSeries(region, start, price, carbon)


def _synthetic(days: int, seed: int = 0) -> SignalSeries:
    """Daily cycle + weekday effect + noise, positive carbon, price crossing zero sometimes."""
    rng = np.random.default_rng(seed)
    t = np.arange(days * SLOTS_PER_DAY)
    daily = np.sin(2 * np.pi * t / SLOTS_PER_DAY)
    carbon = 180 + 60 * daily + rng.normal(0, 8, len(t))
    price = 60 + 40 * daily + rng.normal(0, 10, len(t))
    return _series(price, carbon)


# -- baselines ----------------------------------------------------------------------------------------


def test_naive_day_repeats_last_known_day_for_both_days_ahead() -> None:
    y = np.arange(3 * SLOTS_PER_DAY, dtype=float)
    s = _series(y, y + 1)
    f = fc.forecast(s, 2 * SLOTS_PER_DAY, "naive_day", "price")
    last_day = y[-SLOTS_PER_DAY:]
    np.testing.assert_array_equal(f, np.concatenate([last_day, last_day]))


def test_naive_week_is_same_slot_seven_days_earlier() -> None:
    y = np.arange(8 * SLOTS_PER_DAY, dtype=float)
    s = _series(y * 2, y + 10)
    f = fc.forecast(s, 96, "naive_week", "carbon")
    np.testing.assert_array_equal(f, (y + 10)[len(y) - SLOTS_PER_WEEK : len(y) - SLOTS_PER_WEEK + 96])


def test_argument_and_history_checks() -> None:
    s = _synthetic(5)
    with pytest.raises(ValueError, match="needs at least"):
        fc.forecast(s, 96, "gbm")
    with pytest.raises(ValueError, match="needs at least"):
        fc.forecast(s, 96, "naive_week")
    with pytest.raises(ValueError, match="unknown model"):
        fc.forecast(s, 10, "prophet")
    with pytest.raises(ValueError, match="unknown signal"):
        fc.forecast(s, 10, "naive_day", "wind")
    with pytest.raises(ValueError, match="horizon_slots"):
        fc.forecast(s, 0, "naive_day")


# -- GBM ----------------------------------------------------------------------------------------------


def test_gbm_learns_a_weekday_pattern_the_daily_naive_cannot() -> None:
    """Saturdays and Sundays run 80 g lower: forecasting from a Friday, naive_day misses by ~80, the
    GBM (weekday feature) must do much better."""
    days = 70
    s0 = _synthetic(days, seed=3)
    t = np.arange(days * SLOTS_PER_DAY)
    london = ZoneInfo("Europe/London")  # weekends by the civil calendar, as demand follows it
    weekday = np.array([(START + timedelta(minutes=30 * int(i))).astimezone(london).weekday() for i in t])
    carbon = s0.carbon_g_per_kwh - 80 * (weekday >= 5)
    full = _series(s0.price_gbp_per_mwh, carbon)
    # Origin: the first Saturday 00:00 UTC after 60 days of history.
    origin = next(i for i in range(60 * SLOTS_PER_DAY, len(t), SLOTS_PER_DAY) if weekday[i] == 5)
    history, actual = full.slice(0, origin), carbon[origin : origin + 96]
    mae = {m: np.abs(fc.forecast(history, 96, m, "carbon") - actual).mean() for m in ("naive_day", "gbm")}
    assert mae["naive_day"] > 60
    assert mae["gbm"] < 0.5 * mae["naive_day"], mae


def test_gbm_is_deterministic_finite_and_positive_for_carbon() -> None:
    s = _synthetic(30)
    a = fc.forecast(s, 96, "gbm", "carbon")
    b = fc.forecast(s, 96, "gbm", "carbon")
    np.testing.assert_array_equal(a, b)
    assert a.shape == (96,) and a.dtype == np.float64
    assert np.isfinite(a).all() and (a > 0).all()
    assert np.isfinite(fc.forecast(s, 96, "gbm", "price")).all()


@pytest.mark.parametrize("model", fc.MODELS)
@pytest.mark.parametrize("signal", fc.SIGNALS)
def test_forecast_ignores_the_future_but_uses_the_past(model: str, signal: str) -> None:
    s = _synthetic(40, seed=7)
    origin = 35 * SLOTS_PER_DAY
    rng = np.random.default_rng(11)
    # Same past, wildly different future (both signals).
    price_b = s.price_gbp_per_mwh.copy()
    carbon_b = s.carbon_g_per_kwh.copy()
    price_b[origin:] = rng.uniform(-500, 500, len(price_b) - origin)
    carbon_b[origin:] = rng.uniform(1, 900, len(carbon_b) - origin)
    b = _series(price_b, carbon_b)
    fa = fc.forecast(s.slice(0, origin), 96, model, signal)
    fb = fc.forecast(b.slice(0, origin), 96, model, signal)
    np.testing.assert_array_equal(fa, fb)
    # ...and the forecast does react to the past: shift the last eight days and it changes.
    price_c, carbon_c = s.price_gbp_per_mwh.copy(), s.carbon_g_per_kwh.copy()
    price_c[origin - 8 * SLOTS_PER_DAY : origin] += 50
    carbon_c[origin - 8 * SLOTS_PER_DAY : origin] += 50
    fc_changed = fc.forecast(_series(price_c, carbon_c).slice(0, origin), 96, model, signal)
    assert not np.allclose(fa, fc_changed)


def test_training_features_never_read_at_or_after_their_origin() -> None:
    """The GBM's (origin, lead) rows: perturb y from each row's origin on; its features must not move."""
    rng = np.random.default_rng(5)
    y = rng.uniform(50, 300, 30 * SLOTS_PER_DAY)
    n_cal = len(y) + 96
    sod, wd = fc._local_calendar("GB", 0, n_cal)
    origins = np.arange(SLOTS_PER_WEEK, len(y) - 96, 37)
    for o in origins:
        leads = np.arange(1, 97)
        x, level = fc._lag_features(y, np.full(96, o), leads, sod, wd)
        y2 = y.copy()
        y2[o:] = rng.uniform(-1e3, 1e3, len(y) - o)
        x2, level2 = fc._lag_features(y2, np.full(96, o), leads, sod, wd)
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(level, level2)


def test_local_calendar_follows_the_clock_change() -> None:
    """Features use civil time (demand follows clocks) while the data stays in UTC."""
    t = datetime(2023, 3, 26, 0, 30, tzinfo=UTC)
    slot = int(t.timestamp()) // 1800
    sod, _ = fc._local_calendar("GB", slot, 4)
    assert list(sod) == [1, 4, 5, 6]  # 00:30 GMT, then 02:00, 02:30, 03:00 BST
    t = datetime(2023, 10, 29, 0, 0, tzinfo=UTC)
    sod, wd = fc._local_calendar("GB", int(t.timestamp()) // 1800, 4)
    assert list(sod) == [2, 3, 2, 3]  # 01:00, 01:30 BST then 01:00, 01:30 GMT
    assert list(wd) == [6, 6, 6, 6]


# -- metrics and evaluation ---------------------------------------------------------------------------


def test_error_metrics_by_hand() -> None:
    m = fc.error_metrics(np.array([100.0, 200.0, 0.0, -50.0]), np.array([110.0, 180.0, 5.0, -40.0]), 60.0)
    # MAPE over non-zero actuals: (10% + 10% + 20%) / 3
    assert m["mape_pct"] == pytest.approx(40 / 3)
    assert m["n_zero_actuals_skipped_by_mape"] == 1
    assert m["mae"] == pytest.approx((10 + 20 + 5 + 10) / 4)
    smape = [20 / 210, 40 / 380, 10 / 5, 20 / 90]
    assert m["smape_pct"] == pytest.approx(100 * np.mean(smape))
    assert m["mape_pct_abs_actual_ge_floor"] == pytest.approx(10.0)  # only 100 and 200 are >= 60


def test_evaluate_skips_filled_targets_and_reports_ratios() -> None:
    s = _synthetic(60)
    filled = np.zeros(len(s), dtype=bool)
    gap = s.index_of(datetime(2023, 4, 21, tzinfo=UTC))  # an origin below (Apr 1 + 4 x 5 days)
    filled[gap : gap + 10] = True
    s = SignalSeries("GB", START, s.price_gbp_per_mwh, s.carbon_g_per_kwh, carbon_filled=filled)
    r = fc.evaluate(
        s, [4], 96, origin_step_slots=5 * SLOTS_PER_DAY, models=("naive_day", "naive_week"), signals=("carbon", "price")
    )
    carbon = r["signals"]["carbon"]
    n_origins = carbon["n_origins"]
    assert n_origins >= 4
    n_carbon = carbon["overall"]["models"]["naive_week"]["n_points"]
    n_price = r["signals"]["price"]["overall"]["models"]["naive_week"]["n_points"]
    assert n_price == 96 * n_origins
    assert n_carbon == n_price - 10  # the 10 filled slots are not scored
    ratio = carbon["overall"]["ratio_vs_baseline"]["naive_week"]
    models = carbon["overall"]["models"]
    assert ratio["mae"] == pytest.approx(models["naive_week"]["mae"] / models["naive_day"]["mae"])


def test_evaluate_runs_on_the_repo_trimmed_copy() -> None:
    """No ../shared needed: the four weeks in data/grid (January 2023, the demo's) still give GBM origins."""
    grid = ROOT / "data" / "grid"
    start, end = coverage("NO", grid)
    s = load_region("NO", start, end, grid)
    r = fc.evaluate(s, [start.month], 96, origin_step_slots=4 * SLOTS_PER_DAY, signals=("carbon",))
    models = r["signals"]["carbon"]["overall"]["models"]
    assert set(models) == {"naive_day", "naive_week", "gbm"}
    assert all(np.isfinite(m["mae"]) for m in models.values())


def test_forecast_series_for_the_scheduler() -> None:
    s = _synthetic(20)
    out = fc.forecast_series(s, 96, "naive_day")
    assert out.start_utc == s.end_utc and len(out) == 96
    np.testing.assert_array_equal(out.carbon_g_per_kwh, fc.forecast(s, 96, "naive_day", "carbon"))
    np.testing.assert_array_equal(out.price_gbp_per_mwh, fc.forecast(s, 96, "naive_day", "price"))


# -- real data ----------------------------------------------------------------------------------------


def test_gbm_beats_seasonal_naive_on_held_out_september(shared_dir: Path) -> None:
    """Rolling origins every two days in September 2023, GB, 48 h ahead, GBM refit on the 90 days
    before each origin. Carbon: lower MAPE and MAE. Price: lower MAE and sMAPE — its raw MAPE is
    dominated by near-zero prices (see error_metrics) and is reported, not asserted.
    Honest caveat (bench/results/forecast.json): the GBM does not win every month; in March 2023 its
    GB carbon MAPE is worse than the daily naive."""
    grid = shared_dir / "data" / "grid"
    s = load_gb(datetime(2023, 1, 1, tzinfo=UTC), datetime(2023, 10, 3, tzinfo=UTC), grid)
    r = fc.evaluate(s, [9], 96, origin_step_slots=2 * SLOTS_PER_DAY, models=("naive_day", "gbm"))
    carbon = r["signals"]["carbon"]["overall"]["models"]
    price = r["signals"]["price"]["overall"]["models"]
    assert r["signals"]["carbon"]["n_origins"] >= 14
    assert carbon["gbm"]["mape_pct"] < carbon["naive_day"]["mape_pct"]
    assert carbon["gbm"]["mae"] < carbon["naive_day"]["mae"]
    assert price["gbm"]["mae"] < price["naive_day"]["mae"]
    assert price["gbm"]["smape_pct"] < price["naive_day"]["smape_pct"]
    # NESO's own (short-lead, weather-informed) forecast is reported as a reference.
    assert carbon["neso"]["mape_pct"] < carbon["gbm"]["mape_pct"]
    assert carbon["gbm"]["seconds_per_forecast_mean"] < 3.0


def test_evaluate_aligns_forecasts_with_the_slots_after_each_origin() -> None:
    """On y = slot index, naive_day misses by exactly one day (48) on day one and two days (96) on
    day two; any off-by-one between history, forecast and actuals changes these numbers."""
    y = np.arange(30 * SLOTS_PER_DAY, dtype=float) + 1000.0
    r = fc.evaluate(_series(y, y), [3], 96, models=("naive_day",), signals=("price",), origin_step_slots=61)
    m = r["signals"]["price"]["overall"]["models"]["naive_day"]
    assert m["mae_by_day_ahead"] == [48.0, 96.0]
    assert m["mae"] == 72.0
