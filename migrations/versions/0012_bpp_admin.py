"""Providers that joined a BPP platform through its admin API (bpp/admin.py).

A data centre joins a running BPP platform with `flexmarket provider join`: its provider config (the
providers file's provider entry) is kept here so a restarted BPP hosts it again beside the providers file's
own. Leaving stamps `left_at`: the row stays (its orders still name the provider and settle), its offers are
withdrawn, and a restart does not bring it back.

Revision ID: 0012_bpp_admin
Revises: 0011_reconciliation
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision: str = "0012_bpp_admin"
down_revision: str | None = "0011_reconciliation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
CREATE TABLE bpp.joined_providers (
    bpp_id VARCHAR(255) NOT NULL,
    provider_id VARCHAR(255) NOT NULL,
    config JSON NOT NULL,
    joined_at TIMESTAMP WITH TIME ZONE NOT NULL,
    left_at TIMESTAMP WITH TIME ZONE,
    PRIMARY KEY (bpp_id, provider_id)
)
""")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS bpp.joined_providers")
