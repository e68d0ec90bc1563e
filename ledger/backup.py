"""`flexmarket ledger backup FILE` and `flexmarket ledger restore FILE`: pg_dump / pg_restore of the
ledger's schema (`ledger`: the chain, its signed checkpoints and key hand-overs, balances, settlement inputs,
tokens, API keys) with a manifest beside the dump, FILE.manifest.json.

Backup signs the chain head (as `ledger checkpoint` does), then dumps one consistent snapshot: the manifest
records that snapshot's head, its newest signed checkpoint, the key in force, the migration revision, the
PostgreSQL versions and the dump's SHA-256.

Restore never touches the target's ledger until the dump has proved itself: the dump is copied aside (its
SHA-256 must match the manifest's), restored into a scratch database of its own, and verified there end to
end (ledger/verify.py: every entry, link and Merkle root re-hashed, every checkpoint's signature through the
key hand-overs, balances against entries) with the ledger's key file, which must hold the key in force at the
dump's head. Its head and signed checkpoint must be the manifest's. Only then is the target's `ledger` schema
replaced by the same bytes in one transaction (pg_restore --clean --single-transaction), and verified again.
A target ledger that is not empty is replaced only when asked (OnExisting.REPLACE).

The key file (FLEXMARKET_HOME/keys/ledger.json) is not in the dump: it is backed up on its own (README).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from kernel import clock
from kernel import db as kdb
from ledger.checkpoints import (
    chain_head,
    create_checkpoint,
    default_publish_dir,
    existing_public_key_b64,
    get_checkpoint,
    key_in_force,
    key_path,
)
from ledger.db import connection, conninfo
from ledger.errors import LedgerError
from ledger.verify import LedgerReport, verify_ledger

SCHEMA = "ledger"
FORMAT = "flexmarket-ledger-backup/1"
MANIFEST_SUFFIX = ".manifest.json"
SEED_TABLES = frozenset({"ledgers"})  # rows every migrated ledger has (the GBP ledger): not "data"
_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")
_CHUNK_BYTES = 1 << 20


class BackupRefused(LedgerError):
    """A backup or restore that cannot go ahead; nothing of the target ledger was changed."""

    def __init__(self, message: str) -> None:
        super().__init__("backup_refused", message, status=409)

    def __str__(self) -> str:
        return self.message


class OnExisting(Enum):
    """What `restore` does with a target ledger that already holds data."""

    REFUSE = "refuse"
    REPLACE = "replace"


# --- PostgreSQL client tools -------------------------------------------------------------------------


@dataclass(frozen=True)
class PgTools:
    """pg_dump and pg_restore from one folder (the embedded server's bundled binaries, FLEXMARKET_PG_BIN_DIR),
    or from PATH."""

    bin_dir: Path | None
    origin: str

    @classmethod
    def bundled(cls) -> PgTools:
        """The binaries pgserver ships with the embedded PostgreSQL (kernel/embedded.py)."""
        # lazy: only the embedded server's deployments need it (the folder pgserver runs its server from)
        from pgserver.postgres_server import POSTGRES_BIN_PATH

        return cls(Path(POSTGRES_BIN_PATH), "bundled with the embedded PostgreSQL (pgserver)")

    @classmethod
    def on_path(cls) -> PgTools:
        return cls(None, "on PATH")

    @classmethod
    def in_dir(cls, bin_dir: Path) -> PgTools:
        return cls(bin_dir, f"in {bin_dir} (FLEXMARKET_PG_BIN_DIR)")

    def executable(self, name: str) -> str:
        found = str(self.bin_dir / name) if self.bin_dir else shutil.which(name)
        if found is None or not Path(found).is_file():
            raise BackupRefused(f"{name} not found {self.origin}: install the PostgreSQL client tools")
        return found

    def major(self, name: str) -> int:
        """The tool's PostgreSQL major version (`pg_dump --version` → 'pg_dump (PostgreSQL) 15.20 …' → 15)."""
        out = subprocess.run([self.executable(name), "--version"], capture_output=True, text=True, check=False)
        match = _VERSION.search(out.stdout)
        if out.returncode != 0 or match is None:
            raise BackupRefused(f"cannot tell the version of {name} {self.origin}: {out.stdout or out.stderr}")
        return int(match.group(1))


def dump_version_problem(*, pg_dump_major: int, server_major: int) -> str | None:
    """pg_dump dumps servers of its own major version and older ones, never newer ones."""
    if pg_dump_major < server_major:
        return (
            f"pg_dump {pg_dump_major} cannot dump a PostgreSQL {server_major} server: "
            f"use pg_dump {server_major} or newer"
        )
    return None


def restore_version_problem(
    *, pg_restore_major: int, dumped_by_major: int, dumped_from_major: int, target_major: int
) -> str | None:
    """pg_restore reads archives of its own major version and older; a dump loads into a server of the same
    major version or a newer one (PostgreSQL does not support loading into an older one)."""
    if pg_restore_major < dumped_by_major:
        return (
            f"the dump was written by pg_dump {dumped_by_major}, which pg_restore {pg_restore_major} cannot read: "
            f"use pg_restore {dumped_by_major} or newer"
        )
    if target_major < dumped_from_major:
        return (
            f"the dump is of a PostgreSQL {dumped_from_major} server and the target is PostgreSQL {target_major}: "
            "restore into a server of the same major version or newer"
        )
    return None


# --- the manifest ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """What FILE.manifest.json records about the dump FILE."""

    dump_sha256: str
    dump_bytes: int
    alembic_revision: str
    server_major: int
    pg_dump_major: int
    head: dict[str, Any]  # chain_head(): height, head_hash, entry_count
    checkpoint: dict[str, Any] | None  # the newest signed checkpoint in the dump
    key_in_force: str | None  # public key (base64) that signs the dump's next checkpoint
    created_at: str
    database: str

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, **self.__dict__}

    @classmethod
    def from_json(cls, doc: Any, where: Path) -> Manifest:
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise BackupRefused(f"{where}: not a flexmarket ledger backup manifest (format {FORMAT})")
        fields: dict[str, Any] = {k: doc.get(k) for k in cls.__dataclass_fields__}
        expected: dict[str, tuple[type, ...]] = {
            "dump_sha256": (str,),
            "dump_bytes": (int,),
            "alembic_revision": (str,),
            "server_major": (int,),
            "pg_dump_major": (int,),
            "head": (dict,),
            "checkpoint": (dict, type(None)),
            "key_in_force": (str, type(None)),
            "created_at": (str,),
            "database": (str,),
        }
        for name, types in expected.items():
            if not isinstance(fields[name], types) or isinstance(fields[name], bool):
                raise BackupRefused(f"{where}: field {name!r} is missing or malformed")
        return cls(**fields)


def manifest_path(dump: Path) -> Path:
    return dump.with_name(dump.name + MANIFEST_SUFFIX)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(dump: Path) -> Manifest:
    """The dump's manifest, once the dump's size and SHA-256 are the ones it records."""
    where = manifest_path(dump)
    if not dump.is_file():
        raise BackupRefused(f"no dump file {dump}")
    try:
        manifest = Manifest.from_json(json.loads(where.read_text()), where)
    except FileNotFoundError:
        raise BackupRefused(f"no manifest {where} beside the dump: it records what the dump must hold") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BackupRefused(f"{where}: not readable JSON ({exc})") from None
    _require_digest(dump, manifest)
    return manifest


def _require_digest(dump: Path, manifest: Manifest) -> None:
    size, digest = dump.stat().st_size, file_sha256(dump)
    if (size, digest) != (manifest.dump_bytes, manifest.dump_sha256):
        raise BackupRefused(
            f"{dump} is not the dump its manifest describes ({size} bytes, SHA-256 {digest[:16]}…; "
            f"the manifest records {manifest.dump_bytes} bytes, {manifest.dump_sha256[:16]}…)"
        )


# --- database helpers --------------------------------------------------------------------------------


def _server_major(conn: psycopg.Connection) -> int:
    return conn.info.server_version // 10_000


def _alembic_revision(conn: psycopg.Connection) -> str | None:
    row = conn.execute(
        "SELECT CASE WHEN to_regclass('public.alembic_version') IS NOT NULL "
        "THEN (SELECT string_agg(version_num, ',' ORDER BY version_num) FROM public.alembic_version) END"
    ).fetchone()
    return None if row is None or row[0] is None else str(row[0])


def _describe(url: str) -> str:
    """host:port/dbname of a database URL, without credentials (for manifests and messages)."""
    info = psycopg.conninfo.conninfo_to_dict(conninfo(url))
    return f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


def _tool_target(url: str) -> tuple[str, dict[str, str]]:
    """A conninfo for the client tools and their environment: the password goes in PGPASSWORD, never on
    the command line (where `ps` would show it)."""
    info = psycopg.conninfo.conninfo_to_dict(conninfo(url))
    password = info.pop("password", None)
    env = dict(os.environ)
    if password:
        env["PGPASSWORD"] = str(password)
    return psycopg.conninfo.make_conninfo("", **info), env


def _run(argv: Sequence[str], env: dict[str, str], what: str) -> None:
    out = subprocess.run(list(argv), capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        detail = " ".join(out.stderr.strip().splitlines()[-3:]) or f"exit status {out.returncode}"
        raise BackupRefused(f"{what} failed: {detail}")


@dataclass(frozen=True)
class Occupancy:
    """What a ledger holds: its chain head, and the tables with rows beyond the migrations' seed."""

    head: dict[str, Any]
    tables_with_rows: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not self.tables_with_rows

    def describe(self) -> str:
        h, tables = self.head, self.tables_with_rows
        shown = ", ".join(tables[:6]) + (f" and {len(tables) - 6} more" if len(tables) > 6 else "")
        return f"head height {h['height']} ({h['entry_count']} entries; rows in {shown})"


def occupancy(conn: psycopg.Connection) -> Occupancy:
    tables = [
        r[0]
        for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY tablename", (SCHEMA,))
        if r[0] not in SEED_TABLES
    ]
    occupied = tuple(
        t
        for t in tables
        if conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(SCHEMA, t))).fetchone()
        == (True,)
    )
    return Occupancy(chain_head(conn), occupied)


# --- backup ------------------------------------------------------------------------------------------


def backup_ledger(url: str, dump: Path, tools: PgTools) -> Manifest:
    """Sign the head, dump one snapshot of the ledger schema to `dump` and write its manifest beside it.
    BackupRefused (nothing written) when the tools cannot dump this server; LedgerKeyError (naming the key
    file) when the head cannot be signed with the key in force."""
    with connection(url) as conn:
        server_major, pg_dump_major = _server_major(conn), tools.major("pg_dump")
        problem = dump_version_problem(pg_dump_major=pg_dump_major, server_major=server_major)
        if problem:
            raise BackupRefused(f"{problem} (pg_dump {tools.origin})")
        revision = _alembic_revision(conn)
        if revision is None:
            raise BackupRefused(f"{_describe(url)} has no migration history (public.alembic_version)")
        with conn.transaction():
            create_checkpoint(conn, publish_dir=default_publish_dir())
        dump.parent.mkdir(parents=True, exist_ok=True)
        partial = dump.with_name(dump.name + ".partial")
        try:
            head, checkpoint, in_force = _dump_snapshot(conn, url, tools, partial)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    manifest = Manifest(
        dump_sha256=file_sha256(partial),
        dump_bytes=partial.stat().st_size,
        alembic_revision=revision,
        server_major=server_major,
        pg_dump_major=pg_dump_major,
        head=head,
        checkpoint=checkpoint,
        key_in_force=in_force,
        created_at=clock.wall_now().isoformat(),
        database=_describe(url),
    )
    partial.replace(dump)
    where = manifest_path(dump)
    staged = where.with_name(where.name + ".partial")
    staged.write_text(json.dumps(manifest.to_json(), indent=2, sort_keys=True))
    staged.replace(where)
    return manifest


def _dump_snapshot(
    conn: psycopg.Connection, url: str, tools: PgTools, out: Path
) -> tuple[dict[str, Any], dict[str, Any] | None, str | None]:
    """pg_dump the ledger schema to `out` from the snapshot of a transaction that reads, in the same
    snapshot, the head, the newest signed checkpoint and the key in force."""
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    with conn.transaction():
        snap = conn.execute("SELECT pg_export_snapshot()").fetchone()
        assert snap is not None
        head, checkpoint, in_force = chain_head(conn), get_checkpoint(conn, at_least=0), key_in_force(conn)
        target, env = _tool_target(url)
        argv = [tools.executable("pg_dump"), "--format=custom", f"--schema={SCHEMA}", "--no-owner"]
        argv += ["--no-privileges", f"--snapshot={snap[0]}", f"--file={out}", f"--dbname={target}"]
        _run(argv, env, "pg_dump")
    return head, checkpoint, None if in_force is None else in_force[0]


# --- restore -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RestoreReport:
    head: dict[str, Any]
    replaced: Occupancy | None  # the target's ledger before the restore, if it held data
    verified: LedgerReport


def restore_ledger(url: str, dump: Path, tools: PgTools, on_existing: OnExisting) -> RestoreReport:
    """Verify the dump in a scratch database, then replace the target's ledger schema with it in one
    transaction. BackupRefused (the target untouched) when the dump, its manifest, the key file, the tools
    or the target are not right."""
    try:
        manifest, before = _verified_then_restored(url, dump, tools, on_existing)
    except BackupRefused as exc:
        raise BackupRefused(f"{exc.message}; nothing was restored") from None
    try:
        report = _verify_restored(url, manifest)
    except BackupRefused as exc:  # the same bytes verified in scratch: this is not expected
        raise BackupRefused(f"restored into {_describe(url)}, but the result does not verify: {exc}") from None
    return RestoreReport(manifest.head, None if before.empty else before, report)


def _verified_then_restored(
    url: str, dump: Path, tools: PgTools, on_existing: OnExisting
) -> tuple[Manifest, Occupancy]:
    manifest = read_manifest(dump)
    _require_key_file(manifest.key_in_force)
    with connection(url) as conn:
        _require_compatible(conn, manifest, tools)
        _require_replaceable(conn, on_existing)
    with tempfile.TemporaryDirectory(prefix="flexmarket-restore-") as tmp:
        copy = Path(tmp) / "ledger.dump"  # private: the bytes verified are the bytes restored
        shutil.copyfile(dump, copy)
        _require_digest(copy, manifest)
        with _scratch_database(url) as scratch:
            _pg_restore(tools, scratch, copy, replace_existing=False)
            _verify_restored(scratch, manifest)
        with connection(url) as conn:
            before = _require_replaceable(conn, on_existing)  # again: it may have grown meanwhile
        _pg_restore(tools, url, copy, replace_existing=True)
    return manifest, before


def _require_compatible(conn: psycopg.Connection, manifest: Manifest, tools: PgTools) -> None:
    revision = _alembic_revision(conn)
    if revision is None:
        raise BackupRefused(f"database {conn.info.dbname} has no migration history: run `flexmarket db upgrade` first")
    if revision != manifest.alembic_revision:
        raise BackupRefused(
            f"the dump is of a ledger at migration {manifest.alembic_revision}, the target database is at "
            f"{revision}: restore with the flexmarket version that made the dump"
        )
    problem = restore_version_problem(
        pg_restore_major=tools.major("pg_restore"),
        dumped_by_major=manifest.pg_dump_major,
        dumped_from_major=manifest.server_major,
        target_major=_server_major(conn),
    )
    if problem:
        raise BackupRefused(f"{problem} (pg_restore {tools.origin})")


def _require_replaceable(conn: psycopg.Connection, on_existing: OnExisting) -> Occupancy:
    now = occupancy(conn)
    if not now.empty and on_existing is OnExisting.REFUSE:
        raise BackupRefused(
            f"the target ledger is not empty: {now.describe()}; restoring would lose it — give --replace "
            "to replace it (take a backup of it first)"
        )
    return now


def _require_key_file(in_force: str | None) -> str | None:
    """The ledger key file's public key, which must be the key in force at the dump's head (the restored
    ledger signs its next checkpoint with it). A dump without checkpoints needs no key."""
    path = key_path()
    present = existing_public_key_b64()
    if in_force is None:
        return present
    if present is None:
        raise BackupRefused(
            f"the ledger's signing key file {path} is missing, and the dump's checkpoints are signed with key "
            f"{in_force[:12]}…: restore that file from its backup first"
        )
    if present != in_force:
        raise BackupRefused(
            f"the key in {path} ({present[:12]}…) is not the key in force at the dump's head ({in_force[:12]}…)"
            + _retired_hint(path, in_force)
            + ": put the matching key file in place"
        )
    return present


def _retired_hint(path: Path, public_key: str) -> str:
    for retired in sorted(path.parent.glob("ledger-retired-*.json")):
        try:
            if json.loads(retired.read_text()).get("signing_public_key") == public_key:
                return f"; that key was retired by a later rotation and is in {retired}"
        except (OSError, ValueError):
            continue
    return ""


def _verify_restored(url: str, manifest: Manifest) -> LedgerReport:
    with connection(url) as conn:
        in_force = key_in_force(conn)
        key = _require_key_file(None if in_force is None else in_force[0])
        report = verify_ledger(conn, key)
        if not report.ok:
            raise BackupRefused(f"the dump does not verify — {report.summary()}")
        head = chain_head(conn)
        if head != manifest.head:
            raise BackupRefused(
                f"the dump's chain head (height {head['height']}, {head['entry_count']} entries) is not the "
                f"head its manifest records (height {manifest.head.get('height')}, "
                f"{manifest.head.get('entry_count')} entries)"
            )
        if get_checkpoint(conn, at_least=0) != manifest.checkpoint:  # the newest signed checkpoint
            raise BackupRefused("the dump's signed checkpoint is not the one its manifest records")
    return report


def _pg_restore(tools: PgTools, url: str, dump: Path, *, replace_existing: bool) -> None:
    """One transaction: all of the dump or nothing. `replace_existing` drops the target's ledger objects
    first (--clean), inside the same transaction."""
    target, env = _tool_target(url)
    argv = [tools.executable("pg_restore"), "--exit-on-error", "--single-transaction", "--no-owner"]
    argv += ["--no-privileges", f"--dbname={target}"]
    if replace_existing:
        argv += ["--clean", "--if-exists"]
    _run([*argv, str(dump)], env, f"pg_restore into {_describe(url)}")


@contextmanager
def _scratch_database(url: str) -> Iterator[str]:
    """An empty database on the target's server, dropped afterwards whatever happens."""
    try:
        scratch = kdb.create_database(url, "fm_ledger_restore")
    except psycopg.Error as exc:
        raise BackupRefused(
            f"cannot create a scratch database on {_describe(url)} to verify the dump in ({exc}): "
            "the restore needs the CREATEDB privilege"
        ) from None
    try:
        yield scratch
    finally:
        kdb.drop_database(url, scratch)
