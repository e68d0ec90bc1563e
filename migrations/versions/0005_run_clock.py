"""Settlement runs record the clock they ran under (`kernel.clock.describe()`).

A JSON document, `{"kind": "wall"}` or `{"kind": "simulated", "start": …, "anchor": …, "speed": …}`.
Runs made before this revision have none (NULL). The table stays append-only (its trigger rejects
UPDATE and DELETE; adding a column is DDL, not an update of any row).

Revision ID: 0005_run_clock
Revises: 0004_agents
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

revision: str = "0005_run_clock"
down_revision: str | None = "0004_agents"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE ledger.settlement_runs ADD COLUMN clock jsonb")


def downgrade() -> None:
    op.execute("ALTER TABLE ledger.settlement_runs DROP COLUMN clock")
