"""BAP tables (schema `bap`). Every message sent or received is also kept byte-exact in the shared
outbox/inbox tables (beckn/models.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, MetaData, String, Text, func
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
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


# Every table of schema `bap`: these and the Beckn inbox/outbox.
METADATA: tuple[MetaData, ...] = (BapBase.metadata, beckn_models.metadata)
