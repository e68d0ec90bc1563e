"""Flexibility offers derived from the optimal plan: what reduction a site can deliver, when, at what cost.

For each site and each offer window W (``window_slots`` consecutive slots), starting from the current
optimal plan P* (which already honours every committed order):

1. **Available kW** — ``R_max`` = the largest R such that some plan keeps the site's grid import at
   least R below P*'s import in every slot of W while meeting every constraint (one LP/MILP:
   :func:`bpp.scheduler.max_reduction_kw`).
2. **Cost** — for reductions q at the levels ``levels · R_max`` we *re-solve* with the reduction
   imposed exactly as a confirmed order would impose it (a hypothetical :class:`CommittedReduction`
   with P*'s import as its baseline) and take the objective increase ΔC(q) over P*. The energy not
   drawn is q · |W| · h MWh. ``average_cost`` = max over levels of ΔC(q)/E(q);
   ``marginal_cost`` = the slope of the last segment, (ΔC(R_max) − ΔC(q_prev)) / (E(R_max) − E(q_prev)).

   Why re-solve and not LP duals: the model is a MILP (contiguous jobs are binaries), whose duals at
   the final LP are not prices of anything; even for the LP part a dual is the cost of the *first*
   kW only, while an order asks for a block of kW over a whole window, and shifting that block moves
   jobs into progressively worse slots (the cost curve is convex in the LP case and step-shaped
   with binaries). The re-solve prices exactly the plan the site would run if the order were
   confirmed, at the cost of one solve per level.
3. **Price** — ``cost_basis = max(marginal_cost, average_cost, 0)``: with a convex cost curve the last
   segment's slope is the highest average cost any order size up to R_max can incur, and taking the
   max with the averages keeps the price above cost when binaries make the curve non-convex at the
   sampled levels. ``price = cost_basis · (1 + margin_fraction) + margin_gbp_per_mwh``.

Costs are in the plan's objective converted to £ (:attr:`ObjectiveSpec.gbp_per_objective_unit`): for
``cost`` that is money; for the default ``cost_x_carbon`` it is carbon-adjusted money, i.e. the site's
own valuation of what it gives up. An order covers the whole window (min = max duration = |W|), so the
price never undercuts a shorter call whose per-MWh cost could differ.

**Half-hour boundaries, whatever the plan's slot length** (``Instance.slot_minutes``). Offers, orders
and settlement are half-hourly: ``window_slots`` and ``lead_slots`` count half hours, a window starts
and ends on half-hour boundaries, and an offer's ``baseline_kw`` has one value per half hour — the mean
planned import over the plan slots the half hour covers (:func:`half_hourly_mean_kw`, the
energy its meter reading sees; an order imposes that mean, :meth:`bpp.domain.Instance.commitment_half_hours`).
The kW an offer states is :func:`offered_kw`: **from a 15-minute plan a half hour's kW is the MIN of its
two sub-slots' deliverable reduction** (a constant kW over the half hour must hold in both — never
over-sell); **from a 60-minute plan each hour gives two equal half hours** (the slot's own value); a
30-minute plan's slots are the half hours. A window is one kW: the min over its half hours. The
deliverable reduction step 1 finds holds in every plan slot of the window at once, so the offer never
exceeds what any sub-slot can deliver (asserted in :func:`offered_kw`). A 60-minute plan offers whole
hours only (``window_slots`` even: :func:`bpp.agent.check_plan_resolution`).

The storage agent (:mod:`bpp.storage_agent`) prices its windows with the same steps on its own model:
:func:`window_starts`, :func:`price_from_costs` and :func:`make_offer` are shared.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import numpy as np

from bpp.domain import (
    MARKET_SLOT_MINUTES,
    MWH_PER_KW_SLOT,
    SLOT,
    TOL,
    CommittedReduction,
    FloatArray,
    Instance,
    check_slot_minutes,
    iso,
)
from bpp.plan import Plan
from bpp.scheduler import SchedulingInfeasible, max_reduction_kw, solve


def half_hourly_mean_kw(per_slot_kw: FloatArray, slot_minutes: int) -> FloatArray:
    """A per-slot power profile as half-hourly means — the energy each half hour's meter reading sees:
    two 15-minute slots average, a 60-minute slot is the same in both its half hours. The profile
    starts on a half-hour boundary and, at 15 minutes, covers whole half hours."""
    return _to_half_hours(per_slot_kw, slot_minutes, np.mean)


def half_hourly_min_kw(per_slot_kw: FloatArray, slot_minutes: int) -> FloatArray:
    """A per-slot *deliverable reduction* as half-hourly values that never over-sell: a half hour of
    two 15-minute slots gets the smaller (a constant kW over the half hour must hold in both), a
    60-minute slot gives both its half hours its own value."""
    return _to_half_hours(per_slot_kw, slot_minutes, np.min)


def _to_half_hours(per_slot_kw: FloatArray, slot_minutes: int, reduce: Callable[..., FloatArray]) -> FloatArray:
    arr = np.asarray(per_slot_kw, dtype=float)
    check_slot_minutes(slot_minutes)
    if slot_minutes == MARKET_SLOT_MINUTES:
        return arr.copy()
    if slot_minutes > MARKET_SLOT_MINUTES:
        repeated: FloatArray = np.repeat(arr, slot_minutes // MARKET_SLOT_MINUTES)
        return repeated
    per = MARKET_SLOT_MINUTES // slot_minutes
    if len(arr) % per:
        raise ValueError(f"{len(arr)} slots of {slot_minutes} min are not whole half hours")
    out: FloatArray = reduce(arr.reshape(-1, per), axis=1)
    return out


@dataclass(frozen=True)
class OfferSettings:
    """How offers are cut and priced. ``window_slots`` and ``lead_slots`` count half hours (the
    market's period), whatever the plan's slot length."""

    window_slots: int = 4  # 2 h windows
    margin_fraction: float = 0.10
    margin_gbp_per_mwh: float = 5.0
    #: smallest offer worth publishing, and the smallest order accepted as a fraction of the maximum
    min_offer_kw: float = 10.0
    min_order_fraction: float = 0.10
    levels: tuple[float, ...] = (0.5, 1.0)
    #: time to react once called: compute pauses/migrates jobs in minutes; a battery in a second
    response_time_s_compute: int = 300
    response_time_s_storage: int = 1
    #: do not offer windows starting within this many slots of the horizon start (time to publish)
    lead_slots: int = 1
    policy_version: str = "ctss-1"

    def __post_init__(self) -> None:
        if self.window_slots < 1:
            raise ValueError("window_slots must be ≥ 1")
        if not self.levels or any(not 0 < q <= 1 for q in self.levels) or max(self.levels) != 1.0:
            raise ValueError("levels must be fractions in (0, 1] ending at 1.0")


@dataclass(frozen=True)
class FlexOffer:
    """One Beckn catalog item (``../shared/DESIGN.md`` "Beckn 1.1 encoding of flexibility")."""

    offer_id: str
    provider_id: str
    site_id: str
    region: str
    resource_type: str  # "compute" | "storage"
    start_utc: datetime
    end_utc: datetime
    available_kw: float
    min_kw: float
    max_kw: float
    price_gbp_per_mwh: float
    marginal_cost_gbp_per_mwh: float
    average_cost_gbp_per_mwh: float
    expected_carbon_g_per_kwh: float
    min_duration_min: int
    max_duration_min: int
    response_time_s: int
    baseline_kw: tuple[float, ...]
    policy_version: str
    price_unit: str = "GBP/MWh"
    baseline_method: str = "10_of_10"

    def tags(self) -> dict[str, str]:
        """The ``flexibility`` TagGroup values, as strings (Beckn tag values are strings)."""
        return {
            "resource_type": self.resource_type,
            "min_duration_min": str(self.min_duration_min),
            "max_duration_min": str(self.max_duration_min),
            "response_time_s": str(self.response_time_s),
            "baseline_method": self.baseline_method,
            "price_unit": self.price_unit,
            "expected_carbon_g_per_kwh": f"{self.expected_carbon_g_per_kwh:.1f}",
            "marginal_cost_gbp_per_mwh": f"{self.marginal_cost_gbp_per_mwh:.2f}",
            "policy_version": self.policy_version,
        }

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["start_utc"] = iso(self.start_utc)
        d["end_utc"] = iso(self.end_utc)
        d["baseline_kw"] = list(self.baseline_kw)
        d["tags"] = self.tags()
        return d

    def catalog_fields(self) -> dict[str, Any]:
        """The fields of the BPP's catalog offer spec (``schemas.flex.FlexOfferSpec``), by name, so the
        service can build a catalog item without this pure module importing the web schemas."""
        return {
            "item_id": self.offer_id,
            "provider_id": self.provider_id,
            "location_id": self.site_id,
            "window_start": self.start_utc,
            "window_end": self.end_utc,
            "available_kw": self.available_kw,
            "min_kw": self.min_kw,
            "max_kw": self.max_kw,
            "price_gbp_per_mwh": self.price_gbp_per_mwh,
            "resource_type": self.resource_type,
            "min_duration_min": self.min_duration_min,
            "max_duration_min": self.max_duration_min,
            "response_time_s": self.response_time_s,
            "baseline_method": self.baseline_method,
            "expected_carbon_g_per_kwh": round(self.expected_carbon_g_per_kwh, 1),
            "marginal_cost_gbp_per_mwh": self.marginal_cost_gbp_per_mwh,
            "policy_version": self.policy_version,
        }

    def overlaps(self, start_utc: datetime | None, end_utc: datetime | None) -> bool:
        return (start_utc is None or self.end_utc > start_utc) and (end_utc is None or self.start_utc < end_utc)


def window_starts(start_utc: datetime, n_half_hours: int, settings: OfferSettings) -> list[int]:
    """First half hours of the offer windows in a horizon of ``n_half_hours`` from ``start_utc``: windows
    of ``window_slots`` half hours aligned to UTC multiples of their length (2 h windows start at even
    hours), none within ``lead_slots`` of the start."""
    w = settings.window_slots
    epoch = int(start_utc.timestamp()) // (MARKET_SLOT_MINUTES * 60)
    first = settings.lead_slots + (-(epoch + settings.lead_slots)) % w
    return list(range(first, n_half_hours - w + 1, w))


def offered_kw(deliverable_kw_per_slot: FloatArray, slot_minutes: int) -> float:
    """The one kW an offer may state over a window, from the reduction the plan can deliver in each of
    the window's plan slots (module docstring): per half hour the MIN of its sub-slots (15 minutes), the
    slot's own value in both halves (60), the slot (30); then the min over the half hours. Never more
    than any sub-slot delivers (asserted)."""
    deliverable = np.asarray(deliverable_kw_per_slot, dtype=float)
    kw = float(half_hourly_min_kw(deliverable, slot_minutes).min())
    assert np.all(kw <= deliverable + TOL), "an offer must never exceed a sub-slot's deliverable reduction"
    return kw


@dataclass(frozen=True)
class OfferPrice:
    """An offer's cost basis and price (£/MWh; module docstring, steps 2–3)."""

    marginal_cost_gbp_per_mwh: float
    average_cost_gbp_per_mwh: float
    price_gbp_per_mwh: float


def price_from_costs(points: list[tuple[float, float]], settings: OfferSettings) -> OfferPrice:
    """The price from the cost curve: ``points`` are (energy not drawn MWh, Δcost £) from (0, 0)
    through each level, the last at the full reduction."""
    avg = max(d / e for e, d in points[1:] if e > 0)
    (e0, d0), (e1, d1) = points[-2], points[-1]
    marginal = (d1 - d0) / (e1 - e0) if e1 > e0 else avg
    basis = max(marginal, avg, 0.0)
    price = basis * (1 + settings.margin_fraction) + settings.margin_gbp_per_mwh
    return OfferPrice(round(marginal, 2), round(avg, 2), round(price, 2))


@dataclass(frozen=True, kw_only=True)
class OfferWindow:
    """One site's window as an offer is made of it: where, when, how much, against which baseline."""

    provider_id: str
    site_id: str
    region: str
    resource_type: str
    start_utc: datetime
    end_utc: datetime
    available_kw: float
    baseline_kw: tuple[float, ...]
    expected_carbon_g_per_kwh: float


def make_offer(window: OfferWindow, pricing: OfferPrice, settings: OfferSettings) -> FlexOffer:
    """The catalog offer for a window: the whole window or nothing (min = max duration)."""
    r_max = window.available_kw
    storage = window.resource_type == "storage"
    minutes = settings.window_slots * MARKET_SLOT_MINUTES
    return FlexOffer(
        offer_id=f"{window.site_id}-{window.start_utc:%Y%m%dT%H%MZ}-{window.resource_type}",
        provider_id=window.provider_id,
        site_id=window.site_id,
        region=window.region,
        resource_type=window.resource_type,
        start_utc=window.start_utc,
        end_utc=window.end_utc,
        available_kw=r_max,
        min_kw=math.floor(min(r_max, max(settings.min_offer_kw, settings.min_order_fraction * r_max)) * 1000) / 1000,
        max_kw=r_max,
        price_gbp_per_mwh=pricing.price_gbp_per_mwh,
        marginal_cost_gbp_per_mwh=pricing.marginal_cost_gbp_per_mwh,
        average_cost_gbp_per_mwh=pricing.average_cost_gbp_per_mwh,
        expected_carbon_g_per_kwh=window.expected_carbon_g_per_kwh,
        min_duration_min=minutes,
        max_duration_min=minutes,
        response_time_s=settings.response_time_s_storage if storage else settings.response_time_s_compute,
        baseline_kw=tuple(round(float(x), 3) for x in window.baseline_kw),
        policy_version=settings.policy_version,
    )


def _probe(instance: Instance, site_id: str, window: tuple[int, int], q_kw: float, baseline: FloatArray) -> Instance:
    """The instance with a hypothetical order for ``q_kw`` over half hours ``window`` (as a confirm
    would add it; ``baseline`` one value per half hour)."""
    h0, h1 = window
    c = CommittedReduction(
        "offer-probe",
        site_id,
        _half_hour_start(instance, h0),
        _half_hour_start(instance, h1),
        q_kw,
        tuple(float(x) for x in baseline),
    )
    return replace(instance, commitments=(*instance.commitments, c))


def derive_offers(
    instance: Instance,
    plan: Plan,
    settings: OfferSettings | None = None,
    *,
    provider_id: str = "provider",
    resource_type: str = "compute",
    site_ids: list[str] | None = None,
    start_utc: datetime | None = None,
    end_utc: datetime | None = None,
) -> list[FlexOffer]:
    """Offers per site and window overlapping ``[start_utc, end_utc)`` (see module docstring)."""
    cfg = settings or OfferSettings()
    assert plan.metrics is not None, "offers need a solved plan"
    base_obj = plan.metrics.objective
    gbp = instance.objective.gbp_per_objective_unit
    g_plan = plan.grid_import_kw(instance)
    carbon = instance.carbon_matrix()
    w = cfg.window_slots
    sm = instance.slot_minutes
    n_half_hours = instance.n_slots * sm // MARKET_SLOT_MINUTES
    out: list[FlexOffer] = []
    for k, site in enumerate(instance.sites):
        if site_ids is not None and site.id not in site_ids:
            continue
        for h0 in window_starts(instance.start_utc, n_half_hours, cfg):
            h1 = h0 + w
            a, b = instance.slots_of_half_hours(h0, h1)
            if a * sm != h0 * MARKET_SLOT_MINUTES or b * sm != h1 * MARKET_SLOT_MINUTES:
                continue  # the window would split a plan slot (a 60-minute plan offers whole hours)
            if not _overlaps(instance, a, b, start_utc, end_utc):
                continue
            # the LP's R holds in every plan slot of the window at once: each slot delivers ≥ R
            r_max = offered_kw(np.full(b - a, max_reduction_kw(instance, plan, k, a, b)), sm)
            # back off from the exact maximum and round *down* to 1 W, so an order for max_kw is
            # feasible despite solver tolerances (the probe below uses this very value)
            r_max = math.floor((r_max * (1 - 1e-5) - 1e-3) * 1000) / 1000
            if r_max < cfg.min_offer_kw:
                continue
            baseline = half_hourly_mean_kw(g_plan[k, a:b], sm)  # one value per half hour of the window
            points: list[tuple[float, float]] = [(0.0, 0.0)]  # (energy MWh, Δcost £)
            for lvl in sorted(cfg.levels):
                q = lvl * r_max
                try:
                    p = solve(_probe(instance, site.id, (h0, h1), q, baseline), verify=False)
                except SchedulingInfeasible:
                    q = math.floor(q * 0.99 * 1000) / 1000
                    p = solve(_probe(instance, site.id, (h0, h1), q, baseline), verify=False)
                    r_max = q if lvl == 1.0 else r_max
                assert p.metrics is not None
                delta = max(p.metrics.objective - base_obj, 0.0) * gbp
                points.append((q * w * MWH_PER_KW_SLOT, delta))  # w half hours of q kW not drawn
            window = OfferWindow(
                provider_id=provider_id,
                site_id=site.id,
                region=site.region,
                resource_type=resource_type,
                start_utc=instance.slot_start(a),
                end_utc=instance.slot_start(b),
                available_kw=r_max,
                baseline_kw=tuple(float(x) for x in baseline),
                expected_carbon_g_per_kwh=float(carbon[k, a:b].mean()),
            )
            out.append(make_offer(window, price_from_costs(points, cfg), cfg))
    return out


def _half_hour_start(instance: Instance, h: int) -> datetime:
    return instance.start_utc + SLOT * h


def _overlaps(instance: Instance, a: int, b: int, start_utc: datetime | None, end_utc: datetime | None) -> bool:
    s, e = instance.slot_start(a), instance.slot_start(b)
    return (start_utc is None or e > start_utc) and (end_utc is None or s < end_utc)
