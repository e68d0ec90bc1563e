"""0002_ledger upgrades, downgrades cleanly and upgrades again."""

from __future__ import annotations

import psycopg

from kernel import db


def ledger_objects(url: str) -> tuple[int, int]:
    with psycopg.connect(db.libpq_url(url)) as conn:
        tables = conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'ledger'").fetchone()
        funcs = conn.execute(
            "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'ledger'"
        ).fetchone()
    return tables[0], funcs[0]


def test_upgrade_downgrade_upgrade(pg_server_url: str) -> None:
    url = db.create_database(pg_server_url, "fm_lmig")
    try:
        db.upgrade(url)
        # 0002: 16 tables; 0006: order amendments; 0007: key hand-overs; 0009: agreements;
        # 0010: meter-data keys and their revocations; 0016: CFT listings, their purchases and cancellations
        assert ledger_objects(url) == (24, 1)
        db.downgrade(url, "0009_ledger_agreements")
        assert ledger_objects(url) == (19, 1)
        db.upgrade(url)
        db.downgrade(url, "0001_schemas")
        assert ledger_objects(url) == (0, 0)
        db.downgrade(url, "base")
        db.upgrade(url)
        assert ledger_objects(url)[0] >= 16
        db.downgrade(url, "base")
        db.upgrade(url, "head")
    finally:
        db.dispose_engines()
        db.drop_database(pg_server_url, url)
