"""The BAP client API's keys (roles operator, aggregator, viewer; hashed, revocable) and its append-only audit log.

Revision ID: 0008_bap_access
Revises: 0007_ledger_key_handovers
Create Date: 2026-12-02
"""

from __future__ import annotations

revision: str = "0008_bap_access"
down_revision: str | None = "0007_ledger_key_handovers"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
