"""Rule 3: 10-of-10 baseline with in-day adjustment."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from fractions import Fraction

from grid.periods import LONDON, PERIOD, utc_for_local
from ledger.baseline import BaselineParams, adjusted_baseline, in_day_adjustment, unadjusted_baseline
from tests.ledger.conftest import utc

P = BaselineParams()


def history(days: int, end: datetime, value_of=lambda d, t: 1000) -> dict[datetime, int]:
    """Half-hourly readings for `days` days before `end` (exclusive)."""
    out = {}
    t = end - timedelta(days=days)
    while t < end:
        out[t] = value_of(t.astimezone(LONDON).date(), t)
        t += PERIOD
    return out


def test_mean_of_last_ten_same_type_days() -> None:
    event = utc(2023, 12, 5, 17)  # a Tuesday
    # each day's value encodes its date so we can tell which days were used
    readings = history(40, event, lambda d, t: d.toordinal() % 1000)
    b = unadjusted_baseline(event, readings, set(), P)
    used = list(b.days_used)
    assert len(used) == 10 and all(d.weekday() < 5 for d in used)
    assert used[0] == date(2023, 12, 4) and used == sorted(used, reverse=True)
    assert b.energy_wh == Fraction(sum(d.toordinal() % 1000 for d in used), 10)


def test_event_days_and_other_day_type_are_excluded() -> None:
    event = utc(2023, 12, 5, 17)
    readings = history(40, event)
    excluded = {date(2023, 12, 4), date(2023, 11, 30)}
    b = unadjusted_baseline(event, readings, excluded, P)
    assert not excluded & set(b.days_used)
    weekend = unadjusted_baseline(utc(2023, 12, 9, 17), history(60, utc(2023, 12, 9, 17)), set(), P)
    assert all(d.weekday() >= 5 for d in weekend.days_used) and len(weekend.days_used) == 10


def test_fewer_than_ten_uses_those_available_at_least_five() -> None:
    event = utc(2023, 12, 5, 17)
    # 9 calendar days back from Tuesday 5 Dec 17:00 hold 6 working-day 17:00 readings (27 Nov .. 4 Dec)
    b6 = unadjusted_baseline(event, history(9, event), set(), P)
    assert len(b6.days_used) == 6 and b6.energy_wh == 1000
    b4 = unadjusted_baseline(event, history(5, event), set(), P)
    assert b4.energy_wh is None and "insufficient data" in b4.reason


def test_same_local_clock_time_across_dst() -> None:
    # event at 17:00 London on a BST day; history crosses the autumn clock change
    event = datetime(2023, 10, 31, 17, 0, tzinfo=LONDON).astimezone(utc(2023, 1, 1).tzinfo)
    readings = history(30, event, lambda d, t: 2000 if t.astimezone(LONDON).hour == 17 else 1)
    b = unadjusted_baseline(event, readings, set(), P)
    assert b.energy_wh == 2000  # always the 17:00 local period, whatever the UTC offset
    assert date(2023, 10, 29) not in b.days_used  # clock-change days are not baseline days


def test_event_on_spring_clock_change_day_uses_clock_time() -> None:
    # 26 March 2023 (a Sunday): period 3 is 02:00 BST; baseline from other non-working days' 02:00
    event = utc(2023, 3, 26, 1, 0)
    readings = history(60, event, lambda d, t: t.astimezone(LONDON).hour * 100 + t.astimezone(LONDON).minute)
    b = unadjusted_baseline(event, readings, set(), P)
    assert b.energy_wh == 200 and len(b.days_used) == 10


def test_event_in_autumn_repeated_hour() -> None:
    # 29 October 2023 periods 3 and 5 are both 01:00 local; both use other days' 01:00 period
    readings = history(
        60, utc(2023, 10, 29, 0, 0), lambda d, t: t.astimezone(LONDON).hour * 100 + t.astimezone(LONDON).minute
    )
    for start in (utc(2023, 10, 29, 0, 0), utc(2023, 10, 29, 1, 0)):
        assert unadjusted_baseline(start, readings, set(), P).energy_wh == 100
    assert utc_for_local(date(2023, 10, 22), datetime(2023, 1, 1, 1, 0).time()) is not None


def test_in_day_adjustment_window_and_cap() -> None:
    event = utc(2023, 12, 5, 17)
    readings = history(30, event)  # baseline 1000 everywhere
    # the 3 hours ending 1 hour before the event: 13:00..16:00 UTC (London is on GMT in December)
    for i in range(6):
        readings[utc(2023, 12, 5, 13) + i * PERIOD] = 1100
    readings[utc(2023, 12, 5, 16)] = 5000  # inside the 1-hour gap: ignored
    adj = in_day_adjustment(event, readings, set(), P)
    assert adj.available and adj.energy_wh == 100
    assert adjusted_baseline(Fraction(1000), adj, P) == 1100
    big = in_day_adjustment(
        event, {**readings, **{utc(2023, 12, 5, 13) + i * PERIOD: 1900 for i in range(6)}}, set(), P
    )
    assert big.energy_wh == 900 and adjusted_baseline(Fraction(1000), big, P) == 1200  # capped at +20%
    low = in_day_adjustment(event, {**readings, **{utc(2023, 12, 5, 13) + i * PERIOD: 100 for i in range(6)}}, set(), P)
    assert adjusted_baseline(Fraction(1000), low, P) == 800  # capped at −20%
    pos_only = BaselineParams(in_day_mode="positive_only")
    assert adjusted_baseline(Fraction(1000), low, pos_only) == 1000
    assert adjusted_baseline(Fraction(1000), big, P, resource_type="storage") == 1000  # batteries: none
    none = BaselineParams(in_day_mode="none")
    assert not in_day_adjustment(event, readings, set(), none).available


def test_in_day_adjustment_unavailable_without_data() -> None:
    event = utc(2023, 12, 5, 17)
    readings = history(30, event)
    del readings[utc(2023, 12, 5, 14)]
    adj = in_day_adjustment(event, readings, set(), P)
    assert not adj.available and "no reading" in adj.reason
    assert adjusted_baseline(Fraction(1000), adj, P) == 1000
