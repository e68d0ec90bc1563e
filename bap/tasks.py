"""BAP Celery wiring: outbound messages are delivered by beckn.deliver; callbacks need no further
processing (the BAP stores them while answering)."""
