"""The agent behind a BPP provider (issue 3 wiring) — a compute agent, or a storage agent for a
battery-only provider (:mod:`bpp.planner`: one planner per site): the catalog is derived from the
provider's own optimal schedule, a confirm adds the reduction as a constraint and re-plans the whole
site with every order imposed (an order that cannot be honoured is refused at confirm, never broken
later), and every decision is stored.

Agents live in no process: any process (the BPP web app, any Celery worker) rebuilds the same agent
from the provider row — its config and the instant its plan starts — then replays the orders already
accepted, in acceptance order, so baselines are frozen exactly as they were at each confirm.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from bpp.agent import CommitRefused
from bpp.catalog import CommitmentError, ProviderConfig
from bpp.decisions import Decision as AgentDecision
from bpp.domain import SLOT
from bpp.metered_history import NoHistory, ledger_history
from bpp.models import Decision, Offer, Order, OrderEvent, Provider
from bpp.paid_reduction import expected_paid_kw, ten_of_ten_kw
from bpp.planner import ProviderAgent, agent_from_config
from bpp.signal_providers import SignalUpdate, analogue_provider, signal_provider_from, updated_provider
from grid.signals import coverage
from kernel import clock
from schemas.flex import FlexOfferSpec
from schemas.limits import Name

log = structlog.get_logger(__name__)

# A site's metered history, mean kW per half hour by period start (UTC), by site id: read from the ledger
# (bpp/metered_history.py); a `NoHistory` says why there is none, and the offer's expected paid is null with it.
MeteredHistory = Callable[[str], Mapping[datetime, float]]


def no_metered_history(site_id: str) -> Mapping[datetime, float]:
    return {}


def metered_history_of(provider: ProviderConfig, now: datetime | None = None) -> MeteredHistory:
    """The provider's sites' metered history for one catalog build, from the ledger (market time `now`)."""
    return ledger_history(provider, now=now)


COMMITTED = ("ACCEPTED", "IN-PROGRESS")


def anchor_for(now: datetime, window_slots: int) -> datetime:
    """Plans start on a multiple of the offer window from UTC midnight, so offer windows line up with
    the clock (16:00–18:00, not 15:30–17:30)."""
    step = timedelta(minutes=30 * max(window_slots, 1))
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight + step * ((now - midnight) // step)


def build_agent(
    session: Session,
    row: Provider,
    *,
    exclude_order: str | None = None,
    data_dir: Path | None = None,
    anchor_utc: datetime | None = None,
    updates: Sequence[SignalUpdate] | None = None,
) -> ProviderAgent:
    """The provider's one planner (compute or storage, by its config's ``kind``) with every order
    accepted so far imposed, in acceptance order. The plan starts at the row's anchor and applies its
    stored signal updates unless a re-plan (bpp/replan.py) gives others."""
    anchor = anchor_utc or row.agent_anchor_utc
    assert row.agent is not None and anchor is not None
    cfg: dict[str, Any] = dict(row.agent)
    cfg["start_utc"] = anchor.isoformat()
    cfg["provider_id"] = row.provider_id
    base = signal_provider_from(cfg.get("signals", {}), data_dir)
    signals = updated_provider(
        analogue_provider(base, lambda region: coverage(region, data_dir)),
        stored_updates(row) if updates is None else updates,
    )
    agent = agent_from_config(cfg, signals=signals, data_dir=data_dir)
    for order, site_id in accepted_orders(session, row):
        if order.id == exclude_order or order.window_start < anchor:
            continue  # started before this plan: already part of the running load
        agent.commit(order.id, site_id, order.window_start, order.window_end, order.power_kw)
    return agent


def stored_updates(row: Provider) -> list[SignalUpdate]:
    """The signal updates the provider's plans apply (bpp/replan.py stores them)."""
    return [SignalUpdate.from_dict(u) for u in row.signal_updates or ()]


def accepted_orders(session: Session, row: Provider) -> list[tuple[Order, str]]:
    accepted_at = (
        select(OrderEvent.at)
        .where(OrderEvent.order_id == Order.id, OrderEvent.to_state == "ACCEPTED")
        .correlate(Order)
        .scalar_subquery()
    )
    q = (
        select(Order, Offer.location_id)
        .join(
            Offer,
            (Offer.bpp_id == Order.bpp_id)
            & (Offer.provider_id == Order.provider_id)
            & (Offer.item_id == Order.item_id),
        )
        .where(Order.bpp_id == row.bpp_id, Order.provider_id == row.provider_id, Order.state.in_(COMMITTED))
        .order_by(accepted_at, Order.id)
    )
    return [(o, site) for o, site in session.execute(q)]


def store_decisions(session: Session, bpp_id: str, provider_id: str, decisions: list[AgentDecision]) -> int:
    n = 0
    for d in decisions:
        rec = d.to_dict()
        n += len(
            session.execute(
                insert(Decision)
                .values(
                    bpp_id=bpp_id,
                    provider_id=provider_id,
                    decision_id=d.decision_id,
                    action=d.action,
                    job_id=d.job_id,
                    site_id=d.site_id,
                    order_id=d.order_id,
                    start_utc=d.start_utc,
                    end_utc=d.end_utc,
                    decided_at_utc=d.decided_at_utc,
                    rationale=d.rationale,
                    record=rec,
                )
                .on_conflict_do_nothing(constraint="decisions_once")
                .returning(Decision.id)
            ).all()
        )
    return n


def publish(
    session: Session,
    bpp_id: str,
    provider: ProviderConfig,
    now: datetime | None = None,
    data_dir: Path | None = None,
    *,
    history: MeteredHistory | None = None,
) -> list[FlexOfferSpec]:
    """(Re)plan the provider's agent from `now` and publish the offers its optimal plan leaves, each with its
    expected paid reduction against `history` (default: the site's metered history on the ledger)."""
    assert provider.agent is not None
    window_slots = int(provider.agent.get("offers", {}).get("window_slots", 4))
    now = now or clock.now()
    anchor = anchor_for(now, window_slots)
    row = session.get(Provider, (bpp_id, provider.id))
    assert row is not None  # sync_platform upserts it first
    row.agent, row.agent_anchor_utc = provider.agent, anchor
    session.flush()
    agent = build_agent(session, row, data_dir=data_dir)
    specs = catalog_of(agent, history or metered_history_of(provider, now))
    stored = store_decisions(session, bpp_id, provider.id, agent.decisions())
    log.info(
        "agent offers published",
        provider=provider.id,
        offers=len(specs),
        decisions=stored,
        anchor=anchor.isoformat(),
        objective=agent.summary()["metrics"].get("objective"),
    )
    return specs


def preview(
    provider: ProviderConfig, now: datetime, data_dir: Path | None = None, *, history: MeteredHistory | None = None
) -> list[FlexOfferSpec]:
    """The offers the provider's agent would publish if it joined at `now`: the same plan as `publish`, with
    no database and no orders (`flexmarket provider validate`)."""
    assert provider.agent is not None
    window_slots = int(provider.agent.get("offers", {}).get("window_slots", 4))
    cfg = {**provider.agent, "start_utc": anchor_for(now, window_slots).isoformat(), "provider_id": provider.id}
    base = signal_provider_from(cfg.get("signals", {}), data_dir)
    signals = analogue_provider(base, lambda region: coverage(region, data_dir))
    agent = agent_from_config(cfg, signals=signals, data_dir=data_dir)
    return catalog_of(agent, history or metered_history_of(provider, now))


def window_slots_of(provider: ProviderConfig) -> int:
    assert provider.agent is not None
    return int(provider.agent.get("offers", {}).get("window_slots", 4))


def catalog_of(agent: ProviderAgent, history: MeteredHistory = no_metered_history) -> list[FlexOfferSpec]:
    """The offers the agent's plan leaves, as published: at least 1 kW each, quantities rounded inwards, each
    with the reduction it expects to be paid for against the settlement baseline of its site's history."""
    return [
        with_expected_paid(_published(FlexOfferSpec(**o.catalog_fields())), o.baseline_kw, history(o.site_id))
        for o in agent.offers()
        if o.available_kw >= 1.0
    ]


def static_catalog(provider: ProviderConfig, history: MeteredHistory = no_metered_history) -> list[FlexOfferSpec]:
    """A providers file's static offers, each with its expected paid reduction: the site's stated baseline
    is the plan's import over the window."""
    out = []
    for o in provider.offers:
        site = provider.site(o.location_id)
        assert site is not None  # parse_config checked it
        slots = max(int((o.window_end - o.window_start) / SLOT), 1)
        out.append(with_expected_paid(o, [site.baseline_kw] * slots, history(site.id)))
    return out


def with_expected_paid(
    spec: FlexOfferSpec, planned_import_kw: Sequence[float], history_kw: Mapping[datetime, float]
) -> FlexOfferSpec:
    """The offer with its expected paid reduction (bpp/paid_reduction.py); null and why without history."""
    if isinstance(history_kw, NoHistory):
        reason = f"no metered history for site {spec.location_id}: {history_kw.reason}"
        return replace(spec, expected_paid_kw=None, expected_paid_reason=reason)
    if not history_kw:
        reason = f"no metered history for site {spec.location_id} yet: no settlement baseline to expect against"
        return replace(spec, expected_paid_kw=None, expected_paid_reason=reason)
    slots = [spec.window_start + SLOT * i for i in range(len(planned_import_kw))]
    paid = expected_paid_kw(
        offered_kw=spec.available_kw,
        planned_import_kw=planned_import_kw,
        settlement_baseline=[ten_of_ten_kw(t, history_kw) for t in slots],
    )
    kw = None if paid.reduction_kw is None else round(paid.reduction_kw, 1)
    return replace(spec, expected_paid_kw=kw, expected_paid_reason=paid.reason or None)


def _published(o: FlexOfferSpec) -> FlexOfferSpec:
    """Quantities as the catalog carries them (0.1 kW), rounded inwards, so what a buyer reads is
    exactly what the BPP will accept."""
    down = math.floor(o.available_kw * 10) / 10
    return replace(
        o,
        available_kw=down,
        max_kw=min(math.floor(o.max_kw * 10) / 10, down),
        min_kw=min(math.ceil(o.min_kw * 10) / 10, down),
    )


def commit(session: Session, order: Order, site_id: str) -> None:
    """Confirm through the agent: re-plan with the reduction imposed, or refuse (CommitmentError).

    Invariant (a site never over-sells): confirms for one provider are decided one at a time. The provider's row
    is locked (FOR UPDATE, held to the end of the confirm's transaction), so a concurrent confirm waits and then
    plans with this one's order among the accepted ones (READ COMMITTED: it sees what committed before its
    lock). Without the lock two confirms each plan without the other, and both can pass while together they
    cannot be delivered."""
    row = session.get(Provider, (order.bpp_id, order.provider_id), with_for_update=True)
    if row is None or row.agent is None:
        return
    agent = build_agent(session, row, exclude_order=order.id)
    try:
        agent.commit(order.id, site_id, order.window_start, order.window_end, order.power_kw)
    except CommitRefused as exc:
        store_decisions(
            session, order.bpp_id, order.provider_id, [d for d in agent.decisions() if d.order_id == order.id]
        )
        raise CommitmentError(
            "quantity_unavailable", f"the provider's schedule cannot honour {order.power_kw:g} kW: {exc.reason}"
        ) from exc
    store_decisions(session, order.bpp_id, order.provider_id, agent.decisions())


def check_update(
    session: Session, order: Order, site_id: str, *, power_kw: float, start: datetime, end: datetime
) -> None:
    row = session.get(Provider, (order.bpp_id, order.provider_id), with_for_update=True)  # as commit(): one at a time
    if row is None or row.agent is None or order.state != "ACCEPTED":
        return
    agent = build_agent(session, row, exclude_order=order.id)
    check = agent.can_commit(site_id, start, end, power_kw, order_id=order.id)
    if not check.ok:
        raise CommitmentError(
            "update_not_possible", f"the provider's schedule cannot honour the change: {check.reason}"
        )


@dataclass(frozen=True, kw_only=True)
class DecisionQuery:
    """Which decisions to list: by provider, job and action, overlapping [start, end), at most `limit`."""

    provider_id: Name | None = None
    job_id: Name | None = None
    action: Name | None = None
    start: datetime | None = None
    end: datetime | None = None
    limit: int = 500


def query_decisions(session: Session, bpp_id: str, query: DecisionQuery) -> list[dict[str, Any]]:
    provider_id, job_id, action, start, end = query.provider_id, query.job_id, query.action, query.start, query.end
    q = select(Decision).where(Decision.bpp_id == bpp_id)
    if provider_id:
        q = q.where(Decision.provider_id == provider_id)
    if job_id:
        q = q.where(Decision.job_id == job_id)
    if action:
        q = q.where(Decision.action == action)
    if start:
        q = q.where(Decision.end_utc > start)
    if end:
        q = q.where(Decision.start_utc < end)
    q = q.order_by(Decision.start_utc.nulls_last(), Decision.id).limit(query.limit)
    return [{"provider_id": d.provider_id, **d.record} for d in session.scalars(q)]
