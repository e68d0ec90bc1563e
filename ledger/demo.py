"""Settlement at the end of `flexmarket demo` (called after the Beckn flow has confirmed its orders).

    from ledger.demo import DemoOrder, settle_demo_orders
    result = settle_demo_orders(database_url, orders, out_dir, seed=7)
    for p in result.providers: print(p.provider_id, p.net_pence, p.statement_json)
    print(result.supplier_compensation_total_pence, result.verify_summary)

It talks to the ledger through its database (DATABASE_URL or the embedded server — the same
database the ledger service uses), not over HTTP, because it must pass a simulated clock, which the
HTTP API rightly does not accept.

Orders are registered as on the network: with the buyer's signed confirm and the provider's signed
on_confirm (`DemoOrder.signed`), verified against the registry (or the `keys` given) — an order the BAP
has registered already (`flexmarket demo`: the BAP registers what it confirms) is not registered again.

How the simulated window stays honest with gate closure (p415-settlement.md rule 2): the Beckn flow
confirms orders NOW for a window that starts at least 1 hour later (e.g. tomorrow's 17:00-19:00
peak); orders are registered with their real confirmation time, so gate closure is checked for real.
The demo then simulates the future: it synthesises half-hourly metering for each meter — `history_days`
days before the window (enough same-day-type days for a 10-of-10 baseline), the 3-hour in-day
adjustment window, the event itself (baseline minus the delivered reduction, with noise) and two hours
after — and stores it with received_at = the simulated instant it would arrive (2 h 30 min after the last window ends).
Settlement then runs explicitly AS OF that instant. Ledger entries are stamped with the wall clock (the
ledger records when it wrote them); the settlement run records the simulated as_of.
Prices: real Elexon imbalance / market index prices (data/grid or ../shared/data/grid
gb_system_prices_2023-01_2024-05.csv — "Contains BMRS data © Elexon Limited copyright and database right
2024"). A window outside the data's range is priced by replaying the same half hours a whole number of
weeks earlier (same weekday and time), and each replayed row's source says so.
"""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Any

import psycopg

from grid.money import decimal_to_units, pence_to_gbp_str, wh_to_kwh_str
from grid.periods import LONDON, PERIOD
from kernel import clock
from ledger import accounts as acct
from ledger.agreements import KeyDirectory, SignedMessage, order_agreement
from ledger.checkpoints import create_checkpoint, default_publish_dir, ledger_keypair
from ledger.db import connection, ensure_schema, in_transaction
from ledger.errors import LedgerError
from ledger.keydir import RegistryKeys
from ledger.metering import Reading, ingest_metering
from ledger.orders import OrderExtras, register_agreed_order
from ledger.prices import PriceRow, ingest_prices, read_prices_csv
from ledger.proofs import verify_statement
from ledger.settlement_runs import ledger_lines_for_order, settle_due
from ledger.statement_csv import statement_csv
from ledger.statements import statement
from ledger.verify import verify_ledger

ROOT = Path(__file__).resolve().parent.parent
PRICE_FILE = "gb_system_prices_2023-01_2024-05.csv"


@dataclass(frozen=True)
class SignedOrder:
    """The two signed messages that make an order: the buyer's confirm and the provider's on_confirm."""

    confirm: SignedMessage
    on_confirm: SignedMessage


@dataclass(frozen=True)
class DemoOrder:
    """A confirmed order as the demo's Beckn flow knows it (UTC window on half-hour boundaries)."""

    order_id: str
    provider_id: str
    bap_id: str
    meter_id: str
    window_start: datetime
    window_end: datetime
    contracted_kw: Decimal | float | str
    price_gbp_per_mwh: Decimal | float | str
    baseline_kw: Decimal | float | str  # the meter's typical load
    supplier_id: str = "host-supplier"
    delivery_fraction: float = 1.0  # share of the contracted reduction the simulated site delivers
    policy_version: str = "p415-v1"
    signed: SignedOrder | None = None  # needed unless the order is registered already


@dataclass(frozen=True)
class ProviderResult:
    provider_id: str
    utilisation_pence: int
    availability_pence: int
    shortfall_pence: int
    net_pence: int
    contracted_kwh: str
    delivered_kwh: str
    statement_json: Path
    statement_csv: Path
    statement_verified: bool

    @property
    def net_gbp(self) -> str:
        return pence_to_gbp_str(self.net_pence)


@dataclass(frozen=True)
class DemoSettlement:
    providers: list[ProviderResult]
    supplier_compensation_pence: dict[str, int]
    verify_ok: bool
    entry_count: int
    head_hash: str
    verify_summary: str
    public_key_b64: str
    as_of: datetime
    runs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def supplier_compensation_total_pence(self) -> int:
        return sum(self.supplier_compensation_pence.values())


def _kw_to_w(value: Decimal | float | str, what: str) -> int:
    return decimal_to_units(Decimal(str(value)).quantize(Decimal("0.001")), 3, what)


def _price_file(prices_csv: Path | None) -> Path | None:
    for p in (prices_csv, ROOT / "data" / "grid" / PRICE_FILE, ROOT.parent / "shared" / "data" / "grid" / PRICE_FILE):
        if p is not None and p.is_file():
            return p
    return None


def _replayed_prices(path: Path, periods: list[datetime]) -> list[PriceRow]:
    rows = {r.period_start: r for r in read_prices_csv(path)}
    if not rows:
        return []
    first, last = min(rows), max(rows)
    out = []
    for t in periods:
        src, weeks = t, 0
        while src > last:
            src -= timedelta(weeks=1)
            weeks += 1
        while src < first:
            src += timedelta(weeks=1)
            weeks -= 1
        r = rows.get(src)
        if r is None:  # a gap in the real data: leave this period unpriced
            continue
        out.append(PriceRow(t, r.imbalance_millipence_per_mwh, r.market_index_millipence_per_mwh))
    return out


def _synthesise(orders: Sequence[DemoOrder], rng: random.Random, history_days: int) -> dict[str, dict[datetime, int]]:
    """Half-hourly Wh per meter: baseline load with a gentle daily shape and ±2% noise; during each
    event the delivered reduction is subtracted."""
    by_meter: dict[str, list[DemoOrder]] = defaultdict(list)
    for o in orders:
        by_meter[o.meter_id].append(o)
    out: dict[str, dict[datetime, int]] = {}
    for meter, os_ in sorted(by_meter.items()):
        base_w = _kw_to_w(os_[0].baseline_kw, "baseline_kw")
        start = min(o.window_start for o in os_) - timedelta(days=history_days)
        end = max(o.window_end for o in os_) + timedelta(hours=2)
        readings: dict[datetime, int] = {}
        t = start
        while t < end:
            local = t.astimezone(LONDON)
            shape = 1 + 0.04 * math.sin((local.hour + local.minute / 60 - 9) / 24 * 2 * math.pi)
            load_w = base_w * shape * (1 + rng.gauss(0, 0.02))
            for o in os_:
                if o.window_start <= t < o.window_end:
                    load_w -= (
                        _kw_to_w(o.contracted_kw, "contracted_kw") * o.delivery_fraction * (1 + rng.gauss(0, 0.01))
                    )
            readings[t] = max(0, round(load_w / 2))  # W over 30 minutes → Wh
            t += PERIOD
        out[meter] = readings
    return out


def _register_signed(conn: psycopg.Connection, o: DemoOrder, keys: KeyDirectory, now: datetime) -> None:
    """Register the order with both signed messages, as the BAP does (ledger/orders.py)."""
    if o.signed is None:
        raise LedgerError("agreement_missing", f"order {o.order_id} is not registered and carries no signed messages")
    agreement = order_agreement(o.signed.confirm, o.signed.on_confirm, keys, bap_id=o.bap_id, now=clock.wall_now())
    extras = OrderExtras(
        supplier_id=o.supplier_id,
        availability_price_millipence_per_mw_h=None,
        resource_type="compute",
        policy_version=o.policy_version,
    )
    in_transaction(conn, partial(register_agreed_order, agreement=agreement, extras=extras, now=now))


def settle_demo_orders(
    database_url: str | None,
    orders: Sequence[DemoOrder],
    out_dir: Path,
    *,
    seed: int = 0,
    prices_csv: Path | None = None,
    history_days: int = 42,
    keys: KeyDirectory | None = None,
) -> DemoSettlement:
    """Register the demo's confirmed orders (with their signed messages, checked against `keys`, by default
    the registry), synthesise their metering, settle them (run II), write each provider's statements
    (JSON + CSV) to `out_dir`, verify the whole chain and report."""
    if not orders:
        raise ValueError("no orders to settle")
    orders = [replace(o, meter_id=o.meter_id.removeprefix("der://")) for o in orders]
    ensure_schema(database_url)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    started = clock.now()
    as_of = max(o.window_end for o in orders) + timedelta(hours=2, minutes=30)
    keypair = ledger_keypair()
    metering = _synthesise(orders, rng, history_days)
    price_path = _price_file(prices_csv)
    window_periods = sorted(
        {o.window_start + i * PERIOD for o in orders for i in range(int((o.window_end - o.window_start) / PERIOD))}
    )

    with connection(database_url) as conn:
        known = {
            r[0]
            for r in conn.execute(
                "SELECT order_id FROM ledger.orders WHERE order_id = ANY(%s)", ([o.order_id for o in orders],)
            )
        }
        for o in orders:
            if o.order_id in known:  # a re-run: the order is registered already (immutable)
                continue
            _register_signed(conn, o, keys or RegistryKeys(), started)
        provider_of = {o.meter_id: o.provider_id for o in orders}
        for meter, readings in metering.items():

            def load(c: psycopg.Connection, meter: str = meter, readings: dict[datetime, int] = readings) -> None:
                have = {
                    r[0]
                    for r in c.execute(
                        "SELECT period_start FROM ledger.metering WHERE meter_id = %s AND period_start = ANY(%s)",
                        (meter, list(readings)),
                    )
                }
                fresh = [Reading(t, wh) for t, wh in sorted(readings.items()) if t not in have]
                if fresh:
                    ingest_metering(
                        c,
                        meter,
                        fresh,
                        provider_id=provider_of[meter],
                        now=as_of,
                        source=f"demo synthetic (seed {seed})",
                    )

            in_transaction(conn, load)
        if price_path is not None:
            rows = _replayed_prices(price_path, window_periods)
            in_transaction(
                conn,
                lambda c: ingest_prices(
                    c,
                    rows,
                    f"{price_path.name} (periods outside its range replayed whole weeks earlier); "
                    "Contains BMRS data © Elexon Limited copyright and database right 2024",
                    started,
                ),
            )

    outcomes = settle_due(database_url, as_of, order_ids=[o.order_id for o in orders])
    runs = [o.as_json() for o in outcomes]

    with connection(database_url) as conn:
        lines: dict[str, dict[str, int]] = {}
        energy: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        comp: dict[str, int] = defaultdict(int)
        for o in orders:
            lines[o.order_id] = ledger_lines_for_order(conn, o.order_id)
            comp[o.supplier_id] += lines[o.order_id]["supplier_compensation"]
            run = conn.execute(
                "SELECT result FROM ledger.settlement_runs WHERE order_id = %s ORDER BY seq DESC LIMIT 1", (o.order_id,)
            ).fetchone()
            if run is not None:
                energy[o.provider_id][0] += int(Fraction(run[0]["contracted_wh"]))
                energy[o.provider_id][1] += int(Fraction(run[0]["delivered_wh"]))
        end = clock.now() + timedelta(seconds=1)
        providers = []
        for pid in sorted({o.provider_id for o in orders}):
            mine = [lines[o.order_id] for o in orders if o.provider_id == pid]
            util = sum(x["utilisation"] for x in mine)
            avail = sum(x["availability"] for x in mine)
            short = sum(x["shortfall"] for x in mine)
            paths: dict[str, Path] = {}
            verified = True
            for account in (acct.provider_revenue(pid), acct.provider_penalties(pid)):
                doc = in_transaction(conn, partial(statement, account=account, start=started, end=end, keypair=keypair))
                kind = account.split(":")[2]
                jpath, cpath = out_dir / f"statement-{pid}-{kind}.json", out_dir / f"statement-{pid}-{kind}.csv"
                jpath.write_text(json.dumps(doc, indent=2))
                cpath.write_text(statement_csv(doc))
                verified = verified and verify_statement(doc, keypair.signing_public_key_b64).ok
                paths.setdefault("json", jpath)
                paths.setdefault("csv", cpath)
            providers.append(
                ProviderResult(
                    pid,
                    util,
                    avail,
                    short,
                    util + avail - short,
                    wh_to_kwh_str(energy[pid][0]),
                    wh_to_kwh_str(energy[pid][1]),
                    paths["json"],
                    paths["csv"],
                    verified,
                )
            )
        with conn.transaction():
            create_checkpoint(conn, keypair, publish_dir=default_publish_dir())
        report = verify_ledger(conn, keypair.signing_public_key_b64)
    (out_dir / "ledger-verify.txt").write_text(report.summary() + "\n")
    return DemoSettlement(
        providers,
        dict(comp),
        report.ok,
        report.chain.entry_count,
        report.chain.head_hash.hex(),
        report.summary(),
        keypair.signing_public_key_b64,
        as_of,
        runs,
    )
