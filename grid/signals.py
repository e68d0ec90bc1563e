"""Grid signals: real price and carbon series loaded into 30-minute UTC slot arrays.

Pure library (numpy + stdlib only): the scheduler, the forecasts and the benchmarks consume these
arrays; nothing here touches a database or HTTP.

Sources (see ``data/grid/README.md`` for columns, licences and attribution):

- ``gb_national_carbon_intensity_2023.csv`` — NESO Carbon Intensity API, national, half-hourly:
  ``actual`` (estimated outturn) and ``forecast`` (NESO's published forecast), gCO2/kWh.
- ``gb_system_prices_2023-01_2024-05.csv`` — Elexon BMRS system prices, half-hourly: the market index
  price is our wholesale price; the imbalance (cash-out) price is kept alongside.
- ``electricitymaps_{ES,NO,US-CAL-CISO}_2023_hourly.csv`` — Electricity Maps, hourly, "direct"
  intensity; each hour is repeated for its two half hours.

Every slot index ``i`` of a :class:`SignalSeries` covers ``[start_utc + 30 min·i, start_utc + 30 min·(i+1))``.
All arithmetic is on UTC epoch slots, so clock changes never shift, drop or duplicate a slot.

Gap filling (one rule, applied to every column over its whole file before any window is cut, so a
window's values never depend on where it was cut). A run of missing or bad slots is filled by

1. **linear interpolation** between its two neighbours when it lies inside the file and is at most
   ``MAX_INTERP_SLOTS`` (2 h) long — short gaps sit inside a smooth trend (e.g. the 2 price slots lost
   on 2023-10-29, the lone 0.0 carbon actual on 2023-01-31 01:00);
2. otherwise **the same slot one day earlier** (already filled, so multi-day gaps chain back to the
   last real day) — interpolating across hours would erase the daily cycle the scheduler exploits
   (e.g. NESO's 91-slot gap 2023-10-20 22:00 to 2023-10-22 19:00, the 5 empty actuals on 2023-01-26,
   day-long runs of empty market-index prices);
3. at the very start of a file, the same slot one day *later*; a long gap inside the first day, where
   no day earlier exists, is interpolated; with nothing else, the nearest real value.

Which slots were filled is kept in the ``*_filled`` masks, so evaluation can score only real
observations. The loaders never return NaN: :class:`SignalSeries` rejects non-finite values.
"""

from __future__ import annotations

import csv
import functools
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

SLOT_MINUTES = 30
SLOT_SECONDS = SLOT_MINUTES * 60
SLOTS_PER_DAY = 24 * 60 // SLOT_MINUTES
SLOTS_PER_WEEK = 7 * SLOTS_PER_DAY
SLOT = timedelta(minutes=SLOT_MINUTES)

#: per-slot values (£/MWh, gCO2/kWh) and per-slot flags (gap-filled or not)
Values: TypeAlias = npt.NDArray[np.float64]
Mask: TypeAlias = npt.NDArray[np.bool_]

#: runs of missing/bad slots up to this length are linearly interpolated; longer ones copy the day before
MAX_INTERP_SLOTS = 4

GB = "GB"
#: regions with hourly Electricity Maps carbon files
ELECTRICITYMAPS_REGIONS = ("ES", "NO", "US-CAL-CISO")
REGIONS = (GB, *ELECTRICITYMAPS_REGIONS)

GB_PRICE_SOURCE = "GB market index (Elexon BMRS)"
GB_CARBON_FILE = "gb_national_carbon_intensity_2023.csv"
GB_PRICES_FILE = "gb_system_prices_2023-01_2024-05.csv"
_EM_DIRECT_COLUMN = "Carbon Intensity gCO₂eq/kWh (direct)"

_REPO_ROOT = Path(__file__).resolve().parent.parent
#: environment override for the data directory (e.g. a CI cache of the shared files)
DATA_DIR_ENV = "FLEXMARKET_GRID_DATA_DIR"


def electricitymaps_file(region: str) -> str:
    return f"electricitymaps_{region}_2023_hourly.csv"


def default_data_dir() -> Path:
    """``$FLEXMARKET_GRID_DATA_DIR`` if set, else ``../shared/data/grid`` beside the repo if present,
    else the repo's own trimmed copy ``data/grid`` (a few weeks, enough for the demo)."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env)
    shared = _REPO_ROOT.parent / "shared" / "data" / "grid"
    if (shared / GB_CARBON_FILE).is_file():
        return shared
    return _REPO_ROOT / "data" / "grid"


# --------------------------------------------------------------------------------------------------
# Time helpers: everything is an integer "epoch slot" = seconds since 1970-01-01 UTC // 1800.


def _to_utc(dt: datetime, what: str = "time") -> datetime:
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"{what} {dt!r} is naive; pass a tz-aware datetime (UTC)")
    return dt.astimezone(UTC)


def epoch_slot(dt: datetime, what: str = "time") -> int:
    """The epoch slot number of a slot-aligned tz-aware instant; raises if it is not on :00/:30."""
    seconds = _to_utc(dt, what).timestamp()
    slot, rem = divmod(seconds, SLOT_SECONDS)
    if rem != 0:
        raise ValueError(f"{what} {dt.isoformat()} is not aligned to a {SLOT_MINUTES}-minute UTC slot")
    return int(slot)


def slot_to_datetime(slot: int) -> datetime:
    return datetime.fromtimestamp(slot * SLOT_SECONDS, tz=UTC)


def _parse_utc(text: str) -> datetime:
    """Timestamps in the grid files: '2023-01-01 00:00:00+00:00', '2023-01-01T00:00:00Z' or naive
    '2023-01-01 00:00:00' (Electricity Maps' 'Datetime (UTC)' column — UTC by its header)."""
    dt = datetime.fromisoformat(text.strip())
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


# --------------------------------------------------------------------------------------------------
# The series


def _frozen(a: npt.ArrayLike | None, dtype: type, name: str, n: int | None) -> npt.NDArray[Any] | None:
    if a is None:
        return None
    arr: npt.NDArray[Any] = np.array(a, dtype=dtype)  # a private copy: callers may not mutate the cached source
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if n is not None and len(arr) != n:
        raise ValueError(f"{name} has {len(arr)} slots, expected {n}")
    if dtype is np.float64 and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values; fill gaps before building a series")
    arr.flags.writeable = False
    return arr


@dataclass(frozen=True, eq=False)
class SignalSeries:
    """One region's signals over consecutive 30-minute UTC slots; slot ``i`` starts at
    ``start_utc + 30 min · i``. Arrays are read-only float64 of one length ``n`` (``len(series)``);
    ``.copy()`` one to modify it. The ``*_filled`` masks say which slots were gap-filled."""

    region: str
    start_utc: datetime
    price_gbp_per_mwh: Values
    carbon_g_per_kwh: Values
    carbon_forecast_g_per_kwh: Values | None = None
    imbalance_price_gbp_per_mwh: Values | None = None
    price_filled: Mask | None = None
    carbon_filled: Mask | None = None
    #: where the price came from, e.g. "GB market index" (non-GB regions borrow it; see load_region)
    price_source: str = field(default="")

    def __post_init__(self) -> None:
        start = _to_utc(self.start_utc, "start_utc")
        epoch_slot(start, "start_utc")
        object.__setattr__(self, "start_utc", start)
        price = _frozen(self.price_gbp_per_mwh, np.float64, "price_gbp_per_mwh", None)
        assert price is not None
        n = len(price)
        object.__setattr__(self, "price_gbp_per_mwh", price)
        for name, dtype in (
            ("carbon_g_per_kwh", np.float64),
            ("carbon_forecast_g_per_kwh", np.float64),
            ("imbalance_price_gbp_per_mwh", np.float64),
            ("price_filled", np.bool_),
            ("carbon_filled", np.bool_),
        ):
            object.__setattr__(self, name, _frozen(getattr(self, name), dtype, name, n))

    def __len__(self) -> int:
        return len(self.price_gbp_per_mwh)

    @property
    def n_slots(self) -> int:
        return len(self)

    @property
    def end_utc(self) -> datetime:
        """Exclusive end: the start of the slot after the last one."""
        return self.slot_start(len(self))

    def slot_start(self, i: int) -> datetime:
        """UTC start of slot ``i`` (``i == len`` gives the exclusive end; negative i counts back)."""
        return self.start_utc + SLOT * i

    def slot_starts(self) -> list[datetime]:
        return [self.slot_start(i) for i in range(len(self))]

    def index_of(self, t_utc: datetime) -> int:
        """Index of the slot starting at ``t_utc`` (must be aligned; may lie outside the series)."""
        return epoch_slot(t_utc) - epoch_slot(self.start_utc)

    def signal(self, name: str) -> Values:
        """``"price"`` or ``"carbon"`` → the matching array (the names the forecasts use)."""
        if name == "price":
            return self.price_gbp_per_mwh
        if name == "carbon":
            return self.carbon_g_per_kwh
        raise ValueError(f"unknown signal {name!r}: use 'price' or 'carbon'")

    def filled_mask(self, name: str) -> Mask:
        """Which slots of ``signal(name)`` were gap-filled (all False when unknown)."""
        mask = {"price": self.price_filled, "carbon": self.carbon_filled}.get(name)
        if name not in ("price", "carbon"):
            raise ValueError(f"unknown signal {name!r}: use 'price' or 'carbon'")
        return np.zeros(len(self), dtype=bool) if mask is None else mask

    def window(self, start_utc: datetime, n_slots: int) -> SignalSeries:
        """The ``n_slots`` slots starting at ``start_utc``; must lie inside this series."""
        i = self.index_of(start_utc)
        if n_slots < 0 or i < 0 or i + n_slots > len(self):
            raise ValueError(
                f"window {_to_utc(start_utc).isoformat()} + {n_slots} slots is outside "
                f"{self.region} series {self.start_utc.isoformat()}..{self.end_utc.isoformat()}"
            )
        return self.slice(i, i + n_slots)

    def slice(self, i: int, j: int) -> SignalSeries:
        """Slots ``[i, j)`` by index (bounds-checked, no negative indexing)."""
        if not 0 <= i <= j <= len(self):
            raise ValueError(f"slice [{i}, {j}) outside 0..{len(self)}")

        def cut(a: npt.NDArray[Any] | None) -> npt.NDArray[Any] | None:
            return None if a is None else a[i:j]

        return SignalSeries(
            region=self.region,
            start_utc=self.slot_start(i),
            price_gbp_per_mwh=self.price_gbp_per_mwh[i:j],
            carbon_g_per_kwh=self.carbon_g_per_kwh[i:j],
            carbon_forecast_g_per_kwh=cut(self.carbon_forecast_g_per_kwh),
            imbalance_price_gbp_per_mwh=cut(self.imbalance_price_gbp_per_mwh),
            price_filled=cut(self.price_filled),
            carbon_filled=cut(self.carbon_filled),
            price_source=self.price_source,
        )


# --------------------------------------------------------------------------------------------------
# Gap filling


def _runs(mask: Mask) -> list[tuple[int, int]]:
    """[start, end) of each run of True in ``mask``."""
    padded = np.concatenate(([False], mask, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist(), strict=True))


def fill_gaps(
    values: npt.ArrayLike,
    max_interp_slots: int = MAX_INTERP_SLOTS,
    period_slots: int = SLOTS_PER_DAY,
) -> tuple[Values, Mask]:
    """Fill NaN runs by the module's rule; returns ``(filled, was_filled)``.

    Short runs (≤ ``max_interp_slots``) interpolate linearly between the neighbours; longer runs copy
    the value ``period_slots`` earlier (chaining through earlier fills); a long run at the very start
    copies ``period_slots`` later; where no neighbour or period exists the nearest real value is used.
    Raises ``ValueError`` if no value is real.
    """
    out = np.array(values, dtype=np.float64)
    missing = ~np.isfinite(out)
    n = len(out)
    if n and missing.all():
        raise ValueError("series has no valid values to fill gaps from")
    for a, b in _runs(missing):
        if a == 0 and b == n:  # pragma: no cover - excluded above
            break
        if a > 0 and b < n and b - a <= max_interp_slots:
            left, right = out[a - 1], out[b]
            weights = np.arange(1, b - a + 1) / (b - a + 1)
            out[a:b] = left + (right - left) * weights
        elif a == 0:
            # Backwards so that out[i + period] is already filled when it also lies in this run.
            for i in range(b - 1, -1, -1):
                j = i + period_slots
                out[i] = out[j] if j < n and np.isfinite(out[j]) else out[b]
        else:
            for i in range(a, b):
                j = i - period_slots
                if j >= 0:
                    out[i] = out[j]
                elif b < n:  # long gap inside the first day: nothing a day earlier, interpolate
                    out[i] = out[a - 1] + (out[b] - out[a - 1]) * (i - a + 1) / (b - a + 1)
                else:
                    out[i] = out[a - 1]
    return out, missing


# --------------------------------------------------------------------------------------------------
# File readers → dense arrays on the epoch-slot grid, NaN where a slot is missing or bad.


@dataclass(frozen=True)
class _Grid:
    start_slot: int
    columns: dict[str, Values]


def _to_float(text: str | None, bad: Callable[[float], bool]) -> float:
    if text is None or not text.strip():
        return math.nan
    value = float(text)
    return math.nan if not math.isfinite(value) or bad(value) else value


def _dense(
    path: Path,
    rows: Iterable[tuple[int, dict[str, float]]],
    names: tuple[str, ...],
    repeat: int = 1,
) -> _Grid:
    """Place ``(epoch_slot, values)`` rows on a dense grid; each row fills ``repeat`` slots (hourly→2)."""
    by_slot: dict[int, dict[str, float]] = {}
    for slot, vals in rows:
        for k in range(repeat):
            prev = by_slot.get(slot + k)
            if prev is not None and any(
                not (math.isnan(prev[c]) and math.isnan(vals[c])) and prev[c] != vals[c] for c in names
            ):
                raise ValueError(f"{path.name}: conflicting duplicate rows for {slot_to_datetime(slot + k)}")
            by_slot[slot + k] = vals
    if not by_slot:
        raise ValueError(f"{path.name}: no data rows")
    first, last = min(by_slot), max(by_slot)
    columns = {c: np.full(last - first + 1, np.nan) for c in names}
    for slot, vals in by_slot.items():
        for c in names:
            columns[c][slot - first] = vals[c]
    return _Grid(first, columns)


def _cache_key(path: Path) -> tuple[str, int, int]:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"grid data file {path} not found; pass data_dir= (shared: ../shared/data/grid, "
            f"trimmed copy: data/grid — regenerate with bench/make_demo_data.py)"
        ) from None
    return (str(path.resolve()), st.st_mtime_ns, st.st_size)


def _carbon_is_bad(v: float) -> bool:
    # The NESO file has 0.0 actuals (2023-01-31 01:00, 2023-06-07 09:30–11:00) that are outages, not
    # zero-carbon grids: GB never ran at 0 gCO2/kWh in 2023. Negative intensity is impossible.
    return v <= 0.0


@functools.lru_cache(maxsize=16)
def _read_gb_carbon(key: tuple[str, int, int]) -> _Grid:
    # gb_national_carbon_intensity_2023.csv: from,to,forecast,actual,index (UTC, period start = from)
    path = Path(key[0])
    with path.open(newline="", encoding="utf-8") as f:
        rows = [
            (
                epoch_slot(_parse_utc(r["from"]), f"{path.name} 'from'"),
                {
                    "actual": _to_float(r["actual"], _carbon_is_bad),
                    "forecast": _to_float(r["forecast"], _carbon_is_bad),
                },
            )
            for r in csv.DictReader(f)
        ]
    return _dense(path, rows, ("actual", "forecast"))


@functools.lru_cache(maxsize=16)
def _read_gb_prices(key: tuple[str, int, int]) -> _Grid:
    # gb_system_prices_2023-01_2024-05.csv: period_start_utc, period_end_utc,
    # imbalance_price_gbp_per_mwh, market_index_price_gbp_per_mwh. Negative prices are real.
    path = Path(key[0])
    with path.open(newline="", encoding="utf-8") as f:
        rows = [
            (
                epoch_slot(_parse_utc(r["period_start_utc"]), f"{path.name} 'period_start_utc'"),
                {
                    "market_index": _to_float(r["market_index_price_gbp_per_mwh"], lambda v: False),
                    "imbalance": _to_float(r["imbalance_price_gbp_per_mwh"], lambda v: False),
                },
            )
            for r in csv.DictReader(f)
        ]
    return _dense(path, rows, ("market_index", "imbalance"))


@functools.lru_cache(maxsize=16)
def _read_electricitymaps(key: tuple[str, int, int], region: str) -> _Grid:
    # electricitymaps_<zone>_2023_hourly.csv: 'Datetime (UTC)' is the hour start; we use the direct
    # (combustion) intensity, as the NESO national series is also operational, not life-cycle.
    path = Path(key[0])
    rows = []
    with path.open(newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            if r.get("Zone Id") not in (None, region):
                raise ValueError(f"{path.name}: row for zone {r['Zone Id']!r}, expected {region!r}")
            hour = _parse_utc(r["Datetime (UTC)"])
            slot = epoch_slot(hour, f"{path.name} 'Datetime (UTC)'")
            rows.append((slot, {"carbon": _to_float(r[_EM_DIRECT_COLUMN], lambda v: v < 0.0)}))
    return _dense(path, rows, ("carbon",), repeat=2)


@dataclass(frozen=True)
class _Filled:
    """A column filled over its whole file: values, the mask of filled slots, and its slot range."""

    start_slot: int
    values: Values
    filled: Mask

    @property
    def end_slot(self) -> int:
        return self.start_slot + len(self.values)

    def take(self, a: int, b: int) -> tuple[Values, Mask]:
        i, j = a - self.start_slot, b - self.start_slot
        return self.values[i:j], self.filled[i:j]


@functools.lru_cache(maxsize=64)
def _filled_column(kind: str, key: tuple[str, int, int], column: str, region: str = GB) -> _Filled:
    grid = {
        "gb_carbon": lambda: _read_gb_carbon(key),
        "gb_prices": lambda: _read_gb_prices(key),
        "em": lambda: _read_electricitymaps(key, region),
    }[kind]()
    values, filled = fill_gaps(grid.columns[column])
    values.flags.writeable = False
    filled.flags.writeable = False
    return _Filled(grid.start_slot, values, filled)


# --------------------------------------------------------------------------------------------------
# Public loaders


def _columns_for(region: str, data_dir: Path) -> dict[str, _Filled]:
    prices_key = _cache_key(data_dir / GB_PRICES_FILE)
    cols = {
        "price": _filled_column("gb_prices", prices_key, "market_index"),
        "imbalance": _filled_column("gb_prices", prices_key, "imbalance"),
    }
    if region == GB:
        carbon_key = _cache_key(data_dir / GB_CARBON_FILE)
        cols["carbon"] = _filled_column("gb_carbon", carbon_key, "actual")
        cols["carbon_forecast"] = _filled_column("gb_carbon", carbon_key, "forecast")
    elif region in ELECTRICITYMAPS_REGIONS:
        em_key = _cache_key(data_dir / electricitymaps_file(region))
        cols["carbon"] = _filled_column("em", em_key, "carbon", region)
    else:
        raise ValueError(f"unknown region {region!r}; known: {', '.join(REGIONS)}")
    return cols


def coverage(region: str = GB, data_dir: Path | None = None) -> tuple[datetime, datetime]:
    """``[start, end)`` in UTC over which every signal of ``region`` exists in ``data_dir``."""
    cols = _columns_for(region, data_dir or default_data_dir())
    a = max(c.start_slot for c in cols.values())
    b = min(c.end_slot for c in cols.values())
    if b <= a:
        raise ValueError(f"{region}: the price and carbon files in the data directory do not overlap")
    return slot_to_datetime(a), slot_to_datetime(b)


def load_region(region: str, start_utc: datetime, end_utc: datetime, data_dir: Path | None = None) -> SignalSeries:
    """Signals for ``region`` over ``[start_utc, end_utc)`` (slot-aligned, tz-aware).

    GB: carbon actual and NESO forecast from ``gb_national_carbon_intensity_2023.csv``; price = Elexon
    market index (imbalance price also attached) from ``gb_system_prices_2023-01_2024-05.csv``.

    ES, NO, US-CAL-CISO: hourly direct carbon from ``electricitymaps_<region>_2023_hourly.csv``, each
    hour repeated for its two half hours; no published carbon forecast (``None``).
    **Price assumption:** no non-GB price data exists in the shared set, so these regions carry the GB
    market-index series (``price_source`` says so). Geographic studies therefore differ in carbon only;
    do not read cross-region price differences into their results.

    Raises ``ValueError`` for unknown regions, naive or unaligned times, or a range the files do not
    cover (the message names the coverage).
    """
    data_dir = data_dir or default_data_dir()
    a = epoch_slot(start_utc, "start_utc")
    b = epoch_slot(end_utc, "end_utc")
    if b <= a:
        raise ValueError(f"end_utc {end_utc} must be after start_utc {start_utc}")
    cols = _columns_for(region, data_dir)
    lo = max(c.start_slot for c in cols.values())
    hi = min(c.end_slot for c in cols.values())
    if a < lo or b > hi:
        raise ValueError(
            f"{region} data in {data_dir} covers {slot_to_datetime(lo).isoformat()} to "
            f"{slot_to_datetime(hi).isoformat()}; requested {slot_to_datetime(a).isoformat()} to "
            f"{slot_to_datetime(b).isoformat()}"
        )
    price, price_filled = cols["price"].take(a, b)
    carbon, carbon_filled = cols["carbon"].take(a, b)
    forecast = cols["carbon_forecast"].take(a, b)[0] if "carbon_forecast" in cols else None
    return SignalSeries(
        region=region,
        start_utc=slot_to_datetime(a),
        price_gbp_per_mwh=price,
        carbon_g_per_kwh=carbon,
        carbon_forecast_g_per_kwh=forecast,
        imbalance_price_gbp_per_mwh=cols["imbalance"].take(a, b)[0],
        price_filled=price_filled,
        carbon_filled=carbon_filled,
        price_source=GB_PRICE_SOURCE if region == GB else f"{GB_PRICE_SOURCE}; GB price used for {region}",
    )


def load_gb(start_utc: datetime, end_utc: datetime, data_dir: Path | None = None) -> SignalSeries:
    """GB national signals over ``[start_utc, end_utc)``; see :func:`load_region`."""
    return load_region(GB, start_utc, end_utc, data_dir)
