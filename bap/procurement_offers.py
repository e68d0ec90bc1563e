"""What a procurement's choice sees (bap/procurement_engine.py calls it): the offers its searches collected, on
its half-hour grid, derated by each provider's delivery record, left out with a reason where they cannot respond
in time, and offered paid spot or with held tokens (bap/procurement_tokens.py); every offer seen is logged."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from bap import market_log, procurement_tokens
from bap import procurement_choice as pc
from bap.models import BapOrder, CatalogOffer, Procurement
from bap.policy import PolicyBody, reliability
from bap.procurement import SlotTarget, slots_of
from kernel import clock

CHOICE_TIME_LIMIT_S = 5.0  # the MILP's budget per choice: a procurement must not wait on the solver for long


def offer_rows(s: Session, p: Procurement) -> list[CatalogOffer]:
    """The offers of the procurement's searches, the latest answer of each (BPP, provider, item)."""
    rows: dict[tuple[str, str, str], CatalogOffer] = {}
    for tx in p.transaction_ids:
        for c in s.scalars(select(CatalogOffer).where(CatalogOffer.transaction_id == tx)):
            rows[(c.bpp_id, c.provider_id, c.item_id)] = c
    return list(rows.values())


def offer_key(c: CatalogOffer) -> str:
    return f"{c.bpp_id}|{c.provider_id}|{c.item_id}"


def reliabilities(s: Session, policy: PolicyBody, providers: set[str]) -> dict[str, float]:
    """Each provider's delivered ÷ contracted record from the settlement outcomes its orders carry."""
    out = {}
    for provider in providers:
        settled = s.scalars(
            select(BapOrder).where(BapOrder.provider_id == provider, BapOrder.settlement_run.is_not(None))
        ).all()
        contracted = sum(o.power_kw * (o.window_end - o.window_start).total_seconds() / 3600 for o in settled)
        delivered = sum(o.delivered_energy_kwh or 0.0 for o in settled)
        out[provider] = reliability(policy, delivered_kwh=delivered, contracted_kwh=contracted)
    return out


LIVE = ("SELECTING", "QUOTED", "CREATED", "ACCEPTED", "IN-PROGRESS")


def own_orders_kw(s: Session, p: Procurement, grid: list[SlotTarget]) -> dict[tuple[str, str, str], float]:
    """kW this BAP's own live orders of other procurements (or by hand) already hold on each item during the
    grid's slots (the most in any slot): a catalog states an offer's whole capacity, and buying it twice is
    refused at confirm."""
    rows = s.scalars(
        select(BapOrder).where(
            BapOrder.state.in_(LIVE),
            BapOrder.window_start < grid[-1].end,
            BapOrder.window_end > grid[0].start,
            (BapOrder.procurement_id.is_(None)) | (BapOrder.procurement_id != p.id),
        )
    ).all()
    per_slot: dict[tuple[str, str, str], list[float]] = {}
    for o in rows:
        load = per_slot.setdefault((o.bpp_id, o.provider_id, o.item_id), [0.0] * len(grid))
        for i, t in enumerate(grid):
            if o.window_start < t.end and t.start < o.window_end:
                load[i] += o.power_kw
    return {key: max(load) for key, load in per_slot.items()}


def to_choice_offer(
    c: CatalogOffer,
    grid: list[SlotTarget],
    now: datetime,
    rel: float,
    *,
    held_kw: float = 0.0,
    gate_closure: timedelta = timedelta(0),
) -> tuple[pc.Offer | None, str | None]:
    """The offer on the procurement's slot grid, less what this BAP's other orders already hold of it, or why it
    cannot take part. Only slots starting after both its response time and gate closure are usable."""
    ready = now + max(timedelta(seconds=int(c.spec.get("response_time_s") or 0)), gate_closure)
    usable = [i for i, t in enumerate(grid) if c.window_start <= t.start and t.end <= c.window_end and t.start >= ready]
    if not usable:
        inside = any(c.window_start <= t.start and t.end <= c.window_end for t in grid)
        return None, (
            f"cannot respond before its window's slots begin (response time {c.spec.get('response_time_s') or 0} s, "
            f"gate closure {gate_closure.total_seconds() / 60:g} min)"
            if inside
            else "its window does not overlap the procurement's slots"
        )
    first, last = usable[0], usable[-1]
    max_kw = float(c.spec.get("max_kw") or c.available_kw) - held_kw
    min_kw = float(c.spec.get("min_kw") or 0.0)
    if max_kw < max(min_kw, 0.1):
        return None, f"this BAP's other orders already hold {held_kw:g} kW of it in these slots"
    return (
        pc.Offer(
            offer_id=offer_key(c),
            provider_id=c.provider_id,
            first_slot=first,
            last_slot=last,
            min_kw=min_kw,
            max_kw=max_kw,
            min_duration_slots=max(1, math.ceil(int(c.spec.get("min_duration_min") or 30) / 30)),
            max_duration_slots=max(1, int(c.spec.get("max_duration_min") or 240) // 30),
            price_gbp_per_mwh=c.price_gbp_per_mwh,
            carbon_g_per_kwh=c.spec.get("expected_carbon_g_per_kwh"),
            reliability=rel,
        ),
        None,
    )


def objective(policy: PolicyBody, name: str) -> pc.Objective:
    if name == "carbon":
        return pc.MinCarbon()
    if name == "cost_plus_carbon":
        return pc.CostPlusCarbon(policy.carbon_price_gbp_per_tco2)
    return pc.MinCost()


def portfolio(
    s: Session, p: Procurement, policy: PolicyBody, *, gap: list[float], used: set[str], log_offers: bool
) -> tuple[pc.Portfolio, dict[str, CatalogOffer], procurement_tokens.Held]:
    grid = slots_of(p)
    rows = offer_rows(s, p)
    rels = reliabilities(s, policy, {c.provider_id for c in rows})
    holdings = (
        procurement_tokens.held(s, providers={c.provider_id for c in rows}, window=(grid[0].start, grid[-1].end))
        if rows
        else {}
    )
    ours = own_orders_kw(s, p, grid)
    now = clock.now()
    offers, by_key = [], {}
    for c in rows:
        key = offer_key(c)
        o, why = to_choice_offer(
            c,
            grid,
            now,
            rels[c.provider_id],
            held_kw=ours.get((c.bpp_id, c.provider_id, c.item_id), 0.0),
            gate_closure=timedelta(minutes=policy.gate_closure_minutes),
        )
        if log_offers:
            market_log.record(
                s,
                "offer_seen",
                f"offer {c.item_id} from {c.provider_id}: {c.available_kw:g} kW at £{c.price_gbp_per_mwh:g}/MWh, "
                f"{c.window_start.isoformat()}–{c.window_end.isoformat()}"
                + (f"; reliability {rels[c.provider_id]:.2f} derates it" if rels[c.provider_id] < 1 else "")
                + (f"; left out: {why}" if why else ""),
                procurement_id=p.id,
                policy_version=p.policy_version,
                provider_id=c.provider_id,
                offer=key,
            )
        if o is not None and key not in used:
            for variant in (o, *procurement_tokens.variants(o, grid, holdings)):  # spot, or paid with tokens
                offers.append(variant)
                by_key[variant.offer_id] = c
    budgets, values = procurement_tokens.request_terms(holdings, policy.tokens.value_gbp_per_mwh)
    request = pc.ProcurementRequest(
        target_kw=tuple(gap),
        objective=objective(policy, p.request["objective"]),
        price_cap_gbp_per_mwh=p.request["price_cap_gbp_per_mwh"],
        token_budgets_mwh=budgets,
        token_value_gbp_per_mwh=values,
        # proven within 0.1 % of optimal, or the best found in CHOICE_TIME_LIMIT_S (its gap is logged)
        mip_rel_gap=1e-3,
        time_limit_s=CHOICE_TIME_LIMIT_S,
    )
    return pc.choose(offers, request), by_key, holdings
