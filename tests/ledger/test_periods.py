"""Rule 1: GB settlement periods in Europe/London, 46 / 50 on clock-change days."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest

from grid import periods
from tests.ledger.conftest import utc


@pytest.mark.parametrize(
    ("d", "count"),
    [
        (date(2023, 3, 26), 46),
        (date(2023, 10, 29), 50),
        (date(2024, 3, 31), 46),
        (date(2024, 10, 27), 50),
        (date(2023, 7, 1), 48),
        (date(2023, 12, 25), 48),
    ],
)
def test_periods_per_day(d: date, count: int) -> None:
    assert periods.periods_in_day(d) == count
    ps = periods.day_periods(d)
    assert [p.number for p in ps] == list(range(1, count + 1))
    assert ps[0].start_utc == periods.local_midnight_utc(d)
    assert ps[-1].end_utc == periods.local_midnight_utc(d + timedelta(days=1))
    assert periods.is_clock_change_day(d) == (count != 48)


def test_spring_clock_change_day() -> None:
    d = date(2023, 3, 26)
    ps = periods.day_periods(d)
    # 00:00 and 00:30 GMT, then 01:00 UTC is 02:00 BST: period 3 starts at 02:00 local
    assert ps[2].start_utc == utc(2023, 3, 26, 1, 0)
    assert ps[2].local_start.time() == time(2, 0)
    assert periods.period_of(utc(2023, 3, 26, 22, 59)).number == 46
    assert periods.period_of(utc(2023, 3, 26, 23, 0)).settlement_date == date(2023, 3, 27)


def test_autumn_clock_change_day() -> None:
    d = date(2023, 10, 29)
    ps = periods.day_periods(d)
    # local midnight is 23:00 UTC the day before (BST)
    assert ps[0].start_utc == utc(2023, 10, 28, 23, 0)
    # 01:00 local happens twice: periods 3 (BST, 00:00 UTC) and 5 (GMT, 01:00 UTC)
    assert ps[2].local_start.time() == ps[4].local_start.time() == time(1, 0)
    assert (ps[2].start_utc, ps[4].start_utc) == (utc(2023, 10, 29, 0, 0), utc(2023, 10, 29, 1, 0))
    assert periods.period_of(utc(2023, 10, 29, 23, 30)).number == 50
    assert periods.period_of(utc(2023, 10, 28, 23, 0)).label() == "2023-10-29/1"


def test_period_of_roundtrip_over_a_year() -> None:
    t = utc(2023, 1, 1)
    while t < utc(2024, 1, 1):
        p = periods.period_of(t)
        assert periods.period_start(p.settlement_date, p.number) == t
        t += timedelta(hours=7, minutes=30)


def test_windows_must_be_aligned() -> None:
    with pytest.raises(periods.PeriodError):
        periods.periods_between(utc(2023, 1, 1, 17, 15), utc(2023, 1, 1, 18))
    with pytest.raises(periods.PeriodError):
        periods.periods_between(datetime(2023, 1, 1, 17), datetime(2023, 1, 1, 18))  # naive
    assert len(periods.periods_between(utc(2023, 10, 28, 23), utc(2023, 10, 29, 23))) == 48


def test_local_wall_clock_mapping_skips_ambiguous_and_missing_times() -> None:
    assert periods.utc_for_local(date(2023, 3, 26), time(1, 0)) is None  # skipped
    assert periods.utc_for_local(date(2023, 10, 29), time(1, 30)) is None  # twice
    assert periods.utc_for_local(date(2023, 7, 3), time(17, 0)) == datetime(2023, 7, 3, 16, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("d", "working"),
    [
        (date(2023, 5, 8), False),  # coronation bank holiday
        (date(2023, 4, 7), False),
        (date(2023, 4, 10), False),  # Good Friday, Easter Monday
        (date(2023, 12, 26), False),
        (date(2022, 12, 27), False),  # Boxing day; substitute day
        (date(2023, 5, 9), True),
        (date(2023, 7, 1), False),  # Tuesday; Saturday
    ],
)
def test_day_types(d: date, working: bool) -> None:
    assert periods.is_working_day(d) is working
