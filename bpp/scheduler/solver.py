"""Solving the CTSS MILP: :func:`solve` builds the model, hands it to HiGHS and returns the verified
optimal plan — or raises, naming what makes the instance infeasible.

Solving exactly, fast (:meth:`bpp.lp.LPParts.solve`): the LP relaxation is solved first — with
the assignment structure it is integral or nearly so (on the 1,000-job benchmark a few dozen of ~7,000
binaries are fractional). Reduced-cost fixing then restricts the MILP to the binaries whose reduced
cost is within δ of the LP bound (all continuous columns stay), HiGHS solves that small MILP, and the
gap it reports is certified against the LP bound for the *full* model (widening δ, or falling back
to the full MILP, when the restriction cannot prove it). ``Plan.mip_gap`` is that certified gap.

Infeasibility: per-job pre-checks (window, horizon, regions, carbon threshold, capacity:
:mod:`bpp.scheduler.eligibility`) first; if HiGHS still proves the model infeasible (jobs competing
for capacity, committed reductions), :func:`bpp.scheduler.diagnosis.diagnose` locates the conflict.
"""

from __future__ import annotations

import numpy as np

from bpp.domain import BoolArray, Instance
from bpp.lp import LPResult
from bpp.plan import Plan, evaluate
from bpp.scheduler.conflicts import SchedulingError
from bpp.scheduler.diagnosis import diagnose
from bpp.scheduler.milp import Model, build_model, extract_plan
from bpp.scheduler.verify import verify_plan
from bpp.storage import RESOLVE_ROUNDS, simultaneous_slots


def solve(instance: Instance, *, verify: bool = True) -> Plan:
    """The optimal CTSS plan. Raises :class:`SchedulingInfeasible` (naming jobs and constraints) when no
    plan exists, :class:`SchedulingError` when HiGHS stops without a feasible plan (e.g. time limit).
    The returned plan is checked by :func:`verify_plan` (``verify=False`` skips that, for benchmarks
    that time the solver alone — they verify afterwards)."""
    model, res = _solve_model(instance, build_model(instance))
    modes = _simultaneous(model, res)
    for round_ in range(RESOLVE_ROUNDS + 1):
        if not modes.any():
            break
        # A solution may still charge and discharge at once where no binary was placed (battery
        # exclusivity ``where_used``), where it costs nothing (ties) or where the site cannot take the
        # surplus (bpp.storage): re-solve with binaries in those slots too — and, as
        # bpp.storage.solve_storage does, in every slot once the rounds are spent.
        model, res = _solve_model(instance, build_model(instance, exclusive_slots=modes))
        both = _simultaneous(model, res)
        if not both.any():
            break
        modes |= both
        if round_ == RESOLVE_ROUNDS - 1:
            modes[:] = True
    plan = _finish(model, res)
    if verify:
        verify_plan(instance, plan)
    return plan


def _solve_model(instance: Instance, model: Model) -> tuple[Model, LPResult]:
    res = model.lp.solve(instance.solver.time_limit_s, instance.solver.mip_rel_gap, instance.solver.threads)
    if res.status == "infeasible":
        raise diagnose(instance)
    if res.x is None:
        raise SchedulingError(
            f"HiGHS stopped with status {res.status!r} and no feasible plan "
            f"({res.n_cols} columns, {res.n_integer} binaries)"
        )
    return model, res


def _simultaneous(model: Model, res: LPResult) -> BoolArray:
    """(n_sites, n_slots) slots in which a solution both charges and discharges a battery."""
    assert res.x is not None
    both = np.zeros((model.instance.n_sites, model.instance.n_slots), dtype=bool)
    for b in model.batteries:
        both[b.site_index] = simultaneous_slots(res.x[b.charge_cols], res.x[b.discharge_cols])
    return both


def _finish(model: Model, res: LPResult, policy: str = "ctss") -> Plan:
    """The plan of a solved model, with the solver's status, gap, size and timing, scored."""
    assert res.x is not None
    plan = extract_plan(model, res.x, policy)
    plan.status = res.status
    plan.mip_gap = res.mip_gap
    plan.solve_time_s = res.solve_time_s
    plan.n_binaries = res.n_integer
    plan.n_columns = res.n_cols
    plan.n_rows = res.n_rows
    plan.metrics = evaluate(model.instance, plan)
    return plan
