"""The demo's closing summary on the console, from `summary.json` alone, readable at 80 columns.

Tables fold and wrap instead of cutting (`overflow="fold"`, never an ellipsis); identifiers and file paths are
printed whole, each on a line of its own where they could be long. Every number carries its unit.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from rich import box
from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from flexmarket import demo_format as fmt
from flexmarket.demo_schema import DemoSummary, parse_summary, parse_utc


def print_summary(console: Console, doc: Mapping[str, Any]) -> None:
    """Print the summary of a valid demo document (`SummaryError` otherwise)."""
    s = parse_summary(doc)
    _header(console, s)
    _event(console, s)
    _cost_and_carbon(console, s)
    _payments(console, s)
    _compensation(console, s)
    _tokens(console, s)
    _ledger(console, s)


def _table(*columns: str) -> Table:
    """A borderless table whose cells wrap or fold, never cut; columns named 'x|r' are right-aligned."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, padding=(0, 1))
    for column in columns:
        name, _, align = column.partition("|")
        table.add_column(name, overflow="fold", no_wrap=False, justify="right" if align == "r" else "left")
    return table


def _title(console: Console, text: str) -> None:
    console.print()
    console.rule(Text(text, style="bold"), align="left")


def _line(console: Console, text: str | Text, *, indent: int = 0) -> None:
    """One paragraph; wrapped lines keep the indent, and a word longer than the line is folded, not cut.
    Text is never read as console markup, so names with brackets print as they are."""
    body = Text(text) if isinstance(text, str) else text.copy()
    body.overflow = "fold"
    console.print(Padding(body, (0, 0, 0, indent)))


def _header(console: Console, s: DemoSummary) -> None:
    _title(console, f"flexmarket demo · {s.date} · seed {s.seed}")
    regions = len({p.region for p in s.providers})
    _line(console, f"clock: {s.clock.kind}, from {fmt.local_datetime(s.clock.start)}, ×{s.clock.speed:g}")
    _line(console, f"{len(s.providers)} providers in {regions} regions")
    for p in s.providers:
        silent = ", went silent" if p.silent else ""
        _line(console, f"{p.provider_id}: {p.name}, {fmt.region(p.region)}, {p.resource_type}{silent}", indent=2)


def _event(console: Console, s: DemoSummary) -> None:
    e, proc = s.event, s.procurement
    _title(console, "Event: kW procured vs target per slot")
    _line(
        console,
        f"{e.source} event {e.event_id} ({e.opt}), {fmt.local_datetime(e.window_start)} to "
        f"{fmt.local_time(e.window_end)}",
    )
    table = _table("slot", "target|r", "covered|r", "delivered|r", "uncovered|r")
    for x in proc.slots:
        uncovered = max(x.target_kw - x.covered_kw, 0.0)
        style = "red" if uncovered > 0 else ""
        table.add_row(
            fmt.local_window(x.start, x.end),
            fmt.kw(x.target_kw),
            fmt.kw(x.covered_kw),
            fmt.kw(x.delivered_kw),
            Text(fmt.kw(uncovered), style=style),
        )
    console.print(table)
    _line(
        console,
        f"procurement {proc.procurement_id}: {proc.status}, policy {proc.policy_version}, "
        f"shortfall {fmt.kw(proc.shortfall_kw)}",
    )
    paid_with = {"GBP": "£", "CFT": "tokens"}
    for o in proc.orders:
        by = f" by {o.cancelled_by}" if o.cancelled_by else ""
        _line(
            console,
            f"{o.provider_id}: {fmt.kw(o.power_kw)} {fmt.local_window(o.window_start, o.window_end)}"
            f" at {fmt.gbp_per_mwh(o.price_gbp_per_mwh)}, paid with {paid_with[o.payment]}, {o.state}{by}",
            indent=2,
        )
    for r in proc.re_procurements:
        what = f"re-procured {fmt.kw(r.gap_kw)} at {fmt.local_time(r.at)}: {r.provider_id}, {r.reason}"
        _line(console, Text(what, style="yellow"), indent=2)


def _cost_and_carbon(console: Console, s: DemoSummary) -> None:
    fleet, proc = s.load_shift.fleet.totals, s.procurement
    _title(console, "Cost and carbon against run-at-release")
    table = _table("fleet, the whole day", "run at release|r", "optimised|r", "saved|r")
    saved_gbp = str(Decimal(fleet.baseline_cost_gbp) - Decimal(fleet.planned_cost_gbp))
    table.add_row("energy cost", fmt.gbp(fleet.baseline_cost_gbp), fmt.gbp(fleet.planned_cost_gbp), fmt.gbp(saved_gbp))
    table.add_row(
        "carbon",
        fmt.kg_co2(fleet.baseline_carbon_kg),
        fmt.kg_co2(fleet.planned_carbon_kg),
        fmt.kg_co2(fleet.baseline_carbon_kg - fleet.planned_carbon_kg),
    )
    console.print(table)
    intensities = [x.carbon_g_per_kwh for x in s.load_shift.fleet.slots if _in_event(s, x.start)]
    if intensities:
        _line(
            console,
            f"grid carbon intensity in the event: {fmt.g_per_kwh(min(intensities))} to "
            f"{fmt.g_per_kwh(max(intensities))}",
        )
    _line(
        console,
        f"procurement cost: expected {fmt.gbp(proc.expected_cost_gbp)}, settled {fmt.gbp(proc.settled_cost_gbp)}",
    )
    _line(
        console,
        f"carbon avoided: expected {fmt.kg_co2(proc.expected_carbon_avoided_kg)}, delivered "
        f"{fmt.kg_co2(proc.delivered_carbon_avoided_kg)}",
    )


def _in_event(s: DemoSummary, instant: str) -> bool:
    return parse_utc(s.event.window_start) <= parse_utc(instant) < parse_utc(s.event.window_end)


def _payments(console: Console, s: DemoSummary) -> None:
    _title(console, "Payments per provider (P415 settlement)")
    table = _table("provider", "contracted|r", "delivered|r", "utilisation|r", "shortfall|r", "net|r")
    for r in s.settlement.providers:
        table.add_row(
            r.provider_id,
            fmt.kwh(r.contracted_kwh),
            fmt.kwh(r.delivered_kwh),
            fmt.gbp_pence(r.utilisation_pence),
            fmt.gbp_pence(-r.shortfall_pence),
            fmt.gbp_pence(r.net_pence),
        )
    console.print(table)
    _line(console, f"paid to providers: {fmt.gbp_pence(s.settlement.payments_total_pence)}")
    _line(console, "statements (relative to the output folder):")
    for r in s.settlement.providers:
        verified = Text("verified", style="green") if r.statement_verified else Text("NOT verified", style="bold red")
        _line(console, Text.assemble(f"{r.provider_id} ", verified), indent=2)
        _line(console, r.statement_csv, indent=4)
        _line(console, r.statement_json, indent=4)


def _compensation(console: Console, s: DemoSummary) -> None:
    _title(console, "Supplier compensation")
    for supplier, pence in s.settlement.supplier_compensation_pence.items():
        _line(console, f"{supplier}: {fmt.gbp_pence(pence)}", indent=2)
    _line(
        console,
        f"total {fmt.gbp_pence(s.settlement.supplier_compensation_total_pence)} against "
        f"{fmt.gbp_pence(s.settlement.payments_total_pence)} paid to providers",
    )
    _line(console, Text(fmt.compensation_why(s), style="italic"))


def _tokens(console: Console, s: DemoSummary) -> None:
    t = s.tokens
    _title(console, "Compute Flex Tokens (1 CFT = 1 MWh)")
    table = _table("series", "minted|r", "sold|r", "redeemed|r", "expired|r", "outstanding|r")
    for x in t.series:
        table.add_row(x.series_id, *(fmt.tokens(n) for n in (x.minted, x.sold, x.redeemed, x.expired, x.outstanding)))
    console.print(table)
    _line(
        console,
        f"orchestrator bought {fmt.tokens(t.bought_by_orchestrator)} and redeemed "
        f"{fmt.tokens(t.redeemed_by_orchestrator)}",
    )


def _ledger(console: Console, s: DemoSummary) -> None:
    led = s.ledger
    _title(console, "Ledger")
    _line(console, f"height {led.height} entries, head")
    _line(console, led.head_hash, indent=2)
    mark = Text("verified", style="bold green") if led.verified else Text("NOT verified", style="bold red")
    _line(console, Text.assemble("chain ", mark, f": {led.verify_summary}"))
    _line(console, f"report: {s.files.report}")
