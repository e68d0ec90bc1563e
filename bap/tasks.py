"""BAP Celery wiring: outbound messages are delivered by beckn.deliver; accepted (and cancelled)
orders are registered with the ledger by beckn.process_inbox through bap.service.ledger_process."""

from bap import service
from beckn import processing

processing.register("bap", service.ledger_process)
