"""Baseline "10-of-10 with in-day adjustment" (p415-settlement.md rule 3), over plain data.

For a meter and a settlement period: the mean metered energy of the same period over the most recent
10 days of the same day type (working / non-working, grid/periods.py) within a 60-day lookback,
excluding event days (days with any declared activity on that meter). Fewer than 10 eligible days:
use those available, at least 5; otherwise the baseline is "insufficient data".

"Same period" is matched by local wall-clock time (the period starting 17:30 Europe/London), so
an event on a clock-change day compares like with like: on 26 March period 3 is 02:00 BST and is
baselined on other days' 02:00 periods; on 29 October both 01:00 periods (BST and GMT) use the
01:00 period of other days. Clock-change days themselves are not used as baseline days (their
periods do not line up with other days'). A day without a reading for that period is skipped.

In-day adjustment: the mean difference (actual − unadjusted baseline) over the 6 periods (3 hours)
ending 1 hour before the event starts is added to every event period's baseline, capped at ±20% of
that period's baseline. Modes: symmetric (default), positive_only, none — storage (batteries) gets
none. When any adjustment-window period lacks a reading or a baseline, no adjustment is applied and
the reason is recorded. All arithmetic is exact (Fraction of Wh).

Readings are signed Wh: negative is a net export (a battery discharging beyond its site's load, on-site
generation). The mean is taken over signed values, so a site that usually exports has a negative baseline, and
the in-day cap is a magnitude (±ratio × |baseline|) whatever the baseline's sign.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from fractions import Fraction

from grid.periods import PERIOD, day_type, is_clock_change_day, local_clock, period_of, utc_for_local

IN_DAY_MODES = ("symmetric", "positive_only", "none")


@dataclass(frozen=True)
class BaselineParams:
    days: int = 10
    min_days: int = 5
    lookback_days: int = 60
    in_day_mode: str = "symmetric"
    in_day_cap_ratio: Fraction = Fraction(1, 5)
    in_day_window_periods: int = 6  # 3 hours …
    in_day_gap_periods: int = 2  # … ending 1 hour before the event

    def __post_init__(self) -> None:
        if self.in_day_mode not in IN_DAY_MODES:
            raise ValueError(f"in_day_mode must be one of {IN_DAY_MODES}")
        if not 1 <= self.min_days <= self.days <= self.lookback_days:
            raise ValueError("need 1 <= min_days <= days <= lookback_days")
        if self.in_day_cap_ratio < 0 or self.in_day_window_periods < 1 or self.in_day_gap_periods < 0:
            raise ValueError("in-day adjustment parameters must be non-negative (window >= 1)")


@dataclass(frozen=True)
class BaselineValue:
    energy_wh: Fraction | None  # None: insufficient data
    days_used: tuple[date, ...]
    reason: str = ""


@dataclass(frozen=True)
class Adjustment:
    energy_wh: Fraction  # per period, before capping; 0 when unavailable
    available: bool
    reason: str = ""
    missing_reading_at: datetime | None = None  # unavailable because this window period has no reading


@dataclass(frozen=True)
class LowestAdjustment(Adjustment):
    """The in-day adjustment least favourable to the provider: each period's baseline lowered by the full cap
    (nothing in positive_only mode, none for storage). The final runs use it when the window's readings are
    withheld, so withholding them cannot raise the baseline (README "Settlement")."""


def least_favourable(missing: Adjustment) -> LowestAdjustment:
    return LowestAdjustment(Fraction(0), True, f"{missing.reason}; at a final run the lowest adjustment applies")


def unadjusted_baseline(
    period_start_utc: datetime,
    readings: Mapping[datetime, int],
    event_days: Collection[date],
    params: BaselineParams,
) -> BaselineValue:
    """Mean of the same local half hour over the last `days` eligible days (rule 3)."""
    target = period_of(period_start_utc)
    d0 = target.settlement_date
    clock = local_clock(period_start_utc)
    wanted_type = day_type(d0)
    used: list[date] = []
    total = 0
    for back in range(1, params.lookback_days + 1):
        d = d0 - timedelta(days=back)
        if day_type(d) != wanted_type or d in event_days or is_clock_change_day(d):
            continue
        instant = utc_for_local(d, clock)
        if instant is None:
            continue
        value = readings.get(instant)
        if value is None:
            continue
        used.append(d)
        total += value
        if len(used) == params.days:
            break
    if len(used) < params.min_days:
        return BaselineValue(
            None,
            tuple(used),
            f"insufficient data: {len(used)} eligible {wanted_type} day(s) in {params.lookback_days}-day "
            f"lookback, need {params.min_days}",
        )
    return BaselineValue(Fraction(total, len(used)), tuple(used))


def in_day_adjustment(
    event_start_utc: datetime,
    readings: Mapping[datetime, int],
    event_days: Collection[date],
    params: BaselineParams,
) -> Adjustment:
    """Mean (actual − unadjusted baseline) over the window ending `gap` periods before the event."""
    if params.in_day_mode == "none":
        return Adjustment(Fraction(0), False, "in-day adjustment disabled by policy")
    first = event_start_utc - (params.in_day_gap_periods + params.in_day_window_periods) * PERIOD
    diffs: list[Fraction] = []
    for i in range(params.in_day_window_periods):
        p = first + i * PERIOD
        actual = readings.get(p)
        if actual is None:
            return Adjustment(
                Fraction(0),
                False,
                f"in-day adjustment unavailable: no reading for {p.isoformat()}",
                missing_reading_at=p,
            )
        base = unadjusted_baseline(p, readings, event_days, params)
        if base.energy_wh is None:
            return Adjustment(
                Fraction(0), False, f"in-day adjustment unavailable: no baseline for {p.isoformat()} ({base.reason})"
            )
        diffs.append(actual - base.energy_wh)
    return Adjustment(sum(diffs, Fraction(0)) / len(diffs), True)


def event_start(period_start_utc: datetime, declared: Collection[datetime]) -> datetime:
    """The first period of the unbroken run of declared periods on the meter that holds `period_start_utc`:
    the event whose in-day adjustment window it shares, whichever order declared each period (two orders
    back to back on one meter are one event, with one adjustment)."""
    t = period_start_utc
    while t - PERIOD in declared:
        t -= PERIOD
    return t


def adjusted_baseline(
    baseline_wh: Fraction, adjustment: Adjustment, params: BaselineParams, resource_type: str = "compute"
) -> Fraction:
    """Baseline plus the in-day adjustment, capped at ±cap × baseline; storage gets none."""
    if not adjustment.available or resource_type == "storage" or params.in_day_mode == "none":
        return baseline_wh
    cap = params.in_day_cap_ratio * abs(baseline_wh)
    adj = -cap if isinstance(adjustment, LowestAdjustment) else max(-cap, min(cap, adjustment.energy_wh))
    if params.in_day_mode == "positive_only":
        adj = max(Fraction(0), adj)
    return baseline_wh + adj
