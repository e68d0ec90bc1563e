"""BAP Celery wiring: outbound messages are delivered by beckn.deliver; accepted (and cancelled)
orders are registered with the ledger by beckn.process_inbox through bap.service.ledger_process;
failures of either show on the order (bap.failures.outbox_failed, bap.failures.ledger_failed); the daily
reconciliation of the three books is bap.reconcile (bap/reconcile.py)."""

import structlog

from bap import failures, reconcile, service
from beckn import outbox, processing
from kernel.celery_app import celery_app
from kernel.config import get_settings

log = structlog.get_logger(__name__)

processing.register("bap", service.ledger_process, on_failure=failures.ledger_failed)
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
