"""BAP Celery wiring: outbound messages are delivered by beckn.deliver; accepted (and cancelled)
orders are registered with the ledger by beckn.process_inbox through bap.service.ledger_process;
failures of either show on the order (bap.failures.outbox_failed, bap.failures.ledger_failed)."""

from bap import failures, service
from beckn import outbox, processing

processing.register("bap", service.ledger_process, on_failure=failures.ledger_failed)
outbox.on_failed("bap", failures.outbox_failed)  # refused or undeliverable requests show on their order
