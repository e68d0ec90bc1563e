"""Pure facades the BPP service calls: a compute agent and a storage agent per provider.

An agent owns a rolling horizon (``horizon_slots`` from "now"), its sites, its jobs, the committed
orders and the current optimal plan; every plan, commitment, refusal and re-plan is appended to its
decision log. Signals come from a *provider* ``(region, start_utc, n_slots) -> SignalSeries``: actual
2023 series for simulation, forecasts for planning (``bpp.forecast``), or any series the BPP holds.

Construct from a plain dict (the BPP's providers config), e.g.::

    {
      "provider_id": "dc-operator-1",
      "start_utc": "2023-06-01T00:00:00Z",
      "horizon_slots": 96,
      "signals": {"source": "actual"},                 # or "gbm" / "naive_day" forecasts
      "sites": [
        {"id": "DC-North", "region": "GB", "capacity_kw": 900, "baseline_kw": 250,
         "solar": {"capacity_kw": 200, "latitude_deg": 53.8, "longitude_deg": -1.5},
         "battery": {"energy_kwh": 400, "charge_power_kw": 100, "discharge_power_kw": 100,
                     "round_trip_efficiency": 0.9, "degradation_gbp_per_mwh": 8}},
        {"id": "DC-Nordic", "region": "NO", "capacity_kw": 400, "baseline_kw": 80}
      ],
      "jobs": {"source": "alibaba", "n_jobs": 300, "seed": 7, "power_scale": 1.0},
      "actions": {"max_deferral_min": 240, "geographic_migration": true, "renewable_gating": false},
      "objective": {"kind": "cost_x_carbon"},
      "offers": {"window_slots": 4, "margin_fraction": 0.1}
    }

``capacity_kw`` / ``baseline_kw`` are a number or 48 values (a daily profile by UTC half hour).
``jobs`` is either a job-mix spec (``bpp.workload.job_mix``) or ``{"list": [job, ...]}`` with
:meth:`bpp.domain.Job.from_dict` fields, slots counted from ``start_utc`` (or ``release_utc`` /
``deadline_utc`` instead of the slot fields).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from bpp.decisions import Decision, decisions_for_plan, event, query, settle
from bpp.domain import (
    SLOT,
    Battery,
    CommittedReduction,
    ControlActions,
    Instance,
    Job,
    ObjectiveKind,
    ObjectiveSpec,
    Site,
    SolverSettings,
    iso,
    parse_utc,
    slots_between,
)
from bpp.offers import FlexOffer, OfferSettings, derive_offers
from bpp.scheduler import Plan, SchedulingInfeasible, advance_jobs, solve
from bpp.storage import summarise_storage
from bpp.workload import MixSettings, job_mix, synthetic_solar_kw
from grid.signals import SLOTS_PER_DAY, SignalSeries, load_region

SignalProvider = Callable[[str, datetime, int], SignalSeries]


# -- signals -------------------------------------------------------------------------------------


def actual_provider(data_dir: Path | None = None) -> SignalProvider:
    """Actual 2023 series from ``../shared/data/grid`` (via :func:`grid.signals.load_region`)."""

    def provide(region: str, start_utc: datetime, n_slots: int) -> SignalSeries:
        return load_region(region, start_utc, start_utc + SLOT * n_slots, data_dir)

    return provide


def forecast_provider(model: str = "gbm", history_days: int = 28, data_dir: Path | None = None) -> SignalProvider:
    """Forecasts from the ``history_days`` before ``start_utc`` (``bpp.forecast.forecast_series``)."""
    from bpp.forecast import forecast_series

    def provide(region: str, start_utc: datetime, n_slots: int) -> SignalSeries:
        history = load_region(region, start_utc - SLOT * (history_days * SLOTS_PER_DAY), start_utc, data_dir)
        return forecast_series(history, n_slots, model)

    return provide


ANALOGUE_STEP = timedelta(days=364)  # 52 weeks: the same weekday and time of day


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


# -- sites ---------------------------------------------------------------------------------------


def _daily(value: float | Sequence[float], start_utc: datetime, n_slots: int, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=float)
    if arr.ndim == 0:
        return np.full(n_slots, float(arr))
    if arr.shape != (SLOTS_PER_DAY,):
        raise ValueError(f"{name}: give a number or {SLOTS_PER_DAY} daily values, got shape {arr.shape}")
    first = (start_utc.hour * 60 + start_utc.minute) // 30
    return arr[(first + np.arange(n_slots)) % SLOTS_PER_DAY]


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
                self.solar_latitude_deg,
                self.solar_longitude_deg,
                self.solar_clearness,
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


# -- results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CommitCheck:
    ok: bool
    reason: str
    conflicts: tuple[dict[str, Any], ...] = ()


class CommitRefused(RuntimeError):
    """An order the agent cannot honour; refused at confirm (``reason`` names the conflict)."""

    def __init__(self, reason: str, conflicts: tuple[dict[str, Any], ...] = ()) -> None:
        self.reason = reason
        self.conflicts = conflicts
        super().__init__(reason)


# -- agents --------------------------------------------------------------------------------------


@dataclass
class _AgentState:
    instance: Instance | None = None
    plan: Plan | None = None
    plan_seq: int = 0
    log: list[Decision] = field(default_factory=list)
    #: offers of the current plan version by requested window (re-derived after every re-plan)
    offers: dict[tuple[int, datetime | None, datetime | None], list[FlexOffer]] = field(default_factory=dict)


class ComputeAgent:
    """Schedules a provider's compute jobs across its sites and sells the flexibility the optimal plan
    leaves. All methods are pure computation on in-memory state; nothing is stored or sent."""

    resource_type = "compute"

    def __init__(
        self,
        provider_id: str,
        sites: Sequence[SiteConfig],
        jobs: Sequence[Job],
        signals: SignalProvider | Mapping[str, SignalSeries],
        start_utc: datetime,
        horizon_slots: int = 96,
        *,
        actions: ControlActions | None = None,
        objective: ObjectiveSpec | None = None,
        offer_settings: OfferSettings | None = None,
        solver: SolverSettings | None = None,
        commitments: Sequence[CommittedReduction] = (),
        actual_signals: SignalProvider | Mapping[str, SignalSeries] | None = None,
    ) -> None:
        if not sites:
            raise ValueError("an agent needs at least one site")
        self.provider_id = provider_id
        self.sites = list(sites)
        self.horizon_slots = int(horizon_slots)
        self.actions = actions or ControlActions()
        self.objective = objective or ObjectiveSpec()
        self.offer_settings = offer_settings or OfferSettings()
        self.solver = solver or SolverSettings()
        self._signals = signals if callable(signals) else series_provider(signals)
        self._actuals = (
            actual_signals if callable(actual_signals) or actual_signals is None else series_provider(actual_signals)
        )
        self._now = parse_utc(start_utc)
        # jobs are kept with slots relative to self._now; those not yet inside the horizon wait
        self._jobs = list(jobs)
        self._commitments = list(commitments)
        self._updates: list[SignalUpdate] = []
        self._done: list[str] = []
        self._state = _AgentState()

    # -- construction from config ----------------------------------------------------------------
    @classmethod
    def from_config(
        cls,
        config: Mapping[str, Any] | str | Path,
        signals: SignalProvider | Mapping[str, SignalSeries] | None = None,
        data_dir: Path | None = None,
        jobs_dir: Path | None = None,
    ) -> ComputeAgent:
        cfg = _load_config(config)
        start = parse_utc(cfg["start_utc"])
        horizon = int(cfg.get("horizon_slots", 96))
        sites = [SiteConfig.from_dict(s) for s in cfg["sites"]]
        actions = ControlActions(**cfg.get("actions", {}))
        objective = _objective(cfg.get("objective", {}))
        provider = signals if signals is not None else signal_provider_from(cfg.get("signals", {}), data_dir)
        jobs = _jobs_from(cfg.get("jobs", {}), sites, start, horizon, actions, provider, jobs_dir)
        return cls(
            str(cfg.get("provider_id", "provider")),
            sites,
            jobs,
            provider,
            start,
            horizon,
            actions=actions,
            objective=objective,
            offer_settings=OfferSettings(**_tuple_levels(cfg.get("offers", {}))),
            solver=SolverSettings(**cfg.get("solver", {})),
            actual_signals=actual_provider(data_dir)
            if cfg.get("signals", {}).get("source", "actual") != "actual"
            else None,
        )

    # -- state -----------------------------------------------------------------------------------
    @property
    def now_utc(self) -> datetime:
        return self._now

    @property
    def commitments(self) -> list[CommittedReduction]:
        return list(self._commitments)

    @property
    def instance(self) -> Instance:
        if self._state.instance is None:
            self._state.instance = self._build_instance(self._commitments)
        return self._state.instance

    def _signals_for(self, provider: SignalProvider) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        price, carbon = {}, {}
        for region in sorted({s.region for s in self.sites}):
            series = provider(region, self._now, self.horizon_slots)
            p = np.array(series.price_gbp_per_mwh, dtype=float)
            c = np.array(series.carbon_g_per_kwh, dtype=float)
            for u in self._updates:
                if u.region != region:
                    continue
                a = min(max(slots_between(self._now, u.start_utc), 0), self.horizon_slots)
                b = min(max(slots_between(self._now, u.end_utc), 0), self.horizon_slots)
                if b > a:
                    if u.price_gbp_per_mwh is not None:
                        p[a:b] = u.price_gbp_per_mwh
                    if u.carbon_g_per_kwh is not None:
                        c[a:b] = u.carbon_g_per_kwh
            price[region], carbon[region] = p, c
        return price, carbon

    def _site_objects(self) -> tuple[Site, ...]:
        return tuple(s.materialise(self._now, self.horizon_slots) for s in self.sites)

    def _visible_jobs(self) -> list[Job]:
        """Jobs whose whole window lies inside the horizon. A job released near the horizon's end waits
        for a later re-plan rather than being squeezed into the slots left (which could make a feasible
        job look infeasible). Critical and running work is in as soon as it starts inside the horizon
        (its load past the horizon end is carried to the next re-plan)."""
        out = []
        for j in self._jobs:
            if j.movable:
                visible = min(j.deadline_slot, j.release_slot + j.duration_slots + self.actions.max_deferral_slots)
                visible = visible <= self.horizon_slots
            else:
                visible = max(j.release_slot, 0) < self.horizon_slots
            if visible:
                out.append(j)
        return out

    def _build_instance(self, commitments: Sequence[CommittedReduction]) -> Instance:
        price, carbon = self._signals_for(self._signals)
        return Instance(
            start_utc=self._now,
            n_slots=self.horizon_slots,
            sites=self._site_objects(),
            jobs=tuple(self._visible_jobs()),
            price_gbp_per_mwh=price,
            carbon_g_per_kwh=carbon,
            commitments=tuple(commitments),
            actions=self.actions,
            objective=self.objective,
            solver=self.solver,
        )

    # -- the API ---------------------------------------------------------------------------------
    def plan(self) -> Plan:
        """The current optimal plan (solved on first use and after every change)."""
        if self._state.plan is None:
            inst = self.instance
            plan = solve(inst)
            self._adopt(inst, plan, reason=None)
        assert self._state.plan is not None
        return self._state.plan

    def _adopt(self, inst: Instance, plan: Plan, reason: str | None) -> None:
        self._state.instance = inst
        self._state.plan = plan
        self._state.plan_seq += 1
        plan_id = f"{self.provider_id}:plan-{self._state.plan_seq}"
        if reason:
            self._state.log.append(
                event(
                    "replan",
                    reason,
                    self._now,
                    f"{plan_id}:replan",
                    details={"objective": plan.metrics.objective if plan.metrics else None},
                )
            )
        self._state.log.extend(decisions_for_plan(inst, plan, self._now, plan_id))

    def offers(self, start_utc: datetime | None = None, end_utc: datetime | None = None) -> list[FlexOffer]:
        """Flexibility offers from the current plan for windows overlapping ``[start_utc, end_utc)``."""
        plan = self.plan()
        key = (self._state.plan_seq, start_utc, end_utc)
        if key in self._state.offers:
            return self._state.offers[key]
        self._state.offers[key] = derive_offers(
            self.instance,
            plan,
            self.offer_settings,
            provider_id=self.provider_id,
            resource_type=self.resource_type,
            start_utc=start_utc,
            end_utc=end_utc,
        )
        return self._state.offers[key]

    def _reduction(
        self, order_id: str, site_id: str, start_utc: datetime, end_utc: datetime, reduction_kw: float
    ) -> CommittedReduction:
        """The order as a constraint, its baseline frozen from the current plan's grid import."""
        inst = self.instance
        plan = self.plan()
        k = inst.site_index(site_id)
        a, b = inst.slot_of(parse_utc(start_utc)), inst.slot_of(parse_utc(end_utc))
        if a < 0 or b > inst.n_slots or b <= a:
            raise CommitRefused(
                f"window {iso(start_utc)}–{iso(end_utc)} is not inside the planning horizon "
                f"{iso(inst.start_utc)}–{iso(inst.slot_start(inst.n_slots))}"
            )
        baseline = plan.grid_import_kw(inst)[k, a:b]
        return CommittedReduction(
            order_id,
            site_id,
            parse_utc(start_utc),
            parse_utc(end_utc),
            float(reduction_kw),
            tuple(float(x) for x in baseline),
        )

    def can_commit(
        self,
        site_id: str,
        start_utc: datetime,
        end_utc: datetime,
        reduction_kw: float,
        order_id: str = "check",
    ) -> CommitCheck:
        """Would the order be honoured? Tries the re-plan with the reduction imposed (nothing changes)."""
        try:
            red = self._reduction(order_id, site_id, start_utc, end_utc, reduction_kw)
            inst = self._build_instance([*self._commitments, red])
            solve(inst)
        except CommitRefused as e:
            return CommitCheck(False, e.reason)
        except SchedulingInfeasible as e:
            return CommitCheck(False, str(e), tuple(c.to_dict() for c in e.conflicts))
        except (KeyError, ValueError) as e:
            return CommitCheck(False, f"invalid order: {e}")
        return CommitCheck(True, "the re-plan honours every constraint with this reduction")

    def commit(
        self, order_id: str, site_id: str, start_utc: datetime, end_utc: datetime, reduction_kw: float
    ) -> CommittedReduction:
        """Add the reduction as a constraint and re-plan; raise :class:`CommitRefused` (and change
        nothing) if no plan can honour it together with every earlier order and job."""
        try:
            red = self._reduction(order_id, site_id, start_utc, end_utc, reduction_kw)
            inst = self._build_instance([*self._commitments, red])
            plan = solve(inst)
        except (CommitRefused, SchedulingInfeasible, KeyError, ValueError) as e:
            conflicts = tuple(c.to_dict() for c in e.conflicts) if isinstance(e, SchedulingInfeasible) else ()
            reason = e.reason if isinstance(e, CommitRefused) else str(e)
            self._state.log.append(
                event(
                    "refuse",
                    f"Order {order_id} refused: {reduction_kw:g} kW at {site_id} "
                    f"{iso(parse_utc(start_utc))}–{iso(parse_utc(end_utc))} cannot be honoured: {reason}",
                    self._now,
                    f"{self.provider_id}:refuse:{order_id}",
                    site_id=site_id,
                    order_id=order_id,
                    start_utc=parse_utc(start_utc),
                    end_utc=parse_utc(end_utc),
                    power_kw=float(reduction_kw),
                    details={"conflicts": list(conflicts)},
                )
            )
            raise CommitRefused(reason, conflicts) from e
        self._commitments.append(red)
        prev = self._state.plan.metrics.objective if self._state.plan and self._state.plan.metrics else None
        assert plan.metrics is not None
        self._state.log.append(
            event(
                "commit",
                f"Order {order_id} accepted: import at {site_id} ≤ planned baseline − {reduction_kw:g} kW "
                f"over {iso(red.start_utc)}–{iso(red.end_utc)}; plan objective {prev:.2f} → "
                f"{plan.metrics.objective:.2f}"
                if prev is not None
                else f"Order {order_id} accepted",
                self._now,
                f"{self.provider_id}:commit:{order_id}",
                site_id=site_id,
                order_id=order_id,
                start_utc=red.start_utc,
                end_utc=red.end_utc,
                power_kw=float(reduction_kw),
                details={"baseline_kw": list(red.baseline_kw)},
            )
        )
        self._adopt(inst, plan, reason=None)
        return red

    def replan(
        self, update: SignalUpdate | None = None, now_utc: datetime | None = None, reason: str | None = None
    ) -> Plan:
        """Re-plan from ``now_utc`` (default: the current horizon start) with work already running kept
        where it is, after applying ``update`` (a price spike, a carbon revision...)."""
        plan = self.plan()
        inst = self.instance
        now = parse_utc(now_utc) if now_utc is not None else self._now
        k = inst.slot_of(now)
        if k < 0:
            raise ValueError(f"cannot re-plan into the past ({iso(now)} < {iso(self._now)})")
        if k > inst.n_slots:
            raise ValueError("re-plan time is beyond the current horizon; re-plan at least once per horizon")
        visible = {j.id for j in inst.jobs}
        advanced, done = advance_jobs(inst, plan, k)
        self._done.extend(done)
        waiting = [
            replace(j, release_slot=j.release_slot - k, deadline_slot=j.deadline_slot - k)
            for j in self._jobs
            if j.id not in visible
        ]
        self._jobs = advanced + waiting
        # the battery continues from where the plan left it
        if k > 0 and self.actions.storage_coordination:
            new_sites = []
            for s_idx, s in enumerate(self.sites):
                b = s.battery
                if b is not None:
                    soc = float(plan.soc_kwh[s_idx, k - 1]) / b.energy_kwh
                    soc = min(max(soc, b.soc_min_fraction), b.soc_max_fraction)
                    term = b.initial_soc_fraction if b.terminal_soc_fraction is None else b.terminal_soc_fraction
                    s = replace(s, battery=replace(b, initial_soc_fraction=soc, terminal_soc_fraction=term))
                new_sites.append(s)
            self.sites = new_sites
        self._now = now
        self._commitments = [c for c in self._commitments if c.end_utc > now]
        if update is not None:
            self._updates.append(update)
        why = reason or (update.reason if update else "receding-horizon re-plan")
        if update is not None:
            why += (
                f" ({update.region} {iso(update.start_utc)}–{iso(update.end_utc)}"
                + (f", price £{update.price_gbp_per_mwh:g}/MWh" if update.price_gbp_per_mwh is not None else "")
                + (f", carbon {update.carbon_g_per_kwh:g} g/kWh" if update.carbon_g_per_kwh is not None else "")
                + ")"
            )
        new_inst = self._build_instance(self._commitments)
        new_plan = solve(new_inst)
        self._adopt(new_inst, new_plan, reason=f"Re-plan at {iso(now)}: {why}")
        return new_plan

    def decisions(
        self,
        job_id: str | None = None,
        site_id: str | None = None,
        action: str | None = None,
        start_utc: datetime | None = None,
        end_utc: datetime | None = None,
    ) -> list[Decision]:
        """The decision log (every plan version's records, commits, refusals, re-plans), filtered."""
        self.plan()
        return query(self._state.log, job_id, site_id, action, start_utc, end_utc)

    def settle(self) -> list[Decision]:
        """The current plan's job and battery records scored on actual signals (needs actuals)."""
        if self._actuals is None:
            raise ValueError("no actual signals configured (the agent plans on actuals already)")
        plan = self.plan()
        price, carbon = self._signals_for(self._actuals)
        actual = self.instance.with_signals(price, carbon)
        prefix = f"{self.provider_id}:plan-{self._state.plan_seq}:"
        current = [d for d in self._state.log if d.decision_id.startswith(prefix)]
        return settle(current, actual, plan)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready status: horizon, objective, cost, carbon, jobs, orders, battery use."""
        plan = self.plan()
        inst = self.instance
        assert plan.metrics is not None
        return {
            "provider_id": self.provider_id,
            "resource_type": self.resource_type,
            "now_utc": iso(self._now),
            "horizon_slots": self.horizon_slots,
            "sites": [s.id for s in self.sites],
            "n_jobs_planned": inst.n_jobs,
            "n_jobs_waiting": len(self._jobs) - inst.n_jobs,
            "n_jobs_completed": len(self._done),
            "commitments": [c.to_dict() for c in self._commitments],
            "metrics": plan.metrics.to_dict(),
            "mip_gap": plan.mip_gap,
            "solve_time_s": plan.solve_time_s,
            "storage": [s.to_dict() for s in summarise_storage(inst, plan)],
        }


class StorageAgent(ComputeAgent):
    """A battery operated as its own resource: an LP (no jobs) that arbitrages price and carbon against
    the site's other load, and offers discharge as ``storage`` flexibility.

    Coordination with the compute agent on the same site: by default the compute agent co-optimises
    the battery (``storage_coordination``), so the battery covers site load during the compute agent's
    committed reductions and there is no separate storage agent. When the battery is run separately
    (the compute agent with ``storage_coordination`` off, or a stand-alone battery), :meth:`follow`
    makes the storage agent plan against the compute agent's planned site load, so its arbitrage and
    its offers are measured at the same meter."""

    resource_type = "storage"

    def __init__(
        self,
        provider_id: str,
        site: SiteConfig,
        signals: SignalProvider | Mapping[str, SignalSeries],
        start_utc: datetime,
        horizon_slots: int = 96,
        **kw: Any,
    ) -> None:
        if site.battery is None:
            raise ValueError(f"site {site.id} has no battery to operate")
        kw["actions"] = ControlActions(storage_coordination=True, geographic_migration=False, temporal_shifting=False)
        super().__init__(provider_id, [site], [], signals, start_utc, horizon_slots, **kw)
        self._load_profile: np.ndarray | None = None

    @classmethod
    def from_config(
        cls,
        config: Mapping[str, Any] | str | Path,
        signals: SignalProvider | Mapping[str, SignalSeries] | None = None,
        data_dir: Path | None = None,
        jobs_dir: Path | None = None,
    ) -> StorageAgent:
        """``config`` as for :class:`ComputeAgent` with one site (the one with the battery; a
        ``"site_id"`` key picks it when there are several); jobs are ignored."""
        cfg = _load_config(config)
        sites = [SiteConfig.from_dict(s) for s in cfg["sites"]]
        pick = cfg.get("site_id")
        site = next((s for s in sites if (s.id == pick if pick else s.battery is not None)), None)
        if site is None:
            raise ValueError("no site with a battery in the config")
        provider = signals if signals is not None else signal_provider_from(cfg.get("signals", {}), data_dir)
        return cls(
            str(cfg.get("provider_id", "provider")),
            site,
            provider,
            parse_utc(cfg["start_utc"]),
            int(cfg.get("horizon_slots", 96)),
            objective=_objective(cfg.get("objective", {})),
            offer_settings=OfferSettings(**_tuple_levels(cfg.get("offers", {}))),
            solver=SolverSettings(**cfg.get("solver", {})),
        )

    def follow(self, compute: ComputeAgent) -> Plan:
        """Plan against the compute agent's planned load at this site (its baseline + jobs, without any
        battery it co-optimises) and re-plan."""
        plan = compute.plan()
        inst = compute.instance
        k = inst.site_index(self.sites[0].id)
        if compute.actions.storage_coordination and inst.sites[k].battery is not None:
            raise ValueError(
                f"the compute agent already co-optimises the battery at {self.sites[0].id}; "
                "a second owner would double-sell it"
            )
        if inst.start_utc != self._now or inst.n_slots != self.horizon_slots:
            raise ValueError("the storage agent and the compute agent must share the horizon")
        self._load_profile = plan.site_load_kw(inst)[k]
        self._state = _AgentState(log=self._state.log)
        return self.plan()

    def _site_objects(self) -> tuple[Site, ...]:
        site = self.sites[0].materialise(self._now, self.horizon_slots)
        if self._load_profile is not None:
            load = self._load_profile
            # the compute plan's load is fixed for the battery: it becomes this LP's baseline, and the
            # data-hall capacity no longer binds anything the battery decides
            site = Site.build(
                site.id,
                site.region,
                self.horizon_slots,
                capacity_kw=np.maximum(site.capacity_kw, load),
                baseline_kw=load,
                solar_kw=site.solar_kw,
                solar_capacity_kw=site.solar_capacity_kw,
                battery=site.battery,
                grid_import_limit_kw=site.grid_import_limit_kw,
            )
        return (site,)


# -- config helpers ------------------------------------------------------------------------------


def _load_config(config: Mapping[str, Any] | str | Path) -> dict[str, Any]:
    if isinstance(config, Mapping):
        return dict(config)
    text = str(config)
    if text.lstrip().startswith("{"):
        return json.loads(text)
    return json.loads(Path(text).read_text(encoding="utf-8"))


def _objective(d: Mapping[str, Any]) -> ObjectiveSpec:
    d = dict(d)
    if "kind" in d:
        d["kind"] = ObjectiveKind(d["kind"])
    return ObjectiveSpec(**d)


def _tuple_levels(d: Mapping[str, Any]) -> dict[str, Any]:
    d = dict(d)
    if "levels" in d:
        d["levels"] = tuple(float(x) for x in d["levels"])
    return d


def signal_provider_from(spec: Mapping[str, Any], data_dir: Path | None) -> SignalProvider:
    source = spec.get("source", "actual")
    data_dir = Path(spec["data_dir"]) if spec.get("data_dir") else data_dir
    if source == "actual":
        return actual_provider(data_dir)
    return forecast_provider(source, int(spec.get("history_days", 28)), data_dir)


def _jobs_from(
    spec: Mapping[str, Any],
    sites: list[SiteConfig],
    start: datetime,
    horizon: int,
    actions: ControlActions,
    provider: SignalProvider,
    jobs_dir: Path | None,
) -> list[Job]:
    if "list" in spec:
        out = []
        for d in spec["list"]:
            d = dict(d)
            if "release_utc" in d:
                d["release_slot"] = slots_between(start, parse_utc(d.pop("release_utc")))
            if "deadline_utc" in d:
                d["deadline_slot"] = slots_between(start, parse_utc(d.pop("deadline_utc")))
            out.append(Job.from_dict(d))
        return out
    if not spec:
        return []
    fields = {k: v for k, v in spec.items() if k in MixSettings.__dataclass_fields__}
    fields.setdefault("max_deferral_slots", actions.max_deferral_slots)  # thresholds stay feasible
    mix = MixSettings(**fields)
    carbon = {s.id: np.asarray(provider(s.region, start, horizon).carbon_g_per_kwh) for s in sites}
    caps = [float(np.mean(s.capacity_kw)) for s in sites]
    return job_mix(
        int(spec.get("n_jobs", 100)),
        horizon,
        [s.id for s in sites],
        caps,
        source=str(spec.get("source", "alibaba")),
        jobs_dir=Path(spec["jobs_dir"]) if spec.get("jobs_dir") else jobs_dir,
        seed=int(spec.get("seed", 0)),
        home_carbon_g_per_kwh=carbon,
        settings=mix,
    )
