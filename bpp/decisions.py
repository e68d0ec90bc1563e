"""The decision log: one structured, JSON-ready record per decision the agents take.

Every control action shows here — ``defer``, ``migrate``, ``preempt`` (split around expensive slots),
``run_at_release``, ``green_gating`` / ``gating_waived``, ``battery_discharge`` / ``battery_charge``,
``commit`` / ``refuse`` of an order, and ``replan``. Each job record compares the planned placement
with the reference "run at release at home" on the planning signals (expected), and — after
:func:`settle` — on actual signals (actual). Costs attributed to a job are its own energy times the
price (and carbon) of the slots and regions it runs in, plus its migration cost; on-site solar and the
battery are attributed to the site's battery records, not to jobs.

Records are plain frozen dataclasses with a stable ``to_dict()`` (ISO-8601 UTC times, snake_case keys
with units) so the BPP can store them in Postgres and query by ``job_id``, ``site_id`` and time.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np

from bpp.domain import TOL, BoolArray, FloatArray, Instance, Job, Priority, iso
from bpp.plan import Plan
from bpp.scheduler import fixed_run_fraction


@dataclass(frozen=True)
class Decision:
    decision_id: str
    decided_at_utc: datetime
    action: str
    rationale: str
    site_id: str | None = None
    job_id: str | None = None
    order_id: str | None = None
    actions: tuple[str, ...] = ()
    from_site_id: str | None = None
    start_utc: datetime | None = None
    end_utc: datetime | None = None
    release_utc: datetime | None = None
    deferral_min: int | None = None
    power_kw: float | None = None
    energy_kwh: float | None = None
    expected_cost_gbp: float | None = None
    expected_carbon_kg: float | None = None
    reference_cost_gbp: float | None = None
    reference_carbon_kg: float | None = None
    actual_cost_gbp: float | None = None
    actual_carbon_kg: float | None = None
    actual_reference_cost_gbp: float | None = None
    actual_reference_carbon_kg: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def expected_saving_gbp(self) -> float | None:
        if self.reference_cost_gbp is None or self.expected_cost_gbp is None:
            return None
        return self.reference_cost_gbp - self.expected_cost_gbp

    @property
    def expected_saving_kg(self) -> float | None:
        if self.reference_carbon_kg is None or self.expected_carbon_kg is None:
            return None
        return self.reference_carbon_kg - self.expected_carbon_kg

    @property
    def actual_saving_gbp(self) -> float | None:
        if self.actual_reference_cost_gbp is None or self.actual_cost_gbp is None:
            return None
        return self.actual_reference_cost_gbp - self.actual_cost_gbp

    @property
    def actual_saving_kg(self) -> float | None:
        if self.actual_reference_carbon_kg is None or self.actual_carbon_kg is None:
            return None
        return self.actual_reference_carbon_kg - self.actual_carbon_kg

    def to_dict(self) -> dict[str, Any]:
        def t(x: datetime | None) -> str | None:
            return iso(x) if x is not None else None

        return {
            "decision_id": self.decision_id,
            "decided_at_utc": t(self.decided_at_utc),
            "action": self.action,
            "actions": list(self.actions or (self.action,)),
            "job_id": self.job_id,
            "site_id": self.site_id,
            "from_site_id": self.from_site_id,
            "order_id": self.order_id,
            "start_utc": t(self.start_utc),
            "end_utc": t(self.end_utc),
            "release_utc": t(self.release_utc),
            "deferral_min": self.deferral_min,
            "power_kw": self.power_kw,
            "energy_kwh": self.energy_kwh,
            "expected_cost_gbp": self.expected_cost_gbp,
            "expected_carbon_kg": self.expected_carbon_kg,
            "reference_cost_gbp": self.reference_cost_gbp,
            "reference_carbon_kg": self.reference_carbon_kg,
            "expected_saving_gbp": self.expected_saving_gbp,
            "expected_saving_kg": self.expected_saving_kg,
            "actual_cost_gbp": self.actual_cost_gbp,
            "actual_carbon_kg": self.actual_carbon_kg,
            "actual_saving_gbp": self.actual_saving_gbp,
            "actual_saving_kg": self.actual_saving_kg,
            "rationale": self.rationale,
            "details": self.details,
        }


def fmt_gbp(x: float) -> str:
    return f"£{x:,.2f}" if abs(x) >= 1 or x == 0 else f"£{x:.4f}"


def fmt_kg(x: float) -> str:
    return f"{x:,.1f}" if abs(x) >= 1 or x == 0 else f"{x:.3f}"


def fmt_power(kw: float) -> str:
    return f"{kw / 1000:.1f} MW" if kw >= 1000 else f"{kw:.0f} kW"


def _reference_fraction(instance: Instance, job: Job) -> FloatArray:
    """(n_sites, n_slots) run-at-release-at-home placement of a job (truncated at the horizon)."""
    ref = np.zeros((instance.n_sites, instance.n_slots))
    ref[instance.site_index(job.running_at_site or job.site_id)] = fixed_run_fraction(instance, job)
    return ref


def _job_cost(
    instance: Instance, job: Job, frac: FloatArray, price: FloatArray, carbon: FloatArray
) -> tuple[float, float]:
    e_mwh = frac * job.power_kw * instance.mwh_per_kw_slot
    home = instance.site_index(job.site_id)
    away = frac.sum() - frac[home].sum()
    mig = job.migration_cost_gbp * away / job.work_slots if job.movable else 0.0
    return float((e_mwh * price).sum() + mig), float((e_mwh * carbon).sum())


def decisions_for_plan(
    instance: Instance, plan: Plan, decided_at_utc: datetime | None = None, plan_id: str = "plan"
) -> list[Decision]:
    """One record per job the plan touches, and per battery charge/discharge block."""
    at = decided_at_utc or instance.start_utc
    price = instance.price_matrix()
    carbon = instance.carbon_matrix()
    caps = instance.commitment_cap_by_slot_kw()
    acts = instance.actions
    green = np.stack([s.green_mask(acts.green_solar_fraction) for s in instance.sites])
    waived = set(plan.gating_waived)
    out: list[Decision] = []
    for jx, job in enumerate(instance.jobs):
        frac = plan.run_fraction[jx]
        on = np.argwhere(frac > TOL)
        if len(on) == 0:
            continue
        sites_used = sorted(set(on[:, 0].tolist()))
        first, last = int(on[:, 1].min()), int(on[:, 1].max())
        home = instance.site_index(job.site_id)
        ref = _reference_fraction(instance, job)
        cost, co2 = _job_cost(instance, job, frac, price, carbon)
        rcost, rco2 = _job_cost(instance, job, ref, price, carbon)
        release = max(job.release_slot, 0)
        deferral_slots = first - release
        actions: list[str] = []
        if not job.movable:
            actions.append("run_at_release" if job.running_at_site is None else "continue_running")
        else:
            if any(k != home for k in sites_used):
                actions.append("migrate")
            if deferral_slots > 0:
                actions.append("defer")
            n_on = int((frac.sum(axis=0) > TOL).sum())
            if job.preemptible and (last - first + 1 > n_on or np.any(frac[frac > TOL] < 1 - TOL)):
                actions.append("preempt")
            if acts.renewable_gating and job.priority is Priority.BATCH:
                actions.append("gating_waived" if job.id in waived else "green_gating")
            if not actions:
                actions.append("run_at_release")
        main = actions[0]
        site = instance.sites[sites_used[-1] if main == "migrate" else sites_used[0]]
        why = _reason(
            instance,
            job,
            main=main,
            actions=actions,
            ref=ref,
            frac=frac,
            price=price,
            carbon=carbon,
            caps=caps,
            green=green,
        )
        head = {
            "migrate": f"migrated {instance.sites[home].id} → {site.id}"
            + (f", deferred {deferral_slots * instance.slot_minutes} min" if deferral_slots > 0 else ""),
            "defer": f"deferred {deferral_slots * instance.slot_minutes} min at {site.id}",
            "preempt": f"split into {int((frac.sum(axis=0) > TOL).sum())} slot(s) at {site.id}",
            "green_gating": f"gated to green slots at {site.id}",
            "gating_waived": f"run at {site.id} (green gating waived)",
            "run_at_release": f"runs at release at {site.id}",
            "continue_running": f"keeps running at {site.id}",
        }[main]
        saving, saving_kg = rcost - cost, rco2 - co2
        rationale = (
            f"Job {job.id} ({fmt_power(job.power_kw)}) {head}: {why}; expected saving "
            f"{fmt_gbp(saving)} and {fmt_kg(saving_kg)} kgCO2"
        )
        out.append(
            Decision(
                decision_id=f"{plan_id}:job:{job.id}",
                decided_at_utc=at,
                action=main,
                actions=tuple(actions),
                rationale=rationale,
                site_id=site.id,
                job_id=job.id,
                from_site_id=instance.sites[home].id if main == "migrate" else None,
                start_utc=instance.slot_start(first),
                end_utc=instance.slot_start(last + 1),
                release_utc=instance.slot_start(job.release_slot),
                deferral_min=int(deferral_slots * instance.slot_minutes),
                power_kw=job.power_kw,
                energy_kwh=float(frac.sum() * job.power_kw * instance.mwh_per_kw_slot * 1000),
                expected_cost_gbp=cost,
                expected_carbon_kg=co2,
                reference_cost_gbp=rcost,
                reference_carbon_kg=rco2,
                details={
                    "priority": str(job.priority),
                    "preemptible": job.preemptible,
                    "carbon_threshold_g_per_kwh": job.carbon_threshold_g_per_kwh,
                    "sites": [instance.sites[k].id for k in sites_used],
                    # the job must have finished by then (the plan's end: end_utc ≤ deadline_utc)
                    "deadline_utc": instance.slot_start(job.deadline_slot).isoformat().replace("+00:00", "Z"),
                },
            )
        )
    out.extend(_battery_decisions(instance, plan, at=at, plan_id=plan_id, price=price, carbon=carbon, caps=caps))
    return out


def _mean(a: FloatArray, w: FloatArray) -> float:
    tot = w.sum()
    return float((a * w).sum() / tot) if tot > 0 else float("nan")


def _reason(
    instance: Instance,
    job: Job,
    *,
    main: str,
    actions: list[str],
    ref: FloatArray,
    frac: FloatArray,
    price: FloatArray,
    carbon: FloatArray,
    caps: FloatArray,
    green: BoolArray,
) -> str:
    """Why the plan differs from run-at-release, most specific cause first."""
    if main in ("run_at_release", "continue_running"):
        why = (
            "critical work runs at release"
            if job.priority is Priority.CRITICAL
            else (
                "already running; a re-plan never moves running work"
                if main == "continue_running"
                else "release slots are already the best"
            )
        )
        return why
    home = instance.site_index(job.site_id)
    rs = np.flatnonzero(ref[home] > TOL)
    thr = job.carbon_threshold_g_per_kwh
    parts: list[str] = []
    if thr is not None and len(rs) and np.any(carbon[home, rs] > thr + TOL):
        parts.append(f"carbon {carbon[home, rs].max():.0f} > threshold {thr:g} gCO2/kWh at release")
    if instance.actions.renewable_gating and "green_gating" in actions and len(rs) and not green[home, rs].all():
        parts.append(f"release slots not green (solar < {instance.actions.green_solar_fraction:.0%} of capacity)")
    if len(rs) and np.isfinite(caps[home, rs]).any():
        orders = [c.order_id for c in instance.commitments if c.site_id == job.site_id]
        parts.append(f"committed reduction {', '.join(orders)} over its release slots")
    rp, rc = _mean(price[home], ref[home]), _mean(carbon[home], ref[home])
    wts = frac.sum(axis=0)
    sp = _mean((price * frac).sum(axis=0) / np.maximum(wts, TOL), wts)
    sc = _mean((carbon * frac).sum(axis=0) / np.maximum(wts, TOL), wts)
    parts.append(f"price £{rp:.0f} → £{sp:.0f}/MWh, carbon {rc:.0f} → {sc:.0f} gCO2/kWh")
    if "migrate" in actions and job.migration_cost_gbp:
        parts.append(f"migration cost £{job.migration_cost_gbp:.2f}")
    return "; ".join(parts)


def _overlap(x: tuple[int, int], y: tuple[int, int]) -> bool:
    return x[0] < y[1] and x[1] > y[0]


def _blocks(mask: BoolArray) -> list[tuple[int, int]]:
    padded = np.concatenate(([False], mask, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist(), strict=True))


def _battery_decisions(
    instance: Instance,
    plan: Plan,
    *,
    at: datetime,
    plan_id: str,
    price: FloatArray,
    carbon: FloatArray,
    caps: FloatArray,
) -> list[Decision]:
    out: list[Decision] = []
    for k, site in enumerate(instance.sites):
        if site.battery is None:
            continue
        for kind, arr in (("battery_discharge", plan.discharge_kw[k]), ("battery_charge", plan.charge_kw[k])):
            for a, b in _blocks(arr > 1e-3):
                e_mwh = arr[a:b] * instance.mwh_per_kw_slot
                cost = float((e_mwh * price[k, a:b]).sum())
                co2 = float((e_mwh * carbon[k, a:b]).sum())
                committed = np.isfinite(caps[k, a:b]).any()
                orders = [
                    c.order_id
                    for c in instance.commitments
                    if c.site_id == site.id and _overlap(instance.window_slots(c.start_utc, c.end_utc), (a, b))
                ]
                if kind == "battery_discharge":
                    why = (
                        f"covers site load during committed reduction {', '.join(orders)}"
                        if committed
                        else f"price £{_mean(price[k, a:b], arr[a:b]):.0f}/MWh, carbon "
                        f"{_mean(carbon[k, a:b], arr[a:b]):.0f} gCO2/kWh: avoids grid import"
                    )
                    sign = -1.0
                else:
                    why = (
                        f"charges at price £{_mean(price[k, a:b], arr[a:b]):.0f}/MWh, carbon "
                        f"{_mean(carbon[k, a:b], arr[a:b]):.0f} gCO2/kWh"
                    )
                    sign = 1.0
                verb = "discharges" if kind == "battery_discharge" else "charges"
                out.append(
                    Decision(
                        decision_id=f"{plan_id}:{kind}:{site.id}:{a}",
                        decided_at_utc=at,
                        action=kind,
                        actions=(kind,),
                        rationale=(
                            f"Battery at {site.id} {verb} {float(e_mwh.sum() * 1000):,.0f} kWh "
                            f"(≤ {arr[a:b].max():,.0f} kW) {iso(instance.slot_start(a))}–"
                            f"{iso(instance.slot_start(b))}: {why}"
                        ),
                        site_id=site.id,
                        order_id=orders[0] if orders else None,
                        start_utc=instance.slot_start(a),
                        end_utc=instance.slot_start(b),
                        power_kw=float(arr[a:b].max()),
                        energy_kwh=float(e_mwh.sum() * 1000),
                        expected_cost_gbp=sign * cost,
                        expected_carbon_kg=sign * co2,
                        details={"orders": orders},
                    )
                )
    return out


def settle(decisions: list[Decision], instance_actual: Instance, plan: Plan) -> list[Decision]:
    """Fill the ``actual_*`` fields of job and battery records with the same placements scored on actual
    signals (``instance_actual`` = the planning instance with actual price and carbon)."""
    price = instance_actual.price_matrix()
    carbon = instance_actual.carbon_matrix()
    by_job = {j.id: (jx, j) for jx, j in enumerate(instance_actual.jobs)}
    out = []
    for d in decisions:
        if d.job_id is not None and d.job_id in by_job:
            jx, job = by_job[d.job_id]
            cost, co2 = _job_cost(instance_actual, job, plan.run_fraction[jx], price, carbon)
            rcost, rco2 = _job_cost(instance_actual, job, _reference_fraction(instance_actual, job), price, carbon)
            out.append(
                replace(
                    d,
                    actual_cost_gbp=cost,
                    actual_carbon_kg=co2,
                    actual_reference_cost_gbp=rcost,
                    actual_reference_carbon_kg=rco2,
                )
            )
        elif d.action in ("battery_discharge", "battery_charge") and d.site_id and d.start_utc and d.end_utc:
            k = instance_actual.site_index(d.site_id)
            a, b = instance_actual.slot_of(d.start_utc), instance_actual.slot_of(d.end_utc)
            arr = (plan.discharge_kw if d.action == "battery_discharge" else plan.charge_kw)[k, a:b]
            sign = -1.0 if d.action == "battery_discharge" else 1.0
            e = arr * instance_actual.mwh_per_kw_slot
            out.append(
                replace(
                    d,
                    actual_cost_gbp=sign * float((e * price[k, a:b]).sum()),
                    actual_carbon_kg=sign * float((e * carbon[k, a:b]).sum()),
                )
            )
        else:
            out.append(d)
    return out


def event(action: str, rationale: str, decided_at_utc: datetime, decision_id: str, **kw: Any) -> Decision:
    """A record for an agent-level event (``commit``, ``refuse``, ``replan``)."""
    return Decision(
        decision_id=decision_id,
        decided_at_utc=decided_at_utc,
        action=action,
        actions=(action,),
        rationale=rationale,
        **kw,
    )


def query(
    decisions: list[Decision],
    *,
    job_id: str | None = None,
    site_id: str | None = None,
    action: str | None = None,
    start_utc: datetime | None = None,
    end_utc: datetime | None = None,
) -> list[Decision]:
    """Filter records by job, site, action and overlap with ``[start_utc, end_utc)``."""
    out = []
    for d in decisions:
        if job_id is not None and d.job_id != job_id:
            continue
        if site_id is not None and d.site_id != site_id:
            continue
        if action is not None and action not in (d.actions or (d.action,)):
            continue
        s = d.start_utc or d.decided_at_utc
        e = d.end_utc or d.decided_at_utc
        if start_utc is not None and e < start_utc:
            continue
        if end_utc is not None and s >= end_utc:
            continue
        out.append(d)
    return out


@dataclass(frozen=True)
class OfferTerms:
    """What a buyer reads of one published offer: its kW and price."""

    available_kw: float
    price_gbp_per_mwh: float


def offer_changes(
    before: dict[str, OfferTerms], after: dict[str, OfferTerms], withdrawn_reasons: dict[str, str]
) -> dict[str, list[dict[str, Any]]]:
    """What a re-plan changed in the offers, per offer id: added, withdrawn (with why), and those whose kW
    or price changed (before → after). Offers published unchanged are not listed."""
    changed = []
    for offer_id in sorted(before.keys() & after.keys()):
        b, a = before[offer_id], after[offer_id]
        diff = {
            name: {"before": getattr(b, name), "after": getattr(a, name)}
            for name in ("available_kw", "price_gbp_per_mwh")
            if abs(getattr(b, name) - getattr(a, name)) > TOL
        }
        if diff:
            changed.append({"offer_id": offer_id, **diff})
    return {
        "added": [{"offer_id": k, **vars(after[k])} for k in sorted(after.keys() - before.keys())],
        "withdrawn": [
            {"offer_id": k, **vars(before[k]), "reason": withdrawn_reasons.get(k, "")}
            for k in sorted(before.keys() - after.keys())
        ],
        "changed": changed,
    }


def replan_record(
    *, provider_id: str, decided_at_utc: datetime, anchor_utc: datetime, why: str, changes: dict[str, list[Any]]
) -> Decision:
    """The decision-log record of one re-plan of the BPP's catalog (bpp/replan.py): why, from when, and
    what changed in the offers."""
    counts = ", ".join(f"{len(changes[k])} {k}" for k in ("added", "withdrawn", "changed"))
    return event(
        "replan",
        f"Re-plan from {iso(anchor_utc)} ({why}): offers {counts}.",
        decided_at_utc,
        f"{provider_id}:replan-{iso(decided_at_utc)}",
        start_utc=anchor_utc,
        details={"anchor_utc": iso(anchor_utc), "offers": changes},
    )
