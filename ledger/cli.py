"""Ledger commands for the `flexmarket` CLI (typer apps, mounted by flexmarket/cli.py):

    from ledger.cli import ledger_app, metering_app, statement
    app.add_typer(ledger_app, name="ledger")        # flexmarket ledger verify | checkpoint | backup | restore …
    app.add_typer(metering_app, name="metering")    # flexmarket metering import FILE.csv
    app.command("statement")(statement)             # flexmarket statement --account … --from … --to …

Every command first calls kernel.embedded.ensure_services(redis=False) (DATABASE_URL, or the embedded
PostgreSQL when it is unset; never Redis) and migrates a database that has no ledger tables yet.

The commands import the ledger's database modules inside their bodies, each marked `# lazy:`: the
`flexmarket` CLI mounts these apps, and `flexmarket --help` (or any other command) should not pay for
importing psycopg, SQLAlchemy, the ledger's modules and the embedded servers.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from grid.money import QuantityError, decimal_to_units
from kernel import clock
from ledger.errors import LedgerError
from schemas import limits

if TYPE_CHECKING:
    import psycopg

    from ledger.backup import PgTools

ledger_app = typer.Typer(help="The hash-chained settlement ledger.", no_args_is_help=True)
apikey_app = typer.Typer(help="API keys for the ledger's HTTP API.", no_args_is_help=True)
ledger_app.add_typer(apikey_app, name="apikey")
metering_app = typer.Typer(help="Half-hourly metering for settlement.", no_args_is_help=True)


@metering_app.callback()
def _metering() -> None:
    """Half-hourly metering for settlement (a callback keeps `metering import` a sub-command)."""


def _services() -> None:
    # lazy: the embedded servers and the database modules, only when a command needs the database
    from kernel.embedded import ensure_services
    from ledger.db import ensure_schema

    ensure_services(redis=False)  # the ledger's commands need PostgreSQL only
    ensure_schema()


def _instant(text: str, what: str) -> datetime:
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise typer.BadParameter(f"{what}: {text!r} is not an ISO 8601 instant") from exc
    if t.tzinfo is None:
        raise typer.BadParameter(f"{what}: give a time zone, e.g. {text}Z")
    return t.astimezone(UTC)


def _fail(message: str, code: int = 1) -> None:
    typer.echo(message, err=True)
    raise typer.Exit(code)


def _read_public_key(key: str) -> str:
    """A base64 Ed25519 public key, or a file holding one (plain, or the ledger's JSON key file)."""
    path = Path(key)
    if path.is_file():
        text = path.read_text().strip()
        if text.startswith("{"):
            data = json.loads(text)
            return data.get("public_key_b64") or data["signing_public_key"]
        return text
    return key


@ledger_app.command("verify")
def verify(
    public_key: Annotated[
        str | None,
        typer.Option(help="Ledger public key (base64 or file); default: the key file under FLEXMARKET_HOME/keys"),
    ] = None,
    local_encoding: Annotated[
        bool,
        typer.Option(help="re-encode every entry's columns in Python instead of with the verifier's SQL expression"),
    ] = False,
    workers: Annotated[
        int | None, typer.Option(help="entry-pass processes (default: one per CPU for big ledgers)")
    ] = None,
) -> None:
    """Re-hash every entry, Merkle root and link; check checkpoints and balances. Exit 1 if tampered."""
    _services()
    # lazy: see the module docstring
    from ledger.checkpoints import existing_public_key_b64
    from ledger.db import connection
    from ledger.verify import verify_ledger

    key = _read_public_key(public_key) if public_key else existing_public_key_b64()
    if key is None:
        typer.echo(
            "note: no ledger key file and no --public-key: checkpoint signatures are checked against the "
            "public keys stored with them, which proves less",
            err=True,
        )
    with connection() as conn:
        report = verify_ledger(conn, key, local_encoding=local_encoding, workers=workers)
    if not report.ok:
        _fail(report.summary())
    c = report.chain
    typer.echo(f"ledger intact: {c.entry_count} entries, {c.link_count} links, head hash {c.head_hash.hex()}")
    typer.echo(report.summary())


@ledger_app.command("verify-statement")
def verify_statement(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="statement (.json or .csv)")],
    public_key: Annotated[str, typer.Option("--public-key", help="the ledger's Ed25519 public key (base64 or file)")],
) -> None:
    """Verify a statement offline: signed checkpoint, inclusion proofs, running balances."""
    # lazy: see the module docstring (offline: no database module at all)
    from ledger.proofs import verify_statement as check
    from ledger.statement_csv import statement_from_csv

    text = file.read_text()
    try:
        doc = json.loads(text) if file.suffix.lower() != ".csv" else statement_from_csv(text)
    except (ValueError, KeyError, StopIteration) as exc:
        _fail(f"INVALID: cannot read statement: {exc}")
    result = check(doc, _read_public_key(public_key))
    if not result.ok:
        _fail(result.summary())
    typer.echo(result.summary())


@ledger_app.command("checkpoint")
def checkpoint(out: Annotated[Path | None, typer.Option(help="also write the signed checkpoint here")] = None) -> None:
    """Sign the chain head now (idempotent per height) and print it."""
    _services()
    # lazy: see the module docstring
    from ledger.checkpoints import LedgerKeyError, create_checkpoint, default_publish_dir
    from ledger.db import connection

    try:
        with connection() as conn, conn.transaction():
            cp = create_checkpoint(conn, publish_dir=default_publish_dir())
    except LedgerKeyError as exc:  # the key file is missing, or is not the key in force: refuse, naming it
        _fail(f"refused: {exc.message}")
    if cp is None:
        _fail("the chain is empty: nothing to sign")
    text = json.dumps(cp, indent=2, sort_keys=True)
    if out:
        out.write_text(text)
    typer.echo(text)


@ledger_app.command("public-key")
def public_key() -> None:
    """Print the ledger's Ed25519 public key (base64) for offline statement verification."""
    # lazy: see the module docstring
    from ledger.checkpoints import LedgerKeyError, existing_public_key_b64, ledger_keypair

    key = existing_public_key_b64()
    if key is None:  # no key file: make one only for a ledger without checkpoints (asks the database)
        _services()
        try:
            key = ledger_keypair().signing_public_key_b64
        except LedgerKeyError as exc:
            _fail(f"refused: {exc.message}")
    typer.echo(key)


@ledger_app.command("rotate-key")
def rotate_key() -> None:
    """Rotate the ledger's signing key: the key in force signs a hand-over checkpoint naming the new key, which
    signs every later checkpoint; `ledger verify` and offline statement checks follow the hand-overs."""
    _services()
    # lazy: see the module docstring
    from ledger.checkpoints import LedgerKeyError, default_publish_dir
    from ledger.checkpoints import rotate_key as rotate
    from ledger.db import connection

    try:
        with connection() as conn:
            result = rotate(conn, publish_dir=default_publish_dir())
    except LedgerKeyError as exc:
        _fail(f"refused: {exc.message}")
    cp = result["handover"]
    typer.echo(
        f"rotated: key {result['old_key_id']} handed over to {result['new_key_id']}"
        + (f" at height {cp['message']['height']}" if cp else " (no checkpoint yet: nothing to hand over)")
    )
    typer.echo(f"new public key: {result['new_public_key_b64']}")


def _pg_tools_and_url() -> tuple[PgTools, str]:
    """The client tools for the server (FLEXMARKET_PG_BIN_DIR, else the embedded server's bundled binaries,
    else the PATH's) and the database URL, after the same start-up as every ledger command."""
    # lazy: see the module docstring
    from kernel.config import get_settings
    from kernel.embedded import ensure_services
    from ledger.backup import PgTools
    from ledger.db import ensure_schema

    urls = ensure_services(redis=False)
    ensure_schema()
    bin_dir = get_settings().pg_bin_dir
    if bin_dir is not None:
        return PgTools.in_dir(bin_dir), urls.database_url
    return (PgTools.bundled() if urls.embedded_postgres else PgTools.on_path()), urls.database_url


@ledger_app.command("backup")
def backup(file: Annotated[Path, typer.Argument(dir_okay=False, help="the dump to write (custom format)")]) -> None:
    """Sign the chain head, then pg_dump the ledger schema to FILE and write FILE.manifest.json (head, signed
    checkpoint, SHA-256). The ledger's key file is not in the dump: back it up on its own."""
    tools, url = _pg_tools_and_url()
    # lazy: see the module docstring
    from ledger.backup import BackupRefused, backup_ledger, manifest_path
    from ledger.checkpoints import LedgerKeyError

    try:
        manifest = backup_ledger(url, file, tools)
    except (BackupRefused, LedgerKeyError) as exc:
        _fail(f"refused: {exc.message}")
    h = manifest.head
    typer.echo(
        f"backed up the ledger at head height {h['height']} ({h['entry_count']} entries) to {file} "
        f"and {manifest_path(file).name}"
    )


@ledger_app.command("restore")
def restore(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="a dump made by `ledger backup`")],
    replace: Annotated[
        bool, typer.Option("--replace", help="replace a ledger that is not empty (its data is lost)")
    ] = False,
) -> None:
    """Verify FILE end to end in a scratch database (chain, checkpoint signatures through key hand-overs,
    balances, the manifest's head) with the ledger's key file, then replace the ledger schema with it in one
    transaction. A dump that fails is refused and the ledger is left untouched."""
    tools, url = _pg_tools_and_url()
    # lazy: see the module docstring
    from ledger.backup import BackupRefused, OnExisting, restore_ledger

    try:
        report = restore_ledger(url, file, tools, OnExisting.REPLACE if replace else OnExisting.REFUSE)
    except BackupRefused as exc:
        _fail(f"refused: {exc.message}")
    if report.replaced is not None:
        typer.echo(f"replaced the ledger that was at {report.replaced.describe()}")
    h = report.head
    typer.echo(f"restored the ledger from {file}: head height {h['height']} ({h['entry_count']} entries)")
    typer.echo(report.verified.summary())


@ledger_app.command("head")
def head() -> None:
    """Chain height, head hash and entry count."""
    _services()
    # lazy: see the module docstring
    from ledger.checkpoints import chain_head
    from ledger.db import connection

    with connection() as conn:
        typer.echo(json.dumps(chain_head(conn)))


@ledger_app.command("balance")
def balance(account: str, as_of: Annotated[str | None, typer.Option("--as-of")] = None) -> None:
    """Balance of ACCOUNT now or as of an instant (credits − debits, posted; pending separately)."""
    _services()
    # lazy: see the module docstring
    from ledger.accounts_db import balance_as_of
    from ledger.db import connection

    at = clock.now() if as_of is None else _instant(as_of, "--as-of")
    with connection() as conn:
        try:
            typer.echo(json.dumps(balance_as_of(conn, account, at)))
        except LedgerError as exc:
            _fail(exc.message)


@ledger_app.command("import-prices")
def import_prices(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
    source: Annotated[str | None, typer.Option(help="provenance label")] = None,
) -> None:
    """Load Elexon system prices (period_start_utc, …, imbalance_price_gbp_per_mwh,
    market_index_price_gbp_per_mwh), e.g. ../shared/data/grid/gb_system_prices_2023-01_2024-05.csv."""
    _services()
    # lazy: see the module docstring
    from ledger.db import connection, in_transaction
    from ledger.errors import LedgerError
    from ledger.prices import ingest_prices, read_prices_csv

    try:
        rows = read_prices_csv(file)
        now = clock.now()
        for row in rows:  # an append-only table: no 1970 and no far future (the API holds the same limit)
            reason = limits.check_historical(row.period_start, now)
            if reason:
                raise ValueError(reason)
        with connection() as conn:
            res = in_transaction(conn, lambda c: ingest_prices(c, rows, source or file.name, clock.now()))
    except (LedgerError, ValueError, KeyError) as exc:  # nothing was written: one transaction
        _fail(f"{file}: {getattr(exc, 'message', None) or exc}", 2)
    typer.echo(json.dumps(res))


@ledger_app.command("settle")
def settle(
    as_of: Annotated[str | None, typer.Option("--as-of")] = None,
    order: Annotated[list[str] | None, typer.Option("--order")] = None,
    force: Annotated[bool, typer.Option(help="run the next run even if not yet due")] = False,
) -> None:
    """Run every settlement run that is due (idempotent)."""
    _services()
    # lazy: see the module docstring
    from ledger.settlement_runs import settle_due

    now = clock.now()
    at = now if as_of is None else _instant(as_of, "--as-of")
    outcomes = settle_due(None, at, order_ids=order or None, force=force)
    typer.echo(json.dumps([o.as_json() for o in outcomes], indent=2))


@ledger_app.command("expire")
def expire() -> None:
    """Expire ended CFT series' tokens and timed-out pending transfers."""
    _services()
    # lazy: see the module docstring
    from ledger.db import connection, in_transaction
    from ledger.tokens import expire_due

    with connection() as conn:
        typer.echo(json.dumps(in_transaction(conn, lambda c: expire_due(c, clock.now()))))


@apikey_app.command("create")
def apikey_create(
    role: Annotated[str, typer.Option(help="admin | finance | provider | bap | supplier | meter_operator")],
    participant: Annotated[
        str | None,
        typer.Option("--participant", "--provider", help="participant id (provider/bap/supplier/meter_operator keys)"),
    ] = None,
    label: Annotated[str, typer.Option()] = "",
) -> None:
    """Create an API key; it is printed once (only its hash is stored)."""
    _services()
    # lazy: see the module docstring
    from ledger.api_keys import create_api_key
    from ledger.db import connection, in_transaction

    with connection() as conn:
        try:
            token = in_transaction(conn, lambda c: create_api_key(c, role, participant, label))
        except (LedgerError, ValueError) as exc:
            _fail(getattr(exc, "message", str(exc)), 2)
    typer.echo(token)


@apikey_app.command("revoke")
def apikey_revoke(key_id: str) -> None:
    _services()
    # lazy: see the module docstring
    from ledger.api_keys import revoke_api_key
    from ledger.db import connection

    with connection() as conn, conn.transaction():
        ok = revoke_api_key(conn, key_id)
    if not ok:
        _fail(f"no active key {key_id}")
    typer.echo(f"revoked {key_id}")


def _metering_row(row: dict[str | Any, str | Any], now: datetime) -> tuple[str, str | None, datetime, int]:
    """meter_id, provider_id, period start and Wh of one CSV row, within schemas/limits.py (ValueError
    naming the column otherwise)."""
    if None in row:  # csv.DictReader's key for the fields beyond the header
        raise ValueError("more columns than the header names")
    meter = (row["meter_id"] or "").strip().removeprefix("der://")
    owner = (row.get("provider_id") or "").strip() or None
    for column, value in (("meter_id", meter), ("provider_id", owner or "x")):
        limits.check_text(value, column, one_line=True)
        if not 0 < len(value) <= limits.MAX_NAME_CHARS:
            raise ValueError(f"{column}: must be 1-{limits.MAX_NAME_CHARS} characters")
    try:
        t = datetime.fromisoformat((row["period_start_utc"] or "").strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"period_start_utc: {exc}") from exc
    if t.tzinfo is None:
        raise ValueError("period_start_utc needs a time zone")
    t = t.astimezone(UTC)
    reason = limits.check_historical(t, now, "period_start_utc")
    if reason:
        raise ValueError(reason)
    text = (row["energy_kwh"] or "").strip()
    limits.check_text(text, "energy_kwh", one_line=True)
    wh = decimal_to_units(text, 3, "energy_kwh")  # signed: negative = net export
    if abs(wh) > limits.MAX_ENERGY_WH_PER_PERIOD:
        raise ValueError(f"energy_kwh: {text} is beyond ±{limits.MAX_ENERGY_KWH_PER_PERIOD:g} kWh per half-hour")
    return meter, owner, t, wh


@metering_app.command("import")
def metering_import(
    file: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, help="CSV: meter_id, period_start_utc, energy_kwh [, provider_id]"),
    ],
    provider: Annotated[str | None, typer.Option(help="owner of meters not yet registered")] = None,
    correction: Annotated[bool, typer.Option(help="supersede existing readings (stored as new versions)")] = False,
) -> None:
    """Import half-hourly readings (signed kWh: negative = net export) as self-reported readings; the whole
    file or nothing. Malformed or duplicate readings are refused with the reason, and the exit status is 1."""
    _services()
    # lazy: see the module docstring
    from ledger.db import connection, in_transaction
    from ledger.metering import Reading, ingest_metering

    by_meter: dict[str, list[Reading]] = defaultdict(list)
    owners: dict[str, str | None] = {}
    problems: list[str] = []
    now = clock.now()
    try:
        with file.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = {"meter_id", "period_start_utc", "energy_kwh"} - set(reader.fieldnames or ())
            if missing:
                _fail(f"refused: {file.name} lacks column(s) {', '.join(sorted(missing))}")
            for n, row in enumerate(reader, start=2):
                try:
                    meter, owner, t, wh = _metering_row(row, now)
                except (ValueError, QuantityError) as exc:
                    problems.append(f"line {n}: {exc}")
                    continue
                by_meter[meter].append(Reading(t, wh))
                owners[meter] = owner or provider
    except (csv.Error, UnicodeDecodeError) as exc:  # a field over csv's size limit, bytes that are not UTF-8
        _fail(f"refused: {file.name} is not a readable CSV file: {exc}")
    if problems:
        _fail(f"refused: {len(problems)} malformed line(s): " + "; ".join(problems[:10]))
    if not by_meter:
        _fail("refused: no readings in the file")

    def load(conn: psycopg.Connection) -> list[dict[str, Any]]:
        return [
            ingest_metering(
                conn, m, rs, provider_id=owners[m], now=now, correction=correction, source=f"csv:{file.name}"
            )
            for m, rs in sorted(by_meter.items())
        ]

    with connection() as conn:
        try:
            results = in_transaction(conn, load)
        except LedgerError as exc:
            _fail(f"refused ({exc.code}): {exc.message}")
    typer.echo(f"imported {sum(r['accepted'] for r in results)} readings for {len(results)} meter(s)")


def statement(
    account: Annotated[str, typer.Option("--account", help="e.g. provider:dc-north:revenue")],
    from_: Annotated[str, typer.Option("--from", help="start instant (inclusive), ISO 8601 with zone")],
    to: Annotated[str, typer.Option("--to", help="end instant (exclusive)")],
    format: Annotated[str, typer.Option("--format", help="json | csv")] = "json",
    out: Annotated[Path | None, typer.Option("--out", help="write here instead of stdout")] = None,
) -> None:
    """A statement for finance: opening balance, entries with running balances, closing balance, a
    signed checkpoint and inclusion proofs (verify with `flexmarket ledger verify-statement`)."""
    if format not in ("json", "csv"):
        raise typer.BadParameter("--format must be json or csv")
    start, end = _instant(from_, "--from"), _instant(to, "--to")
    _services()
    # lazy: see the module docstring
    from ledger.db import connection, in_transaction
    from ledger.statement_csv import statement_csv
    from ledger.statements import statement

    with connection() as conn:
        try:
            doc = in_transaction(conn, lambda c: statement(c, account, start, end))
        except LedgerError as exc:
            _fail(exc.message)
    text = statement_csv(doc) if format == "csv" else json.dumps(doc, indent=2)
    if out:
        out.write_text(text)
        typer.echo(
            f"wrote {doc['entry_count']} entries for {account} to {out} (opening {doc['opening_balance']}, "
            f"closing {doc['closing_balance']})"
        )
    else:
        typer.echo(text)


statement_app = typer.Typer(help="Account statements.")
statement_app.command("statement")(statement)
