"""The BAP client API's keys (roles operator, aggregator, viewer; hashed, revocable) and its append-only audit log.

Revision ID: 0008_bap_access
Revises: 0007_ledger_key_handovers
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision: str = "0008_bap_access"
down_revision: str | None = "0007_ledger_key_handovers"
branch_labels = None
depends_on = None


UPGRADE = [
    "ALTER TABLE bap.transactions ADD COLUMN aggregator_id VARCHAR(64)",
    "CREATE INDEX ix_transactions_aggregator_id ON bap.transactions (aggregator_id)",
    """
CREATE TABLE bap.api_keys (
    key_id VARCHAR(16) NOT NULL,
    secret_sha256 BYTEA NOT NULL,
    role VARCHAR(16) NOT NULL,
    aggregator_id VARCHAR(64),
    label VARCHAR(200) DEFAULT '' NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    revoked_at TIMESTAMP WITH TIME ZONE,
    PRIMARY KEY (key_id),
    CONSTRAINT api_keys_role CHECK (role IN ('operator', 'aggregator', 'viewer')),
    CONSTRAINT api_keys_aggregator_bound CHECK ((role = 'aggregator') = (aggregator_id IS NOT NULL))
)
""",
    """
CREATE TABLE bap.audit_log (
    id BIGSERIAL NOT NULL,
    key_id VARCHAR(16),
    role VARCHAR(16),
    aggregator_id VARCHAR(64),
    method VARCHAR(8) NOT NULL,
    path VARCHAR(1024) NOT NULL,
    action VARCHAR(64) NOT NULL,
    transaction_id VARCHAR(64),
    order_id VARCHAR(64),
    market_at TIMESTAMP WITH TIME ZONE NOT NULL,
    wall_at TIMESTAMP WITH TIME ZONE NOT NULL,
    client_address VARCHAR(64),
    status_code INTEGER NOT NULL,
    outcome VARCHAR(16) NOT NULL,
    error_code VARCHAR(64),
    error_message VARCHAR(1000),
    PRIMARY KEY (id)
)
""",
    "CREATE INDEX ix_audit_log_key_id_id ON bap.audit_log (key_id, id)",
    "CREATE INDEX ix_audit_log_outcome_id ON bap.audit_log (outcome, id)",
    "CREATE INDEX ix_audit_log_wall_at ON bap.audit_log (wall_at)",
    # Append-only: the audit log is evidence, so no row is ever changed or removed (not even by TRUNCATE).
    """
CREATE FUNCTION bap.reject_audit_mutation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'bap.%: % is not allowed (append-only table)', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$
""",
    "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON bap.audit_log "
    "FOR EACH ROW EXECUTE FUNCTION bap.reject_audit_mutation()",
    "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON bap.audit_log "
    "FOR EACH STATEMENT EXECUTE FUNCTION bap.reject_audit_mutation()",
]

DOWNGRADE = [
    "DROP TABLE IF EXISTS bap.audit_log",
    "DROP FUNCTION IF EXISTS bap.reject_audit_mutation()",
    "DROP TABLE IF EXISTS bap.api_keys",
    "DROP INDEX IF EXISTS bap.ix_transactions_aggregator_id",
    "ALTER TABLE bap.transactions DROP COLUMN IF EXISTS aggregator_id",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
