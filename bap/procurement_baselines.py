"""Two greedy baselines for a procurement's choice (pure), accounted exactly like :func:`bap.procurement_choice.choose`.

- :func:`in_merit_stack`: offers sorted by price per MWh (cheapest first, as NESO's Demand Flexibility
  Service accepts bids), each taken at its maximum kW over as much of its window as the remaining gap needs,
  until every slot is covered.
- :func:`first_come_first_served`: the same, in the offers' arrival order.

Both see the same offers (the same exclusions: price cap, window, duration, tokens) and count coverage
derated by reliability, as the MILP does, so only the choosing differs; they sort by price, not by price
per derated MWh. A redemption is shrunk to the tokens left in its series, and skipped below its minimum kW.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from bap.procurement_choice import (
    KW_STEP,
    SLOT_HOURS,
    TOL_KW,
    ChosenOrder,
    Eligible,
    Offer,
    Portfolio,
    ProcurementRequest,
    TokenRedemption,
    build_portfolio,
    screen,
)


def in_merit_stack(offers: Sequence[Offer], request: ProcurementRequest) -> Portfolio:
    pool, excluded = screen(offers, request)
    ranked = sorted(pool, key=lambda e: e.unit_cost_gbp_per_mwh)  # stable: ties keep arrival order
    return build_portfolio(_greedy(ranked, request), pool, excluded, request, status="in_merit_stack")


def first_come_first_served(offers: Sequence[Offer], request: ProcurementRequest) -> Portfolio:
    pool, excluded = screen(offers, request)
    return build_portfolio(_greedy(pool, request), pool, excluded, request, status="first_come_first_served")


def _window(e: Eligible, need: list[int]) -> tuple[int, int]:
    """The sub-window from the first to the last slot still short, cut to the maximum duration and
    stretched (inside the offer's window) to the minimum."""
    o = e.offer
    a, b = need[0], min(need[-1], need[0] + o.max_duration_slots - 1)
    shortest = max(o.min_duration_slots, 1)
    if b - a + 1 < shortest:
        b = min(e.last_slot, a + shortest - 1)
        a = max(e.first_slot, b - shortest + 1)
    return a, b


def _greedy(order: Iterable[Eligible], request: ProcurementRequest) -> list[ChosenOrder]:
    residual = np.asarray(request.target_kw, dtype=float).copy()
    tokens_left = dict(request.token_budgets_mwh)
    out: list[ChosenOrder] = []
    taken: set[str] = set()  # items ordered: an item's alternatives (spot or tokens) are taken once at most
    for e in order:
        need = [t for t in range(e.first_slot, e.last_slot + 1) if residual[t] > TOL_KW]
        if not need or e.offer.group in taken:
            continue
        a, b = _window(e, need)
        hours = (b - a + 1) * SLOT_HOURS
        power_kw = e.offer.max_kw
        pay = e.offer.payment
        if isinstance(pay, TokenRedemption):
            affordable_kw = tokens_left.get(pay.series_id, 0.0) * 1000.0 / hours
            power_kw = min(power_kw, round(math.floor(affordable_kw / KW_STEP + 1e-9) * KW_STEP, 1))
            if power_kw < max(e.offer.min_kw, KW_STEP) - TOL_KW:
                continue
            tokens_left[pay.series_id] -= power_kw * hours / 1000.0
        out.append(ChosenOrder(e.offer.offer_id, e.offer.provider_id, a, b, power_kw))
        taken.add(e.offer.group)
        residual[a : b + 1] -= e.offer.reliability * power_kw
    return out
