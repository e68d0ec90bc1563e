"""The exact solve of bap/procurement_choice.py past the dive: the branch and bound over items (its bound must be
a true lower bound and its gap a proven one, checked against brute force), its reopening when the gap tightens,
its bound when the time runs out, and the orders in 0.1 kW steps (their gap to the bound included)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import bap.procurement_choice as pc
from bap.procurement_choice import Offer, ProcurementRequest, TokenRedemption, choose
from tests.bap.test_procurement_choice import SERIES, _feasible, _model, _offer, _root, brute_force, instances


def _search(offers: list[Offer], req: ProcurementRequest, gap: float) -> tuple[pc._Search, pc._Node]:
    """A search with no incumbent (no dive): whatever it proves, its own nodes found."""
    model = _model(offers, req)
    lp, root = _root(model)
    return pc._Search(lp, model, gap), root


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances(max_slots=4, max_offers=4))
def test_search_alone_proves_its_gap_with_a_true_bound(case: tuple[list[Offer], ProcurementRequest]) -> None:
    """At production's gap, from the root without the dive's incumbent: the incumbent is feasible, within the gap
    of the bound it reports, and that bound is at most the brute-force optimum (a bound too high fails here)."""
    offers, req = case
    search, root = _search(offers, req, 1e-3)
    status, bound = search.run(root, t_end=time.perf_counter() + 10.0)
    expected = brute_force(offers, req)
    tol = 1e-6 * max(1.0, abs(expected))
    assert status == "optimal" and search.best.x is not None
    assert _feasible(search.model, search.best.x)
    best = search.best.objective
    assert best - bound <= 1e-3 * abs(best) + 1e-9
    assert bound <= expected + tol
    assert expected - tol <= best <= expected + 1e-3 * abs(best) + tol


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances(max_slots=4, max_offers=4))
def test_tightening_reopens_the_nodes_closed_and_reaches_the_optimum(
    case: tuple[list[Offer], ProcurementRequest],
) -> None:
    """A loose gap closes nodes unexplored; tightened to (almost) nothing, the search reopens them and ends at the
    brute-force optimum, its bound with it."""
    offers, req = case
    expected = brute_force(offers, req)
    search, root = _search(offers, req, 0.2)
    _, bound = search.run(root, t_end=time.perf_counter() + 10.0)
    assert bound <= expected + 1e-6 * max(1.0, abs(expected))
    search.tighten(1e-9)
    status, bound = search.run(None, t_end=time.perf_counter() + 10.0)
    assert status == "optimal"
    assert search.best.objective == pytest.approx(expected, rel=1e-6, abs=1e-7)
    assert bound == pytest.approx(expected, rel=1e-6, abs=1e-7)
    assert search.closed == [] or min(n.bound for n in search.closed) >= search.closing()


def test_a_node_closed_counts_in_the_bound_and_reopens_when_the_gap_tightens() -> None:
    """The bookkeeping the reported bound rests on: a node closed within the gap (bound 1 % under the
    incumbent, gap 2 %) is not explored, but its bound is the search's; a gap of 0.1 % opens it again."""
    offers = [_offer("a", "p", 0, 1, 50.0, max_kw=8.0), _offer("b", "q", 0, 1, 80.0, max_kw=5.0)]
    search, root = _search(offers, ProcurementRequest((6.0, 6.0)), 0.02)
    x = search.lp.corners.point(root.x, search.model) if root.x is not None else None
    assert x is not None
    search.offer(x)
    below = pc._Node(0.99 * search.best.objective, 1, root.closed, root.whole_items, None)
    search._keep(below)
    assert search.open == [] and search.closed == [below]
    assert search.bound(None) == pytest.approx(0.99 * search.best.objective)
    search.tighten(1e-3)
    assert search.closed == [] and [entry[3] for entry in search.open] == [below]
    assert search.bound(None) == pytest.approx(0.99 * search.best.objective)


def test_closed_nodes_bound_the_search_and_reopen() -> None:
    """A bench instance (50 offers) searched at a 2 % gap closes nodes unexplored: the bound it reports counts
    them (at most HiGHS's optimum); tightened to 0.01 %, it reopens them and proves that gap."""
    from bench.procurement import evening_prices, instance

    offers, req = instance(50, evening_prices()[0], 6)
    model = _model(offers, req)
    alone = pc._highs(model, integer=True, time_limit_s=60.0, mip_rel_gap=1e-7)
    assert alone.status == "optimal"
    search, root = _search(offers, req, 0.02)
    status, bound = search.run(root, t_end=time.perf_counter() + 60.0)
    assert status == "optimal" and search.closed
    assert bound <= alone.objective + 1e-6 and search.best.objective - bound <= 0.02 * search.best.objective
    search.tighten(1e-4)
    status, bound = search.run(None, t_end=time.perf_counter() + 60.0)
    assert status == "optimal"
    assert bound <= alone.objective + 1e-6 and search.best.objective - bound <= 1e-4 * search.best.objective


@settings(max_examples=50, deadline=None)
@given(instances(max_slots=8, max_offers=12))
def test_search_out_of_time_keeps_a_true_bound(case: tuple[list[Offer], ProcurementRequest]) -> None:
    """Stopped at once, the search reports the time limit and the root's bound, no more; given time again, it
    goes on from where it stopped to the optimum HiGHS finds alone."""
    offers, req = case
    model = _model(offers, req)
    search, root = _search(offers, req, 1e-9)
    status, bound = search.run(root, t_end=time.perf_counter() - 1.0)
    assert status == pc.TIME_LIMIT
    assert bound == pytest.approx(root.bound)
    status, bound = search.run(None, t_end=time.perf_counter() + 30.0)
    alone = pc._highs(model, integer=True, time_limit_s=30.0, mip_rel_gap=1e-9)
    assert status == "optimal" and alone.status == "optimal"
    assert bound <= alone.objective + 1e-6 * max(1.0, abs(alone.objective))
    assert search.best.objective == pytest.approx(alone.objective, rel=1e-6, abs=1e-6)


def test_the_search_runs_where_the_dive_is_not_within_the_gap() -> None:
    """A 500-offer instance of the benchmark whose dive is 0.2 % above the LP bound and whose LP bound is more
    than 0.1 % below the optimum: only branching proves the gap. The portfolio, in 0.1 kW steps, is within it."""
    from bench.procurement import evening_prices, instance

    offers, req = instance(500, evening_prices()[0], 3)
    model = _model(offers, req)
    lp, root = _root(model)
    x = pc._dive(lp, root, model)
    assert x is not None and float(model.cost @ x) - root.bound > 1e-3 * root.bound
    p = choose(offers, req)
    assert p.status == "optimal"
    assert p.best_bound > root.bound * (1 + 1e-4)  # branching raised the bound
    assert p.objective_value - p.best_bound <= req.mip_rel_gap * p.objective_value


@pytest.mark.parametrize("seed", [6, 13])
def test_orders_in_steps_within_the_gap_of_a_true_bound(seed: int) -> None:
    """Small bench instances (50 offers), where 0.1 kW steps cost a good part of the gap: the rounded portfolio
    is still within ``mip_rel_gap`` of the bound, and the bound is no higher than HiGHS's own optimum."""
    from bench.procurement import evening_prices, instance

    offers, req = instance(50, evening_prices()[0], seed)
    p = choose(offers, req)
    alone = pc._highs(_model(offers, req), integer=True, time_limit_s=60.0, mip_rel_gap=1e-6)
    assert p.status == "optimal" and alone.status == "optimal"
    assert p.objective_value - p.best_bound <= req.mip_rel_gap * p.objective_value
    assert p.best_bound <= alone.objective * (1 + 1e-6)
    assert p.solver_objective_value <= p.objective_value + 1e-9


def test_steps_make_up_a_token_order_rounded_down_to_its_budget() -> None:
    """Token order t takes the whole budget at 7.25 kW, which is off a step: 7.3 kW overdraws, 7.2 kW leaves
    0.05 kW short. The steps' MILP rounds t down and raises the spot order s (room to spare) instead of paying
    the shortfall penalty."""
    offers = [
        _offer("t", "p", 0, 0, 10.0, max_kw=20.0, payment=TokenRedemption(SERIES)),
        _offer("s", "q", 0, 0, 100.0, min_kw=2.0, max_kw=50.0),
    ]
    req = ProcurementRequest(
        (9.25,), token_budgets_mwh={SERIES: 7.25 * 0.5 / 1000.0}, token_value_gbp_per_mwh={SERIES: 10.0}
    )
    p = choose(offers, req)
    kw = {o.offer_id: o.power_kw for o in p.orders}
    assert kw == {"t": 7.2, "s": 2.1}
    assert p.shortfall_kw == (0.0,)
    assert p.tokens_redeemed_mwh[SERIES] <= req.token_budgets_mwh[SERIES]


def test_steps_within_each_range_and_kept_exact_without_one() -> None:
    assert pc._steps(7.25, 0.0, 20.0) == (7.2, 10, 10)
    assert pc._steps(0.05, 0.0, 20.0) == (0.0, 0, 10)
    assert pc._steps(19.97, 0.0, 20.0) == (19.9, 10, 1)
    assert pc._steps(33.33, 33.31, 33.35) == (33.33, 0, 0)  # no step in range: exact
    base, down, up = pc._steps(12.6, 12.55, 13.0)
    assert (base, down, up) == (12.6, 0, 4)


def test_corner_point_is_the_models_point() -> None:
    """An integral corner-form point maps to the _Model point with the same objective and kW: offer a (no
    minimum) at 6 kW is 3/4 of its max corner, and ordered (z = 1) all the same."""
    offers = [_offer("a", "p", 0, 1, 50.0, max_kw=8.0), _offer("b", "q", 0, 1, 80.0, max_kw=5.0)]
    req = ProcurementRequest((6.0, 6.0))
    model = _model(offers, req)
    lp, root = _root(model)
    assert root.x is not None
    items, _ = lp.corners.fractional(root.x)
    assert len(items) == 0
    x = lp.corners.point(root.x, model)
    assert _feasible(model, x)
    assert float(model.cost @ x) == pytest.approx(root.bound)
    assert math.isclose(float(pc._power_of(x, model).sum()), 6.0)
    assert np.rint(x[: model.n_binary]).sum() == 1  # a's one window
