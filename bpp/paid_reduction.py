"""What a buyer will really be paid for: an offer's expected paid reduction against the settlement baseline.

The plan sells a reduction below its own import (the plan's baseline); settlement measures delivery against the
meter's "10-of-10" baseline (p415-settlement.md rule 3, ledger/baseline.py) and pays, per half hour,
min(delivered, contracted) where delivered = settlement baseline − metered. If the site runs the plan with the
offer's reduction imposed, metered = planned import − offered kW, so in each slot the paid reduction is
clip(settlement baseline − planned import + offered, 0, offered); the offer's expected paid kW is the mean over
its window. The two differ exactly when the plan's import is not the settlement baseline.

The BPP may not import the ledger: :func:`ten_of_ten_kw` states the same unadjusted rule on kW readings (the mean
of the same local half hour over the last 10 eligible days of the same day type within 60 days, excluding event
and clock-change days, at least 5 days, else no baseline); tests/bpp/test_paid_reduction.py checks both agree on
the same data. The in-day adjustment needs the readings of the event day itself, which an offer made ahead of
time cannot know: the expectation is on the unadjusted baseline. Pure.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from grid.periods import day_type, is_clock_change_day, local_clock, period_of, utc_for_local


@dataclass(frozen=True, kw_only=True)
class TenOfTen:
    """The settlement baseline's parameters (ledger/baseline.py `BaselineParams` defaults)."""

    days: int = 10
    min_days: int = 5
    lookback_days: int = 60

    def __post_init__(self) -> None:
        if not 1 <= self.min_days <= self.days <= self.lookback_days:
            raise ValueError("need 1 <= min_days <= days <= lookback_days")


@dataclass(frozen=True)
class Baseline:
    power_kw: float | None  # None: no baseline (the reason says why)
    reason: str = ""


@dataclass(frozen=True)
class ExpectedPaid:
    reduction_kw: float | None  # None: not known (the reason says why)
    reason: str = ""


def _eligible_instants(period_start_utc: datetime, rule: TenOfTen, event_days: Collection[date]) -> Iterator[datetime]:
    """The same local half hour on each earlier day of the same day type, most recent first."""
    settlement_day = period_of(period_start_utc).settlement_date
    wall_clock = local_clock(period_start_utc)
    for back in range(1, rule.lookback_days + 1):
        day = settlement_day - timedelta(days=back)
        if day_type(day) == day_type(settlement_day) and day not in event_days and not is_clock_change_day(day):
            instant = utc_for_local(day, wall_clock)
            if instant is not None:
                yield instant


def ten_of_ten_kw(
    period_start_utc: datetime,
    history_kw: Mapping[datetime, float],
    *,
    event_days: Collection[date] = (),
    rule: TenOfTen = TenOfTen(),
) -> Baseline:
    """The settlement baseline of one half hour from the site's metered history (mean kW per half hour, keyed by
    period start, UTC)."""
    values = [history_kw[t] for t in _eligible_instants(period_start_utc, rule, event_days) if t in history_kw]
    used = values[: rule.days]
    if len(used) < rule.min_days:
        return Baseline(
            None,
            f"insufficient metered history: {len(used)} eligible day(s) in {rule.lookback_days} days, "
            f"need {rule.min_days}",
        )
    return Baseline(sum(used) / len(used))


def expected_paid_kw(
    *, offered_kw: float, planned_import_kw: Sequence[float], settlement_baseline: Sequence[Baseline]
) -> ExpectedPaid:
    """The reduction a buyer of `offered_kw` over the window is expected to be paid for: per slot
    clip(baseline − (planned import − offered), 0, offered), averaged over the window's slots."""
    if len(planned_import_kw) != len(settlement_baseline) or not planned_import_kw:
        raise ValueError("planned_import_kw and settlement_baseline must cover the same, non-empty window")
    paid = []
    for planned, baseline in zip(planned_import_kw, settlement_baseline, strict=True):
        if baseline.power_kw is None:
            return ExpectedPaid(None, baseline.reason or "no settlement baseline")
        paid.append(min(max(baseline.power_kw - planned + offered_kw, 0.0), offered_kw))
    return ExpectedPaid(sum(paid) / len(paid))
