"""The gateway keeps no business state: only the shared inbox and outbox (schema `gateway`)."""

from beckn.models import inbox, outbox

__all__ = ["inbox", "outbox"]
