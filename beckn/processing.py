"""Asynchronous processing of accepted inbound messages (run by the Celery task beckn.process_inbox).

A participant registers one processor per schema: it gets the inbox row inside a transaction, does the
business work, writes outbox rows for its answers in the same transaction and returns their ids (or
queues them with outbox.defer, written here once per batch); the task then delivers them. The inbox row
is marked PROCESSED in that same transaction, so a crash either leaves everything undone (the sweep
retries) or everything done — never half.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import structlog
from psycopg.rows import namedtuple_row
from sqlalchemy import select
from sqlalchemy.orm import Session

from beckn import outbox
from beckn.models import inbox
from kernel import clock
from kernel.db import raw, session_scope

log = structlog.get_logger(__name__)

Processor = Callable[[Session, Any], list[int]]
# Called once, in the same transaction, when a row fails for good (MAX_ATTEMPTS): (session, row, reason)
# → outbox ids, so the sender hears of it (the BPP's on_<action> with a Beckn error) or it shows where the
# participant keeps its state (the BAP's order). What it queues with outbox.defer is written with it.
FailureHandler = Callable[[Session, Any, str], list[int]]
PROCESSORS: dict[str, Processor] = {}
ON_FAILURE: dict[str, FailureHandler] = {}
MAX_ATTEMPTS = 5


def register(schema: str, processor: Processor, on_failure: FailureHandler | None = None) -> None:
    PROCESSORS[schema] = processor
    if on_failure is not None:
        ON_FAILURE[schema] = on_failure


BATCH = 200


@dataclass(frozen=True)
class Batch:
    attempted: int  # inbox rows this call locked and processed (successfully or not)
    outbox_ids: list[int]
    leased: list[outbox.LeasedRow] = field(default_factory=list)  # deferred answers, leased to this worker


_SIBLINGS_SQL = (
    "SELECT * FROM inbox WHERE message_id = (SELECT message_id FROM inbox WHERE id = %(id)s) "
    "AND action = (SELECT action FROM inbox WHERE id = %(id)s) AND status = 'RECEIVED' "
    "ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED"  # rows another worker holds are its business
)
_DONE_SQL = "UPDATE inbox SET status = 'PROCESSED', processed_at = now(), attempts = attempts + 1 WHERE id = ANY(%s)"
_FAILED_SQL = "UPDATE inbox SET attempts = %s, error = %s, status = %s WHERE id = %s"


def process(schema: str, inbox_id: int) -> Batch:
    """Process an inbox row exactly once — together with its siblings: the other RECEIVED rows with the
    same message_id and action (one search reaching many platforms of one BPP host, many on_search
    answers reaching the gateway). One transaction, one delivery batch.

    The whole batch runs under one savepoint (the common case: nothing fails, one UPDATE marks every
    row PROCESSED). If any row raises, that savepoint is rolled back and the rows are processed again
    one savepoint each, so a row whose processing raises is left RECEIVED with its error and attempt
    count (the sweep retries it later), becomes FAILED after MAX_ATTEMPTS, and its siblings are
    unaffected.
    """
    processor = PROCESSORS[schema]
    with session_scope(schema) as s:
        conn = raw(s)
        with conn.cursor(row_factory=namedtuple_row) as cur:
            cur.execute(_SIBLINGS_SQL, {"id": inbox_id, "limit": BATCH})
            rows: list[Any] = cur.fetchall()  # inbox rows as named tuples
        if not rows:
            return Batch(0, [])
        try:
            with s.begin_nested():
                ids = [i for row in rows for i in processor(s, row)]
                leased = outbox.flush_deferred(s)  # the batch's deferred answers, in one statement
                conn.execute(_DONE_SQL, ([r.id for r in rows],))
            return Batch(len(rows), ids, leased)
        except Exception:
            outbox.discard_deferred(s)
        batch = Batch(len(rows), [])
        for row in rows:  # isolate the failing row(s)
            _process_alone(s, schema, processor, row, batch)
    return batch


def _process_alone(s: Session, schema: str, processor: Processor, row: Any, batch: Batch) -> None:
    try:
        with s.begin_nested():
            out = processor(s, row)
            leased = outbox.flush_deferred(s)
            raw(s).execute(_DONE_SQL, ([row.id],))
        batch.outbox_ids.extend(out)
        batch.leased.extend(leased)
    except Exception as exc:
        outbox.discard_deferred(s)
        attempts = row.attempts + 1
        reason = f"{type(exc).__name__}: {exc}"
        failed = attempts >= MAX_ATTEMPTS
        raw(s).execute(_FAILED_SQL, (attempts, reason, "FAILED" if failed else "RECEIVED", row.id))
        log.exception("processing failed", schema=schema, inbox_id=row.id, attempts=attempts)
        if failed and schema in ON_FAILURE:
            _report_failure(s, schema, row, reason, batch)


def _report_failure(s: Session, schema: str, row: Any, reason: str, batch: Batch) -> None:
    try:
        with s.begin_nested():
            out = ON_FAILURE[schema](s, row, reason)
            leased = outbox.flush_deferred(s)
        batch.outbox_ids.extend(out)
        batch.leased.extend(leased)
    except Exception:
        outbox.discard_deferred(s)
        log.exception("failure report failed", schema=schema, inbox_id=row.id)


def has_received_siblings(schema: str, inbox_id: int) -> bool:
    with session_scope(schema) as s:
        head = s.execute(select(inbox.c.message_id, inbox.c.action).where(inbox.c.id == inbox_id)).first()
        if head is None:
            return False
        return (
            s.execute(
                select(inbox.c.id)
                .where(
                    inbox.c.message_id == head.message_id, inbox.c.action == head.action, inbox.c.status == "RECEIVED"
                )
                .limit(1)
            ).first()
            is not None
        )


def stuck_ids(session: Session, older_than_s: float, limit: int = 500) -> list[int]:
    """RECEIVED rows nobody has processed for a while (a lost task or a crashed worker)."""
    cutoff = clock.wall_now() - timedelta(seconds=older_than_s)
    return list(
        session.scalars(
            select(inbox.c.id)
            .where(inbox.c.status == "RECEIVED", inbox.c.received_at < cutoff)
            .order_by(inbox.c.id)
            .limit(limit)
        )
    )
