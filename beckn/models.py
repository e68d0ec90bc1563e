"""Inbox and outbox tables, declared once and present in every Beckn participant's schema
(bap, bpp, gateway); a participant's engine search_path picks its own copy.

Outbox (../shared/DESIGN.md "Delivery that loses nothing"): a row is written in the same transaction
as the state change it announces; a Celery task signs and sends it, marks it DELIVERED on ACK,
retries with backoff, and marks it FAILED (with the reason) after its TTL — never silently dropped.
Inbox: every accepted message, keyed by (receiver, sender, message_id, action): a duplicate is ACKed
and not processed again. The receiver is part of the key because one BPP host serves many platforms,
which all receive the same search.

These Table objects are the one definition of the columns: the hot path's plain-SQL statements are
built from them at import (`unnest_insert`, `unnest_update` below), and
tests/test_models_match_migrations.py fails when they and the migrated database differ.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.types import TypeEngine

metadata = MetaData()

inbox = Table(
    "inbox",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("receiver_id", String(255), nullable=False),  # our subscriber id (BPP platforms are multi-tenant)
    Column("sender_id", String(255), nullable=False),  # from the verified Authorization keyId
    Column("sender_key_id", String(255), nullable=False),
    Column("gateway_id", String(255)),  # set when X-Gateway-Authorization was present and verified
    Column("gateway_key_id", String(255)),
    Column("signature_verified", Boolean, nullable=False),
    Column("action", String(32), nullable=False),
    Column("message_id", String(255), nullable=False),
    Column("transaction_id", String(255), nullable=False),
    Column("body", LargeBinary, nullable=False),  # the exact bytes received (what was verified)
    Column("authorization", Text),
    Column("gateway_authorization", Text),
    # RECEIVED → PROCESSED | FAILED (processing error recorded in `error`)
    Column("status", String(16), nullable=False),
    Column("error", Text),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("processed_at", DateTime(timezone=True)),
    UniqueConstraint("receiver_id", "sender_id", "message_id", "action", name="inbox_dedup"),
    Index("inbox_pending", "status", "received_at"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("sender_id", String(255), nullable=False),  # whose key signs
    Column("receiver_url", String(2048), nullable=False),  # full URL incl. the action
    Column("action", String(32), nullable=False),
    Column("message_id", String(255), nullable=False),
    Column("transaction_id", String(255), nullable=False),
    Column("body", LargeBinary, nullable=False),  # the exact bytes signed and sent
    # Relays (gateway): the original sender's Authorization travels unchanged and the relay signs
    # the same bytes in X-Gateway-Authorization.
    Column("forwarded_authorization", Text),
    Column("status", String(16), nullable=False, server_default="PENDING"),  # PENDING|DELIVERED|FAILED
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("lease_until", DateTime(timezone=True)),  # a worker holds the row while sending
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("last_status_code", Integer),
    Column("last_error", Text),
    Column("last_authorization", Text),
    Column("response_body", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("delivered_at", DateTime(timezone=True)),
    Index("outbox_due", "status", "next_attempt_at"),
    Index("outbox_tx", "transaction_id"),
)


# -- plain SQL derived from the tables (built once, at import) -------------------------------------
# The hot path writes many rows per statement by sending one array per column and unnesting them. The
# column names and array types below come from the Table, so a statement cannot drift from it.

_QUOTE = postgresql.dialect().identifier_preparer.quote  # "authorization" is a reserved word

# Element types of the arrays sent: unbounded (text, not varchar(n)), so each value is checked against
# the column's own type on assignment, exactly as in a single-row INSERT (an explicit cast to
# varchar(n) would truncate silently instead).
_ARRAY_TYPES: tuple[tuple[type[TypeEngine], str], ...] = (
    (String, "text"),  # and Text
    (LargeBinary, "bytea"),
    (BigInteger, "int8"),  # before Integer: a subclass
    (Integer, "int4"),
    (Boolean, "bool"),
    (DateTime, "timestamptz"),
)


def _array_type(table: Table, name: str) -> str:
    column = table.c[name]  # KeyError: not a column of the table
    for sa_type, pg_type in _ARRAY_TYPES:
        if isinstance(column.type, sa_type):
            if isinstance(column.type, DateTime) and not column.type.timezone:
                break
            return f"{pg_type}[]"
    raise TypeError(f"{table.name}.{name}: no array type for {column.type!r}")


def _unnest(table: Table, names: Collection[str]) -> str:
    return "unnest(" + ", ".join(f"%s::{_array_type(table, n)}" for n in names) + ")"


def unnest_insert(
    table: Table,
    columns: Collection[str],
    *,
    constants: Mapping[str, str] | None = None,
    ordered: bool = False,
    tail: str = "",
) -> str:
    """`INSERT INTO table (columns…, constant columns…) SELECT … FROM unnest(one array per column)`.

    `constants` maps further columns to SQL expressions (their `%s` parameters come first, in that
    order, then one array per column). `ordered` inserts the rows in array order (so that RETURNING
    follows it). Every NOT NULL column without a server default must be given: a column added to the
    model fails here, at import, rather than in production."""
    constants = dict(constants or {})
    given = [*columns, *constants]
    unknown = [n for n in given if n not in table.c]
    if unknown:
        raise KeyError(f"{table.name} has no column(s) {', '.join(unknown)}")
    missing = [
        c.name
        for c in table.columns
        if not c.nullable and c.server_default is None and c.identity is None and c.name not in given
    ]
    if missing:
        raise ValueError(f"INSERT INTO {table.name} gives no value for NOT NULL column(s) {', '.join(missing)}")
    aliases = ", ".join(_QUOTE(n) for n in columns)
    source = f"{_unnest(table, columns)} " + (
        f"WITH ORDINALITY AS v({aliases}, _ord)" if ordered else f"AS v({aliases})"
    )
    select = ", ".join([*(f"v.{_QUOTE(n)}" for n in columns), *constants.values()])
    sql = f"INSERT INTO {table.name} ({', '.join(_QUOTE(n) for n in given)}) SELECT {select} FROM {source}"
    if ordered:
        sql += " ORDER BY v._ord"
    return f"{sql} {tail}".rstrip()


def unnest_update(table: Table, columns: Collection[str], *, key: str = "id", also: str = "") -> str:
    """`UPDATE table SET column = v.column… FROM unnest(key array, one array per column) WHERE key = v.key`:
    many rows, each with its own values, in one statement. `also` adds fixed assignments to the SET list.
    Parameters: the key array, then one array per column, in that order."""
    names = [key, *columns]
    assignments = [f"{_QUOTE(n)} = v.{_QUOTE(n)}" for n in columns] + ([also] if also else [])
    return (
        f"UPDATE {table.name} AS t SET {', '.join(assignments)} FROM {_unnest(table, names)} "
        f"AS v({', '.join(_QUOTE(n) for n in names)}) WHERE t.{_QUOTE(key)} = v.{_QUOTE(key)}"
    )
