"""The storage agent: the one planner of a battery-only provider's sites (``"kind": "storage"``).

Each site is a meter with a battery (and, optionally, other fixed load ``baseline_kw`` and an export
allowance) planned on the storage model (:func:`bpp.storage.solve_storage`): separate charge and
discharge efficiencies, self-discharge, SoC bounds and daily targets, degradation, export at its own
price within the connection's limit, one direction per slot. Its offers (resource type ``storage``)
are reductions of the meter's *net import* (import − export) below the current plan's, and a
committed order caps that net import at ``baseline − reduction`` in every slot of its window
(:class:`bpp.domain.CommittedReduction`, baseline frozen from the plan current at the confirm) —
exactly the promise a compute agent's order makes, so settlement treats both alike.

Slot length: the config's ``slot_minutes`` (15, 30 or 60; default 30) is the storage model's slot;
orders and offers stay half-hourly (:mod:`bpp.offers`). The storage model caps net import slot by slot,
so a committed half hour caps every plan slot it covers: both 15-minute slots at its cap — stricter
than the half-hour mean its meter reading measures, so the agent never over-sells (it may refuse an
order a mean cap would take) — and a 60-minute slot at the smaller cap of its two half hours.

An offer window's available kW is the largest reduction the battery can hold over the whole window
together with every earlier order, found by bisection on feasibility of the storage model (to
0.1 kW, the catalog's resolution); its price follows :mod:`bpp.offers` (cost re-solved at each
level, marginal and average cost, margin). Pure: no clock, no I/O beyond what the signal provider
reads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from bpp.agent import CommitCheck, CommitRefused, check_offer_windows
from bpp.agent_config import (
    ProviderKind,
    SiteConfig,
    load_config,
    offer_settings_from,
    plan_slots,
    provider_kind,
    slot_minutes_from,
)
from bpp.decisions import Decision, event, query
from bpp.domain import (
    MARKET_SLOT_MINUTES,
    MWH_PER_KW_SLOT,
    SLOT,
    BoolArray,
    CommittedReduction,
    FloatArray,
    SolverSettings,
    check_slot_minutes,
    half_hours_to_slots,
    iso,
    parse_utc,
    slots_between,
)
from bpp.offers import (
    FlexOffer,
    OfferSettings,
    OfferWindow,
    half_hourly_mean_kw,
    make_offer,
    price_from_costs,
    window_starts,
)
from bpp.signal_providers import SignalProvider, as_provider, plan_signals_with_updates, signal_provider_from
from bpp.storage import Connection, StorageProblem, StorageSchedule, StorageSolveError, solve_storage
from grid.signals import SignalSeries

#: the catalog's resolution: available kW is found to this step
REDUCTION_STEP_KW = 0.1


@dataclass(frozen=True)
class SiteSchedule:
    """One site's storage problem (every commitment imposed) and its optimal schedule."""

    site_id: str
    problem: StorageProblem
    schedule: StorageSchedule

    @property
    def net_import_kw(self) -> FloatArray:
        """The meter's net import per slot, recomputed from the battery schedule (not read from the
        solver's import/export columns): other load + Σ charge − Σ discharge."""
        flow: FloatArray = (
            self.problem.load_kw + self.schedule.charge_kw.sum(axis=0) - self.schedule.discharge_kw.sum(axis=0)
        )
        return flow


@dataclass
class _State:
    plan: dict[str, SiteSchedule] | None = None
    plan_seq: int = 0
    log: list[Decision] = field(default_factory=list)


class StorageAgent:
    """Plans a storage provider's battery sites (each its own meter) and sells what the plan leaves.
    Same API as :class:`bpp.agent.ComputeAgent` for the BPP: offers, can_commit, commit, decisions,
    summary. All methods are pure computation on in-memory state."""

    resource_type = "storage"

    def __init__(
        self,
        provider_id: str,
        sites: Sequence[SiteConfig],
        signals: SignalProvider | Mapping[str, SignalSeries],
        *,
        start_utc: datetime,
        horizon_slots: int = 96,
        offer_settings: OfferSettings | None = None,
        solver: SolverSettings | None = None,
        slot_minutes: int = MARKET_SLOT_MINUTES,
    ) -> None:
        if not sites:
            raise ValueError("sites: a storage agent needs at least one site")
        for site in sites:
            if site.battery is None:
                raise ValueError(f"site {site.id}: a storage site needs a battery")
        self.provider_id = provider_id
        self.sites = list(sites)
        #: the storage model's slot length and the horizon in those slots
        self.slot_minutes = check_slot_minutes(slot_minutes)
        self.horizon_slots = int(horizon_slots)
        self.offer_settings = offer_settings or OfferSettings()
        check_offer_windows(self.offer_settings, self.slot_minutes)
        self.solver = solver or SolverSettings(mip_rel_gap=1e-7)
        self._now = parse_utc(start_utc)
        if int(self._now.timestamp()) % (max(self.slot_minutes, MARKET_SLOT_MINUTES) * 60):
            raise ValueError(f"start_utc must lie on a {max(self.slot_minutes, MARKET_SLOT_MINUTES)}-minute boundary")
        self._price, self._carbon = plan_signals_with_updates(
            as_provider(signals),
            [s.region for s in self.sites],
            self._now,
            self.horizon_slots,
            [],
            slot_minutes=self.slot_minutes,
        )
        self._commitments: list[CommittedReduction] = []
        self._state = _State()

    @classmethod
    def from_config(
        cls,
        config: Mapping[str, Any] | str | Path,
        signals: SignalProvider | Mapping[str, SignalSeries] | None = None,
        data_dir: Path | None = None,
    ) -> StorageAgent:
        """An agent from a ``"kind": "storage"`` config (``bpp.agent`` module docstring; sites with a
        ``battery`` each, optionally ``export``; no jobs)."""
        cfg = load_config(config)
        if provider_kind(cfg) is not ProviderKind.STORAGE:
            raise ValueError('agent.kind must be "storage" for a storage agent')
        provider = (
            as_provider(signals) if signals is not None else signal_provider_from(cfg.get("signals", {}), data_dir)
        )
        slot_minutes = slot_minutes_from(cfg)
        return cls(
            str(cfg.get("provider_id", "provider")),
            [SiteConfig.from_dict(s) for s in cfg["sites"]],
            provider,
            start_utc=parse_utc(cfg["start_utc"]),
            horizon_slots=plan_slots(int(cfg.get("horizon_slots", 96)), slot_minutes),
            offer_settings=offer_settings_from(cfg.get("offers", {})),
            solver=SolverSettings(**{"mip_rel_gap": 1e-7, **cfg.get("solver", {})}),
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
    def carbon_g_per_kwh(self) -> dict[str, FloatArray]:
        """The carbon intensity the plan and its offers read, by region, one value per plan slot."""
        return dict(self._carbon)

    def slot_start(self, slot: int) -> datetime:
        return self._now + timedelta(minutes=self.slot_minutes) * slot

    def _half_hour_start(self, half_hour: int) -> datetime:
        return self._now + SLOT * half_hour

    def _slots_of(self, first: int, end: int) -> tuple[int, int]:
        """The plan slots covering half hours ``[first, end)`` of the horizon."""
        return half_hours_to_slots(first, end, self.slot_minutes)

    def _site(self, site_id: str) -> SiteConfig:
        site = next((s for s in self.sites if s.id == site_id), None)
        if site is None:
            raise CommitRefused(f"site {site_id} is not one of this provider's storage sites")
        return site

    def _problem(self, site: SiteConfig, commitments: Sequence[CommittedReduction]) -> StorageProblem:
        n = self.horizon_slots
        s = site.materialise(self._now, n, self.slot_minutes)
        assert s.battery is not None  # checked at construction
        cap = np.full(n, np.inf)
        for c in commitments:
            if c.site_id == site.id:
                h0 = slots_between(self._now, c.start_utc)
                for i, cap_kw in enumerate(c.max_import_kw()):  # every plan slot the half hour covers
                    a, b = self._slots_of(h0 + i, h0 + i + 1)
                    cap[max(a, 0) : b] = np.minimum(cap[max(a, 0) : b], cap_kw)
        price = self._price[site.region]
        export = site.export
        return StorageProblem(
            batteries=(s.battery,),
            import_price_gbp_per_mwh=price,
            export_price_gbp_per_mwh=None if export is None else price * export.price_fraction,
            site_load_kw=s.baseline_kw - s.solar_kw,
            connection=Connection(
                import_limit_kw=s.grid_import_limit_kw, export_limit_kw=0.0 if export is None else export.limit_kw
            ),
            solver=self.solver,
            net_import_cap_kw=cap,
            slot_minutes=self.slot_minutes,
        )

    def _solve(self, site: SiteConfig, commitments: Sequence[CommittedReduction]) -> SiteSchedule:
        problem = self._problem(site, commitments)
        return SiteSchedule(site.id, problem, solve_storage(problem))

    # -- the API ---------------------------------------------------------------------------------
    def plan(self) -> dict[str, SiteSchedule]:
        """Each site's optimal schedule with every commitment imposed (solved on first use)."""
        if self._state.plan is None:
            self._adopt({s.id: self._solve(s, self._commitments) for s in self.sites})
        assert self._state.plan is not None
        return self._state.plan

    def _adopt(self, plan: dict[str, SiteSchedule]) -> None:
        self._state.plan = plan
        self._state.plan_seq += 1
        plan_id = f"{self.provider_id}:plan-{self._state.plan_seq}"
        for site_schedule in plan.values():
            self._state.log.extend(self._battery_decisions(site_schedule, plan_id))

    def _battery_decisions(self, site: SiteSchedule, plan_id: str) -> list[Decision]:
        out: list[Decision] = []
        price = site.problem.import_price_gbp_per_mwh
        for action, power in (
            ("battery_charge", site.schedule.charge_kw.sum(axis=0)),
            ("battery_discharge", site.schedule.discharge_kw.sum(axis=0)),
        ):
            for a, b in _blocks(power > 1e-3):
                energy_kwh = float(power[a:b].sum() * site.problem.slot_hours)
                mean_price = float(np.average(price[a:b], weights=power[a:b]))
                verb = "Charge" if action == "battery_charge" else "Discharge"
                out.append(
                    event(
                        action,
                        f"{verb} {energy_kwh:.0f} kWh at {site.site_id} {iso(self.slot_start(a))}–"
                        f"{iso(self.slot_start(b))} at £{mean_price:.2f}/MWh on average: the storage plan's "
                        "cheapest way to meet its SoC limits, targets and committed orders",
                        self._now,
                        f"{plan_id}:{site.site_id}:{action}:{a}",
                        site_id=site.site_id,
                        start_utc=self.slot_start(a),
                        end_utc=self.slot_start(b),
                        power_kw=float(power[a:b].mean()),
                        energy_kwh=energy_kwh,
                        expected_cost_gbp=energy_kwh / 1000 * mean_price,
                    )
                )
        return out

    def offers(self, start_utc: datetime | None = None, end_utc: datetime | None = None) -> list[FlexOffer]:
        """Storage offers from the current plan for windows overlapping ``[start_utc, end_utc)``."""
        plan = self.plan()
        out: list[FlexOffer] = []
        for site in self.sites:
            out += self._site_offers(site, plan[site.id], start_utc, end_utc)
        return out

    def _site_offers(
        self, site: SiteConfig, current: SiteSchedule, start_utc: datetime | None, end_utc: datetime | None
    ) -> list[FlexOffer]:
        cfg = self.offer_settings
        w = cfg.window_slots
        out: list[FlexOffer] = []
        for h0 in window_starts(self._now, self.horizon_slots * self.slot_minutes // MARKET_SLOT_MINUTES, cfg):
            start, end = self._half_hour_start(h0), self._half_hour_start(h0 + w)
            if (start_utc is not None and end <= start_utc) or (end_utc is not None and start >= end_utc):
                continue
            a, b = self._slots_of(h0, h0 + w)
            base = half_hourly_mean_kw(current.net_import_kw[a:b], self.slot_minutes)  # per half hour
            r_max, cost = self._max_reduction(site, current, (h0, h0 + w), base)
            if r_max < cfg.min_offer_kw:
                continue
            points: list[tuple[float, float]] = [(0.0, 0.0)]
            for level in sorted(cfg.levels):
                q = level * r_max
                cost_q = cost if level == 1.0 else self._cost_with(site, base, (h0, h0 + w), q)
                if cost_q is None:  # a part of a feasible reduction is feasible; guard solver noise
                    continue
                points.append((q * w * MWH_PER_KW_SLOT, max(cost_q - current.schedule.objective_gbp, 0.0)))
            window = OfferWindow(
                provider_id=self.provider_id,
                site_id=site.id,
                region=site.region,
                resource_type=self.resource_type,
                start_utc=start,
                end_utc=end,
                available_kw=r_max,
                baseline_kw=tuple(float(x) for x in base),
                expected_carbon_g_per_kwh=float(self._carbon[site.region][a:b].mean()),
            )
            out.append(make_offer(window, price_from_costs(points, cfg), cfg))
        return out

    def _cost_with(self, site: SiteConfig, base: FloatArray, window: tuple[int, int], q_kw: float) -> float | None:
        """The plan's objective with a hypothetical order for ``q_kw`` over half hours ``window`` against
        ``base`` (one value per half hour; None: infeasible)."""
        h0, h1 = window
        probe = CommittedReduction(
            "offer-probe", site.id, self._half_hour_start(h0), self._half_hour_start(h1), q_kw, tuple(base.tolist())
        )
        try:
            return self._solve(site, [*self._commitments, probe]).schedule.objective_gbp
        except StorageSolveError:
            return None

    def _max_reduction(
        self, site: SiteConfig, current: SiteSchedule, window: tuple[int, int], base: FloatArray
    ) -> tuple[float, float]:
        """The largest reduction (a multiple of :data:`REDUCTION_STEP_KW`) the site can hold over half
        hours ``window`` below ``base`` (per half hour) with every order, and the plan's objective with
        it; (0, objective) when none."""
        a, b = self._slots_of(*window)
        problem = current.problem
        # the meter's lowest possible net import: every battery discharging, or the export limit
        discharge_kw = sum(battery.discharge_power_kw for battery in problem.batteries)
        floor_kw = np.maximum(problem.load_kw[a:b] - discharge_kw, -problem.export_limit_kw)
        lo_steps, lo_cost = 0, current.schedule.objective_gbp
        per_slot_base = _on_slots(base, self.slot_minutes)
        hi_steps = math.floor(float(np.min(per_slot_base - floor_kw)) / REDUCTION_STEP_KW)
        if hi_steps <= 0:
            return 0.0, lo_cost
        cost = self._cost_with(site, base, window, hi_steps * REDUCTION_STEP_KW)
        if cost is not None:
            return hi_steps * REDUCTION_STEP_KW, cost
        while hi_steps - lo_steps > 1:  # invariant: lo feasible, hi not
            mid = (lo_steps + hi_steps) // 2
            cost = self._cost_with(site, base, window, mid * REDUCTION_STEP_KW)
            if cost is None:
                hi_steps = mid
            else:
                lo_steps, lo_cost = mid, cost
        return round(lo_steps * REDUCTION_STEP_KW, 6), lo_cost

    def _reduction(
        self, order_id: str, site_id: str, start_utc: datetime, end_utc: datetime, reduction_kw: float
    ) -> CommittedReduction:
        """The order as a cap on the meter's net import, its baseline frozen from the current plan (one
        value per half hour: the mean over the plan slots it covers)."""
        site = self._site(site_id)
        start, end = parse_utc(start_utc), parse_utc(end_utc)
        h0, h1 = slots_between(self._now, start), slots_between(self._now, end)
        a, b = self._slots_of(h0, h1)
        if a < 0 or b > self.horizon_slots or b <= a:
            raise CommitRefused(
                f"window {iso(start)}–{iso(end)} is not inside the planning horizon "
                f"{iso(self._now)}–{iso(self.slot_start(self.horizon_slots))}"
            )
        skip = h0 - a * self.slot_minutes // MARKET_SLOT_MINUTES  # a 60-minute slot's first half hour
        per_half_hour = half_hourly_mean_kw(self.plan()[site.id].net_import_kw[a:b], self.slot_minutes)
        baseline = per_half_hour[skip : skip + h1 - h0]
        return CommittedReduction(order_id, site.id, start, end, float(reduction_kw), tuple(baseline.tolist()))

    def _with(self, red: CommittedReduction) -> SiteSchedule:
        """The re-plan of the order's site with it and every earlier order imposed, or CommitRefused."""
        try:
            return self._solve(self._site(red.site_id), [*self._commitments, red])
        except StorageSolveError as exc:
            raise CommitRefused(
                f"the battery at {red.site_id} cannot hold net import ≤ baseline − {red.reduction_kw:g} kW over "
                f"{iso(red.start_utc)}–{iso(red.end_utc)} together with every earlier order and its SoC limits"
            ) from exc

    def can_commit(
        self, site_id: str, start_utc: datetime, end_utc: datetime, reduction_kw: float, order_id: str = "check"
    ) -> CommitCheck:
        """Would the order be honoured? Tries the re-plan with the reduction imposed (nothing changes)."""
        try:
            self._with(self._reduction(order_id, site_id, start_utc, end_utc, reduction_kw))
        except CommitRefused as exc:
            return CommitCheck(False, exc.reason)
        except ValueError as exc:
            return CommitCheck(False, f"invalid order: {exc}")
        return CommitCheck(True, "the re-plan honours every order and battery limit with this reduction")

    def commit(
        self, order_id: str, site_id: str, start_utc: datetime, end_utc: datetime, reduction_kw: float
    ) -> CommittedReduction:
        """Add the reduction as a cap and re-plan the site; raise :class:`CommitRefused` (and change
        nothing but the log) if no schedule honours it with every earlier order."""
        try:
            red = self._reduction(order_id, site_id, start_utc, end_utc, reduction_kw)
            site_schedule = self._with(red)
        except (CommitRefused, ValueError) as exc:
            reason = exc.reason if isinstance(exc, CommitRefused) else f"invalid order: {exc}"
            self._log_order("refuse", order_id, site_id, (start_utc, end_utc), reduction_kw, reason)
            raise CommitRefused(reason) from exc
        self._commitments.append(red)
        self._log_order("commit", order_id, site_id, (start_utc, end_utc), reduction_kw, "accepted")
        self._adopt({**self.plan(), red.site_id: site_schedule})
        return red

    def _log_order(
        self,
        action: str,
        order_id: str,
        site_id: str,
        window: tuple[datetime, datetime],
        reduction_kw: float,
        reason: str,
    ) -> None:
        start, end = parse_utc(window[0]), parse_utc(window[1])
        verdict = (
            f"accepted: net import at {site_id} ≤ planned baseline − {reduction_kw:g} kW"
            if action == "commit"
            else f"refused: {reason}"
        )
        self._state.log.append(
            event(
                action,
                f"Order {order_id} {verdict} over {iso(start)}–{iso(end)}",
                self._now,
                f"{self.provider_id}:{action}:{order_id}",
                site_id=site_id,
                order_id=order_id,
                start_utc=start,
                end_utc=end,
                power_kw=float(reduction_kw),
            )
        )

    def decisions(
        self,
        job_id: str | None = None,
        site_id: str | None = None,
        action: str | None = None,
        start_utc: datetime | None = None,
        end_utc: datetime | None = None,
    ) -> list[Decision]:
        """The decision log (each plan version's battery records, commits, refusals), filtered."""
        self.plan()
        return query(
            self._state.log, job_id=job_id, site_id=site_id, action=action, start_utc=start_utc, end_utc=end_utc
        )

    def summary(self) -> dict[str, Any]:
        """A JSON-ready status: horizon, objective (£), orders, battery use per site."""
        plan = self.plan()
        return {
            "provider_id": self.provider_id,
            "resource_type": self.resource_type,
            "now_utc": iso(self._now),
            "horizon_slots": self.horizon_slots,
            "slot_minutes": self.slot_minutes,
            "sites": [s.id for s in self.sites],
            "commitments": [c.to_dict() for c in self._commitments],
            "metrics": {"objective": sum(p.schedule.objective_gbp for p in plan.values())},
            "storage": [
                {
                    "site_id": p.site_id,
                    "charged_mwh": float(p.schedule.charge_kw.sum() * p.problem.slot_hours / 1000),
                    "discharged_mwh": float(p.schedule.discharge_kw.sum() * p.problem.slot_hours / 1000),
                    "objective_gbp": p.schedule.objective_gbp,
                }
                for p in plan.values()
            ],
        }


def _on_slots(per_half_hour: FloatArray, slot_minutes: int) -> FloatArray:
    """Half-hourly values on plan slots covering whole half hours: repeated at 15 minutes, the smaller
    of each pair at 60 (a slot's cap must meet both its half hours)."""
    values = np.asarray(per_half_hour, dtype=float)
    if slot_minutes <= MARKET_SLOT_MINUTES:
        repeated: FloatArray = np.repeat(values, MARKET_SLOT_MINUTES // slot_minutes)
        return repeated
    smaller: FloatArray = values.reshape(-1, slot_minutes // MARKET_SLOT_MINUTES).min(axis=1)
    return smaller


def _blocks(mask: BoolArray) -> list[tuple[int, int]]:
    """Consecutive runs ``[a, b)`` where ``mask`` holds."""
    out: list[tuple[int, int]] = []
    start: int | None = None
    for t, on in enumerate([*mask.tolist(), False]):
        if on and start is None:
            start = t
        elif not on and start is not None:
            out.append((start, t))
            start = None
    return out
