"""The `flexmarket` command line (typer + rich). Every command is documented in README.md.

Imports of the participants, the database and Celery sit inside the commands on purpose: `flexmarket
--help` and each command load only what that command needs (importing every participant, SQLAlchemy's
models, Celery and the scheduler's numeric stack up front takes seconds).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from flexmarket.provider_cli import provider_app
from kernel import clock

app = typer.Typer(
    help="flexmarket: a Beckn flexibility marketplace with a hash-chained settlement ledger.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
console = Console()

db_app = typer.Typer(help="Database migrations (alembic).", no_args_is_help=True)
registry_app = typer.Typer(help="Registry operator commands (onboarding, approval).", no_args_is_help=True)
bap_app = typer.Typer(help="BAP operator commands (client API keys).", no_args_is_help=True)
bap_apikey_app = typer.Typer(help="API keys of the BAP's client API (/api/v1).", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(registry_app, name="registry")
app.add_typer(bap_app, name="bap")
bap_app.add_typer(bap_apikey_app, name="apikey")
app.add_typer(provider_app, name="provider")

APPS = {
    "registry": "registry.main:create_app",
    "gateway": "gateway.main:create_app",
    "bap": "bap.main:create_app",
    "bpp": "bpp.main:create_app",
    "ledger": "ledger.main:create_app",
}


def _services(*, redis: bool = True) -> None:
    """DATABASE_URL (and REDIS_URL unless `redis=False`: commands that need only PostgreSQL), or embedded servers."""
    from kernel.embedded import ensure_services
    from kernel.logging import configure_logging

    configure_logging()
    ensure_services(redis=redis)


# -- database --------------------------------------------------------------------------------------
@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head")) -> None:
    """Migrate the database (DATABASE_URL, or the embedded server) up to REVISION."""
    from kernel import db

    _services(redis=False)
    db.upgrade(revision=revision)
    console.print(f"database at {revision}")


@db_app.command("downgrade")
def db_downgrade(revision: str = typer.Argument("base")) -> None:
    """Migrate the database down to REVISION (default: base, i.e. drop everything)."""
    from kernel import db

    _services(redis=False)
    db.downgrade(revision=revision)
    console.print(f"database at {revision}")


# -- processes -------------------------------------------------------------------------------------
@app.command()
def serve(
    participant: Annotated[str, typer.Argument(help="registry | gateway | bap | bpp | ledger")],
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
) -> None:
    """Run one participant's HTTP service (uvicorn)."""
    import uvicorn

    if participant not in APPS:
        raise typer.BadParameter(f"participant must be one of {', '.join(APPS)}")
    _services()
    os.environ["FLEXMARKET_PARTICIPANT"] = participant
    from flexmarket.lifeline import watch_parent

    watch_parent()  # started by `up`: go when it goes, even if it was SIGKILLed
    from beckn.webapp import served_app

    uvicorn.run(
        functools.partial(served_app, APPS[participant]),
        factory=True,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
        # Longer than any Retry-After we answer: a client that waits as told and reuses its connection must not
        # meet a server that has just closed it (uvicorn's default of 5 s made that race under load).
        timeout_keep_alive=75,
    )


@app.command()
def worker(
    participants: Annotated[
        str, typer.Option(help="comma-separated queues to consume: registry,gateway,bap,bpp,ledger (default all)")
    ] = "all",
    concurrency: Annotated[int, typer.Option(help="worker threads")] = 16,
    beat: Annotated[bool, typer.Option(help="also run the periodic scheduler (only ONE process may)")] = False,
    hostname: Annotated[str | None, typer.Option(help="Celery node name (unique per worker)")] = None,
) -> None:
    """Run a Celery worker. Start as many as you like, on as many hosts as you like, against the same
    Redis and PostgreSQL: tasks carry ids and read their state from the database."""
    os.environ.setdefault("FLEXMARKET_DB_POOL_SIZE", str(concurrency))  # one connection per worker thread
    _services()
    from flexmarket.lifeline import watch_parent
    from kernel.celery_app import PARTICIPANT_QUEUES, celery_app, queue_for

    watch_parent()  # started by `up`: go when it goes, even if it was SIGKILLed

    chosen = PARTICIPANT_QUEUES if participants == "all" else tuple(p.strip() for p in participants.split(","))
    unknown = set(chosen) - set(PARTICIPANT_QUEUES)
    if unknown:
        raise typer.BadParameter(f"unknown participants: {', '.join(sorted(unknown))}")
    queues = [queue_for(None)] + [queue_for(p) for p in chosen]
    argv = [
        "worker",
        "--pool",
        "threads",
        "--concurrency",
        str(concurrency),
        "-Q",
        ",".join(queues),
        "--loglevel",
        os.environ.get("FLEXMARKET_LOG_LEVEL", "INFO"),
        "--without-mingle",
        "--without-gossip",
    ]
    if beat:
        argv += ["--beat", "--schedule", str(Path(os.environ.get("FLEXMARKET_HOME", ".flexmarket")) / "celerybeat")]
    if hostname:
        argv += ["--hostname", hostname]
    celery_app.worker_main(argv)


@app.command()
def beat() -> None:
    """Run Celery beat on its own (outbox sweeps, order transitions, ledger checkpoints, CFT expiry)."""
    _services()
    from kernel.celery_app import celery_app

    home = Path(os.environ.get("FLEXMARKET_HOME", ".flexmarket"))
    home.mkdir(parents=True, exist_ok=True)
    celery_app.start(["beat", "--schedule", str(home / "celerybeat"), "--loglevel", "INFO"])


@app.command()
def ven() -> None:
    """Run the OpenADR 2.0b VEN (one per deployment): hears FLEXMARKET_OPENADR_VTN_URL's events and hands
    them to the BAP's procurement API (FLEXMARKET_VEN_BAP_URL, key FLEXMARKET_VEN_API_KEY)."""
    from kernel.config import get_settings
    from kernel.logging import configure_logging

    settings = get_settings()
    if not settings.openadr_vtn_url:
        console.print("[red]FLEXMARKET_OPENADR_VTN_URL is not set[/]: there is no VTN to register with")
        raise typer.Exit(2)
    if not settings.ven_api_key:
        console.print("[red]FLEXMARKET_VEN_API_KEY is not set[/]: the VEN needs a BAP client API key")
        raise typer.Exit(2)
    from bap.ven import HttpProcurementSink, run_ven
    from flexmarket.lifeline import watch_parent

    watch_parent()  # under `flexmarket up`: end with it, even if it is killed
    configure_logging()
    sink = HttpProcurementSink(settings.ven_bap_url, settings.ven_api_key)
    # `flexmarket up` reads readiness from this line (flexmarket/runner.py `_worker_ready`)
    # one unwrapped line, flushed: under `flexmarket up` stdout is a file (block-buffered, and rich would wrap)
    print(f"VEN {settings.openadr_ven_name} for {settings.openadr_vtn_url} ready.", flush=True)
    try:
        run_ven(settings, sink)
    except KeyboardInterrupt:
        pass
    finally:
        sink.close()


@app.command()
def up(
    providers: Annotated[int, typer.Option(help="number of data-centre providers the BPP hosts")] = 3,
    base_port: Annotated[int, typer.Option(help="registry on P, gateway P+1, BAP P+2, BPP P+3, ledger P+4")] = 8000,
    manifest: Annotated[Path, typer.Option(help="where to write the JSON manifest")] = Path("flexmarket-manifest.json"),
    platforms: Annotated[int, typer.Option(help="spread the providers over this many BPP subscribers")] = 1,
    providers_file: Annotated[Path | None, typer.Option(help="catalog file (default: generated)")] = None,
) -> None:
    """Start registry, gateway, BAP, BPP, ledger and a Celery worker on loopback; run until interrupted."""
    from flexmarket.runner import prepare_network
    from kernel.config import get_settings

    _services()
    net = prepare_network(
        home=get_settings().home,
        base_port=base_port,
        providers=providers,
        platforms=platforms,
        providers_file=providers_file,
    )
    with console.status("starting processes…"):
        net.start()
    # The manifest holds the ledger API keys (README "Ledger API keys"): readable by this user only.
    fd = os.open(manifest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(net.manifest, indent=2))
    console.print(f"[bold green]flexmarket is up[/] — {providers} providers; manifest: {manifest}")
    for name, info in net.manifest["participants"].items():
        console.print(f"  {name:9s} {info['base_url']}")
    console.print(f"  API docs  {net.manifest['participants']['bap']['docs']}\n  logs      {net.manifest['logs']}")
    console.print(
        f"  dashboard {net.manifest['participants']['bap']['base_url']}/dashboard — log in with the operator or "
        "viewer key under participants.bap.api_keys in the manifest"
    )
    stop = {"now": False}

    def _stop(*_: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stop["now"]:
            dead = [n for n, p in net.processes.items() if not p.alive() and p.health_url]  # workers: restarted
            if dead:
                console.print(f"[red]{', '.join(dead)} exited[/]; see {net.manifest['logs']}")
                break
            time.sleep(0.5)
    finally:
        with console.status("stopping…"):
            net.stop()


@app.command()
def window(
    days_ahead: Annotated[int, typer.Option(help="which day: 0 today, 1 tomorrow, … (UTC, market clock)")] = 1,
    at: Annotated[str, typer.Option(help="start time of day, HH:MM UTC")] = "16:00",
    hours: Annotated[float, typer.Option(help="length of the window in hours")] = 2.0,
    manifest: Annotated[
        Path | None,
        typer.Option(
            exists=True, dir_okay=False, help="read the market clock of the network `up` started (its manifest)"
        ),
    ] = None,
) -> None:
    """Print a window start and end the market accepts now, ISO 8601 UTC, separated by a space: by default
    tomorrow 16:00–18:00 UTC, inside the evening peak the generated catalog offers."""
    from datetime import UTC, datetime

    from kernel.config import get_settings
    from schemas import limits

    market = clock.current()
    if manifest is not None:
        pinned = json.loads(manifest.read_text()).get("clock") or {}
        if pinned.get("FLEXMARKET_CLOCK_START"):  # `up` ran on a simulated clock: read that one
            market = clock.SimulatedClock(
                start=datetime.fromisoformat(pinned["FLEXMARKET_CLOCK_START"].replace("Z", "+00:00")),
                anchor=datetime.fromisoformat(pinned["FLEXMARKET_CLOCK_ANCHOR"].replace("Z", "+00:00")),
                speed=float(pinned.get("FLEXMARKET_CLOCK_SPEED", 1)),
            )
    try:
        hh, mm = (int(x) for x in at.split(":"))
        now = market.now().astimezone(UTC)
        start = (now + timedelta(days=days_ahead)).replace(hour=hh, minute=mm, second=0, microsecond=0)
        end = start + timedelta(hours=hours)
    except ValueError as exc:
        raise typer.BadParameter(f"--at must be HH:MM and --hours a number of hours: {exc}") from exc
    refused = limits.check_market_window(start, end, now, get_settings().max_window_ahead_days)
    if refused:
        typer.echo(f"refused: {start:%Y-%m-%dT%H:%M:%SZ}–{end:%Y-%m-%dT%H:%M:%SZ}: {refused[0]} {refused[1]}", err=True)
        raise typer.Exit(2)
    typer.echo(f"{start:%Y-%m-%dT%H:%M:%SZ} {end:%Y-%m-%dT%H:%M:%SZ}")


def _manifest_env(manifest: Path) -> dict[str, str]:
    """The settings that reach a network `up` started, from its manifest: database, home, clock, ledger, BAP."""
    m = json.loads(manifest.read_text())
    parts = m["participants"]
    env = {
        "DATABASE_URL": m["database_url"],
        "FLEXMARKET_HOME": m["home"],
        "FLEXMARKET_BAP_SUBSCRIBER_ID": parts["bap"]["subscriber_id"],
        **{k: str(v) for k, v in (m.get("clock") or {}).items() if k.startswith("FLEXMARKET_CLOCK_")},
    }
    if "ledger" in parts:
        env.update(
            FLEXMARKET_LEDGER_URL=parts["ledger"]["base_url"],
            FLEXMARKET_LEDGER_API_KEY=parts["ledger"]["api_keys"]["bap"],
        )
    return env


@app.command()
def reconcile(
    manifest: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="reconcile the network `up` started (its manifest)"),
    ] = None,
    transaction_id: Annotated[str | None, typer.Option(help="only this transaction's orders")] = None,
) -> None:
    """Compare every order across the BAP's, the BPP's and the ledger's books and print each difference (kept
    as an alert too). Exit code 0 when they agree, 1 when any differs or a book cannot be read, 2 when no BAP
    is named. Without --manifest the BAP's settings come from the environment."""
    from rich.table import Table

    from kernel.config import environment

    with environment(_manifest_env(manifest) if manifest else {}):
        _services(redis=False)
        from bap import reconcile as books

        try:
            report = books.run(books.worker_identity(), transaction_id=transaction_id)
        except books.ReconcileError as exc:
            console.print(f"[red]{exc}[/]")
            raise typer.Exit(2) from exc
    for line in report.unreadable:
        console.print(f"[red]unreadable:[/] {line}")
    if report.differences:
        columns = ("order_id", "transaction_id", "kind", "bap", "bpp", "ledger")
        table = Table(*columns, title="differences between the books")
        for d in report.as_json()["differences"]:
            table.add_row(*("–" if d[k] is None else str(d[k]) for k in columns))
        console.print(table)
    console.print(f"{report.checked_orders} orders compared, {len(report.differences)} differences")
    raise typer.Exit(0 if report.clean else 1)


@app.command()
def demo(
    date: Annotated[str, typer.Option("--date", help="the GB day to replay (YYYY-MM-DD)")] = "2023-01-24",
    providers: Annotated[int, typer.Option(help="data centres (3–7), each a BPP platform of its own")] = 5,
    out: Annotated[Path | None, typer.Option(help="output folder (default: $FLEXMARKET_HOME/demo/<run>)")] = None,
    seed: Annotated[int, typer.Option(help="job mixes and meter noise: the same seed gives the same figures")] = 7,
    jobs_per_site: Annotated[int, typer.Option(help="jobs in each data centre's mix", min=10, max=600)] = 120,
    base_port: Annotated[int | None, typer.Option(help="first port (default: a free range)")] = None,
) -> None:
    """Replay a real GB grid peak day on the whole marketplace: onboarding, tokens, a DR event from a VTN,
    procurement with a provider going silent, delivery, P415 settlement, statements; writes a report."""
    from datetime import date as Date

    from flexmarket.demo import DemoOptions, run_demo
    from flexmarket.demo_config import fleet, replayable

    try:
        day = Date.fromisoformat(date)
    except ValueError:
        raise typer.BadParameter(f"{date!r} is not a date (YYYY-MM-DD)", param_hint="--date") from None
    try:
        fleet(providers)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--providers") from None
    refused = replayable(day)
    if refused:
        raise typer.BadParameter(refused, param_hint="--date")
    _services()
    options = DemoOptions(
        day=day, providers=providers, seed=seed, jobs_per_site=jobs_per_site, out=out, base_port=base_port
    )
    raise typer.Exit(run_demo(console, options))


# -- registry operator -----------------------------------------------------------------------------
@registry_app.command("add")
def registry_add(
    *,
    subscriber_id: Annotated[str, typer.Option("--subscriber-id", help="e.g. dc-north.bpp.example.com")],
    type: Annotated[str, typer.Option("--type", help="BAP | BPP | BG")],
    url: Annotated[str, typer.Option("--url", help="the subscriber's Beckn base URL")],
    signing_public_key: Annotated[str, typer.Option("--signing-public-key", help="Ed25519 public key, base64")],
    domain: Annotated[str, typer.Option("--domain")] = "deg:flexibility",
    city: Annotated[list[str] | None, typer.Option("--city", help="region/city code; repeat for several")] = None,
    country: Annotated[str, typer.Option("--country")] = "GBR",
    key_id: Annotated[str | None, typer.Option("--key-id", help="unique key id (default: a new UUID)")] = None,
    encr_public_key: Annotated[str | None, typer.Option("--encr-public-key")] = None,
    valid_days: Annotated[int, typer.Option("--valid-days", help="key validity")] = 365,
) -> None:
    """Onboard a participant as the registry operator: it is SUBSCRIBED at once."""

    from kernel.db import session_scope
    from registry import service

    _services(redis=False)
    from kernel import db

    db.upgrade()
    now = clock.now()
    key_id = key_id or str(uuid.uuid4())
    try:
        with session_scope("registry") as s:
            service.upsert(
                s,
                service.NewSubscriber(
                    subscriber_id=subscriber_id,
                    type=type.upper(),
                    url=url,
                    domain=domain,
                    cities=city or [],
                    country_code=country,
                    unique_key_id=key_id,
                    signing_public_key=signing_public_key,
                    encr_public_key=encr_public_key,
                    valid_from=now,
                    valid_until=now + timedelta(days=valid_days),
                ),
                status="SUBSCRIBED",
            )
    except service.RegistryRequestError as exc:
        console.print(f"[red]refused:[/] {exc}")
        raise typer.Exit(2) from exc
    console.print(f"{subscriber_id} SUBSCRIBED as {type.upper()} with key {key_id}")


@registry_app.command("approve")
def registry_approve(subscriber_id: Annotated[str, typer.Option("--subscriber-id")]) -> None:
    """Approve a subscription that arrived through /subscribe (UNDER_SUBSCRIPTION → SUBSCRIBED)."""
    from kernel.db import session_scope
    from registry import service

    _services(redis=False)
    try:
        with session_scope("registry") as s:
            service.approve(s, subscriber_id)
    except service.RegistryRequestError as exc:
        console.print(f"[red]refused:[/] {exc}")
        raise typer.Exit(2) from exc
    console.print(f"{subscriber_id} SUBSCRIBED")


@registry_app.command("list")
def registry_list() -> None:
    """Every subscriber with its status, coverage and keys."""
    from rich.table import Table

    from kernel.db import session_scope
    from registry import service

    _services(redis=False)
    table = Table("subscriber", "type", "status", "url", "coverage", "keys")
    with session_scope("registry") as s:
        for sub in service.list_subscribers(s):
            table.add_row(
                sub.subscriber_id,
                sub.type,
                sub.status,
                sub.url,
                ", ".join(f"{c.domain}@{c.city_code}/{c.country_code}" for c in sub.coverage),
                ", ".join(f"{k.unique_key_id[:8]}…({k.status})" for k in sub.keys),
            )
    console.print(table)


@registry_app.command("operator-token")
def registry_operator_token() -> None:
    """Print the operator token (approves /subscribe requests over HTTP)."""
    from registry import service

    typer.echo(service.operator_token())


# -- BAP client API keys (bap/auth.py; PostgreSQL only) ---------------------------------------------------
@bap_apikey_app.command("create")
def bap_apikey_create(
    role: Annotated[str, typer.Option(help="operator | aggregator | viewer")],
    aggregator: Annotated[str | None, typer.Option(help="the aggregator id an aggregator key acts for")] = None,
    label: Annotated[str, typer.Option(help="a note for `apikey list`, e.g. who holds it")] = "",
) -> None:
    """Create a key and print it: it is shown this once (only its SHA-256 is stored)."""
    from bap import auth
    from bap.permissions import Role
    from kernel.db import session_scope

    try:
        chosen = Role(role)
    except ValueError:
        raise typer.BadParameter(f"one of {', '.join(r.value for r in Role)}", param_hint="--role") from None
    _services(redis=False)
    try:
        with session_scope("bap") as s:
            token = auth.create_api_key(s, chosen, aggregator_id=aggregator, label=label)
    except auth.KeyRequestError as exc:
        console.print(f"[red]refused:[/] {exc}")
        raise typer.Exit(2) from exc
    typer.echo(token)


@bap_apikey_app.command("list")
def bap_apikey_list(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Every key (id, role, aggregator, label, created, revoked), never a secret."""
    from rich.table import Table

    from bap import auth
    from kernel.db import session_scope

    _services(redis=False)
    with session_scope("bap") as s:
        keys = auth.list_api_keys(s)
    if as_json:
        typer.echo(json.dumps(keys, indent=2))
        return
    table = Table("key id", "role", "aggregator", "label", "created", "revoked")
    for k in keys:
        cells = (k["key_id"], k["role"], k["aggregator_id"], k["label"], k["created_at"], k["revoked_at"])
        table.add_row(*(c or "" for c in cells))
    console.print(table)


@bap_apikey_app.command("revoke")
def bap_apikey_revoke(key_id: Annotated[str, typer.Argument(help="the key id (the part after fmb_)")]) -> None:
    """Revoke a key: its next request is refused (401)."""
    from bap import auth
    from kernel.db import session_scope

    _services(redis=False)
    with session_scope("bap") as s:
        revoked = auth.revoke_api_key(s, key_id)
    if not revoked:
        console.print(f"[red]no active key {key_id}[/]")
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")


# -- ledger (ledger/cli.py) ------------------------------------------------------------------------
def _mount_ledger() -> None:
    from ledger.cli import ledger_app, metering_app, statement

    app.add_typer(ledger_app, name="ledger")
    app.add_typer(metering_app, name="metering")
    app.command("statement")(statement)


_mount_ledger()


def main() -> None:
    app()
