"""Compute Flex Tokens' secondary market on the ledger (issue 12): listings, their purchases and cancellations.

A listing's tokens sit in its escrow account `listing:<listing>:<series>` (ledger/accounts.py), so how many are
left is the ledger's balance, never a counter here. The three tables are append-only like every other ledger
input (a trigger rejects UPDATE, DELETE and TRUNCATE): a listing's state is derived from its cancellation, its
escrow balance and its series' validity (ledger/cft.py `listing_status`).

Revision ID: 0016_cft_listings
Revises: 0015_cft_market
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision: str = "0016_cft_listings"
down_revision: str | None = "0015_cft_market"
branch_labels = None
depends_on = None

TABLES = ("cft_listings", "cft_listing_purchases", "cft_listing_cancellations")

UPGRADE_SQL = """
CREATE TABLE ledger.cft_listings (
    listing_id              text PRIMARY KEY,
    series_id               text NOT NULL REFERENCES ledger.cft_series (series_id),
    seller_id               text NOT NULL,
    tokens                  bigint NOT NULL CHECK (tokens > 0),
    price_pence_per_token   bigint NOT NULL CHECK (price_pence_per_token > 0),
    listed_at               timestamptz NOT NULL
);
CREATE INDEX cft_listings_series ON ledger.cft_listings (series_id, price_pence_per_token);
CREATE INDEX cft_listings_seller ON ledger.cft_listings (seller_id);

CREATE TABLE ledger.cft_listing_purchases (
    purchase_id     text PRIMARY KEY,
    listing_id      text NOT NULL REFERENCES ledger.cft_listings (listing_id),
    buyer_id        text NOT NULL,
    tokens          bigint NOT NULL CHECK (tokens > 0),
    price_pence     bigint NOT NULL CHECK (price_pence > 0),
    bought_at       timestamptz NOT NULL
);
CREATE INDEX cft_listing_purchases_listing ON ledger.cft_listing_purchases (listing_id);

CREATE TABLE ledger.cft_listing_cancellations (
    listing_id      text PRIMARY KEY REFERENCES ledger.cft_listings (listing_id),
    tokens_returned bigint NOT NULL CHECK (tokens_returned >= 0),
    cancelled_at    timestamptz NOT NULL
);
"""


def upgrade() -> None:
    op.execute(UPGRADE_SQL)
    for table in TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON ledger.{table} "
            "FOR EACH ROW EXECUTE FUNCTION ledger.reject_mutation()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON ledger.{table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION ledger.reject_mutation()"
        )


def downgrade() -> None:
    for table in reversed(TABLES):
        op.execute(f"DROP TABLE IF EXISTS ledger.{table}")
