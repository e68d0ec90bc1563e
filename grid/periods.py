"""GB settlement periods and day types (p415-settlement.md rule 1; ../shared/DESIGN.md "Time").

Instants are stored in UTC. Settlement periods are 30 minutes of Europe/London local time, numbered
from 1 at local midnight: 48 a day, 46 on the spring clock change (01:00 GMT jumps to 02:00 BST),
50 in autumn (01:00–02:00 local happens twice). Period n of a day starts at local midnight (in UTC)
plus 30·(n−1) minutes, which handles both clock changes without special cases.

Day type for baselining (rule 3): working days are Monday–Friday except England & Wales bank
holidays; Saturdays, Sundays and bank holidays are non-working.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

LONDON = ZoneInfo("Europe/London")
PERIOD = timedelta(minutes=30)


class PeriodError(ValueError):
    pass


@dataclass(frozen=True, order=True)
class SettlementPeriod:
    settlement_date: date
    number: int
    start_utc: datetime

    @property
    def end_utc(self) -> datetime:
        return self.start_utc + PERIOD

    @property
    def local_start(self) -> datetime:
        return self.start_utc.astimezone(LONDON)

    def label(self) -> str:
        return f"{self.settlement_date.isoformat()}/{self.number}"


def require_utc(instant: datetime, what: str = "instant") -> datetime:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise PeriodError(f"{what} must carry a time zone (UTC), got naive {instant.isoformat()}")
    return instant.astimezone(UTC)


def is_period_aligned(instant: datetime) -> bool:
    """True when `instant` is a UTC half-hour boundary (every GB period boundary is one)."""
    u = require_utc(instant)
    return u.second == 0 and u.microsecond == 0 and u.minute in (0, 30)


def local_midnight_utc(d: date) -> datetime:
    # Midnight is never ambiguous or skipped in Europe/London (changes happen at 01:00 UTC).
    return datetime.combine(d, time(0), LONDON).astimezone(UTC)


def periods_in_day(d: date) -> int:
    """48, or 46 / 50 on the spring / autumn clock-change day."""
    span = local_midnight_utc(d + timedelta(days=1)) - local_midnight_utc(d)
    return int(span / PERIOD)


def is_clock_change_day(d: date) -> bool:
    return periods_in_day(d) != 48


def day_periods(d: date) -> list[SettlementPeriod]:
    start = local_midnight_utc(d)
    return [SettlementPeriod(d, n + 1, start + n * PERIOD) for n in range(periods_in_day(d))]


def period_of(instant: datetime) -> SettlementPeriod:
    """The settlement period containing `instant` (any aware datetime)."""
    u = require_utc(instant)
    d = u.astimezone(LONDON).date()
    start = local_midnight_utc(d)
    n = int((u - start) / PERIOD)
    return SettlementPeriod(d, n + 1, start + n * PERIOD)


def period_start(d: date, number: int) -> datetime:
    count = periods_in_day(d)
    if not 1 <= number <= count:
        raise PeriodError(f"{d} has {count} settlement periods, not {number}")
    return local_midnight_utc(d) + (number - 1) * PERIOD


def periods_between(start: datetime, end: datetime) -> list[SettlementPeriod]:
    """Periods covering [start, end); both ends must be half-hour boundaries."""
    s, e = require_utc(start, "start"), require_utc(end, "end")
    if not (is_period_aligned(s) and is_period_aligned(e)):
        raise PeriodError("window start and end must be on UTC half-hour boundaries")
    if e <= s:
        raise PeriodError("window end must be after its start")
    out = []
    t = s
    while t < e:
        out.append(period_of(t))
        t += PERIOD
    return out


def local_clock(instant: datetime) -> time:
    """Local (Europe/London) wall-clock start time of the half hour containing `instant`."""
    return require_utc(instant).astimezone(LONDON).time().replace(second=0, microsecond=0)


def utc_for_local(d: date, clock: time) -> datetime | None:
    """The UTC instant of local wall-clock `clock` on day `d`, or None if it does not exist that day
    (spring gap) or exists twice (autumn overlap) — such days are never used as baseline days."""
    naive = datetime.combine(d, clock)
    first = naive.replace(tzinfo=LONDON, fold=0)
    second = naive.replace(tzinfo=LONDON, fold=1)
    if first.utcoffset() != second.utcoffset():
        return None
    u = first.astimezone(UTC)
    if u.astimezone(LONDON).replace(tzinfo=None) != naive:
        return None  # skipped by the spring-forward gap
    return u


# --- England & Wales bank holidays (for working / non-working day types) -------------------------

# One-off holidays proclaimed for a single year (public record, gov.uk/bank-holidays).
EXTRA_BANK_HOLIDAYS = frozenset(
    {
        date(2022, 6, 3),
        date(2022, 9, 19),
        date(2023, 5, 8),
    }
)
# Regular holidays moved in those years (the 2022 spring bank holiday moved to 2 June).
MOVED_BANK_HOLIDAYS = {date(2022, 5, 30): date(2022, 6, 2)}


def easter_sunday(year: int) -> date:
    """Gregorian Easter (the anonymous Gregorian algorithm, "Meeus/Jones/Butcher")."""
    a = year % 19
    b, c = divmod(year, 100)
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    ell = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * ell) // 451
    month, day = divmod(h + ell - 7 * m + 114, 31)
    return date(year, month, day + 1)


def _first_monday(year: int, month: int) -> date:
    d = date(year, month, 1)
    return d + timedelta(days=(7 - d.weekday()) % 7)


def _last_monday(year: int, month: int) -> date:
    nxt = date(year + (month == 12), month % 12 + 1, 1)
    d = nxt - timedelta(days=1)
    return d - timedelta(days=d.weekday())


@lru_cache(maxsize=64)
def bank_holidays(year: int) -> frozenset[date]:
    """England & Wales bank holidays of `year`, with weekend substitute days."""
    days: set[date] = set()
    new_year = date(year, 1, 1)
    days.add(new_year + timedelta(days={5: 2, 6: 1}.get(new_year.weekday(), 0)))
    easter = easter_sunday(year)
    days.add(easter - timedelta(days=2))  # Good Friday
    days.add(easter + timedelta(days=1))  # Easter Monday
    days.add(_first_monday(year, 5))
    days.add(_last_monday(year, 5))
    days.add(_last_monday(year, 8))
    christmas, boxing = date(year, 12, 25), date(year, 12, 26)
    if christmas.weekday() == 5:  # Saturday: substitutes Mon 27 and Tue 28
        days |= {date(year, 12, 27), date(year, 12, 28)}
    elif christmas.weekday() == 6:  # Sunday: Boxing Day Monday, substitute Tuesday 27
        days |= {boxing, date(year, 12, 27)}
    elif boxing.weekday() == 5:  # Friday Christmas, Saturday Boxing Day: substitute Monday 28
        days |= {christmas, date(year, 12, 28)}
    else:
        days |= {christmas, boxing}
    days = {MOVED_BANK_HOLIDAYS.get(d, d) for d in days}
    days |= {d for d in EXTRA_BANK_HOLIDAYS if d.year == year}
    return frozenset(days)


def is_working_day(d: date) -> bool:
    return d.weekday() < 5 and d not in bank_holidays(d.year)


def day_type(d: date) -> str:
    return "working" if is_working_day(d) else "non_working"
