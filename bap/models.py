"""BAP tables (schema `bap`). Every message sent or received is also kept byte-exact in the shared
outbox/inbox tables (beckn/models.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from beckn import models as beckn_models


class BapBase(DeclarativeBase):
    pass


class Transaction(BapBase):
    __tablename__ = "transactions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # Beckn transaction_id
    request: Mapped[dict[str, Any]] = mapped_column(JSON)  # what the aggregator asked for
    city_code: Mapped[str] = mapped_column(String(64))
    country_code: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # The aggregator whose key started it (bap/auth.py); None when an operator key did. Only that aggregator's
    # keys see and act on it.
    aggregator_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)


class CatalogOffer(BapBase):
    """An offer received in on_search."""

    __tablename__ = "catalog_offers"

    transaction_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    bpp_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    provider_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    item_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    bpp_uri: Mapped[str] = mapped_column(String(1024))
    provider_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    price_gbp_per_mwh: Mapped[float] = mapped_column(Float)
    available_kw: Mapped[float] = mapped_column(Float)
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    window_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class BapOrder(BapBase):
    """The buyer's view of one order with one provider, updated by every on_* callback."""

    __tablename__ = "orders"

    transaction_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    bpp_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    provider_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    bpp_uri: Mapped[str] = mapped_column(String(1024))
    item_id: Mapped[str] = mapped_column(String(255))
    order_id: Mapped[str | None] = mapped_column(String(64), nullable=True)  # assigned by the BPP at init
    power_kw: Mapped[float] = mapped_column(Float)
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    window_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    meter_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    settlement_method: Mapped[str] = mapped_column(String(16), default="P415")
    # SELECTING → QUOTED → CREATED → ACCEPTED → IN-PROGRESS → COMPLETED … or CANCELLED (BPP's states)
    state: Mapped[str] = mapped_column(String(32))
    price_gbp_per_mwh: Mapped[float | None] = mapped_column(Float, nullable=True)
    quote_gbp: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    order: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # last order object received
    # The outcome the ledger's settlement runs established, as the BPP reported it (schemas/outcome.py).
    settlement_run: Mapped[str | None] = mapped_column(String(2), nullable=True)
    delivered_energy_kwh: Mapped[float | None] = mapped_column(Float, nullable=True)
    settled_amount_pence: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class ApiKey(BapBase):
    """A key of the client API (`fmb_<key_id>_<secret>`, bap/auth.py): only the secret's SHA-256 is kept."""

    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint("role IN ('operator', 'aggregator', 'viewer')", name="api_keys_role"),
        CheckConstraint("(role = 'aggregator') = (aggregator_id IS NOT NULL)", name="api_keys_aggregator_bound"),
    )

    key_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    secret_sha256: Mapped[bytes] = mapped_column(LargeBinary)
    role: Mapped[str] = mapped_column(String(16))
    aggregator_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    label: Mapped[str] = mapped_column(String(200), server_default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AuditEntry(BapBase):
    """One call to the client API that changed (or tried to change) state, or was refused (bap/audit.py).
    Append-only: a trigger rejects UPDATE, DELETE and TRUNCATE."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_key_id_id", "key_id", "id"),
        Index("ix_audit_log_outcome_id", "outcome", "id"),
        Index("ix_audit_log_wall_at", "wall_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    # who: None when no valid key was presented
    key_id: Mapped[str | None] = mapped_column(String(16), nullable=True)
    role: Mapped[str | None] = mapped_column(String(16), nullable=True)
    aggregator_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # what
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(1024))
    action: Mapped[str] = mapped_column(String(64))
    transaction_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    order_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # when: market time (kernel.clock.now()) and wall time
    market_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    wall_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # from where
    client_address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # outcome
    status_code: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(String(1000), nullable=True)


class ReconciliationAlert(BapBase):
    """One difference between the BAP's, the BPP's and the ledger's copy of an order (bap/reconcile.py): open
    while reconciliation keeps finding it, resolved when a later run no longer does."""

    __tablename__ = "reconciliation_alerts"
    __table_args__ = (
        Index(
            "reconciliation_alerts_open",
            "order_id",
            "kind",
            unique=True,
            postgresql_where=text("resolved_at IS NULL"),
        ),
        Index("reconciliation_alerts_transaction", "transaction_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(255))  # the ledger's ids run longer than the BPP's
    transaction_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    bpp_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    kind: Mapped[str] = mapped_column(String(32))  # bap/differences.py Kind
    bap_value: Mapped[str | None] = mapped_column(Text, nullable=True)
    bpp_value: Mapped[str | None] = mapped_column(Text, nullable=True)
    ledger_value: Mapped[str | None] = mapped_column(Text, nullable=True)
    first_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # market time
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


# Every table of schema `bap`: these and the Beckn inbox/outbox.
METADATA: tuple[MetaData, ...] = (BapBase.metadata, beckn_models.metadata)
