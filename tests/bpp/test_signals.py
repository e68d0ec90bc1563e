"""grid.signals: slot alignment, gap filling, DST independence, and the repo's trimmed data copy.

Tests on the real 2023 files read ../shared (skipped with a message when absent, via ``shared_dir``);
tests of the trimmed ``data/grid`` copy need only the repo.
"""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from grid import signals
from grid.signals import (
    GB_CARBON_FILE,
    GB_PRICES_FILE,
    MAX_INTERP_SLOTS,
    SLOT,
    SLOTS_PER_DAY,
    SignalSeries,
    electricitymaps_file,
    fill_gaps,
    load_gb,
    load_region,
)

ROOT = Path(__file__).resolve().parents[2]
REPO_GRID = ROOT / "data" / "grid"
Y2023 = datetime(2023, 1, 1, tzinfo=UTC)
Y2024 = datetime(2024, 1, 1, tzinfo=UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


@pytest.fixture(scope="module")
def grid_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "grid"


@pytest.fixture(scope="module")
def gb_year(grid_dir: Path) -> SignalSeries:
    return load_gb(Y2023, Y2024, grid_dir)


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# -- fill rule (synthetic) ---------------------------------------------------------------------------


def test_short_gap_is_linearly_interpolated() -> None:
    values = np.arange(200, dtype=float) * 2.0
    values[50:54] = np.nan  # 4 slots = MAX_INTERP_SLOTS
    filled, mask = fill_gaps(values)
    assert MAX_INTERP_SLOTS == 4
    np.testing.assert_allclose(filled, np.arange(200) * 2.0)
    assert mask.sum() == 4 and mask[50:54].all()


def test_long_gap_copies_same_slot_previous_day_chained() -> None:
    rng = np.random.default_rng(1)
    values = rng.uniform(50, 300, size=SLOTS_PER_DAY * 6)
    original = values.copy()
    a, b = 2 * SLOTS_PER_DAY + 10, 2 * SLOTS_PER_DAY + 10 + 91  # 91 slots, like the NESO gap
    values[a:b] = np.nan
    filled, mask = fill_gaps(values)
    for i in range(a, b):
        j = i - SLOTS_PER_DAY
        while j >= a:  # chain back to the last real day
            j -= SLOTS_PER_DAY
        assert filled[i] == original[j]
    np.testing.assert_array_equal(filled[:a], original[:a])
    np.testing.assert_array_equal(filled[b:], original[b:])
    assert mask.sum() == b - a


def test_gap_of_five_slots_is_long() -> None:
    values = np.linspace(0, 100, SLOTS_PER_DAY * 3)
    values[100:105] = np.nan
    filled, _ = fill_gaps(values)
    np.testing.assert_array_equal(filled[100:105], filled[100 - SLOTS_PER_DAY : 105 - SLOTS_PER_DAY])


def test_gap_at_start_copies_next_day_and_at_end_previous_day() -> None:
    values = np.arange(SLOTS_PER_DAY * 3, dtype=float)
    values[:60] = np.nan
    values[-2:] = np.nan
    filled, mask = fill_gaps(values)
    n = len(values)
    for i in range(60):
        j = i + SLOTS_PER_DAY
        if j < 60:
            j += SLOTS_PER_DAY
        assert filled[i] == j
    assert list(filled[-2:]) == [n - 2 - SLOTS_PER_DAY, n - 1 - SLOTS_PER_DAY]
    assert mask.sum() == 62
    assert np.isfinite(filled).all()


def test_fill_gaps_refuses_all_missing() -> None:
    with pytest.raises(ValueError, match="no valid values"):
        fill_gaps(np.full(10, np.nan))


# -- SignalSeries ------------------------------------------------------------------------------------


def test_series_rejects_nan_unaligned_and_naive() -> None:
    ok = np.ones(4)
    with pytest.raises(ValueError, match="NaN"):
        SignalSeries("GB", utc(2023, 1, 1), np.array([1.0, math.nan, 1, 1]), ok)
    with pytest.raises(ValueError, match="aligned"):
        SignalSeries("GB", utc(2023, 1, 1, 0, 10), ok, ok)
    with pytest.raises(ValueError, match="naive"):
        SignalSeries("GB", datetime(2023, 1, 1), ok, ok)
    with pytest.raises(ValueError, match="slots"):
        SignalSeries("GB", utc(2023, 1, 1), ok, np.ones(3))


def test_series_arrays_are_read_only_copies() -> None:
    price = np.arange(4.0)
    s = SignalSeries("GB", utc(2023, 1, 1), price, np.ones(4))
    price[0] = 99.0
    assert s.price_gbp_per_mwh[0] == 0.0
    with pytest.raises(ValueError):
        s.price_gbp_per_mwh[0] = 1.0


def test_slot_start_window_and_index_of() -> None:
    n = 10
    local = datetime(2023, 7, 1, 1, 0, tzinfo=ZoneInfo("Europe/London"))  # = 00:00 UTC (BST)
    s = SignalSeries("GB", local, np.arange(n, dtype=float), np.arange(n, dtype=float) + 100)
    assert s.start_utc == utc(2023, 7, 1) and s.start_utc.tzinfo == UTC
    assert s.slot_start(3) == utc(2023, 7, 1, 1, 30)
    assert s.end_utc == utc(2023, 7, 1, 5)
    assert s.index_of(utc(2023, 7, 1, 2)) == 4
    w = s.window(utc(2023, 7, 1, 1), 3)
    assert w.start_utc == utc(2023, 7, 1, 1)
    assert list(w.price_gbp_per_mwh) == [2.0, 3.0, 4.0]
    assert list(w.carbon_g_per_kwh) == [102.0, 103.0, 104.0]
    with pytest.raises(ValueError, match="outside"):
        s.window(utc(2023, 7, 1, 4), 3)
    with pytest.raises(ValueError, match="outside"):
        s.window(utc(2023, 6, 30, 23, 30), 2)


# -- real data: alignment, fills, DST ----------------------------------------------------------------


def test_gb_year_has_every_slot_and_no_nan(gb_year: SignalSeries) -> None:
    assert len(gb_year) == 365 * SLOTS_PER_DAY
    for a in (
        gb_year.price_gbp_per_mwh,
        gb_year.carbon_g_per_kwh,
        gb_year.carbon_forecast_g_per_kwh,
        gb_year.imbalance_price_gbp_per_mwh,
    ):
        assert a is not None and np.isfinite(a).all()
    assert gb_year.carbon_g_per_kwh.min() > 0  # the bad zeros are gone
    assert gb_year.price_gbp_per_mwh.min() < 0  # real negative prices are kept, not "fixed"


def test_gb_carbon_slots_match_file_rows(grid_dir: Path, gb_year: SignalSeries) -> None:
    rows = _csv_rows(grid_dir / GB_CARBON_FILE)
    checked = 0
    for r in rows[1::97]:  # a spread of rows through the year
        start = datetime.fromisoformat(r["from"])
        i = gb_year.index_of(start)
        if not 0 <= i < len(gb_year) or not r["actual"] or float(r["actual"]) <= 0:
            continue
        assert gb_year.slot_start(i) == start
        assert gb_year.carbon_g_per_kwh[i] == float(r["actual"])
        assert gb_year.carbon_forecast_g_per_kwh[i] == float(r["forecast"])  # type: ignore[index]
        assert not gb_year.carbon_filled[i]  # type: ignore[index]
        checked += 1
    assert checked > 150


def test_gb_price_slots_match_file_rows(grid_dir: Path, gb_year: SignalSeries) -> None:
    rows = _csv_rows(grid_dir / GB_PRICES_FILE)
    checked = 0
    for r in rows[::89]:
        start = datetime.fromisoformat(r["period_start_utc"])
        i = gb_year.index_of(start)
        if not 0 <= i < len(gb_year) or not r["market_index_price_gbp_per_mwh"]:
            continue
        assert gb_year.price_gbp_per_mwh[i] == float(r["market_index_price_gbp_per_mwh"])
        assert gb_year.imbalance_price_gbp_per_mwh[i] == float(r["imbalance_price_gbp_per_mwh"])  # type: ignore[index]
        checked += 1
    assert checked > 150


def test_electricitymaps_hour_repeats_over_its_two_half_hours(grid_dir: Path) -> None:
    es = load_region("ES", Y2023, Y2024, grid_dir)
    rows = _csv_rows(grid_dir / electricitymaps_file("ES"))
    column = next(c for c in rows[0] if c.endswith("(direct)"))
    for r in rows[::251]:
        hour = datetime.fromisoformat(r["Datetime (UTC)"]).replace(tzinfo=UTC)
        i = es.index_of(hour)
        assert es.carbon_g_per_kwh[i] == es.carbon_g_per_kwh[i + 1] == float(r[column])
    assert es.carbon_forecast_g_per_kwh is None
    # No non-GB prices exist: the GB market index is carried, and labelled as such.
    gb = load_gb(Y2023, Y2024, grid_dir)
    np.testing.assert_array_equal(es.price_gbp_per_mwh, gb.price_gbp_per_mwh)
    assert "GB price used for ES" in es.price_source


def test_neso_91_slot_gap_filled_from_previous_day(gb_year: SignalSeries) -> None:
    a = gb_year.index_of(utc(2023, 10, 20, 22))
    b = gb_year.index_of(utc(2023, 10, 22, 19, 30))
    assert b - a == 91
    assert gb_year.carbon_filled[a:b].all()  # type: ignore[index]
    assert not gb_year.carbon_filled[a - 1] and not gb_year.carbon_filled[b]  # type: ignore[index]
    for i in range(a, b):
        assert gb_year.carbon_g_per_kwh[i] == gb_year.carbon_g_per_kwh[i - SLOTS_PER_DAY]
        assert gb_year.carbon_forecast_g_per_kwh[i] == gb_year.carbon_forecast_g_per_kwh[i - SLOTS_PER_DAY]  # type: ignore[index]


def test_bad_carbon_rows_are_exactly_the_filled_ones(grid_dir: Path, gb_year: SignalSeries) -> None:
    """Filled = file rows with empty/zero actual + slots with no row; counted from the file itself."""
    rows = _csv_rows(grid_dir / GB_CARBON_FILE)
    present = {datetime.fromisoformat(r["from"]) for r in rows}
    bad = {datetime.fromisoformat(r["from"]) for r in rows if not r["actual"] or float(r["actual"]) <= 0}
    expected = {gb_year.slot_start(i) for i in range(len(gb_year)) if gb_year.slot_start(i) not in present} | {
        t for t in bad if Y2023 <= t < Y2024
    }
    filled = {gb_year.slot_start(int(i)) for i in np.flatnonzero(gb_year.carbon_filled)}
    assert filled == expected
    assert utc(2023, 1, 31, 1) in filled and utc(2023, 6, 7, 10, 30) in filled
    # The zero at 2023-01-31 01:00 is a single-slot gap: interpolated between its neighbours.
    i = gb_year.index_of(utc(2023, 1, 31, 1))
    c = gb_year.carbon_g_per_kwh
    assert c[i] == pytest.approx((c[i - 1] + c[i + 1]) / 2)


def test_price_gaps_filled_and_counted_from_file(grid_dir: Path, gb_year: SignalSeries) -> None:
    rows = _csv_rows(grid_dir / GB_PRICES_FILE)
    in_year = [r for r in rows if Y2023 <= datetime.fromisoformat(r["period_start_utc"]) < Y2024]
    empty = sum(1 for r in in_year if not r["market_index_price_gbp_per_mwh"])
    missing = len(gb_year) - len(in_year)
    assert missing == 2 and empty > 0
    assert int(gb_year.price_filled.sum()) == empty + missing  # type: ignore[union-attr]
    # The two slots lost on the autumn clock change (period ends 00:00 and 00:30 UTC) interpolate.
    i = gb_year.index_of(utc(2023, 10, 28, 23, 30))
    p = gb_year.price_gbp_per_mwh
    assert gb_year.price_filled[i] and gb_year.price_filled[i + 1]  # type: ignore[index]
    assert not gb_year.price_filled[i - 1] and not gb_year.price_filled[i + 2]  # type: ignore[index]
    np.testing.assert_allclose(p[i : i + 2], p[i - 1] + (p[i + 2] - p[i - 1]) * np.array([1, 2]) / 3)


@pytest.mark.parametrize("day", [utc(2023, 3, 26), utc(2023, 10, 29)])
def test_clock_change_days_are_48_utc_slots_matching_the_file(grid_dir: Path, day: datetime) -> None:
    s = load_gb(day, day + timedelta(days=1), grid_dir)
    assert len(s) == SLOTS_PER_DAY
    rows = {
        datetime.fromisoformat(r["from"]): float(r["actual"])
        for r in _csv_rows(grid_dir / GB_CARBON_FILE)
        if datetime.fromisoformat(r["from"]).date() == day.date()
    }
    assert len(rows) == SLOTS_PER_DAY  # the source is UTC too: no 46/50-slot days
    for i in range(SLOTS_PER_DAY):
        assert s.carbon_g_per_kwh[i] == rows[s.slot_start(i)]
    # A request in local time means the same UTC instants.
    london = ZoneInfo("Europe/London")
    s_local = load_gb(day.astimezone(london), (day + timedelta(days=1)).astimezone(london), grid_dir)
    assert s_local.start_utc == day
    np.testing.assert_array_equal(s_local.carbon_g_per_kwh, s.carbon_g_per_kwh)


def test_window_values_do_not_depend_on_where_the_load_was_cut(grid_dir: Path, gb_year: SignalSeries) -> None:
    start = utc(2023, 10, 21, 3)  # inside the NESO gap
    part = load_gb(start, start + timedelta(hours=6), grid_dir)
    np.testing.assert_array_equal(part.carbon_g_per_kwh, gb_year.window(start, 12).carbon_g_per_kwh)


def test_loader_errors(grid_dir: Path) -> None:
    with pytest.raises(ValueError, match="covers"):
        load_gb(utc(2022, 12, 1), utc(2023, 1, 2), grid_dir)
    with pytest.raises(ValueError, match="unknown region"):
        load_region("FR", Y2023, utc(2023, 1, 2), grid_dir)
    with pytest.raises(ValueError, match="naive"):
        load_gb(datetime(2023, 1, 1), utc(2023, 1, 2), grid_dir)
    with pytest.raises(ValueError, match="aligned"):
        load_gb(utc(2023, 1, 1, 0, 15), utc(2023, 1, 2), grid_dir)
    with pytest.raises(FileNotFoundError, match="make_demo_data"):
        load_gb(Y2023, utc(2023, 1, 2), grid_dir / "nowhere")


# -- the repo's trimmed copy (no ../shared needed) ---------------------------------------------------


def test_trimmed_repo_copy_loads_every_region_and_the_demo_day_whole() -> None:
    """The copy keeps the source's own gaps (a few half-hours of Elexon prices on 22, 23 and 28 January and one
    NESO carbon reading on the 26th are missing upstream), which the loader fills and marks; the demo's day,
    2023-01-24, has none."""
    start, end = signals.coverage("GB", REPO_GRID)
    assert (end - start) >= timedelta(weeks=3)
    day = datetime(2023, 1, 24, tzinfo=UTC)
    for region in signals.REGIONS:
        assert signals.coverage(region, REPO_GRID) == (start, end)
        s = load_region(region, start, end, REPO_GRID)
        assert len(s) == (end - start) // SLOT
        assert s.carbon_filled.mean() < 0.01 and s.price_filled.mean() < 0.05  # type: ignore[union-attr]
        d = load_region(region, day, day + timedelta(days=1), REPO_GRID)
        assert not d.carbon_filled.any() and not d.price_filled.any()  # type: ignore[union-attr]
        assert s.carbon_g_per_kwh.min() >= 0


def test_trimmed_copy_is_small_and_attributed() -> None:
    total = sum(p.stat().st_size for p in REPO_GRID.iterdir())
    assert total < 1_000_000
    readme = (REPO_GRID / "README.md").read_text(encoding="utf-8")
    for line in (
        "Carbon Intensity API",
        "CC BY 4.0",
        "Contains BMRS data © Elexon Limited copyright and database right 2024",
        "Electricity Maps",
        "ODbL",
    ):
        assert line in readme


def test_default_data_dir_env_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(signals.DATA_DIR_ENV, str(tmp_path))
    assert signals.default_data_dir() == tmp_path
    monkeypatch.delenv(signals.DATA_DIR_ENV)
    expected = ROOT.parent / "shared" / "data" / "grid"
    assert signals.default_data_dir() == (expected if (expected / GB_CARBON_FILE).is_file() else REPO_GRID)


def test_trimmed_copy_equals_shared_rows_and_regenerates(grid_dir: Path, tmp_path: Path) -> None:
    """The copy is what make_demo_data.py writes from the shared files, byte for byte."""
    subprocess.run(
        [sys.executable, str(ROOT / "bench" / "make_demo_data.py"), "--src", str(grid_dir), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    for name in (GB_CARBON_FILE, GB_PRICES_FILE, *(electricitymaps_file(r) for r in signals.ELECTRICITYMAPS_REGIONS)):
        assert (tmp_path / name).read_bytes() == (REPO_GRID / name).read_bytes(), name
    start, end = signals.coverage("GB", REPO_GRID)
    mine, full = load_gb(start, end, REPO_GRID), load_gb(start, end, grid_dir)
    np.testing.assert_array_equal(mine.carbon_g_per_kwh, full.carbon_g_per_kwh)
    np.testing.assert_array_equal(mine.price_gbp_per_mwh, full.price_gbp_per_mwh)


# -- forecast history (issue "Providers": up to 90 days, all that exists when the data has less) -----------
def test_forecasts_use_90_days_of_history_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    import bpp.signal_providers as sp
    from grid.signals import coverage as data_coverage

    seen: list[tuple[datetime, datetime]] = []
    real = sp.load_region

    def spy(region: str, start: datetime, end: datetime, data_dir: Any = None) -> Any:
        seen.append((start, end))
        return real(region, start, end, data_dir)

    monkeypatch.setattr(sp, "load_region", spy)
    first, _ = data_coverage("GB")
    start = (first + timedelta(days=200)).replace(hour=0, minute=0)
    sp.forecast_provider("naive_day")("GB", start, 48)
    assert seen == [(start - timedelta(days=90), start)]
    seen.clear()
    early = (first + timedelta(days=20)).replace(hour=0, minute=0)  # less history than 90 days exists
    series = sp.forecast_provider("naive_day")("GB", early, 48)
    assert seen == [(first, early)] and len(series.price_gbp_per_mwh) == 48


def test_a_forecast_with_no_history_says_where_the_data_starts() -> None:
    from bpp.signal_providers import forecast_provider
    from grid.signals import coverage as data_coverage

    first, _ = data_coverage("GB")
    with pytest.raises(ValueError, match="no GB history before"):
        forecast_provider("naive_day")("GB", first, 48)
