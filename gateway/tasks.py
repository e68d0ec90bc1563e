"""Gateway Celery wiring: accepted searches and on_searches are processed by beckn.process_inbox."""

from beckn import processing
from gateway import service

processing.register("gateway", service.process)
