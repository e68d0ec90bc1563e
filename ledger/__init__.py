"""The settlement ledger: hash-chained double entry on PostgreSQL, P415-style settlement, Compute Flex
Tokens and statements for finance (issue 4; spec: ../shared/reference/ledger-design.md and
../shared/reference/market/p415-settlement.md).

Pure core (no FastAPI, no SQLAlchemy, no database; tested on plain data):
    money.py       integer units, exact rationals, the one rounding rule (half to even, once per line)
    canonical.py   RFC 8785 bytes of a journal entry (what the chain hashes)
    merkle.py      RFC 6962 Merkle trees, audit paths, offline inclusion checks
    chain.py       link hashing and full re-verification, naming the first bad link or entry
    transfers.py   double-entry rules: flags, pending → post/void/expire, linked batches, idempotency
    accounts.py    the chart of accounts and who may read which account
    periods.py     GB settlement periods in Europe/London (46/50 on clock-change days), day types
    baseline.py    10-of-10 baseline with in-day adjustment
    settlement.py  P415 rules 2-12 as functions over integers; settlement runs II → … → DF
    cft.py         Compute Flex Token rules and the minted = outstanding + redeemed + expired invariant
    proofs.py      signed checkpoints, inclusion proofs, offline statement verification
Adapters:
    store.py       PostgreSQL append path: sorted row locks, advisory chain lock taken last, group commit
    pgarray.py     binary-format array parameters built from pre-encoded elements (the append's columns)
    service.py     use cases (orders, metering, prices, settlement, CFT, statements, checkpoints, verify, keys)
    router.py      FastAPI `router` (/api/v1/...), main.py `create_app()` — the ledger's HTTP service
    tasks.py       Celery tasks ledger.checkpoint, ledger.expire_cfts, ledger.settle_due
    cli.py         typer apps: ledger_app, metering_app, statement
    demo.py        settle_demo_orders(): the end of `flexmarket demo`
Schema: migrations/versions/0002_ledger.py (schema `ledger`).
"""
