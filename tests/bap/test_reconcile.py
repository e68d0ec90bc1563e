"""bap/reconcile.py on the BAP's own database, with the BPP's and the ledger's books faked: differences become
alerts (one open per order and kind), are resolved when they go away, and an unreadable book is reported
rather than taken for missing orders. And the two endpoints, behind the permission table."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from bap import reconcile
from bap.differences import LedgerOrder, PartyOrder
from bap.models import BapOrder, ReconciliationAlert, Transaction
from beckn.errors import Role
from beckn.identity import Identity, load_or_create_identity
from kernel import clock
from kernel.db import session_scope
from tests.bap.conftest import Keys, bearer

T0 = datetime(2026, 11, 24, 16, 0, tzinfo=UTC)
T1 = T0 + timedelta(hours=1)
BPP_ID, BPP_URI = "bpp.test", "http://bpp.test/p"


class FakeBpp:
    def __init__(self) -> None:
        self.orders: dict[str, PartyOrder] = {}
        self.down = False

    def book(self, bpp_uri: str, transaction_id: str | None) -> dict[str, tuple[PartyOrder, str]]:
        if self.down:
            raise reconcile.BookUnreadable(f"{bpp_uri}: connection refused")
        return {oid: (o, str(transaction_id)) for oid, o in self.orders.items()}


class FakeLedger:
    def __init__(self, tx: str) -> None:
        self.tx = tx
        self.orders: dict[str, LedgerOrder] = {}

    def order_ids(self, bap_id: str, transaction_id: str | None) -> list[str]:
        return sorted(self.orders)

    def order(self, order_id: str) -> tuple[LedgerOrder, str]:
        return self.orders[order_id], self.tx


@pytest.fixture()
def me(bap_db: str, tmp_path: Path) -> Identity:
    return load_or_create_identity(tmp_path, "bap.test.flexmarket.local", Role.BAP, "http://127.0.0.1:9/beckn")


def _seed(tx: str, *order_ids: str) -> None:
    with session_scope("bap") as s:
        s.add(Transaction(id=tx, request={}, city_code="GB-R13", country_code="GBR"))
        for i, oid in enumerate(order_ids):
            s.add(
                BapOrder(
                    transaction_id=tx,
                    bpp_id=BPP_ID,
                    provider_id=f"p{i}",
                    bpp_uri=BPP_URI,
                    item_id="i",
                    order_id=oid,
                    power_kw=100.0,
                    window_start=T0,
                    window_end=T1,
                    state="ACCEPTED",
                    price_gbp_per_mwh=150.0,
                )
            )


def _run(me: Identity, bpp: FakeBpp, ledger: FakeLedger, tx: str) -> tuple[reconcile.Report, int]:
    report, skipped = reconcile.reconcile(me, ledger, bpp, transaction_id=tx)  # type: ignore[arg-type]
    with session_scope("bap") as s:
        return report, reconcile.record(s, report, transaction_id=tx, skipped=skipped, now=clock.now())


def _open(tx: str) -> list[tuple[str, str, str | None]]:
    with session_scope("bap") as s:
        rows = s.scalars(
            select(ReconciliationAlert)
            .where(ReconciliationAlert.transaction_id == tx, ReconciliationAlert.resolved_at.is_(None))
            .order_by(ReconciliationAlert.order_id)
        )
        return [(a.order_id, a.kind, a.bpp_value) for a in rows]


def test_differences_become_alerts_and_resolve(me: Identity) -> None:
    tx = str(uuid.uuid4())
    _seed(tx, "o1", "o2")
    same = PartyOrder("ACCEPTED", 100.0, T0, T1, 150.0)
    bpp, ledger = FakeBpp(), FakeLedger(tx)
    bpp.orders = {"o1": same, "o2": same}
    ledger.orders = {oid: LedgerOrder(100.0, T0, T1, 150.0, cancelled=False) for oid in ("o1", "o2")}
    report, new = _run(me, bpp, ledger, tx)
    assert (report.checked_orders, report.differences, new) == (2, [], 0)

    bpp.orders["o2"] = PartyOrder("ACCEPTED", 120.0, T0, T1, 150.0)  # the BPP's copy changed
    ledger.orders["o3"] = LedgerOrder(50.0, T0, T1, 150.0, cancelled=False)  # an order only the ledger knows
    bpp.orders["o4"] = same  # an order only the BPP knows
    report, new = _run(me, bpp, ledger, tx)
    assert [(d.order_id, d.kind.value) for d in report.differences] == [
        ("o2", "power_kw"),
        ("o3", "presence"),
        ("o4", "presence"),
    ]
    assert report.as_json()["differences"][2]["bpp"] == "present"
    assert new == 3 and _open(tx) == [
        ("o2", "power_kw", "120"),
        ("o3", "presence", "absent"),
        ("o4", "presence", "present"),
    ]
    del bpp.orders["o4"]
    assert report.as_json()["differences"][1]["transaction_id"] == tx  # the ledger names the transaction

    bpp.orders["o2"] = PartyOrder("ACCEPTED", 130.0, T0, T1, 150.0)
    _, new = _run(me, bpp, ledger, tx)  # o2 seen again, changed; o4 gone
    assert new == 0 and _open(tx) == [("o2", "power_kw", "130"), ("o3", "presence", "absent")]

    bpp.orders["o2"] = same
    del ledger.orders["o3"]
    _run(me, bpp, ledger, tx)
    assert _open(tx) == []


def test_an_unreadable_bpp_is_reported_not_taken_for_missing_orders(me: Identity) -> None:
    tx = str(uuid.uuid4())
    _seed(tx, "u1")
    bpp, ledger = FakeBpp(), FakeLedger(tx)
    bpp.orders = {"u1": PartyOrder("ACCEPTED", 90.0, T0, T1, 150.0)}
    ledger.orders = {"u1": LedgerOrder(100.0, T0, T1, 150.0, cancelled=False)}
    _run(me, bpp, ledger, tx)
    assert _open(tx) == [("u1", "power_kw", "90")]
    bpp.down = True
    report, new = _run(me, bpp, ledger, tx)
    assert report.unreadable and "connection refused" in report.unreadable[0]
    assert (report.checked_orders, report.differences, new) == (0, [], 0)
    assert _open(tx) == [("u1", "power_kw", "90")]  # not resolved by a run that could not look
    assert not report.clean
    bpp.down = False
    report, skipped = reconcile.reconcile(me, None, bpp, transaction_id=tx)  # type: ignore[arg-type]
    assert report.unreadable[0].startswith("ledger: not configured") and report.checked_orders == 0
    with session_scope("bap") as s:
        assert reconcile.record(s, report, transaction_id=tx, skipped=skipped, now=clock.now()) == 0
    assert _open(tx) == [("u1", "power_kw", "90")]


def test_the_endpoints(client: TestClient, keys: Keys) -> None:
    listed = client.get("/api/v1/reconciliation/alerts", headers=bearer(keys.viewer))
    assert listed.status_code == 200 and set(listed.json()) == {"alerts", "next_after"}
    assert client.post("/api/v1/reconciliation/run", headers=bearer(keys.viewer)).status_code == 403
    assert client.get("/api/v1/reconciliation/alerts", headers=bearer(keys.aggregator)).status_code == 403
    no_ledger = client.post("/api/v1/reconciliation/run", headers=bearer(keys.operator), json={})
    assert no_ledger.status_code == 200
    assert no_ledger.json()["checked_orders"] == 0 and "FLEXMARKET_LEDGER_URL" in no_ledger.json()["unreadable"][0]
    bad = client.get("/api/v1/reconciliation/alerts", params={"status": "closed"}, headers=bearer(keys.viewer))
    assert bad.status_code == 400 and "status" in bad.json()["error"]["message"]
    bad = client.post("/api/v1/reconciliation/run", headers=bearer(keys.operator), json={"transaction_id": 7})
    assert bad.status_code == 400 and "transaction_id" in bad.json()["error"]["message"]
