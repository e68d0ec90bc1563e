"""Choosing offers to meet a load-reduction target (pure; HiGHS via highspy).

Each offer i may be taken at 0 kW or anywhere in [min_kw_i, max_kw_i] (semi-continuous), only if it
covers the whole wanted window. Minimise Σ price_i·x_i (objective "cost"), Σ carbon_i·x_i ("carbon"),
or their sum after scaling each to its cheapest possible value ("balanced"), subject to Σ x_i ≥ target.
This is a small MILP solved exactly; with no feasible set a clear error says how short the market is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import highspy
import numpy as np


@dataclass(frozen=True)
class Candidate:
    key: tuple[str, str, str]  # (bpp_id, provider_id, item_id)
    min_kw: float
    max_kw: float
    price_gbp_per_mwh: float
    carbon_g_per_kwh: float | None
    window_start: datetime
    window_end: datetime


@dataclass(frozen=True)
class Choice:
    key: tuple[str, str, str]
    power_kw: float
    price_gbp_per_mwh: float


class SelectionError(ValueError):
    pass


def eligible(cands: Sequence[Candidate], start: datetime, end: datetime) -> list[Candidate]:
    return [c for c in cands if c.window_start <= start and c.window_end >= end and c.max_kw > 0]


def select_offers(
    cands: Sequence[Candidate], target_kw: float, start: datetime, end: datetime, objective: str = "cost"
) -> list[Choice]:
    pool = eligible(cands, start, end)
    total = sum(c.max_kw for c in pool)
    if target_kw <= 0:
        raise SelectionError("target_kw must be positive")
    if total + 1e-9 < target_kw:
        raise SelectionError(
            f"the market offers {total:g} kW over the whole window from {len(pool)} offers; {target_kw:g} kW wanted"
        )
    price = np.array([c.price_gbp_per_mwh for c in pool], dtype=float)
    carbon = np.array([c.carbon_g_per_kwh if c.carbon_g_per_kwh is not None else np.nan for c in pool])
    if objective == "cost":
        cost = price
    elif objective in ("carbon", "balanced"):
        # Offers that state no carbon intensity get the worst stated one (no reward for silence).
        worst = np.nanmax(carbon) if np.isfinite(carbon).any() else 0.0
        carbon = np.where(np.isfinite(carbon), carbon, worst)
        cost = carbon if objective == "carbon" else price / max(price.min(), 1e-9) + carbon / max(carbon.min(), 1e-9)
    else:
        raise SelectionError(f"objective must be cost, carbon or balanced, not {objective!r}")
    n = len(pool)
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    inf = highspy.kHighsInf
    # Columns: x_0..x_{n-1} (kW), y_0..y_{n-1} (taken?).
    lower = np.zeros(2 * n)
    upper = np.concatenate([[c.max_kw for c in pool], np.ones(n)])
    h.addVars(2 * n, lower, upper)
    h.changeColsCost(n, np.arange(n, dtype=np.int32), cost)
    h.changeColsIntegrality(n, np.arange(n, 2 * n, dtype=np.int32), np.array([highspy.HighsVarType.kInteger] * n))
    # Σ x ≥ target
    h.addRow(target_kw, inf, n, np.arange(n, dtype=np.int32), np.ones(n))
    for i, c in enumerate(pool):
        # x_i − max_i·y_i ≤ 0 and x_i − min_i·y_i ≥ 0
        h.addRow(-inf, 0.0, 2, np.array([i, n + i], dtype=np.int32), np.array([1.0, -c.max_kw]))
        h.addRow(0.0, inf, 2, np.array([i, n + i], dtype=np.int32), np.array([1.0, -c.min_kw]))
    h.run()
    if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        raise SelectionError(f"no set of offers meets {target_kw:g} kW within their minimum/maximum sizes")
    x = np.array(h.getSolution().col_value[:n])
    # Sizes in 0.1 kW steps, rounded down so an order never exceeds its offer's maximum.
    out = [
        Choice(pool[i].key, math.floor(float(x[i]) * 10 + 1e-6) / 10, pool[i].price_gbp_per_mwh)
        for i in range(n)
        if x[i] > 1e-6
    ]
    # Invariant: the chosen set meets the target and every size respects its offer.
    assert sum(ch.power_kw for ch in out) >= target_kw - 0.1 * len(out) - 1e-6
    return out
