"""Asynchronous processing of accepted inbound messages (run by the Celery task beckn.process_inbox).

A participant registers one processor per schema: it gets the inbox row inside a transaction, does the
business work, writes outbox rows for its answers in the same transaction and returns their ids; the
task then delivers them. The inbox row is marked PROCESSED in that same transaction, so a crash
either leaves everything undone (the sweep retries) or everything done — never half.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from beckn.models import inbox
from flexmarket.db import session_scope

log = structlog.get_logger(__name__)

Processor = Callable[[Session, Any], list[int]]
PROCESSORS: dict[str, Processor] = {}
MAX_ATTEMPTS = 5


def register(schema: str, processor: Processor) -> None:
    PROCESSORS[schema] = processor


def process(schema: str, inbox_id: int) -> list[int]:
    """Process one inbox row exactly once; returns outbox ids to deliver."""
    processor = PROCESSORS[schema]
    try:
        with session_scope(schema) as s:
            row = s.execute(
                select(inbox).where(inbox.c.id == inbox_id).with_for_update(skip_locked=True)
            ).first()
            if row is None or row.status != "RECEIVED":
                return []  # done already, or another worker holds it right now
            ids = processor(s, row)
            s.execute(update(inbox).where(inbox.c.id == inbox_id)
                      .values(status="PROCESSED", processed_at=datetime.now(UTC), attempts=inbox.c.attempts + 1))
            return ids
    except Exception as exc:
        # Record the failure in a transaction of its own; give up (visibly) after MAX_ATTEMPTS.
        with session_scope(schema) as s:
            attempts = s.execute(
                update(inbox).where(inbox.c.id == inbox_id)
                .values(attempts=inbox.c.attempts + 1, error=f"{type(exc).__name__}: {exc}")
                .returning(inbox.c.attempts)
            ).scalar_one()
            if attempts >= MAX_ATTEMPTS:
                s.execute(update(inbox).where(inbox.c.id == inbox_id).values(status="FAILED"))
        log.exception("processing failed", schema=schema, inbox_id=inbox_id, attempts=attempts)
        raise


def stuck_ids(session: Session, older_than_s: float, limit: int = 500) -> list[int]:
    """RECEIVED rows nobody has processed for a while (a lost task or a crashed worker)."""
    cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
    return list(
        session.scalars(
            select(inbox.c.id)
            .where(inbox.c.status == "RECEIVED", inbox.c.received_at < cutoff)
            .order_by(inbox.c.id)
            .limit(limit)
        )
    )
