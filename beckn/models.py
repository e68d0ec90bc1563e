"""Inbox and outbox tables, declared once and present in every Beckn participant's schema
(bap, bpp, gateway); a participant's engine search_path picks its own copy.

Outbox (../shared/DESIGN.md "Delivery that loses nothing"): a row is written in the same transaction
as the state change it announces; a Celery task signs and sends it, marks it DELIVERED on ACK,
retries with backoff, and marks it FAILED (with the reason) after its TTL — never silently dropped.
Inbox: every accepted message, keyed by (receiver, sender, message_id, action): a duplicate is ACKed
and not processed again. The receiver is part of the key because one BPP host serves many platforms,
which all receive the same search.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
)

metadata = MetaData()


def inbox_columns() -> list:
    return [
        Column("id", BigInteger, Identity(), primary_key=True),
        Column("receiver_id", String(255), nullable=False),  # our subscriber id (BPP platforms are multi-tenant)
        Column("sender_id", String(255), nullable=False),  # from the verified Authorization keyId
        Column("sender_key_id", String(255), nullable=False),
        Column("gateway_id", String(255)),  # set when X-Gateway-Authorization was present and verified
        Column("gateway_key_id", String(255)),
        Column("signature_verified", Boolean, nullable=False),
        Column("action", String(32), nullable=False),
        Column("message_id", String(255), nullable=False),
        Column("transaction_id", String(255), nullable=False),
        Column("body", LargeBinary, nullable=False),  # the exact bytes received (what was verified)
        Column("authorization", Text),
        Column("gateway_authorization", Text),
        # RECEIVED → PROCESSED | FAILED (processing error recorded in `error`)
        Column("status", String(16), nullable=False),
        Column("error", Text),
        Column("attempts", Integer, nullable=False, server_default="0"),
        Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("processed_at", DateTime(timezone=True)),
        UniqueConstraint("receiver_id", "sender_id", "message_id", "action", name="inbox_dedup"),
    ]


def outbox_columns() -> list:
    return [
        Column("id", BigInteger, Identity(), primary_key=True),
        Column("sender_id", String(255), nullable=False),  # whose key signs
        Column("receiver_url", String(2048), nullable=False),  # full URL incl. the action
        Column("action", String(32), nullable=False),
        Column("message_id", String(255), nullable=False),
        Column("transaction_id", String(255), nullable=False),
        Column("body", LargeBinary, nullable=False),  # the exact bytes signed and sent
        # Relays (gateway): the original sender's Authorization travels unchanged and the relay signs
        # the same bytes in X-Gateway-Authorization.
        Column("forwarded_authorization", Text),
        Column("status", String(16), nullable=False, server_default="PENDING"),  # PENDING|DELIVERED|FAILED
        Column("attempts", Integer, nullable=False, server_default="0"),
        Column("next_attempt_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("lease_until", DateTime(timezone=True)),  # a worker holds the row while sending
        Column("expires_at", DateTime(timezone=True), nullable=False),
        Column("last_status_code", Integer),
        Column("last_error", Text),
        Column("last_authorization", Text),
        Column("response_body", Text),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("delivered_at", DateTime(timezone=True)),
    ]


inbox = Table("inbox", metadata, *inbox_columns())
outbox = Table("outbox", metadata, *outbox_columns())
Index("inbox_pending", inbox.c.status, inbox.c.received_at)
Index("outbox_due", outbox.c.status, outbox.c.next_attempt_at)
Index("outbox_tx", outbox.c.transaction_id)
