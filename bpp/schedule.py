"""A provider's load-shift schedule (issue 13, ../shared/DESIGN.md Figure 1): per plan slot, what its meters would
import with no shifting (the baseline), what the optimal plan imports, the accepted orders covering the slot, and
the signals the plan was made on; with the totals of cost and carbon both ways.

Pure (numpy only): callers pass the instance and plans the offers come from, and the market clock's `now`.

**What is measured: the meter.** Both series are the site's *net grid import* (kW), the quantity its settlement
meter reads and every order caps (:class:`bpp.domain.CommittedReduction`):
- compute sites: ``baseline_kw`` is :func:`bpp.baselines.run_at_release`'s grid import (every job at release at its
  home site, batteries idle, on-site solar used up to the load: with no solar and no battery it is the site load);
  ``planned_kw`` is the optimal plan's :meth:`bpp.plan.Plan.grid_import_kw` (load + charge − discharge − solar used);
- storage sites: ``baseline_kw`` is the meter's net import with the battery idle (the other load less solar);
  ``planned_kw`` the storage plan's net import (negative when it exports).

**Invariants** (tests/bpp/test_schedule.py):
- slots are contiguous plan slots of ``slot_minutes``, from the plan's start;
- energy: Σ (baseline_kw − planned_kw) × slot hours = the solar the plan uses beyond run-at-release's − the energy
  its batteries store net (charge − discharge); zero with no battery and no solar when every job runs inside the
  horizon in both plans (a shift moves energy, never removes it); a storage site's is − what it stores net;
- orders are honoured: where an order covers a slot, the half-hourly mean of ``planned_kw`` ≤ ``committed_cap_kw``
  (each committed site at the smallest cap ``frozen baseline − reduction`` of its orders, the others at their plan).
  The cap is *not* ``baseline_kw − committed_reduction_kw``: an order's baseline is the plan current at its confirm,
  which may import more than run-at-release (a plan may move load into a window and sell its reduction there);
- the totals are the per-site sums: compute plans' ``planned_cost_gbp`` / ``planned_carbon_kg`` over the whole
  horizon equal :func:`bpp.plan.evaluate`'s energy cost and carbon.

A provider's sites may sit in different regions: a slot's ``price_gbp_per_mwh`` and ``carbon_g_per_kwh`` are the
mean over its sites (exact for one site or one region); the totals always use each site's own signals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from bpp.domain import MARKET_SLOT_MINUTES, CommittedReduction, FloatArray, Instance, iso, slots_between
from bpp.plan import Plan
from schemas import limits

KWH_PER_MWH = 1000.0
G_PER_KG = 1000.0


@dataclass(frozen=True, kw_only=True)
class SiteSeries:
    """One site over the plan's slots: net import both ways (kW), the prices its import and export meet (£/MWh;
    zeros where it may not export) and the carbon intensity of its region (gCO2/kWh)."""

    site_id: str
    baseline_kw: FloatArray
    planned_kw: FloatArray
    import_price_gbp_per_mwh: FloatArray
    export_price_gbp_per_mwh: FloatArray
    carbon_g_per_kwh: FloatArray


@dataclass(frozen=True, kw_only=True)
class Horizon:
    """The plan's slots: ``n_slots`` of ``slot_minutes`` from ``start_utc``."""

    start_utc: datetime
    slot_minutes: int
    n_slots: int

    def slot_start(self, t: int) -> datetime:
        return self.start_utc + timedelta(minutes=self.slot_minutes) * t

    @property
    def slot_hours(self) -> float:
        return self.slot_minutes / 60.0


@dataclass(frozen=True, kw_only=True)
class Slot:
    start_utc: datetime
    end_utc: datetime
    baseline_kw: float
    planned_kw: float
    committed_reduction_kw: float
    #: None where no order covers the slot
    committed_cap_kw: float | None
    price_gbp_per_mwh: float
    carbon_g_per_kwh: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": iso(self.start_utc),
            "end": iso(self.end_utc),
            "baseline_kw": round(self.baseline_kw, 3),
            "planned_kw": round(self.planned_kw, 3),
            "committed_reduction_kw": round(self.committed_reduction_kw, 3),
            "committed_cap_kw": None if self.committed_cap_kw is None else round(self.committed_cap_kw, 3),
            "price_gbp_per_mwh": round(self.price_gbp_per_mwh, 2),
            "carbon_g_per_kwh": round(self.carbon_g_per_kwh, 1),
        }


@dataclass(frozen=True, kw_only=True)
class Totals:
    baseline_cost_gbp: float
    planned_cost_gbp: float
    baseline_carbon_kg: float
    planned_carbon_kg: float

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in self.__dict__.items()}


@dataclass(frozen=True, kw_only=True)
class Schedule:
    provider_id: str
    resource_type: str
    horizon: Horizon
    as_of_utc: datetime
    site_ids: tuple[str, ...]
    slots: tuple[Slot, ...]
    totals: Totals

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider_id": self.provider_id,
            "resource_type": self.resource_type,
            "slot_minutes": self.horizon.slot_minutes,
            "plan_start_utc": iso(self.horizon.start_utc),
            "as_of_utc": iso(self.as_of_utc),
            "sites": list(self.site_ids),
            "slots": [s.to_dict() for s in self.slots],
            "totals": self.totals.to_dict(),
        }


# -- the series ------------------------------------------------------------------------------------------------
def compute_series(instance: Instance, plan: Plan, baseline: Plan) -> list[SiteSeries]:
    """A compute provider's sites: `plan` (the optimal plan) and `baseline` (run-at-release) on `instance`."""
    planned, base = plan.grid_import_kw(instance), baseline.grid_import_kw(instance)
    price, carbon = instance.price_matrix(), instance.carbon_matrix()
    return [
        SiteSeries(
            site_id=site.id,
            baseline_kw=base[k],
            planned_kw=planned[k],
            import_price_gbp_per_mwh=price[k],
            export_price_gbp_per_mwh=np.zeros(instance.n_slots),  # a compute site never exports
            carbon_g_per_kwh=carbon[k],
        )
        for k, site in enumerate(instance.sites)
    ]


def storage_site_series(
    site_id: str,
    *,
    idle_net_import_kw: FloatArray,
    planned_net_import_kw: FloatArray,
    import_price_gbp_per_mwh: FloatArray,
    export_price_gbp_per_mwh: FloatArray,
    carbon_g_per_kwh: FloatArray,
) -> SiteSeries:
    """A storage site: the meter's net import with the battery idle, and as the storage plan runs it."""
    return SiteSeries(
        site_id=site_id,
        baseline_kw=np.asarray(idle_net_import_kw, dtype=float),
        planned_kw=np.asarray(planned_net_import_kw, dtype=float),
        import_price_gbp_per_mwh=np.asarray(import_price_gbp_per_mwh, dtype=float),
        export_price_gbp_per_mwh=np.asarray(export_price_gbp_per_mwh, dtype=float),
        carbon_g_per_kwh=np.asarray(carbon_g_per_kwh, dtype=float)[: len(planned_net_import_kw)],
    )


# -- orders on the plan's slots --------------------------------------------------------------------------------
def _half_hours(c: CommittedReduction, horizon: Horizon) -> list[tuple[int, float, float]]:
    """(plan slot, the fraction of it the half hour covers, cap kW) for each of the order's half hours inside."""
    out: list[tuple[int, float, float]] = []
    h0 = slots_between(horizon.start_utc, c.start_utc, MARKET_SLOT_MINUTES)
    covered = max(MARKET_SLOT_MINUTES // horizon.slot_minutes, 1)  # plan slots one half hour covers (2 at 15 min)
    fraction = min(MARKET_SLOT_MINUTES / horizon.slot_minutes, 1.0)  # of each (half of a 60-minute slot)
    for i, cap_kw in enumerate(c.max_import_kw()):
        first = (h0 + i) * MARKET_SLOT_MINUTES // horizon.slot_minutes
        out += [(t, fraction, float(cap_kw)) for t in range(first, first + covered) if 0 <= t < horizon.n_slots]
    return out


def committed_reduction_kw(commitments: Sequence[CommittedReduction], horizon: Horizon) -> FloatArray:
    """(n_slots,) Σ of the orders' kW over each plan slot, as a mean over the slot (a half-hour order in a 60-minute
    slot counts half its kW)."""
    out = np.zeros(horizon.n_slots)
    for c in commitments:
        for t, fraction, _ in _half_hours(c, horizon):
            out[t] += c.reduction_kw * fraction
    return out


def committed_caps_kw(
    commitments: Sequence[CommittedReduction], site_ids: Sequence[str], horizon: Horizon
) -> FloatArray:
    """(n_sites, n_slots) the smallest cap ``frozen baseline − reduction`` of the orders covering each plan slot of
    each site (inf where none). Each order's baseline was frozen from the plan already reduced by the earlier
    orders, so the smallest cap binds. A 15-minute slot carries its half hour's cap, which binds the half hour's
    mean import; a 60-minute slot the smaller of its half hours' caps."""
    caps = np.full((len(site_ids), horizon.n_slots), np.inf)
    index = {s: k for k, s in enumerate(site_ids)}
    for c in commitments:
        k = index.get(c.site_id)
        if k is None:
            continue
        for t, _, cap_kw in _half_hours(c, horizon):
            caps[k, t] = min(caps[k, t], cap_kw)
    return caps


# -- the schedule ----------------------------------------------------------------------------------------------
def build_schedule(
    *,
    provider_id: str,
    resource_type: str,
    horizon: Horizon,
    sites: Sequence[SiteSeries],
    commitments: Sequence[CommittedReduction],
    as_of_utc: datetime,
    start_utc: datetime | None = None,
    end_utc: datetime | None = None,
) -> Schedule:
    """The schedule summed over `sites`, for the plan slots overlapping ``[start_utc, end_utc)`` (default: the
    whole horizon); the totals are over those slots."""
    if not sites:
        raise ValueError("sites: a schedule needs at least one site")
    site_ids = tuple(s.site_id for s in sites)
    base = np.stack([s.baseline_kw for s in sites])
    planned = np.stack([s.planned_kw for s in sites])
    caps = committed_caps_kw(commitments, site_ids, horizon)
    committed = np.isfinite(caps)
    cap_sum = np.where(committed, caps, planned).sum(axis=0)
    reduction = committed_reduction_kw(commitments, horizon)
    price = np.stack([s.import_price_gbp_per_mwh for s in sites]).mean(axis=0)
    carbon = np.stack([s.carbon_g_per_kwh for s in sites]).mean(axis=0)
    chosen = _slots_in(horizon, start_utc, end_utc)
    slots = tuple(
        Slot(
            start_utc=horizon.slot_start(t),
            end_utc=horizon.slot_start(t + 1),
            baseline_kw=float(base[:, t].sum()),
            planned_kw=float(planned[:, t].sum()),
            committed_reduction_kw=float(reduction[t]),
            committed_cap_kw=float(cap_sum[t]) if committed[:, t].any() else None,
            price_gbp_per_mwh=float(price[t]),
            carbon_g_per_kwh=float(carbon[t]),
        )
        for t in chosen
    )
    return Schedule(
        provider_id=provider_id,
        resource_type=resource_type,
        horizon=horizon,
        as_of_utc=as_of_utc,
        site_ids=site_ids,
        slots=slots,
        totals=totals(sites, horizon, chosen),
    )


def _slots_in(horizon: Horizon, start_utc: datetime | None, end_utc: datetime | None) -> range:
    """The plan slots overlapping ``[start_utc, end_utc)``."""
    slot_s = horizon.slot_minutes * 60
    first, end = 0, horizon.n_slots
    if start_utc is not None:  # from the slot holding start
        first = max(first, math.floor((start_utc - horizon.start_utc).total_seconds() / slot_s))
    if end_utc is not None:  # to the last slot starting before end
        end = min(end, math.ceil((end_utc - horizon.start_utc).total_seconds() / slot_s))
    first = min(first, horizon.n_slots)
    return range(first, max(first, end))


def totals(sites: Sequence[SiteSeries], horizon: Horizon, chosen: range) -> Totals:
    """Cost (import at the import price, export credited at the export price) and carbon (the net import at the
    region's intensity) of both series over the chosen slots, each site on its own signals."""
    t = slice(chosen.start, chosen.stop)

    def cost_gbp(kw: FloatArray, s: SiteSeries) -> float:
        imported, exported = np.clip(kw[t], 0.0, None), np.clip(-kw[t], 0.0, None)
        money = imported * s.import_price_gbp_per_mwh[t] - exported * s.export_price_gbp_per_mwh[t]
        return float(money.sum() * horizon.slot_hours / KWH_PER_MWH)

    def carbon_kg(kw: FloatArray, s: SiteSeries) -> float:
        return float((kw[t] * s.carbon_g_per_kwh[t]).sum() * horizon.slot_hours / G_PER_KG)

    return Totals(
        baseline_cost_gbp=sum(cost_gbp(s.baseline_kw, s) for s in sites),
        planned_cost_gbp=sum(cost_gbp(s.planned_kw, s) for s in sites),
        baseline_carbon_kg=sum(carbon_kg(s.baseline_kw, s) for s in sites),
        planned_carbon_kg=sum(carbon_kg(s.planned_kw, s) for s in sites),
    )


# -- the query's range -----------------------------------------------------------------------------------------
def check_range(
    start_utc: datetime | None,
    end_utc: datetime | None,
    now: datetime,
    max_ahead_days: float = limits.DEFAULT_MAX_WINDOW_AHEAD_DAYS,
) -> tuple[str, str] | None:
    """(field, reason) when a schedule query's range is out of the shared limits (schemas/limits.py): end after
    start, at most `MAX_WINDOW_DAYS` long, not before `EARLIEST_HISTORY`, not beyond `max_ahead_days` past `now`.
    The range may lie in the past: a schedule is read, not traded."""
    for name, t in (("start", start_utc), ("end", end_utc)):
        if t is None:
            continue
        if t.tzinfo is None:
            return name, "must carry a UTC offset (e.g. 2023-01-24T17:00:00Z)"
        if t < limits.EARLIEST_HISTORY:
            return name, f"is before {limits.EARLIEST_HISTORY.date().isoformat()}"
        if t > now + timedelta(days=max_ahead_days):
            return name, f"is more than {max_ahead_days:g} days ahead of market time {iso(now.astimezone(UTC))}"
    if start_utc is not None and end_utc is not None:
        if end_utc <= start_utc:
            return "end", "must be after start"
        if end_utc - start_utc > timedelta(days=limits.MAX_WINDOW_DAYS):
            return "end", f"the range is longer than {limits.MAX_WINDOW_DAYS} days"
    return None
