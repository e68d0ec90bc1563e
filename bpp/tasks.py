"""BPP Celery tasks: processing of accepted requests (registered with beckn.processing), the
time-driven order transitions and the order outcomes read from the ledger."""

from __future__ import annotations

from datetime import timedelta

import httpx

from beckn import processing
from beckn.tasks import deliver_now
from bpp import outcomes, service
from kernel import clock
from kernel.celery_app import celery_app
from kernel.config import get_settings
from kernel.db import session_scope

processing.register("bpp", service.process, on_failure=service.processing_failed)


@celery_app.task(name="bpp.advance_orders")
def advance_orders() -> int:
    with session_scope("bpp") as s:
        ids = service.advance_orders(s)
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
