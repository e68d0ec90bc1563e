"""The SQLAlchemy models and the migrations describe the same tables.

An empty database is migrated to head; then, for every participant schema with models, alembic's
autogenerate comparison (the one `alembic revision --autogenerate` runs) must find nothing to change:
tables, columns, types, nullability, server defaults, indexes, unique and foreign-key constraints. Tables
are declared without a schema and each participant's engine sets search_path to its own (kernel/db.py),
so the comparison runs on that engine, seeing the schema as the participant does.

The second half shows the comparison can fail: copies of the models, each altered in one way, are
reported.
"""

from __future__ import annotations

import pprint
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, DefaultClause, MetaData, String, Table, Text

from bap import models as bap_models
from bpp import models as bpp_models
from gateway import models as gateway_models
from kernel import db
from registry import models as registry_models

# Every schema that has models, with all of its metadata (participant tables + the Beckn inbox/outbox).
MODELS: dict[str, tuple[MetaData, ...]] = {
    "bap": bap_models.METADATA,
    "bpp": bpp_models.METADATA,
    "gateway": gateway_models.METADATA,
    "registry": registry_models.METADATA,
}


@pytest.fixture(scope="module")
def migrated_url(pg_server_url: str) -> Iterator[str]:
    """A database of this module's own, migrated from empty to head."""
    url = db.create_database(pg_server_url, "fm_models")
    db.upgrade(url)
    yield url
    db.drop_database(pg_server_url, url)


def differences(url: str, schema: str, metadata: Sequence[MetaData]) -> list[Any]:
    """What autogenerate would change in the migrated `schema` to make it match `metadata` ([] if nothing)."""
    with db.get_engine(schema, url).connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,  # VARCHAR(255) vs VARCHAR(64), FLOAT vs NUMERIC, JSON vs JSONB …
                "compare_server_default": True,
                "target_metadata": metadata,
            },
        )
        return list(compare_metadata(context, metadata))


def operations(diff: list[Any]) -> set[tuple[str, str]]:
    """(operation, table name) of every difference; column-level ones come grouped in lists."""
    ops: set[tuple[str, str]] = set()
    for entry in diff:
        for op in entry if isinstance(entry, list) else [entry]:
            kind = op[0]
            if kind.endswith("_index"):
                table = op[1].table.name
            elif kind.endswith("_table"):
                table = op[1].name
            elif kind.endswith(("_constraint", "_fk")):
                table = op[1].table.name
            else:  # add_column / remove_column / modify_*: (op, schema, table, …)
                table = op[2]
            ops.add((kind, table))
    return ops


@pytest.mark.parametrize("schema", sorted(MODELS))
def test_models_match_the_migrated_database(migrated_url: str, schema: str) -> None:
    diff = differences(migrated_url, schema, MODELS[schema])
    if diff:
        pytest.fail(
            f"schema {schema}: the models differ from what the migrations create (fix the model to match the "
            f"migrated database, or add a migration):\n{pprint.pformat(diff, width=120)}"
        )


# -- the comparison catches what it must ------------------------------------------------------------


def altered(metadata: Sequence[MetaData], table: str, change: Callable[[Table], None]) -> list[MetaData]:
    """Copies of `metadata` (the models themselves stay untouched) with `change` applied to `table`."""
    copies = []
    for md in metadata:
        copy = MetaData()
        for t in md.sorted_tables:
            t.to_metadata(copy)
        if table in copy.tables:
            change(copy.tables[table])
        copies.append(copy)
    return copies


def add_column(t: Table) -> None:
    t.append_column(Column("note", Text))


def change_type(t: Table) -> None:
    t.c["type"].type = String(16)  # migrated: VARCHAR(8)


def change_nullability(t: Table) -> None:
    t.c["last_error"].nullable = False


def drop_index(t: Table) -> None:
    t.indexes.remove(next(ix for ix in t.indexes if ix.name == "orders_offer"))


def change_server_default(t: Table) -> None:
    t.c["attempts"].server_default = DefaultClause("1")  # migrated: DEFAULT '0'


def drop_unique_constraint(t: Table) -> None:
    t.constraints.remove(next(c for c in t.constraints if c.name == "inbox_dedup"))


def drop_foreign_key(t: Table) -> None:
    fk = next(iter(t.foreign_key_constraints))
    t.constraints.remove(fk)
    t.foreign_keys.difference_update(fk.elements)
    for element in fk.elements:
        element.parent.foreign_keys.discard(element)


@pytest.mark.parametrize(
    ("schema", "table", "change", "expected"),
    [
        ("bpp", "orders", add_column, "add_column"),
        ("registry", "subscribers", change_type, "modify_type"),
        ("gateway", "outbox", change_nullability, "modify_nullable"),
        ("bpp", "orders", drop_index, "remove_index"),
        ("bap", "inbox", change_server_default, "modify_default"),
        ("gateway", "inbox", drop_unique_constraint, "remove_constraint"),
        ("registry", "coverage", drop_foreign_key, "remove_fk"),
    ],
    ids=["column", "type", "nullability", "index", "server_default", "unique_constraint", "foreign_key"],
)
def test_an_altered_model_is_reported(
    migrated_url: str, schema: str, table: str, change: Callable[[Table], None], expected: str
) -> None:
    assert differences(migrated_url, schema, MODELS[schema]) == []  # the unaltered models agree
    diff = differences(migrated_url, schema, altered(MODELS[schema], table, change))
    assert operations(diff) == {(expected, table)}, pprint.pformat(diff, width=120)
