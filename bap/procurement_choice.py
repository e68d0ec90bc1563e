"""Choosing a procurement's orders from the offers collected (pure; HiGHS via highspy).

A procurement wants ``target_kw[t]`` of load reduction in every half-hour slot ``t`` (0..n_slots-1). Each
offer may be ordered at most once, for ONE contiguous sub-window of its window whose length lies within
its minimum and maximum duration, at ONE constant kW within its minimum and maximum. A provider's delivery
record derates its offers: an order of ``p`` kW counts ``reliability × p`` towards coverage. Offers paid
with Compute Flex Tokens (:class:`TokenRedemption`, 1 token = 1 MWh) cost the policy's token value per MWh
and the energy redeemed per series stays within the tokens held. What cannot be covered is a shortfall,
priced at ``shortfall_penalty_gbp_per_mwh`` and reported — never an infeasible model.

Formulation (the disjunctive hull of each offer's choice, so each offer's relaxation is exact): for every
offer ``i`` and every admissible sub-window ``w`` a binary ``z_iw`` and the kW above the minimum
``e_iw ≤ (max_kw − min_kw)·z_iw`` (the order's kW is ``min_kw·z_iw + e_iw``), ``Σ_w z_iw ≤ 1``; a shortfall
``s_t ≥ 0`` per slot with ``Σ_{(i,w) ∋ t} reliability_i·kW_iw + s_t ≥ target_kw[t]``; per token series
``Σ energy_mwh ≤ budget``. Minimise Σ objective per MWh × energy + penalty × shortfall energy. With 8 slots
an offer has at most 36 sub-windows. Solved exactly (to ``mip_rel_gap``) by :func:`_solve_exactly`: LP
relaxation, a dive from it for a first solution (often already within the gap of the LP bound), reduced-cost
fixing, then HiGHS on what is left.

Orders are sized in 0.1 kW steps (up where the offer's maximum allows, so coverage is kept); coverage,
shortfall, cost and carbon are recomputed from the rounded orders (:func:`account`), which the baselines in
:mod:`bap.procurement_baselines` share so that costs compare.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeAlias

import highspy
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

FloatArray: TypeAlias = npt.NDArray[np.float64]

SLOT_HOURS = 0.5
KW_STEP = 0.1
TOL_KW = 1e-6
TOL_MWH = 1e-9


# -- input --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spot:
    """Paid in money at the offer's price."""


@dataclass(frozen=True)
class TokenRedemption:
    """Paid with Compute Flex Tokens of ``series_id`` (1 token = 1 MWh), valued at the policy's token value."""

    series_id: str


Payment: TypeAlias = Spot | TokenRedemption


@dataclass(frozen=True)
class Offer:
    offer_id: str
    provider_id: str
    first_slot: int  # inclusive, the offer's window clipped to the procurement
    last_slot: int  # inclusive
    min_kw: float
    max_kw: float
    min_duration_slots: int
    max_duration_slots: int
    price_gbp_per_mwh: float
    carbon_g_per_kwh: float | None
    reliability: float = 1.0  # delivered ÷ contracted on record, in (0, 1]
    payment: Payment = Spot()
    # Another way to pay for the same item (e.g. with tokens instead of money): offers sharing this key are
    # alternatives, at most one of them is ordered. None: the offer is its own.
    item_key: str | None = None

    @property
    def group(self) -> str:
        return self.item_key or self.offer_id


@dataclass(frozen=True)
class MinCost:
    pass


@dataclass(frozen=True)
class MinCarbon:
    pass


@dataclass(frozen=True)
class CostPlusCarbon:
    gbp_per_tco2: float


Objective: TypeAlias = MinCost | MinCarbon | CostPlusCarbon


@dataclass(frozen=True)
class ProcurementRequest:
    """What to buy. The price cap applies to what an offer costs per MWh: its price when paid spot, the
    token value of its series when paid with tokens. Under :class:`MinCarbon` the shortfall penalty is read
    in the objective's unit (kg CO2 per MWh); the default dwarfs any real offer either way."""

    target_kw: tuple[float, ...]
    objective: Objective = MinCost()
    price_cap_gbp_per_mwh: float | None = None
    token_budgets_mwh: Mapping[str, float] = field(default_factory=dict)
    token_value_gbp_per_mwh: Mapping[str, float] = field(default_factory=dict)
    shortfall_penalty_gbp_per_mwh: float = 1e5
    mip_rel_gap: float = 1e-4
    time_limit_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.target_kw:
            raise ValueError("target_kw needs at least one slot")
        if any(not math.isfinite(t) or t < 0 for t in self.target_kw):
            raise ValueError("every target_kw must be finite and ≥ 0")
        if self.shortfall_penalty_gbp_per_mwh <= 0:
            raise ValueError("shortfall_penalty_gbp_per_mwh must be positive")

    @property
    def n_slots(self) -> int:
        return len(self.target_kw)


# -- output -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChosenOrder:
    offer_id: str
    provider_id: str
    first_slot: int
    last_slot: int  # inclusive
    power_kw: float

    @property
    def n_slots(self) -> int:
        return self.last_slot - self.first_slot + 1

    @property
    def energy_mwh(self) -> float:
        return self.power_kw * self.n_slots * SLOT_HOURS / 1000.0


@dataclass(frozen=True)
class Portfolio:
    orders: tuple[ChosenOrder, ...]
    covered_kw: tuple[float, ...]  # Σ reliability × kW per slot, from the rounded orders
    shortfall_kw: tuple[float, ...]  # max(target − covered, 0) per slot
    cost_gbp: float  # spot money plus tokens redeemed at the policy's token value
    carbon_kg: float  # energy × carbon intensity (unstated intensities counted at the worst stated one)
    tokens_redeemed_mwh: Mapping[str, float]
    objective_value: float  # of the rounded orders, shortfall penalty included
    solver_objective_value: float  # HiGHS's, before rounding to 0.1 kW (the baselines: nan)
    best_bound: float  # HiGHS's proven lower bound (the baselines: nan)
    mip_gap: float  # HiGHS's relative gap (the baselines: nan)
    status: str  # "optimal", "time_limit", "no_solution: …", or a baseline's name
    excluded: tuple[tuple[str, str], ...]  # (offer_id, reason)
    reasons: tuple[str, ...]  # one sentence per order, in the order of ``orders``

    @property
    def shortfall_mwh(self) -> float:
        return sum(self.shortfall_kw) * SLOT_HOURS / 1000.0


# -- screening ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Eligible:
    """An offer that may be ordered, with its window clipped and its per-MWh figures resolved."""

    offer: Offer
    first_slot: int
    last_slot: int
    unit_cost_gbp_per_mwh: float
    carbon_g_per_kwh: float  # an unstated intensity is the worst stated one
    objective_per_mwh: float

    def windows(self) -> list[tuple[int, int]]:
        """Every admissible (first, last) sub-window, inclusive."""
        o = self.offer
        lo, hi = max(o.min_duration_slots, 1), min(o.max_duration_slots, self.last_slot - self.first_slot + 1)
        return [(a, a + d - 1) for d in range(lo, hi + 1) for a in range(self.first_slot, self.last_slot - d + 2)]


def _unit_cost(offer: Offer, request: ProcurementRequest) -> tuple[float | None, str]:
    """The offer's cost per MWh, or None with the reason it cannot be paid."""
    match offer.payment:
        case Spot():
            return offer.price_gbp_per_mwh, "price"
        case TokenRedemption(series_id=series):
            if request.token_budgets_mwh.get(series, 0.0) <= 0:
                return None, f"no tokens of series {series} held"
            value = request.token_value_gbp_per_mwh.get(series)
            if value is None:
                return None, f"no token value for series {series} in the policy"
            return value, f"token value of series {series}"


def _exclusion(offer: Offer, request: ProcurementRequest, seen: set[str]) -> str | None:
    """Why ``offer`` cannot be ordered at all, or None."""
    first, last = max(offer.first_slot, 0), min(offer.last_slot, request.n_slots - 1)
    if offer.offer_id in seen:
        return "duplicate offer id"
    if first > last:
        return "window outside the procurement"
    if not offer.max_kw > 0:
        return "max_kw ≤ 0"
    if not 0 <= offer.min_kw <= offer.max_kw:
        return f"min_kw {offer.min_kw:g} outside [0, max_kw {offer.max_kw:g}]"
    if not 0 < offer.reliability <= 1:
        return f"reliability {offer.reliability:g} outside (0, 1]: nothing delivered on record"
    if max(offer.min_duration_slots, 1) > min(offer.max_duration_slots, last - first + 1):
        return (
            f"duration impossible in window: {offer.min_duration_slots}–{offer.max_duration_slots} slots "
            f"wanted, {last - first + 1} in the procurement"
        )
    unit, what = _unit_cost(offer, request)
    if unit is None:
        return what
    cap = request.price_cap_gbp_per_mwh
    if cap is not None and unit > cap:
        return f"{what} £{unit:g}/MWh above the cap £{cap:g}/MWh"
    return None


def objective_per_mwh(objective: Objective, unit_cost_gbp_per_mwh: float, carbon_g_per_kwh: float) -> float:
    """The objective's weight of one contracted MWh (g/kWh = kg/MWh)."""
    match objective:
        case MinCost():
            return unit_cost_gbp_per_mwh
        case MinCarbon():
            return carbon_g_per_kwh
        case CostPlusCarbon(gbp_per_tco2=lam):
            return unit_cost_gbp_per_mwh + lam * carbon_g_per_kwh / 1000.0


def screen(offers: Sequence[Offer], request: ProcurementRequest) -> tuple[list[Eligible], list[tuple[str, str]]]:
    """The offers that may be ordered, and (offer_id, reason) for every other one."""
    kept: list[Offer] = []
    excluded: list[tuple[str, str]] = []
    seen: set[str] = set()
    for o in offers:
        reason = _exclusion(o, request, seen)
        seen.add(o.offer_id)
        if reason is None:
            kept.append(o)
        else:
            excluded.append((o.offer_id, reason))
    stated = [o.carbon_g_per_kwh for o in kept if o.carbon_g_per_kwh is not None]
    worst = max(stated, default=0.0)  # no reward for silence
    out = []
    for o in kept:
        unit, _ = _unit_cost(o, request)
        assert unit is not None
        carbon = worst if o.carbon_g_per_kwh is None else o.carbon_g_per_kwh
        first, last = max(o.first_slot, 0), min(o.last_slot, request.n_slots - 1)
        out.append(Eligible(o, first, last, unit, carbon, objective_per_mwh(request.objective, unit, carbon)))
    return out, excluded


# -- the MILP -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Candidates:
    """One row per (offer, sub-window): the columns z (binary) and p (kW) of the model."""

    offer_index: npt.NDArray[np.int64]
    first: npt.NDArray[np.int64]
    last: npt.NDArray[np.int64]

    @classmethod
    def of(cls, pool: Sequence[Eligible]) -> _Candidates:
        idx, first, last = [], [], []
        for i, e in enumerate(pool):
            for a, b in e.windows():
                idx.append(i)
                first.append(a)
                last.append(b)
        return cls(np.array(idx, dtype=np.int64), np.array(first, dtype=np.int64), np.array(last, dtype=np.int64))

    @property
    def size(self) -> int:
        return len(self.offer_index)


@dataclass(frozen=True)
class _Solved:
    status: str
    power_kw: FloatArray | None  # per candidate
    objective: float
    best_bound: float
    mip_gap: float


def _series_of(pool: Sequence[Eligible]) -> list[str]:
    names = {e.offer.payment.series_id for e in pool if isinstance(e.offer.payment, TokenRedemption)}
    return sorted(names)


def _solve_milp(pool: Sequence[Eligible], cand: _Candidates, request: ProcurementRequest) -> _Solved:
    return _solve_exactly(_model_of(pool, cand, request), request)


def _model_of(pool: Sequence[Eligible], cand: _Candidates, request: ProcurementRequest) -> _Model:
    """The MILP of the module doc as HiGHS's arrays."""
    n, m, n_t = len(pool), cand.size, request.n_slots
    offer = cand.offer_index
    length = cand.last - cand.first + 1
    mwh_per_kw: FloatArray = length.astype(np.float64) * (SLOT_HOURS / 1000.0)
    lo = np.array([e.offer.min_kw for e in pool])[offer]
    hi = np.array([e.offer.max_kw for e in pool])[offer]
    rel = np.array([e.offer.reliability for e in pool])[offer]
    weight = np.array([e.objective_per_mwh for e in pool])[offer]
    series = _series_of(pool)
    series_row = {s: k for k, s in enumerate(series)}
    # p = lo·z + e. Columns: z (m), e (m) in [0, hi − lo], s (n_t). Rows: Σz ≤ 1 per offer (n),
    # e − (hi − lo)·z ≤ 0 (m), coverage Σ rel·(lo·z + e) + s ≥ target (n_t), token energy ≤ budget.
    z_col, e_col, s_col = np.arange(m), m + np.arange(m), 2 * m + np.arange(n_t)
    group_index: dict[str, int] = {}
    for e in pool:  # one Σz ≤ 1 row per item: alternatives of one item share it (rows left empty are harmless)
        group_index.setdefault(e.offer.group, len(group_index))
    r_one = np.array([group_index[e.offer.group] for e in pool], dtype=np.int64)
    r_link = n + np.arange(m)
    r_cov, r_tok = n + m + np.arange(n_t), n + m + n_t
    rows: list[npt.NDArray[np.int64]] = [r_one[offer], r_link, r_link]
    cols: list[npt.NDArray[np.int64]] = [z_col, e_col, z_col]
    vals: list[FloatArray] = [np.ones(m), np.ones(m), -(hi - lo)]
    slot_of, cand_of = _slot_cover(cand)
    rows += [r_cov[slot_of], r_cov[slot_of], r_cov]
    cols += [e_col[cand_of], z_col[cand_of], s_col]
    vals += [rel[cand_of], (rel * lo)[cand_of], np.ones(n_t)]
    tok = [(j, series_row[name]) for j, name in _token_candidates(pool, offer)]
    if tok:
        j_arr = np.array([j for j, _ in tok], dtype=np.int64)
        k_arr = r_tok + np.array([k for _, k in tok], dtype=np.int64)
        rows += [k_arr, k_arr]
        cols += [e_col[j_arr], z_col[j_arr]]
        vals += [mwh_per_kw[j_arr], (mwh_per_kw * lo)[j_arr]]
    n_rows = n + m + n_t + len(series)
    a = sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_rows, 2 * m + n_t))
    inf = highspy.kHighsInf
    per_kw = weight * mwh_per_kw
    cost = np.concatenate([per_kw * lo, per_kw, np.full(n_t, penalty_per_kw_slot(request))])
    col_lo = np.zeros(2 * m + n_t)
    col_hi = np.concatenate([np.ones(m), hi - lo, np.full(n_t, inf)])
    row_lo = np.concatenate([np.full(n + m, -inf), np.asarray(request.target_kw, dtype=float)])
    row_hi = np.concatenate([np.ones(n), np.zeros(m), np.full(n_t, inf)])
    row_lo = np.concatenate([row_lo, np.full(len(series), -inf)])
    row_hi = np.concatenate([row_hi, [request.token_budgets_mwh[s] for s in series]])
    a.sum_duplicates()
    a.sort_indices()
    return _Model(a, cost, col_lo, col_hi, row_lo, row_hi, m, lo, offer, n, r_one[offer])


def _slot_cover(cand: _Candidates) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(slot, candidate) pairs: every slot each candidate's sub-window covers."""
    length = cand.last - cand.first + 1
    cand_of = np.repeat(np.arange(cand.size), length)
    offset = np.arange(len(cand_of)) - np.repeat(np.cumsum(length) - length, length)
    return cand.first[cand_of] + offset, cand_of


def _token_candidates(pool: Sequence[Eligible], offer: npt.NDArray[np.int64]) -> list[tuple[int, str]]:
    """(candidate, token series) for every candidate paid with tokens."""
    out = []
    for j, i in enumerate(offer.tolist()):
        pay = pool[i].offer.payment
        if isinstance(pay, TokenRedemption):
            out.append((j, pay.series_id))
    return out


def penalty_per_kw_slot(request: ProcurementRequest) -> float:
    return request.shortfall_penalty_gbp_per_mwh * SLOT_HOURS / 1000.0


@dataclass(frozen=True)
class _Model:
    """The MILP as HiGHS's arrays; the first ``n_binary`` columns are the binaries z."""

    a: sp.csc_matrix
    cost: FloatArray
    col_lo: FloatArray
    col_hi: FloatArray
    row_lo: FloatArray
    row_hi: FloatArray
    n_binary: int
    min_kw: FloatArray  # per candidate
    offer_index: npt.NDArray[np.int64]  # per candidate
    n_offers: int
    group_index: npt.NDArray[np.int64]  # per candidate: its item's Σz ≤ 1 row (alternatives share it)


@dataclass(frozen=True)
class _Run:
    status: str
    x: FloatArray | None
    objective: float
    bound: float
    reduced_cost: FloatArray | None  # LPs solved to optimality only


def _loaded(
    model: _Model,
    *,
    integer: bool,
    time_limit_s: float,
    mip_rel_gap: float,
    bounds: tuple[FloatArray, FloatArray] | None,
) -> highspy.Highs:
    """A HiGHS instance holding the MILP (``integer``) or its LP relaxation, with the given column bounds."""
    col_lo, col_hi = bounds if bounds is not None else (model.col_lo, model.col_hi)
    h = highspy.Highs()  # type: ignore[no-untyped-call]  # highspy leaves its __init__ unannotated
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)
    h.setOptionValue("time_limit", max(time_limit_s, 0.01))
    h.setOptionValue("mip_rel_gap", mip_rel_gap)
    h.setOptionValue("mip_abs_gap", 1e-9)  # the relative gap governs
    integrality = np.zeros(len(model.cost), dtype=np.int32)
    integrality[: model.n_binary] = 1 if integer else 0
    a = model.a
    h.passModel(
        a.shape[1],
        a.shape[0],
        int(a.nnz),
        int(highspy.MatrixFormat.kColwise),
        int(highspy.ObjSense.kMinimize),
        0.0,
        model.cost,
        col_lo,
        col_hi,
        model.row_lo,
        model.row_hi,
        a.indptr.astype(np.int32),
        a.indices.astype(np.int32),
        a.data.astype(float),
        integrality,
    )
    return h


def _result(h: highspy.Highs, *, integer: bool) -> _Run:
    """What the last ``h.run()`` found."""
    ms, info, sol = h.getModelStatus(), h.getInfo(), h.getSolution()
    status = "optimal" if ms == highspy.HighsModelStatus.kOptimal else h.modelStatusToString(ms).lower()
    if info.primal_solution_status != highspy.SolutionStatus.kSolutionStatusFeasible:
        return _Run(f"no_solution: {status}", None, math.nan, math.nan, None)
    objective = float(info.objective_function_value)
    bound = float(info.mip_dual_bound) if integer else objective
    rc = np.array(sol.col_dual) if not integer and status == "optimal" and sol.dual_valid else None
    return _Run(status, np.array(sol.col_value), objective, bound, rc)


def _highs(
    model: _Model,
    *,
    integer: bool,
    time_limit_s: float,
    mip_rel_gap: float,
    bounds: tuple[FloatArray, FloatArray] | None = None,
    start: FloatArray | None = None,
) -> _Run:
    """One HiGHS run: the MILP (``integer``) or its LP relaxation, with the given column bounds and start."""
    h = _loaded(model, integer=integer, time_limit_s=time_limit_s, mip_rel_gap=mip_rel_gap, bounds=bounds)
    if start is not None:
        given = highspy.HighsSolution()
        given.col_value = start.tolist()
        h.setSolution(given)
    h.run()
    return _result(h, integer=integer)


#: HiGHS's dual feasibility tolerance, allowed for when a reduced cost excludes a column
RC_TOL = 1e-7


def _tightened(model: _Model, lp: _Run, delta: float) -> _Model:
    """The model restricted to the solutions of value ≤ ``z_LP + delta``.

    A candidate j at 0 in the LP, with reduced costs ``d_z`` (its binary) and ``d_e`` (its kW above the
    minimum), costs at least ``z_LP + d_z·z + d_e·e``: when ``d_z > delta`` it is out, else ``e`` is capped
    at ``(delta − d_z) / d_e``, in its bound and in its row ``e ≤ cap·z`` (which tightens the relaxation)."""
    assert lp.x is not None and lp.reduced_cost is not None
    m = model.n_binary
    d_z, d_e = lp.reduced_cost[:m], lp.reduced_cost[m : 2 * m]
    at_zero = (lp.x[:m] <= 1e-9) & (lp.x[m : 2 * m] <= 1e-9)
    room = delta + RC_TOL - np.maximum(d_z, 0.0)
    e_hi = model.col_hi[m : 2 * m]
    cap = np.where(d_e > RC_TOL, np.maximum(room, 0.0) / np.maximum(d_e, RC_TOL), e_hi)
    cap = np.where(at_zero, np.minimum(cap, e_hi), e_hi)
    col_hi = model.col_hi.copy()
    col_hi[m : 2 * m] = cap
    col_hi[:m] = np.where(at_zero & (room < 0), 0.0, col_hi[:m])
    a = model.a.copy()
    # a z column holds its offer's Σz row first, then its e − (hi − lo)·z row (row n_offers + j), then the rest
    pos = a.indptr[:m] + 1
    assert np.array_equal(a.indices[pos], model.n_offers + np.arange(m))
    a.data[pos] = -cap
    return replace(model, a=a, col_hi=col_hi)


def _solve_exactly(model: _Model, request: ProcurementRequest) -> _Solved:
    """The MILP to ``request.mip_rel_gap``, via its (tight) LP relaxation and reduced-cost fixing.

    1. The LP relaxation gives the bound ``z_LP`` and reduced costs; integral → optimal.
    2. Diving from the LP (:func:`_dive`, in the same HiGHS instance, warm) gives a solution ``UB_h``;
       within the gap of ``z_LP`` → done, certified by the LP bound alone.
    3. Else every solution better than ``UB_h`` lies in the model :func:`_tightened` derives for
       ``δ = UB_h − z_LP``; HiGHS solves that from ``UB_h``, and its optimum is the global one (its bound,
       capped at ``UB_h`` and never below ``z_LP``, is global too).
    Without an optimal LP (time limit, numerical trouble) or a dive's solution, HiGHS gets the whole MILP."""
    t_end = time.perf_counter() + request.time_limit_s
    m, gap = model.n_binary, request.mip_rel_gap
    h = _loaded(model, integer=False, time_limit_s=request.time_limit_s, mip_rel_gap=gap, bounds=None)
    h.run()
    lp = _result(h, integer=False)
    if lp.x is None or lp.reduced_cost is None:
        return _whole(model, gap=gap, t_end=t_end)
    if np.all(np.abs(lp.x[:m] - np.rint(lp.x[:m])) <= 1e-9):
        return _solved(lp, model, lp.objective)
    heuristic = _dive(h, model, lp, t_end=t_end)
    if heuristic.x is None:
        return _whole(model, gap=gap, t_end=t_end)
    if heuristic.objective - lp.objective <= gap * max(abs(heuristic.objective), 1e-12):
        return _solved(heuristic, model, lp.objective)
    r = _highs(
        _tightened(model, lp, heuristic.objective - lp.objective),
        integer=True,
        time_limit_s=t_end - time.perf_counter(),
        mip_rel_gap=gap,
        start=heuristic.x,
    )
    # Every solution below UB_h is in the restricted model, so min(its bound, UB_h) bounds the whole MILP.
    bound = max(lp.objective, min(r.bound, heuristic.objective)) if math.isfinite(r.bound) else lp.objective
    if r.x is None or r.objective > heuristic.objective:
        return _solved(_Run(r.status, heuristic.x, heuristic.objective, bound, None), model, bound)
    return _solved(r, model, bound)


def _whole(model: _Model, *, gap: float, t_end: float) -> _Solved:
    full = _highs(model, integer=True, time_limit_s=t_end - time.perf_counter(), mip_rel_gap=gap)
    return _solved(full, model, full.bound)


def _dive(h: highspy.Highs, model: _Model, lp: _Run, *, t_end: float) -> _Run:
    """A feasible point near the LP optimum, by diving. Every item the LP splits (some z strictly between 0
    and 1) is fixed to its candidate of largest z (that z to 1, the item's other candidates to 0), and the LP
    is solved again (``h`` holds it: a warm start) until no z is fractional. When those fixings leave no
    feasible LP (a token budget below the minima fixed), the round fixes the same items to nothing instead,
    which is always feasible (the shortfall takes up coverage). Each round settles at least one item for
    good, so there are at most as many rounds as items; the kW above the minima stay free, so the point is
    the best one for the windows it fixes. None (``x``) when the time runs out or an LP fails."""
    assert lp.x is not None
    m, group = model.n_binary, model.group_index
    z_lo, z_hi = model.col_lo[:m].copy(), model.col_hi[:m].copy()
    every_z = np.arange(m, dtype=np.int32)
    run = lp
    while run.x is not None and time.perf_counter() < t_end:
        z = run.x[:m]
        split = (z > 1e-9) & (z < 1.0 - 1e-9)
        if not split.any():
            return run
        in_play = np.flatnonzero(np.isin(group, group[split]))
        by_group = in_play[np.lexsort((-z[in_play], group[in_play]))]
        best = by_group[np.r_[True, group[by_group][1:] != group[by_group][:-1]]]
        z_hi[in_play] = 0.0
        z_lo[best] = z_hi[best] = 1.0
        run = _resolve(h, z_lo, z_hi, every_z, t_end)
        if run.status.endswith("infeasible"):
            z_lo[best] = z_hi[best] = 0.0
            run = _resolve(h, z_lo, z_hi, every_z, t_end)
        if run.status != "optimal":
            break
    return _Run("no_solution: dive", None, math.nan, math.nan, None)


def _resolve(
    h: highspy.Highs, z_lo: FloatArray, z_hi: FloatArray, every_z: npt.NDArray[np.int32], t_end: float
) -> _Run:
    h.changeColsBounds(len(every_z), every_z, z_lo, z_hi)
    h.setOptionValue("time_limit", max(t_end - time.perf_counter(), 0.01))
    h.run()
    ms = h.getModelStatus()
    if ms in (highspy.HighsModelStatus.kInfeasible, highspy.HighsModelStatus.kUnboundedOrInfeasible):
        return _Run("infeasible", None, math.nan, math.nan, None)
    return _result(h, integer=False)


def _solved(run: _Run, model: _Model, bound: float) -> _Solved:
    if run.x is None:
        return _Solved(run.status, None, math.nan, math.nan, math.nan)
    m = model.n_binary
    z = np.rint(run.x[:m])
    p = model.min_kw * z + run.x[m : 2 * m]
    gap = max(run.objective - bound, 0.0) / max(abs(run.objective), 1e-12)
    return _Solved(run.status, np.where(z > 0.5, p, 0.0), run.objective, bound, gap)


# -- rounding, accounting, reasons, invariants --------------------------------------------------------


def round_kw(power_kw: float, min_kw: float, max_kw: float, *, up: bool = True) -> float:
    """``power_kw`` in 0.1 kW steps, never outside [min_kw, max_kw]: up (keeping coverage) where the maximum
    allows, else down; with ``up=False`` down where the minimum allows. A range narrower than one step keeps
    the exact value."""
    ceil = round(math.ceil(power_kw / KW_STEP - 1e-7) * KW_STEP, 1)
    floor = round(math.floor(power_kw / KW_STEP + 1e-7) * KW_STEP, 1)
    for v in (ceil, floor) if up else (floor,):
        if min_kw - TOL_KW <= v <= max_kw + TOL_KW:
            return v
    return power_kw


def account(
    orders: Sequence[ChosenOrder], pool: Sequence[Eligible], request: ProcurementRequest
) -> tuple[tuple[float, ...], tuple[float, ...], float, float, dict[str, float], float]:
    """Coverage, shortfall, cost (£), carbon (kg), tokens redeemed per series and objective of ``orders``."""
    by_id = {e.offer.offer_id: e for e in pool}
    covered = np.zeros(request.n_slots)
    cost = carbon = weighted = 0.0
    tokens: dict[str, float] = {}
    for o in orders:
        e = by_id[o.offer_id]
        covered[o.first_slot : o.last_slot + 1] += e.offer.reliability * o.power_kw
        cost += e.unit_cost_gbp_per_mwh * o.energy_mwh
        carbon += e.carbon_g_per_kwh * o.energy_mwh
        weighted += e.objective_per_mwh * o.energy_mwh
        if isinstance(e.offer.payment, TokenRedemption):
            tokens[e.offer.payment.series_id] = tokens.get(e.offer.payment.series_id, 0.0) + o.energy_mwh
    target = np.asarray(request.target_kw, dtype=float)
    shortfall = np.maximum(target - covered, 0.0)
    shortfall = np.where(shortfall < TOL_KW, 0.0, shortfall)
    objective = weighted + penalty_per_kw_slot(request) * float(shortfall.sum())
    return tuple(covered.tolist()), tuple(shortfall.tolist()), cost, carbon, tokens, objective


def check_invariants(portfolio: Portfolio, pool: Sequence[Eligible], request: ProcurementRequest) -> None:
    """Every order respects its offer; at most one per offer; coverage and shortfall add up; budgets hold."""
    by_id = {e.offer.offer_id: e for e in pool}
    groups = [by_id[o.offer_id].offer.group for o in portfolio.orders]
    assert len(groups) == len(set(groups)), "an offer (or two alternatives of one item) ordered twice"
    covered = [0.0] * request.n_slots
    for o in portfolio.orders:
        e = by_id[o.offer_id]
        assert o.provider_id == e.offer.provider_id
        assert e.first_slot <= o.first_slot <= o.last_slot <= e.last_slot, f"{o.offer_id}: outside its window"
        assert max(e.offer.min_duration_slots, 1) <= o.n_slots <= e.offer.max_duration_slots, f"{o.offer_id}: duration"
        assert e.offer.min_kw - TOL_KW <= o.power_kw <= e.offer.max_kw + TOL_KW, f"{o.offer_id}: kW"
        for t in range(o.first_slot, o.last_slot + 1):
            covered[t] += e.offer.reliability * o.power_kw
    for t, target in enumerate(request.target_kw):
        assert abs(covered[t] - portfolio.covered_kw[t]) <= 1e-6 * max(1.0, target)
        assert abs(portfolio.shortfall_kw[t] - max(target - covered[t], 0.0)) <= 1e-6 * max(1.0, target)
    for series, mwh in portfolio.tokens_redeemed_mwh.items():
        assert mwh <= request.token_budgets_mwh.get(series, 0.0) + 1e-6, f"token budget of {series} exceeded"


def _reason(order: ChosenOrder, pool: Sequence[Eligible], objective: Objective) -> str:
    """Why this order was taken: its objective per derated MWh and its rank among the offers able to serve."""
    e = next(x for x in pool if x.offer.offer_id == order.offer_id)
    mine = e.objective_per_mwh / e.offer.reliability
    rivals = [x for x in pool if x.first_slot <= order.last_slot and x.last_slot >= order.first_slot]
    rank = 1 + sum(1 for x in rivals if x.objective_per_mwh / x.offer.reliability < mine - 1e-12)
    unit = "kg CO2" if isinstance(objective, MinCarbon) else "£"
    paid = (
        f"tokens of {e.offer.payment.series_id}"
        if isinstance(e.offer.payment, TokenRedemption)
        else f"£{e.offer.price_gbp_per_mwh:g}/MWh spot"
    )
    return (
        f"{order.offer_id} ({order.provider_id}) taken at {order.power_kw:g} kW in slots "
        f"{order.first_slot}–{order.last_slot}: {mine:.2f} {unit} per derated MWh "
        f"({paid}, reliability {e.offer.reliability:.0%}), rank {rank} of {len(rivals)} offers able to serve them"
    )


def build_portfolio(
    orders: Sequence[ChosenOrder],
    pool: Sequence[Eligible],
    excluded: Sequence[tuple[str, str]],
    request: ProcurementRequest,
    *,
    status: str,
    solver_objective_value: float = math.nan,
    best_bound: float = math.nan,
    mip_gap: float = math.nan,
) -> Portfolio:
    """The accounted, explained and checked portfolio of ``orders``."""
    covered, shortfall, cost, carbon, tokens, objective = account(orders, pool, request)
    portfolio = Portfolio(
        orders=tuple(orders),
        covered_kw=covered,
        shortfall_kw=shortfall,
        cost_gbp=cost,
        carbon_kg=carbon,
        tokens_redeemed_mwh=tokens,
        objective_value=objective,
        solver_objective_value=solver_objective_value,
        best_bound=best_bound,
        mip_gap=mip_gap,
        status=status,
        excluded=tuple(excluded),
        reasons=tuple(_reason(o, pool, request.objective) for o in orders),
    )
    check_invariants(portfolio, pool, request)
    return portfolio


def _orders_of(
    pool: Sequence[Eligible], cand: _Candidates, power_kw: FloatArray, *, round_down: frozenset[str] = frozenset()
) -> list[ChosenOrder]:
    """The chosen candidates as orders in 0.1 kW steps (down for orders paid from the series in ``round_down``)."""
    out = []
    for j in np.flatnonzero(power_kw > TOL_KW).tolist():
        e = pool[int(cand.offer_index[j])]
        pay = e.offer.payment
        up = not (isinstance(pay, TokenRedemption) and pay.series_id in round_down)
        kw = round_kw(float(power_kw[j]), e.offer.min_kw, e.offer.max_kw, up=up)
        out.append(ChosenOrder(e.offer.offer_id, e.offer.provider_id, int(cand.first[j]), int(cand.last[j]), kw))
    return out


def _overdrawn(orders: Sequence[ChosenOrder], pool: Sequence[Eligible], request: ProcurementRequest) -> frozenset[str]:
    """Token series whose budget the orders exceed (rounding up can overdraw a binding budget)."""
    tokens = account(orders, pool, request)[4]
    return frozenset(s for s, mwh in tokens.items() if mwh > request.token_budgets_mwh.get(s, 0.0) + TOL_MWH)


def choose(offers: Sequence[Offer], request: ProcurementRequest) -> Portfolio:
    """The least-objective portfolio covering ``request.target_kw`` from ``offers`` (see the module doc)."""
    pool, excluded = screen(offers, request)
    cand = _Candidates.of(pool)
    solved = _solve_milp(pool, cand, request)
    orders: list[ChosenOrder] = []
    if solved.power_kw is not None:
        orders = _orders_of(pool, cand, solved.power_kw)
        if over := _overdrawn(orders, pool, request):
            orders = _orders_of(pool, cand, solved.power_kw, round_down=over)
    return build_portfolio(
        orders,
        pool,
        excluded,
        request,
        status=solved.status,
        solver_objective_value=solved.objective,
        best_bound=solved.best_bound,
        mip_gap=solved.mip_gap,
    )
