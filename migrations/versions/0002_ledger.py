"""Ledger: hash-chained double entry, settlement inputs and runs, CFT series, API keys.

Every object lives in schema `ledger` (../shared/DESIGN.md "Processes"). The journal (`entries`), the
chain (`links`), signed `checkpoints` and every settlement input (orders, metering, prices, policies,
runs) are append-only: a trigger rejects UPDATE, DELETE and TRUNCATE on them
(../shared/reference/ledger-design.md "Tamper evidence" — a guard, not the proof; `ledger verify` is
the proof). Balances are the only mutable money table; their rows are locked FOR UPDATE by writers and
CHECK constraints repeat the account-flag rules as a last line of defence.

Revision ID: 0002_ledger
Revises: 0001_schemas
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision: str = "0002_ledger"
down_revision: str | None = "0001_schemas"
branch_labels = None
depends_on = None

# Tables whose rows may never change once written.
APPEND_ONLY = (
    "entries",
    "links",
    "checkpoints",
    "orders",
    "order_cancellations",
    "metering",
    "prices",
    "policies",
    "settlement_runs",
    "cft_series",
    "cft_redemptions",
)

UPGRADE_SQL = r"""
CREATE TABLE ledger.ledgers (
    code        text PRIMARY KEY CHECK (code ~ '^(GBP|CFT:[A-Za-z0-9][A-Za-z0-9._@-]{0,127})$'),
    kind        text NOT NULL CHECK (kind IN ('money', 'token')),
    unit        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO ledger.ledgers (code, kind, unit) VALUES ('GBP', 'money', 'pence');

CREATE TABLE ledger.accounts (
    name            text PRIMARY KEY,
    ledger          text NOT NULL REFERENCES ledger.ledgers (code),
    -- 1 = debits must not exceed credits, 2 = credits must not exceed debits (ledger/transfers.py)
    flags           integer NOT NULL DEFAULT 0 CHECK (flags BETWEEN 0 AND 3 AND flags <> 3),
    -- cap on (debits - credits), e.g. the tokens a CFT issuance account may mint
    max_net_debit   bigint CHECK (max_net_debit >= 0),
    owner_kind      text,
    owner_id        text,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX accounts_owner ON ledger.accounts (owner_id);

CREATE TABLE ledger.balances (
    account          text PRIMARY KEY REFERENCES ledger.accounts (name),
    flags            integer NOT NULL,
    max_net_debit    bigint,
    debits_posted    bigint NOT NULL DEFAULT 0 CHECK (debits_posted >= 0),
    credits_posted   bigint NOT NULL DEFAULT 0 CHECK (credits_posted >= 0),
    debits_pending   bigint NOT NULL DEFAULT 0 CHECK (debits_pending >= 0),
    credits_pending  bigint NOT NULL DEFAULT 0 CHECK (credits_pending >= 0),
    CHECK (flags & 1 = 0 OR debits_posted + debits_pending <= credits_posted),
    CHECK (flags & 2 = 0 OR credits_posted + credits_pending <= debits_posted),
    CHECK (max_net_debit IS NULL OR debits_posted + debits_pending - credits_posted <= max_net_debit)
) WITH (fillfactor = 50);  -- room on each page for HOT updates of the hot balance rows

-- The journal. One row per transfer event (single, pending, post, void, expire): it debits one
-- account and credits another of the same ledger. `canonical` holds the exact RFC 8785 bytes that
-- were hashed into the batch's Merkle tree; the columns are what queries use, and `ledger verify`
-- re-encodes them and compares.
CREATE TABLE ledger.entries (
    height          bigint NOT NULL,
    idx             integer NOT NULL CHECK (idx >= 0),
    id              text NOT NULL,
    ledger          text NOT NULL,
    debit_account   text NOT NULL,
    credit_account  text NOT NULL,
    amount          bigint NOT NULL CHECK (amount >= 0),
    kind            text NOT NULL CHECK (kind IN ('single', 'pending', 'post', 'void', 'expire')),
    pending_id      text,
    timeout_us      bigint,
    time_us         bigint NOT NULL,
    memo            text NOT NULL DEFAULT '',
    canonical       bytea NOT NULL,
    PRIMARY KEY (height, idx)
);
CREATE UNIQUE INDEX entries_id ON ledger.entries (id);
-- A pending transfer resolves at most once, whatever the application does.
CREATE UNIQUE INDEX entries_one_resolution ON ledger.entries (pending_id)
    WHERE kind IN ('post', 'void', 'expire');
CREATE INDEX entries_debit_time ON ledger.entries (debit_account, time_us);
CREATE INDEX entries_credit_time ON ledger.entries (credit_account, time_us);
-- Pending transfers with a timeout, for the expiry sweep.
CREATE INDEX entries_pending_timeout ON ledger.entries (timeout_us) WHERE kind = 'pending';

-- One link per committed batch: link_hash = SHA-256(hashed_bytes),
-- hashed_bytes = prev_hash (32) || height (8, big-endian) || merkle_root (32).
CREATE TABLE ledger.links (
    height        bigint PRIMARY KEY CHECK (height >= 1),
    prev_hash     bytea NOT NULL,
    merkle_root   bytea NOT NULL,
    entry_count   integer NOT NULL CHECK (entry_count >= 1),
    hashed_bytes  bytea NOT NULL,
    link_hash     bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- Signed chain heads (like a Certificate Transparency signed tree head).
CREATE TABLE ledger.checkpoints (
    height        bigint PRIMARY KEY,
    head_hash     bytea NOT NULL,
    links_root    bytea NOT NULL,
    entry_count   bigint NOT NULL,
    time_us       bigint NOT NULL,
    key_id        text NOT NULL,
    public_key    text NOT NULL,
    message       bytea NOT NULL,
    signature     bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ledger.api_keys (
    key_id          text PRIMARY KEY,
    secret_sha256   bytea NOT NULL,
    role            text NOT NULL CHECK (role IN ('admin', 'finance', 'provider', 'bap', 'supplier')),
    participant_id  text,
    label           text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz,
    CHECK ((role IN ('admin', 'finance')) = (participant_id IS NULL))
);

-- Settlement inputs -------------------------------------------------------------------------------
CREATE TABLE ledger.policies (
    version     text PRIMARY KEY,
    params      jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ledger.meters (
    meter_id     text PRIMARY KEY,
    provider_id  text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ledger.orders (
    order_id                            text PRIMARY KEY,
    transaction_id                      text NOT NULL,
    provider_id                         text NOT NULL,
    bap_id                              text NOT NULL,
    meter_id                            text NOT NULL REFERENCES ledger.meters (meter_id),
    supplier_id                         text NOT NULL,
    window_start                        timestamptz NOT NULL,
    window_end                          timestamptz NOT NULL,
    contracted_w                        bigint NOT NULL CHECK (contracted_w > 0),
    price_millipence_per_mwh                 bigint NOT NULL CHECK (price_millipence_per_mwh >= 0),
    availability_price_millipence_per_mw_h   bigint CHECK (availability_price_millipence_per_mw_h >= 0),
    settlement_method                   text NOT NULL CHECK (settlement_method IN ('P415', 'CFT')),
    resource_type                       text NOT NULL CHECK (resource_type IN ('compute', 'storage')),
    confirmed_at                        timestamptz NOT NULL,
    policy_version                      text NOT NULL REFERENCES ledger.policies (version),
    registered_at                       timestamptz NOT NULL,
    CHECK (window_end > window_start)
);
CREATE INDEX orders_meter_window ON ledger.orders (meter_id, window_start);
CREATE INDEX orders_window_end ON ledger.orders (window_end);

CREATE TABLE ledger.order_cancellations (
    order_id      text PRIMARY KEY REFERENCES ledger.orders (order_id),
    cancelled_at  timestamptz NOT NULL,
    reason        text NOT NULL DEFAULT ''
);

-- Half-hourly metered import energy. A correction is a new version, never an edit.
CREATE TABLE ledger.metering (
    meter_id      text NOT NULL REFERENCES ledger.meters (meter_id),
    period_start  timestamptz NOT NULL,
    version       integer NOT NULL CHECK (version >= 1),
    energy_wh     bigint NOT NULL CHECK (energy_wh >= 0),
    received_at   timestamptz NOT NULL,
    source        text NOT NULL DEFAULT '',
    PRIMARY KEY (meter_id, period_start, version)
);

CREATE TABLE ledger.prices (
    period_start                    timestamptz PRIMARY KEY,
    imbalance_millipence_per_mwh         bigint,
    market_index_millipence_per_mwh      bigint,
    source                          text NOT NULL,
    received_at                     timestamptz NOT NULL
);

CREATE TABLE ledger.settlement_runs (
    order_id        text NOT NULL REFERENCES ledger.orders (order_id),
    run             text NOT NULL CHECK (run IN ('II', 'SF', 'R1', 'R2', 'R3', 'RF', 'DF')),
    seq             smallint NOT NULL CHECK (seq BETWEEN 1 AND 7),
    as_of           timestamptz NOT NULL,
    policy_version  text NOT NULL,
    inputs_sha256   bytea NOT NULL,
    lines           jsonb NOT NULL,
    result          jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, run),
    UNIQUE (order_id, seq)
);

-- Compute Flex Tokens ----------------------------------------------------------------------------
CREATE TABLE ledger.cft_series (
    series_id               text PRIMARY KEY,
    provider_id             text NOT NULL,
    valid_from              timestamptz NOT NULL,
    valid_to                timestamptz NOT NULL,
    declared_capacity_w     bigint NOT NULL CHECK (declared_capacity_w > 0),
    max_tokens              bigint NOT NULL CHECK (max_tokens >= 0),
    created_at              timestamptz NOT NULL DEFAULT now(),
    CHECK (valid_to > valid_from)
);
CREATE INDEX cft_series_valid_to ON ledger.cft_series (valid_to);

CREATE TABLE ledger.cft_redemptions (
    redemption_id   text PRIMARY KEY,
    series_id       text NOT NULL REFERENCES ledger.cft_series (series_id),
    holder_id       text NOT NULL,
    tokens          bigint NOT NULL CHECK (tokens > 0),
    order_id        text NOT NULL REFERENCES ledger.orders (order_id),
    redeemed_at     timestamptz NOT NULL
);

CREATE FUNCTION ledger.reject_mutation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger.%: % is not allowed (append-only table)', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
"""


def upgrade() -> None:
    op.execute(UPGRADE_SQL)
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
    # Reverse order of creation; CASCADE is not used so a forgotten object fails loudly.
    for table in (
        "cft_redemptions",
        "cft_series",
        "settlement_runs",
        "prices",
        "metering",
        "order_cancellations",
        "orders",
        "meters",
        "policies",
        "api_keys",
        "checkpoints",
        "links",
        "entries",
        "balances",
        "accounts",
        "ledgers",
    ):
        op.execute(f"DROP TABLE IF EXISTS ledger.{table}")
    op.execute("DROP FUNCTION IF EXISTS ledger.reject_mutation()")
