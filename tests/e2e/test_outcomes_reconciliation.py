"""Order outcomes flow back through signed Beckn messages, and reconciliation compares the three books.

An order delivered yesterday: the shared network runs on the wall clock, and Beckn cannot confirm a window
that is already past, so the test plays the buyer and the provider platform with their registered keys — a
signed `confirm` and `on_confirm` — registers that agreement with the ledger (POST /api/v1/orders, the
BAP's ledger key) and writes the two participants' copies as the confirmation left them. From there on the
network does everything: the provider's meter readings reach the ledger, the ledger's run settles the order,
the BPP's beat task reads the outcome with the provider's ledger key and sends it to the BAP in an
unsolicited signed on_status, and the BAP's reconciliation reads the BPP's book with a signed request.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from bap import auth
from bap.models import BapOrder, Transaction
from bap.permissions import Role
from beckn import envelope
from bpp.models import Order
from flexmarket.runner import Network
from kernel.db import session_scope
from schemas.flex import OrderSpec, OrderView, order_spec_to_order, order_view_to_order
from tests.e2e.conftest import Signer
from tests.e2e.helpers import eventually

pytestmark = pytest.mark.e2e

PROVIDER, ITEM, KW, PRICE = "dc-01", "dc-01-evening-peak", 100.0, 150.0
SITE_KW, DELIVERED_KW = 2000.0, 75.0  # the site's usual load; the reduction metered in the window
HALF_HOUR = timedelta(minutes=30)


def _window() -> tuple[datetime, datetime]:
    """Yesterday 10:00–11:00 UTC: closed, and ahead of the readings' 20-day baseline."""
    day = (datetime.now(UTC) - timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return day + timedelta(hours=10), day + timedelta(hours=11)


def _signed(signer: Signer, payload: dict[str, Any]) -> dict[str, str]:
    body = envelope.dumps(payload)
    return {"body_base64": base64.b64encode(body).decode(), "authorization": signer.headers(body)["Authorization"]}


class Books:
    """The three books of one order, and the calls that move it."""

    def __init__(self, network: Network, bap_signer: Signer, bpp_signer: Signer) -> None:
        self.network, self.bap_signer, self.bpp_signer = network, bap_signer, bpp_signer
        keys = network.manifest["participants"]["ledger"]["api_keys"]
        self.admin, self.bap_ledger_key, self.provider_key = keys["admin"], keys["bap"], keys["providers"][PROVIDER]
        with session_scope("bap") as s:
            self.operator = auth.create_api_key(s, Role.OPERATOR, label="outcome e2e")
        self.tx, self.order_id, self.meter = str(uuid.uuid4()), str(uuid.uuid4()), f"MTR-E2E-{uuid.uuid4().hex[:8]}"
        self.start, self.end = _window()

    # -- the agreement, as confirm / on_confirm left it ------------------------------------------------------
    def agree(self) -> None:
        bap, bpp = self.bap_signer.identity, self.bpp_signer.identity
        spec = OrderSpec(PROVIDER, ITEM, KW, self.start, self.end, self.meter, "P415", self.order_id)
        ctx = envelope.context(
            "confirm",
            bap_id=bap.subscriber_id,
            bap_uri=bap.url,
            transaction_id=self.tx,
            bpp_id=bpp.subscriber_id,
            bpp_uri=bpp.url,
            city_code="GB-R13",
            country_code="GBR",
        )
        confirmed_at = self.start - timedelta(days=1)
        accepted = OrderView(spec, "ACCEPTED", PRICE, KW / 1000 * PRICE, confirmed_at)
        confirm = {"context": ctx, "message": {"order": order_spec_to_order(spec).dump()}}
        on_confirm = {
            "context": envelope.callback_context(ctx, "on_confirm"),
            "message": {"order": order_view_to_order(accepted).dump()},
        }
        r = httpx.post(
            f"{self.network.url('ledger')}/api/v1/orders",
            json={
                "confirm": _signed(self.bap_signer, confirm),
                "on_confirm": _signed(self.bpp_signer, on_confirm),
                "supplier_id": "host-supplier",
            },
            headers={"Authorization": f"Bearer {self.bap_ledger_key}"},
            timeout=30,
        )
        assert r.status_code == 201, r.text
        self._copies(bap.url, bpp.subscriber_id, bpp.url)

    def _copies(self, bap_uri: str, bpp_id: str, bpp_uri: str) -> None:
        """The BAP's and the BPP's copies as the window's close left them (COMPLETED, provisional)."""
        terms = dict(power_kw=KW, window_start=self.start, window_end=self.end, meter_id=self.meter)
        with session_scope("bap") as s:
            s.add(Transaction(id=self.tx, request={}, city_code="GB-R13", country_code="GBR"))
            s.add(
                BapOrder(
                    transaction_id=self.tx,
                    bpp_id=bpp_id,
                    provider_id=PROVIDER,
                    bpp_uri=bpp_uri,
                    item_id=ITEM,
                    order_id=self.order_id,
                    state="COMPLETED",
                    price_gbp_per_mwh=PRICE,
                    settlement_method="P415",
                    **terms,
                )
            )
        with session_scope("bpp") as s:
            s.add(
                Order(
                    id=self.order_id,
                    bpp_id=bpp_id,
                    bap_id=self.bap_signer.identity.subscriber_id,
                    bap_uri=bap_uri,
                    transaction_id=self.tx,
                    provider_id=PROVIDER,
                    item_id=ITEM,
                    settlement_method="P415",
                    price_gbp_per_mwh=PRICE,
                    state="COMPLETED",
                    city_code="GB-R13",
                    country_code="GBR",
                    **terms,
                )
            )

    # -- delivery and settlement at the ledger --------------------------------------------------------------
    def meter_readings(self) -> None:
        readings, t = [], self.start - timedelta(days=20)
        while t < self.end:
            kw = SITE_KW - DELIVERED_KW if self.start <= t < self.end else SITE_KW
            readings.append({"period_start": t.isoformat(), "energy_kwh": f"{kw / 2:.3f}"})
            t += HALF_HOUR
        for i in range(0, len(readings), 500):
            r = httpx.post(
                f"{self.network.url('ledger')}/api/v1/metering",
                json={"meter_id": self.meter, "readings": readings[i : i + 500]},
                headers={"Authorization": f"Bearer {self.provider_key}"},
                timeout=30,
            )
            assert r.status_code in (200, 201), r.text

    def settle(self, *, force: bool = False) -> list[dict[str, Any]]:
        r = httpx.post(
            f"{self.network.url('ledger')}/api/v1/settlement/run",
            json={"order_id": self.order_id, "force": force},
            headers={"Authorization": f"Bearer {self.admin}"},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        runs: list[dict[str, Any]] = r.json()["runs"]
        return runs

    # -- the books ------------------------------------------------------------------------------------------
    def ledger_run(self) -> dict[str, Any]:
        auth_header = {"Authorization": f"Bearer {self.admin}"}
        api = f"{self.network.url('ledger')}/api/v1"
        latest = httpx.get(f"{api}/orders/{self.order_id}", headers=auth_header, timeout=10).json()["runs"][-1]["run"]
        run: dict[str, Any] = httpx.get(f"{api}/settlement/{self.order_id}/{latest}", headers=auth_header).json()
        return run

    def bap_order(self) -> dict[str, Any]:
        view = self.api("GET", f"/transactions/{self.tx}").json()
        [order] = view["orders"]
        return dict(order)

    def bpp_order(self) -> dict[str, Any]:
        with session_scope("bpp") as s:
            o = s.get(Order, self.order_id)
            assert o is not None
            return {
                "state": o.state,
                "settlement_run": o.settlement_run,
                "delivered_energy_kwh": o.delivered_energy_kwh,
                "settled_amount_pence": o.settled_amount_pence,
            }

    def api(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.operator}"}
        return httpx.request(method, f"{self.network.url('bap')}/api/v1{path}", headers=headers, timeout=60, **kw)

    def reconcile(self) -> dict[str, Any]:
        r = self.api("POST", "/reconciliation/run", json={"transaction_id": self.tx})
        assert r.status_code == 200, r.text
        report: dict[str, Any] = r.json()
        return report


def _outcome(order: dict[str, Any]) -> tuple[Any, ...]:
    return order["state"], order["settlement_run"], order["delivered_energy_kwh"], order["settled_amount_pence"]


def _cli_reconcile(network: Network, tmp_path: Path, tx: str) -> subprocess.CompletedProcess[str]:
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps(network.manifest))
    argv = [sys.executable, "-m", "flexmarket", "reconcile", "--manifest", str(manifest), "--transaction-id", tx]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})


def test_outcomes_flow_back_and_the_books_reconcile(
    network: Network, bap_signer: Signer, bpp_signer: Signer, tmp_path: Path
) -> None:
    books = Books(network, bap_signer, bpp_signer)
    books.agree()
    books.meter_readings()
    [run] = books.settle()  # II: due now that the window has closed and every period is metered
    assert run["run"] == "II"
    stored = books.ledger_run()
    lines = stored["lines_pence"]
    delivered_kwh = float(Decimal(round(Fraction(stored["result"]["delivered_wh"]))) / 1000)  # to the Wh
    assert 0 < delivered_kwh < KW  # 75 of 100 kW for an hour: partly delivered
    expected = ("PARTIALLY-DELIVERED", "II", delivered_kwh, int(lines["utilisation"]) + int(lines["availability"]))

    # The BPP learns it from the ledger and tells the BAP (unsolicited, signed on_status).
    eventually(lambda: _outcome(books.bpp_order()) == expected, timeout=30, interval=0.5)
    eventually(lambda: _outcome(books.bap_order()) == expected, timeout=30, interval=0.5)
    view = books.api("GET", f"/transactions/{books.tx}").json()
    assert any(c["action"] == "on_status" and c["signature_verified"] for c in view["callbacks"])

    # The books agree: a reconciliation of this transaction finds nothing.
    report = books.reconcile()
    assert report == {"checked_orders": 1, "differences": [], "unreadable": []}

    # A difference seeded in the BPP's book is found, kept as an alert and listed.
    with session_scope("bpp") as s:
        s.execute(update(Order).where(Order.id == books.order_id).values(power_kw=120.0))
    report = books.reconcile()
    assert [(d["kind"], d["bap"], d["bpp"], d["ledger"]) for d in report["differences"]] == [
        ("power_kw", "100", "120", "100")
    ]
    alerts = books.api("GET", "/reconciliation/alerts", params={"transaction_id": books.tx}).json()["alerts"]
    assert [(a["order_id"], a["kind"], a["resolved_at"]) for a in alerts] == [(books.order_id, "power_kw", None)]
    metrics = httpx.get(f"{network.url('bap')}/metrics", timeout=10).text
    [open_now] = re.findall(r'^flexmarket_reconciliation_open_alerts\{kind="power_kw"\} (\S+)$', metrics, re.M)
    assert float(open_now) >= 1
    cli = _cli_reconcile(network, tmp_path, books.tx)
    assert cli.returncode == 1 and "power_kw" in cli.stdout and "1 differences" in cli.stdout, cli.stdout + cli.stderr

    # Put right, the next run resolves the alert.
    with session_scope("bpp") as s:
        s.execute(update(Order).where(Order.id == books.order_id).values(power_kw=KW))
    assert books.reconcile()["differences"] == []
    assert _cli_reconcile(network, tmp_path, books.tx).returncode == 0
    listed = books.api("GET", "/reconciliation/alerts", params={"transaction_id": books.tx, "status": "all"}).json()
    assert [a["resolved_at"] is not None for a in listed["alerts"]] == [True]

    # The ledger's later runs, through the final one: SETTLED everywhere, the final amounts.
    for _ in range(6):
        books.settle(force=True)
    final = books.ledger_run()
    assert final["run"] == "DF"
    paid = int(final["lines_pence"]["utilisation"]) + int(final["lines_pence"]["availability"])
    settled = ("SETTLED", "DF", expected[2], paid)
    eventually(lambda: _outcome(books.bap_order()) == settled, timeout=30, interval=0.5)
    assert _outcome(books.bpp_order()) == settled
    assert books.reconcile()["differences"] == []


def test_the_bpps_book_answers_only_the_signing_bap(
    network: Network, bap_signer: Signer, bpp_signer: Signer, bpp_platform: dict[str, Any]
) -> None:
    url = f"{bpp_platform['url']}/reconciliation/orders"
    me = bap_signer.identity.subscriber_id
    assert bap_signer.post(url, {"bap_id": me}).status_code == 200
    unsigned = httpx.post(url, json={"bap_id": me}, timeout=10)
    assert unsigned.status_code == 401 and unsigned.json()["error"]["code"] == "invalid_signature"
    other = bap_signer.post(url, {"bap_id": "someone-else.bap"})
    assert other.status_code == 403 and "bap_id" in other.json()["error"]["message"]
    assert bpp_signer.post(url, {"bap_id": bpp_signer.identity.subscriber_id}).status_code == 403  # not a BAP
    bad = bap_signer.post(url, {"bap_id": me, "limit": 0})
    assert bad.status_code == 400 and "limit" in bad.json()["error"]["message"]
    tampered = bap_signer.headers(envelope.dumps({"bap_id": me}))
    forged = httpx.post(url, content=envelope.dumps({"bap_id": me, "after": "x"}), headers=tampered, timeout=10)
    assert forged.status_code == 401  # the signature covers the body
