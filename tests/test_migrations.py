"""Alembic on an empty database: upgrade head → downgrade base → upgrade head, checking what exists."""

from __future__ import annotations

import psycopg

from kernel import db

EXPECTED = {
    ("registry", "subscribers"),
    ("registry", "subscriber_keys"),
    ("registry", "coverage"),
    ("gateway", "inbox"),
    ("gateway", "outbox"),
    ("bap", "inbox"),
    ("bap", "outbox"),
    ("bap", "transactions"),
    ("bap", "catalog_offers"),
    ("bap", "orders"),
    ("bpp", "inbox"),
    ("bpp", "outbox"),
    ("bpp", "offers"),
    ("bpp", "orders"),
    ("bpp", "order_events"),
    ("bpp", "providers"),
    ("bpp", "decisions"),
}


def tables(url: str) -> set[tuple[str, str]]:
    with psycopg.connect(db.libpq_url(url)) as conn:
        return set(
            conn.execute(
                "select table_schema, table_name from information_schema.tables "
                "where table_schema in ('registry','gateway','bap','bpp','ledger')"
            ).fetchall()
        )


def test_upgrade_downgrade_upgrade(empty_db_url: str) -> None:
    assert tables(empty_db_url) == set()
    db.upgrade(empty_db_url)
    first = tables(empty_db_url)
    assert first >= EXPECTED
    assert any(schema == "ledger" for schema, _ in first)
    db.downgrade(empty_db_url)
    assert tables(empty_db_url) == set()
    with psycopg.connect(db.libpq_url(empty_db_url)) as conn:
        schemas = {r[0] for r in conn.execute("select schema_name from information_schema.schemata")}
    assert not {"registry", "gateway", "bap", "bpp", "ledger"} & schemas
    db.upgrade(empty_db_url)
    assert tables(empty_db_url) == first
