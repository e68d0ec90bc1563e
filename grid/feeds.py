"""Grid-signal feeds: the real APIs' JSON documents parsed into plain readings, a replay source that
writes those documents from the recorded CSVs, and the staleness check.

Pure library (stdlib + numpy): no HTTP, no clock — callers fetch the documents and pass ``now``.

Formats (the documented APIs; the field names and nesting below are what the parsers accept):

- **NESO Carbon Intensity API**, api.carbonintensity.org.uk (OpenAPI definitions at
  carbon-intensity.github.io/api-definitions; data CC BY 4.0, "Carbon Intensity API, NESO").

  - national, ``GET /intensity/{from}/{to}``::

      {"data": [{"from": "2023-01-24T17:00Z", "to": "2023-01-24T17:30Z",
                 "intensity": {"forecast": 260, "actual": 254, "index": "high"}}, ...]}

    ``actual`` (estimated outturn) is ``null`` for periods not yet estimated (the future).
  - regional, ``GET /regional/intensity/{from}/{to}/regionid/{regionid}``: one region object (not a
    list) under the outer ``data``, its periods under an inner ``data``, forecasts only::

      {"data": {"regionid": 13, "dnoregion": "UKPN London", "shortname": "London",
                "data": [{"from": ..., "to": ..., "intensity": {"forecast": 230, "index": "high"},
                          "generationmix": [{"fuel": "gas", "perc": 43.6}, ...]}, ...]}}

    (postcode queries add ``postcode`` and may omit ``dnoregion``).
- **Elexon Insights API**, data.elexon.co.uk/bmrs/api/v1 (schema
  ``Insights.Api.Models.Responses.Balancing.Settlement.SystemPriceResponse``; "Contains BMRS data ©
  Elexon Limited"), ``GET /balancing/settlement/system-prices/{settlementDate}``::

      {"data": [{"settlementDate": "2023-01-24", "settlementPeriod": 35,
                 "startTime": "2023-01-24T17:00:00Z", "createdDateTime": "2023-01-24T17:30:00Z",
                 "systemSellPrice": 120.0, "systemBuyPrice": 120.0, "netImbalanceVolume": 291.9,
                 "bsadDefaulted": false, "priceDerivationCode": "P", ...}, ...]}

    Settlement periods are numbered from 1 at Europe/London midnight (46 / 50 on clock-change days);
    ``startTime`` must agree with :func:`grid.periods.period_start`.

Every field is checked; a bad one raises :class:`FeedError` naming its path (``data[3].intensity.actual``).
Documents over :data:`MAX_FEED_ROWS` rows are refused before any row is read.

Replay (:class:`ReplaySource`): the recorded files in ``default_data_dir()`` (``../shared/data/grid``
or the trimmed ``data/grid``) carry what these APIs published, so the replay writes, for a window and
a market ``now``, the document the API would have returned at ``now``: carbon forecasts for every
period, actuals only for periods ended by ``now``; system prices only for periods ended by ``now``.
What the files lack: ``netImbalanceVolume`` and the other volumes (``null``), and the publication time
(``createdDateTime`` is the period's end). The replay feeds the same parsers as live documents.
"""

from __future__ import annotations

import bisect
import csv
import functools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np

from grid.periods import PeriodError, period_of, period_start
from grid.signals import (
    GB,
    GB_CARBON_FILE,
    GB_PRICES_FILE,
    SLOT,
    Mask,
    SignalSeries,
    Values,
    default_data_dir,
    epoch_slot,
    fill_gaps,
    slot_to_datetime,
)

#: rows one document may hold (416 days of half hours). Mirrors ``schemas.limits.MAX_ROWS_PER_IMPORT``,
#: which ``grid`` cannot import (schemas.limits needs pydantic; grid is stdlib + numpy).
MAX_FEED_ROWS = 20_000
CARBON_INDEX_BANDS = frozenset({"very low", "low", "moderate", "high", "very high"})
MAX_REGION_ID = 17  # 1-14 DNO regions, 15 England, 16 Scotland, 17 Wales
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")

JsonDoc: TypeAlias = dict[str, Any]


class FeedError(ValueError):
    """A feed document that does not have the documented shape; ``field_path`` names the bad field."""

    def __init__(self, field_path: str, reason: str) -> None:
        super().__init__(f"{field_path}: {reason}")
        self.field_path = field_path
        self.reason = reason


class Kind(Enum):
    FORECAST = "forecast"
    ACTUAL = "actual"


@dataclass(frozen=True)
class National:
    """GB national carbon intensity (``/intensity``)."""

    @property
    def region(self) -> str:
        return GB


@dataclass(frozen=True)
class Regional:
    """One NESO region (``/regional/.../regionid/{region_id}``)."""

    region_id: int
    shortname: str
    dno_region: str | None = None

    @property
    def region(self) -> str:
        return f"{GB}-{self.region_id}"


CarbonArea: TypeAlias = National | Regional


@dataclass(frozen=True)
class CarbonReading:
    """One half hour's intensity of one kind; the NESO format carries no publication time."""

    start_utc: datetime
    carbon_g_per_kwh: float
    kind: Kind
    index: str
    published_utc: datetime | None = None

    @property
    def end_utc(self) -> datetime:
        return self.start_utc + SLOT


@dataclass(frozen=True)
class CarbonReadings:
    area: CarbonArea
    readings: tuple[CarbonReading, ...]

    def values(self, kind: Kind) -> dict[datetime, float]:
        """Period start (UTC) → gCO2/kWh for readings of ``kind``."""
        return {r.start_utc: r.carbon_g_per_kwh for r in self.readings if r.kind is kind}

    @property
    def latest_actual_end_utc(self) -> datetime | None:
        """End of the latest period with an actual: what staleness is measured from."""
        ends = [r.end_utc for r in self.readings if r.kind is Kind.ACTUAL]
        return max(ends, default=None)


@dataclass(frozen=True)
class PriceReading:
    """One settlement period's system prices (settled outturn, so always :attr:`Kind.ACTUAL`).
    ``price_gbp_per_mwh`` is the system sell price; under single imbalance pricing it equals the buy price."""

    start_utc: datetime
    settlement_date: date
    settlement_period: int
    price_gbp_per_mwh: float
    system_buy_price_gbp_per_mwh: float
    net_imbalance_volume_mwh: float | None
    published_utc: datetime | None
    kind: Kind = Kind.ACTUAL

    @property
    def end_utc(self) -> datetime:
        return self.start_utc + SLOT


@dataclass(frozen=True)
class PriceReadings:
    readings: tuple[PriceReading, ...]

    def values(self) -> dict[datetime, float]:
        return {r.start_utc: r.price_gbp_per_mwh for r in self.readings}

    @property
    def latest_published_utc(self) -> datetime | None:
        """The latest ``createdDateTime`` (a period's end where the document gives none)."""
        stamps = [r.published_utc or r.end_utc for r in self.readings]
        return max(stamps, default=None)


# --------------------------------------------------------------------------------------------------
# Field checks: each takes the value and its path, and returns it typed or raises FeedError.


def _mapping(value: object, path: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise FeedError(path, f"expected an object, got {type(value).__name__}")
    return value


def _field(obj: Mapping[str, object], key: str, path: str) -> object:
    if key not in obj:
        raise FeedError(f"{path}.{key}" if path else key, "missing")
    return obj[key]


def _rows(value: object, path: str) -> Sequence[object]:
    if not isinstance(value, list):
        raise FeedError(path, f"expected a list, got {type(value).__name__}")
    if len(value) > MAX_FEED_ROWS:
        raise FeedError(path, f"{len(value)} rows, more than the {MAX_FEED_ROWS} a document may hold")
    return value


def _string(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise FeedError(path, f"expected a string, got {type(value).__name__}")
    return value


def _integer(value: object, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FeedError(path, f"expected an integer, got {value!r}")
    return value


def _number(value: object, path: str, *, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FeedError(path, f"expected a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise FeedError(path, f"not a finite number: {value!r}")
    if minimum is not None and number < minimum:
        raise FeedError(path, f"{number} is below {minimum}")
    return number


def _optional_number(value: object, path: str, *, minimum: float | None = None) -> float | None:
    return None if value is None else _number(value, path, minimum=minimum)


def _instant(value: object, path: str) -> datetime:
    text = _string(value, path)
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        raise FeedError(path, f"not an ISO 8601 time: {text!r}") from None
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise FeedError(path, f"naive time {text!r}: the format gives UTC ('Z')")
    return instant.astimezone(UTC)


def _period_bounds(entry: Mapping[str, object], path: str, start_key: str, end_key: str) -> datetime:
    start = _instant(_field(entry, start_key, path), f"{path}.{start_key}")
    try:
        epoch_slot(start)
    except ValueError:
        raise FeedError(f"{path}.{start_key}", f"{start.isoformat()} is not on a half hour") from None
    end = _instant(_field(entry, end_key, path), f"{path}.{end_key}")
    if end != start + SLOT:
        raise FeedError(f"{path}.{end_key}", f"{end.isoformat()} is not 30 minutes after {start.isoformat()}")
    return start


def _increasing(starts: Sequence[datetime], path: str, key: str) -> None:
    for i in range(1, len(starts)):
        if starts[i] <= starts[i - 1]:
            raise FeedError(f"{path}[{i}].{key}", "periods must be in time order without repeats")


# --------------------------------------------------------------------------------------------------
# NESO Carbon Intensity


def _carbon_period(entry_value: object, path: str, *, regional: bool) -> tuple[datetime, list[CarbonReading]]:
    entry = _mapping(entry_value, path)
    start = _period_bounds(entry, path, "from", "to")
    intensity = _mapping(_field(entry, "intensity", path), f"{path}.intensity")
    ipath = f"{path}.intensity"
    index = _string(_field(intensity, "index", ipath), f"{ipath}.index")
    if index not in CARBON_INDEX_BANDS:
        raise FeedError(f"{ipath}.index", f"{index!r} is not one of {sorted(CARBON_INDEX_BANDS)}")
    forecast = _optional_number(_field(intensity, "forecast", ipath), f"{ipath}.forecast", minimum=0.0)
    # National periods always carry "actual" (null until estimated); regional ones never estimate it.
    raw_actual = intensity.get("actual") if regional else _field(intensity, "actual", ipath)
    actual = _optional_number(raw_actual, f"{ipath}.actual", minimum=0.0)
    if regional and "generationmix" in entry:
        _generation_mix(entry["generationmix"], f"{path}.generationmix")
    readings = [
        CarbonReading(start, value, kind, index)
        for kind, value in ((Kind.FORECAST, forecast), (Kind.ACTUAL, actual))
        if value is not None
    ]
    return start, readings


def _generation_mix(value: object, path: str) -> None:
    for i, item_value in enumerate(_rows(value, path)):
        item = _mapping(item_value, f"{path}[{i}]")
        _string(_field(item, "fuel", f"{path}[{i}]"), f"{path}[{i}].fuel")
        perc = _number(_field(item, "perc", f"{path}[{i}]"), f"{path}[{i}].perc", minimum=0.0)
        if perc > 100.0:
            raise FeedError(f"{path}[{i}].perc", f"{perc} is over 100")


def _carbon_periods(value: object, path: str, *, regional: bool) -> tuple[CarbonReading, ...]:
    rows = _rows(value, path)
    parsed = [_carbon_period(row, f"{path}[{i}]", regional=regional) for i, row in enumerate(rows)]
    _increasing([start for start, _ in parsed], path, "from")
    return tuple(r for _, readings in parsed for r in readings)


def _regional_area(region: Mapping[str, object]) -> Regional:
    region_id = _integer(_field(region, "regionid", "data"), "data.regionid")
    if not 1 <= region_id <= MAX_REGION_ID:
        raise FeedError("data.regionid", f"{region_id} is not a region id 1..{MAX_REGION_ID}")
    shortname = _string(_field(region, "shortname", "data"), "data.shortname")
    dno = region.get("dnoregion")
    return Regional(region_id, shortname, None if dno is None else _string(dno, "data.dnoregion"))


def parse_neso_carbon(doc: Mapping[str, object]) -> CarbonReadings:
    """A national (``data`` is a list) or regional-by-id (``data`` is a region object) document."""
    data = _field(_mapping(doc, "$"), "data", "")
    if isinstance(data, list):
        return CarbonReadings(National(), _carbon_periods(data, "data", regional=False))
    if isinstance(data, Mapping):
        area = _regional_area(data)
        return CarbonReadings(area, _carbon_periods(_field(data, "data", "data"), "data.data", regional=True))
    raise FeedError("data", f"expected a list (national) or an object (regional), got {type(data).__name__}")


# --------------------------------------------------------------------------------------------------
# Elexon system prices


def _settlement_date(value: object, path: str) -> date:
    text = _string(value, path)
    try:
        if not _DATE_RE.fullmatch(text):
            raise ValueError
        return date.fromisoformat(text)
    except ValueError:
        raise FeedError(path, f"not a YYYY-MM-DD date: {text!r}") from None


def _price_row(row_value: object, path: str) -> PriceReading:
    row = _mapping(row_value, path)
    day = _settlement_date(_field(row, "settlementDate", path), f"{path}.settlementDate")
    number = _integer(_field(row, "settlementPeriod", path), f"{path}.settlementPeriod")
    if not 1 <= number <= 50:
        raise FeedError(f"{path}.settlementPeriod", f"{number} is outside 1..50")
    try:
        start = period_start(day, number)
    except PeriodError as e:
        raise FeedError(f"{path}.settlementPeriod", str(e)) from None
    stated = _instant(_field(row, "startTime", path), f"{path}.startTime")
    if stated != start:
        raise FeedError(
            f"{path}.startTime", f"{stated.isoformat()} is not the start of {day}/{number}, {start.isoformat()}"
        )
    created = row.get("createdDateTime")
    return PriceReading(
        start_utc=start,
        settlement_date=day,
        settlement_period=number,
        price_gbp_per_mwh=_number(_field(row, "systemSellPrice", path), f"{path}.systemSellPrice"),
        system_buy_price_gbp_per_mwh=_number(_field(row, "systemBuyPrice", path), f"{path}.systemBuyPrice"),
        net_imbalance_volume_mwh=_optional_number(row.get("netImbalanceVolume"), f"{path}.netImbalanceVolume"),
        published_utc=None if created is None else _instant(created, f"{path}.createdDateTime"),
    )


def parse_elexon_system_prices(doc: Mapping[str, object]) -> PriceReadings:
    """A system-prices document (any order; one row per settlement period)."""
    rows = _rows(_field(_mapping(doc, "$"), "data", ""), "data")
    readings = [_price_row(row, f"data[{i}]") for i, row in enumerate(rows)]
    seen: dict[datetime, int] = {}
    for i, r in enumerate(readings):
        if r.start_utc in seen:
            raise FeedError(
                f"data[{i}].settlementPeriod",
                f"{r.settlement_date}/{r.settlement_period} repeats data[{seen[r.start_utc]}]",
            )
        seen[r.start_utc] = i
    return PriceReadings(tuple(sorted(readings, key=lambda r: r.start_utc)))


# --------------------------------------------------------------------------------------------------
# Readings → SignalSeries


def _carbon_is_bad(v: float) -> bool:
    # The same rule as grid.signals: a non-positive GB intensity is an outage, never a real value.
    return v <= 0.0


def _slot_array(
    values: Mapping[datetime, float], start_slot: int, n_slots: int, *, bad: Callable[[float], bool]
) -> Values:
    """Values on the slots ``[start_slot, start_slot + n_slots)``; NaN where absent or ``bad``."""
    out = np.full(n_slots, np.nan)
    for start, value in values.items():
        i = epoch_slot(start) - start_slot
        if 0 <= i < n_slots and not bad(value):
            out[i] = value
    return out


def to_signal_series(
    carbon: CarbonReadings, prices: PriceReadings, *, start_utc: datetime, n_slots: int
) -> SignalSeries:
    """The readings on ``n_slots`` half hours from ``start_utc``, gaps filled by :func:`grid.signals.fill_gaps`.

    ``carbon_g_per_kwh`` is the best value published: the actual where there is one, else the forecast;
    ``carbon_filled`` marks slots with neither. ``price_gbp_per_mwh`` (and the imbalance price) is the
    system sell price; ``price_filled`` marks slots with no settled price (e.g. after ``now``).
    """
    if n_slots <= 0:
        raise ValueError(f"n_slots must be positive, got {n_slots}")
    first = epoch_slot(start_utc, "start_utc")
    forecast = _slot_array(carbon.values(Kind.FORECAST), first, n_slots, bad=_carbon_is_bad)
    actual = _slot_array(carbon.values(Kind.ACTUAL), first, n_slots, bad=_carbon_is_bad)
    best = np.where(np.isfinite(actual), actual, forecast)
    price = _slot_array(prices.values(), first, n_slots, bad=lambda v: False)  # negative prices are real
    filled: dict[str, tuple[Values, Mask]] = {}
    for name, column in (("carbon", best), ("forecast", forecast), ("price", price)):
        try:
            filled[name] = fill_gaps(column)
        except ValueError:
            raise FeedError(name, f"no value in the {n_slots} half hours from {start_utc.isoformat()}") from None
    return SignalSeries(
        region=carbon.area.region,
        start_utc=start_utc,
        price_gbp_per_mwh=filled["price"][0],
        carbon_g_per_kwh=filled["carbon"][0],
        carbon_forecast_g_per_kwh=filled["forecast"][0],
        imbalance_price_gbp_per_mwh=filled["price"][0],
        price_filled=filled["price"][1],
        carbon_filled=filled["carbon"][1],
        price_source="Elexon system sell price (imbalance)",
    )


# --------------------------------------------------------------------------------------------------
# Staleness


@dataclass(frozen=True)
class Fresh:
    age: timedelta
    limit: timedelta


@dataclass(frozen=True)
class Stale:
    """Older than the limit; ``age`` is ``None`` when nothing was ever published."""

    age: timedelta | None
    limit: timedelta


Staleness: TypeAlias = Fresh | Stale


def staleness(latest_utc: datetime | None, now: datetime, limit: timedelta) -> Staleness:
    """Fresh when ``now - latest_utc <= limit``. ``latest_utc`` is the latest publication time, or the
    end of the latest period observed when the feed gives none. A time after ``now`` is refused."""
    if limit <= timedelta(0):
        raise ValueError(f"limit must be positive, got {limit}")
    if now.tzinfo is None or (latest_utc is not None and latest_utc.tzinfo is None):
        raise ValueError("now and latest_utc must be tz-aware (UTC)")
    if latest_utc is None:
        return Stale(None, limit)
    age = now - latest_utc
    if age < timedelta(0):
        raise ValueError(f"latest signal {latest_utc.isoformat()} is after now {now.isoformat()}")
    return Fresh(age, limit) if age <= limit else Stale(age, limit)


# --------------------------------------------------------------------------------------------------
# Replay


@dataclass(frozen=True)
class _Rows:
    """A recorded file's rows by epoch slot (sorted): ``slots[i]`` ↔ ``values[i]`` (raw CSV texts)."""

    slots: tuple[int, ...]
    values: tuple[tuple[str, ...], ...]

    def between(self, a: int, b: int) -> list[tuple[int, tuple[str, ...]]]:
        i, j = bisect.bisect_left(self.slots, a), bisect.bisect_left(self.slots, b)
        return list(zip(self.slots[i:j], self.values[i:j], strict=True))


@functools.lru_cache(maxsize=8)
def _read_rows(path: str, _stamp: tuple[int, int], start_column: str, columns: tuple[str, ...]) -> _Rows:
    with Path(path).open(newline="", encoding="utf-8") as f:
        rows = sorted(
            (epoch_slot(datetime.fromisoformat(r[start_column]), start_column), tuple(r[c] for c in columns))
            for r in csv.DictReader(f)
        )
    return _Rows(tuple(s for s, _ in rows), tuple(v for _, v in rows))


def _json_number(text: str) -> int | float | None:
    if not text.strip():
        return None
    value = float(text)
    return int(value) if value.is_integer() else value


def _carbon_time(instant: datetime) -> str:
    return instant.strftime("%Y-%m-%dT%H:%MZ")


def _elexon_time(instant: datetime) -> str:
    return instant.strftime("%Y-%m-%dT%H:%M:%SZ")


class ReplaySource:
    """The documents the NESO and Elexon APIs would have returned at a market ``now``, from the
    recorded files in ``data_dir`` (default :func:`grid.signals.default_data_dir`)."""

    def __init__(self, data_dir: Path | None = None) -> None:
        self.data_dir = data_dir or default_data_dir()

    def _rows(self, name: str, start_column: str, columns: tuple[str, ...]) -> _Rows:
        path = self.data_dir / name
        st = path.stat()
        return _read_rows(str(path.resolve()), (st.st_mtime_ns, st.st_size), start_column, columns)

    @staticmethod
    def _window(start_utc: datetime, end_utc: datetime, now: datetime) -> tuple[int, int, datetime]:
        a, b = epoch_slot(start_utc, "start_utc"), epoch_slot(end_utc, "end_utc")
        if b <= a:
            raise ValueError(f"end_utc {end_utc.isoformat()} must be after start_utc {start_utc.isoformat()}")
        if now.tzinfo is None:
            raise ValueError("now must be tz-aware (UTC)")
        return a, b, now.astimezone(UTC)

    def national_carbon(self, start_utc: datetime, end_utc: datetime, *, now: datetime) -> JsonDoc:
        """``GET /intensity/{start}/{end}`` at ``now``: every recorded period starting in the window,
        its ``actual`` only once the period has ended."""
        a, b, now = self._window(start_utc, end_utc, now)
        rows = self._rows(GB_CARBON_FILE, "from", ("forecast", "actual", "index")).between(a, b)
        return {"data": [_carbon_entry(slot, values, now) for slot, values in rows]}

    def system_prices(self, start_utc: datetime, end_utc: datetime, *, now: datetime) -> JsonDoc:
        """System-price rows for the periods starting in the window that were settled by ``now``."""
        a, b, now = self._window(start_utc, end_utc, now)
        rows = self._rows(GB_PRICES_FILE, "period_start_utc", ("imbalance_price_gbp_per_mwh",)).between(a, b)
        return {"data": [_price_entry(slot, text) for slot, (text,) in rows if _ended(slot, now) and text.strip()]}

    def system_prices_for_date(self, settlement_date: date, *, now: datetime) -> JsonDoc:
        """``GET /balancing/settlement/system-prices/{settlementDate}`` at ``now``."""
        start = period_start(settlement_date, 1)
        return self.system_prices(start, period_start(settlement_date + timedelta(days=1), 1), now=now)


def _ended(slot: int, now: datetime) -> bool:
    return slot_to_datetime(slot) + SLOT <= now


def _carbon_entry(slot: int, values: tuple[str, ...], now: datetime) -> JsonDoc:
    forecast, actual, index = values
    start = slot_to_datetime(slot)
    return {
        "from": _carbon_time(start),
        "to": _carbon_time(start + SLOT),
        "intensity": {
            "forecast": _json_number(forecast),
            "actual": _json_number(actual) if _ended(slot, now) else None,
            "index": index,
        },
    }


_PRICE_VOLUME_FIELDS = (
    "reserveScarcityPrice",
    "netImbalanceVolume",
    "sellPriceAdjustment",
    "buyPriceAdjustment",
    "replacementPrice",
    "replacementPriceReferenceVolume",
    "totalAcceptedOfferVolume",
    "totalAcceptedBidVolume",
    "totalAdjustmentSellVolume",
    "totalAdjustmentBuyVolume",
    "totalSystemTaggedAcceptedOfferVolume",
    "totalSystemTaggedAcceptedBidVolume",
    "totalSystemTaggedAdjustmentSellVolume",
    "totalSystemTaggedAdjustmentBuyVolume",
)


def _price_entry(slot: int, imbalance_text: str) -> JsonDoc:
    start = slot_to_datetime(slot)
    period = period_of(start)
    price = float(imbalance_text)
    row: JsonDoc = {
        "settlementDate": period.settlement_date.isoformat(),
        "settlementPeriod": period.number,
        "startTime": _elexon_time(start),
        "createdDateTime": _elexon_time(start + SLOT),
        # The recorded "MAIN PRICE SUMMARY" is the single imbalance price: sell = buy.
        "systemSellPrice": price,
        "systemBuyPrice": price,
        "bsadDefaulted": None,
        "priceDerivationCode": None,
    }
    row.update(dict.fromkeys(_PRICE_VOLUME_FIELDS))
    return row
