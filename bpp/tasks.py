"""BPP Celery tasks: processing of accepted requests (registered with beckn.processing), the
time-driven order transitions, the order outcomes read from the ledger and the agents' re-plans."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from beckn import processing
from beckn.tasks import deliver_now
from bpp import cft_market, lifecycle, outcomes, replan, service
from bpp.catalog import PlatformConfig, load_config
from bpp.signal_providers import SignalUpdate
from kernel import clock
from kernel.celery_app import celery_app
from kernel.config import get_settings
from kernel.db import session_scope

# Token orders (bpp/cft_market.py) first; every other request in bpp/service.py.
processing.register("bpp", cft_market.process, on_failure=service.processing_failed)


@celery_app.task(name="bpp.advance_orders")
def advance_orders() -> int:
    with session_scope("bpp") as s:
        ids = lifecycle.advance_orders(s)
    deliver_now("bpp", ids)
    return len(ids)


celery_app.conf.beat_schedule["bpp-advance-orders"] = {"task": "bpp.advance_orders", "schedule": timedelta(seconds=30)}


@celery_app.task(name="bpp.sync_outcomes")
def sync_outcomes() -> int:
    """Order outcomes from the ledger's settlement runs to the BPP's orders and their buyers (bpp/outcomes.py)."""
    settings = get_settings()
    if not settings.ledger_url:
        return 0  # no ledger: orders keep the states their windows give them
    keys = outcomes.load_provider_keys(settings.ledger_provider_keys_file)
    with httpx.Client(timeout=10.0) as client, session_scope("bpp") as s:
        ids = outcomes.sync_outcomes(s, outcomes.LedgerOutcomes(client, settings.ledger_url, keys), clock.now())
    deliver_now("bpp", ids)
    return len(ids)


def hosted_platforms() -> list[PlatformConfig]:
    """The platforms of this BPP's providers file (none when it names no file, or the file is not written yet)."""
    path = get_settings().providers_file
    return load_config(path) if path is not None and path.exists() else []


@celery_app.task(name="bpp.replan")
def replan_agents() -> int:
    """Re-plan every agent of every platform from the current market time (beat `bpp-replan`); the number of
    providers re-planned."""
    now = clock.now()
    results = [r for p in hosted_platforms() for r in replan.replan_platform(p, now=now, trigger=replan.Periodic())]
    return sum(r.skipped is None for r in results)


@celery_app.task(name="bpp.signal_update")
def signal_update(update: dict[str, Any]) -> int:
    """A signal update (`SignalUpdate.to_dict()`): every provider with a site in its region re-plans with it."""
    trigger = replan.SignalArrived(SignalUpdate.from_dict(update))
    now = clock.now()
    results = [r for p in hosted_platforms() for r in replan.replan_platform(p, now=now, trigger=trigger)]
    return sum(r.skipped is None for r in results)


# Retried when the ledger is not answering yet (the BPP may start before it); beat runs it again in any case.
@celery_app.task(name="bpp.publish_cft", autoretry_for=(RuntimeError,), retry_backoff=2, max_retries=6)
def publish_cft() -> int:
    """Create and mint every hosted provider's token series on the ledger and publish the minted ones in the
    catalog (bpp/cft_market.py; at BPP start and beat `bpp-publish-cft`); the number published."""
    platforms = [p for p in hosted_platforms() if any(pr.cft_series for pr in p.providers)]
    if not platforms:
        return 0
    with cft_market.ledger() as source:
        if source is None:
            return 0  # no ledger: no tokens
        with session_scope("bpp") as s:
            return cft_market.publish(s, platforms, source, clock.now())
