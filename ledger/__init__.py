"""The settlement ledger: hash-chained double entry on PostgreSQL, P415-style settlement, Compute Flex
Tokens and statements for finance (issue 4; spec: ../shared/reference/ledger-design.md and
../shared/reference/market/p415-settlement.md).

Pure core (no FastAPI, no SQLAlchemy, no database; tested on plain data):
    canonical.py        RFC 8785 bytes of a journal entry (what the chain hashes)
    merkle.py           RFC 6962 Merkle trees, audit paths, offline inclusion checks
    chain.py            link hashing and full re-verification, naming the first bad link or entry
    transfers.py        double-entry rules: flags, pending → post/void/expire, linked batches, idempotency
    accounts.py         the chart of accounts and who may read which account
    baseline.py         10-of-10 baseline with in-day adjustment
    settlement.py       P415 rules 2-12 as functions over integers; settlement runs II → … → DF
    allocation.py       reading kinds (meter_operator > self_reported; estimated / missing) and one meter's
                        delivery shared among the orders on it (never paid twice)
    cft.py              Compute Flex Token rules and the minted = outstanding + redeemed + expired invariant
    proofs.py           signed checkpoints, inclusion proofs, offline statement verification
    statement_csv.py    a statement document as CSV and back (so the CSV verifies offline too)
    agreements.py       signed Beckn messages checked against a key directory; the terms of an on_confirm /
                        on_update, a token sale's consent, the agreement hash and the memo tag carrying it
    errors.py           LedgerError: a stable code, a message and the HTTP status of every refusal
  (integer money and GB settlement periods are the shared grid.money and grid.periods)
Append path (PostgreSQL):
    store.py            the append transaction: sorted row locks, rules, balances, advisory chain lock
                        taken last, one link per batch; append modes; balance cache; one-round-trip plans
    entry_encoding.py   canonical bytes, leaf hashes and binary array columns of new entries
    pgarray.py          binary-format array parameters built from pre-encoded elements
    group_commit.py     GroupCommitter: the thread that batches concurrent requests into one transaction
Use cases (PostgreSQL; each takes a connection whose transaction the caller owns — see db.py):
    db.py               connections, in_transaction (retries unique-key races), ensure_schema, us/from_us/iso
    accounts_db.py      open chart accounts, account with balances, balance as of an instant
    transfers_db.py     reserved transfer ids, a transfer read back, the JSON answer for an append
    policies.py         settlement policy versions (append-only; built-ins stored on first use)
    orders.py           register (with escrow reserve), cancel and read orders
    metering.py         meter ownership and half-hourly signed-kWh readings, self-reported or a meter
                        operator's (several sources per period; corrections are new versions within one)
    meter_data.py       meter operators' Ed25519 keys (register, revoke) and signed-readings verification
    prices.py           imbalance / market index prices, and the Elexon price CSV
    settlement_runs.py  inputs as of an instant, the next run when due, stored runs (with their clock)
    tokens.py           CFT series, mint, trade (a sale with the buyer's signed consent), redeem, expiry,
                        the per-provider invariant
    agreements_db.py    the signed messages beside orders and sales (append-only; replays refused)
    keydir.py           the key directory: the registry (beckn/registry_client.py)
    checkpoints.py      the signing key, signed checkpoints, the chain head, inclusion proofs
    statements.py       account statements with proofs (with the clock they were made under)
    verify.py           `ledger verify`: re-hash everything on one snapshot, in parallel for big ledgers
    api_keys.py         roles, principals, API keys (only hashes stored)
Interfaces:
    api/                FastAPI `router` (/api/v1/...): api/__init__.py assembles one module per area
                        (orders, metering, prices, policies, settlement_runs, transfers, accounts, tokens,
                        statements, checkpoints, verify, api_keys, health); api/deps.py what they share
    main.py             `create_app()` — the ledger's own HTTP service
    tasks.py            Celery tasks ledger.checkpoint, ledger.expire_cfts, ledger.settle_due
    cli.py              typer apps: ledger_app, metering_app, statement
    demo.py             settle_demo_orders(): the end of `flexmarket demo`
Market time is kernel.clock.now() throughout; entries are stamped with the wall time they were written.
Schema: migrations/versions/0002_ledger.py (schema `ledger`), 0005_run_clock.py (settlement_runs.clock),
0006_order_amendments.py (order_amendments), 0009_ledger_agreements.py (agreements).
"""
