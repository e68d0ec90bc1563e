"""Offers that stay true: re-planning every agent of a BPP platform (Celery beat `bpp.replan`, and a signal
update: `bpp.signal_update`).

A re-plan moves the provider's plan forward to the current market time (the anchor: the current offer window's
start), keeps every committed reduction imposed (the accepted orders are replayed, bpp/agent_service.py) and
every signal update that still matters, and re-publishes what the new plan leaves. An offer the new plan no
longer leaves (its window has opened, or the plan cannot deliver 1 kW in it any more) is withdrawn with the
reason: a buyer that selects, inits or confirms it is refused with that reason (bpp/offer_store.py), never given
an order the site cannot honour. Each re-plan is a `replan` record in the provider's decision log with what
changed in its offers (bpp/decisions.py `offer_changes`).

Each re-published offer states its expected paid reduction against its site's metered history on the ledger
as it stands at the re-plan (bpp/metered_history.py: read once per provider, outside the transaction's solve
loop). Static offers (a providers file's, without an agent) are not re-planned, but a periodic re-plan restates
their expected paid reduction too: nothing else refreshes them after start-up.

Several workers may run the task at once: a provider is re-planned under a PostgreSQL advisory lock of its own
(a worker that finds it taken skips the provider); the solve holds no row lock — the accepted orders are read,
the plan solved, and the offers written only if no order was accepted meanwhile (else it solves again).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import structlog
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bpp import admin, agent_service, offer_store
from bpp.catalog import PlatformConfig, ProviderConfig
from bpp.decisions import OfferTerms, offer_changes, replan_record
from bpp.domain import iso
from bpp.models import Offer, Provider
from bpp.signal_providers import SignalUpdate
from kernel.db import session_scope
from schemas.flex import FlexOfferSpec

log = structlog.get_logger(__name__)

SOLVE_ATTEMPTS = 3  # re-solves when orders are accepted while the plan is being solved


@dataclass(frozen=True)
class Periodic:
    """The beat's re-plan: the horizon moves forward to the current market time."""

    def why(self) -> str:
        return "periodic re-plan"

    def updates(self) -> tuple[SignalUpdate, ...]:
        return ()

    def concerns(self, provider: ProviderConfig) -> bool:
        return True


@dataclass(frozen=True)
class SignalArrived:
    """A signal update (a price spike, a carbon revision): the providers planning a site on its region re-plan."""

    update: SignalUpdate

    def why(self) -> str:
        u = self.update
        values = [f"price £{u.price_gbp_per_mwh:g}/MWh"] if u.price_gbp_per_mwh is not None else []
        values += [f"carbon {u.carbon_g_per_kwh:g} g/kWh"] if u.carbon_g_per_kwh is not None else []
        return f"{u.reason}: {u.region} {iso(u.start_utc)}–{iso(u.end_utc)} {', '.join(values)}".strip()

    def updates(self) -> tuple[SignalUpdate, ...]:
        return (self.update,)

    def concerns(self, provider: ProviderConfig) -> bool:
        """A site of the provider's agent plans on the update's signal region (the agent config's `region`,
        e.g. "GB", not the catalog's city code)."""
        return any(site.get("region") == self.update.region for site in (provider.agent or {}).get("sites", ()))


Trigger = Periodic | SignalArrived


@dataclass(frozen=True, kw_only=True)
class ReplanResult:
    provider_id: str
    published: int = 0
    withdrawn: int = 0
    changed: int = 0
    skipped: str | None = None  # why the provider was not re-planned this time


def replan_platform(
    platform: PlatformConfig, *, now: datetime, trigger: Trigger, data_dir: Path | None = None
) -> list[ReplanResult]:
    """Re-plan every agent the platform really hosts — the providers file's and those joined through the admin
    API that have not left (`admin.hosted`) — that the trigger concerns. A periodic re-plan also restates the
    expected paid reduction of every static offer (a providers file's fixed offers: nothing else refreshes them
    after start-up) from its site's metered history as it stands now."""
    with session_scope("bpp") as s:
        hosted = admin.hosted(s, platform).providers
    if isinstance(trigger, Periodic):
        for p in hosted:
            if p.agent is None:
                refresh_static_offers(platform.subscriber_id, p, now=now)
    providers = [p for p in hosted if p.agent is not None and trigger.concerns(p)]
    return [replan_provider(platform.subscriber_id, p, now=now, trigger=trigger, data_dir=data_dir) for p in providers]


def refresh_static_offers(bpp_id: str, provider: ProviderConfig, *, now: datetime) -> int:
    """Restate the expected paid reduction of the provider's static offers still active (a withdrawn one stays
    withdrawn; nothing else of an offer changes); the number restated."""
    history = agent_service.metered_history_of(provider, now)
    specs = {o.item_id: o for o in agent_service.static_catalog(provider, history)}
    with session_scope("bpp") as s:
        active = s.scalars(
            select(Offer)
            .where(Offer.bpp_id == bpp_id, Offer.provider_id == provider.id, Offer.active)
            .with_for_update()
        ).all()
        fresh = [specs[o.item_id] for o in active if o.item_id in specs]
        offer_store.upsert_offers(s, bpp_id, provider, fresh)
    log.info("static offers' expected paid restated", bpp_id=bpp_id, provider=provider.id, offers=len(fresh))
    return len(fresh)


def replan_provider(
    bpp_id: str, provider: ProviderConfig, *, now: datetime, trigger: Trigger, data_dir: Path | None = None
) -> ReplanResult:
    """Re-plan one provider from `now` and re-publish its offers, in one transaction of its own."""
    with session_scope("bpp") as s:
        if not s.scalar(select(func.pg_try_advisory_xact_lock(lock_key(bpp_id, provider.id)))):
            return ReplanResult(provider_id=provider.id, skipped="another worker is re-planning it")
        stored = s.get(Provider, (bpp_id, provider.id))
        if stored is None or stored.agent is None:
            return ReplanResult(provider_id=provider.id, skipped="not published yet (the BPP has not started it)")
        anchor = agent_service.anchor_for(now, agent_service.window_slots_of(provider))
        updates = still_relevant(list(agent_service.stored_updates(stored)) + list(trigger.updates()), anchor)
        planned = Provider(
            bpp_id=bpp_id,
            provider_id=provider.id,
            agent=provider.agent,
            agent_anchor_utc=anchor,
            signal_updates=[u.to_dict() for u in updates],
        )  # transient: nothing is written (and no row locked) while solving
        specs = _solve(s, planned, agent_service.metered_history_of(provider, now), data_dir)
        result = _publish(s, provider, planned, specs, now=now, why=trigger.why())
    log.info("provider re-planned", bpp_id=bpp_id, provider=provider.id, **vars(result))
    return result


def _solve(
    session: Session, planned: Provider, history: agent_service.MeteredHistory, data_dir: Path | None
) -> list[FlexOfferSpec]:
    for _ in range(SOLVE_ATTEMPTS):
        before = _accepted_ids(session, planned)
        specs = agent_service.catalog_of(agent_service.build_agent(session, planned, data_dir=data_dir), history)
        if _accepted_ids(session, planned) == before:
            return specs
    raise RuntimeError(f"provider {planned.provider_id}: orders kept being accepted while re-planning")


def _accepted_ids(session: Session, row: Provider) -> list[str]:
    return [order.id for order, _ in agent_service.accepted_orders(session, row)]


def _publish(
    session: Session,
    provider: ProviderConfig,
    planned: Provider,
    specs: list[FlexOfferSpec],
    *,
    now: datetime,
    why: str,
) -> ReplanResult:
    """Write the re-plan: offers published, those not re-published withdrawn (with why), the provider's plan
    anchor and signal updates, and the decision-log record of what changed."""
    bpp_id, anchor = planned.bpp_id, planned.agent_anchor_utc
    assert anchor is not None
    active = session.scalars(
        select(Offer).where(Offer.bpp_id == bpp_id, Offer.provider_id == provider.id, Offer.active)
    ).all()
    before = {o.item_id: OfferTerms(o.available_kw, o.price_gbp_per_mwh) for o in active}
    after = {o.item_id: OfferTerms(o.available_kw, o.price_gbp_per_mwh) for o in specs}
    reasons = {o.item_id: withdrawal_reason(o.window_start, o.window_end, anchor, why) for o in active}
    offer_store.upsert_offers(session, bpp_id, provider, specs)
    for o in active:
        if o.item_id not in after:
            offer_store.withdraw(o, at=now, reason=reasons[o.item_id])
    row = session.get(Provider, (bpp_id, provider.id))
    assert row is not None
    row.agent, row.agent_anchor_utc, row.signal_updates = planned.agent, anchor, planned.signal_updates
    changes = offer_changes(before, after, reasons)
    record = replan_record(provider_id=provider.id, decided_at_utc=now, anchor_utc=anchor, why=why, changes=changes)
    agent_service.store_decisions(session, bpp_id, provider.id, [record])
    return ReplanResult(
        provider_id=provider.id,
        published=len(specs),
        withdrawn=len(changes["withdrawn"]),
        changed=len(changes["changed"]),
    )


def withdrawal_reason(window_start: datetime, window_end: datetime, anchor: datetime, why: str) -> str:
    if window_start < anchor:
        return f"its window {iso(window_start)}–{iso(window_end)} opened before the re-planned horizon ({why})"
    return (
        f"the re-plan from {iso(anchor)} ({why}) leaves less than 1 kW of reduction to sell in "
        f"{iso(window_start)}–{iso(window_end)}"
    )


def still_relevant(updates: list[SignalUpdate], anchor: datetime) -> list[SignalUpdate]:
    """The updates a plan starting at `anchor` still needs: not yet over, each once (first arrival first)."""
    kept: list[SignalUpdate] = []
    for u in updates:
        if u.end_utc > anchor and u not in kept:
            kept.append(u)
    return kept


def lock_key(bpp_id: str, provider_id: str) -> int:
    """The provider's advisory-lock key: a signed 64-bit hash of its identity."""
    digest = hashlib.blake2b(f"bpp.replan|{bpp_id}|{provider_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)
