"""Durable outbound delivery (the outbox). See beckn/models.py for the row life cycle.

`enqueue` runs inside the caller's transaction; `deliver` runs in a Celery task after commit:
claim rows (a short lease so two workers never send the same row at once), sign, send concurrently,
record the outcome. Retry: connection errors, timeouts, HTTP 5xx/429/401 (a key may not have reached
the receiver's registry cache yet). Final: an ACK (DELIVERED) or a NACK to a well-formed request
(FAILED, the receiver's error recorded). After `expires_at` a row is FAILED with its last error.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from prometheus_client import Counter
from psycopg.rows import namedtuple_row
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from beckn import http, signing
from beckn.envelope import dumps
from beckn.identity import load_identity
from beckn.models import outbox, unnest_insert, unnest_update
from kernel import clock
from kernel.config import get_settings
from kernel.db import raw, session_scope

log = structlog.get_logger(__name__)

DELIVERIES = Counter("beckn_outbox_deliveries_total", "Outbox delivery attempts by outcome", ["schema", "outcome"])


def lease() -> timedelta:
    """How long a worker holds the rows it sends (FLEXMARKET_OUTBOX_LEASE_S): if it dies meanwhile, the
    beat sweep sends them once the lease has run out."""
    return timedelta(seconds=get_settings().outbox_lease_s)


RETRYABLE_STATUS = {401, 408, 425, 429, 500, 502, 503, 504}


def backoff_s(attempts: int) -> float:
    """0.5 s, 1 s, 2 s … capped at 30 s, with ±20% jitter so retries from many rows spread out."""
    base = min(0.5 * 2 ** max(attempts - 1, 0), 30.0)
    return base * random.uniform(0.8, 1.2)


@dataclass(frozen=True)
class Outbound:
    """One message to send: the exact body bytes and where they go."""

    sender_id: str
    receiver_url: str
    action: str
    body: bytes
    _: KW_ONLY
    message_id: str
    transaction_id: str
    forwarded_authorization: str | None = None


# Outbound's fields of the same names, one array each. lease_until is NULL, or — for rows their writer
# delivers itself right after commit — already leased to it.
_OUTBOUND_COLUMNS = (
    "sender_id",
    "receiver_url",
    "action",
    "message_id",
    "transaction_id",
    "body",
    "forwarded_authorization",
)
_INSERT_SQL = unnest_insert(
    outbox,
    _OUTBOUND_COLUMNS,
    constants={
        "status": "'PENDING'",
        "next_attempt_at": "now()",
        "expires_at": "now() + make_interval(secs => %s)",
        "lease_until": "now() + make_interval(secs => %s)",
    },
    ordered=True,
    tail="RETURNING id, expires_at, next_attempt_at",
)


@dataclass(frozen=True)
class LeasedRow:
    """An outbox row written already leased to its writer, with what delivering it needs — so the
    writer sends it without reading it back (beckn/processing.py → beckn/tasks.py)."""

    id: int
    sender_id: str
    receiver_url: str
    body: bytes
    _: KW_ONLY
    forwarded_authorization: str | None
    expires_at: datetime
    next_attempt_at: datetime
    attempts: int = 0


def _insert(
    session: Session, messages: Sequence[Outbound], ttl_s: int | None, lease_s: float | None
) -> list[tuple[int, datetime, datetime]]:
    if not messages:
        return []
    ttl = ttl_s if ttl_s is not None else get_settings().delivery_ttl_s
    cols = [[getattr(m, f) for m in messages] for f in _OUTBOUND_COLUMNS]
    with raw(session).cursor() as cur:
        cur.execute(_INSERT_SQL, (ttl, lease_s, *cols))
        return [(r[0], r[1], r[2]) for r in cur.fetchall()]


def enqueue_many(session: Session, messages: Sequence[Outbound], ttl_s: int | None = None) -> list[int]:
    """Record outbound messages in the caller's transaction (one statement however many); their ids."""
    return [r[0] for r in _insert(session, messages, ttl_s, None)]


def enqueue_leased(session: Session, messages: Sequence[Outbound], ttl_s: int | None = None) -> list[LeasedRow]:
    """enqueue_many for a writer that delivers the rows itself once its transaction commits: they are
    leased to it from the start (lease()), so no other worker sends them meanwhile and the writer needs no
    claim. If it dies before sending, the rows become due when the lease runs out (the beat sweep)."""
    rows = _insert(session, messages, ttl_s, lease().total_seconds())
    return [
        LeasedRow(
            oid,
            m.sender_id,
            m.receiver_url,
            m.body,
            forwarded_authorization=m.forwarded_authorization,
            expires_at=exp,
            next_attempt_at=nxt,
        )
        for (oid, exp, nxt), m in zip(rows, messages, strict=True)
    ]


_DEFERRED = "beckn.outbox.deferred"


def defer(session: Session, message: Outbound) -> None:
    """Queue an outbound message in `session` for a batch writer to record together with its siblings'
    (beckn/processing.py writes them in one statement per sibling batch: fifty single-row INSERTs of
    on_search answers cost a quarter of a delivery worker's CPU). Only processors use it."""
    session.info.setdefault(_DEFERRED, []).append(message)


def flush_deferred(session: Session) -> list[LeasedRow]:
    """Record what defer() queued in this session, in the session's transaction, leased to the caller,
    which delivers them after commit (deliver(..., leased=…))."""
    return enqueue_leased(session, session.info.pop(_DEFERRED, []))


def discard_deferred(session: Session) -> None:
    """Forget queued messages whose savepoint was rolled back."""
    session.info.pop(_DEFERRED, None)


def outbound(
    sender_id: str,
    receiver_url: str,
    action: str,
    payload: dict[str, Any] | bytes,
    forwarded_authorization: str | None = None,
) -> Outbound:
    if isinstance(payload, bytes):  # relays pass the exact bytes they received
        body, ctx = payload, json.loads(payload).get("context", {})
    else:
        body, ctx = dumps(payload), payload.get("context", {})
    return Outbound(
        sender_id,
        receiver_url,
        action,
        body,
        message_id=ctx.get("message_id", ""),
        transaction_id=ctx.get("transaction_id", ""),
        forwarded_authorization=forwarded_authorization,
    )


def enqueue(
    session: Session,
    *,
    sender_id: str,
    receiver_url: str,
    action: str,
    payload: dict[str, Any] | bytes,
    forwarded_authorization: str | None = None,
    ttl_s: int | None = None,
) -> int:
    """Record one outbound message in the caller's transaction; returns its id."""
    msg = outbound(sender_id, receiver_url, action, payload, forwarded_authorization)
    return enqueue_many(session, [msg], ttl_s)[0]


def endpoint(base_url: str, action: str) -> str:
    return f"{base_url.rstrip('/')}/{action}"


@dataclass(frozen=True)
class Outcome:
    outbox_id: int
    status: str  # DELIVERED | PENDING (will retry) | FAILED
    retry_in_s: float | None = None


def _classify(result: http.HttpResult) -> tuple[str, str | None]:
    """('ack'|'nack'|'retry', error text)."""
    if result.status is None:
        return "retry", result.error
    ack_status, err = None, None
    try:
        data = result.json()
        ack_status = data.get("message", {}).get("ack", {}).get("status")
        err = data.get("error")
    except (ValueError, AttributeError):
        pass
    if result.status == 200 and ack_status == "ACK":
        return "ack", None
    detail = f"HTTP {result.status}" + (f" {err.get('code')}: {err.get('message')}" if isinstance(err, dict) else "")
    if result.status in RETRYABLE_STATUS:
        return "retry", detail
    return "nack", detail


def deliver(schema: str, ids: Sequence[int], leased: Sequence[LeasedRow] = ()) -> list[Outcome]:
    """Send, concurrently, the given PENDING rows that nobody else holds (claimed here with a lease) and
    the rows this worker wrote already leased to itself (enqueue_leased: no claim needed)."""
    now = clock.wall_now()
    rows: list[Any] = list(leased)
    if ids:
        with session_scope(schema) as s, raw(s).cursor(row_factory=namedtuple_row) as cur:
            cur.execute(_CLAIM_SQL, (now + lease(), list(ids), now))
            rows += cur.fetchall()
    if not rows:
        return []
    home = get_settings().home
    validity = get_settings().signature_validity_s
    requests, live = [], []
    outcomes: list[Outcome] = []
    for row in rows:
        if row.expires_at < now:
            _record(
                schema,
                [
                    _outcome_values(
                        row,
                        "FAILED",
                        result=None,
                        error=f"TTL expired before attempt {row.attempts + 1}",
                        auth=None,
                        retry_in=None,
                    )
                ],
                [row],
            )
            outcomes.append(Outcome(row.id, "FAILED"))
            continue
        ident = load_identity(home, row.sender_id)
        auth = signing.authorization_header(
            row.body, ident.keys.signing_private_key, ident.subscriber_id, ident.unique_key_id, validity_s=validity
        )
        headers = (
            {"Authorization": row.forwarded_authorization, "X-Gateway-Authorization": auth}
            if row.forwarded_authorization
            else {"Authorization": auth}
        )
        requests.append((row.receiver_url, row.body, headers))
        live.append((row, auth))
    t0 = time.perf_counter()
    results = http.post_many_sync(requests) if requests else []
    elapsed = time.perf_counter() - t0
    updates: list[dict[str, Any]] = []
    for (row, auth), result in zip(live, results, strict=True):
        kind, err = _classify(result)
        DELIVERIES.labels(schema, kind).inc()
        if kind == "ack":
            status, retry_in = "DELIVERED", None
        elif kind == "nack":
            status, retry_in = "FAILED", None
            log.warning("delivery refused", schema=schema, outbox_id=row.id, url=row.receiver_url, error=err)
        else:
            retry_in = backoff_s(row.attempts + 1)
            status = "PENDING"
            if now + timedelta(seconds=retry_in) > row.expires_at:
                log.warning(
                    "delivery failed after TTL",
                    schema=schema,
                    outbox_id=row.id,
                    url=row.receiver_url,
                    attempts=row.attempts + 1,
                    error=err,
                )
                status, retry_in = "FAILED", None
                err = f"TTL expired after {row.attempts + 1} attempts; last: {err}"
        updates.append(_outcome_values(row, status, result=result, error=err, auth=auth, retry_in=retry_in))
        outcomes.append(Outcome(row.id, status, retry_in))
    _record(schema, updates, [row for row, _ in live])
    log.debug("delivered", schema=schema, n=len(live), seconds=round(elapsed, 4))
    return outcomes


def _outcome_values(
    row: Any,
    status: str,
    *,
    result: http.HttpResult | None,
    error: str | None,
    auth: str | None,
    retry_in: float | None,
) -> dict[str, Any]:
    """The columns _RECORD_SQL sets for one delivered (or given up) row, by name."""
    now = clock.wall_now()
    return {
        "id": row.id,
        "status": status,
        "attempts": row.attempts + (1 if result is not None else 0),
        "next_attempt_at": now + timedelta(seconds=retry_in) if retry_in is not None else row.next_attempt_at,
        "last_status_code": result.status if result else None,
        "last_error": error,
        "last_authorization": auth,
        "response_body": result.body.decode("utf-8", "replace")[:4000] if result else None,
        "delivered_at": now if status == "DELIVERED" else None,
    }


_CLAIM_SQL = (
    "UPDATE outbox SET lease_until = %s WHERE id = ANY(%s) AND status = 'PENDING' "
    "AND (lease_until IS NULL OR lease_until < %s) RETURNING *"
)
_RECORD_COLUMNS = (
    "status",
    "attempts",
    "next_attempt_at",
    "last_status_code",
    "last_error",
    "last_authorization",
    "response_body",
    "delivered_at",
)
_RECORD_SQL = unnest_update(outbox, _RECORD_COLUMNS, also="lease_until = NULL")


# Called after rows are marked FAILED (refused by the receiver, or undeliverable within the TTL), in the
# transaction that records them: (session, [(row, error)]). The BAP shows the failure on the order.
FailureHook = Callable[[Session, list[tuple[Any, str]]], None]
ON_FAILED: dict[str, FailureHook] = {}


def on_failed(schema: str, hook: FailureHook) -> None:
    ON_FAILED[schema] = hook


def _record(schema: str, updates: list[dict[str, Any]], rows: Sequence[Any] = ()) -> None:
    """Every outcome of a delivery batch in one statement (one round trip per batch, not per row)."""
    if not updates:
        return
    with session_scope(schema) as s:
        raw(s).execute(_RECORD_SQL, [[u[f] for u in updates] for f in ("id", *_RECORD_COLUMNS)])
        hook = ON_FAILED.get(schema)
        if hook is not None:
            by_id = {r.id: r for r in rows}
            failed = [(by_id[u["id"]], u["last_error"] or "") for u in updates if u["status"] == "FAILED"]
            if failed:
                try:
                    with s.begin_nested():
                        hook(s, failed)
                except Exception:
                    log.exception("failure hook failed", schema=schema, ids=[r.id for r, _ in failed])


def due_ids(session: Session, older_than_s: float, limit: int = 500) -> list[int]:
    """PENDING rows whose next attempt is overdue by `older_than_s` and that nobody holds."""
    now = clock.wall_now()
    return list(
        session.scalars(
            select(outbox.c.id)
            .where(
                and_(
                    outbox.c.status == "PENDING",
                    outbox.c.next_attempt_at < now - timedelta(seconds=older_than_s),
                    or_(outbox.c.lease_until.is_(None), outbox.c.lease_until < now),
                )
            )
            .order_by(outbox.c.id)
            .limit(limit)
        )
    )
