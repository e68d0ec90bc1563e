"""Plain data for the compute/storage flexibility agents: jobs, sites, batteries, commitments, settings.

Pure (numpy only). Everything the scheduler (:mod:`bpp.scheduler`) reads is here, with its units in
its name and its meaning written where it is defined.

Time: the planning horizon is ``n_slots`` consecutive UTC slots of ``Instance.slot_minutes`` (15, 30 or
60; default 30 — :data:`PLAN_SLOT_MINUTES`) from ``start_utc`` (``../shared/DESIGN.md`` "Time"); slot
``t`` covers ``[start_utc + m·t, start_utc + m·(t+1))`` for ``m = slot_minutes``. A job's
``release_slot`` is the first slot it may run in and ``deadline_slot`` is *exclusive*: the job must have
finished by the start of slot ``deadline_slot`` (so it may run in slots ``< deadline_slot``). All slot
counts of an instance (jobs, battery profiles, targets) are in its own slots.

**The market stays half-hourly** whatever the plan's slot length: offers, orders (a
:class:`CommittedReduction`'s window and its baseline, one value per half hour) and settlement are on
half-hour boundaries (:data:`MARKET_SLOT_MINUTES`). An instance therefore starts on a UTC boundary of
``max(slot_minutes, 30)`` minutes, so every half hour of its horizon is either one 30-minute slot, two
15-minute slots, or half of one 60-minute slot (:mod:`bpp.offers` takes per-slot profiles to half
hours).

Energy and money per slot: a load of ``p`` kW held for one slot draws ``p · slot_hours`` kWh, i.e.
``p · slot_hours / 1000`` MWh (``Instance.mwh_per_kw_slot``), which costs ``price_gbp_per_mwh`` per MWh
and emits ``carbon_g_per_kwh`` g per kWh.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

# the battery types live in bpp.battery and are part of this module's vocabulary (re-exported)
from bpp.battery import Battery as Battery
from bpp.battery import Exclusivity as Exclusivity
from bpp.battery import SocTarget as SocTarget
from bpp.battery import battery_profile_check as battery_profile_check

#: the market's period: offers, orders and settlement are half-hourly whatever a plan's slot length
MARKET_SLOT_MINUTES = 30
#: the slot lengths a plan may use (``Instance.slot_minutes``; a site's ``slot_minutes`` config)
PLAN_SLOT_MINUTES = (15, 30, 60)
#: the half hour — the market slot and the default plan slot. Code that plans at any slot length reads
#: ``Instance.slot_minutes`` / ``slot_hours`` / ``slot`` / ``mwh_per_kw_slot`` instead.
SLOT_MINUTES = MARKET_SLOT_MINUTES
SLOT_HOURS = SLOT_MINUTES / 60.0
SLOT = timedelta(minutes=SLOT_MINUTES)
#: MWh drawn by 1 kW held for one half-hour slot
MWH_PER_KW_SLOT = SLOT_HOURS / 1000.0
#: Numerical tolerance for "equal" in plan checks (kW, fractions of a job, kWh)
TOL = 1e-6

#: numpy arrays by element type: quantities (kW, kWh, £, g/kWh, fractions), indices (sites, slots, LP
#: columns and rows) and masks. Shapes are in each name's docstring, e.g. (n_sites, n_slots).
FloatArray: TypeAlias = npt.NDArray[np.float64]
IntArray: TypeAlias = npt.NDArray[np.int64]
BoolArray: TypeAlias = npt.NDArray[np.bool_]


class Priority(StrEnum):
    """Job class. ``critical`` runs exactly at release at its home site (LS work in the traces);
    ``flexible`` and ``batch`` may be shifted and migrated within their constraints (BE work)."""

    CRITICAL = "critical"
    FLEXIBLE = "flexible"
    BATCH = "batch"


class ObjectiveKind(StrEnum):
    """What the scheduler minimises; all sum over sites s and slots t of the grid import energy
    ``E[s,t]`` (MWh) times a per-MWh weight, plus money terms (migration, battery degradation):

    - ``cost_x_carbon`` (default, the issue's ``Σ price_t · power_t · carbon_factor_t``): weight
      ``price · carbon_factor`` with ``carbon_factor[r,t] = carbon[r,t] / carbon_reference_g_per_kwh``,
      a dimensionless multiplier that is 1 at the reference intensity, so the objective is in
      "carbon-adjusted £": a MWh bought at the reference intensity counts at its price, one at half the
      intensity at half its price. The reference is a fixed constant (not the horizon mean) so that plans
      made on different horizons, forecasts and actuals are scored on one scale.
    - ``cost``: weight ``price`` → £.
    - ``carbon``: weight ``carbon`` (g/kWh = kg/MWh) → kg CO2; money terms only break ties.
    - ``weighted``: ``cost_weight · price + carbon_weight · carbon_price_gbp_per_tonne · carbon / 1000``
      → £ with carbon valued at a shadow price.

    With negative prices the ``cost`` and ``cost_x_carbon`` weights are negative: drawing energy then
    earns money and the plan may curtail on-site solar to do so (a real option for the site)."""

    COST_X_CARBON = "cost_x_carbon"
    COST = "cost"
    CARBON = "carbon"
    WEIGHTED = "weighted"


@dataclass(frozen=True)
class ObjectiveSpec:
    kind: ObjectiveKind = ObjectiveKind.COST_X_CARBON
    #: carbon_factor = carbon / this; 150 g/kWh ≈ GB's 2023 national mean
    #: (152.1 gCO2/kWh, ../shared/data/grid/README.md "Quick statistics")
    carbon_reference_g_per_kwh: float = 150.0
    #: shadow carbon price for ``weighted`` (and to express a ``carbon`` objective in £ for offers)
    carbon_price_gbp_per_tonne: float = 80.0
    cost_weight: float = 1.0
    carbon_weight: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", ObjectiveKind(self.kind))
        if self.carbon_reference_g_per_kwh <= 0:
            raise ValueError("carbon_reference_g_per_kwh must be > 0")

    def weight_per_mwh(self, price_gbp_per_mwh: FloatArray, carbon_g_per_kwh: FloatArray) -> FloatArray:
        """Objective weight of one MWh of grid import, elementwise over slots."""
        p = np.asarray(price_gbp_per_mwh, dtype=float)
        c = np.asarray(carbon_g_per_kwh, dtype=float)
        if self.kind is ObjectiveKind.COST_X_CARBON:
            return p * (c / self.carbon_reference_g_per_kwh)
        if self.kind is ObjectiveKind.COST:
            return p.copy()
        if self.kind is ObjectiveKind.CARBON:
            return c.copy()  # g/kWh == kg/MWh
        return self.cost_weight * p + self.carbon_weight * self.carbon_price_gbp_per_tonne * c / 1000.0

    @property
    def gbp_weight(self) -> float:
        """Objective weight of £1 of migration or degradation cost (a tie-breaker for ``carbon``)."""
        return 1e-6 if self.kind is ObjectiveKind.CARBON else 1.0

    @property
    def gbp_per_objective_unit(self) -> float:
        """£ per unit of objective, to price flexibility (kg → £ at the shadow price for ``carbon``)."""
        if self.kind is ObjectiveKind.CARBON:
            return self.carbon_price_gbp_per_tonne / 1000.0
        return 1.0


@dataclass(frozen=True)
class ControlActions:
    """The scheduler's control actions; each one is a switch and shows in the decision log."""

    #: move flexible/batch work later than its release, by at most ``max_deferral_min``
    temporal_shifting: bool = True
    #: bound on how much later than "start at release" a job may *finish* (4 h default); with
    #: ``temporal_shifting`` off a job must run in its first ``duration`` slots from release. A multiple
    #: of the plan's slot length (the :class:`Instance` checks it against its ``slot_minutes``)
    max_deferral_min: int = 240
    #: run flexible/batch work at another of the provider's sites whose region the job allows
    geographic_migration: bool = True
    #: co-optimise the site battery (it may cover site load during committed reductions)
    storage_coordination: bool = True
    #: batch jobs run only in "green" slots, where on-site solar ≥ ``green_solar_fraction`` of capacity
    renewable_gating: bool = False
    green_solar_fraction: float = 0.8
    #: where battery blocks carry a charge-or-discharge binary (:class:`Exclusivity`)
    battery_exclusivity: Exclusivity = Exclusivity.WHERE_PRICES_NEGATIVE

    def __post_init__(self) -> None:
        if self.battery_exclusivity not in set(Exclusivity):
            raise ValueError(f"battery_exclusivity must be one of {[str(e) for e in Exclusivity]}")
        object.__setattr__(self, "battery_exclusivity", Exclusivity(self.battery_exclusivity))
        if self.max_deferral_min < 0 or self.max_deferral_min % min(PLAN_SLOT_MINUTES):
            raise ValueError(f"max_deferral_min must be a non-negative multiple of {min(PLAN_SLOT_MINUTES)}")
        if not 0.0 < self.green_solar_fraction <= 1.0:
            raise ValueError("green_solar_fraction must be in (0, 1]")

    def max_deferral_slots(self, slot_minutes: int) -> int:
        """The deferral bound in slots of ``slot_minutes`` (0 without temporal shifting); ValueError
        naming ``max_deferral_min`` when it is not a whole number of them."""
        slots = minutes_to_slots(self.max_deferral_min, slot_minutes, "max_deferral_min")
        return slots if self.temporal_shifting else 0


@dataclass(frozen=True)
class Job:
    """One unit of compute work.

    ``power_kw`` is drawn in every slot the job runs; it needs ``duration_slots − work_done_slots``
    slots of work. Preemption: a job is *preemptible* only if ``interruptible`` (its owner allows
    pauses) **and** ``checkpointable`` (a pause keeps its progress); an interruptible job without a
    checkpoint would lose its work when paused, so the scheduler runs it contiguously. A preemptible
    job is modelled as malleable: in a slot it may draw any fraction of ``power_kw`` and progresses by
    that fraction (running on fewer GPUs/cores), and may continue at another allowed site from its
    checkpoint. ``allowed_regions`` None = any region of the provider's sites. ``site_id`` is the home
    site (where it was submitted; "" = the first site). ``release_slot`` may be negative in a re-plan
    (released before the horizon). ``running_at_site`` marks a non-preemptible job already running
    there when a re-plan starts: its remaining slots are fixed from slot 0.
    """

    id: str
    power_kw: float
    duration_slots: int
    release_slot: int
    deadline_slot: int
    priority: Priority = Priority.FLEXIBLE
    carbon_threshold_g_per_kwh: float | None = None
    interruptible: bool = False
    checkpointable: bool = False
    site_id: str = ""
    allowed_regions: tuple[str, ...] | None = None
    migration_cost_gbp: float = 0.0
    work_done_slots: float = 0.0
    running_at_site: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "priority", Priority(self.priority))
        if self.allowed_regions is not None:
            object.__setattr__(self, "allowed_regions", tuple(self.allowed_regions))
        if not self.id:
            raise ValueError("job id must be non-empty")
        if not (self.power_kw > 0 and math.isfinite(self.power_kw)):
            raise ValueError(f"job {self.id}: power_kw must be a positive number")
        if self.duration_slots < 1:
            raise ValueError(f"job {self.id}: duration_slots must be ≥ 1")
        if not 0.0 <= self.work_done_slots < self.duration_slots:
            raise ValueError(f"job {self.id}: work_done_slots must be in [0, duration_slots)")
        if self.migration_cost_gbp < 0:
            raise ValueError(f"job {self.id}: migration_cost_gbp must be ≥ 0")

    @property
    def preemptible(self) -> bool:
        return self.interruptible and self.checkpointable and self.running_at_site is None

    @property
    def work_slots(self) -> float:
        """Slots of full-power work still to do."""
        return self.duration_slots - self.work_done_slots

    def energy_kwh(self, slot_minutes: int) -> float:
        """Energy of the work still to do, in a plan of ``slot_minutes`` slots."""
        return self.power_kw * self.work_slots * slot_minutes / 60.0

    @property
    def movable(self) -> bool:
        """May the scheduler choose when/where it runs? (critical and already-running work may not)"""
        return self.priority is not Priority.CRITICAL and self.running_at_site is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "power_kw": self.power_kw,
            "duration_slots": self.duration_slots,
            "release_slot": self.release_slot,
            "deadline_slot": self.deadline_slot,
            "priority": str(self.priority),
            "carbon_threshold_g_per_kwh": self.carbon_threshold_g_per_kwh,
            "interruptible": self.interruptible,
            "checkpointable": self.checkpointable,
            "site_id": self.site_id,
            "allowed_regions": list(self.allowed_regions) if self.allowed_regions is not None else None,
            "migration_cost_gbp": self.migration_cost_gbp,
            "work_done_slots": self.work_done_slots,
            "running_at_site": self.running_at_site,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Job:
        allowed = d.get("allowed_regions")
        return cls(
            id=str(d["id"]),
            power_kw=float(d["power_kw"]),
            duration_slots=int(d["duration_slots"]),
            release_slot=int(d["release_slot"]),
            deadline_slot=int(d["deadline_slot"]),
            priority=Priority(d.get("priority", "flexible")),
            carbon_threshold_g_per_kwh=(
                None if d.get("carbon_threshold_g_per_kwh") is None else float(d["carbon_threshold_g_per_kwh"])
            ),
            interruptible=bool(d.get("interruptible", False)),
            checkpointable=bool(d.get("checkpointable", False)),
            site_id=str(d.get("site_id", "")),
            allowed_regions=None if allowed is None else tuple(str(r) for r in allowed),
            migration_cost_gbp=float(d.get("migration_cost_gbp", 0.0)),
            work_done_slots=float(d.get("work_done_slots", 0.0)),
            running_at_site=d.get("running_at_site"),
        )


def _profile(value: float | FloatArray | list[float], n_slots: int, name: str) -> FloatArray:
    arr = np.asarray(value, dtype=float)
    if arr.ndim == 0:
        arr = np.full(n_slots, float(arr))
    if arr.shape != (n_slots,):
        raise ValueError(f"{name} must be a scalar or have {n_slots} slots, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN/inf")
    arr = arr.copy()
    arr.flags.writeable = False
    return arr


@dataclass(frozen=True, eq=False)
class Site:
    """A data-centre site. ``capacity_kw[t]`` bounds the site's *load* (baseline + compute jobs) — the
    data hall's electrical envelope. ``baseline_kw[t]`` is the inflexible load (cooling, storage,
    services outside the scheduler). Grid import = load + battery charge − battery discharge − solar
    used, is ≥ 0 (no export) and ≤ ``grid_import_limit_kw`` if given. ``solar_kw[t]`` is on-site PV
    output available in slot t (may be curtailed); ``solar_capacity_kw`` its nameplate."""

    id: str
    region: str
    capacity_kw: FloatArray
    baseline_kw: FloatArray
    solar_kw: FloatArray
    solar_capacity_kw: float = 0.0
    battery: Battery | None = None
    grid_import_limit_kw: float | None = None

    @classmethod
    def build(
        cls,
        id: str,
        region: str,
        n_slots: int,
        *,
        capacity_kw: float | FloatArray,
        baseline_kw: float | FloatArray = 0.0,
        solar_kw: float | FloatArray = 0.0,
        solar_capacity_kw: float = 0.0,
        battery: Battery | None = None,
        grid_import_limit_kw: float | None = None,
    ) -> Site:
        if battery is not None:
            battery_profile_check(battery, n_slots, f"site {id} battery")
        return cls(
            id=id,
            region=region,
            capacity_kw=_profile(capacity_kw, n_slots, f"site {id} capacity_kw"),
            baseline_kw=_profile(baseline_kw, n_slots, f"site {id} baseline_kw"),
            solar_kw=_profile(solar_kw, n_slots, f"site {id} solar_kw"),
            solar_capacity_kw=float(solar_capacity_kw),
            battery=battery,
            grid_import_limit_kw=grid_import_limit_kw,
        )

    @property
    def n_slots(self) -> int:
        return len(self.capacity_kw)

    def green_mask(self, fraction: float) -> BoolArray:
        """Slots where on-site solar ≥ ``fraction`` × its capacity (no solar → never green)."""
        if self.solar_capacity_kw <= 0:
            return np.zeros(self.n_slots, dtype=bool)
        return self.solar_kw >= fraction * self.solar_capacity_kw - TOL

    def sliced(self, a: int, b: int) -> Site:
        return replace(
            self,
            capacity_kw=self.capacity_kw[a:b],
            baseline_kw=self.baseline_kw[a:b],
            solar_kw=self.solar_kw[a:b],
            battery=None if self.battery is None else self.battery.sliced(a, b),
        )


@dataclass(frozen=True)
class CommittedReduction:
    """An accepted order: reduce ``site_id``'s grid import by ``reduction_kw`` over
    ``[start_utc, end_utc)``.

    **Baseline, precisely:** ``baseline_kw[i]`` is the site's planned grid import in slot i of the
    window in the plan that was current when the order was confirmed (the plan the offer was derived
    from; frozen then, never recomputed). The scheduler enforces
    ``grid_import[site, slot] ≤ baseline_kw[i] − reduction_kw`` in every slot of the window, i.e. the
    reduction is measured at the meter, so the battery and solar may deliver it as well as compute.
    (Settlement measures delivery against its own ``10_of_10`` metered baseline —
    ../shared/reference/market/p415-settlement.md; this is the planning-side promise.)"""

    order_id: str
    site_id: str
    start_utc: datetime
    end_utc: datetime
    reduction_kw: float
    baseline_kw: tuple[float, ...]

    def __post_init__(self) -> None:
        n = slots_between(self.start_utc, self.end_utc)
        if n < 1:
            raise ValueError(f"order {self.order_id}: window must cover at least one slot")
        object.__setattr__(self, "baseline_kw", tuple(float(x) for x in self.baseline_kw))
        if len(self.baseline_kw) != n:
            raise ValueError(f"order {self.order_id}: baseline_kw needs {n} values, got {len(self.baseline_kw)}")
        if self.reduction_kw <= 0:
            raise ValueError(f"order {self.order_id}: reduction_kw must be > 0")

    @property
    def n_slots(self) -> int:
        return len(self.baseline_kw)

    def max_import_kw(self) -> FloatArray:
        return np.asarray(self.baseline_kw) - self.reduction_kw

    def to_dict(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "site_id": self.site_id,
            "start_utc": iso(self.start_utc),
            "end_utc": iso(self.end_utc),
            "reduction_kw": self.reduction_kw,
            "baseline_kw": list(self.baseline_kw),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CommittedReduction:
        return cls(
            order_id=str(d["order_id"]),
            site_id=str(d["site_id"]),
            start_utc=parse_utc(d["start_utc"]),
            end_utc=parse_utc(d["end_utc"]),
            reduction_kw=float(d["reduction_kw"]),
            baseline_kw=tuple(float(x) for x in d["baseline_kw"]),
        )


@dataclass(frozen=True)
class SolverSettings:
    time_limit_s: float = 60.0
    #: HiGHS relative MIP gap at which it stops; the achieved gap is reported with every plan
    mip_rel_gap: float = 1e-6
    threads: int = 1


@dataclass(eq=False)
class Instance:
    """Everything one solve needs. ``price_gbp_per_mwh`` and ``carbon_g_per_kwh`` map each site
    region to an array of (at least) ``n_slots`` values from ``start_utc``, one per slot of
    ``slot_minutes`` (:func:`bpp.signal_providers.to_plan_slots` takes half-hourly series there):
    forecasts when planning, actuals when settling.

    ``slot_minutes`` is the plan's slot length, one of :data:`PLAN_SLOT_MINUTES` (data, validated):
    ``start_utc`` lies on a UTC boundary of ``max(slot_minutes, 30)`` minutes and
    ``actions.max_deferral_min`` is a whole number of slots (module docstring, "Time")."""

    start_utc: datetime
    n_slots: int
    sites: tuple[Site, ...]
    jobs: tuple[Job, ...]
    price_gbp_per_mwh: dict[str, FloatArray]
    carbon_g_per_kwh: dict[str, FloatArray]
    commitments: tuple[CommittedReduction, ...] = ()
    actions: ControlActions = field(default_factory=ControlActions)
    objective: ObjectiveSpec = field(default_factory=ObjectiveSpec)
    solver: SolverSettings = field(default_factory=SolverSettings)
    slot_minutes: int = MARKET_SLOT_MINUTES

    def __post_init__(self) -> None:
        self.start_utc = to_utc(self.start_utc)
        self.slot_minutes = check_slot_minutes(self.slot_minutes)
        boundary = max(self.slot_minutes, MARKET_SLOT_MINUTES)
        if int(self.start_utc.timestamp()) % (boundary * 60):
            raise ValueError(
                f"start_utc {iso(self.start_utc)} must lie on a {boundary}-minute UTC boundary "
                f"(slot_minutes {self.slot_minutes}; offers and orders stay half-hourly)"
            )
        self.actions.max_deferral_slots(self.slot_minutes)  # a whole number of slots, or ValueError
        self.sites = tuple(self.sites)
        self.jobs = tuple(self.jobs)
        self.commitments = tuple(self.commitments)
        if not self.sites:
            raise ValueError("an instance needs at least one site")
        ids = [s.id for s in self.sites]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate site ids")
        for s in self.sites:
            if s.n_slots != self.n_slots:
                raise ValueError(f"site {s.id} has {s.n_slots} slots, instance has {self.n_slots}")
        job_ids = [j.id for j in self.jobs]
        if len(set(job_ids)) != len(job_ids):
            dup = sorted({x for x in job_ids if job_ids.count(x) > 1})
            raise ValueError(f"duplicate job ids: {dup[:5]}")
        site_set = set(ids)
        fixed_jobs = []
        for j in self.jobs:
            if j.site_id and j.site_id not in site_set:
                raise ValueError(f"job {j.id}: home site {j.site_id!r} is not one of {ids}")
            if j.running_at_site is not None and j.running_at_site not in site_set:
                raise ValueError(f"job {j.id}: running_at_site {j.running_at_site!r} is not a site")
            if not j.site_id:
                fixed_jobs.append(replace(j, site_id=ids[0]))
            else:
                fixed_jobs.append(j)
        self.jobs = tuple(fixed_jobs)
        for name, table in (
            ("price_gbp_per_mwh", self.price_gbp_per_mwh),
            ("carbon_g_per_kwh", self.carbon_g_per_kwh),
        ):
            clean: dict[str, FloatArray] = {}
            for s in self.sites:
                if s.region not in table:
                    raise ValueError(f"{name} has no series for region {s.region!r} (site {s.id})")
            for region, arr in table.items():
                a = np.asarray(arr, dtype=float)
                if a.ndim != 1 or len(a) < self.n_slots:
                    raise ValueError(f"{name}[{region}] needs ≥ {self.n_slots} slots, got shape {a.shape}")
                a = a[: self.n_slots]
                if not np.all(np.isfinite(a)):
                    raise ValueError(f"{name}[{region}] contains NaN/inf")
                clean[region] = a
            setattr(self, name, clean)
        for c in self.commitments:
            if c.site_id not in site_set:
                raise ValueError(f"order {c.order_id}: site {c.site_id!r} is not one of {ids}")

    # -- lookups ---------------------------------------------------------------------------------
    @property
    def n_sites(self) -> int:
        return len(self.sites)

    @property
    def n_jobs(self) -> int:
        return len(self.jobs)

    def site_index(self, site_id: str) -> int:
        for k, s in enumerate(self.sites):
            if s.id == site_id:
                return k
        raise KeyError(site_id)

    @property
    def slot(self) -> timedelta:
        return timedelta(minutes=self.slot_minutes)

    @property
    def slot_hours(self) -> float:
        return self.slot_minutes / 60.0

    @property
    def mwh_per_kw_slot(self) -> float:
        """MWh drawn by 1 kW held for one slot of this instance."""
        return self.slot_hours / 1000.0

    def slot_start(self, t: int) -> datetime:
        return self.start_utc + self.slot * t

    def slot_of(self, t_utc: datetime) -> int:
        return slots_between(self.start_utc, t_utc, self.slot_minutes)

    def half_hour_of(self, t_utc: datetime) -> int:
        """Index of the half hour starting at ``t_utc`` from the horizon start (a market boundary)."""
        return slots_between(self.start_utc, t_utc, MARKET_SLOT_MINUTES)

    def slots_of_half_hours(self, first: int, end: int) -> tuple[int, int]:
        """``[a, b)``: the plan slots covering half hours ``[first, end)`` of the horizon (a 60-minute
        slot covers two half hours, so a half-hour window may map to a whole slot)."""
        return half_hours_to_slots(first, end, self.slot_minutes)

    def price_matrix(self) -> FloatArray:
        """(n_sites, n_slots) £/MWh at each site's region."""
        return np.stack([self.price_gbp_per_mwh[s.region] for s in self.sites])

    def carbon_matrix(self) -> FloatArray:
        """(n_sites, n_slots) gCO2/kWh at each site's region."""
        return np.stack([self.carbon_g_per_kwh[s.region] for s in self.sites])

    def weight_matrix(self) -> FloatArray:
        """(n_sites, n_slots) objective weight per MWh of grid import."""
        return self.objective.weight_per_mwh(self.price_matrix(), self.carbon_matrix())

    def with_signals(
        self, price_gbp_per_mwh: Mapping[str, FloatArray], carbon_g_per_kwh: Mapping[str, FloatArray]
    ) -> Instance:
        """The same instance on other signals (e.g. actuals, to evaluate a plan made on forecasts)."""
        return replace(self, price_gbp_per_mwh=dict(price_gbp_per_mwh), carbon_g_per_kwh=dict(carbon_g_per_kwh))

    def window_slots(self, start_utc: datetime, end_utc: datetime) -> tuple[int, int]:
        """``[a, b)``: the plan slots covering a half-hour-aligned window (an order's, an offer's)."""
        return self.slots_of_half_hours(self.half_hour_of(start_utc), self.half_hour_of(end_utc))

    def commitment_half_hours(self) -> list[HalfHourCap]:
        """Every committed half hour inside the horizon as a cap on the *mean* grid import over the plan
        slots it covers: one 30-minute slot, two 15-minute slots, or the 60-minute slot it is half of
        (whose import is the same in both its half hours). A half hour partly past the horizon end caps
        the slots inside (stricter: their mean must meet it alone)."""
        out: list[HalfHourCap] = []
        for c in self.commitments:
            k = self.site_index(c.site_id)
            h0 = self.half_hour_of(c.start_utc)
            for i, cap in enumerate(c.max_import_kw()):
                a, b = self.slots_of_half_hours(h0 + i, h0 + i + 1)
                a, b = max(a, 0), min(b, self.n_slots)
                if a < b:
                    out.append(HalfHourCap(c.order_id, k, tuple(range(a, b)), float(cap)))
        return out

    def commitment_caps_kw(self) -> FloatArray:
        """(n_sites, n_slots) upper bound on grid import from committed half hours that are one slot
        (30- and 60-minute plans; inf where none). Orders over the same slot each carry the baseline
        frozen at their own confirmation (the plan already reduced by the earlier orders), so the
        binding cap is the smallest one. Half hours of several slots (15-minute plans) cap a mean:
        :meth:`commitment_mean_caps`."""
        caps = np.full((self.n_sites, self.n_slots), np.inf)
        for h in self.commitment_half_hours():
            if len(h.slots) == 1:
                caps[h.site_index, h.slots[0]] = min(caps[h.site_index, h.slots[0]], h.cap_kw)
        return caps

    def commitment_cap_by_slot_kw(self) -> FloatArray:
        """(n_sites, n_slots) the smallest cap of any committed half hour touching each slot (inf where
        none) — for naming conflicts; the model imposes :meth:`commitment_caps_kw` and the mean caps."""
        caps = self.commitment_caps_kw()
        for h in self.commitment_mean_caps():
            slots = list(h.slots)
            caps[h.site_index, slots] = np.minimum(caps[h.site_index, slots], h.cap_kw)
        return caps

    def commitment_mean_caps(self) -> list[HalfHourCap]:
        """Committed half hours that span several plan slots (15-minute plans): mean import ≤ cap."""
        return [h for h in self.commitment_half_hours() if len(h.slots) > 1]


@dataclass(frozen=True)
class HalfHourCap:
    """One committed half hour: the mean grid import of site ``site_index`` over plan ``slots`` is at
    most ``cap_kw`` (the order's frozen baseline for that half hour − its reduction)."""

    order_id: str
    site_index: int
    slots: tuple[int, ...]
    cap_kw: float


# -- job windows and eligibility (the constraint definitions the scheduler and baselines share) ---


def effective_window(
    job: Job, n_slots: int, actions: ControlActions, *, slot_minutes: int = MARKET_SLOT_MINUTES
) -> tuple[int, int]:
    """``[first, end)`` slots a job may run in: from release (≥ 0) to the earliest of its deadline,
    release + duration + max deferral (the deferral bound is on *finishing*, so it applies to
    preemptible and contiguous jobs alike), and the horizon end. A critical or running job's window
    is exactly its fixed run. May be empty or too short: the pre-checks report that."""
    first = max(job.release_slot, 0)
    if not job.movable:
        return first, first + math.ceil(job.work_slots - TOL)
    deferral = actions.max_deferral_slots(slot_minutes)
    end = min(job.deadline_slot, job.release_slot + job.duration_slots + deferral, n_slots)
    return first, end


def allowed_sites(instance: Instance, job: Job) -> list[int]:
    """Indices of the sites a job may run at: home only unless migration is on and the job is movable;
    otherwise every site whose region the job allows."""
    home = instance.site_index(job.running_at_site or job.site_id)
    may_move = job.movable and instance.actions.geographic_migration
    sites = list(range(instance.n_sites)) if may_move else [home]
    if job.allowed_regions is not None and job.movable:
        sites = [k for k in sites if instance.sites[k].region in job.allowed_regions]
    return sites


def to_utc(dt: datetime) -> datetime:
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"{dt!r} is naive; pass a tz-aware UTC datetime")
    return dt.astimezone(UTC)


def slots_between(a: datetime, b: datetime, slot_minutes: int = MARKET_SLOT_MINUTES) -> int:
    seconds = (to_utc(b) - to_utc(a)).total_seconds()
    n, rem = divmod(seconds, slot_minutes * 60)
    if rem:
        raise ValueError(f"{iso(a)} → {iso(b)} is not a whole number of {slot_minutes}-minute slots")
    return int(n)


def half_hours_to_slots(first: int, end: int, slot_minutes: int) -> tuple[int, int]:
    """``[a, b)``: the slots of ``slot_minutes`` covering half hours ``[first, end)`` of a horizon that
    starts on a boundary of both."""
    return (first * MARKET_SLOT_MINUTES) // slot_minutes, -((-end * MARKET_SLOT_MINUTES) // slot_minutes)


def check_slot_minutes(value: Any, field: str = "slot_minutes") -> int:
    """A plan's slot length, one of :data:`PLAN_SLOT_MINUTES`; ValueError naming ``field`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value not in PLAN_SLOT_MINUTES:
        raise ValueError(f"{field} must be one of {list(PLAN_SLOT_MINUTES)} (minutes), got {value!r}")
    return value


def minutes_to_slots(minutes: Any, slot_minutes: int, field: str) -> int:
    """``minutes`` as a whole number of slots; ValueError naming ``field`` when it is not a
    non-negative multiple of ``slot_minutes``."""
    if isinstance(minutes, bool) or not isinstance(minutes, int) or minutes < 0 or minutes % slot_minutes:
        raise ValueError(f"{field} must be a non-negative multiple of the {slot_minutes}-minute slot, got {minutes!r}")
    return minutes // slot_minutes


def iso(dt: datetime) -> str:
    return to_utc(dt).isoformat().replace("+00:00", "Z")


def parse_utc(text: str | datetime) -> datetime:
    if isinstance(text, datetime):
        return to_utc(text)
    return to_utc(datetime.fromisoformat(str(text).replace("Z", "+00:00")))
