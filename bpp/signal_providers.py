"""Where an agent's price and carbon come from: *signal providers* and signal updates.

A provider is a function ``(region, start_utc, n_slots) -> SignalSeries``: actual 2023 series for
simulation (:func:`actual_provider`), forecasts from the history before ``start_utc`` for planning
(:func:`forecast_provider`, :mod:`bpp.forecast`), any series the caller holds
(:func:`series_provider`), or live operation on historical data (:func:`analogue_provider`). An agent's
config names one with its ``"signals"`` entry (:func:`signal_provider_from`).

A :class:`SignalUpdate` (a price spike, a carbon revision) overrides a provider's values over a span;
:func:`signals_with_updates` applies them to the windows an agent plans on.

Signals are half-hourly (GB settlement periods); a plan of 15- or 60-minute slots reads them through
:func:`to_plan_slots` (:func:`plan_signals_with_updates` does both).

Pure: time is always a parameter; nothing here reads a clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np

from bpp.domain import MARKET_SLOT_MINUTES, SLOT, FloatArray, check_slot_minutes, iso, slots_between
from bpp.forecast import forecast_series
from grid.signals import SLOTS_PER_DAY, SignalSeries, coverage, load_region

SignalProvider: TypeAlias = Callable[[str, datetime, int], SignalSeries]

ANALOGUE_STEP = timedelta(days=364)  # 52 weeks: the same weekday and time of day


def actual_provider(data_dir: Path | None = None) -> SignalProvider:
    """Actual 2023 series from ``../shared/data/grid`` (via :func:`grid.signals.load_region`)."""

    def provide(region: str, start_utc: datetime, n_slots: int) -> SignalSeries:
        return load_region(region, start_utc, start_utc + SLOT * n_slots, data_dir)

    return provide


DEFAULT_HISTORY_DAYS = 90  # the GBM's edge over seasonal-naive shows with this much history (bench/forecast.py)


def forecast_provider(
    model: str = "gbm", history_days: int = DEFAULT_HISTORY_DAYS, data_dir: Path | None = None
) -> SignalProvider:
    """Forecasts from the ``history_days`` before ``start_utc`` (``bpp.forecast.forecast_series``), or from all
    the history the data holds before ``start_utc`` when it holds less."""

    def provide(region: str, start_utc: datetime, n_slots: int) -> SignalSeries:
        first, _ = coverage(region, data_dir)
        history_start = max(start_utc - SLOT * (history_days * SLOTS_PER_DAY), first)
        if history_start >= start_utc:
            raise ValueError(f"no {region} history before {iso(start_utc)}: the data starts at {iso(first)}")
        return forecast_series(load_region(region, history_start, start_utc, data_dir), n_slots, model)

    return provide


def analogue_provider(base: SignalProvider, coverage_of: Callable[[str], tuple[datetime, datetime]]) -> SignalProvider:
    """Live operation on historical data: a window in the present (say 2026-11-24 16:00 UTC) is served
    by the same weekday and time of day in the data (2023-11-28 16:00 UTC), shifted by whole 52-week
    steps, and re-stamped with the requested times. Weekly and daily patterns are kept; the year is not.
    ``coverage_of(region)`` gives the data's [start, end)."""

    def provide(region: str, start_utc: datetime, n_slots: int) -> SignalSeries:
        lo, hi = coverage_of(region)
        end = start_utc + SLOT * n_slots
        shift = timedelta(0)
        while end - shift > hi:
            shift += ANALOGUE_STEP
        while start_utc - shift < lo:
            shift -= ANALOGUE_STEP
        if end - shift > hi:
            raise ValueError(
                f"no analogue of {iso(start_utc)}–{iso(end)} inside the {region} data "
                f"({iso(lo)}–{iso(hi)}); the data must cover {n_slots} slots on that weekday"
            )
        return replace(base(region, start_utc - shift, n_slots), start_utc=start_utc)

    return provide


def series_provider(series: Mapping[str, SignalSeries]) -> SignalProvider:
    """Windows of series the caller already holds (one per region)."""

    def provide(region: str, start_utc: datetime, n_slots: int) -> SignalSeries:
        if region not in series:
            raise KeyError(f"no signal series for region {region!r}")
        return series[region].window(start_utc, n_slots)

    return provide


def as_provider(signals: SignalProvider | Mapping[str, SignalSeries]) -> SignalProvider:
    """A provider as given, or one serving windows of the series given (one per region)."""
    return signals if callable(signals) else series_provider(signals)


def signal_provider_from(spec: Mapping[str, Any], data_dir: Path | None) -> SignalProvider:
    """The provider an agent config's ``"signals"`` entry names: ``{"source": "actual"}`` (default) or a
    forecast model (``"gbm"``, ``"naive_day"``, ``"naive_week"``) with ``"history_days"``; an optional
    ``"data_dir"`` overrides ``data_dir``."""
    source = spec.get("source", "actual")
    data_dir = Path(spec["data_dir"]) if spec.get("data_dir") else data_dir
    if source == "actual":
        return actual_provider(data_dir)
    return forecast_provider(source, int(spec.get("history_days", DEFAULT_HISTORY_DAYS)), data_dir)


@dataclass(frozen=True)
class SignalUpdate:
    """A change of signal the agent must re-plan for, e.g. a price spike: over ``[start_utc, end_utc)``
    in ``region`` the price (and/or carbon) is replaced by the given value. Kept and applied to every
    later plan whose horizon covers it."""

    region: str
    start_utc: datetime
    end_utc: datetime
    price_gbp_per_mwh: float | None = None
    carbon_g_per_kwh: float | None = None
    reason: str = "signal update"

    def to_dict(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "start_utc": iso(self.start_utc),
            "end_utc": iso(self.end_utc),
            "price_gbp_per_mwh": self.price_gbp_per_mwh,
            "carbon_g_per_kwh": self.carbon_g_per_kwh,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SignalUpdate:
        return cls(
            region=str(d["region"]),
            start_utc=datetime.fromisoformat(str(d["start_utc"])),
            end_utc=datetime.fromisoformat(str(d["end_utc"])),
            price_gbp_per_mwh=None if d.get("price_gbp_per_mwh") is None else float(d["price_gbp_per_mwh"]),
            carbon_g_per_kwh=None if d.get("carbon_g_per_kwh") is None else float(d["carbon_g_per_kwh"]),
            reason=str(d.get("reason") or "signal update"),
        )


def updated_provider(provider: SignalProvider, updates: Iterable[SignalUpdate]) -> SignalProvider:
    """``provider`` with every update overriding the slots it covers (what :func:`signals_with_updates`
    does for one plan, as a provider any agent kind plans on)."""
    kept = tuple(updates)
    if not kept:
        return provider

    def provide(region: str, start_utc: datetime, n_slots: int) -> SignalSeries:
        series = provider(region, start_utc, n_slots)
        price, carbon = _overridden(series, region, start_utc, n_slots, kept)
        return replace(series, price_gbp_per_mwh=price, carbon_g_per_kwh=carbon)

    return provide


def signals_with_updates(
    provider: SignalProvider,
    regions: Iterable[str],
    start_utc: datetime,
    n_slots: int,
    updates: Iterable[SignalUpdate],
) -> tuple[dict[str, FloatArray], dict[str, FloatArray]]:
    """Price and carbon by region over ``n_slots`` from ``start_utc`` (regions in sorted order), with
    every update overriding the slots of the window it covers."""
    updates = list(updates)
    price: dict[str, FloatArray] = {}
    carbon: dict[str, FloatArray] = {}
    for region in sorted(set(regions)):
        price[region], carbon[region] = _overridden(
            provider(region, start_utc, n_slots), region, start_utc, n_slots, updates
        )
    return price, carbon


def _overridden(
    series: SignalSeries, region: str, start_utc: datetime, n_slots: int, updates: Iterable[SignalUpdate]
) -> tuple[FloatArray, FloatArray]:
    """The series' price and carbon with the updates of ``region`` applied to the slots they cover."""
    p = np.array(series.price_gbp_per_mwh, dtype=float)
    c = np.array(series.carbon_g_per_kwh, dtype=float)
    for u in updates:
        if u.region != region:
            continue
        a = min(max(slots_between(start_utc, u.start_utc), 0), n_slots)
        b = min(max(slots_between(start_utc, u.end_utc), 0), n_slots)
        if b > a:
            if u.price_gbp_per_mwh is not None:
                p[a:b] = u.price_gbp_per_mwh
            if u.carbon_g_per_kwh is not None:
                c[a:b] = u.carbon_g_per_kwh
    return p, c


def to_plan_slots(half_hourly: FloatArray, slot_minutes: int) -> FloatArray:
    """A half-hourly signal (£/MWh, gCO2/kWh) on a plan's slots of ``slot_minutes``, from a half-hour
    boundary: 30 — unchanged; 15 — each half hour's value in both its slots (the value holds over the
    whole settlement period); 60 — each hour the energy-weighted mean of its two half hours. A plan holds
    its power constant over a slot, so each half hour carries half of the slot's energy: the weights are
    equal and the mean prices that energy exactly (Σ value·energy over the half hours). A 60-minute plan
    needs whole hours."""
    values = np.asarray(half_hourly, dtype=float)
    check_slot_minutes(slot_minutes)
    if slot_minutes < MARKET_SLOT_MINUTES:
        repeated: FloatArray = np.repeat(values, MARKET_SLOT_MINUTES // slot_minutes)
        return repeated
    per = slot_minutes // MARKET_SLOT_MINUTES
    if len(values) % per:
        raise ValueError(f"{len(values)} half hours are not whole {slot_minutes}-minute slots")
    energy_share = np.full(per, 1.0 / per)  # constant power over the slot: equal energy per half hour
    out: FloatArray = values.reshape(-1, per) @ energy_share
    return out


def plan_signals_with_updates(
    provider: SignalProvider,
    regions: Iterable[str],
    start_utc: datetime,
    n_slots: int,
    updates: Iterable[SignalUpdate],
    *,
    slot_minutes: int,
) -> tuple[dict[str, FloatArray], dict[str, FloatArray]]:
    """:func:`signals_with_updates` over a plan of ``n_slots`` slots of ``slot_minutes`` (whole half
    hours), each series taken to the plan's slots by :func:`to_plan_slots`."""
    minutes = n_slots * check_slot_minutes(slot_minutes)
    if minutes % MARKET_SLOT_MINUTES:
        raise ValueError(f"a plan of {n_slots} × {slot_minutes} min is not whole half hours")
    price, carbon = signals_with_updates(provider, regions, start_utc, minutes // MARKET_SLOT_MINUTES, updates)
    return (
        {r: to_plan_slots(a, slot_minutes) for r, a in price.items()},
        {r: to_plan_slots(a, slot_minutes) for r, a in carbon.items()},
    )
