"""Compute Flex Tokens in the market (issue 12): the series a BPP published and the token sales it made, the
series a BAP received in on_search and the token purchases it made.

Revision ID: 0015_cft_market
Revises: 0014_orchestrator
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision: str = "0015_cft_market"
down_revision: str | None = "0014_orchestrator"
branch_labels = None
depends_on = None

TABLES = (
    """
CREATE TABLE bpp.cft_series (
	bpp_id VARCHAR(255) NOT NULL,
	provider_id VARCHAR(255) NOT NULL,
	series_id VARCHAR(128) NOT NULL,
	valid_from TIMESTAMP WITH TIME ZONE NOT NULL,
	valid_to TIMESTAMP WITH TIME ZONE NOT NULL,
	declared_capacity_kw FLOAT NOT NULL,
	price_gbp_per_token NUMERIC(14, 2) NOT NULL,
	minted INTEGER NOT NULL,
	published_at TIMESTAMP WITH TIME ZONE NOT NULL,
	PRIMARY KEY (bpp_id, provider_id, series_id)
)
""",
    """
CREATE TABLE bpp.cft_sales (
	id VARCHAR(64) NOT NULL,
	bpp_id VARCHAR(255) NOT NULL,
	bap_id VARCHAR(255) NOT NULL,
	transaction_id VARCHAR(255) NOT NULL,
	provider_id VARCHAR(255) NOT NULL,
	series_id VARCHAR(128) NOT NULL,
	tokens INTEGER NOT NULL,
	price_gbp_per_token NUMERIC(14, 2) NOT NULL,
	state VARCHAR(16) NOT NULL,
	reason TEXT,
	ledger_result JSON,
	created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
	updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
	PRIMARY KEY (id)
)
""",
    "CREATE INDEX cft_sales_series ON bpp.cft_sales (bpp_id, provider_id, series_id, state)",
    """
CREATE TABLE bap.token_offers (
	transaction_id VARCHAR(64) NOT NULL,
	bpp_id VARCHAR(255) NOT NULL,
	provider_id VARCHAR(255) NOT NULL,
	series_id VARCHAR(128) NOT NULL,
	bpp_uri VARCHAR(1024) NOT NULL,
	valid_from TIMESTAMP WITH TIME ZONE NOT NULL,
	valid_to TIMESTAMP WITH TIME ZONE NOT NULL,
	price_gbp_per_token NUMERIC(14, 2) NOT NULL,
	tokens_available INTEGER NOT NULL,
	received_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
	PRIMARY KEY (transaction_id, bpp_id, provider_id, series_id)
)
""",
    """
CREATE TABLE bap.token_orders (
	id VARCHAR(64) NOT NULL,
	transaction_id VARCHAR(64) NOT NULL,
	bpp_id VARCHAR(255) NOT NULL,
	bpp_uri VARCHAR(1024) NOT NULL,
	provider_id VARCHAR(255) NOT NULL,
	series_id VARCHAR(128) NOT NULL,
	tokens INTEGER NOT NULL,
	price_gbp_per_token NUMERIC(14, 2),
	order_id VARCHAR(64),
	state VARCHAR(16) NOT NULL,
	message_id VARCHAR(255) NOT NULL,
	last_error TEXT,
	created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
	updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
	PRIMARY KEY (id)
)
""",
    "CREATE INDEX token_orders_message ON bap.token_orders (transaction_id, message_id)",
)


def upgrade() -> None:
    for statement in TABLES:
        op.execute(statement)


def downgrade() -> None:
    for table in ("bap.token_orders", "bap.token_offers", "bpp.cft_sales", "bpp.cft_series"):
        op.execute(f"DROP TABLE IF EXISTS {table}")
