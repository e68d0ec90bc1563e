"""Celery tasks shared by every Beckn participant: process an inbox row, deliver outbox rows, and
the beat sweep that re-enqueues anything a crash or a lost task left behind."""

from __future__ import annotations

import redis
import structlog

from beckn import outbox, processing
from kernel.celery_app import celery_app
from kernel.config import get_settings
from kernel.db import session_scope

log = structlog.get_logger(__name__)

BECKN_SCHEMAS = ("bap", "bpp", "gateway")


_redis: redis.Redis | None = None


def _broker() -> redis.Redis:
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(get_settings().redis_url or "redis://127.0.0.1:6379/0")
    return _redis


def _batch_key(schema: str, action: str, message_id: str) -> str:
    return f"{get_settings().celery_queue}:batch:{schema}:{action}:{message_id}"


def send_processing(schema: str, inbox_id: int, message_id: str | None = None, action: str | None = None) -> None:
    """Enqueue processing of an accepted message. Siblings (same message_id and action: a search
    reaching many platforms of one host, many on_search reaching the gateway) share one task: only the
    first claims the batch key; the task drains every sibling (beckn.processing.process) and re-checks
    after releasing the key, so a sibling that arrives meanwhile is never stranded."""
    key = None
    if message_id and action:
        key = _batch_key(schema, action, message_id)
        try:
            if not _broker().set(key, inbox_id, nx=True, ex=30):
                return  # a task for this batch is queued or running
        except redis.RedisError:
            key = None  # enqueue a task of its own; correctness never depends on the key
    celery_app.send_task("beckn.process_inbox", args=[schema, inbox_id, key])


def send_delivery(schema: str, ids: list[int], countdown: float | None = None) -> None:
    celery_app.send_task("beckn.deliver", args=[schema, ids], countdown=countdown)


def deliver_now(schema: str, ids: list[int], leased: list[outbox.LeasedRow] | None = None) -> None:
    """Deliver in this worker, then schedule one retry task per distinct backoff."""
    if not ids and not leased:
        return
    for o in outbox.deliver(schema, ids, leased or ()):
        if o.status == "PENDING" and o.retry_in_s is not None:
            send_delivery(schema, [o.outbox_id], countdown=o.retry_in_s)


@celery_app.task(name="beckn.process_inbox")
def process_inbox(schema: str, inbox_id: int, batch_key: str | None = None) -> None:
    # Failures stay in the inbox row (error, attempts); the beat sweep re-enqueues them.
    while True:
        batch = processing.process(schema, inbox_id)
        deliver_now(schema, batch.outbox_ids, batch.leased)
        if batch_key is None:
            return
        _broker().delete(batch_key)
        # Siblings that arrived while we worked are ours unless someone else claims them; rows another
        # worker holds right now (attempted == 0) are that worker's business.
        if (
            batch.attempted == 0
            or not processing.has_received_siblings(schema, inbox_id)
            or not _broker().set(batch_key, inbox_id, nx=True, ex=30)
        ):
            return


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
