"""ledger/demo.py: settle what the demo's Beckn flow confirmed, write statements, verify."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from grid.periods import PERIOD
from ledger import accounts as acct
from ledger.accounts_db import account_info
from ledger.db import connection
from ledger.demo import DemoOrder, SignedOrder, settle_demo_orders
from ledger.errors import LedgerError
from ledger.proofs import verify_statement
from ledger.settlement_runs import ledger_lines_for_order
from tests.ledger.agreements import TEST_KEYS, Deal, party, signed_pair


def signed(order: DemoOrder) -> DemoOrder:
    """The order with the confirm its BAP signed and the on_confirm its platform signed."""
    deal = Deal(
        order_id=order.order_id,
        provider_id=order.provider_id,
        meter_id=order.meter_id,
        window_start=order.window_start,
        window_end=order.window_end,
        power_kw=float(order.contracted_kw),
        price_gbp_per_mwh=float(order.price_gbp_per_mwh),
    )
    return replace(order, signed=SignedOrder(*signed_pair(deal, party(order.bap_id))))


def test_demo_settlement(ledger_url: str, tmp_path: Path) -> None:
    start = (datetime.now(UTC) + timedelta(days=2)).replace(hour=17, minute=0, second=0, microsecond=0)
    tag = start.strftime("%H%M%S") + str(id(tmp_path))[-4:]
    orders = [
        DemoOrder(
            f"demo-a-{tag}",
            f"dc-a-{tag}",
            "grid-demo",
            f"MD-a-{tag}",
            start,
            start + timedelta(hours=2),
            "500",
            "300",
            "2000",
            delivery_fraction=1.0,
        ),
        DemoOrder(
            f"demo-b-{tag}",
            f"dc-b-{tag}",
            "grid-demo",
            f"MD-b-{tag}",
            start,
            start + timedelta(hours=1),
            800,
            275.5,
            3000,
            delivery_fraction=0.5,
        ),
    ]
    orders = [signed(o) for o in orders]
    res = settle_demo_orders(ledger_url, orders, tmp_path, seed=11, keys=TEST_KEYS)
    assert res.verify_ok and res.entry_count > 0 and len(res.head_hash) == 64
    a, b = res.providers
    # full delivery (with ±2 % metering noise) earns close to the cap 500 kW × 2 h × £300/MWh = £300
    assert 0.95 * 30_000 <= a.utilisation_pence <= 30_000
    assert a.net_pence == a.utilisation_pence + a.availability_pence - a.shortfall_pence
    assert a.contracted_kwh == "1000.000" and 950 <= float(a.delivered_kwh) <= 1000
    # half delivery: paid for roughly half, charged a shortfall for the rest (the noise moves it a little)
    assert 0.35 * 22_040 < b.utilisation_pence < 0.65 * 22_040 and b.shortfall_pence > 0
    assert res.supplier_compensation_total_pence > 0
    with connection(ledger_url) as conn:
        assert account_info(conn, acct.provider_revenue(a.provider_id))["balance"] == a.utilisation_pence
        assert account_info(conn, acct.provider_penalties(a.provider_id))["balance"] == -a.shortfall_pence
        assert ledger_lines_for_order(conn, orders[1].order_id)["shortfall"] == b.shortfall_pence
    for p in res.providers:
        assert p.statement_verified
        doc = json.loads(p.statement_json.read_text())
        assert verify_statement(doc, res.public_key_b64).ok
        assert p.statement_csv.read_text().startswith("record,")
    assert (tmp_path / "ledger-verify.txt").read_text().startswith("OK")
    # running the demo's settlement again is harmless (idempotent registration, metering and runs)
    again = settle_demo_orders(ledger_url, orders, tmp_path / "again", seed=11, keys=TEST_KEYS)
    assert [p.net_pence for p in again.providers] == [p.net_pence for p in res.providers]
    assert again.runs == []


def test_the_demo_cannot_register_an_order_nobody_signed(ledger_url: str, tmp_path: Path) -> None:
    start = (datetime.now(UTC) + timedelta(days=2)).replace(hour=17, minute=0, second=0, microsecond=0)
    tag = str(id(tmp_path))[-6:]
    unsigned = DemoOrder(f"demo-u-{tag}", f"dc-u-{tag}", "grid-demo", f"MD-u-{tag}", start, start + PERIOD, 1, 1, 2)
    with pytest.raises(LedgerError) as exc:
        settle_demo_orders(ledger_url, [unsigned], tmp_path, keys=TEST_KEYS)
    assert exc.value.code == "agreement_missing"
    with connection(ledger_url) as conn:
        assert conn.execute("SELECT 1 FROM ledger.orders WHERE order_id = %s", (unsigned.order_id,)).fetchone() is None
