"""BPP Celery tasks: processing of accepted requests (registered with beckn.processing) and the
time-driven order transitions."""

from __future__ import annotations

from datetime import timedelta

from beckn import processing
from beckn.tasks import deliver_now
from bpp import service
from kernel.celery_app import celery_app
from kernel.db import session_scope

processing.register("bpp", service.process, on_failure=service.processing_failed)


@celery_app.task(name="bpp.advance_orders")
def advance_orders() -> int:
    with session_scope("bpp") as s:
        ids = service.advance_orders(s)
    deliver_now("bpp", ids)
    return len(ids)


celery_app.conf.beat_schedule["bpp-advance-orders"] = {"task": "bpp.advance_orders", "schedule": timedelta(seconds=30)}
