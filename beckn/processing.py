"""Asynchronous processing of accepted inbound messages (run by the Celery task beckn.process_inbox).

A participant registers one processor per schema: it gets the inbox row inside a transaction, does the
business work, writes outbox rows for its answers in the same transaction and returns their ids; the
task then delivers them. The inbox row is marked PROCESSED in that same transaction, so a crash
either leaves everything undone (the sweep retries) or everything done — never half.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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


BATCH = 200


@dataclass(frozen=True)
class Batch:
    attempted: int  # inbox rows this call locked and processed (successfully or not)
    outbox_ids: list[int]


def process(schema: str, inbox_id: int) -> Batch:
    """Process an inbox row exactly once — together with its siblings: the other RECEIVED rows with the
    same message_id and action (one search reaching many platforms of one BPP host, many on_search
    answers reaching the gateway). One transaction, one savepoint per row, one delivery batch.

    A row whose processing raises is left RECEIVED with its error and attempt count (the sweep retries
    it later) and becomes FAILED after MAX_ATTEMPTS; its siblings are unaffected.
    """
    processor = PROCESSORS[schema]
    ids: list[int] = []
    with session_scope(schema) as s:
        head = s.execute(select(inbox.c.message_id, inbox.c.action).where(inbox.c.id == inbox_id)).first()
        if head is None:
            return Batch(0, [])
        rows = s.execute(
            select(inbox)
            .where(inbox.c.message_id == head.message_id, inbox.c.action == head.action,
                   inbox.c.status == "RECEIVED")
            .order_by(inbox.c.id)
            .limit(BATCH)
            .with_for_update(skip_locked=True)  # rows another worker holds are its business
        ).all()
        for row in rows:
            try:
                with s.begin_nested():
                    ids.extend(processor(s, row))
                    s.execute(update(inbox).where(inbox.c.id == row.id).values(
                        status="PROCESSED", processed_at=datetime.now(UTC), attempts=inbox.c.attempts + 1))
            except Exception as exc:
                attempts = row.attempts + 1
                s.execute(update(inbox).where(inbox.c.id == row.id).values(
                    attempts=attempts, error=f"{type(exc).__name__}: {exc}",
                    status="FAILED" if attempts >= MAX_ATTEMPTS else "RECEIVED"))
                log.exception("processing failed", schema=schema, inbox_id=row.id, attempts=attempts)
    return Batch(len(rows), ids)


def has_received_siblings(schema: str, inbox_id: int) -> bool:
    with session_scope(schema) as s:
        head = s.execute(select(inbox.c.message_id, inbox.c.action).where(inbox.c.id == inbox_id)).first()
        if head is None:
            return False
        return s.execute(select(inbox.c.id).where(inbox.c.message_id == head.message_id,
                                                  inbox.c.action == head.action,
                                                  inbox.c.status == "RECEIVED").limit(1)).first() is not None


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
