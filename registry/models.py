"""Registry tables (schema `registry`)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, MetaData, String, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class RegistryBase(DeclarativeBase):
    pass


class Subscriber(RegistryBase):
    __tablename__ = "subscribers"

    subscriber_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(8))  # BAP | BPP | BG
    url: Mapped[str] = mapped_column(String(1024))
    # INITIATED | UNDER_SUBSCRIPTION | SUBSCRIBED | EXPIRED | UNSUBSCRIBED | INVALID_SSL (registry.yaml)
    status: Mapped[str] = mapped_column(String(32))
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), onupdate=func.now())

    coverage: Mapped[list[Coverage]] = relationship(back_populates="subscriber", cascade="all, delete-orphan")
    keys: Mapped[list[SubscriberKey]] = relationship(back_populates="subscriber", cascade="all, delete-orphan")


class Coverage(RegistryBase):
    """Where a subscriber operates: one row per (domain, city, country)."""

    __tablename__ = "coverage"

    subscriber_id: Mapped[str] = mapped_column(
        ForeignKey("subscribers.subscriber_id", ondelete="CASCADE"), primary_key=True
    )
    domain: Mapped[str] = mapped_column(String(255), primary_key=True)
    city_code: Mapped[str] = mapped_column(String(64), primary_key=True)  # "*" = every city
    country_code: Mapped[str] = mapped_column(String(8), primary_key=True)

    subscriber: Mapped[Subscriber] = relationship(back_populates="coverage")


class SubscriberKey(RegistryBase):
    """A subscriber may hold several keys at once (rotation); each has its own validity window."""

    __tablename__ = "subscriber_keys"

    subscriber_id: Mapped[str] = mapped_column(
        ForeignKey("subscribers.subscriber_id", ondelete="CASCADE"), primary_key=True
    )
    unique_key_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    signing_public_key: Mapped[str] = mapped_column(String(128))
    encr_public_key: Mapped[str | None] = mapped_column(String(128), nullable=True)
    valid_from: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    valid_until: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # SUBSCRIBED once approved; UNDER_SUBSCRIPTION while waiting for the operator.
    status: Mapped[str] = mapped_column(String(32))
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    subscriber: Mapped[Subscriber] = relationship(back_populates="keys")


# Every table of schema `registry`.
METADATA: tuple[MetaData, ...] = (RegistryBase.metadata,)
