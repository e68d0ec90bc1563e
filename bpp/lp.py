"""A thin sparse LP/MILP layer over HiGHS (highspy): build in triplets, pass CSC arrays, solve.

No algebraic modelling layer: builders append numpy blocks of columns, rows and (row, col, value)
entries; :meth:`LPParts.solve` assembles one scipy CSC matrix and hands HiGHS the raw arrays with
``Highs.passModel``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TypeAlias

import highspy
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from bpp.domain import FloatArray, IntArray

Int32Array: TypeAlias = npt.NDArray[np.int32]

INF = highspy.kHighsInf


@dataclass(frozen=True)
class LPResult:
    status: str  # "optimal" | "time_limit" | "infeasible" | "error: ..."
    x: FloatArray | None  # primal column values (None when no feasible point is known)
    objective: float
    mip_gap: float  # HiGHS relative gap (0 for LPs solved to optimality)
    solve_time_s: float
    n_cols: int
    n_rows: int
    n_integer: int

    @property
    def has_solution(self) -> bool:
        return self.x is not None


class LPParts:
    """A growing LP/MILP in triplet form; :meth:`to_csc` assembles the constraint matrix.

    Columns: cost, lower, upper, integrality. Rows: lower, upper. Entries: (row, col, value) arrays,
    appended in blocks and summed when assembled (scipy.sparse), so builders stay vectorised."""

    def __init__(self) -> None:
        self._cost: list[FloatArray] = []
        self._lb: list[FloatArray] = []
        self._ub: list[FloatArray] = []
        self._int: list[Int32Array] = []
        self._rlb: list[FloatArray] = []
        self._rub: list[FloatArray] = []
        self._r: list[IntArray] = []
        self._c: list[IntArray] = []
        self._v: list[FloatArray] = []
        self.n_cols = 0
        self.n_rows = 0

    def add_cols(self, cost: FloatArray, lb: FloatArray, ub: FloatArray, integer: bool = False) -> IntArray:
        n = len(cost)
        idx = np.arange(self.n_cols, self.n_cols + n)
        self._cost.append(np.asarray(cost, dtype=float))
        self._lb.append(np.asarray(lb, dtype=float))
        self._ub.append(np.asarray(ub, dtype=float))
        self._int.append(np.full(n, 1 if integer else 0, dtype=np.int32))
        self.n_cols += n
        return idx

    def clear_objective(self) -> None:
        """Zero every column cost (to re-use a built model for a feasibility or max-X problem)."""
        self._cost = [np.zeros_like(c) for c in self._cost]

    def set_costs(self, cols: IntArray, costs: FloatArray) -> None:
        """Set the cost of existing columns (e.g. a second-stage objective)."""
        cost = np.concatenate(self._cost) if self._cost else np.zeros(0)
        cost[np.asarray(cols, dtype=np.int64)] = costs
        self._cost = [cost]

    def add_rows(self, lb: FloatArray, ub: FloatArray) -> IntArray:
        n = len(lb)
        idx = np.arange(self.n_rows, self.n_rows + n)
        self._rlb.append(np.asarray(lb, dtype=float))
        self._rub.append(np.asarray(ub, dtype=float))
        self.n_rows += n
        return idx

    def add_entries(self, rows: IntArray, cols: IntArray, vals: FloatArray | float) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        cols = np.asarray(cols, dtype=np.int64)
        vals = np.broadcast_to(np.asarray(vals, dtype=float), rows.shape)
        if rows.shape != cols.shape:
            raise ValueError("rows and cols must have the same shape")
        self._r.append(rows.ravel())
        self._c.append(cols.ravel())
        self._v.append(np.array(vals, dtype=float).ravel())

    def arrays(self) -> tuple[FloatArray, FloatArray, FloatArray, Int32Array, FloatArray, FloatArray]:
        """Column cost, lower and upper bound, integrality (1 = integer); row lower and upper bound."""
        integrality = np.concatenate(self._int).astype(np.int32) if self._int else np.zeros(0, dtype=np.int32)
        return (
            _cat(self._cost),
            _cat(self._lb),
            _cat(self._ub),
            integrality,
            _cat(self._rlb),
            _cat(self._rub),
        )

    def to_csc(self) -> sp.csc_matrix:
        r = np.concatenate(self._r) if self._r else np.zeros(0, dtype=np.int64)
        c = np.concatenate(self._c) if self._c else np.zeros(0, dtype=np.int64)
        v = np.concatenate(self._v) if self._v else np.zeros(0)
        m = sp.coo_matrix((v, (r, c)), shape=(self.n_rows, self.n_cols)).tocsc()
        m.sum_duplicates()
        m.eliminate_zeros()
        return m

    def solve(
        self,
        time_limit_s: float = 60.0,
        mip_rel_gap: float = 1e-6,
        threads: int | None = None,
        reduced_cost_fixing: bool = True,
    ) -> LPResult:
        """Minimise with HiGHS; integrality as declared by :meth:`add_cols`.

        MILPs go through :func:`_solve_rc_fixed` (LP relaxation, then a MIP restricted by reduced-cost
        fixing, with the optimality gap certified against the LP bound) unless
        ``reduced_cost_fixing`` is False, which hands the whole MIP to HiGHS."""
        arrays = _HighsArrays.of(self)
        t0 = time.perf_counter()
        if arrays.n_int and reduced_cost_fixing:
            res = _solve_rc_fixed(arrays, time_limit_s, mip_rel_gap, threads)
        else:
            res = _run(
                arrays,
                arrays.integrality,
                arrays.ub,
                time_limit_s=time_limit_s,
                mip_rel_gap=mip_rel_gap,
                threads=threads,
            )
        return LPResult(
            res.status,
            res.x,
            res.objective,
            res.gap,
            time.perf_counter() - t0,
            self.n_cols,
            self.n_rows,
            arrays.n_int,
        )


def _cat(parts: list[FloatArray]) -> FloatArray:
    return np.concatenate(parts).astype(float) if parts else np.zeros(0, dtype=float)


@dataclass(frozen=True)
class _HighsArrays:
    """An LPParts model as the arrays ``Highs.passModel`` takes (infinities as HiGHS's)."""

    n_cols: int
    n_rows: int
    cost: FloatArray
    lb: FloatArray
    ub: FloatArray
    integrality: Int32Array
    rlb: FloatArray
    rub: FloatArray
    a: sp.csc_matrix

    @property
    def n_int(self) -> int:
        return int(self.integrality.sum())

    @classmethod
    def of(cls, parts: LPParts) -> _HighsArrays:
        cost, lb, ub, integrality, rlb, rub = parts.arrays()
        return cls(
            parts.n_cols,
            parts.n_rows,
            cost,
            np.where(np.isinf(lb), -INF, lb),
            np.where(np.isinf(ub), INF, ub),
            integrality.astype(np.int32),
            np.where(np.isinf(rlb), -INF, rlb),
            np.where(np.isinf(rub), INF, rub),
            parts.to_csc(),
        )


@dataclass(frozen=True)
class _Run:
    status: str
    x: FloatArray | None
    objective: float
    gap: float
    dual_bound: float
    reduced_costs: FloatArray | None


def _run(
    m: _HighsArrays,
    integrality: Int32Array,
    ub: FloatArray,
    *,
    time_limit_s: float,
    mip_rel_gap: float,
    threads: int | None,
) -> _Run:
    """One HiGHS run of the model with the given integrality and column upper bounds."""
    h = highspy.Highs()  # type: ignore[no-untyped-call]  # highspy leaves its __init__ unannotated
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", max(float(time_limit_s), 0.01))
    h.setOptionValue("mip_rel_gap", float(mip_rel_gap))
    # the relative gap governs; HiGHS's default absolute gap (1e-6) would swamp small objectives
    h.setOptionValue("mip_abs_gap", 1e-12)
    if threads:
        h.setOptionValue("threads", int(threads))
    status = h.passModel(
        m.n_cols,
        m.n_rows,
        int(m.a.nnz),
        int(highspy.MatrixFormat.kColwise),
        int(highspy.ObjSense.kMinimize),
        0.0,
        m.cost,
        m.lb,
        ub,
        m.rlb,
        m.rub,
        m.a.indptr.astype(np.int32),
        m.a.indices.astype(np.int32),
        m.a.data.astype(float),
        integrality,  # all zeros = an LP (an empty array would be read out of bounds)
    )
    if status == highspy.HighsStatus.kError:
        return _Run("error: HiGHS rejected the model", None, float("nan"), float("nan"), float("nan"), None)
    h.run()
    ms = h.getModelStatus()
    info = h.getInfo()
    is_mip = bool(integrality.any())
    has_primal = info.primal_solution_status == highspy.SolutionStatus.kSolutionStatusFeasible
    sol = h.getSolution()
    x = np.array(sol.col_value) if has_primal else None
    if ms == highspy.HighsModelStatus.kOptimal:
        st = "optimal"
    elif ms in (highspy.HighsModelStatus.kInfeasible, highspy.HighsModelStatus.kUnboundedOrInfeasible):
        st, x = "infeasible", None
    elif ms == highspy.HighsModelStatus.kTimeLimit:
        st = "time_limit"
    else:
        st = f"error: {h.modelStatusToString(ms)}"
    obj = float(info.objective_function_value) if x is not None else float("nan")
    gap = float(info.mip_gap) if is_mip else (0.0 if st == "optimal" else float("nan"))
    bound = float(info.mip_dual_bound) if is_mip else obj
    rc = np.array(sol.col_dual) if (not is_mip and st == "optimal" and sol.dual_valid) else None
    return _Run(st, x, obj, gap, bound, rc)


#: reduced-cost window, relative to |LP bound|, for the first restricted MIP (doubled when too small)
RC_WINDOW_REL = 1e-5
#: allowance for HiGHS's dual feasibility tolerance when trusting a reduced cost
RC_TOL = 1e-7


def _solve_rc_fixed(m: _HighsArrays, time_limit_s: float, mip_rel_gap: float, threads: int | None) -> _Run:
    """Exact MILP solve that exploits a nearly integral LP relaxation (assignment-like structure).

    1. Solve the LP relaxation: bound ``z_LP`` and reduced costs ``d``. If every integer column is
       integral there, it is optimal for the MILP: done, gap 0.
    2. Reduced-cost fixing: any feasible point with a binary ``j`` at 1 that sits at 0 in the LP costs at
       least ``z_LP + d_j`` (LP duality). So a MILP restricted to the binaries with ``d_j ≤ δ`` (every
       continuous column stays free) either finds a solution of value ``UB ≤ z_LP + δ`` — then no
       excluded binary can appear in a better one, and the global gap is
       ``(UB − min(restricted bound, z_LP + δ − tol)) / |UB|`` — or δ is widened to cover ``UB − z_LP``
       (or ×10 if the restriction was infeasible) and it re-solves; after three rounds, or when the gap
       cannot be certified (near-zero objectives, where the solver's absolute tolerances rule), the full MILP.
    The reported gap is therefore a certified gap for the *full* model."""
    t_end = time.perf_counter() + time_limit_s
    zeros = np.zeros_like(m.integrality)
    lp = _run(m, zeros, m.ub, time_limit_s=time_limit_s, mip_rel_gap=mip_rel_gap, threads=threads)
    if lp.status == "infeasible":
        return lp  # the relaxation is infeasible, so is the MILP
    if lp.status != "optimal" or lp.x is None or lp.reduced_costs is None:
        return _run_full(m, t_end, mip_rel_gap, threads)
    is_int = m.integrality.astype(bool)
    xi = lp.x[is_int]
    if np.all(np.abs(xi - np.rint(xi)) <= 1e-9):
        x = lp.x.copy()
        x[is_int] = np.rint(xi)
        return _Run("optimal", x, lp.objective, 0.0, lp.objective, None)
    z = lp.objective
    delta = RC_WINDOW_REL * max(abs(z), 1e-9)
    for _ in range(3):
        keep = ~is_int | (lp.reduced_costs <= delta + RC_TOL) | (lp.x > 1e-9)
        ub = np.where(keep, m.ub, 0.0)
        left = t_end - time.perf_counter()
        if left <= 0:
            break
        r = _run(m, m.integrality, ub, time_limit_s=left, mip_rel_gap=mip_rel_gap, threads=threads)
        if r.x is None:
            if r.status != "infeasible":
                return r  # time limit without a point, or a solver error
            delta *= 10.0
            continue
        if r.objective <= z + delta:
            bound = min(r.dual_bound, z + delta - RC_TOL)
            gap = max(r.objective - bound, 0.0) / max(abs(r.objective), 1e-12)
            if gap <= mip_rel_gap + 1e-12:
                return _Run("optimal", r.x, r.objective, gap, bound, None)
            # Not certified for the full model (near-zero objectives, where HiGHS's absolute tolerances
            # dominate a relative gap, or a restricted solve that stopped early): solve the full MILP.
            break
        delta = 2.0 * (r.objective - z)
    return _run_full(m, t_end, mip_rel_gap, threads)


def _run_full(m: _HighsArrays, t_end: float, mip_rel_gap: float, threads: int | None) -> _Run:
    """The whole MILP handed to HiGHS with whatever time is left until ``t_end``."""
    left = max(t_end - time.perf_counter(), 0.01)
    return _run(m, m.integrality, m.ub, time_limit_s=left, mip_rel_gap=mip_rel_gap, threads=threads)
