"""CTSS: the carbon- and price-aware temporal/spatial scheduler, an exact MILP solved by HiGHS.

Pure (numpy, scipy, highspy): no web framework, database or task queue. Time is always a parameter
(slots of an :class:`bpp.domain.Instance`), never read from a clock. Modules, in dependency order:

- :mod:`~bpp.scheduler.conflicts` — :class:`Conflict`, :class:`SchedulingInfeasible`,
  :class:`SchedulingError`: why an instance has no plan.
- :mod:`~bpp.scheduler.eligibility` — where and when each job may run (windows, sites, carbon
  thresholds, green gating, fixed work), and the per-job pre-checks.
- :mod:`~bpp.scheduler.milp` — the formulation: :func:`build_model` (as named steps),
  :func:`extract_plan`, the tie-breaker.
- :mod:`~bpp.scheduler.verify` — the independent plan checker: :func:`plan_violations`,
  :func:`verify_plan`.
- :mod:`~bpp.scheduler.diagnosis` — the elastic re-solve that names the conflict when HiGHS proves a
  model infeasible.
- :mod:`~bpp.scheduler.solver` — :func:`solve`: build, solve, diagnose or verify.
- :mod:`~bpp.scheduler.headroom` — :func:`max_reduction_kw`, the offerable reduction of a window.
- :mod:`~bpp.scheduler.receding_horizon` — :func:`advance_jobs`, :func:`replan`,
  :func:`battery_carried_over`.

The plan type and its scoring are one layer down, in :mod:`bpp.plan` (the storage block and the
baselines use them too); the LP layer is :mod:`bpp.lp`, the battery block :mod:`bpp.storage`.
"""

from bpp.scheduler.conflicts import Conflict, SchedulingError, SchedulingInfeasible
from bpp.scheduler.eligibility import (
    Eligibility,
    carbon_ok_mask,
    contiguous_starts,
    eligibility,
    fixed_load_kw,
    fixed_run_fraction,
    runs_of,
)
from bpp.scheduler.headroom import max_reduction_kw
from bpp.scheduler.milp import TIE_BREAK, Model, build_model, extract_plan, tie_break_bound, tie_break_cost
from bpp.scheduler.receding_horizon import advance_jobs, battery_carried_over, replan
from bpp.scheduler.solver import solve
from bpp.scheduler.verify import PlanViolation, plan_violations, verify_plan

__all__ = [
    "TIE_BREAK",
    "Conflict",
    "Eligibility",
    "Model",
    "PlanViolation",
    "SchedulingError",
    "SchedulingInfeasible",
    "advance_jobs",
    "battery_carried_over",
    "build_model",
    "carbon_ok_mask",
    "contiguous_starts",
    "eligibility",
    "extract_plan",
    "fixed_load_kw",
    "fixed_run_fraction",
    "max_reduction_kw",
    "plan_violations",
    "replan",
    "runs_of",
    "solve",
    "tie_break_bound",
    "tie_break_cost",
    "verify_plan",
]
