"""Celery tasks of the ledger (scheduled by kernel/celery_app.py's beat schedule).

- `ledger.checkpoint`  — sign the chain head and publish it under $FLEXMARKET_HOME/ledger/checkpoints.
- `ledger.expire_cfts` — expire tokens of ended CFT series and pending transfers past their timeout.
- `ledger.settle_due`  — run every settlement run that is due (II as soon as a window has closed and
                         its metering is in). Idempotent: re-running it, or a redelivered task, finds
                         nothing new due and appends nothing (run rows are keyed by (order, run) and
                         transfer ids are deterministic).
Tasks carry no state; they read everything from the database, so any worker can run any of them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from kernel import clock
from kernel.celery_app import celery_app
from ledger import settlement_runs
from ledger.checkpoints import create_checkpoint, default_publish_dir
from ledger.db import connection, in_transaction
from ledger.tokens import expire_due


def _now(now_iso: str | None) -> datetime:
    return clock.now() if now_iso is None else datetime.fromisoformat(now_iso.replace("Z", "+00:00"))


@celery_app.task(name="ledger.checkpoint")
def checkpoint() -> dict[str, Any] | None:
    with connection() as conn, conn.transaction():
        cp = create_checkpoint(conn, publish_dir=default_publish_dir())
    return None if cp is None else cp["message"]


@celery_app.task(name="ledger.expire_cfts")
def expire_cfts(now_iso: str | None = None) -> dict[str, int]:
    with connection() as conn:
        return in_transaction(conn, lambda c: expire_due(c, _now(now_iso)))


@celery_app.task(name="ledger.settle_due")
def settle_due(now_iso: str | None = None) -> list[dict[str, Any]]:
    return [o.as_json() for o in settlement_runs.settle_due(None, _now(now_iso))]
