"""Signed agreements beside ledger orders (the provider's on_confirm and the buyer's confirm) and signed consent to token sales.

Revision ID: 0009_ledger_agreements
Revises: 0008_bap_access
Create Date: 2026-12-02
"""

from __future__ import annotations

revision: str = "0009_ledger_agreements"
down_revision: str | None = "0008_bap_access"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
