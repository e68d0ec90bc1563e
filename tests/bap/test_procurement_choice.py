"""The procurement MILP (bap/procurement_choice.py) and its baselines: brute force on small instances,
properties on random ones, derating, tokens, time-varying targets."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

import bap.procurement_choice as pc
from bap.procurement_baselines import first_come_first_served, in_merit_stack
from bap.procurement_choice import (
    SLOT_HOURS,
    CostPlusCarbon,
    MinCarbon,
    MinCost,
    Objective,
    Offer,
    Portfolio,
    ProcurementRequest,
    Spot,
    TokenRedemption,
    choose,
)

SERIES = "cft-1"
EXACT = {"mip_rel_gap": 1e-9}


# -- strategies ---------------------------------------------------------------------------------------


payments: st.SearchStrategy[Spot | TokenRedemption] = st.sampled_from([Spot(), Spot(), TokenRedemption(SERIES)])


@st.composite
def offers_st(draw: st.DrawFn, n_slots: int, max_offers: int, *, ids: str = "o") -> list[Offer]:
    out = []
    for i in range(draw(st.integers(1, max_offers))):
        first = draw(st.integers(0, n_slots - 1))
        last = draw(st.integers(first, n_slots - 1))
        min_kw = draw(st.integers(0, 6))
        shape = draw(st.integers(0, 9))  # 0: an empty offer, 1: max below min (both excluded)
        max_kw = 0 if shape == 0 else min_kw - 1 if shape == 1 and min_kw > 0 else min_kw + draw(st.integers(0, 8))
        d_min = draw(st.integers(1, 3))
        out.append(
            Offer(
                offer_id=f"{ids}{i}",
                provider_id=f"p{draw(st.integers(0, 2))}",
                first_slot=first,
                last_slot=last,
                min_kw=float(min_kw),
                max_kw=float(max_kw),
                min_duration_slots=d_min,
                max_duration_slots=draw(st.integers(d_min, max(d_min, n_slots))),
                price_gbp_per_mwh=float(draw(st.integers(10, 120))),
                carbon_g_per_kwh=draw(st.one_of(st.none(), st.integers(0, 400).map(float))),
                reliability=draw(st.sampled_from([0.5, 0.75, 0.9, 1.0])),
                payment=draw(payments),
            )
        )
    return out


objectives = st.one_of(
    st.just(MinCost()), st.just(MinCarbon()), st.builds(CostPlusCarbon, st.sampled_from([50.0, 200.0]))
)


@st.composite
def instances(draw: st.DrawFn, max_slots: int, max_offers: int) -> tuple[list[Offer], ProcurementRequest]:
    n_slots = draw(st.integers(1, max_slots))
    offers = draw(offers_st(n_slots, max_offers))
    request = ProcurementRequest(
        target_kw=tuple(float(draw(st.integers(0, 15))) for _ in range(n_slots)),
        objective=draw(objectives),
        price_cap_gbp_per_mwh=draw(st.one_of(st.none(), st.just(100.0))),
        token_budgets_mwh={SERIES: draw(st.sampled_from([0.0, 0.002, 0.005, 1.0]))},
        token_value_gbp_per_mwh={SERIES: float(draw(st.integers(5, 150)))},
        **EXACT,
    )
    return offers, request


# -- brute force --------------------------------------------------------------------------------------


def _unit_cost(o: Offer, req: ProcurementRequest) -> float:
    return req.token_value_gbp_per_mwh[SERIES] if isinstance(o.payment, TokenRedemption) else o.price_gbp_per_mwh


def _usable(o: Offer, req: ProcurementRequest) -> bool:
    """Written from the rules, independently of the module's screening."""
    if o.max_kw <= 0 or o.min_kw > o.max_kw or o.min_duration_slots > o.last_slot - o.first_slot + 1:
        return False
    if isinstance(o.payment, TokenRedemption) and req.token_budgets_mwh.get(SERIES, 0.0) <= 0:
        return False
    cap = req.price_cap_gbp_per_mwh
    return cap is None or _unit_cost(o, req) <= cap


def _weight_per_mwh(o: Offer, req: ProcurementRequest, worst_carbon: float) -> float:
    carbon = worst_carbon if o.carbon_g_per_kwh is None else o.carbon_g_per_kwh
    obj: Objective = req.objective
    if isinstance(obj, MinCost):
        return _unit_cost(o, req)
    if isinstance(obj, MinCarbon):
        return carbon
    return _unit_cost(o, req) + obj.gbp_per_tco2 * carbon / 1000.0


def brute_force(offers: Sequence[Offer], req: ProcurementRequest) -> float:
    """The least objective over every (sub-window or none) per offer, the kW of each combination by LP."""
    usable = [o for o in offers if _usable(o, req)]
    worst = max((o.carbon_g_per_kwh for o in usable if o.carbon_g_per_kwh is not None), default=0.0)
    choices = []
    for o in usable:
        wins: list[tuple[int, int] | None] = [None]
        for a in range(o.first_slot, o.last_slot + 1):
            for b in range(a, o.last_slot + 1):
                if o.min_duration_slots <= b - a + 1 <= o.max_duration_slots:
                    wins.append((a, b))
        choices.append(wins)
    n_t = req.n_slots
    penalty = req.shortfall_penalty_gbp_per_mwh * SLOT_HOURS / 1000.0
    best = math.inf
    for combo in itertools.product(*choices):
        taken = [(o, w) for o, w in zip(usable, combo, strict=True) if w is not None]
        k = len(taken)
        cost = [_weight_per_mwh(o, req, worst) * (w[1] - w[0] + 1) * SLOT_HOURS / 1000.0 for o, w in taken]
        c = np.array(cost + [penalty] * n_t)
        a_ub = np.zeros((n_t + 1, k + n_t))  # −coverage − shortfall ≤ −target; token energy ≤ budget
        for j, (o, w) in enumerate(taken):
            a_ub[w[0] : w[1] + 1, j] = -o.reliability
            if isinstance(o.payment, TokenRedemption):
                a_ub[n_t, j] = (w[1] - w[0] + 1) * SLOT_HOURS / 1000.0
        a_ub[np.arange(n_t), k + np.arange(n_t)] = -1.0
        b_ub = np.concatenate([-np.array(req.target_kw), [req.token_budgets_mwh.get(SERIES, 0.0)]])
        bounds = [(o.min_kw, o.max_kw) for o, _ in taken] + [(0.0, None)] * n_t
        res = linprog(c, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs")
        if res.status == 0:
            best = min(best, float(res.fun))
    return best


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances(max_slots=4, max_offers=4))
def test_equal_to_brute_force(case: tuple[list[Offer], ProcurementRequest]) -> None:
    offers, req = case
    p = choose(offers, req)
    expected = brute_force(offers, req)
    assert p.status == "optimal"
    assert p.solver_objective_value == pytest.approx(expected, rel=1e-6, abs=1e-7)
    assert p.best_bound <= expected + 1e-6 * max(1.0, expected)


# -- properties ---------------------------------------------------------------------------------------


def check_portfolio(p: Portfolio, offers: Sequence[Offer], req: ProcurementRequest) -> None:
    """Every rule, recomputed here from the orders and the offers alone."""
    by_id = {o.offer_id: o for o in offers}
    ids = [o.offer_id for o in p.orders]
    assert len(ids) == len(set(ids)), "at most one order per offer"
    covered = np.zeros(req.n_slots)
    tokens = 0.0
    for order in p.orders:
        o = by_id[order.offer_id]
        assert _usable(o, req), f"{o.offer_id} should have been excluded"
        assert order.provider_id == o.provider_id
        assert o.first_slot <= order.first_slot <= order.last_slot <= o.last_slot
        assert o.min_duration_slots <= order.last_slot - order.first_slot + 1 <= o.max_duration_slots
        assert o.min_kw - 1e-9 <= order.power_kw <= o.max_kw + 1e-9
        covered[order.first_slot : order.last_slot + 1] += o.reliability * order.power_kw
        if isinstance(o.payment, TokenRedemption):
            tokens += order.power_kw * (order.last_slot - order.first_slot + 1) * SLOT_HOURS / 1000.0
    assert tokens <= req.token_budgets_mwh.get(SERIES, 0.0) + 1e-9
    assert np.allclose(p.covered_kw, covered, atol=1e-9)
    assert np.allclose(p.shortfall_kw, np.maximum(np.array(req.target_kw) - covered, 0.0), atol=1e-6)
    excluded = {oid for oid, _ in p.excluded}
    for o in offers:
        assert (o.offer_id in excluded) != _usable(o, req), o.offer_id


@settings(max_examples=100, deadline=None)
@given(instances(max_slots=8, max_offers=12))
def test_properties_on_random_instances(case: tuple[list[Offer], ProcurementRequest]) -> None:
    offers, req = case
    req = replace(req, mip_rel_gap=1e-6)
    p = choose(offers, req)
    check_portfolio(p, offers, req)
    assert len(p.reasons) == len(p.orders)
    assert p.mip_gap <= 1e-6 + 1e-12
    # the baselines: the same rules, never a better objective than the proven optimum
    for baseline in (in_merit_stack(offers, req), first_come_first_served(offers, req)):
        check_portfolio(baseline, offers, req)
        assert p.best_bound <= baseline.objective_value + 1e-6 * max(1.0, baseline.objective_value)


def test_rounded_orders_keep_coverage() -> None:
    """A need of 10 kW at reliability 0.3 asks 33.33… kW: ordered as 33.4 kW (up, within the maximum)."""
    offer = Offer("a", "p", 0, 0, 0.0, 50.0, 1, 1, 50.0, None, reliability=0.3)
    p = choose([offer], ProcurementRequest((10.0,)))
    assert [o.power_kw for o in p.orders] == [33.4]
    assert p.shortfall_kw == (0.0,)
    tight = replace(offer, max_kw=33.35)
    q = choose([tight], ProcurementRequest((10.0,)))
    assert [o.power_kw for o in q.orders] == [33.3]  # never above the maximum: a reported shortfall
    assert q.shortfall_kw[0] == pytest.approx(10.0 - 0.3 * 33.3)


# -- cases --------------------------------------------------------------------------------------------


def _offer(oid: str, provider: str, first: int, last: int, price: float, **kw: object) -> Offer:
    fields: dict[str, object] = {
        "min_kw": 0.0,
        "max_kw": 500.0,
        "min_duration_slots": 1,
        "max_duration_slots": 48,
        "carbon_g_per_kwh": None,
        **kw,
    }
    return Offer(oid, provider, first, last, price_gbp_per_mwh=price, **fields)  # type: ignore[arg-type]


def _chosen(p: Portfolio) -> set[str]:
    return {o.offer_id for o in p.orders}


def test_derating_a_cheaper_unreliable_provider_loses() -> None:
    flaky = _offer("flaky", "p-flaky", 0, 3, 50.0, reliability=0.5)  # £100 per derated MWh
    steady = _offer("steady", "p-steady", 0, 3, 80.0, reliability=1.0)
    req = ProcurementRequest((100.0,) * 4)
    assert _chosen(choose([flaky, steady], req)) == {"steady"}
    assert _chosen(choose([replace(flaky, reliability=1.0), steady], req)) == {"flaky"}
    # the merit stack sorts by price alone: it takes the flaky one, which it must double to cover
    merit = in_merit_stack([flaky, steady], req)
    assert "flaky" in _chosen(merit)
    assert merit.cost_gbp > choose([flaky, steady], req).cost_gbp


def _token_case(token_value: float, budget_mwh: float) -> Portfolio:
    spot = _offer("spot", "p1", 0, 1, 60.0)
    redeem = _offer("redeem", "p2", 0, 1, 200.0, payment=TokenRedemption(SERIES))
    req = ProcurementRequest(
        (100.0, 100.0),
        token_budgets_mwh={SERIES: budget_mwh},
        token_value_gbp_per_mwh={SERIES: token_value},
    )
    return choose([spot, redeem], req)


def test_tokens_redeemed_when_cheaper_than_spot() -> None:
    p = _token_case(40.0, 1.0)
    assert _chosen(p) == {"redeem"}
    assert p.tokens_redeemed_mwh[SERIES] == pytest.approx(0.1)
    assert p.cost_gbp == pytest.approx(0.1 * 40.0)


def test_spot_bought_when_tokens_are_worth_more() -> None:
    p = _token_case(80.0, 1.0)
    assert _chosen(p) == {"spot"}
    assert p.tokens_redeemed_mwh == {}


def test_token_budget_binds() -> None:
    p = _token_case(40.0, 0.06)  # 0.1 MWh wanted, 0.06 MWh of tokens held
    assert _chosen(p) == {"spot", "redeem"}
    assert p.tokens_redeemed_mwh[SERIES] <= 0.06 + 1e-12
    assert p.tokens_redeemed_mwh[SERIES] == pytest.approx(0.06, abs=1e-4)
    assert p.shortfall_kw == (0.0, 0.0)


def test_time_varying_target_takes_several_offers_of_one_provider() -> None:
    early = _offer("early", "p1", 0, 1, 50.0, max_kw=100.0)
    late = _offer("late", "p1", 2, 3, 50.0, max_kw=300.0)
    whole = _offer("whole", "p2", 0, 3, 70.0, max_kw=300.0)  # constant kW: would over-deliver early
    p = choose([early, late, whole], ProcurementRequest((100.0, 100.0, 300.0, 300.0)))
    assert _chosen(p) == {"early", "late"}
    assert {o.provider_id for o in p.orders} == {"p1"}
    assert p.shortfall_kw == (0.0,) * 4


def test_sub_window_and_durations() -> None:
    """Only slots 2–3 need cover: the offer is ordered for those, not its whole window — unless its minimum
    duration forces more."""
    offer = _offer("a", "p", 0, 5, 50.0, max_kw=100.0)
    target = (0.0, 0.0, 80.0, 80.0, 0.0, 0.0)
    (order,) = choose([offer], ProcurementRequest(target)).orders
    assert (order.first_slot, order.last_slot, order.power_kw) == (2, 3, 80.0)
    (order,) = choose([replace(offer, min_duration_slots=4)], ProcurementRequest(target)).orders
    assert order.last_slot - order.first_slot + 1 == 4 and order.first_slot <= 2 and order.last_slot >= 3


def test_shortfall_reported_not_infeasible() -> None:
    offer = _offer("a", "p", 0, 1, 50.0, max_kw=30.0)
    p = choose([offer], ProcurementRequest((50.0, 50.0)))
    assert p.status == "optimal"
    assert p.shortfall_kw == (20.0, 20.0)
    assert p.shortfall_mwh == pytest.approx(0.02)


def test_exclusions_carry_reasons() -> None:
    offers = [
        _offer("dear", "p", 0, 1, 500.0),
        _offer("outside", "p", 5, 7, 10.0),
        _offer("empty", "p", 0, 1, 10.0, max_kw=0.0),
        _offer("too-long", "p", 0, 1, 10.0, min_duration_slots=3),
        _offer("no-tokens", "p", 0, 1, 10.0, payment=TokenRedemption("other")),
        _offer("ok", "p", 0, 1, 10.0),
    ]
    p = choose(offers, ProcurementRequest((10.0, 10.0), price_cap_gbp_per_mwh=100.0))
    reasons = dict(p.excluded)
    assert set(reasons) == {"dear", "outside", "empty", "too-long", "no-tokens"}
    assert "above the cap" in reasons["dear"]
    assert "outside" in reasons["outside"]
    assert "duration impossible" in reasons["too-long"]
    assert _chosen(p) == {"ok"}
    assert "ok" in p.reasons[0] and "rank 1" in p.reasons[0]


def test_carbon_objective_prefers_low_carbon_and_counts_silence_as_worst() -> None:
    dirty = _offer("dirty", "p1", 0, 0, 20.0, carbon_g_per_kwh=300.0)
    clean = _offer("clean", "p2", 0, 0, 90.0, carbon_g_per_kwh=50.0)
    silent = _offer("silent", "p3", 0, 0, 10.0)
    req = ProcurementRequest((100.0,), objective=MinCarbon())
    assert _chosen(choose([dirty, clean, silent], req)) == {"clean"}
    assert _chosen(choose([dirty, silent], req)) <= {"dirty", "silent"}
    assert choose([silent, dirty], req).carbon_kg == pytest.approx(300.0 * 0.05)
    assert _chosen(choose([dirty, clean, silent], ProcurementRequest((100.0,)))) == {"silent"}


def test_alternatives_of_one_item_are_ordered_once_at_most() -> None:
    """Spot and tokens are two ways to pay for the same item: the BAP holds one open order per item, so the
    choice takes one of them even where taking both would cover more (the rest is a reported shortfall)."""
    spot = _offer("item|spot", "p1", 0, 1, 60.0, max_kw=100.0, item_key="item")
    redeem = _offer("item|cft", "p1", 0, 1, 60.0, max_kw=100.0, item_key="item", payment=TokenRedemption(SERIES))
    req = ProcurementRequest(
        target_kw=(150.0, 150.0), token_budgets_mwh={SERIES: 1.0}, token_value_gbp_per_mwh={SERIES: 10.0}
    )
    for portfolio in (choose([spot, redeem], req), in_merit_stack([spot, redeem], req)):
        assert len(portfolio.orders) == 1
        assert portfolio.shortfall_kw == pytest.approx((50.0, 50.0))
    assert _chosen(choose([spot, redeem], req)) == {"item|cft"}  # the cheaper way to pay


# -- the dive and the certificate of _solve_exactly ----------------------------------------------------


def _model(offers: Sequence[Offer], req: ProcurementRequest) -> pc._Model:
    pool, _ = pc.screen(offers, req)
    return pc._model_of(pool, pc._Candidates.of(pool), req)


def _feasible(model: pc._Model, x: np.ndarray) -> bool:
    """x within its column bounds, binaries integral, every row within its bounds (to 1e-6)."""
    m, tol = model.n_binary, 1e-6
    row = model.a @ x
    return bool(
        np.all(x >= model.col_lo - tol)
        and np.all(x <= model.col_hi + tol)
        and np.all(np.abs(x[:m] - np.rint(x[:m])) <= 1e-9)
        and np.all(row >= model.row_lo - tol * np.maximum(1.0, np.abs(model.row_lo)))
        and np.all(row <= model.row_hi + tol * np.maximum(1.0, np.abs(model.row_hi)))
    )


def _root(model: pc._Model) -> tuple[pc._CornerLp, pc._Node]:
    """The corner form's LP and its root node, solved."""
    lp = pc._CornerLp(pc._Corners.of(model), t_end=time.perf_counter() + 10.0)
    none = np.zeros(0, dtype=np.intp)
    root = pc._Node(-math.inf, 0, none, none, None)
    r = lp.solve(root)
    assert r.status == "optimal" and r.x is not None
    return lp, replace(root, bound=r.objective, x=r.x, basis=r.basis)


@settings(max_examples=100, deadline=None)
@given(instances(max_slots=8, max_offers=12))
def test_corner_form_has_the_same_lp_relaxation(case: tuple[list[Offer], ProcurementRequest]) -> None:
    """The search bounds with the corner form's LP: it must be the MILP's own relaxation (HiGHS on _Model's
    columns, integrality dropped), neither weaker nor, which would be wrong, stronger."""
    offers, req = case
    model = _model(offers, req)
    relaxed = pc._highs(model, integer=False, time_limit_s=10.0, mip_rel_gap=1e-9)
    assert relaxed.status == "optimal"
    _, root = _root(model)
    assert root.bound == pytest.approx(relaxed.objective, rel=1e-7, abs=1e-7)


@settings(max_examples=100, deadline=None)
@given(instances(max_slots=8, max_offers=12))
def test_dive_finds_a_feasible_point_no_better_than_the_lp(case: tuple[list[Offer], ProcurementRequest]) -> None:
    offers, req = case
    model = _model(offers, req)
    lp, root = _root(model)
    x = pc._dive(lp, root, model)
    assert x is not None and _feasible(model, x)
    assert float(model.cost @ x) >= root.bound - 1e-7 * max(1.0, abs(root.bound))


def test_dive_settles_an_offer_the_lp_splits() -> None:
    """1 kW wanted in slot 0 and 1 kW in slot 1: the LP splits offer a (min 2 kW, one slot) half and half
    between its two windows; the dive must settle a on one window and leave the other slot to b."""
    offers = [
        _offer("a", "p", 0, 1, 10.0, min_kw=2.0, max_kw=2.0, max_duration_slots=1),
        _offer("b", "q", 0, 1, 500.0, max_kw=5.0, max_duration_slots=1),
    ]
    req = ProcurementRequest((1.0, 1.0))
    model = _model(offers, req)
    lp, root = _root(model)
    assert root.x is not None
    items, _ = lp.corners.fractional(root.x)
    assert 0 in items.tolist(), "the LP should split offer a"
    x = pc._dive(lp, root, model)
    assert x is not None and _feasible(model, x)
    z = np.rint(x[: model.n_binary])
    assert z[model.offer_index == 0].sum() == 1  # a, on one of its windows
    assert float(model.cost @ x) > root.bound
    assert choose(offers, req).solver_objective_value == pytest.approx(float(model.cost @ x))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances(max_slots=4, max_offers=4))
def test_within_production_gap_of_brute_force(case: tuple[list[Offer], ProcurementRequest]) -> None:
    """At production's gap (1e-3) the objective is within it of the optimum and the bound is a true bound."""
    offers, req = case
    req = replace(req, mip_rel_gap=1e-3)
    p = choose(offers, req)
    expected = brute_force(offers, req)
    tol = 1e-6 * max(1.0, abs(expected))
    assert p.status == "optimal"
    assert expected - tol <= p.solver_objective_value <= expected + 1e-3 * abs(p.solver_objective_value) + tol
    assert p.best_bound <= expected + tol
    assert p.mip_gap <= 1e-3 + 1e-12


def test_bench_instance_within_gap_of_highs_alone() -> None:
    """A seeded 150-offer instance of the benchmark: our objective within 0.1 % of HiGHS's own optimum of the
    whole MILP (solved alone to 1e-6), and our bound no higher than that optimum."""
    from bench.procurement import evening_prices, instance

    offers, req = instance(150, evening_prices()[0])
    req = replace(req, mip_rel_gap=1e-3)
    p = choose(offers, req)
    model = _model(offers, req)
    alone = pc._highs(model, integer=True, time_limit_s=60.0, mip_rel_gap=1e-6)
    assert alone.status == "optimal"
    assert p.status == "optimal" and p.mip_gap <= 1e-3
    assert alone.objective - 1e-6 * alone.objective <= p.solver_objective_value <= alone.objective * (1 + 1e-3)
    assert p.best_bound <= alone.objective * (1 + 1e-6)


def test_dive_backs_off_when_a_fixing_overdraws_the_token_budget() -> None:
    """Token offer t (min = max 4 kW, one slot) is cheap but the budget holds 2 kW for one slot: the LP takes
    half of t; fixing t whole overdraws the budget (an infeasible LP), so the dive orders t not at all."""
    offers = [
        _offer("t", "p", 0, 0, 0.0, min_kw=4.0, max_kw=4.0, payment=TokenRedemption(SERIES)),
        _offer("s", "q", 0, 0, 200.0, max_kw=10.0),
    ]
    req = ProcurementRequest(
        (4.0,), token_budgets_mwh={SERIES: 0.001}, token_value_gbp_per_mwh={SERIES: 10.0}, mip_rel_gap=1e-3
    )
    model = _model(offers, req)
    lp, root = _root(model)
    assert root.x is not None
    on, _ = lp.corners.use(root.x)
    assert 0.4 < on[0] < 0.6  # t's only candidate comes first
    x = pc._dive(lp, root, model)
    assert x is not None and _feasible(model, x)
    assert x[0] == 0.0
    p = choose(offers, req)
    assert _chosen(p) == {"s"} and p.shortfall_mwh == 0.0
