"""Order amendments: an accepted Beckn `update` (contracted kW and window) reaches the ledger.

Append-only like the orders themselves: the terms of an order as of an instant are its registered terms
with the latest amendment recorded at or before that instant (ledger/orders.py `terms_as_of`). Each
amendment names the escrow reserve (a pending transfer) that holds its maximum value; the one before it
is voided in the same transaction.

Revision ID: 0006_order_amendments
Revises: 0005_run_clock
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision: str = "0006_order_amendments"
down_revision: str | None = "0005_run_clock"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
CREATE TABLE ledger.order_amendments (
    order_id      text NOT NULL REFERENCES ledger.orders (order_id),
    seq           integer NOT NULL CHECK (seq >= 1),
    reference     text NOT NULL,
    window_start  timestamptz NOT NULL,
    window_end    timestamptz NOT NULL,
    contracted_w  bigint NOT NULL CHECK (contracted_w > 0),
    amended_at    timestamptz NOT NULL,
    recorded_at   timestamptz NOT NULL,
    reserve_id    text,
    PRIMARY KEY (order_id, seq),
    UNIQUE (order_id, reference),
    CHECK (window_end > window_start)
)
"""
    )
    op.execute(
        "CREATE TRIGGER order_amendments_append_only BEFORE UPDATE OR DELETE ON ledger.order_amendments "
        "FOR EACH ROW EXECUTE FUNCTION ledger.reject_mutation()"
    )
    op.execute(
        "CREATE TRIGGER order_amendments_no_truncate BEFORE TRUNCATE ON ledger.order_amendments "
        "FOR EACH STATEMENT EXECUTE FUNCTION ledger.reject_mutation()"
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS ledger.order_amendments")
