"""One schema per participant.

Revision ID: 0001_schemas
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision: str = "0001_schemas"
down_revision: str | None = None
branch_labels = None
depends_on = None

SCHEMAS = ("registry", "gateway", "bap", "bpp", "ledger")


def upgrade() -> None:
    for schema in SCHEMAS:
        op.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")


def downgrade() -> None:
    for schema in reversed(SCHEMAS):
        op.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
