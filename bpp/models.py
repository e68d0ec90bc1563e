"""BPP tables (schema `bpp`). Inbox/outbox come from beckn/models.py.

Each table matches what the migrations create (tests/test_models_match_migrations.py compares them)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from beckn import models as beckn_models
from schemas.core import CancelledBy


class BppBase(DeclarativeBase):
    pass


class Offer(BppBase):
    """A published flexibility offer (catalog item). Rows are upserted from the providers file (or the
    compute agent); the row is also the lock taken when committing capacity against it."""

    __tablename__ = "offers"

    bpp_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    provider_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    item_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    location_id: Mapped[str] = mapped_column(String(255))
    region: Mapped[str] = mapped_column(String(64))
    meter_id: Mapped[str] = mapped_column(String(255))
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    window_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    available_kw: Mapped[float] = mapped_column(Float)
    price_gbp_per_mwh: Mapped[float] = mapped_column(Float)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)  # every FlexOfferSpec field, ISO times
    active: Mapped[bool] = mapped_column(default=True)
    # Why and when a re-plan (bpp/replan.py) or a leaving provider withdrew it; cleared when published again.
    withdrawn_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    withdrawn_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class Provider(BppBase):
    __tablename__ = "providers"

    bpp_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    provider_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    sites: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    # Compute-agent configuration (bpp/agent.py) when the catalog is derived from the provider's own
    # optimal schedule, and the instant its plan starts (every process rebuilds the same agent from it).
    agent: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    agent_anchor_utc: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Signal updates (SignalUpdate.to_dict) every later plan applies; null when none arrived.
    signal_updates: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)


class JoinedProvider(BppBase):
    """A provider that joined through the admin API (bpp/admin.py): its providers-file entry, hosted again
    after a restart until it leaves (`left_at`; the row stays, its orders still name it)."""

    __tablename__ = "joined_providers"

    bpp_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    provider_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    joined_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    left_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Order(BppBase):
    """One load-reduction order. State machine in bpp/lifecycle.py (TRANSITIONS)."""

    __tablename__ = "orders"
    __table_args__ = (
        # A buyer may hold several orders with one provider in a transaction (bpp/service.py _order_named), but
        # at most one draft (CREATED) per item: an init finds it, a later init after it was confirmed starts anew.
        Index(
            "orders_one_draft_per_item",
            "bpp_id",
            "bap_id",
            "transaction_id",
            "provider_id",
            "item_id",
            unique=True,
            postgresql_where=text("state = 'CREATED'"),
        ),
        Index("orders_transaction", "bpp_id", "bap_id", "transaction_id", "provider_id"),
        Index("orders_offer", "bpp_id", "provider_id", "item_id", "state"),
        # Who cancelled (bpp/lifecycle.py `cancel`): Beckn 1.1's two parties, set exactly when CANCELLED.
        CheckConstraint("cancelled_by IN ('CONSUMER', 'PROVIDER')", name="orders_cancelled_by"),
        CheckConstraint(
            "(state = 'CANCELLED') = (cancelled_by IS NOT NULL)", name="orders_cancelled_by_when_cancelled"
        ),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: str(uuid.uuid4()))
    bpp_id: Mapped[str] = mapped_column(String(255))
    bap_id: Mapped[str] = mapped_column(String(255))
    bap_uri: Mapped[str] = mapped_column(String(1024))
    transaction_id: Mapped[str] = mapped_column(String(255))
    provider_id: Mapped[str] = mapped_column(String(255))
    item_id: Mapped[str] = mapped_column(String(255))
    power_kw: Mapped[float] = mapped_column(Float)
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    window_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    meter_id: Mapped[str] = mapped_column(String(255))
    settlement_method: Mapped[str] = mapped_column(String(16))
    price_gbp_per_mwh: Mapped[float] = mapped_column(Float)
    state: Mapped[str] = mapped_column(String(32))
    cancellation_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    cancelled_by: Mapped[CancelledBy | None] = mapped_column(String(16), nullable=True)
    city_code: Mapped[str] = mapped_column(String(64))
    country_code: Mapped[str] = mapped_column(String(8))
    # The outcome the ledger's settlement runs established (schemas/outcome.py; bpp/outcomes.py keeps it).
    settlement_run: Mapped[str | None] = mapped_column(String(2), nullable=True)
    delivered_energy_kwh: Mapped[float | None] = mapped_column(Float, nullable=True)
    settled_amount_pence: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    outcome_checked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class OrderEvent(BppBase):
    """Append-only audit trail of order transitions."""

    __tablename__ = "order_events"
    # Named as migration 0003 created it (`index=True` would name it ix_order_events_order_id).
    __table_args__ = (Index("ix_bpp_order_events_order_id", "order_id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"))
    from_state: Mapped[str | None] = mapped_column(String(32), nullable=True)
    to_state: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    message_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Decision(BppBase):
    """The compute agent's decision log (bpp/decisions.py records), queryable by job and time."""

    __tablename__ = "decisions"
    __table_args__ = (
        UniqueConstraint("bpp_id", "provider_id", "decision_id", name="decisions_once"),
        Index("decisions_job", "bpp_id", "provider_id", "job_id"),
        Index("decisions_time", "bpp_id", "provider_id", "start_utc"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    bpp_id: Mapped[str] = mapped_column(String(255))
    provider_id: Mapped[str] = mapped_column(String(255))
    decision_id: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(32))
    job_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    site_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    order_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    start_utc: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    end_utc: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    decided_at_utc: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    rationale: Mapped[str] = mapped_column(Text)
    record: Mapped[dict[str, Any]] = mapped_column(JSON)


class CftSeries(BppBase):
    """A provider's Compute Flex Token series as created and minted on the ledger (bpp/cft_market.py); the
    catalog publishes it once `minted` > 0, with `minted` − the tokens sold (cft_sales) available."""

    __tablename__ = "cft_series"

    bpp_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    provider_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    series_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    valid_from: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    valid_to: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    declared_capacity_kw: Mapped[float] = mapped_column(Float)
    price_gbp_per_token: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    minted: Mapped[int] = mapped_column(Integer)
    published_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CftSale(BppBase):
    """A token purchase as a Beckn order: CREATED (on_init) → SOLD (the ledger settled it delivery versus
    payment at confirm) | REFUSED (the ledger or the BPP said why, in `reason`). Kept out of `orders`, whose
    columns are a load reduction's."""

    __tablename__ = "cft_sales"
    __table_args__ = (Index("cft_sales_series", "bpp_id", "provider_id", "series_id", "state"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: str(uuid.uuid4()))
    bpp_id: Mapped[str] = mapped_column(String(255))
    bap_id: Mapped[str] = mapped_column(String(255))
    transaction_id: Mapped[str] = mapped_column(String(255))
    provider_id: Mapped[str] = mapped_column(String(255))
    series_id: Mapped[str] = mapped_column(String(128))
    tokens: Mapped[int] = mapped_column(Integer)
    price_gbp_per_token: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    ledger_result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


# Every table of schema `bpp`: these and the Beckn inbox/outbox.
METADATA: tuple[MetaData, ...] = (BppBase.metadata, beckn_models.metadata)
