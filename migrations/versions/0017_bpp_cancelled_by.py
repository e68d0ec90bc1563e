"""Who cancelled a BPP order (issue 12): `bpp.orders.cancelled_by`, Beckn 1.1's `Cancellation.cancelled_by`.

CONSUMER when the buyer's Beckn cancel asked for it, PROVIDER when the provider cancelled (the admin API) or the
platform did on its own (bpp/lifecycle.py). Set exactly when the order is CANCELLED (two CHECK constraints).

Orders cancelled before this migration are filled in from their history: until now the only way a provider
cancelled was the admin API, whose order event reads "cancelled by the provider: <reason>"; every other
cancellation was the buyer's.

Revision ID: 0017_bpp_cancelled_by
Revises: 0016_cft_listings
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision: str = "0017_bpp_cancelled_by"
down_revision: str | None = "0016_cft_listings"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
ALTER TABLE bpp.orders ADD COLUMN cancelled_by VARCHAR(16);
UPDATE bpp.orders o SET cancelled_by = CASE
    WHEN EXISTS (
        SELECT 1 FROM bpp.order_events e
        WHERE e.order_id = o.id AND e.to_state = 'CANCELLED' AND e.reason LIKE 'cancelled by the provider:%'
    ) THEN 'PROVIDER'
    ELSE 'CONSUMER'
END
WHERE o.state = 'CANCELLED';
ALTER TABLE bpp.orders
    ADD CONSTRAINT orders_cancelled_by CHECK (cancelled_by IN ('CONSUMER', 'PROVIDER')),
    ADD CONSTRAINT orders_cancelled_by_when_cancelled CHECK ((state = 'CANCELLED') = (cancelled_by IS NOT NULL));
""")


def downgrade() -> None:
    op.execute("""
ALTER TABLE bpp.orders DROP CONSTRAINT IF EXISTS orders_cancelled_by_when_cancelled;
ALTER TABLE bpp.orders DROP CONSTRAINT IF EXISTS orders_cancelled_by;
ALTER TABLE bpp.orders DROP COLUMN IF EXISTS cancelled_by;
""")
