"""The gateway keeps no business state: only the shared inbox and outbox (schema `gateway`)."""

from sqlalchemy import MetaData

from beckn.models import inbox, metadata, outbox

# Every table of schema `gateway`.
METADATA: tuple[MetaData, ...] = (metadata,)

__all__ = ["METADATA", "inbox", "outbox"]
