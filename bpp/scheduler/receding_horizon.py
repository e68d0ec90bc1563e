"""Receding horizon: moving an instance and its plan forward to "now" and re-planning from there, with
the work already done counted, running work left where it is and batteries continuing from the state
of charge the plan left them at."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from bpp.domain import TOL, Battery, CommittedReduction, FloatArray, Instance, Job
from bpp.plan import Plan
from bpp.scheduler.solver import solve


def advance_jobs(instance: Instance, plan: Plan, now_slot: int) -> tuple[list[Job], list[str]]:
    """The jobs of ``instance`` re-expressed from slot ``now_slot`` (which becomes slot 0), with the work
    ``plan`` did before it counted as done. Returns (remaining jobs, ids of completed jobs).

    - finished work is dropped;
    - a contiguous (or critical) job that has started keeps running where it is: it becomes a fixed
      ``running_at_site`` job from slot 0 — already-running work is never moved by a re-plan;
    - a preemptible job that has started keeps its progress (``work_done_slots``) and may be re-placed;
      its migration cost is now counted from the site it last ran at (that is where its checkpoint is);
    - release and deadline shift by ``now_slot`` (a release may become negative: already released)."""
    if not 0 <= now_slot <= instance.n_slots:
        raise ValueError(f"now_slot {now_slot} outside 0..{instance.n_slots}")
    out: list[Job] = []
    done_ids: list[str] = []
    for jx, job in enumerate(instance.jobs):
        f = plan.run_fraction[jx, :, :now_slot]
        done = float(f.sum())
        remaining = job.work_slots - done
        if remaining <= TOL:
            done_ids.append(job.id)
            continue
        shifted = replace(job, release_slot=job.release_slot - now_slot, deadline_slot=job.deadline_slot - now_slot)
        if done <= TOL:
            if job.running_at_site is not None:  # was running but paused? cannot happen; keep fixed
                shifted = replace(shifted, release_slot=0)
            out.append(shifted)
            continue
        ran = np.argwhere(f > TOL)
        last_site = instance.sites[int(ran[np.argmax(ran[:, 1]), 0])].id  # where its latest slot ran
        new_done = job.work_done_slots + done
        if job.preemptible:
            out.append(replace(shifted, work_done_slots=new_done, site_id=last_site))
        else:
            new_done = round(new_done)
            out.append(replace(shifted, work_done_slots=float(new_done), running_at_site=last_site, release_slot=0))
    return out, done_ids


def battery_carried_over(battery: Battery, soc_kwh: float) -> Battery:
    """The battery as a re-plan starts it: at the state of charge the previous plan left it at (clamped
    to its SoC bounds), still owing the terminal level it owed before (its old initial level if none)."""
    soc = soc_kwh / battery.energy_kwh
    soc = min(max(soc, battery.soc_min_fraction), battery.soc_max_fraction)
    term = battery.terminal_soc_fraction if battery.terminal_soc_fraction is not None else battery.initial_soc_fraction
    return replace(battery, initial_soc_fraction=soc, terminal_soc_fraction=min(term, battery.soc_max_fraction))


def replan(
    instance: Instance,
    plan: Plan,
    now_slot: int,
    *,
    price_gbp_per_mwh: dict[str, FloatArray] | None = None,
    carbon_g_per_kwh: dict[str, FloatArray] | None = None,
    commitments: tuple[CommittedReduction, ...] | None = None,
) -> tuple[Instance, Plan]:
    """Re-plan from ``now_slot`` to the end of the current horizon with running work fixed, on updated
    signals (arrays for the remaining slots, by region; omitted regions keep the current ones) and
    commitments. Returns the new (shifted) instance and its optimal plan."""
    n = instance.n_slots - now_slot
    if n <= 0:
        raise ValueError("nothing left to re-plan: now_slot is at or past the horizon end")
    jobs, _ = advance_jobs(instance, plan, now_slot)
    price = {r: a[now_slot:] for r, a in instance.price_gbp_per_mwh.items()}
    carbon = {r: a[now_slot:] for r, a in instance.carbon_g_per_kwh.items()}
    price.update(price_gbp_per_mwh or {})
    carbon.update(carbon_g_per_kwh or {})
    new = replace(
        instance,
        start_utc=instance.slot_start(now_slot),
        n_slots=n,
        sites=tuple(s.sliced(now_slot, instance.n_slots) for s in instance.sites),
        jobs=tuple(jobs),
        price_gbp_per_mwh=price,
        carbon_g_per_kwh=carbon,
        commitments=instance.commitments if commitments is None else tuple(commitments),
    )
    sites = []
    for k, s in enumerate(new.sites):
        if s.battery is not None and instance.actions.storage_coordination and now_slot > 0:
            # the battery continues from the SoC the plan left it at
            s = replace(s, battery=battery_carried_over(s.battery, float(plan.soc_kwh[k, now_slot - 1])))
        sites.append(s)
    new = replace(new, sites=tuple(sites))
    return new, solve(new)
