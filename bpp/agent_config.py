"""An agent's config (the BPP providers config's ``"agent"`` entry) read into the domain: sites
independent of any horizon, jobs from a list or a job mix drawn from the traces, objective and offer
settings. :meth:`bpp.agent.ComputeAgent.from_config` documents the config's shape.

Slot length: ``"slot_minutes"`` (15, 30 or 60; default 30) is the plan's slot, one for every site of the
agent (a site with compute and a battery is one plan). Config profiles stay half-hourly (48 daily
values) and are taken to the plan's slots here: at 15 minutes each half hour's value holds in both its
slots; at 60 minutes capacity is the smaller of the two half hours (the hall's envelope holds all hour),
baseline load and solar their mean (energy), a SoC minimum the larger and a SoC maximum the smaller.

Pure: no clock, no I/O beyond reading a config file or the job traces it names.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from bpp.domain import (
    MARKET_SLOT_MINUTES,
    Battery,
    ControlActions,
    FloatArray,
    Job,
    ObjectiveKind,
    ObjectiveSpec,
    Site,
    SocTarget,
    check_slot_minutes,
    minutes_to_slots,
    parse_utc,
    slots_between,
)
from bpp.offers import OfferSettings
from bpp.signal_providers import SignalProvider, to_plan_slots
from bpp.workload import MixSettings, job_mix, synthetic_solar_kw
from grid.signals import SLOTS_PER_DAY
from schemas.limits import MAX_KW, MAX_PRICE_GBP_PER_MWH


def load_config(config: Mapping[str, Any] | str | Path) -> dict[str, Any]:
    """A config given as a mapping, a JSON text or the path of a JSON file."""
    if isinstance(config, Mapping):
        return dict(config)
    text = str(config)
    if text.lstrip().startswith("{"):
        loaded: dict[str, Any] = json.loads(text)
    else:
        loaded = json.loads(Path(text).read_text(encoding="utf-8"))
    return loaded


def objective_from(d: Mapping[str, Any]) -> ObjectiveSpec:
    """The ``"objective"`` entry: :class:`ObjectiveSpec` fields, ``kind`` by name."""
    d = dict(d)
    if "kind" in d:
        d["kind"] = ObjectiveKind(d["kind"])
    return ObjectiveSpec(**d)


def offer_settings_from(d: Mapping[str, Any]) -> OfferSettings:
    """The ``"offers"`` entry: :class:`OfferSettings` fields, ``levels`` as a list."""
    d = dict(d)
    if "levels" in d:
        d["levels"] = tuple(float(x) for x in d["levels"])
    return OfferSettings(**d)


def slot_minutes_from(cfg: Mapping[str, Any], where: str = "agent") -> int:
    """The agent config's ``slot_minutes`` (default 30); ValueError naming ``<where>.slot_minutes``."""
    return check_slot_minutes(cfg.get("slot_minutes", MARKET_SLOT_MINUTES), f"{where}.slot_minutes")


def plan_slots(horizon_half_hours: int, slot_minutes: int, where: str = "agent.horizon_slots") -> int:
    """A horizon of ``horizon_half_hours`` (the config's ``horizon_slots``) in slots of ``slot_minutes``;
    ValueError naming ``where`` when it is not a whole number of them (60-minute plans: whole hours)."""
    return minutes_to_slots(horizon_half_hours * MARKET_SLOT_MINUTES, slot_minutes, where)


def _daily(
    value: float | Sequence[float],
    start_utc: datetime,
    n_slots: int,
    name: str,
    *,
    slot_minutes: int = MARKET_SLOT_MINUTES,
    combine: Callable[..., FloatArray] = np.mean,
) -> FloatArray:
    """A number, or 48 values by UTC half hour repeated daily, over ``n_slots`` plan slots of
    ``slot_minutes`` from ``start_utc``; a 60-minute slot ``combine``s its two half hours."""
    arr = np.asarray(value, dtype=float)
    if arr.ndim == 0:
        return np.full(n_slots, float(arr))
    if arr.shape != (SLOTS_PER_DAY,):
        raise ValueError(f"{name}: give a number or {SLOTS_PER_DAY} daily values, got shape {arr.shape}")
    first = (start_utc.hour * 60 + start_utc.minute) // MARKET_SLOT_MINUTES
    half_hours = -(-n_slots * slot_minutes // MARKET_SLOT_MINUTES)
    profile: FloatArray = arr[(first + np.arange(half_hours)) % SLOTS_PER_DAY]
    if slot_minutes <= MARKET_SLOT_MINUTES:
        repeated: FloatArray = np.repeat(profile, MARKET_SLOT_MINUTES // slot_minutes)[:n_slots]
        return repeated
    per = slot_minutes // MARKET_SLOT_MINUTES
    return combine(profile[: n_slots * per].reshape(-1, per), axis=1)


#: a battery config's number fields (:class:`Battery`; the optional ones may be null)
_BATTERY_NUMBERS = (
    "energy_kwh",
    "charge_power_kw",
    "discharge_power_kw",
    "round_trip_efficiency",
    "soc_min_fraction",
    "soc_max_fraction",
    "initial_soc_fraction",
    "degradation_gbp_per_mwh",
    "self_discharge_fraction_per_hour",
)
_BATTERY_OPTIONAL_NUMBERS = ("terminal_soc_fraction", "charge_efficiency", "discharge_efficiency")
#: the per-slot battery fields and the config's daily fields they come from (for error messages)
_PER_SLOT_NAMES = (
    ("soc_min_fraction_by_slot", "soc_min_fraction_daily"),
    ("soc_max_fraction_by_slot", "soc_max_fraction_daily"),
    ("soc_targets:", "soc_targets_daily:"),
)
_BATTERY_DAILY = ("soc_min_fraction_daily", "soc_max_fraction_daily", "soc_targets_daily")


@dataclass(frozen=True)
class DailySocTarget:
    """ "``soc_min_fraction`` by ``time_utc``" every day: a SoC target at the end of the slot ending then."""

    minute_of_day_utc: int
    soc_min_fraction: float


@dataclass(frozen=True)
class BatteryDailyRules:
    """The horizon-free form of a battery's per-slot rules: SoC minimum and maximum by UTC half hour
    (48 values, repeated daily) and daily SoC targets; :meth:`apply` writes them for one horizon."""

    soc_min_fraction_daily: tuple[float, ...] | None = None
    soc_max_fraction_daily: tuple[float, ...] | None = None
    soc_targets_daily: tuple[DailySocTarget, ...] = ()

    def apply(
        self, battery: Battery, start_utc: datetime, n_slots: int, *, slot_minutes: int = MARKET_SLOT_MINUTES
    ) -> Battery:
        """The battery with these rules written for ``n_slots`` plan slots of ``slot_minutes``. A target
        falls on the slot ending at its time, or the last one ending before it (60-minute slots and a
        target at :30 — reached no later than asked)."""
        lo, hi = self.soc_min_fraction_daily, self.soc_max_fraction_daily
        first = start_utc.hour * 60 + start_utc.minute
        targets = []
        for target in self.soc_targets_daily:
            # minutes from the horizon start to the first occurrence, then every day
            offset = (target.minute_of_day_utc - first) % (24 * 60) or 24 * 60
            for end_minute in range(offset, n_slots * slot_minutes + 1, 24 * 60):
                if end_minute >= slot_minutes:
                    slot = end_minute // slot_minutes - 1
                    targets.append(SocTarget(slot=slot, soc_min_fraction=target.soc_min_fraction))

        def per_slot(daily: tuple[float, ...] | None, name: str, combine: Callable[..., FloatArray]) -> Any:
            if daily is None:
                return None
            return tuple(_daily(daily, start_utc, n_slots, name, slot_minutes=slot_minutes, combine=combine).tolist())

        return replace(
            battery,
            soc_min_fraction_by_slot=per_slot(lo, "soc_min", np.max),  # a 60-minute slot: the stricter half
            soc_max_fraction_by_slot=per_slot(hi, "soc_max", np.min),
            soc_targets=battery.soc_targets + tuple(targets),
        )


def battery_from_config(d: Mapping[str, Any], where: str) -> tuple[Battery, BatteryDailyRules | None]:
    """A site's ``"battery"`` entry: :class:`Battery` fields (numbers; units in their names) plus the
    daily rules ``soc_min_fraction_daily`` / ``soc_max_fraction_daily`` (a number or 48 values by UTC
    half hour) and ``soc_targets_daily`` (``[{"time_utc": "07:00", "soc_min_fraction": 0.8}]``).
    Every problem raises ``ValueError`` naming the field (``where`` + field name)."""
    if not isinstance(d, Mapping):
        raise ValueError(f"{where} must be an object")
    unknown = sorted(set(d) - set(_BATTERY_NUMBERS) - set(_BATTERY_OPTIONAL_NUMBERS) - set(_BATTERY_DAILY))
    if unknown:
        raise ValueError(f"{where}: unknown battery fields {unknown}")
    for name in ("energy_kwh", "charge_power_kw", "discharge_power_kw"):
        if name not in d:
            raise ValueError(f"{where}.{name} is required")
    fields: dict[str, Any] = {}
    for name in _BATTERY_NUMBERS + _BATTERY_OPTIONAL_NUMBERS:
        if name in d and not (d[name] is None and name in _BATTERY_OPTIONAL_NUMBERS):
            fields[name] = _number(d[name], f"{where}.{name}")
    for name, most in (
        ("charge_power_kw", MAX_KW),
        ("discharge_power_kw", MAX_KW),
        ("degradation_gbp_per_mwh", MAX_PRICE_GBP_PER_MWH),
    ):
        if fields.get(name, 0.0) > most:
            raise ValueError(f"{where}.{name} must be at most {most:g}")
    rules = BatteryDailyRules(
        soc_min_fraction_daily=_daily_fractions(d.get("soc_min_fraction_daily"), f"{where}.soc_min_fraction_daily"),
        soc_max_fraction_daily=_daily_fractions(d.get("soc_max_fraction_daily"), f"{where}.soc_max_fraction_daily"),
        soc_targets_daily=_daily_targets(d.get("soc_targets_daily") or (), f"{where}.soc_targets_daily"),
    )
    try:
        battery = Battery(**fields)
        # one day from midnight checks the daily rules against the battery (min ≤ max, targets ≤ max)
        rules.apply(battery, datetime(2000, 1, 1, tzinfo=UTC), SLOTS_PER_DAY)
    except ValueError as exc:
        message = str(exc)
        for horizon_name, config_name in _PER_SLOT_NAMES:
            message = message.replace(horizon_name, config_name)
        raise ValueError(f"{where}: {message}") from None
    has_rules = any(d.get(name) is not None for name in _BATTERY_DAILY)
    return battery, rules if has_rules else None


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number")
    return float(value)


def _daily_fractions(value: Any, name: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    values = [value] * SLOTS_PER_DAY if not isinstance(value, list) else value
    if len(values) != SLOTS_PER_DAY:
        raise ValueError(f"{name}: give a number or {SLOTS_PER_DAY} values by UTC half hour")
    out = tuple(_number(v, name) for v in values)
    if not all(0.0 <= v <= 1.0 for v in out):
        raise ValueError(f"{name} values must be in [0, 1]")
    return out


def _daily_targets(value: Any, name: str) -> tuple[DailySocTarget, ...]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"{name} must be a list of {{time_utc, soc_min_fraction}}")
    out = []
    for i, item in enumerate(value):
        at = item.get("time_utc") if isinstance(item, Mapping) else None
        match = re.fullmatch(r"([01]\d|2[0-3]):(00|30)", str(at))
        if not match:
            raise ValueError(f'{name}[{i}].time_utc must be a UTC half hour "HH:MM" (minutes 00 or 30)')
        fraction = _number(item.get("soc_min_fraction"), f"{name}[{i}].soc_min_fraction")
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"{name}[{i}].soc_min_fraction must be in [0, 1]")
        out.append(DailySocTarget(int(match.group(1)) * 60 + int(match.group(2)), fraction))
    return tuple(out)


class ProviderKind(StrEnum):
    """Who plans a provider's sites (``"kind"`` in the agent config; default ``compute``). One planner
    per site: a ``compute`` provider's agent plans its jobs and co-optimises any battery on its sites
    (storage coordination); a ``storage`` provider's agent plans battery-only sites on the storage
    model (:mod:`bpp.storage_agent`). A site is never planned by two agents."""

    COMPUTE = "compute"
    STORAGE = "storage"


@dataclass(frozen=True)
class ExportTerms:
    """What a battery site may sell back: at most ``limit_kw`` out of its connection, paid
    ``price_fraction`` of the import price of the slot (a site's ``"export"`` entry)."""

    limit_kw: float
    price_fraction: float = 1.0

    @classmethod
    def from_dict(cls, d: Any, where: str) -> ExportTerms:
        if not isinstance(d, Mapping):
            raise ValueError(f"{where} must be an object {{limit_kw, price_fraction}}")
        unknown = sorted(set(d) - {"limit_kw", "price_fraction"})
        if unknown:
            raise ValueError(f"{where}: unknown fields {unknown}")
        limit = _number(d.get("limit_kw"), f"{where}.limit_kw")
        fraction = _number(d.get("price_fraction", 1.0), f"{where}.price_fraction")
        if not 0.0 <= limit <= MAX_KW:
            raise ValueError(f"{where}.limit_kw must be in [0, {MAX_KW:g}]")
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"{where}.price_fraction must be in [0, 1]")
        return cls(limit, fraction)


def provider_kind(cfg: Mapping[str, Any], where: str = "agent") -> ProviderKind:
    """The agent config's kind, after checking that the sites fit it (one planner per site). Every
    problem raises ``ValueError`` naming the field."""
    raw = cfg.get("kind", ProviderKind.COMPUTE.value)
    if raw not in {k.value for k in ProviderKind}:
        raise ValueError(f"{where}.kind must be one of {[k.value for k in ProviderKind]}, got {raw!r}")
    kind = ProviderKind(raw)
    sites = cfg.get("sites")
    if not isinstance(sites, list) or not sites or not all(isinstance(s, Mapping) for s in sites):
        raise ValueError(f"{where}.sites must be a non-empty list of site objects")
    for i, site in enumerate(sites):
        _check_site_for(kind, site, cfg, f"{where}.sites[{i}]")
    if kind is ProviderKind.STORAGE and cfg.get("jobs"):
        raise ValueError(f"{where}.jobs: a storage provider runs no jobs (kind is storage)")
    return kind


def _check_site_for(kind: ProviderKind, site: Mapping[str, Any], cfg: Mapping[str, Any], where: str) -> None:
    if kind is ProviderKind.STORAGE:
        if not site.get("battery"):
            raise ValueError(f"{where}.battery is required: every site of a storage provider has a battery")
        if site.get("solar"):
            raise ValueError(f"{where}.solar: a storage site's other load is its baseline_kw (net of any solar)")
        return
    if "capacity_kw" not in site:
        raise ValueError(f"{where}.capacity_kw is required for a compute site")
    if site.get("export") is not None:
        raise ValueError(f"{where}.export: only a storage provider's sites export (kind is compute)")
    coordinated = (cfg.get("actions") or {}).get("storage_coordination", True)
    if site.get("battery") and coordinated is not True:
        raise ValueError(
            f"{where}.battery: with actions.storage_coordination off the battery would need a second "
            "planner selling the same meter; one planner per site — the compute agent co-optimises a "
            "site's battery, so set actions.storage_coordination to true (or remove the battery)"
        )


@dataclass(frozen=True)
class SiteConfig:
    """A site independent of any horizon; :meth:`materialise` gives the :class:`Site` for one."""

    id: str
    region: str
    capacity_kw: float | tuple[float, ...]
    baseline_kw: float | tuple[float, ...] = 0.0
    solar_capacity_kw: float = 0.0
    solar_latitude_deg: float = 52.0
    solar_longitude_deg: float = -1.5
    solar_clearness: float = 1.0
    battery: Battery | None = None
    grid_import_limit_kw: float | None = None
    #: the battery's per-slot rules, written for each horizon (None: the battery has none)
    battery_rules: BatteryDailyRules | None = None
    #: what the site may export (storage providers only; None: no export)
    export: ExportTerms | None = None

    def materialise(self, start_utc: datetime, n_slots: int, slot_minutes: int = MARKET_SLOT_MINUTES) -> Site:
        """The site over ``n_slots`` plan slots of ``slot_minutes`` from ``start_utc`` (module docstring:
        how half-hourly profiles become plan slots)."""
        # a 60-minute slot: the hall's envelope holds all hour (min), the load's energy is its mean
        capacity_rule: dict[str, Any] = {"slot_minutes": slot_minutes, "combine": np.min}
        energy_rule: dict[str, Any] = {"slot_minutes": slot_minutes, "combine": np.mean}
        solar = (
            synthetic_solar_kw(
                start_utc,
                n_slots,
                self.solar_capacity_kw,
                latitude_deg=self.solar_latitude_deg,
                longitude_deg=self.solar_longitude_deg,
                clearness=self.solar_clearness,
                slot_minutes=slot_minutes,
            )
            if self.solar_capacity_kw > 0
            else 0.0
        )
        return Site.build(
            self.id,
            self.region,
            n_slots,
            capacity_kw=_daily(self.capacity_kw, start_utc, n_slots, f"{self.id} capacity_kw", **capacity_rule),
            baseline_kw=_daily(self.baseline_kw, start_utc, n_slots, f"{self.id} baseline_kw", **energy_rule),
            solar_kw=solar,
            solar_capacity_kw=self.solar_capacity_kw,
            battery=self._battery_for(start_utc, n_slots, slot_minutes),
            grid_import_limit_kw=self.grid_import_limit_kw,
        )

    def _battery_for(self, start_utc: datetime, n_slots: int, slot_minutes: int) -> Battery | None:
        if self.battery is None or self.battery_rules is None:
            return self.battery
        return self.battery_rules.apply(self.battery, start_utc, n_slots, slot_minutes=slot_minutes)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SiteConfig:
        solar = d.get("solar") or {}
        base = d.get("baseline_kw", 0.0)
        cap = d.get("capacity_kw", base)  # a compute site must give it (provider_kind checks)
        battery, rules = (
            battery_from_config(d["battery"], f"site {d['id']} battery") if d.get("battery") else (None, None)
        )
        return cls(
            id=str(d["id"]),
            region=str(d["region"]),
            capacity_kw=tuple(cap) if isinstance(cap, list) else float(cap),
            baseline_kw=tuple(base) if isinstance(base, list) else float(base),
            solar_capacity_kw=float(solar.get("capacity_kw", 0.0)),
            solar_latitude_deg=float(solar.get("latitude_deg", 52.0)),
            solar_longitude_deg=float(solar.get("longitude_deg", -1.5)),
            solar_clearness=float(solar.get("clearness", 1.0)),
            battery=battery,
            grid_import_limit_kw=d.get("grid_import_limit_kw"),
            battery_rules=rules,
            export=None if d.get("export") is None else ExportTerms.from_dict(d["export"], f"site {d['id']} export"),
        )


def jobs_from_spec(
    spec: Mapping[str, Any],
    sites: Sequence[SiteConfig],
    *,
    start_utc: datetime,
    horizon_slots: int,
    actions: ControlActions,
    signals: SignalProvider,
    jobs_dir: Path | None,
    slot_minutes: int = MARKET_SLOT_MINUTES,
) -> list[Job]:
    """The ``"jobs"`` entry: ``{"list": [job, ...]}`` (:meth:`Job.from_dict` fields, slots of
    ``slot_minutes`` from ``start_utc``; or ``release_utc`` / ``deadline_utc`` / ``duration_min``
    instead, which must fall on the plan's slots), or a job-mix spec (:func:`bpp.workload.job_mix`;
    carbon thresholds drawn on ``signals``' carbon for the horizon). ``horizon_slots`` counts plan slots."""
    if "list" in spec:
        return [_job_from(dict(d), i, start_utc, slot_minutes) for i, d in enumerate(spec["list"])]
    if not spec:
        return []
    fields = {k: v for k, v in spec.items() if k in MixSettings.__dataclass_fields__}
    fields.setdefault("max_deferral_slots", actions.max_deferral_slots(slot_minutes))  # thresholds stay feasible
    mix = MixSettings.for_slot_minutes(slot_minutes, **fields)
    half_hours = horizon_slots * slot_minutes // MARKET_SLOT_MINUTES
    carbon = {
        s.id: to_plan_slots(np.asarray(signals(s.region, start_utc, half_hours).carbon_g_per_kwh), slot_minutes)
        for s in sites
    }
    caps = [float(np.mean(s.capacity_kw)) for s in sites]
    return job_mix(
        int(spec.get("n_jobs", 100)),
        horizon_slots,
        [s.id for s in sites],
        caps,
        source=str(spec.get("source", "alibaba")),
        jobs_dir=Path(spec["jobs_dir"]) if spec.get("jobs_dir") else jobs_dir,
        seed=int(spec.get("seed", 0)),
        home_carbon_g_per_kwh=carbon,
        settings=mix,
        slot_minutes=slot_minutes,
    )


def _job_from(d: dict[str, Any], i: int, start_utc: datetime, slot_minutes: int) -> Job:
    """One job of a ``{"list": …}`` spec, its times in plan slots; a time or duration off the plan's
    slots raises ValueError naming the field."""
    where = f"jobs.list[{i}]"
    for key, slot_key in (("release_utc", "release_slot"), ("deadline_utc", "deadline_slot")):
        if key in d:
            try:
                d[slot_key] = slots_between(start_utc, parse_utc(d.pop(key)), slot_minutes)
            except ValueError as exc:
                raise ValueError(f"{where}.{key}: {exc}") from None
    if "duration_min" in d:
        d["duration_slots"] = minutes_to_slots(d.pop("duration_min"), slot_minutes, f"{where}.duration_min")
    return Job.from_dict(d)
