"""Moving a procurement on as soon as something it waits for has committed (an on_search, an order callback):
the handler notes the procurement on its session, and once that transaction commits a worker is asked to run
`bap.advance_procurement`. The beat tick (every second) remains the safety net for a lost kick."""

from __future__ import annotations

import contextlib

from sqlalchemy import event
from sqlalchemy.orm import Session

from kernel.celery_app import celery_app

_KEY = "flexmarket_procurements_to_kick"


def after_commit(session: Session, procurement_id: str) -> None:
    session.info.setdefault(_KEY, set()).add(procurement_id)


@event.listens_for(Session, "after_commit")
def _kick(session: Session) -> None:
    ids = session.info.pop(_KEY, None)
    for pid in sorted(ids or ()):
        with contextlib.suppress(Exception):  # the broker is away: the tick will
            celery_app.send_task("bap.advance_procurement", args=[pid])


@event.listens_for(Session, "after_rollback")
def _forget(session: Session) -> None:
    session.info.pop(_KEY, None)
