"""BAP tables (schema `bap`). Every message sent or received is also kept byte-exact in the shared
outbox/inbox tables (beckn/models.py)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
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
    """The buyer's view of one order, updated by every on_* callback. Its identity is `id` (bap/orders.py):
    a transaction may hold several orders with one provider, one open order per item at a time."""

    __tablename__ = "orders"
    __table_args__ = (
        Index(
            "orders_one_open_per_item",
            "transaction_id",
            "bpp_id",
            "provider_id",
            "item_id",
            unique=True,
            postgresql_where=text("state <> 'CANCELLED'"),
        ),
        Index("orders_transaction", "transaction_id"),
        Index("orders_procurement", "procurement_id"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: str(uuid.uuid4()))
    transaction_id: Mapped[str] = mapped_column(String(64))
    bpp_id: Mapped[str] = mapped_column(String(255))
    provider_id: Mapped[str] = mapped_column(String(255))
    # The procurement (bap/procurement.py) that placed it; None for an order an aggregator placed by hand.
    procurement_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
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


class Policy(BapBase):
    """One version of the orchestrator's policy (bap/policy.py `PolicyBody`). Versions are never changed:
    a change is a new version, and `policy_activations` says which one runs."""

    __tablename__ = "policies"

    version: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    note: Mapped[str] = mapped_column(String(500), server_default="")
    created_by: Mapped[str | None] = mapped_column(String(16), nullable=True)  # API key id
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # market time


class PolicyActivation(BapBase):
    """Append-only: which version is active, and which runs in shadow (None: shadow mode off)."""

    __tablename__ = "policy_activations"
    __table_args__ = (CheckConstraint("mode IN ('active', 'shadow')", name="policy_activations_mode"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    mode: Mapped[str] = mapped_column(String(8))
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    by_key_id: Mapped[str | None] = mapped_column(String(16), nullable=True)
    reason: Mapped[str] = mapped_column(String(500), server_default="")
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Halt(BapBase):
    """Append-only kill-switch history: the latest row is the state."""

    __tablename__ = "halts"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    halted: Mapped[bool] = mapped_column(Boolean)
    by_key_id: Mapped[str | None] = mapped_column(String(16), nullable=True)
    reason: Mapped[str] = mapped_column(String(500))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Procurement(BapBase):
    """One load reduction to buy (bap/procurement.py): a target per half-hour slot, its offers, its choice
    and its orders (`orders.procurement_id`)."""

    __tablename__ = "procurements"
    __table_args__ = (
        CheckConstraint("source IN ('api', 'openadr', 'webhook')", name="procurements_source"),
        Index("procurements_status", "status"),
        Index("procurements_event", "source", "event_id", unique=True, postgresql_where=text("event_id IS NOT NULL")),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: str(uuid.uuid4()))
    source: Mapped[str] = mapped_column(String(16))
    event_id: Mapped[str | None] = mapped_column(String(255), nullable=True)  # the grid event it answers
    event_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the event body it was made from
    status: Mapped[str] = mapped_column(String(32))
    status_reason: Mapped[str] = mapped_column(Text, server_default="")
    policy_version: Mapped[int] = mapped_column(Integer)
    # what was asked: {"slots": [{"start", "end", "target_kw"}], "price_cap_gbp_per_mwh", "objective"}
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    transaction_ids: Mapped[list[str]] = mapped_column(JSON)  # its searches, latest last
    collect_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)  # wall time
    choice: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # the latest portfolio
    shadow: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # what the shadow policy chose
    explanation: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # for an approver
    decided_by: Mapped[str | None] = mapped_column(String(16), nullable=True)
    approval_latency_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    aggregator_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_by: Mapped[str | None] = mapped_column(String(16), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # market time
    created_wall: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    covered_wall: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class MarketLogEntry(BapBase):
    """The market log: every offer seen, every choice and its reason, every order and its outcome, every
    re-procurement (bap/market_log.py). Append-only."""

    __tablename__ = "market_log"
    __table_args__ = (
        Index("market_log_procurement", "procurement_id", "id"),
        Index("market_log_provider", "provider_id", "id"),
        Index("market_log_at", "market_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    procurement_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    log: Mapped[str] = mapped_column(String(8), server_default="market")  # market | carbon
    kind: Mapped[str] = mapped_column(String(32))
    provider_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    order_ref: Mapped[str | None] = mapped_column(String(64), nullable=True)
    policy_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    message: Mapped[str] = mapped_column(Text)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)
    market_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    wall_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class GridSignal(BapBase):
    """The latest reading of each half-hour of a grid signal the orchestrator heard (bap/signals.py): carbon
    intensity (NESO format) and system prices (Elexon format), forecast replaced by actual when it comes."""

    __tablename__ = "grid_signals"
    __table_args__ = (CheckConstraint("kind IN ('carbon', 'price')", name="grid_signals_kind"),)

    kind: Mapped[str] = mapped_column(String(8), primary_key=True)
    period_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    value: Mapped[float] = mapped_column(Float)
    value_kind: Mapped[str] = mapped_column(String(8))  # forecast | actual | settled
    observed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # published, or the period's end
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # market time


class TokenOffer(BapBase):
    """A Compute Flex Token series received in on_search (schemas/flex.py `item_to_series`)."""

    __tablename__ = "token_offers"

    transaction_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    bpp_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    provider_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    series_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    bpp_uri: Mapped[str] = mapped_column(String(1024))
    valid_from: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    valid_to: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    price_gbp_per_token: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    tokens_available: Mapped[int] = mapped_column(Integer)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class TokenOrder(BapBase):
    """A purchase of tokens (bap/tokens.py), select → init → confirm sent one after the other as each answer
    comes: SELECTING → QUOTED → CREATED → ACCEPTED (sold on the ledger) | FAILED (`last_error` says why).
    `message_id` is the last request's, which its callback answers."""

    __tablename__ = "token_orders"
    __table_args__ = (Index("token_orders_message", "transaction_id", "message_id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: str(uuid.uuid4()))
    transaction_id: Mapped[str] = mapped_column(String(64))
    bpp_id: Mapped[str] = mapped_column(String(255))
    bpp_uri: Mapped[str] = mapped_column(String(1024))
    provider_id: Mapped[str] = mapped_column(String(255))
    series_id: Mapped[str] = mapped_column(String(128))
    tokens: Mapped[int] = mapped_column(Integer)
    price_gbp_per_token: Mapped[Decimal | None] = mapped_column(Numeric(14, 2), nullable=True)
    order_id: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the BPP's, from on_init
    state: Mapped[str] = mapped_column(String(16))
    message_id: Mapped[str] = mapped_column(String(255))
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


# Every table of schema `bap`: these and the Beckn inbox/outbox.
METADATA: tuple[MetaData, ...] = (BapBase.metadata, beckn_models.metadata)
