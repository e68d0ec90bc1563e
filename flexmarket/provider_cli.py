"""`flexmarket provider …`: a data centre onboards itself (README "Onboarding a data centre").

`init` writes a provider file to fill in, `validate` checks it and shows what the data centre would offer over
the next 48 h, `join` / `leave` add it to or withdraw it from a running BPP platform through the BPP's admin
API (bpp/admin.py), `own-platform` writes the providers file of a BPP platform of its own, and `admin-token`
makes a token for a BPP's admin API.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from kernel import clock

provider_app = typer.Typer(
    help="A data centre onboards itself: provider file, validation, joining a BPP platform.", no_args_is_help=True
)
console = Console()
err = Console(stderr=True)

EXIT_INVALID = 2  # the provider file (or what the BPP was sent) is invalid; the message names the field


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        err.print(f"[red]cannot read {path}[/]: {exc.strerror}")
    except ValueError as exc:
        err.print(f"[red]{path} is not JSON[/]: {exc}")
    raise typer.Exit(EXIT_INVALID)


@provider_app.command("init")
def init(
    file: Annotated[Path, typer.Argument(help="where to write the provider file")] = Path("provider.json"),
    provider_id: Annotated[str, typer.Option("--id", help="the provider's id (printable, no spaces)")] = "my-dc",
    region: Annotated[str, typer.Option(help="the site's NESO region code")] = "GB-R13",
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing file")] = False,
) -> None:
    """Write a provider file to fill in: sites, job mix, battery, control actions, objective, pricing margin."""
    from bpp.provider_file import check_provider, provider_template

    template = provider_template(provider_id, region=region)
    problems = check_provider(template)
    if problems:
        err.print(f"[red]--id / --region give an invalid file[/]: {problems[0]}")
        raise typer.Exit(EXIT_INVALID)
    if file.exists() and not force:
        err.print(f"[red]{file} exists[/]; pass --force to overwrite it")
        raise typer.Exit(1)
    file.write_text(json.dumps(template, indent=2) + "\n", encoding="utf-8")
    console.print(f"[green]wrote {file}[/] — fill it in (README 'Onboarding a data centre'), then:")
    console.print(f"  flexmarket provider validate {file}")


@provider_app.command("validate")
def validate(
    file: Annotated[Path, typer.Argument(help="the provider file")],
    data_dir: Annotated[Path | None, typer.Option(help="grid data folder (default: the project's / ../shared)")] = None,
) -> None:
    """Check a provider file (each problem names its field; exit 2) and show the offers its plan for the next
    48 h would publish: kW per window and price."""
    from bpp.provider_file import ProviderFileError, parse_provider

    try:
        provider = parse_provider(_read(file))
    except ProviderFileError as exc:
        err.print(f"[bold red]{len(exc.errors)} problem(s)[/] in {file}")
        table = Table("field", "problem")
        table.columns[0].no_wrap = True
        for e in exc.errors:
            table.add_row(e.field, e.message)
        err.print(table)
        raise typer.Exit(EXIT_INVALID) from None
    offers = _planned_offers(provider, data_dir)
    console.print(_offers_table(provider.id, offers))
    largest_kw = max((o.available_kw for o in offers), default=0.0)
    console.print(
        f"[green]{file} is valid[/]: {len(offers)} offer(s), the largest {largest_kw:g} kW. "
        f"Join a BPP platform with: flexmarket provider join {file} --bpp URL"
    )


def _planned_offers(provider: Any, data_dir: Path | None) -> list[Any]:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from bpp import agent_service

    if provider.agent is None:
        return list(provider.offers)
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err, transient=True
    ) as progress:
        progress.add_task("planning the next 48 h (job mix, signals, MILP)…", total=None)
        try:
            return agent_service.preview(provider, clock.now(), data_dir)
        except (KeyError, TypeError, ValueError, OSError) as exc:
            err.print(f"[red]agent: the planner cannot use this config[/]: {exc}")
            raise typer.Exit(EXIT_INVALID) from None


def _offers_table(provider_id: str, offers: list[Any]) -> Table:
    table = Table(title=f"What {provider_id} would offer", title_style="bold")
    for col in ("window (UTC)", "site", "type", "kW available", "kW min–max", "£/MWh"):
        table.add_column(col, justify="right" if col.startswith(("kW", "£")) else "left", no_wrap=col != "site")
    for o in sorted(offers, key=lambda o: (o.window_start, o.location_id)):
        table.add_row(
            f"{o.window_start:%d %b %H:%M}–{o.window_end:%H:%M}",
            o.location_id,
            o.resource_type,
            f"{o.available_kw:,.1f}",
            f"{o.min_kw:,.1f}–{o.max_kw:,.1f}",
            f"{o.price_gbp_per_mwh:,.2f}",
        )
    return table


def _token(token: str | None) -> str:
    from kernel.config import get_settings

    found = token or get_settings().bpp_admin_token
    if not found:
        err.print(
            "[red]no admin token[/]: pass --token or set FLEXMARKET_BPP_ADMIN_TOKEN (`up` manifest: bpp.admin_token)"
        )
        raise typer.Exit(1)
    return found


def _admin_call(method: str, url: str, token: str, body: Any = None) -> Any:
    import httpx

    try:
        r = httpx.request(method, url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=120)
    except httpx.HTTPError as exc:
        err.print(f"[red]cannot reach the BPP[/] at {url}: {exc}")
        raise typer.Exit(1) from None
    if r.status_code >= 400:
        try:
            message = r.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = r.text
        err.print(f"[red]the BPP refused ({r.status_code})[/]: {message}")
        raise typer.Exit(EXIT_INVALID if r.status_code in (400, 422) else 1)
    return r.json()


BppOption = Annotated[str, typer.Option("--bpp", help="the BPP's base URL, e.g. http://127.0.0.1:8004")]
PlatformOption = Annotated[str, typer.Option("--platform", help="the hosting platform's slug")]
TokenOption = Annotated[str | None, typer.Option(help="admin token (default: FLEXMARKET_BPP_ADMIN_TOKEN)")]


@provider_app.command("join")
def join(
    file: Annotated[Path, typer.Argument(help="the provider file")],
    bpp: BppOption,
    platform: PlatformOption = "dc-platform",
    token: TokenOption = None,
) -> None:
    """Add the provider to a running BPP platform: its agent plans at once and its offers are in the next search."""
    data = _read(file)
    answer = _admin_call("POST", f"{bpp.rstrip('/')}/admin/{platform}/providers", _token(token), data)
    console.print(_offers_table(answer["provider_id"], [_Summary(o) for o in answer["offers"]]))
    console.print(f"[green]{answer['provider_id']} joined {platform}[/] with {len(answer['offers'])} offer(s)")


class _Summary:
    """An offer as the admin API returns it, read like a FlexOfferSpec for the table."""

    def __init__(self, o: dict[str, Any]) -> None:
        from datetime import datetime

        self.window_start = datetime.fromisoformat(o["window_start"])
        self.window_end = datetime.fromisoformat(o["window_end"])
        self.location_id, self.resource_type = o["location_id"], o["resource_type"]
        self.available_kw, self.price_gbp_per_mwh = o["available_kw"], o["price_gbp_per_mwh"]
        self.min_kw, self.max_kw = o.get("min_kw", 0.0), o.get("max_kw", o["available_kw"])


@provider_app.command("leave")
def leave(
    provider_id: Annotated[str, typer.Argument(help="the provider's id")],
    bpp: BppOption,
    platform: PlatformOption = "dc-platform",
    token: TokenOption = None,
) -> None:
    """Withdraw a joined provider's offers; its open orders stay and settle."""
    answer = _admin_call("DELETE", f"{bpp.rstrip('/')}/admin/{platform}/providers/{provider_id}", _token(token))
    console.print(
        f"[green]{provider_id} left {platform}[/]: {answer['withdrawn_offers']} offer(s) withdrawn, "
        f"{answer['open_orders']} open order(s) stay and settle"
    )


@provider_app.command("own-platform")
def own_platform(
    file: Annotated[Path, typer.Argument(help="the provider file")],
    subscriber_id: Annotated[str, typer.Option(help="the platform's Beckn subscriber id, e.g. bpp.my-dc.example")],
    out: Annotated[Path, typer.Option(help="the providers file to write")] = Path("providers.json"),
    slug: Annotated[str, typer.Option(help="the platform's URL path segment")] = "platform",
    city: Annotated[str, typer.Option(help="the city (region) code the platform serves")] = "GB-R13",
) -> None:
    """Write the providers file of a BPP platform of the data centre's own, to run with `flexmarket serve bpp`
    (it subscribes with its own keys through the registry's /subscribe: README "Running your own platform")."""
    from bpp.catalog import CatalogConfigError, parse_config
    from bpp.provider_file import ProviderFileError, parse_provider, without_notes

    data = _read(file)
    try:
        parse_provider(data)
        config = {
            "platforms": [
                {
                    "subscriber_id": subscriber_id,
                    "slug": slug,
                    "name": str(data.get("name") or slug),
                    "city_codes": [city],
                    "providers": [without_notes(data)],
                }
            ]
        }
        parse_config(config)
    except (ProviderFileError, CatalogConfigError) as exc:
        err.print(f"[red]{file}[/]: {exc}")
        raise typer.Exit(EXIT_INVALID) from None
    out.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    console.print(f"[green]wrote {out}[/]; start the platform with (README 'Running your own platform'):")
    console.print(
        f"  FLEXMARKET_PROVIDERS_FILE={out} FLEXMARKET_SUBSCRIBER_URL=https://<public base URL> "
        "FLEXMARKET_AUTO_SUBSCRIBE=true FLEXMARKET_REGISTRY_URL=<registry> flexmarket serve bpp"
    )


@provider_app.command("admin-token")
def admin_token() -> None:
    """Print a new random admin token: set it as FLEXMARKET_BPP_ADMIN_TOKEN on the BPP and give it to `join`."""
    typer.echo(secrets.token_urlsafe(32))
