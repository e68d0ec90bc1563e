"""Gateway Celery wiring: accepted searches and on_searches are processed by beckn.process_inbox; searches
undeliverable to a BPP are reported to their BAP."""

from beckn import outbox, processing
from gateway import service

processing.register("gateway", service.process)
outbox.on_failed("gateway", service.fan_out_failed)  # a BPP the fan-out cannot reach is reported to the BAP
