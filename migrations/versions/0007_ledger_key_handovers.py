"""The ledger's signing-key hand-overs (`flexmarket ledger rotate-key`, ledger/checkpoints.py `rotate_key`).

One row per rotation: at chain height `height` the key in force (`public_key`) signs a checkpoint message of
the chain head that names the next key, which countersigns it; the next key signs every checkpoint above
`height`. Append-only like the checkpoints (the same trigger rejects UPDATE, DELETE and TRUNCATE).

Revision ID: 0007_ledger_key_handovers
Revises: 0006_order_amendments
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision: str = "0007_ledger_key_handovers"
down_revision: str | None = "0006_order_amendments"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
CREATE TABLE ledger.key_handovers (
    height               bigint PRIMARY KEY CHECK (height > 0),
    key_id               text NOT NULL,
    public_key           text NOT NULL,
    next_key_id          text NOT NULL,
    next_public_key      text NOT NULL UNIQUE,
    message              bytea NOT NULL,
    signature            bytea NOT NULL,
    next_key_signature   bytea NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER key_handovers_append_only BEFORE UPDATE OR DELETE ON ledger.key_handovers
    FOR EACH ROW EXECUTE FUNCTION ledger.reject_mutation();
CREATE TRIGGER key_handovers_no_truncate BEFORE TRUNCATE ON ledger.key_handovers
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.reject_mutation();
"""
    )


def downgrade() -> None:
    op.execute("DROP TABLE ledger.key_handovers")
