"""BAP Celery wiring: outbound messages are delivered by beckn.deliver; accepted (and cancelled)
orders are registered with the ledger by beckn.process_inbox through bap.ledger_registration.ledger_process;
failures of either show on the order (bap.failures.outbox_failed, bap.failures.ledger_failed); the daily
reconciliation of the three books is bap.reconcile (bap/reconcile.py)."""

import structlog

from bap import (
    failures,
    governance,
    ledger_registration,
    procurement_engine,
    procurement_tokens,
    reconcile,
    signals,
    token_policy,
)
from beckn import outbox, processing
from beckn.tasks import send_delivery
from kernel import clock
from kernel.celery_app import celery_app
from kernel.config import get_settings
from kernel.db import session_scope

log = structlog.get_logger(__name__)

processing.register("bap", ledger_registration.ledger_process, on_failure=failures.ledger_failed)
outbox.on_failed("bap", failures.outbox_failed)  # refused or undeliverable requests show on their order


@celery_app.task(name="bap.reconcile")
def reconcile_books() -> int:
    """The daily reconciliation (Celery beat `bap-reconcile`): the number of differences found."""
    settings = get_settings()
    if not settings.ledger_url:
        return 0  # no ledger: nothing to reconcile against
    if not (settings.bap_subscriber_id or settings.subscriber_id):
        log.warning("daily reconciliation skipped: no BAP named (FLEXMARKET_BAP_SUBSCRIBER_ID)")
        return 0
    return len(reconcile.run(reconcile.worker_identity()).differences)


@celery_app.task(name="bap.advance_procurement")
def advance_procurement(procurement_id: str) -> None:
    """One step of a procurement (bap/procurement_engine.py); its messages are delivered once committed."""
    try:
        step = procurement_engine.advance(procurement_id)
    except Exception as exc:
        log.exception("procurement step failed", procurement_id=procurement_id)
        procurement_engine.step_failed(procurement_id, exc)
        return
    if step.outbox_ids:
        send_delivery("bap", step.outbox_ids)


@celery_app.task(name="bap.procurements_tick")
def procurements_tick() -> int:
    """Celery beat `bap-procurements`: every procurement still moving takes a step."""
    with session_scope("bap") as s:
        ids = procurement_engine.moving(s)
    for pid in ids:
        advance_procurement(pid)  # a failing step is counted there, never stops the others
    return len(ids)


@celery_app.task(name="bap.poll_signals")
def poll_signals() -> int:
    """Celery beat `bap-signals`: the configured grid-signal source polled (bap/signals.py); half-hours stored."""
    source = signals.configured_source()
    if source is None:
        return 0
    with session_scope("bap") as s:
        return signals.poll(s, source)


@celery_app.task(name="bap.consider_tokens")
def consider_tokens() -> int:
    """Celery beat `bap-tokens`: buy the Compute Flex Tokens the active policy finds cheap (bap/token_policy.py)."""
    with session_scope("bap") as s:
        policy = governance.active(s).body
        if policy.tokens.buy_below_fraction_of_spot is None:
            return 0
        me = reconcile.worker_identity()
        purchases = token_policy.decide(s, policy, procurement_tokens.held(s), clock.now())
        return token_policy.buy(s, purchases, bap_id=me.subscriber_id, bap_uri=me.url)
