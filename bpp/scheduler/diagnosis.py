"""Locating the conflict when HiGHS proves a model infeasible (the pre-checks passed, so the jobs only
fail together): an *elastic* re-solve makes capacity and import caps soft with a penalty on the
violation and minimises the total violation; the rows it has to violate, and the jobs it places there,
are the conflict.
"""

from __future__ import annotations

import numpy as np

from bpp.domain import TOL, Instance
from bpp.scheduler.conflicts import Conflict, SchedulingInfeasible
from bpp.scheduler.eligibility import orders_over, slot_span_utc, spans
from bpp.scheduler.milp import build_model, extract_plan

#: slack (kW) above which an elastic row counts as violated
VIOLATED_KW = 1e-5


def diagnose(instance: Instance) -> SchedulingInfeasible:
    """Locate the conflict in a model HiGHS proved infeasible, by a two-stage elastic re-solve.

    Stage 1 makes capacity rows and grid-import caps soft and minimises the total violation (kW·slots):
    the rows it must violate are the constraints in conflict. Stage 2 keeps that minimal violation and
    moves every job it can *out* of the violated site-slots (minimising the movable load left there),
    so the jobs it still places there are exactly those that cannot be anywhere else — the jobs in
    conflict — rather than bystanders the first stage happened to put there."""
    model = build_model(instance, elastic=True, skip_prechecks=True)
    lp = model.lp
    tl, threads = instance.solver.time_limit_s, instance.solver.threads
    res = lp.solve(tl, 1e-6, threads)
    if res.x is None:
        return SchedulingInfeasible(
            [
                Conflict(
                    "unknown", (), f"HiGHS proved the model infeasible; locating the conflict failed ({res.status})"
                )
            ],
            "solver",
        )
    assert model.elastic_cap_cols is not None and model.elastic_import_cols is not None
    inst = instance
    S, T = inst.n_sites, inst.n_slots
    cap_slack = res.x[model.elastic_cap_cols]
    imp_slack = np.zeros((S, T))
    for (k, t), c in model.elastic_import_cols.items():
        imp_slack[k, t] = res.x[c]
    for k, slots, c in model.elastic_mean_cols or []:  # committed half hours of 15-minute slots
        imp_slack[k, list(slots)] = np.maximum(imp_slack[k, list(slots)], res.x[c])
    violated = (cap_slack > VIOLATED_KW) | (imp_slack > VIOLATED_KW)
    x = res.x
    if violated.any():
        # stage 2: total violation ≤ stage-1 optimum; minimise job load in the violated site-slots
        slack_cols = np.concatenate(
            [
                model.elastic_cap_cols.ravel(),
                np.fromiter(model.elastic_import_cols.values(), dtype=np.int64, count=len(model.elastic_import_cols)),
                np.array([c for _, _, c in model.elastic_mean_cols or []], dtype=np.int64),
            ]
        )
        row = lp.add_rows(np.array([-np.inf]), np.array([res.objective * (1 + 1e-7) + 1e-6]))
        lp.add_entries(np.zeros(len(slack_cols), dtype=np.int64) + row[0], slack_cols, np.ones(len(slack_cols)))
        a_mat = lp.to_csc()
        load_cost = np.asarray(a_mat[model.capacity_rows[violated]].sum(axis=0)).ravel()
        job_cols = np.concatenate([model.x_cols, model.y_cols]).astype(np.int64)
        lp.clear_objective()
        lp.set_costs(job_cols, load_cost[job_cols])
        res2 = lp.solve(tl, 1e-6, threads)
        if res2.x is not None:
            x = res2.x
    plan = extract_plan(model, x)

    def jobs_at(k: int, a: int, b: int) -> tuple[str, ...]:
        return tuple(j.id for jx, j in enumerate(inst.jobs) if plan.run_fraction[jx, k, a:b].sum() > TOL)

    conflicts: list[Conflict] = []
    caps = inst.commitment_cap_by_slot_kw()
    for k, site in enumerate(inst.sites):
        for a, b in spans(np.flatnonzero(cap_slack[k] > VIOLATED_KW)):
            start_utc, end_utc = slot_span_utc(inst, a, b)
            conflicts.append(
                Conflict(
                    "capacity",
                    jobs_at(k, a, b),
                    f"jobs that cannot run elsewhere within their windows need up to "
                    f"{cap_slack[k, a:b].max():.3f} kW more than capacity",
                    site_id=site.id,
                    start_utc=start_utc,
                    end_utc=end_utc,
                )
            )
        for a, b in spans(np.flatnonzero(imp_slack[k] > VIOLATED_KW)):
            orders = orders_over(inst, site.id, a, b)
            kind = "commitment" if np.isfinite(caps[k, a:b]).any() and orders else "import_limit"
            start_utc, end_utc = slot_span_utc(inst, a, b)
            conflicts.append(
                Conflict(
                    kind,
                    jobs_at(k, a, b),
                    f"grid import must exceed its cap by up to {imp_slack[k, a:b].max():.3f} kW "
                    f"(site load that cannot move, after battery and solar)",
                    site_id=site.id,
                    start_utc=start_utc,
                    end_utc=end_utc,
                    order_ids=orders,
                )
            )
    if not conflicts:
        conflicts.append(
            Conflict("unknown", (), "HiGHS proved the model infeasible but the elastic model needs no violation")
        )
    return SchedulingInfeasible(conflicts, "solver")
