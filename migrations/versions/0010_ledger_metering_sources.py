"""Where each meter reading comes from (meter-data role, signed, or self-reported) and the meter-data keys.

Revision ID: 0010_ledger_metering_sources
Revises: 0009_ledger_agreements
Create Date: 2026-12-02
"""

from __future__ import annotations

revision: str = "0010_ledger_metering_sources"
down_revision: str | None = "0009_ledger_agreements"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
