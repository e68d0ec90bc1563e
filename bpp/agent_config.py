"""An agent's config (the BPP providers config's ``"agent"`` entry) read into the domain: sites
independent of any horizon, jobs from a list or a job mix drawn from the traces, objective and offer
settings. :meth:`bpp.agent.ComputeAgent.from_config` documents the config's shape.

Pure: no clock, no I/O beyond reading a config file or the job traces it names.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
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
    parse_utc,
    slots_between,
)
from bpp.offers import OfferSettings
from bpp.signal_providers import SignalProvider
from bpp.workload import MixSettings, job_mix, synthetic_solar_kw
from grid.signals import SLOTS_PER_DAY


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
            battery=self.battery,
            grid_import_limit_kw=self.grid_import_limit_kw,
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SiteConfig:
        solar = d.get("solar") or {}
        cap = d["capacity_kw"]
        base = d.get("baseline_kw", 0.0)
        return cls(
            id=str(d["id"]),
            region=str(d["region"]),
            capacity_kw=tuple(cap) if isinstance(cap, list) else float(cap),
            baseline_kw=tuple(base) if isinstance(base, list) else float(base),
            solar_capacity_kw=float(solar.get("capacity_kw", 0.0)),
            solar_latitude_deg=float(solar.get("latitude_deg", 52.0)),
            solar_longitude_deg=float(solar.get("longitude_deg", -1.5)),
            solar_clearness=float(solar.get("clearness", 1.0)),
            battery=Battery.from_dict(d["battery"]) if d.get("battery") else None,
            grid_import_limit_kw=d.get("grid_import_limit_kw"),
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
