"""The BAP client API's audit log (table bap.audit_log, append-only: a trigger rejects UPDATE, DELETE and
TRUNCATE).

What is recorded: every call that may change state (any method but GET/HEAD/OPTIONS), whatever its outcome,
and every refused call (401/403) of any method. Who (key id, role, aggregator id), what (method, path, the
permission table's action name, the transaction and order when there is one), when (market time and wall
time), from where (the client address) and the outcome (status code, error code and message).

The rule when the row cannot be written: the request is refused with 503 `audit_unavailable`, never a 500.
A successful state change writes its row in the same database transaction as the change (`record` inside
the endpoint's session), so a change is committed with its row or not at all. Every other row is written
on its own (`record_alone`) once the answer is known; if that fails the answer is replaced by the 503 —
safe because such a request changed nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from bap import orders
from bap.auth import Principal
from bap.models import AuditEntry
from kernel.db import session_scope
from schemas import limits

log = structlog.get_logger(__name__)

MAX_ERROR_MESSAGE_CHARS = 1000
MAX_PATH_CHARS = 1024
MAX_ADDRESS_CHARS = 64


class Outcome(StrEnum):
    OK = "ok"  # 1xx-3xx
    UNAUTHENTICATED = "unauthenticated"  # 401
    FORBIDDEN = "forbidden"  # 403
    REJECTED = "rejected"  # any other 4xx
    FAILED = "failed"  # 5xx

    @classmethod
    def of(cls, status_code: int) -> Outcome:
        if status_code < 400:
            return cls.OK
        if status_code == 401:
            return cls.UNAUTHENTICATED
        if status_code == 403:
            return cls.FORBIDDEN
        return cls.REJECTED if status_code < 500 else cls.FAILED


class AuditUnavailable(RuntimeError):
    """The audit row could not be written: the request is refused (503) and changes nothing."""


@dataclass(frozen=True)
class Subject:
    """What a call names: its transaction and, for order actions, the order's BPP and provider."""

    transaction_id: str | None = None
    bpp_id: str | None = None
    provider_id: str | None = None


@dataclass
class Call:
    """One client-API call as the audit log sees it, filled in as the request is handled."""

    method: str
    path: str
    action: str
    market_at: datetime
    wall_at: datetime
    client_address: str | None
    subject: Subject
    principal: Principal | None = None
    recorded: bool = field(default=False)


def _printable(value: str) -> str:
    """`value` as a text column holds it: NUL, control characters and lone surrogates (which an unauthenticated
    caller may put in a path) escaped, so that recording an attempt never fails on what the attempt sent."""
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in value)


def _clip(value: str | None, n: int) -> str | None:
    return None if value is None else _printable(value)[:n]


def _order_id(session: Session, subject: Subject) -> str | None:
    if not (subject.transaction_id and subject.bpp_id and subject.provider_id):
        return None
    order = orders.named_by(
        session, subject.transaction_id, subject.bpp_id, provider_id=subject.provider_id, item_id=None, order_id=None
    )
    return order.order_id if order is not None else None


def record(
    session: Session,
    call: Call,
    *,
    status_code: int,
    error: tuple[str, str] | None = None,
    transaction_id: str | None = None,
) -> None:
    """Add the call's row to `session`'s transaction (AuditUnavailable if it cannot be written)."""
    who = call.principal
    tx = transaction_id or call.subject.transaction_id
    try:
        session.add(
            AuditEntry(
                key_id=who.key_id if who else None,
                role=who.role.value if who else None,
                aggregator_id=who.aggregator_id if who else None,
                method=call.method,
                path=_printable(call.path)[:MAX_PATH_CHARS],
                action=call.action,
                transaction_id=_clip(tx, limits.MAX_ID_CHARS),
                order_id=_clip(_order_id(session, call.subject), limits.MAX_ID_CHARS),
                market_at=call.market_at,
                wall_at=call.wall_at,
                client_address=_clip(call.client_address, MAX_ADDRESS_CHARS),
                status_code=status_code,
                outcome=Outcome.of(status_code).value,
                error_code=_clip(error[0], 64) if error else None,
                error_message=_clip(error[1], MAX_ERROR_MESSAGE_CHARS) if error else None,
            )
        )
        session.flush()
    except SQLAlchemyError as exc:
        log.error("audit row not written", action=call.action, error=str(exc).splitlines()[0])
        raise AuditUnavailable("the audit log cannot be written") from exc
    call.recorded = True


def record_alone(call: Call, *, status_code: int, error: tuple[str, str] | None = None) -> None:
    """The call's row in a transaction of its own (for calls that changed nothing)."""
    try:
        with session_scope("bap") as s:
            record(s, call, status_code=status_code, error=error)
    except AuditUnavailable:
        raise
    except Exception as exc:  # the database went away between the request and its row
        call.recorded = False
        log.error("audit row not written", action=call.action, error=str(exc).splitlines()[0] if str(exc) else "")
        raise AuditUnavailable("the audit log cannot be written") from exc


def error_of(body: bytes) -> tuple[str, str] | None:
    """(code, message) of a JSON error body {"error": {"code", "message"}}; None for anything else."""
    try:
        err = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return None
    if not isinstance(err, dict):
        return None
    return str(err.get("code") or "error"), str(err.get("message") or "")


@dataclass(frozen=True)
class AuditQuery:
    key_id: str | None = None
    outcome: Outcome | None = None
    since: datetime | None = None  # wall time, inclusive
    until: datetime | None = None  # wall time, exclusive
    before_id: int | None = None  # paging: rows older than this id
    limit: int = 100


def page(session: Session, q: AuditQuery) -> dict[str, Any]:
    """Rows matching `q`, newest first; `next_before_id` asks for the next page (None on the last)."""
    stmt = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(q.limit + 1)
    if q.key_id is not None:
        stmt = stmt.where(AuditEntry.key_id == q.key_id)
    if q.outcome is not None:
        stmt = stmt.where(AuditEntry.outcome == q.outcome.value)
    if q.since is not None:
        stmt = stmt.where(AuditEntry.wall_at >= q.since)
    if q.until is not None:
        stmt = stmt.where(AuditEntry.wall_at < q.until)
    if q.before_id is not None:
        stmt = stmt.where(AuditEntry.id < q.before_id)
    rows = list(session.scalars(stmt))
    more = len(rows) > q.limit
    rows = rows[: q.limit]
    return {"entries": [_json(r) for r in rows], "next_before_id": rows[-1].id if more and rows else None}


def _json(r: AuditEntry) -> dict[str, Any]:
    return {
        "id": r.id,
        "who": {"key_id": r.key_id, "role": r.role, "aggregator_id": r.aggregator_id},
        "what": {
            "method": r.method,
            "path": r.path,
            "action": r.action,
            "transaction_id": r.transaction_id,
            "order_id": r.order_id,
        },
        "when": {"market": r.market_at.isoformat(), "wall": r.wall_at.isoformat()},
        "from": r.client_address,
        "outcome": {
            "status_code": r.status_code,
            "outcome": r.outcome,
            "error_code": r.error_code,
            "error_message": r.error_message,
        },
    }
