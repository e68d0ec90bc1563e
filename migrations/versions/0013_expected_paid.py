"""Offers that stay true (issue 11): re-planned offers remember why they were withdrawn, and providers keep
the signal updates their agents re-plan for.

`bpp.offers.withdrawn_at` / `withdrawn_reason`: set when a re-plan (bpp/replan.py) or a leaving provider
withdraws an offer, so a buyer that selects it later is told which offer and why; cleared when the offer is
published again. `bpp.providers.signal_updates`: the signal updates (bpp/signal_providers.py `SignalUpdate`)
every later plan of the provider applies, so any process rebuilds the agent the offers came from.

Revision ID: 0013_expected_paid
Revises: 0012_bpp_admin
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision: str = "0013_expected_paid"
down_revision: str | None = "0012_bpp_admin"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
ALTER TABLE bpp.offers ADD COLUMN withdrawn_at TIMESTAMP WITH TIME ZONE;
ALTER TABLE bpp.offers ADD COLUMN withdrawn_reason TEXT;
ALTER TABLE bpp.providers ADD COLUMN signal_updates JSON;
""")


def downgrade() -> None:
    op.execute("""
ALTER TABLE bpp.providers DROP COLUMN IF EXISTS signal_updates;
ALTER TABLE bpp.offers DROP COLUMN IF EXISTS withdrawn_reason;
ALTER TABLE bpp.offers DROP COLUMN IF EXISTS withdrawn_at;
""")
