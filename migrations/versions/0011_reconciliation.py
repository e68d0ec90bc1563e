"""Order outcomes flowing back to BPP and BAP, and reconciliation alerts.

Revision ID: 0011_reconciliation
Revises: 0010_ledger_metering_sources
Create Date: 2026-12-02
"""

from __future__ import annotations

revision: str = "0011_reconciliation"
down_revision: str | None = "0010_ledger_metering_sources"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
