"""A provider's load-shift schedule in the running BPP (`GET /{slug}/providers/{provider_id}/schedule`): the agent
rebuilt from the database exactly as every offer and confirm rebuilds it (bpp/agent_service.py `build_agent`: the
stored plan anchor, signal updates and accepted orders), its current optimal plan, and the no-shifting baseline on
the same instance, shaped by the pure bpp/schedule.py."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy.orm import Session

from bpp.agent import ComputeAgent
from bpp.agent_service import build_agent
from bpp.baselines import run_at_release
from bpp.models import Provider
from bpp.planner import ProviderAgent
from bpp.schedule import Horizon, Schedule, SiteSeries, build_schedule, compute_series, storage_site_series
from bpp.storage_agent import StorageAgent


class NoSchedule(LookupError):
    """No schedule to show: the provider is unknown here, or publishes static offers (no planning agent)."""


@dataclass(frozen=True, kw_only=True)
class ScheduleQuery:
    provider_id: str
    start_utc: datetime | None = None
    end_utc: datetime | None = None


def provider_schedule(session: Session, bpp_id: str, query: ScheduleQuery, *, now: datetime) -> Schedule:
    """The provider's schedule over the query's range, as of market time `now` (NoSchedule when there is none)."""
    row = session.get(Provider, (bpp_id, query.provider_id))
    if row is None:
        raise NoSchedule(f"provider_id: no provider {query.provider_id!r} on this platform")
    if row.agent is None or row.agent_anchor_utc is None:
        raise NoSchedule(
            f"provider_id: provider {query.provider_id!r} publishes static offers: it has no planning agent, "
            "so no schedule"
        )
    agent = build_agent(session, row)
    horizon, sites = _series(agent)
    return build_schedule(
        provider_id=query.provider_id,
        resource_type=agent.resource_type,
        horizon=horizon,
        sites=sites,
        commitments=agent.commitments,
        as_of_utc=now,
        start_utc=query.start_utc,
        end_utc=query.end_utc,
    )


def _series(agent: ProviderAgent) -> tuple[Horizon, list[SiteSeries]]:
    if isinstance(agent, ComputeAgent):
        return _compute(agent)
    if isinstance(agent, StorageAgent):
        return _storage(agent)
    raise TypeError(f"no schedule for a {type(agent).__name__}")


def _compute(agent: ComputeAgent) -> tuple[Horizon, list[SiteSeries]]:
    """The optimal plan (the one the offers are derived from) and run-at-release, both on the agent's instance."""
    plan = agent.plan()
    instance = agent.instance
    horizon = Horizon(start_utc=instance.start_utc, slot_minutes=instance.slot_minutes, n_slots=instance.n_slots)
    return horizon, compute_series(instance, plan, run_at_release(instance))


def _storage(agent: StorageAgent) -> tuple[Horizon, list[SiteSeries]]:
    """Each site's storage plan (every order imposed) against its battery left idle."""
    plan = agent.plan()
    carbon = agent.carbon_g_per_kwh
    horizon = Horizon(start_utc=agent.now_utc, slot_minutes=agent.slot_minutes, n_slots=agent.horizon_slots)
    sites = []
    for site in agent.sites:
        scheduled = plan[site.id]
        problem = scheduled.problem
        sites.append(
            storage_site_series(
                site.id,
                idle_net_import_kw=np.asarray(problem.load_kw),
                planned_net_import_kw=scheduled.net_import_kw,
                import_price_gbp_per_mwh=problem.import_price_gbp_per_mwh,
                export_price_gbp_per_mwh=problem.export_price,
                carbon_g_per_kwh=carbon[site.region],
            )
        )
    return horizon, sites
