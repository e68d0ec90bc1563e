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
an offer has at most 36 sub-windows.

Solved to ``mip_rel_gap`` by :func:`_solve_exactly`, in the model's corner form (:class:`_Corners`: a candidate
is a weight on its window at max_kw and one at min_kw; the same LP relaxation with one row per item and no link
rows, so that an LP is solved again from a basis in a few ms):

1. the LP relaxation gives the bound; a dive from it (:func:`_dive`) a first solution, often within the gap;
2. a branch and bound over items (:class:`_Search`) proves the gap: a node either puts an item the LP orders
   fractionally on one of the windows it uses (whole, for an offer with a minimum) or closes those windows.
   It goes depth first (every child solved until the first leaf, then the most used window's child first) and
   then on from the open node of least bound;
3. orders are sized in 0.1 kW steps at least objective (:func:`_stepped`, a small MILP over each order's steps
   either side of its kW: it may round a token order down to its budget and raise another to keep coverage);
   should the rounding cost more than the 2 % of the gap left to it, the search goes on with a smaller gap.

Invariants: ``best_bound`` is at most the MILP's optimum (it is the least LP bound of the nodes not explored:
open, or closed for lying within the gap of the incumbent); "optimal" means the solver's solution is within
``mip_rel_gap`` of it, and so is the portfolio in 0.1 kW steps unless the rounding alone costs about the gap
(its own ``objective_value`` against ``best_bound`` tells). HiGHS takes over (the whole MILP, from the
incumbent) only when an LP fails; its bound then counts too.

Coverage, shortfall, cost and carbon are recomputed from the rounded orders (:func:`account`), which the
baselines in :mod:`bap.procurement_baselines` share so that costs compare.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeAlias

import highspy
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

FloatArray: TypeAlias = npt.NDArray[np.float64]
IntArray: TypeAlias = npt.NDArray[np.intp]

SLOT_HOURS = 0.5
KW_STEP = 0.1
TOL_KW = 1e-6
TOL_MWH = 1e-9
STEPPED_TIME_LIMIT_S = 0.2  # the 0.1 kW steps' MILP (small: one integer per order)
STEPPED_REL_GAP = 1e-5  # the steps' MILP: 0.001 % of the objective, a small fraction of any useful gap
STEPPED_MAX_NODES = 50  # ... and the best it finds in as many nodes (the rounding is what is left)
ROUNDING_SHARE = 0.02  # of mip_rel_gap, left to the rounding to 0.1 kW steps at first: the solver proves the rest
ROUNDING_ROUNDS = 3  # times the search goes on with a smaller gap when the rounding costs more than that
MAX_STEPS = 10  # how far the steps' MILP may move an order off its kW, each way (keeps its integers small)


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
    solver_objective_value: float  # the solver's, before rounding to 0.1 kW (the baselines: nan)
    best_bound: float  # the solver's proven lower bound of the MILP (the baselines: nan)
    mip_gap: float  # the solver's relative gap, its objective to best_bound (the baselines: nan)
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


def _solve_milp(pool: Sequence[Eligible], cand: _Candidates, request: ProcurementRequest) -> tuple[_Solved, _Rounding]:
    rounding = _Rounding(pool, cand, request)
    return _solve_exactly(_model_of(pool, cand, request), request, rounded=rounding.objective), rounding


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


def _loaded(
    model: _Model,
    *,
    integer: bool,
    time_limit_s: float,
    mip_rel_gap: float,
) -> highspy.Highs:
    """A HiGHS instance holding the MILP (``integer``) or its LP relaxation."""
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
        model.col_lo,
        model.col_hi,
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
    ms, info = h.getModelStatus(), h.getInfo()
    status = "optimal" if ms == highspy.HighsModelStatus.kOptimal else h.modelStatusToString(ms).lower()
    if info.primal_solution_status != highspy.SolutionStatus.kSolutionStatusFeasible:
        return _Run(f"no_solution: {status}", None, math.nan, math.nan)
    objective = float(info.objective_function_value)
    bound = float(info.mip_dual_bound) if integer else objective
    return _Run(status, np.array(h.getSolution().col_value), objective, bound)


def _highs(
    model: _Model,
    *,
    integer: bool,
    time_limit_s: float,
    mip_rel_gap: float,
    start: FloatArray | None = None,
) -> _Run:
    """One HiGHS run: the MILP (``integer``) or its LP relaxation, from ``start`` if given."""
    h = _loaded(model, integer=integer, time_limit_s=time_limit_s, mip_rel_gap=mip_rel_gap)
    if start is not None:
        given = highspy.HighsSolution()
        given.col_value = start.tolist()
        h.setSolution(given)
    h.run()
    return _result(h, integer=integer)


def _whole(model: _Model, *, gap: float, t_end: float, start: FloatArray | None = None) -> _Run:
    """HiGHS alone on the whole MILP (the fallback when an LP of the search fails)."""
    return _highs(model, integer=True, time_limit_s=t_end - time.perf_counter(), mip_rel_gap=gap, start=start)


# -- the exact solve: corner form, dive, branch and bound ---------------------------------------------

#: a corner weight (or a window's use) below this is nought
EPS = 1e-9
#: a used window of an offer with a minimum is whole when its corner weights sum to within this of 1
WHOLE_TOL = 1e-6
#: HiGHS's status when the time limit stops a solve, reused for the search
TIME_LIMIT = "time limit reached"
#: LP solves the search spends solving every child until its first leaf, before a dive gives it one
EAGER_LPS = 60


@dataclass(frozen=True)
class _Corners:
    """The MILP in corner form: the LP relaxation of :class:`_Model`, with one row per item and no link rows.

    A candidate (an offer's sub-window) ordered at ``p`` kW is a weight on the corners of its segment: ``λ_max``
    (the window at max_kw) and, when 0 < min_kw < max_kw, ``λ_min`` (at min_kw), with ``z = λ_min + λ_max`` and
    ``p = min_kw·λ_min + max_kw·λ_max``. Both forms have the same LP relaxation (a candidate's (z, p) ranges over
    the triangle of 0 and the two corners in each); here the integrality is "at most one window per item, and
    a window of an offer with a minimum whole (Σ λ = 1)". Columns: the corners, then the shortfall per slot; rows:
    Σ corners ≤ 1 per item (its lower bound 1 when a search node makes the item take its one open window whole),
    coverage and token budgets as in :class:`_Model`."""

    a: sp.csc_matrix
    cost: FloatArray
    col_hi: FloatArray
    row_lo: FloatArray
    row_hi: FloatArray
    candidate: IntArray  # per corner
    kw: FloatArray  # per corner
    n_corners: int
    n_items: int  # item rows come first (as in _Model: one per offer, alternatives share one, some left empty)
    item: IntArray  # per candidate: its item row
    whole: npt.NDArray[np.bool_]  # per candidate: its offer has a minimum, so a used window is whole

    @classmethod
    def of(cls, model: _Model) -> _Corners:
        m, n_items = model.n_binary, model.n_offers
        lo, hi = model.min_kw, model.min_kw + model.col_hi[m : 2 * m]
        with_min = np.flatnonzero((lo > 0) & (hi > lo))
        candidate = np.concatenate([np.arange(m), with_min])
        kw = np.concatenate([hi, lo[with_min]])
        first = n_items + m  # coverage and token rows; the link rows are not needed
        per_kw = model.a[first:, m : 2 * m]  # a candidate's e column: coverage and tokens per kW
        n = len(candidate)
        item_rows = sp.csc_matrix((np.ones(n), (model.group_index[candidate], np.arange(n))), shape=(n_items, n))
        a = sp.vstack(
            [
                sp.hstack([item_rows, sp.csc_matrix((n_items, model.a.shape[1] - 2 * m))]),
                sp.hstack([per_kw[:, candidate] @ sp.diags(kw), model.a[first:, 2 * m :]]),
            ]
        ).tocsc()
        a.sum_duplicates()
        a.sort_indices()
        return cls(
            a=a,
            cost=np.concatenate([model.cost[m : 2 * m][candidate] * kw, model.cost[2 * m :]]),
            col_hi=np.concatenate([np.ones(n), model.col_hi[2 * m :]]),
            row_lo=np.concatenate([model.row_lo[:n_items], model.row_lo[first:]]),
            row_hi=np.concatenate([model.row_hi[:n_items], model.row_hi[first:]]),
            candidate=candidate,
            kw=kw,
            n_corners=n,
            n_items=n_items,
            item=model.group_index,
            whole=lo > 0,
        )

    def use(self, x: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Per candidate: Σ of its corner weights (its z) and its kW, from a corner-form point."""
        m = len(self.item)
        corners = x[: self.n_corners]
        on = np.bincount(self.candidate, weights=corners, minlength=m).astype(np.float64)
        return on, np.bincount(self.candidate, weights=corners * self.kw, minlength=m).astype(np.float64)

    def fractional(self, x: FloatArray) -> tuple[IntArray, FloatArray]:
        """The items the point does not order integrally (two windows used, or one of an offer with a minimum
        in part), and every candidate's use."""
        on, _ = self.use(x)
        used = on > EPS
        windows = np.bincount(self.item[used], minlength=self.n_items)
        split = windows >= 2
        split[self.item[used & self.whole & (on < 1.0 - WHOLE_TOL)]] = True
        return np.flatnonzero(split), on

    def point(self, x: FloatArray, model: _Model) -> FloatArray:
        """An integral corner-form point as a point of ``model`` (z, e, s)."""
        m = model.n_binary
        on, kw = self.use(x)
        z = (on > EPS).astype(np.float64)
        e = np.clip(kw - model.min_kw * z, 0.0, model.col_hi[m : 2 * m] * z)
        return np.concatenate([z, e, x[self.n_corners :]])


@dataclass(frozen=True)
class _Node:
    """A node of the search: the corners it closes (upper bound 0) and the items it makes take their one open
    window whole (row lower bound 1), both along its path from the root; its bound; its LP point once solved
    and the basis to start from (its own once solved, its parent's before)."""

    bound: float
    depth: int
    closed: IntArray
    whole_items: IntArray
    basis: highspy.HighsBasis | None
    x: FloatArray | None = None


@dataclass(frozen=True)
class _Lp:
    status: str  # "optimal", "infeasible", or HiGHS's status (time limit, numerical trouble)
    objective: float
    x: FloatArray | None
    basis: highspy.HighsBasis | None


class _CornerLp:
    """The corner form's LP relaxation in one HiGHS instance, solved again (warm) under each node's bounds."""

    def __init__(self, corners: _Corners, *, t_end: float) -> None:
        self.corners, self.t_end, self.solves = corners, t_end, 0
        c = corners
        h = highspy.Highs()  # type: ignore[no-untyped-call]  # highspy leaves its __init__ unannotated
        h.setOptionValue("output_flag", False)
        h.setOptionValue("threads", 1)
        h.setOptionValue("presolve", "off")  # re-solved from a basis every time
        h.passModel(
            c.a.shape[1],
            c.a.shape[0],
            int(c.a.nnz),
            int(highspy.MatrixFormat.kColwise),
            int(highspy.ObjSense.kMinimize),
            0.0,
            c.cost,
            np.zeros(len(c.cost)),
            c.col_hi,
            c.row_lo,
            c.row_hi,
            c.a.indptr.astype(np.int32),
            c.a.indices.astype(np.int32),
            c.a.data.astype(float),
            np.zeros(len(c.cost), dtype=np.int32),
        )
        self.h = h
        self.col_hi = c.col_hi[: c.n_corners].copy()  # the corners' upper bounds h holds now
        self.item_lo = c.row_lo[: c.n_items].copy()  # the item rows' lower bounds h holds now

    def solve(self, node: _Node) -> _Lp:
        c, h = self.corners, self.h
        self._set(node)
        if node.basis is not None:
            h.setBasis(node.basis)
        h.setOptionValue("time_limit", max(self.t_end - time.perf_counter(), 0.001))
        h.run()
        self.solves += 1
        ms = h.getModelStatus()
        if ms in (highspy.HighsModelStatus.kInfeasible, highspy.HighsModelStatus.kUnboundedOrInfeasible):
            return _Lp("infeasible", math.inf, None, None)
        if ms != highspy.HighsModelStatus.kOptimal:
            return _Lp(h.modelStatusToString(ms).lower(), math.nan, None, None)
        x = np.array(h.getSolution().col_value)
        return _Lp("optimal", float(c.cost @ x), x, h.getBasis())

    def _set(self, node: _Node) -> None:
        col_hi = self.corners.col_hi[: self.corners.n_corners].copy()
        col_hi[node.closed] = 0.0
        changed = np.flatnonzero(col_hi != self.col_hi)
        if len(changed):
            idx = changed.astype(np.int32)
            self.h.changeColsBounds(len(idx), idx, np.zeros(len(idx)), col_hi[changed])
            self.col_hi = col_hi
        item_lo = self.corners.row_lo[: self.corners.n_items].copy()
        item_lo[node.whole_items] = 1.0
        for row in np.flatnonzero(item_lo != self.item_lo).tolist():  # a few per node
            self.h.changeRowBounds(row, float(item_lo[row]), float(self.corners.row_hi[row]))
        self.item_lo = item_lo


def _child(node: _Node, *, closed: IntArray, whole_item: int | None = None) -> _Node:
    """``node``'s child closing ``closed`` too (and making ``whole_item`` whole), bound and basis inherited."""
    whole = node.whole_items if whole_item is None else np.append(node.whole_items, whole_item)
    return _Node(node.bound, node.depth + 1, np.concatenate([node.closed, closed]), whole, node.basis)


def _children(corners: _Corners, node: _Node, item: int, on: FloatArray) -> list[_Node]:
    """Branching on ``item``: one child per window the LP uses (most used first), the item's other windows
    closed and, for an offer with a minimum, that window whole; then one child with all those windows closed.
    Every solution of ``node`` lies in one of them."""
    assert node.x is not None
    mine = np.flatnonzero(corners.item[corners.candidate] == item)  # the item's corners
    used = np.flatnonzero((corners.item == item) & (on > EPS))
    used = used[np.argsort(-on[used], kind="stable")]
    kids = []
    for j in used.tolist():
        whole = item if corners.whole[j] else None
        kids.append(_child(node, closed=mine[corners.candidate[mine] != j], whole_item=whole))
    kids.append(_child(node, closed=mine[np.isin(corners.candidate[mine], used)]))
    return kids


def _branching_item(corners: _Corners, items: IntArray, on: FloatArray) -> int:
    """The fractional item to branch on: the most kW the LP spreads over its windows, weighted by how far its
    most used window is from whole (Σ max_kw·use × (1 − max use))."""
    cand = np.flatnonzero(np.isin(corners.item, items))
    max_kw = corners.kw[: len(corners.item)]  # the max corners come first, one per candidate
    spread = np.bincount(corners.item[cand], weights=max_kw[cand] * on[cand], minlength=corners.n_items)
    top = np.zeros(corners.n_items)
    np.maximum.at(top, corners.item[cand], on[cand])
    score = spread[items] * (1.0 - top[items])
    return int(items[int(np.argmax(score))])


@dataclass
class _Incumbent:
    x: FloatArray | None = None  # a point of _Model
    objective: float = math.inf


def _dive(lp: _CornerLp, node: _Node, model: _Model) -> FloatArray | None:
    """A feasible point below ``node`` (solved), by diving: every item the LP orders fractionally is fixed to
    its most used window (the item's other windows closed, that window whole for an offer with a minimum), and
    the LP solved again (warm) until it orders every item integrally. When those fixings leave no feasible LP (a
    token budget below the minima fixed), the round closes the same items' windows instead, which is always
    feasible (the shortfall takes up coverage). Each round settles at least one item for good. None when an LP
    fails or the time runs out."""
    c = lp.corners
    while node.x is not None:
        items, on = c.fractional(node.x)
        if len(items) == 0:
            return c.point(node.x, model)
        mine = np.isin(c.item[c.candidate], items)
        by_item = np.flatnonzero(np.isin(c.item, items))
        by_item = by_item[np.lexsort((-on[by_item], c.item[by_item]))]
        top = by_item[np.r_[True, c.item[by_item][1:] != c.item[by_item][:-1]]]
        fixed = _Node(
            node.bound,
            node.depth,
            np.concatenate([node.closed, np.flatnonzero(mine & ~np.isin(c.candidate, top))]),
            np.concatenate([node.whole_items, c.item[top[c.whole[top]]]]),
            None,
        )
        r = lp.solve(fixed)
        if r.status == "infeasible":
            fixed = _Node(
                node.bound, node.depth, np.concatenate([node.closed, np.flatnonzero(mine)]), node.whole_items, None
            )
            r = lp.solve(fixed)
        if r.status != "optimal":
            return None
        node = replace(fixed, x=r.x, basis=r.basis)
    return None


class _LpFailed(Exception):
    """An LP of the search ended neither optimal nor infeasible (time limit, numerical trouble)."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


@dataclass
class _Search:
    """Branch and bound over items in corner form. It goes depth first from each node it takes: until its first
    leaf, every child solved and the one of least bound taken (a good first incumbent; a dive ends that after
    EAGER_LPS solves); after that, the most used window's child alone, its siblings waiting with the parent's
    bound and basis. Then on from the open node of least bound. A node whose bound is within the gap of the
    incumbent is closed, not explored, and kept to reopen should the gap tighten. The least bound of the nodes
    open or closed bounds the MILP."""

    lp: _CornerLp
    model: _Model
    gap: float
    best: _Incumbent = field(default_factory=_Incumbent)
    open: list[tuple[float, int, int, _Node]] = field(default_factory=list)
    pushed: int = 0
    closed: list[_Node] = field(default_factory=list)  # closed within the gap, not explored (kept to reopen)
    closed_bound: float = math.inf  # the least bound of those
    leaves: int = 0  # integral nodes reached (the eager phase's dive counts as one)

    def offer(self, x: FloatArray) -> None:
        objective = float(self.model.cost @ x)
        if objective < self.best.objective:
            self.best = _Incumbent(x, objective)

    def closing(self) -> float:
        """Bounds at or above this are within the gap of the incumbent."""
        ub = self.best.objective
        return ub - max(self.gap * abs(ub), 1e-9) if math.isfinite(ub) else math.inf

    def bound(self, current: _Node | None) -> float:
        """The least bound of the nodes open or closed within the gap, and of the incumbent: a lower bound of
        the MILP (every node explored or closed at or above the incumbent's value holds nothing better)."""
        bounds = [self.best.objective, self.closed_bound]
        if self.open:
            bounds.append(self.open[0][0])
        if current is not None:
            bounds.append(current.bound)
        return min(bounds)

    def _close(self, node: _Node) -> None:
        self.closed.append(node)
        self.closed_bound = min(self.closed_bound, node.bound)

    def tighten(self, gap: float) -> None:
        """A smaller gap from now on: the closed nodes it no longer closes are open again."""
        self.gap = gap
        closing = self.closing()
        for node in self.closed:
            if node.bound < closing:
                self._push(node)
        self.closed = [node for node in self.closed if node.bound >= closing]
        self.closed_bound = min((node.bound for node in self.closed), default=math.inf)

    def run(self, current: _Node | None, *, t_end: float) -> tuple[str, float]:
        """From ``current`` (solved; None: from the open nodes) until the gap is proven ("optimal"), the time runs
        out (TIME_LIMIT) or an LP fails (its status): (status, bound)."""
        try:
            while True:
                if current is None:
                    if not self.open or self.open[0][0] >= self.closing():
                        return "optimal", self.bound(None)
                    current = self._take(heapq.heappop(self.open)[3])
                    continue
                bound = self.bound(current)
                if bound >= self.closing() or time.perf_counter() >= t_end:
                    self._push(current)  # open still, for a later run
                    return "optimal" if bound >= self.closing() else TIME_LIMIT, bound
                current = self._step(current)
        except _LpFailed as failed:
            return failed.status, self.bound(None)

    def _push(self, node: _Node) -> None:
        heapq.heappush(self.open, (node.bound, -node.depth, self.pushed, node))
        self.pushed += 1

    def _solved(self, node: _Node) -> _Node | None:
        """``node`` with its LP solved, or None when it is infeasible or closed."""
        r = self.lp.solve(node)
        if r.status == "infeasible":
            return None
        if r.status != "optimal":
            self._push(node)
            raise _LpFailed(r.status)
        return replace(node, bound=r.objective, x=r.x, basis=r.basis)

    def _take(self, node: _Node) -> _Node | None:
        if node.x is not None:
            return node
        solved = self._solved(node)
        if solved is not None and solved.bound >= self.closing():
            self._close(solved)
            return None
        return solved

    def _step(self, node: _Node) -> _Node | None:
        """Branch on ``node`` (solved): the child to go on with, or None (a leaf, or nothing to improve)."""
        assert node.x is not None
        if node.bound >= self.best.objective:
            return None
        corners = self.lp.corners
        items, on = corners.fractional(node.x)
        if len(items) == 0:
            self.offer(corners.point(node.x, self.model))
            self.leaves += 1
            return None
        if self.leaves == 0 and self.lp.solves > EAGER_LPS:  # enough: a dive from here gives the first leaf
            if (dived := _dive(self.lp, node, self.model)) is not None:
                self.offer(dived)
            self.leaves += 1
        kids = _children(corners, node, _branching_item(corners, items, on), on)
        if self.leaves == 0:
            return self._eager(kids)
        first, *rest = kids
        for kid in rest:
            self._keep(kid)
        solved = self._solved(first)
        return solved if solved is not None and solved.bound < self.best.objective else None

    def _eager(self, kids: list[_Node]) -> _Node | None:
        """Until the first leaf: every child solved, the search goes on with the one of least bound (a better
        first leaf than the most used window's child alone gives)."""
        solved: list[_Node] = []
        for k, kid in enumerate(kids):
            try:
                s = self._solved(kid)
            except _LpFailed:  # nothing lost: the children solved and those left stay open
                for other in [*solved, *kids[k + 1 :]]:
                    self._push(other)
                raise
            if s is not None and s.bound < self.best.objective:
                solved.append(s)
        if not solved:
            return None
        solved.sort(key=lambda s: s.bound)
        for kid in solved[1:]:
            self._keep(kid)
        return solved[0]

    def _keep(self, node: _Node) -> None:
        """Open ``node``, or close it when its bound is within the gap of the incumbent."""
        if node.bound < self.closing():
            self._push(node)
        else:
            self._close(node)


def _solve_exactly(
    model: _Model, request: ProcurementRequest, *, rounded: Callable[[FloatArray], float] | None = None
) -> _Solved:
    """The MILP to ``request.mip_rel_gap``: the corner form's LP relaxation gives the bound, a dive from it the
    first incumbent (often already within the gap), then branch and bound (:class:`_Search`) until the gap is
    proven. ``rounded`` (the objective of a solution's orders in 0.1 kW steps, per candidate kW) makes the gap
    hold for the rounded orders too: the search goes on with a gap smaller by what the rounding costs, until
    it does (or the rounding alone costs more than the gap). Should an LP fail (numerical trouble), HiGHS takes
    over the whole MILP from the incumbent; its bound and the search's are both valid, the higher one is kept."""
    t_end = time.perf_counter() + request.time_limit_s
    lp = _CornerLp(_Corners.of(model), t_end=t_end)
    empty = np.zeros(0, dtype=np.intp)
    root = _Node(-math.inf, 0, empty, empty, None)
    r = lp.solve(root)
    if r.status != "optimal":
        full = _whole(model, gap=request.mip_rel_gap, t_end=t_end)
        return _solved(full.status, full.x, model, bound=full.bound)
    root = replace(root, bound=r.objective, x=r.x, basis=r.basis)
    search = _Search(lp, model, request.mip_rel_gap * (1.0 - ROUNDING_SHARE))
    if (dived := _dive(lp, root, model)) is not None:
        search.offer(dived)
    status, bound = search.run(root, t_end=t_end)
    for _ in range(ROUNDING_ROUNDS):
        if status != "optimal" or rounded is None or search.best.x is None:
            break
        in_steps = rounded(_power_of(search.best.x, model))
        if in_steps - bound <= max(request.mip_rel_gap * abs(in_steps), 1e-9):
            break  # the orders in steps are within the gap too
        gap = _gap_left(search.best.objective, in_steps, request.mip_rel_gap)
        if gap is None or gap >= search.gap:
            break
        search.tighten(gap)
        status, bound = search.run(None, t_end=t_end)
    if status in ("optimal", TIME_LIMIT):
        return _solved(status, search.best.x, model, bound=bound)
    full = _whole(model, gap=search.gap, t_end=t_end, start=search.best.x)
    if full.x is not None:
        search.offer(full.x)
    bound = max(bound, full.bound) if math.isfinite(full.bound) else bound
    proven = search.best.objective - bound <= max(search.gap * abs(search.best.objective), 1e-9)
    return _solved("optimal" if proven else full.status, search.best.x, model, bound=bound)


def _gap_left(objective: float, rounded: float, gap: float) -> float | None:
    """The solver's gap that keeps ``rounded`` (the same solution in 0.1 kW steps) within ``gap`` of a bound,
    with a little to spare; None when the rounding alone costs that much."""
    left = (gap * abs(rounded) - max(rounded - objective, 0.0)) / max(abs(objective), 1e-12)
    return left * (1.0 - ROUNDING_SHARE) if left > 0 else None


def _power_of(x: FloatArray, model: _Model) -> FloatArray:
    """Per candidate: its kW in the point ``x`` of ``model`` (0 where not chosen)."""
    m = model.n_binary
    z = np.rint(x[:m])
    return np.asarray(np.where(z > 0.5, model.min_kw * z + x[m : 2 * m], 0.0), dtype=np.float64)


def _solved(status: str, x: FloatArray | None, model: _Model, *, bound: float) -> _Solved:
    if x is None:
        status = status if status.startswith("no_solution") else f"no_solution: {status}"
        return _Solved(status, None, math.nan, math.nan, math.nan)
    objective = float(model.cost @ x)
    bound = min(bound, objective)
    gap = max(objective - bound, 0.0) / max(abs(objective), 1e-12)
    return _Solved(status, _power_of(x, model), objective, bound, gap)


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


@dataclass
class _Rounding:
    """A solution's orders in 0.1 kW steps (:func:`_stepped`; rounded up, and down to a token budget that
    overdraws, should that find nothing), from its kW per candidate; the last one is remembered."""

    pool: Sequence[Eligible]
    cand: _Candidates
    request: ProcurementRequest
    last: tuple[FloatArray, list[ChosenOrder]] | None = None

    def orders(self, power_kw: FloatArray) -> list[ChosenOrder]:
        if self.last is None or not np.array_equal(self.last[0], power_kw):
            rounded = _orders_of(self.pool, self.cand, power_kw)
            orders = _stepped(rounded, self.pool, self.request) or _within_budgets(rounded, self.pool, self.request)
            self.last = (power_kw.copy(), orders)
        return self.last[1]

    def objective(self, power_kw: FloatArray) -> float:
        return account(self.orders(power_kw), self.pool, self.request)[5]


def _orders_of(pool: Sequence[Eligible], cand: _Candidates, power_kw: FloatArray) -> list[tuple[ChosenOrder, float]]:
    """The chosen candidates as orders in 0.1 kW steps (up, where the maximum allows), each with its kW unrounded."""
    out = []
    for j in np.flatnonzero(power_kw > TOL_KW).tolist():
        e = pool[int(cand.offer_index[j])]
        kw = round_kw(float(power_kw[j]), e.offer.min_kw, e.offer.max_kw)
        order = ChosenOrder(e.offer.offer_id, e.offer.provider_id, int(cand.first[j]), int(cand.last[j]), kw)
        out.append((order, float(power_kw[j])))
    return out


def _overdrawn(orders: Sequence[ChosenOrder], pool: Sequence[Eligible], request: ProcurementRequest) -> frozenset[str]:
    """Token series whose budget the orders exceed (rounding up can overdraw a binding budget)."""
    tokens = account(orders, pool, request)[4]
    return frozenset(s for s, mwh in tokens.items() if mwh > request.token_budgets_mwh.get(s, 0.0) + TOL_MWH)


def _steps(raw_kw: float, min_kw: float, max_kw: float) -> tuple[float, int, int]:
    """Where an order of ``raw_kw`` may go in 0.1 kW steps: the step at or below it (the lowest in range when that
    is not), and how many steps below and above that it may take (within its minimum and maximum, at most
    MAX_STEPS each way). A range that holds no step keeps ``raw_kw`` exactly."""
    first, last = math.ceil(min_kw / KW_STEP - 1e-7), math.floor(max_kw / KW_STEP + 1e-7)
    if first > last:
        return raw_kw, 0, 0
    base = min(max(math.floor(raw_kw / KW_STEP + 1e-7), first), last)
    return round(base * KW_STEP, 1), min(MAX_STEPS, base - first), min(MAX_STEPS, last - base)


def _stepped(
    rounded: Sequence[tuple[ChosenOrder, float]], pool: Sequence[Eligible], request: ProcurementRequest
) -> list[ChosenOrder] | None:
    """The chosen orders in 0.1 kW steps at least objective (a small MILP: per order, how many steps off the step
    at or below its kW (:func:`_steps`); the shortfall per slot; the token budgets), or None if HiGHS finds nothing
    in time. An order rounded down to a binding token budget is made up by raising others, or by lowering
    another token order where coverage is to spare."""
    by_id = {e.offer.offer_id: e for e in pool}
    series = sorted({s for o, _ in rounded if (s := _series(by_id[o.offer_id])) is not None})
    n, n_t = len(rounded), request.n_slots
    steps = [_steps(raw_kw, by_id[o.offer_id].offer.min_kw, by_id[o.offer_id].offer.max_kw) for o, raw_kw in rounded]
    need = np.asarray(request.target_kw, dtype=float).copy()
    budget = np.array([request.token_budgets_mwh.get(s, 0.0) for s in series])
    weight = np.zeros(n)
    offset = 0.0  # the objective of every order at its base step
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    for j, ((o, _), (base_kw, _, _)) in enumerate(zip(rounded, steps, strict=True)):
        e = by_id[o.offer_id]
        mwh_per_kw = o.n_slots * SLOT_HOURS / 1000.0
        need[o.first_slot : o.last_slot + 1] -= e.offer.reliability * base_kw
        weight[j] = e.objective_per_mwh * mwh_per_kw * KW_STEP
        offset += e.objective_per_mwh * mwh_per_kw * base_kw
        rows += list(range(o.first_slot, o.last_slot + 1))
        cols += [j] * o.n_slots
        vals += [e.offer.reliability * KW_STEP] * o.n_slots
        if (s := _series(e)) is not None:
            budget[series.index(s)] -= base_kw * mwh_per_kw
            rows.append(n_t + series.index(s))
            cols.append(j)
            vals.append(KW_STEP * mwh_per_kw)
    a = sp.csc_matrix(
        (vals + [1.0] * n_t, (rows + list(range(n_t)), cols + list(range(n, n + n_t)))),
        shape=(n_t + len(series), n + n_t),
    )
    inf = highspy.kHighsInf
    h = highspy.Highs()  # type: ignore[no-untyped-call]  # highspy leaves its __init__ unannotated
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)
    h.setOptionValue("time_limit", STEPPED_TIME_LIMIT_S)
    h.setOptionValue("mip_rel_gap", STEPPED_REL_GAP)
    for sub_mip in ("rins", "rens", "root_reduced_cost"):  # sub-MIPs cost more than this small model's search
        h.setOptionValue(f"mip_heuristic_run_{sub_mip}", False)
    h.setOptionValue("mip_max_nodes", STEPPED_MAX_NODES)
    h.passModel(
        n + n_t,
        n_t + len(series),
        int(a.nnz),
        int(highspy.MatrixFormat.kColwise),
        int(highspy.ObjSense.kMinimize),
        offset,  # so that the relative gap is of the whole objective
        np.concatenate([weight, np.full(n_t, penalty_per_kw_slot(request))]),
        np.concatenate([-np.array([down for _, down, _ in steps], dtype=float), np.zeros(n_t)]),
        np.concatenate([np.array([up for _, _, up in steps], dtype=float), np.full(n_t, inf)]),
        np.concatenate([need, np.full(len(series), -inf)]),
        np.concatenate([np.full(n_t, inf), budget]),
        a.indptr.astype(np.int32),
        a.indices.astype(np.int32),
        a.data.astype(float),
        np.concatenate([np.ones(n, dtype=np.int32), np.zeros(n_t, dtype=np.int32)]),
    )
    h.run()
    if h.getInfo().primal_solution_status != highspy.SolutionStatus.kSolutionStatusFeasible:
        return None
    taken = np.rint(np.array(h.getSolution().col_value[:n]))
    return [
        replace(o, power_kw=round(base_kw + k * KW_STEP, 1) if down or up else base_kw)
        for (o, _), (base_kw, down, up), k in zip(rounded, steps, taken.tolist(), strict=True)
    ]


def _series(e: Eligible) -> str | None:
    return e.offer.payment.series_id if isinstance(e.offer.payment, TokenRedemption) else None


def _within_budgets(
    rounded: Sequence[tuple[ChosenOrder, float]], pool: Sequence[Eligible], request: ProcurementRequest
) -> list[ChosenOrder]:
    """The orders rounded up, those paid from a series whose budget that overdraws rounded down instead (the
    fallback should the stepped MILP find nothing)."""
    by_id = {e.offer.offer_id: e for e in pool}
    out = [o for o, _ in rounded]
    over = _overdrawn(out, pool, request)
    for k, (o, raw_kw) in enumerate(rounded):
        e = by_id[o.offer_id]
        if _series(e) in over:
            out[k] = replace(o, power_kw=round_kw(raw_kw, e.offer.min_kw, e.offer.max_kw, up=False))
    return out


def choose(offers: Sequence[Offer], request: ProcurementRequest) -> Portfolio:
    """The least-objective portfolio covering ``request.target_kw`` from ``offers`` (see the module doc)."""
    pool, excluded = screen(offers, request)
    cand = _Candidates.of(pool)
    solved, rounding = _solve_milp(pool, cand, request)
    orders = rounding.orders(solved.power_kw) if solved.power_kw is not None else []
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
