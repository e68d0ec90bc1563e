"""Pure facades the BPP service calls: the compute agent of a compute provider (its storage
counterpart, for battery-only providers, is :class:`bpp.storage_agent.StorageAgent`; one planner per
site — a battery on a compute site is co-optimised here, never sold by a second agent).

An agent owns a rolling horizon (``horizon_slots`` from "now"), its sites, its jobs, the committed
orders and the current optimal plan; every plan, commitment, refusal and re-plan is appended to its
decision log. Signals come from a *provider* ``(region, start_utc, n_slots) -> SignalSeries``
(:mod:`bpp.signal_providers`): actual 2023 series for simulation, forecasts for planning
(``bpp.forecast``), or any series the BPP holds. The config is read by :mod:`bpp.agent_config`.

Construct from a plain dict (the BPP's providers config), e.g.::

    {
      "kind": "compute",                               # or "storage" (bpp.storage_agent); default compute
      "provider_id": "dc-operator-1",
      "start_utc": "2023-06-01T00:00:00Z",
      "horizon_slots": 96,                             # half hours (48 h), whatever slot_minutes is
      "slot_minutes": 30,                              # the plan's slot: 15, 30 or 60 (default 30)
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

``slot_minutes`` is the plan's resolution for every site of the agent (compute and battery alike: one
planner per site); offers, orders and settlement stay half-hourly whatever it is (:mod:`bpp.offers`),
and ``horizon_slots`` and ``offers.window_slots`` count half hours (a 60-minute plan needs whole hours
of both). The horizon starts on a ``max(slot_minutes, 30)``-minute UTC boundary, and a re-plan moves it
to one. ``capacity_kw`` / ``baseline_kw`` are a number or 48 values (a daily profile by UTC half hour).
``jobs`` is either a job-mix spec (``bpp.workload.job_mix``) or ``{"list": [job, ...]}`` with
:meth:`bpp.domain.Job.from_dict` fields, slots counted from ``start_utc`` (or ``release_utc`` /
``deadline_utc`` instead of the slot fields).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from bpp.agent_config import (
    ProviderKind,
    SiteConfig,
    jobs_from_spec,
    load_config,
    objective_from,
    offer_settings_from,
    plan_slots,
    provider_kind,
    slot_minutes_from,
)
from bpp.decisions import Decision, decisions_for_plan, event, query, settle
from bpp.domain import (
    MARKET_SLOT_MINUTES,
    CommittedReduction,
    ControlActions,
    FloatArray,
    Instance,
    Job,
    ObjectiveSpec,
    Site,
    SolverSettings,
    check_slot_minutes,
    iso,
    parse_utc,
)
from bpp.offers import FlexOffer, OfferSettings, derive_offers, half_hourly_mean_kw
from bpp.plan import Plan
from bpp.scheduler import SchedulingInfeasible, advance_jobs, battery_carried_over, solve
from bpp.signal_providers import (
    SignalProvider,
    SignalUpdate,
    actual_provider,
    as_provider,
    plan_signals_with_updates,
    signal_provider_from,
)
from bpp.storage import summarise_storage
from grid.signals import SignalSeries

# -- results -------------------------------------------------------------------------------------


def check_plan_resolution(actions: ControlActions, offers: OfferSettings, slot_minutes: int) -> None:
    """An agent config's times against its plan's slot length: the deferral bound a whole number of
    slots, offer windows whole slots. ValueError naming the field."""
    actions.max_deferral_slots(slot_minutes)
    check_offer_windows(offers, slot_minutes)


def check_offer_windows(offers: OfferSettings, slot_minutes: int) -> None:
    """Offer windows (half hours) must be whole plan slots: half-hour windows of a 60-minute plan would
    split a slot. ValueError naming ``agent.offers.window_slots``."""
    if offers.window_slots * MARKET_SLOT_MINUTES % slot_minutes:
        raise ValueError(
            f"agent.offers.window_slots ({offers.window_slots} half hours) must be whole {slot_minutes}-minute slots"
        )


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
        *,
        start_utc: datetime,
        horizon_slots: int = 96,
        actions: ControlActions | None = None,
        objective: ObjectiveSpec | None = None,
        offer_settings: OfferSettings | None = None,
        solver: SolverSettings | None = None,
        commitments: Sequence[CommittedReduction] = (),
        actual_signals: SignalProvider | Mapping[str, SignalSeries] | None = None,
        slot_minutes: int = MARKET_SLOT_MINUTES,
    ) -> None:
        if not sites:
            raise ValueError("an agent needs at least one site")
        self.provider_id = provider_id
        self.sites = list(sites)
        #: the plan's slot length (one for all the agent's sites) and its horizon in those slots
        self.slot_minutes = check_slot_minutes(slot_minutes)
        self.horizon_slots = int(horizon_slots)
        self.actions = actions or ControlActions()
        self.objective = objective or ObjectiveSpec()
        self.offer_settings = offer_settings or OfferSettings()
        self.solver = solver or SolverSettings()
        self._signals = as_provider(signals)
        self._actuals = None if actual_signals is None else as_provider(actual_signals)
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
        """An agent from its config (see the module docstring), planning on ``signals`` if given, else
        on the provider the config's ``"signals"`` entry names. When that entry is a forecast, actual
        series (from ``data_dir``) are kept too, to settle on (:meth:`settle`)."""
        cfg = load_config(config)
        if provider_kind(cfg) is not ProviderKind.COMPUTE:
            raise ValueError('agent.kind must be "compute" for a compute agent (bpp.storage_agent plans storage)')
        start = parse_utc(cfg["start_utc"])
        slot_minutes = slot_minutes_from(cfg)
        horizon = plan_slots(int(cfg.get("horizon_slots", 96)), slot_minutes)
        sites = [SiteConfig.from_dict(s) for s in cfg["sites"]]
        actions = ControlActions(**cfg.get("actions", {}))
        check_plan_resolution(actions, offer_settings_from(cfg.get("offers", {})), slot_minutes)
        provider = (
            as_provider(signals) if signals is not None else signal_provider_from(cfg.get("signals", {}), data_dir)
        )
        jobs = jobs_from_spec(
            cfg.get("jobs", {}),
            sites,
            start_utc=start,
            horizon_slots=horizon,
            actions=actions,
            signals=provider,
            jobs_dir=jobs_dir,
            slot_minutes=slot_minutes,
        )
        return cls(
            str(cfg.get("provider_id", "provider")),
            sites,
            jobs,
            provider,
            start_utc=start,
            horizon_slots=horizon,
            actions=actions,
            objective=objective_from(cfg.get("objective", {})),
            offer_settings=offer_settings_from(cfg.get("offers", {})),
            solver=SolverSettings(**cfg.get("solver", {})),
            actual_signals=actual_provider(data_dir)
            if cfg.get("signals", {}).get("source", "actual") != "actual"
            else None,
            slot_minutes=slot_minutes,
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

    def _signals_for(self, provider: SignalProvider) -> tuple[dict[str, FloatArray], dict[str, FloatArray]]:
        """Price and carbon by region over the horizon, with every signal update applied."""
        regions = [s.region for s in self.sites]
        return plan_signals_with_updates(
            provider, regions, self._now, self.horizon_slots, self._updates, slot_minutes=self.slot_minutes
        )

    def _site_objects(self) -> tuple[Site, ...]:
        return tuple(s.materialise(self._now, self.horizon_slots, self.slot_minutes) for s in self.sites)

    def _visible_jobs(self) -> list[Job]:
        """Jobs whose whole window lies inside the horizon. A job released near the horizon's end waits
        for a later re-plan rather than being squeezed into the slots left (which could make a feasible
        job look infeasible). Critical and running work is in as soon as it starts inside the horizon
        (its load past the horizon end is carried to the next re-plan)."""
        out: list[Job] = []
        deferral = self.actions.max_deferral_slots(self.slot_minutes)
        for j in self._jobs:
            if j.movable:
                visible = min(j.deadline_slot, j.release_slot + j.duration_slots + deferral)
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
            slot_minutes=self.slot_minutes,
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
        """The order as a constraint, its baseline frozen from the current plan's grid import: one value
        per half hour, the mean import over the plan slots the half hour covers (what its meter reading
        will see)."""
        inst = self.instance
        plan = self.plan()
        k = inst.site_index(site_id)
        h0, h1 = inst.half_hour_of(parse_utc(start_utc)), inst.half_hour_of(parse_utc(end_utc))
        a, b = inst.slots_of_half_hours(h0, h1)
        if a < 0 or b > inst.n_slots or b <= a:
            raise CommitRefused(
                f"window {iso(start_utc)}–{iso(end_utc)} is not inside the planning horizon "
                f"{iso(inst.start_utc)}–{iso(inst.slot_start(inst.n_slots))}"
            )
        skip = h0 - a * inst.slot_minutes // MARKET_SLOT_MINUTES  # a 60-minute slot's first half hour
        baseline = half_hourly_mean_kw(plan.grid_import_kw(inst)[k, a:b], inst.slot_minutes)[skip : skip + h1 - h0]
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
            for i, s in enumerate(self.sites):
                if s.battery is not None:
                    s = replace(s, battery=battery_carried_over(s.battery, float(plan.soc_kwh[i, k - 1])))
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
        return query(
            self._state.log, job_id=job_id, site_id=site_id, action=action, start_utc=start_utc, end_utc=end_utc
        )

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
            "slot_minutes": self.slot_minutes,
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
