"""Celery tasks shared by every Beckn participant: process an inbox row, deliver outbox rows, and
the beat sweep that re-enqueues anything a crash or a lost task left behind."""

from __future__ import annotations

import structlog

from beckn import outbox, processing
from flexmarket.celery_app import celery_app
from flexmarket.config import get_settings
from flexmarket.db import session_scope

log = structlog.get_logger(__name__)

BECKN_SCHEMAS = ("bap", "bpp", "gateway")


def send_processing(schema: str, inbox_id: int) -> None:
    celery_app.send_task("beckn.process_inbox", args=[schema, inbox_id])


def send_delivery(schema: str, ids: list[int], countdown: float | None = None) -> None:
    celery_app.send_task("beckn.deliver", args=[schema, ids], countdown=countdown)


def deliver_now(schema: str, ids: list[int]) -> None:
    """Deliver in this worker, then schedule one retry task per distinct backoff."""
    if not ids:
        return
    for o in outbox.deliver(schema, ids):
        if o.status == "PENDING" and o.retry_in_s is not None:
            send_delivery(schema, [o.outbox_id], countdown=o.retry_in_s)


@celery_app.task(name="beckn.process_inbox")
def process_inbox(schema: str, inbox_id: int) -> None:
    # Failures stay in the inbox row (error, attempts); the beat sweep re-enqueues them.
    deliver_now(schema, processing.process(schema, inbox_id))


@celery_app.task(name="beckn.deliver")
def deliver(schema: str, ids: list[int]) -> None:
    deliver_now(schema, ids)


@celery_app.task(name="beckn.sweep_outboxes")
def sweep_outboxes() -> dict[str, int]:
    """Re-enqueue overdue outbox rows and unprocessed inbox rows (worker crash, Redis restart)."""
    after = get_settings().redeliver_after_s
    counts: dict[str, int] = {}
    for schema in BECKN_SCHEMAS:
        with session_scope(schema) as s:
            due = outbox.due_ids(s, older_than_s=after)
            stuck = processing.stuck_ids(s, older_than_s=after)
        if due:
            send_delivery(schema, due)
        for inbox_id in stuck:
            send_processing(schema, inbox_id)
        counts[schema] = len(due) + len(stuck)
    if any(counts.values()):
        log.info("sweep re-enqueued", **counts)
    return counts
