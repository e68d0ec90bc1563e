"""`flexmarket demo`: a whole marketplace on loopback, one load-reduction purchase walked through it
(search → plan → select → init → confirm → status), printed as rich tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from bap.client import BapClient, order_in, order_of
from flexmarket.config import get_settings
from flexmarket.embedded import free_port
from flexmarket.runner import prepare_network


def _free_base_port(n: int = 5) -> int:
    import socket

    for _ in range(50):
        base = free_port()
        if base + n >= 65535:
            continue
        ok = True
        for p in range(base, base + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port range")


def run_demo(console: Console, *, providers: int, target_kw: float, base_port: int | None, out: Path | None) -> int:
    settings = get_settings()
    home = settings.home.resolve()
    out = (out or home / "demo").resolve()
    out.mkdir(parents=True, exist_ok=True)
    net = prepare_network(home=home, base_port=base_port or _free_base_port(), providers=providers)
    steps = ["start processes", "search", "plan", "select", "init", "confirm", "status"]
    try:
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                      console=console, transient=True) as progress:
            task = progress.add_task("starting registry, gateway, BAP, BPP, ledger, worker…", total=len(steps))
            net.start()
            progress.advance(task)
            bap = BapClient(net.url("bap"))
            day = (datetime.now(UTC) + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
            start, end = day + timedelta(hours=16), day + timedelta(hours=18)
            progress.update(task, description="search: gateway fans out to the BPP")
            tx = bap.search(start, end, target_kw, region=settings.city_code)["transaction_id"]
            view = bap.wait(tx, lambda v: len({o["provider_id"] for o in v["offers"]}) >= providers, timeout=30)
            progress.advance(task)
            progress.update(task, description="plan: cheapest set of offers meeting the target")
            choices = bap.plan(tx, target_kw)["choices"]
            progress.advance(task)
            for action, states in [("select", ("QUOTED",)), ("init", ("CREATED",)), ("confirm", ("ACCEPTED",)),
                                   ("status", ("ACCEPTED", "IN-PROGRESS"))]:
                progress.update(task, description=f"{action} × {len(choices)}")
                for c in choices:
                    bap.order(action, tx, c["bpp_id"], c["provider_id"], item_id=c["item_id"], power_kw=c["power_kw"],
                              window_start=start, window_end=end)
                for c in choices:
                    view = bap.wait(tx, order_in(c["provider_id"], *states), timeout=30)
                    o = order_of(view, c["provider_id"])
                    if o and o["last_error"]:
                        console.print(f"[red]{action} refused by {c['provider_id']}:[/] {o['last_error']}")
                        return 1
                progress.advance(task)
            view = bap.transaction(tx)
        _print(console, view, target_kw, start, end)
        (out / "transaction.json").write_text(__import__("json").dumps(view, indent=2))
        console.print(f"transaction record: {out / 'transaction.json'}   logs: {net.manifest['logs']}")
        return 0
    finally:
        net.stop()


def _print(console: Console, view: dict, target_kw: float, start: datetime, end: datetime) -> None:
    offers = Table(title=f"Offers received for {start:%Y-%m-%d %H:%M}–{end:%H:%M} UTC", show_lines=False)
    for col in ("provider", "item", "kW available", "£/MWh", "gCO₂/kWh", "window (UTC)"):
        offers.add_column(col)
    for o in view["offers"]:
        offers.add_row(o["provider_name"] or o["provider_id"], o["item_id"], f"{o['available_kw']:,.0f}",
                       f"{o['price_gbp_per_mwh']:.2f}", str(o.get("expected_carbon_g_per_kwh") or "–"),
                       f"{o['window_start'][5:16]}–{o['window_end'][11:16]}")
    console.print(offers)
    orders = Table(title=f"Orders (target {target_kw:,.0f} kW)")
    for col in ("provider", "order id", "state", "kW", "£/MWh", "quote £", "meter"):
        orders.add_column(col)
    total_kw = total_gbp = 0.0
    for o in view["orders"]:
        orders.add_row(o["provider_id"], (o["order_id"] or "")[:8], o["state"], f"{o['power_kw']:,.0f}",
                       f"{o['price_gbp_per_mwh'] or 0:.2f}", f"{o['quote_gbp'] or 0:,.2f}", o["meter_id"] or "")
        total_kw += o["power_kw"]
        total_gbp += o["quote_gbp"] or 0
    orders.add_row("[bold]total", "", "", f"[bold]{total_kw:,.0f}", "", f"[bold]{total_gbp:,.2f}", "")
    console.print(orders)
    signed = sum(1 for c in view["callbacks"] if c["signature_verified"])
    console.print(f"{len(view['callbacks'])} callbacks received, {signed} with verified signatures; "
                  f"{sum(1 for s in view['sent'] if s['status'] == 'DELIVERED')}/{len(view['sent'])} "
                  "messages delivered")
