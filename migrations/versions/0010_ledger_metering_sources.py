"""Where each meter reading comes from (meter-data role, signed, or self-reported) and the meter-data keys.

The ledger API key role `meter_operator` is allowed; `ledger.metering` gains its reading kind (`meter_operator`:
posted with a meter-operator API key and signed with a registered Ed25519 key; `self_reported`: posted by the
meter's provider, or imported), the signer's key id and the signature; versions now count per (meter, period,
kind), so several sources coexist for one period and a correction is a new version within its own source. Energy is
signed (negative = net export), bounded by schemas/limits.py MAX_ENERGY_WH_PER_PERIOD. `ledger.meter_data_keys`
holds the meter operators' Ed25519 public keys; `ledger.meter_data_key_revocations` retires one (both append-only:
rotation is a new key and a revocation of the old one).

Revision ID: 0010_ledger_metering_sources
Revises: 0009_ledger_agreements
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision: str = "0010_ledger_metering_sources"
down_revision: str | None = "0009_ledger_agreements"
branch_labels = None
depends_on = None

MAX_ENERGY_WH_PER_PERIOD = 500_000_000  # schemas/limits.py at the time of writing (a migration does not import it)

APPEND_ONLY = ("meter_data_keys", "meter_data_key_revocations")


def upgrade() -> None:
    op.execute(
        f"""
CREATE TABLE ledger.meter_data_keys (
    key_id          text PRIMARY KEY,
    participant_id  text NOT NULL,
    public_key      text NOT NULL UNIQUE,
    created_at      timestamptz NOT NULL
);
CREATE INDEX meter_data_keys_participant ON ledger.meter_data_keys (participant_id);

CREATE TABLE ledger.meter_data_key_revocations (
    key_id      text PRIMARY KEY REFERENCES ledger.meter_data_keys (key_id),
    revoked_at  timestamptz NOT NULL
);

ALTER TABLE ledger.api_keys
    DROP CONSTRAINT api_keys_role_check,
    ADD CONSTRAINT api_keys_role_check
        CHECK (role IN ('admin', 'finance', 'provider', 'bap', 'supplier', 'meter_operator'));

ALTER TABLE ledger.metering
    ADD COLUMN reading_kind text NOT NULL DEFAULT 'self_reported'
        CHECK (reading_kind IN ('meter_operator', 'self_reported')),
    ADD COLUMN signer_key_id text REFERENCES ledger.meter_data_keys (key_id),
    ADD COLUMN signature bytea,
    ADD CONSTRAINT metering_signed_by_meter_operator CHECK (
        (reading_kind = 'meter_operator') = (signer_key_id IS NOT NULL AND signature IS NOT NULL)
    ),
    DROP CONSTRAINT metering_energy_wh_check,
    ADD CONSTRAINT metering_energy_wh_bounded
        CHECK (energy_wh BETWEEN -{MAX_ENERGY_WH_PER_PERIOD} AND {MAX_ENERGY_WH_PER_PERIOD}),
    DROP CONSTRAINT metering_pkey,
    ADD PRIMARY KEY (meter_id, period_start, reading_kind, version);
"""
    )
    for table in APPEND_ONLY:
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON ledger.{table} "
            "FOR EACH ROW EXECUTE FUNCTION ledger.reject_mutation()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON ledger.{table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION ledger.reject_mutation()"
        )


def downgrade() -> None:
    # Meter-operator readings and exports have no place in the old table: refuse rather than lose them.
    op.execute(
        """
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM ledger.metering WHERE reading_kind <> 'self_reported' OR energy_wh < 0) THEN
        RAISE EXCEPTION 'ledger.metering holds meter-operator readings or exports; cannot downgrade';
    END IF;
    IF EXISTS (SELECT 1 FROM ledger.api_keys WHERE role = 'meter_operator') THEN
        RAISE EXCEPTION 'ledger.api_keys holds meter_operator keys; cannot downgrade';
    END IF;
END
$$;
ALTER TABLE ledger.api_keys
    DROP CONSTRAINT api_keys_role_check,
    ADD CONSTRAINT api_keys_role_check CHECK (role IN ('admin', 'finance', 'provider', 'bap', 'supplier'));
ALTER TABLE ledger.metering
    DROP CONSTRAINT metering_pkey,
    ADD PRIMARY KEY (meter_id, period_start, version),
    DROP CONSTRAINT metering_energy_wh_bounded,
    ADD CONSTRAINT metering_energy_wh_check CHECK (energy_wh >= 0),
    DROP CONSTRAINT metering_signed_by_meter_operator,
    DROP COLUMN signature,
    DROP COLUMN signer_key_id,
    DROP COLUMN reading_kind;
DROP TABLE ledger.meter_data_key_revocations;
DROP TABLE ledger.meter_data_keys;
"""
    )
