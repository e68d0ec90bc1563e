"""`flexmarket ledger backup` / `ledger restore` (ledger/backup.py): a dump restores into an empty database
with the same head, balances and rows, and verifies; a tampered dump, a dump that is not its manifest's, a
non-empty target without --replace, an absent or wrong key file and client tools that cannot work are each
refused, naming what failed, and leave the target ledger untouched."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql
from typer.testing import CliRunner

from beckn.keys import KeyPair
from kernel import db
from kernel.config import environment
from ledger import accounts as acct
from ledger.accounts_db import ensure_accounts
from ledger.backup import (
    SCHEMA,
    BackupRefused,
    OnExisting,
    PgTools,
    backup_ledger,
    dump_version_problem,
    manifest_path,
    read_manifest,
    restore_ledger,
    restore_version_problem,
)
from ledger.checkpoints import create_checkpoint, key_path, rotate_key
from ledger.cli import ledger_app
from ledger.db import connection, in_transaction
from ledger.settlement_runs import settle_due
from ledger.store import append_one
from ledger.tokens import create_series, mint
from ledger.transfers import TransferSpec
from ledger.verify import verify_ledger
from tests.ledger.conftest import _clone, utc
from tests.ledger.helpers import snapshot
from tests.ledger.test_settlement_db import END, seeded_order

runner = CliRunner()
CASH, REV = acct.bap_cash("b-bak"), acct.provider_revenue("p-bak")


@dataclass(frozen=True)
class Source:
    """A ledger with orders, settlement, transfers, tokens, checkpoints and a key rotation, and its dump."""

    url: str
    home: Path
    dump: Path


@pytest.fixture(scope="module")
def tools(pg_server_url: str) -> PgTools:
    """The client tools that match the test server: the PATH's for the machine's server, the bundled ones for
    an embedded test server (the CLI is pointed at them with FLEXMARKET_PG_BIN_DIR)."""
    with psycopg.connect(pg_server_url) as c:
        major = c.info.server_version // 10_000
    for candidate in (PgTools.on_path(), PgTools.bundled()):
        try:
            if candidate.major("pg_dump") == major:
                return candidate
        except BackupRefused:
            continue
    pytest.skip(f"no pg_dump {major} on PATH nor bundled with pgserver")


def _cli_env(url: str, home: Path, tools: PgTools) -> dict[str, str]:
    return {"DATABASE_URL": url, "FLEXMARKET_HOME": str(home)} | (
        {"FLEXMARKET_PG_BIN_DIR": str(tools.bin_dir)} if tools.bin_dir else {}
    )


def _grow(conn: psycopg.Connection, tag: str, n: int = 2) -> None:
    for i in range(n):
        with conn.transaction():
            append_one(conn, [TransferSpec(f"{tag}-{i}", "single", "GBP", CASH, REV, 100 + i)])


def _populate(url: str) -> None:
    now, valid_from = utc(2024, 1, 7), utc(2024, 1, 8)
    with connection(url) as conn:
        with conn.transaction():
            ensure_accounts(conn, [CASH, REV])
        _grow(conn, "bak-a", 3)
        with conn.transaction():
            append_one(conn, [TransferSpec("bak-p", "pending", "GBP", CASH, REV, 77, timeout_us=None)])
        with conn.transaction():
            append_one(conn, [TransferSpec("bak-p-post", "post", pending_id="bak-p")])
        seeded_order(conn, "bak")  # an order with metering and prices, then its run II
        settle_due(url, END + timedelta(hours=3), order_ids=["o-bak"])
        in_transaction(
            conn,
            lambda c: create_series(
                c,
                "s-bak",
                provider_id="dc-bak",
                valid_from=valid_from,
                valid_to=valid_from + timedelta(days=7),
                declared_capacity_w=120_000,
                now=now,
            ),
        )
        in_transaction(conn, lambda c: mint(c, "m-bak", "s-bak", 5, now))
        with conn.transaction():
            create_checkpoint(conn)
        rotate_key(conn)  # checkpoints after this are signed by the new key
        _grow(conn, "bak-b")
        with conn.transaction():
            create_checkpoint(conn)
        _grow(conn, "bak-c")  # backup signs this head itself


@pytest.fixture(scope="module")
def source(
    pg_server_url: str, _template_db: str, tmp_path_factory: pytest.TempPathFactory, tools: PgTools
) -> Iterator[Source]:
    home = tmp_path_factory.mktemp("backup-home")
    url = _clone(pg_server_url, _template_db, "fm_lbak")
    dump = tmp_path_factory.mktemp("backup-out") / "ledger.dump"
    with environment(_cli_env(url, home, tools)):
        _populate(url)
        r = runner.invoke(ledger_app, ["backup", str(dump)])  # the real command
        assert r.exit_code == 0, r.output
        assert "head height" in r.output
        yield Source(url, home, dump)
    db.drop_database(pg_server_url, url)


@pytest.fixture
def target(pg_server_url: str, _template_db: str) -> Iterator[str]:
    """An empty, migrated database of its own to restore into."""
    url = _clone(pg_server_url, _template_db, "fm_lrest")
    yield url
    db.drop_database(pg_server_url, url)


def table_digests(url: str) -> dict[str, Any]:
    """Every ledger table's rows, as one digest per table (equal digests: equal contents)."""
    with connection(url) as conn:
        names = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (SCHEMA,))]
        return {
            t: conn.execute(
                sql.SQL(
                    "SELECT count(*), md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM {} x"
                ).format(sql.Identifier(SCHEMA, t))
            ).fetchone()
            for t in sorted(names)
        }


def state(url: str) -> tuple[Any, ...]:
    with connection(url) as conn:
        return snapshot(conn), table_digests(url)


def _copy_dump(src: Path, dst_dir: Path) -> Path:
    dst = dst_dir / src.name
    dst.write_bytes(src.read_bytes())
    manifest_path(dst).write_text(manifest_path(src).read_text())
    return dst


def _tampered_dump(source: Source, tools: PgTools, out: Path, *, server_url: str, template: str, sql_text: str) -> Path:
    """The source's dump restored aside, changed with triggers disabled, and dumped again by `backup`
    (so its manifest matches it: only verification can tell)."""
    aside = _clone(server_url, template, "fm_ltamper")
    try:
        restore_ledger(aside, source.dump, tools, OnExisting.REFUSE)
        with psycopg.connect(aside, autocommit=True) as c:
            c.execute("SET session_replication_role = replica")  # the append-only triggers stay quiet
            c.execute(sql_text)
        backup_ledger(aside, out, tools)
    finally:
        db.drop_database(server_url, aside)
    return out


def test_restore_into_an_empty_database_verifies_with_equal_head_balances_and_rows(
    source: Source, target: str, tools: PgTools, tmp_path: Path
) -> None:
    manifest = read_manifest(source.dump)
    assert manifest.head["height"] > 0 and manifest.checkpoint is not None
    assert manifest.checkpoint["message"]["height"] == manifest.head["height"]  # backup signed its head
    with environment(_cli_env(target, source.home, tools)):
        r = runner.invoke(ledger_app, ["restore", str(source.dump)])
        assert r.exit_code == 0, r.output
        assert f"head height {manifest.head['height']}" in r.output and "OK" in r.output
        assert table_digests(target) == table_digests(source.url)  # balances, entries, checkpoints, hand-overs …
        with connection(target) as conn:
            assert conn.execute("SELECT count(*) FROM ledger.key_handovers").fetchone() == (1,)
            assert conn.execute("SELECT count(*) FROM ledger.orders").fetchone() == (1,)
            assert verify_ledger(conn, KeyPair.generate().signing_public_key_b64).ok is False  # a stranger's key
            # the restored ledger serves again: it appends and signs with the key file in force
            _grow(conn, "after-restore", 1)
            with conn.transaction():
                assert create_checkpoint(conn) is not None
        v = runner.invoke(ledger_app, ["verify"])
        assert v.exit_code == 0 and "ledger intact" in v.output, v.output
        # over a ledger that now holds more, --replace restores the dump and says what it replaced
        grown = state(target)
        refused = runner.invoke(ledger_app, ["restore", str(source.dump)])
        assert refused.exit_code == 1 and "--replace" in refused.output
        assert f"head height {manifest.head['height'] + 1}" in refused.output  # what would be lost
        assert state(target) == grown
        again = runner.invoke(ledger_app, ["restore", "--replace", str(source.dump)])
        assert again.exit_code == 0, again.output
        assert f"replaced the ledger that was at head height {manifest.head['height'] + 1}" in again.output
    assert table_digests(target) == table_digests(source.url)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (
            "UPDATE ledger.entries SET amount = amount + 1 WHERE id = 'bak-a-1'",
            "amount",
        ),
        (
            "UPDATE ledger.checkpoints SET signature = decode(repeat('00', 64), 'hex') "
            "WHERE height = (SELECT max(height) FROM ledger.checkpoints)",
            "checkpoint at height",
        ),
        (
            f"UPDATE ledger.balances SET credits_posted = credits_posted + 5 WHERE account = '{REV}'",
            f"balance of {REV}",
        ),
    ],
    ids=["entry-amount", "checkpoint-signature", "balance"],
)
def test_a_tampered_dump_is_refused_naming_what_failed_and_the_target_is_untouched(
    source: Source,
    target: str,
    tools: PgTools,
    tmp_path: Path,
    pg_server_url: str,
    _template_db: str,
    change: str,
    named: str,
) -> None:
    with environment(_cli_env(target, source.home, tools)):
        restore_ledger(target, source.dump, tools, OnExisting.REFUSE)  # the target holds the good ledger
        before = state(target)
        bad = _tampered_dump(
            source, tools, tmp_path / "tampered.dump", server_url=pg_server_url, template=_template_db, sql_text=change
        )
        with pytest.raises(BackupRefused, match="does not verify") as err:
            restore_ledger(target, bad, tools, OnExisting.REPLACE)  # even when told to replace
        assert named in err.value.message and "nothing was restored" in err.value.message
        assert state(target) == before


def test_a_dump_that_is_not_its_manifests_is_refused(
    source: Source, target: str, tools: PgTools, tmp_path: Path
) -> None:
    with environment(_cli_env(target, source.home, tools)):
        before = state(target)
        edited = _copy_dump(source.dump, tmp_path)
        data = bytearray(edited.read_bytes())
        data[len(data) // 2] ^= 0x01
        edited.write_bytes(bytes(data))
        r = runner.invoke(ledger_app, ["restore", str(edited)])
        assert r.exit_code == 1 and "is not the dump its manifest describes" in r.output, r.output
        # a manifest rewritten to claim another head (a truncated or older dump passed off as this one)
        (tmp_path / "other").mkdir()
        other = _copy_dump(source.dump, tmp_path / "other")
        doc = json.loads(manifest_path(other).read_text())
        doc["head"]["height"] += 1
        manifest_path(other).write_text(json.dumps(doc))
        with pytest.raises(BackupRefused, match="not the head its manifest records"):
            restore_ledger(target, other, tools, OnExisting.REFUSE)
        manifest_path(other).unlink()
        with pytest.raises(BackupRefused, match="no manifest"):
            restore_ledger(target, other, tools, OnExisting.REFUSE)
        assert state(target) == before


def test_absent_or_wrong_key_file_is_refused_naming_the_file(
    source: Source, target: str, tools: PgTools, tmp_path: Path
) -> None:
    empty_home = tmp_path / "home-without-key"
    with environment(_cli_env(target, empty_home, tools)):
        before = state(target)
        r = runner.invoke(ledger_app, ["restore", str(source.dump)])
        assert r.exit_code == 1, r.output
        assert str(key_path()) in r.output and "missing" in r.output
        key_path().parent.mkdir(parents=True)
        key_path().write_text(json.dumps(KeyPair.generate().to_json()))
        r = runner.invoke(ledger_app, ["restore", str(source.dump)])
        assert r.exit_code == 1 and str(key_path()) in r.output and "not the key in force" in r.output, r.output
        assert state(target) == before
    # the key the dump's head needs, retired by a rotation made after the dump: the message says where it is
    retired_home = tmp_path / "home-after-rotation"
    in_force = json.loads((source.home / "keys" / "ledger.json").read_text())
    with environment(_cli_env(target, retired_home, tools)):
        key_path().parent.mkdir(parents=True)
        retired = key_path().with_name(f"ledger-retired-{in_force['unique_key_id']}.json")
        retired.write_text(json.dumps(in_force))
        key_path().write_text(json.dumps(KeyPair.generate().to_json()))
        with pytest.raises(BackupRefused, match=str(retired)):
            restore_ledger(target, source.dump, tools, OnExisting.REFUSE)
    assert state(target) == before


def test_versions_that_cannot_work_are_refused_naming_them(
    source: Source, target: str, tools: PgTools, tmp_path: Path
) -> None:
    copy = _copy_dump(source.dump, tmp_path)
    doc = json.loads(manifest_path(copy).read_text())
    manifest_path(copy).write_text(json.dumps(doc | {"pg_dump_major": 99}))
    restore_major = tools.major("pg_restore")
    with environment(_cli_env(target, source.home, tools)):
        before = state(target)
        with pytest.raises(BackupRefused, match=f"pg_dump 99, which pg_restore {restore_major} cannot read"):
            restore_ledger(target, copy, tools, OnExisting.REFUSE)
        assert state(target) == before


def test_a_pg_dump_older_than_the_server_is_refused_before_anything_is_written(target: str, tmp_path: Path) -> None:
    old_tools = tmp_path / "bin"
    old_tools.mkdir()
    fake = old_tools / "pg_dump"
    fake.write_text('#!/bin/sh\necho "pg_dump (PostgreSQL) 9.6.24"\n')
    fake.chmod(0o755)
    with environment({"DATABASE_URL": target, "FLEXMARKET_HOME": str(tmp_path / "home")}):
        with connection(target) as conn:
            with conn.transaction():
                ensure_accounts(conn, [CASH, REV])
            _grow(conn, "unsigned")
            server = conn.info.server_version // 10_000
        with pytest.raises(BackupRefused, match=f"pg_dump 9 cannot dump a PostgreSQL {server} server"):
            backup_ledger(target, tmp_path / "out" / "l.dump", PgTools.in_dir(old_tools))
        with connection(target) as conn:  # the head was not signed, and no key was made for it
            assert conn.execute("SELECT count(*) FROM ledger.checkpoints").fetchone() == (0,)
        assert not key_path().exists() and not (tmp_path / "out").exists()


def test_bundled_tools_are_the_embedded_servers_version() -> None:
    bundled = PgTools.bundled()
    assert bundled.bin_dir is not None
    postgres = PgTools(bundled.bin_dir, bundled.origin)
    assert bundled.major("pg_dump") == bundled.major("pg_restore") == postgres.major("postgres")


@given(tool=st.integers(9, 30), server=st.integers(9, 30))
def test_pg_dump_refuses_exactly_the_newer_servers(tool: int, server: int) -> None:
    problem = dump_version_problem(pg_dump_major=tool, server_major=server)
    assert (problem is None) == (tool >= server)
    if problem:
        assert f"pg_dump {tool}" in problem and f"PostgreSQL {server}" in problem


@given(restore=st.integers(9, 30), by=st.integers(9, 30), source=st.integers(9, 30), target=st.integers(9, 30))
def test_restore_refuses_newer_archives_and_older_targets(restore: int, by: int, source: int, target: int) -> None:
    problem = restore_version_problem(
        pg_restore_major=restore, dumped_by_major=by, dumped_from_major=source, target_major=target
    )
    assert (problem is None) == (restore >= by and target >= source)


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.floats(0, 1, exclude_max=True), flip=st.integers(1, 255))
def test_any_changed_byte_of_the_dump_is_refused(source: Source, tmp_path: Path, position: float, flip: int) -> None:
    copy = _copy_dump(source.dump, tmp_path)
    data = bytearray(copy.read_bytes())
    data[int(position * len(data))] ^= flip
    copy.write_bytes(bytes(data))
    with pytest.raises(BackupRefused, match="is not the dump its manifest describes"):
        read_manifest(copy)
