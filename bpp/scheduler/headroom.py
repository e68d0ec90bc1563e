"""Offer headroom: how far a site's grid import can be cut below a plan's, over a window, while every
constraint still holds — the ``available_kw`` of a flexibility offer (:mod:`bpp.offers`)."""

from __future__ import annotations

import numpy as np

from bpp.domain import Instance
from bpp.plan import Plan
from bpp.scheduler.milp import build_model


def max_reduction_kw(instance: Instance, plan: Plan, site_index: int, a: int, b: int) -> float:
    """The largest R such that some plan meets every constraint and keeps the site's grid import at
    least R kW below ``plan``'s import in every slot of ``[a, b)`` (an LP/MILP: max R)."""
    g_plan = plan.grid_import_kw(instance)[site_index, a:b]
    model = build_model(instance)
    lp = model.lp
    lp.clear_objective()
    r = lp.add_cols(np.array([-1.0]), np.zeros(1), np.array([max(float(g_plan.min()), 0.0)]))
    n = b - a
    rows = lp.add_rows(np.full(n, -np.inf), g_plan)
    lp.add_entries(rows, model.g_cols[site_index, a:b], np.ones(n))
    lp.add_entries(rows, np.full(n, r[0]), np.ones(n))
    res = lp.solve(instance.solver.time_limit_s, 1e-4, instance.solver.threads)
    if res.x is None:
        return 0.0
    return max(float(res.x[r[0]]), 0.0)
