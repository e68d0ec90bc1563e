"""Signed agreements beside ledger orders (the provider's on_confirm and the buyer's confirm) and signed
consent to token sales.

One append-only table, `ledger.agreements`: per registered order (kind `order`: the buyer's signed `confirm`
and the provider's signed `on_confirm`), per accepted amendment (kind `amendment`: the provider's signed
`on_update`, and the buyer's `update` when presented) and per primary token sale (kind `token_sale`: the
buyer's signed `confirm`). Each side keeps the exact bytes, the BECKN-006 Authorization header, the signer's
subscriber and key ids and the bytes' SHA-256; `agreement_sha256` (ledger/agreements.py) is what the
ledger entries of the order or sale carry in their memo, so a statement line leads back to these messages.

Revision ID: 0009_ledger_agreements
Revises: 0008_bap_access
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision: str = "0009_ledger_agreements"
down_revision: str | None = "0008_bap_access"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
CREATE TABLE ledger.agreements (
    agreement_sha256        bytea PRIMARY KEY CHECK (length(agreement_sha256) = 32),
    kind                    text NOT NULL CHECK (kind IN ('order', 'amendment', 'token_sale')),
    subject                 text NOT NULL,
    reference               text NOT NULL DEFAULT '',
    transaction_id          text NOT NULL,
    bap_id                  text NOT NULL,
    provider_id             text NOT NULL,
    buyer_body              bytea,
    buyer_authorization     text,
    buyer_signer            text,
    buyer_key_id            text,
    buyer_sha256            bytea CHECK (length(buyer_sha256) = 32),
    provider_body           bytea,
    provider_authorization  text,
    provider_signer         text,
    provider_key_id         text,
    provider_sha256         bytea CHECK (length(provider_sha256) = 32),
    recorded_at             timestamptz NOT NULL,
    UNIQUE (kind, subject, reference),
    CHECK ((buyer_body IS NULL) = (buyer_authorization IS NULL)
           AND (buyer_body IS NULL) = (buyer_signer IS NULL)
           AND (buyer_body IS NULL) = (buyer_key_id IS NULL)
           AND (buyer_body IS NULL) = (buyer_sha256 IS NULL)),
    CHECK ((provider_body IS NULL) = (provider_authorization IS NULL)
           AND (provider_body IS NULL) = (provider_signer IS NULL)
           AND (provider_body IS NULL) = (provider_key_id IS NULL)
           AND (provider_body IS NULL) = (provider_sha256 IS NULL)),
    CHECK (kind = 'amendment' OR buyer_body IS NOT NULL),
    CHECK ((kind = 'token_sale') = (provider_body IS NULL))
)
"""
    )
    # A signed message backs one agreement only: presenting it again for another order or sale is a replay.
    op.execute("CREATE UNIQUE INDEX agreements_buyer_message ON ledger.agreements (buyer_sha256)")
    op.execute("CREATE UNIQUE INDEX agreements_provider_message ON ledger.agreements (provider_sha256)")
    op.execute("CREATE INDEX agreements_provider ON ledger.agreements (provider_id, recorded_at)")
    op.execute(
        "CREATE TRIGGER agreements_append_only BEFORE UPDATE OR DELETE ON ledger.agreements "
        "FOR EACH ROW EXECUTE FUNCTION ledger.reject_mutation()"
    )
    op.execute(
        "CREATE TRIGGER agreements_no_truncate BEFORE TRUNCATE ON ledger.agreements "
        "FOR EACH STATEMENT EXECUTE FUNCTION ledger.reject_mutation()"
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS ledger.agreements")
