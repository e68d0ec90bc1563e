"""`flexmarket demo`: a whole marketplace on loopback and one load-reduction purchase walked through it.

1. registry, gateway, BAP, BPP (providers whose catalogs their compute agents derive from their own
   optimal schedules on real GB signals and a real job mix), ledger and a Celery worker start;
2. the grid orchestrator searches tomorrow for flexibility, picks the two-hour window with the most
   on offer and the cheapest set of offers meeting its target, then select → init → confirm → status;
3. the ledger settles the confirmed orders P415-style on synthesised half-hourly metering, writes each
   provider's statement and verifies the whole hash chain.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from bap.client import BapClient, order_in, order_of
from bpp.catalog import example_config
from flexmarket.runner import prepare_network
from grid.money import pence_to_gbp_str
from kernel import clock, db
from kernel.config import environment, get_settings
from kernel.embedded import free_port_range
from ledger import db as ledger_db
from ledger.demo import DemoOrder, settle_demo_orders

GATE_CLOSURE = timedelta(hours=1)  # ../shared/reference/market/p415-settlement.md rule 2


def best_window(offers: list[dict[str, Any]], not_before: datetime) -> tuple[datetime, datetime, float]:
    """The offer window (start, end) with the most kW on offer that starts after gate closure."""
    total: dict[tuple[str, str], float] = defaultdict(float)
    for o in offers:
        if datetime.fromisoformat(o["window_start"]) >= not_before:
            total[(o["window_start"], o["window_end"])] += o["max_kw"] or o["available_kw"]
    if not total:
        raise RuntimeError("no offer starts after gate closure")
    (a, b), kw = max(total.items(), key=lambda kv: (kv[1], kv[0]))
    return datetime.fromisoformat(a), datetime.fromisoformat(b), kw


@contextmanager
def fresh_state(run_home: Path) -> Iterator[str]:
    """One demo's own state: a new database on the server of DATABASE_URL (dropped afterwards), `run_home` as
    FLEXMARKET_HOME (identities, keys, checkpoints, logs) and a Celery queue of its own, so a demo never sees
    an earlier one's orders, metering or tasks. Yields the database URL."""
    settings = get_settings()
    server = settings.database_url
    if not server:
        raise RuntimeError("the demo needs DATABASE_URL (the CLI's ensure_services() sets it)")
    url = db.create_database(server, "fm_demo")
    values = {
        "DATABASE_URL": url,
        "FLEXMARKET_HOME": str(run_home),
        "FLEXMARKET_CELERY_QUEUE": f"{settings.celery_queue}-demo-{uuid.uuid4().hex[:8]}",
    }
    db.dispose_engines()
    try:
        with environment(values):
            yield url
    finally:
        db.drop_database(server, url)  # disposes this process's engines first


def run_demo(console: Console, *, providers: int, target_kw: float, base_port: int | None, out: Path | None) -> int:
    """One demo on fresh state of its own (`fresh_state`) under $FLEXMARKET_HOME/demo/<run>/; outputs go to
    `out` (default: that folder)."""
    run = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    run_home = (get_settings().home / "demo" / run).resolve()
    out = (out or run_home).resolve()
    with fresh_state(run_home):
        return _run_demo(console, providers=providers, target_kw=target_kw, base_port=base_port, out=out)


def _run_demo(console: Console, *, providers: int, target_kw: float, base_port: int | None, out: Path) -> int:
    settings = get_settings()
    home = settings.home.resolve()
    out.mkdir(parents=True, exist_ok=True)
    providers_file = home / "demo-providers.json"
    home.mkdir(parents=True, exist_ok=True)
    providers_file.write_text(json.dumps(example_config(providers, agents=True), indent=2))
    net = prepare_network(home=home, base_port=base_port or free_port_range(5), providers_file=providers_file)
    platform = net.manifest["participants"]["bpp"]["platforms"][0]
    sites = {
        s["id"]: s for p in json.loads(providers_file.read_text())["platforms"][0]["providers"] for s in p["sites"]
    }
    steps = ["start", "search", "plan", "select", "init", "confirm", "status", "settle"]
    try:
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress:
            task = progress.add_task(
                "starting registry, gateway, BAP, BPP (agents planning), ledger, worker…", total=len(steps)
            )
            net.start(timeout=240)
            progress.advance(task)
            bap = BapClient(net.url("bap"), net.manifest["participants"]["bap"]["api_keys"]["aggregator"])
            day = (clock.now() + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
            progress.update(task, description="search: the gateway fans out, the BPP answers from its agents' plans")
            tx = bap.search(day, day + timedelta(days=1), target_kw, region=settings.city_code)["transaction_id"]
            view = bap.wait(
                tx,
                lambda v: (
                    len({o["provider_id"] for o in v["offers"]}) >= min(providers, 3)
                    and any(c["action"] == "on_search" for c in v["callbacks"])
                ),
                timeout=60,
            )
            progress.advance(task)
            progress.update(task, description="plan: the cheapest set of offers meeting the target")
            start, end, on_offer = best_window(view["offers"], clock.now() + GATE_CLOSURE + timedelta(minutes=30))
            wanted = min(target_kw, round(0.8 * on_offer, -1))
            choices = bap.plan(tx, wanted, window_start=start, window_end=end)["choices"]
            progress.advance(task)
            for action, states in [
                ("select", ("QUOTED",)),
                ("init", ("CREATED",)),
                ("confirm", ("ACCEPTED",)),
                ("status", ("ACCEPTED", "IN-PROGRESS")),
            ]:
                progress.update(task, description=f"{action} × {len(choices)}")
                for c in choices:
                    bap.order_choice(action, tx, c, start, end)
                for c in choices:
                    view = bap.wait(tx, order_in(c["provider_id"], *states), timeout=60)
                    o = order_of(view, c["provider_id"])
                    if o and o["last_error"]:
                        console.print(f"[red]{action} refused by {c['provider_id']}:[/] {o['last_error']}")
                        return 1
                progress.advance(task)
            view = bap.transaction(tx)
            progress.update(task, description="settle: P415 settlement, statements, chain verification")
            settlement = _settle(view, sites, out)
            progress.advance(task)
        _print(console, view, target_kw=target_kw, wanted=wanted, start=start, end=end)
        _print_decisions(console, platform["url"])
        _print_settlement(console, settlement)
        (out / "transaction.json").write_text(json.dumps(view, indent=2))
        (out / "settlement.json").write_text(json.dumps(_summary(settlement), indent=2))
        console.print(f"outputs: {out}   logs: {net.manifest['logs']}")
        return 0 if settlement.verify_ok else 1
    finally:
        net.stop()


def _settle(view: dict[str, Any], sites: dict[str, Any], out: Path) -> Any:
    orders = []
    for o in view["orders"]:
        if o["state"] != "ACCEPTED":
            continue
        site = next(s for s in sites.values() if s["meter_id"] == o["meter_id"])
        orders.append(
            DemoOrder(
                order_id=o["order_id"],
                provider_id=o["provider_id"],
                bap_id="grid-orchestrator",
                meter_id=o["meter_id"],
                window_start=datetime.fromisoformat(o["window_start"]),
                window_end=datetime.fromisoformat(o["window_end"]),
                contracted_kw=o["power_kw"],
                price_gbp_per_mwh=o["price_gbp_per_mwh"],
                baseline_kw=site["baseline_kw"],
            )
        )
    _await_registration([o.order_id for o in orders])
    return settle_demo_orders(None, orders, out / "statements", seed=7)


def _await_registration(order_ids: list[str], timeout_s: float = 60.0) -> None:
    """Wait until the ledger holds every order: the BAP registers what it confirms, with the signed confirm and
    on_confirm (bap/ledger_registration.py `ledger_process`), so the demo settles exactly what both parties
    signed."""
    deadline = time.monotonic() + timeout_s
    while True:
        with ledger_db.connection() as conn:
            held = {
                r[0] for r in conn.execute("SELECT order_id FROM ledger.orders WHERE order_id = ANY(%s)", (order_ids,))
            }
        missing = sorted(set(order_ids) - held)
        if not missing:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the BAP has not registered {', '.join(missing)} with the ledger within {timeout_s:g} s"
            )
        time.sleep(0.5)


def _summary(s: Any) -> dict[str, Any]:
    """settlement.json: what the demo's ledger settled, and every order it holds (only this demo's)."""
    with ledger_db.connection() as conn:
        held = sorted(r[0] for r in conn.execute("SELECT order_id FROM ledger.orders"))
    return {
        "ledger_orders": held,
        "verify_ok": s.verify_ok,
        "providers": [
            {
                "provider_id": p.provider_id,
                "contracted_kwh": p.contracted_kwh,
                "delivered_kwh": p.delivered_kwh,
                "net_pence": p.net_pence,
                "statement_verified": p.statement_verified,
            }
            for p in s.providers
        ],
    }


def _print(console: Console, view: dict, *, target_kw: float, wanted: float, start: datetime, end: datetime) -> None:
    offers = Table(
        title=f"Offers in the chosen window {start:%Y-%m-%d %H:%M}–{end:%H:%M} UTC "
        f"({len(view['offers'])} offers received for the whole day)"
    )
    for col in ("provider", "item", "kW", "£/MWh", "marginal cost £/MWh", "gCO₂/kWh"):
        offers.add_column(col)
    for o in view["offers"]:
        if o["window_start"] == start.isoformat() and o["window_end"] == end.isoformat():
            offers.add_row(
                o["provider_name"] or o["provider_id"],
                o["item_id"],
                f"{o['available_kw']:,.0f}",
                f"{o['price_gbp_per_mwh']:.2f}",
                f"{o.get('marginal_cost_gbp_per_mwh') or 0:.2f}",
                str(o.get("expected_carbon_g_per_kwh") or "–"),
            )
    console.print(offers)
    note = "" if wanted == target_kw else f" — reduced from {target_kw:,.0f} kW to 80% of what the window offers"
    orders = Table(title=f"Orders (target {wanted:,.0f} kW{note})")
    for col in ("provider", "order id", "state", "kW", "£/MWh", "quote £", "meter"):
        orders.add_column(col)
    total_kw = total_gbp = 0.0
    for o in view["orders"]:
        orders.add_row(
            o["provider_id"],
            (o["order_id"] or "")[:8],
            o["state"],
            f"{o['power_kw']:,.0f}",
            f"{o['price_gbp_per_mwh'] or 0:.2f}",
            f"{o['quote_gbp'] or 0:,.2f}",
            o["meter_id"] or "",
        )
        total_kw += o["power_kw"]
        total_gbp += o["quote_gbp"] or 0
    orders.add_row("[bold]total", "", "", f"[bold]{total_kw:,.0f}", "", f"[bold]{total_gbp:,.2f}", "")
    console.print(orders)
    signed = sum(1 for c in view["callbacks"] if c["signature_verified"])
    delivered = sum(1 for s in view["sent"] if s["status"] == "DELIVERED")
    console.print(
        f"{len(view['callbacks'])} callbacks received, {signed} with verified signatures; "
        f"{delivered}/{len(view['sent'])} messages delivered"
    )


def _print_decisions(console: Console, platform_url: str) -> None:
    rows = httpx.get(f"{platform_url}/decisions", params={"action": "defer", "limit": 5}, timeout=10).json()
    commits = httpx.get(f"{platform_url}/decisions", params={"action": "commit", "limit": 10}, timeout=10).json()
    table = Table(title="Decision log (compute agents)", show_lines=False)
    table.add_column("provider")
    table.add_column("decision")
    for d in [*rows, *commits]:
        table.add_row(d["provider_id"], d["rationale"])
    console.print(table)


def _print_settlement(console: Console, s: Any) -> None:
    table = Table(title=f"P415 settlement (run as of {s.as_of:%Y-%m-%d %H:%M} UTC)")
    for col in ("provider", "contracted kWh", "delivered kWh", "utilisation £", "shortfall £", "net £", "statement"):
        table.add_column(col)
    for p in s.providers:
        table.add_row(
            p.provider_id,
            p.contracted_kwh,
            p.delivered_kwh,
            pence_to_gbp_str(p.utilisation_pence),
            pence_to_gbp_str(p.shortfall_pence),
            p.net_gbp,
            f"{p.statement_json.name} ({'verified' if p.statement_verified else 'NOT VERIFIED'})",
        )
    console.print(table)
    comp = ", ".join(f"{k}: £{pence_to_gbp_str(v)}" for k, v in s.supplier_compensation_pence.items())
    console.print(f"supplier compensation: £{pence_to_gbp_str(s.supplier_compensation_total_pence)} ({comp})")
    console.print(f"ledger verify: {s.verify_summary}")
