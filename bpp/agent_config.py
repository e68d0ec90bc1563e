"""An agent's config (the BPP providers config's ``"agent"`` entry) read into the domain: sites
independent of any horizon, jobs from a list or a job mix drawn from the traces, objective and offer
settings. :meth:`bpp.agent.ComputeAgent.from_config` documents the config's shape.

Pure: no clock, no I/O beyond reading a config file or the job traces it names.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from bpp.domain import (
    Battery,
    ControlActions,
    FloatArray,
    Job,
    ObjectiveKind,
    ObjectiveSpec,
    Site,
    SocTarget,
    parse_utc,
    slots_between,
)
from bpp.offers import OfferSettings
from bpp.signal_providers import SignalProvider
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


def _daily(value: float | Sequence[float], start_utc: datetime, n_slots: int, name: str) -> FloatArray:
    """A number, or 48 values by UTC half hour repeated daily, over ``n_slots`` from ``start_utc``."""
    arr = np.asarray(value, dtype=float)
    if arr.ndim == 0:
        return np.full(n_slots, float(arr))
    if arr.shape != (SLOTS_PER_DAY,):
        raise ValueError(f"{name}: give a number or {SLOTS_PER_DAY} daily values, got shape {arr.shape}")
    first = (start_utc.hour * 60 + start_utc.minute) // 30
    profile: FloatArray = arr[(first + np.arange(n_slots)) % SLOTS_PER_DAY]
    return profile


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

    def apply(self, battery: Battery, start_utc: datetime, n_slots: int) -> Battery:
        lo, hi = self.soc_min_fraction_daily, self.soc_max_fraction_daily
        first = start_utc.hour * 60 + start_utc.minute
        targets = []
        for target in self.soc_targets_daily:
            # minutes from the horizon start to the first occurrence, then every day
            offset = (target.minute_of_day_utc - first) % (24 * 60) or 24 * 60
            for end_minute in range(offset, n_slots * 30 + 1, 24 * 60):
                targets.append(SocTarget(slot=end_minute // 30 - 1, soc_min_fraction=target.soc_min_fraction))
        return replace(
            battery,
            soc_min_fraction_by_slot=None if lo is None else tuple(_daily(lo, start_utc, n_slots, "soc_min").tolist()),
            soc_max_fraction_by_slot=None if hi is None else tuple(_daily(hi, start_utc, n_slots, "soc_max").tolist()),
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

    def materialise(self, start_utc: datetime, n_slots: int) -> Site:
        solar = (
            synthetic_solar_kw(
                start_utc,
                n_slots,
                self.solar_capacity_kw,
                latitude_deg=self.solar_latitude_deg,
                longitude_deg=self.solar_longitude_deg,
                clearness=self.solar_clearness,
            )
            if self.solar_capacity_kw > 0
            else 0.0
        )
        return Site.build(
            self.id,
            self.region,
            n_slots,
            capacity_kw=_daily(self.capacity_kw, start_utc, n_slots, f"{self.id} capacity_kw"),
            baseline_kw=_daily(self.baseline_kw, start_utc, n_slots, f"{self.id} baseline_kw"),
            solar_kw=solar,
            solar_capacity_kw=self.solar_capacity_kw,
            battery=self._battery_for(start_utc, n_slots),
            grid_import_limit_kw=self.grid_import_limit_kw,
        )

    def _battery_for(self, start_utc: datetime, n_slots: int) -> Battery | None:
        if self.battery is None or self.battery_rules is None:
            return self.battery
        return self.battery_rules.apply(self.battery, start_utc, n_slots)

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
) -> list[Job]:
    """The ``"jobs"`` entry: ``{"list": [job, ...]}`` (:meth:`Job.from_dict` fields, slots from
    ``start_utc`` or ``release_utc`` / ``deadline_utc`` instead), or a job-mix spec
    (:func:`bpp.workload.job_mix`; carbon thresholds drawn on ``signals``' carbon for the horizon)."""
    if "list" in spec:
        out = []
        for d in spec["list"]:
            d = dict(d)
            if "release_utc" in d:
                d["release_slot"] = slots_between(start_utc, parse_utc(d.pop("release_utc")))
            if "deadline_utc" in d:
                d["deadline_slot"] = slots_between(start_utc, parse_utc(d.pop("deadline_utc")))
            out.append(Job.from_dict(d))
        return out
    if not spec:
        return []
    fields = {k: v for k, v in spec.items() if k in MixSettings.__dataclass_fields__}
    fields.setdefault("max_deferral_slots", actions.max_deferral_slots)  # thresholds stay feasible
    mix = MixSettings(**fields)
    carbon = {s.id: np.asarray(signals(s.region, start_utc, horizon_slots).carbon_g_per_kwh) for s in sites}
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
    )
