"""The market log and the carbon log (bap/models.py `MarketLogEntry`): every offer seen, every choice and its
reason, every order and its outcome, every re-procurement; expected and delivered carbon avoided per order.
Queryable by procurement, provider and time; exported as JSON lines."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from bap.models import MarketLogEntry
from kernel import clock

log = structlog.get_logger(__name__)


def record(
    session: Session,
    kind: str,
    message: str,
    *,
    procurement_id: str | None,
    policy_version: int | None = None,
    provider_id: str | None = None,
    order_ref: str | None = None,
    carbon: bool = False,
    **detail: Any,
) -> None:
    """One line of the market (or carbon) log, also written to the structured log."""
    session.add(
        MarketLogEntry(
            procurement_id=procurement_id,
            log="carbon" if carbon else "market",
            kind=kind,
            provider_id=provider_id,
            order_ref=order_ref,
            policy_version=policy_version,
            message=message,
            detail=json.loads(json.dumps(detail, default=str)),
            market_at=clock.now(),
            wall_at=clock.wall_now(),
        )
    )
    log.info(
        message, kind=kind, procurement_id=procurement_id, provider_id=provider_id, log="carbon" if carbon else "market"
    )


def entry_json(e: MarketLogEntry) -> dict[str, Any]:
    return {
        "id": e.id,
        "log": e.log,
        "procurement_id": e.procurement_id,
        "kind": e.kind,
        "provider_id": e.provider_id,
        "order_ref": e.order_ref,
        "policy_version": e.policy_version,
        "message": e.message,
        "detail": e.detail,
        "market_at": e.market_at.isoformat(),
    }


def query(
    session: Session,
    *,
    log_name: str = "market",
    procurement_id: str | None = None,
    provider_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    q = select(MarketLogEntry).where(MarketLogEntry.log == log_name)
    if procurement_id:
        q = q.where(MarketLogEntry.procurement_id == procurement_id)
    if provider_id:
        q = q.where(MarketLogEntry.provider_id == provider_id)
    if since:
        q = q.where(MarketLogEntry.market_at >= since)
    if until:
        q = q.where(MarketLogEntry.market_at < until)
    return [entry_json(e) for e in session.scalars(q.order_by(MarketLogEntry.id).limit(limit))]


def jsonl(entries: list[dict[str, Any]]) -> Iterator[str]:
    for e in entries:
        yield json.dumps(e, sort_keys=True) + "\n"
