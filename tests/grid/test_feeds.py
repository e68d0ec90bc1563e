"""grid.feeds: the NESO and Elexon documents parsed and checked, the replay source, staleness."""

from __future__ import annotations

import copy
import csv
import functools
import json
import math
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grid import feeds
from grid.feeds import (
    MAX_FEED_ROWS,
    FeedError,
    Fresh,
    Kind,
    National,
    Regional,
    ReplaySource,
    Stale,
    parse_elexon_system_prices,
    parse_neso_carbon,
    staleness,
    to_signal_series,
)
from grid.periods import period_start
from grid.signals import GB_CARBON_FILE, GB_PRICES_FILE, default_data_dir

FIXTURES = Path(__file__).parent / "fixtures"
SHARED_GRID = Path(__file__).resolve().parents[3] / "shared" / "data" / "grid"
HALF_HOUR = timedelta(minutes=30)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def fixture(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return doc


def _number(text: str) -> float | None:
    return float(text) if text.strip() else None


@functools.lru_cache(maxsize=4)
def csv_carbon(data_dir: Path) -> dict[datetime, tuple[float | None, float | None]]:
    """Period start → (forecast, actual), read straight from the recorded file."""
    with (data_dir / GB_CARBON_FILE).open(newline="") as f:
        return {utc(r["from"]): (_number(r["forecast"]), _number(r["actual"])) for r in csv.DictReader(f)}


@functools.lru_cache(maxsize=4)
def csv_prices(data_dir: Path) -> dict[datetime, float | None]:
    with (data_dir / GB_PRICES_FILE).open(newline="") as f:
        return {utc(r["period_start_utc"]): _number(r["imbalance_price_gbp_per_mwh"]) for r in csv.DictReader(f)}


needs_shared = pytest.mark.skipif(not (SHARED_GRID / GB_CARBON_FILE).is_file(), reason="../shared/data/grid absent")


# --------------------------------------------------------------------------------------------------
# The recorded fixtures


@needs_shared
def test_national_fixture_parses_to_the_recorded_values() -> None:
    readings = parse_neso_carbon(fixture("neso_national_2023-01-24.json"))
    assert readings.area == National()
    recorded = csv_carbon(SHARED_GRID)
    starts = [utc("2023-01-24T17:00Z") + i * HALF_HOUR for i in range(4)]
    assert readings.values(Kind.FORECAST) == {s: recorded[s][0] for s in starts}
    # The 18:30 period had not ended when the document was fetched: no actual.
    assert readings.values(Kind.ACTUAL) == {s: recorded[s][1] for s in starts[:3]}
    assert readings.latest_actual_end_utc == utc("2023-01-24T18:30Z")
    assert all(r.index == "high" and r.published_utc is None for r in readings.readings)


def test_regional_fixture_parses_forecasts_of_its_region() -> None:
    readings = parse_neso_carbon(fixture("neso_regional_2023-01-24.json"))
    assert readings.area == Regional(region_id=13, shortname="London", dno_region="UKPN London")
    assert readings.area.region == "GB-13"
    assert {r.kind for r in readings.readings} == {Kind.FORECAST}
    assert len(readings.readings) == 4
    assert readings.latest_actual_end_utc is None


def test_regional_generation_mix_is_checked_when_present() -> None:
    doc = fixture("neso_regional_2023-01-24.json")
    doc["data"]["data"][0]["generationmix"] = [{"fuel": "gas", "perc": 43.6}, {"fuel": "wind", "perc": 56.4}]
    assert len(parse_neso_carbon(doc).readings) == 4
    doc["data"]["data"][0]["generationmix"][1]["perc"] = 101
    with pytest.raises(FeedError) as e:
        parse_neso_carbon(doc)
    assert e.value.field_path == "data.data[0].generationmix[1].perc"


@needs_shared
def test_elexon_fixture_parses_to_the_recorded_values() -> None:
    prices = parse_elexon_system_prices(fixture("elexon_system_prices_2023-01-24.json"))
    recorded = csv_prices(SHARED_GRID)
    assert [r.settlement_period for r in prices.readings] == [35, 36, 37, 38]
    assert all(r.settlement_date == date(2023, 1, 24) for r in prices.readings)
    assert prices.values() == {r.start_utc: recorded[r.start_utc] for r in prices.readings}
    assert [r.start_utc for r in prices.readings] == [period_start(date(2023, 1, 24), n) for n in range(35, 39)]
    assert all(r.system_buy_price_gbp_per_mwh == r.price_gbp_per_mwh for r in prices.readings)
    assert prices.latest_published_utc == utc("2023-01-24T19:00Z")


@needs_shared
@pytest.mark.parametrize(
    ("name", "method", "now"),
    [
        ("neso_national_2023-01-24.json", "national_carbon", "2023-01-24T18:40Z"),
        ("elexon_system_prices_2023-01-24.json", "system_prices", "2023-01-24T19:00Z"),
    ],
)
def test_replay_writes_the_recorded_documents(name: str, method: str, now: str) -> None:
    replay = ReplaySource(SHARED_GRID)
    doc = getattr(replay, method)(utc("2023-01-24T17:00Z"), utc("2023-01-24T19:00Z"), now=utc(now))
    assert json.loads(json.dumps(doc)) == fixture(name)


# --------------------------------------------------------------------------------------------------
# Malformed documents: each names its field

Mutation = Callable[[dict[str, Any]], None]


def _set(path: tuple[Any, ...], value: Any) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        target: Any = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _delete(path: tuple[Any, ...]) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        target: Any = doc
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


def _repeat_row(rows_path: tuple[Any, ...]) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        rows: Any = doc
        for key in rows_path:
            rows = rows[key]
        rows[1] = copy.deepcopy(rows[0])

    return mutate


def _too_many(rows_path: tuple[Any, ...]) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        rows: Any = doc
        for key in rows_path[:-1]:
            rows = rows[key]
        rows[rows_path[-1]] = [rows[rows_path[-1]][0]] * (MAX_FEED_ROWS + 1)

    return mutate


NATIONAL = "neso_national_2023-01-24.json"
REGIONAL = "neso_regional_2023-01-24.json"
ELEXON = "elexon_system_prices_2023-01-24.json"

MALFORMED: list[tuple[str, str, Mutation, str]] = [
    # NESO national
    (NATIONAL, "no data", _delete(("data",)), "data"),
    (NATIONAL, "data a string", _set(("data",), "x"), "data"),
    (NATIONAL, "row not an object", _set(("data", 2), [1, 2]), "data[2]"),
    (NATIONAL, "missing intensity", _delete(("data", 0, "intensity")), "data[0].intensity"),
    (NATIONAL, "missing actual key", _delete(("data", 1, "intensity", "actual")), "data[1].intensity.actual"),
    (NATIONAL, "missing forecast", _delete(("data", 1, "intensity", "forecast")), "data[1].intensity.forecast"),
    (NATIONAL, "forecast a string", _set(("data", 0, "intensity", "forecast"), "260"), "data[0].intensity.forecast"),
    (NATIONAL, "forecast a bool", _set(("data", 0, "intensity", "forecast"), True), "data[0].intensity.forecast"),
    (NATIONAL, "actual NaN", _set(("data", 2, "intensity", "actual"), math.nan), "data[2].intensity.actual"),
    (NATIONAL, "actual infinite", _set(("data", 2, "intensity", "actual"), math.inf), "data[2].intensity.actual"),
    (NATIONAL, "negative actual", _set(("data", 0, "intensity", "actual"), -1), "data[0].intensity.actual"),
    (NATIONAL, "unknown index", _set(("data", 0, "intensity", "index"), "medium"), "data[0].intensity.index"),
    (NATIONAL, "naive from", _set(("data", 0, "from"), "2023-01-24T17:00"), "data[0].from"),
    (NATIONAL, "naive to", _set(("data", 0, "to"), "2023-01-24T17:30"), "data[0].to"),
    (NATIONAL, "not a time", _set(("data", 0, "from"), "yesterday"), "data[0].from"),
    (NATIONAL, "to is an hour on", _set(("data", 2, "to"), "2023-01-24T19:00Z"), "data[2].to"),
    (NATIONAL, "off the half hour", _set(("data", 0, "from"), "2023-01-24T16:50Z"), "data[0].from"),
    (NATIONAL, "repeated period", _repeat_row(("data",)), "data[1].from"),
    (NATIONAL, "too many rows", _too_many(("data",)), "data"),
    # NESO regional
    (REGIONAL, "regionid a string", _set(("data", "regionid"), "13"), "data.regionid"),
    (REGIONAL, "regionid out of range", _set(("data", "regionid"), 18), "data.regionid"),
    (REGIONAL, "missing shortname", _delete(("data", "shortname")), "data.shortname"),
    (REGIONAL, "missing periods", _delete(("data", "data")), "data.data"),
    (
        REGIONAL,
        "missing forecast",
        _delete(("data", "data", 3, "intensity", "forecast")),
        "data.data[3].intensity.forecast",
    ),
    (REGIONAL, "naive from", _set(("data", "data", 1, "from"), "2023-01-24 17:30:00"), "data.data[1].from"),
    (REGIONAL, "too many rows", _too_many(("data", "data")), "data.data"),
    # Elexon system prices
    (ELEXON, "no data", _delete(("data",)), "data"),
    (ELEXON, "period 0", _set(("data", 0, "settlementPeriod"), 0), "data[0].settlementPeriod"),
    (ELEXON, "period 51", _set(("data", 0, "settlementPeriod"), 51), "data[0].settlementPeriod"),
    (ELEXON, "period 49 on a 48-period day", _set(("data", 0, "settlementPeriod"), 49), "data[0].settlementPeriod"),
    (ELEXON, "period a string", _set(("data", 0, "settlementPeriod"), "35"), "data[0].settlementPeriod"),
    (ELEXON, "period a float", _set(("data", 0, "settlementPeriod"), 35.0), "data[0].settlementPeriod"),
    (ELEXON, "date not ISO", _set(("data", 1, "settlementDate"), "24/01/2023"), "data[1].settlementDate"),
    (ELEXON, "startTime off", _set(("data", 1, "startTime"), "2023-01-24T17:00:00Z"), "data[1].startTime"),
    (ELEXON, "naive startTime", _set(("data", 0, "startTime"), "2023-01-24T17:00:00"), "data[0].startTime"),
    (
        ELEXON,
        "naive createdDateTime",
        _set(("data", 0, "createdDateTime"), "2023-01-24T17:30:00"),
        "data[0].createdDateTime",
    ),
    (ELEXON, "missing sell price", _delete(("data", 2, "systemSellPrice")), "data[2].systemSellPrice"),
    (ELEXON, "null sell price", _set(("data", 2, "systemSellPrice"), None), "data[2].systemSellPrice"),
    (ELEXON, "NaN buy price", _set(("data", 3, "systemBuyPrice"), math.nan), "data[3].systemBuyPrice"),
    (ELEXON, "volume a string", _set(("data", 0, "netImbalanceVolume"), "291.9"), "data[0].netImbalanceVolume"),
    (ELEXON, "repeated period", _repeat_row(("data",)), "data[1].settlementPeriod"),
    (ELEXON, "too many rows", _too_many(("data",)), "data"),
]


@pytest.mark.parametrize(
    ("name", "mutate", "field_path"),
    [pytest.param(name, mutate, path, id=f"{name.split('_')[0]}-{what}") for name, what, mutate, path in MALFORMED],
)
def test_malformed_documents_name_the_bad_field(name: str, mutate: Mutation, field_path: str) -> None:
    doc = fixture(name)
    parse = parse_elexon_system_prices if name == ELEXON else parse_neso_carbon
    parse(copy.deepcopy(doc))  # the unmutated fixture parses
    mutate(doc)
    with pytest.raises(FeedError) as e:
        parse(doc)
    assert e.value.field_path == field_path, str(e.value)


def test_nan_from_json_text_is_refused() -> None:
    text = (FIXTURES / NATIONAL).read_text().replace('"actual": 254', '"actual": NaN')
    with pytest.raises(FeedError) as e:
        parse_neso_carbon(json.loads(text))
    assert e.value.field_path == "data[0].intensity.actual"


def test_null_values_are_allowed_where_the_format_allows_them() -> None:
    doc = fixture(NATIONAL)
    doc["data"][0]["intensity"]["forecast"] = None  # NESO publishes some periods without a forecast
    readings = parse_neso_carbon(doc)
    assert utc("2023-01-24T17:00Z") not in readings.values(Kind.FORECAST)
    assert utc("2023-01-24T17:00Z") in readings.values(Kind.ACTUAL)
    prices = fixture(ELEXON)
    del prices["data"][0]["createdDateTime"]
    prices["data"][1]["netImbalanceVolume"] = 291.9136
    parsed = parse_elexon_system_prices(prices)
    assert parsed.readings[0].published_utc is None
    assert parsed.readings[1].net_imbalance_volume_mwh == 291.9136


def test_row_limit_mirrors_the_import_limit() -> None:
    from schemas.limits import MAX_ROWS_PER_IMPORT

    assert MAX_FEED_ROWS == MAX_ROWS_PER_IMPORT


@needs_shared
def test_clock_change_days_follow_the_settlement_calendar() -> None:
    replay = ReplaySource(SHARED_GRID)
    autumn = parse_elexon_system_prices(replay.system_prices_for_date(date(2023, 10, 29), now=utc("2023-10-31T00:00Z")))
    numbers = [r.settlement_period for r in autumn.readings]
    assert max(numbers) == 50  # the recorded file lacks two periods that day; 50 exists
    assert all(r.start_utc == period_start(r.settlement_date, r.settlement_period) for r in autumn.readings)
    spring = replay.system_prices_for_date(date(2023, 3, 26), now=utc("2023-03-28T00:00Z"))
    assert [row["settlementPeriod"] for row in spring["data"]] == list(range(1, 47))
    spring["data"][0]["settlementPeriod"] = 47
    with pytest.raises(FeedError) as e:
        parse_elexon_system_prices(spring)
    assert e.value.field_path == "data[0].settlementPeriod"


# --------------------------------------------------------------------------------------------------
# Replay: what the APIs would have said at `now`


def _data_range(data_dir: Path) -> tuple[datetime, datetime]:
    starts = sorted(set(csv_carbon(data_dir)) & set(csv_prices(data_dir)))
    return starts[0], starts[-1]


def _check_round_trip(data_dir: Path, start: datetime, end: datetime, now: datetime) -> None:
    replay = ReplaySource(data_dir)
    carbon = parse_neso_carbon(json.loads(json.dumps(replay.national_carbon(start, end, now=now))))
    prices = parse_elexon_system_prices(json.loads(json.dumps(replay.system_prices(start, end, now=now))))
    recorded_carbon = {s: v for s, v in csv_carbon(data_dir).items() if start <= s < end}
    recorded_prices = {s: v for s, v in csv_prices(data_dir).items() if start <= s < end}
    assert carbon.values(Kind.FORECAST) == {s: f for s, (f, _) in recorded_carbon.items() if f is not None}
    assert carbon.values(Kind.ACTUAL) == {
        s: a for s, (_, a) in recorded_carbon.items() if a is not None and s + HALF_HOUR <= now
    }
    assert prices.values() == {s: p for s, p in recorded_prices.items() if p is not None and s + HALF_HOUR <= now}
    for r in prices.readings:
        assert r.published_utc is not None and r.published_utc <= now


def test_replay_round_trip_on_the_default_data() -> None:
    data_dir = default_data_dir()
    first, _ = _data_range(data_dir)
    start = first + 48 * HALF_HOUR
    _check_round_trip(data_dir, start, start + 96 * HALF_HOUR, now=start + 50 * HALF_HOUR + timedelta(minutes=7))


def test_actuals_and_prices_are_hidden_before_now() -> None:
    replay = ReplaySource(default_data_dir())
    first, _ = _data_range(default_data_dir())
    start, end = first + 48 * HALF_HOUR, first + 96 * HALF_HOUR
    before = replay.national_carbon(start, end, now=start - timedelta(hours=3))
    assert before["data"] and all(row["intensity"]["actual"] is None for row in before["data"])
    assert all(row["intensity"]["forecast"] is not None for row in before["data"])
    assert replay.system_prices(start, end, now=start)["data"] == []
    # A period still running at `now` shows neither its actual nor its price.
    now = start + 10 * HALF_HOUR + timedelta(minutes=29)
    carbon = parse_neso_carbon(replay.national_carbon(start, end, now=now))
    prices = parse_elexon_system_prices(replay.system_prices(start, end, now=now))
    assert max(carbon.values(Kind.ACTUAL)) == start + 9 * HALF_HOUR
    assert max(prices.values()) == start + 9 * HALF_HOUR
    assert len(carbon.values(Kind.FORECAST)) == 48


def test_replay_refuses_bad_windows() -> None:
    replay = ReplaySource(default_data_dir())
    t = utc("2023-12-01T00:00Z")
    with pytest.raises(ValueError):
        replay.national_carbon(t, t, now=t)
    with pytest.raises(ValueError):
        replay.system_prices(t, t + HALF_HOUR, now=datetime(2023, 12, 1))
    with pytest.raises(ValueError):
        replay.national_carbon(t + timedelta(minutes=5), t + HALF_HOUR, now=t)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    start_frac=st.floats(min_value=0.0, max_value=1.0),
    n_slots=st.integers(min_value=1, max_value=300),
    now_offset_min=st.integers(min_value=-600, max_value=20_000),
)
def test_replay_round_trip_over_random_windows(start_frac: float, n_slots: int, now_offset_min: int) -> None:
    data_dir = SHARED_GRID if (SHARED_GRID / GB_CARBON_FILE).is_file() else default_data_dir()
    first, last = _data_range(data_dir)
    span = int((last - first) / HALF_HOUR)
    start = first + int(start_frac * span) * HALF_HOUR
    _check_round_trip(data_dir, start, start + n_slots * HALF_HOUR, now=start + timedelta(minutes=now_offset_min))


def test_signal_series_from_replayed_documents() -> None:
    data_dir = default_data_dir()
    first, _ = _data_range(data_dir)
    start, n = first + 48 * HALF_HOUR, 96
    now = start + 40 * HALF_HOUR
    replay = ReplaySource(data_dir)
    series = to_signal_series(
        parse_neso_carbon(replay.national_carbon(start, start + n * HALF_HOUR, now=now)),
        parse_elexon_system_prices(replay.system_prices(start, start + n * HALF_HOUR, now=now)),
        start_utc=start,
        n_slots=n,
    )
    recorded_carbon, recorded_prices = csv_carbon(data_dir), csv_prices(data_dir)
    assert len(series) == n and series.region == "GB"
    for i in range(n):
        s = start + i * HALF_HOUR
        forecast, actual = recorded_carbon[s]
        if i < 40 and actual is not None and actual > 0:
            assert series.carbon_g_per_kwh[i] == actual
        elif i >= 40 and forecast is not None:
            assert series.carbon_g_per_kwh[i] == forecast
        if i < 40 and recorded_prices.get(s) is not None:
            assert series.price_gbp_per_mwh[i] == recorded_prices[s]
            assert not series.price_filled[i]  # type: ignore[index]
    assert series.price_filled is not None and bool(np.all(series.price_filled[40:]))
    assert np.all(np.isfinite(series.price_gbp_per_mwh))


def test_signal_series_needs_some_value() -> None:
    carbon = parse_neso_carbon(fixture(NATIONAL))
    no_prices = parse_elexon_system_prices({"data": []})
    with pytest.raises(FeedError) as e:
        to_signal_series(carbon, no_prices, start_utc=utc("2023-01-24T17:00Z"), n_slots=4)
    assert e.value.field_path == "price"


# --------------------------------------------------------------------------------------------------
# Staleness


def test_staleness_both_ways() -> None:
    limit = timedelta(hours=1)
    latest = utc("2023-01-24T18:30Z")
    assert staleness(latest, latest + limit, limit) == Fresh(limit, limit)  # exactly at the limit: fresh
    assert staleness(latest, latest + timedelta(minutes=5), limit) == Fresh(timedelta(minutes=5), limit)
    late = latest + limit + timedelta(seconds=1)
    assert staleness(latest, late, limit) == Stale(limit + timedelta(seconds=1), limit)
    assert staleness(None, late, limit) == Stale(None, limit)


def test_staleness_refuses_future_signals_naive_times_and_bad_limits() -> None:
    t = utc("2023-01-24T18:30Z")
    with pytest.raises(ValueError):
        staleness(t + timedelta(minutes=1), t, timedelta(hours=1))
    with pytest.raises(ValueError):
        staleness(t, datetime(2023, 1, 24, 19), timedelta(hours=1))
    with pytest.raises(ValueError):
        staleness(t, t, timedelta(0))


def test_staleness_from_parsed_feeds() -> None:
    carbon = parse_neso_carbon(fixture(NATIONAL))
    prices = parse_elexon_system_prices(fixture(ELEXON))
    now = utc("2023-01-24T19:10Z")
    limit = timedelta(minutes=45)
    assert isinstance(staleness(carbon.latest_actual_end_utc, now, limit), Fresh)  # 18:30, 40 min old
    assert isinstance(staleness(carbon.latest_actual_end_utc, now, timedelta(minutes=30)), Stale)
    assert staleness(prices.latest_published_utc, now, limit) == Fresh(timedelta(minutes=10), limit)


@given(age_s=st.integers(min_value=0, max_value=10**6), limit_s=st.integers(min_value=1, max_value=10**6))
def test_staleness_is_fresh_exactly_within_the_limit(age_s: int, limit_s: int) -> None:
    now = utc("2023-06-01T12:00Z")
    result = staleness(now - timedelta(seconds=age_s), now, timedelta(seconds=limit_s))
    assert isinstance(result, Fresh) == (age_s <= limit_s)
    assert result.age == timedelta(seconds=age_s)


def test_module_is_pure() -> None:
    source = Path(feeds.__file__).read_text()
    for name in ("fastapi", "sqlalchemy", "httpx", "kernel", "datetime.now", "utcnow", "time.time"):
        assert name not in source, name
