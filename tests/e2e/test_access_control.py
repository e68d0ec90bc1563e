"""An attacker on the BAP client API, on the shared real network: an unauthenticated cancel, another
aggregator's cancel and a viewer's cancel of an accepted order are refused and change nothing — not at the BAP,
not at the BPP, not at the ledger — and every attempt is in the audit log. Then the owner's own cancel goes
through, which shows the same request would have changed all three."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from bap import auth
from bap.client import BapClient, order_in, order_of
from bap.permissions import Role
from flexmarket.runner import Network
from kernel.db import session_scope
from tests.e2e.helpers import bap_client, bap_headers, eventually, rows, tomorrow_window

pytestmark = pytest.mark.e2e

PROVIDER, KW = "dc-03", 100  # the evening offers take 100 kW at least


def _books(db_url: str, tx: str, order_id: str) -> dict[str, Any]:
    """Every book the order is in: the BAP's order and outbox, the BPP's order and events, the ledger's order."""
    return {
        "bap_order": rows(db_url, "SELECT state, power_kw, last_error FROM bap.orders WHERE transaction_id = %s", tx),
        "bap_outbox": rows(db_url, "SELECT action FROM bap.outbox WHERE transaction_id = %s ORDER BY id", tx),
        "bpp_order": rows(db_url, "SELECT state, power_kw FROM bpp.orders WHERE id = %s", order_id),
        "bpp_events": rows(db_url, "SELECT count(*) FROM bpp.order_events WHERE order_id = %s", order_id),
        "ledger_order": rows(db_url, "SELECT transaction_id FROM ledger.orders WHERE order_id = %s", order_id),
        "ledger_cancelled": rows(
            db_url, "SELECT count(*) FROM ledger.order_cancellations WHERE order_id = %s", order_id
        ),
    }


def _accepted_order(bap: BapClient) -> tuple[str, dict[str, Any]]:
    order: dict[str, Any] | None = None
    start, end = tomorrow_window(17, 1)
    tx = bap.search(start, end, KW, region="GB-R13")["transaction_id"]
    view = bap.wait(tx, lambda v: any(o["provider_id"] == PROVIDER for o in v["offers"]), timeout=30)
    offer = next(o for o in view["offers"] if o["provider_id"] == PROVIDER and "evening" in o["item_id"])
    for action, state in (("select", "QUOTED"), ("init", "CREATED"), ("confirm", "ACCEPTED")):
        kw = {"item_id": offer["item_id"], "power_kw": KW, "window_start": start, "window_end": end}
        bap.order(action, tx, offer["bpp_id"], PROVIDER, **(kw if action == "select" else {}))
        order = order_of(bap.wait(tx, order_in(PROVIDER, state), timeout=30), PROVIDER)
        assert order is not None and order["state"] == state and not order["last_error"], order
    assert order is not None
    return str(tx), order


def test_an_attackers_cancels_are_refused_change_nothing_and_are_audited(network: Network, db_url: str) -> None:
    owner = bap_client(network)
    tx, order = _accepted_order(owner)
    order_id, bpp_id = order["order_id"], next(o["bpp_id"] for o in owner.transaction(tx)["offers"])
    eventually(lambda: rows(db_url, "SELECT 1 FROM ledger.orders WHERE order_id = %s", order_id), timeout=30)
    before = _books(db_url, tx, order_id)

    with session_scope("bap", db_url) as s:
        rival_key = auth.create_api_key(s, Role.AGGREGATOR, aggregator_id="rival-aggregator", label="attacker")
    cancel = {"transaction_id": tx, "bpp_id": bpp_id, "provider_id": PROVIDER, "reason": "gotcha"}
    api = network.url("bap") + "/api/v1"
    anonymous = httpx.post(f"{api}/cancel", json=cancel, timeout=10)
    rival = httpx.post(f"{api}/cancel", json=cancel, headers={"Authorization": f"Bearer {rival_key}"}, timeout=10)
    viewer = httpx.post(f"{api}/cancel", json=cancel, headers=bap_headers(network, "viewer"), timeout=10)
    assert (anonymous.status_code, anonymous.json()["error"]["code"]) == (401, "missing_api_key")
    assert (rival.status_code, rival.json()["error"]["code"]) == (403, "not_your_transaction")
    assert (viewer.status_code, viewer.json()["error"]["code"]) == (403, "role_forbidden")

    # Nothing was sent, so nothing can arrive: give a stray message the time a real cancel takes to land.
    time.sleep(3)
    assert _books(db_url, tx, order_id) == before

    audit = bap_client(network, "operator").audit(limit=50)["entries"]
    attempts = [e for e in audit if e["what"]["transaction_id"] == tx and e["what"]["action"] == "cancel"]
    assert [(e["who"]["role"], e["who"]["aggregator_id"], e["outcome"]["status_code"]) for e in attempts] == [
        ("viewer", None, 403),
        ("aggregator", "rival-aggregator", 403),
        (None, None, 401),
    ]
    assert all(e["what"]["order_id"] == order_id and e["from"] for e in attempts)

    # The owner's own cancel, the same request: it reaches the BPP and the ledger.
    owner.order("cancel", tx, bpp_id, PROVIDER, reason="grid need passed")
    owner.wait(tx, order_in(PROVIDER, "CANCELLED"), timeout=30)
    eventually(lambda: _books(db_url, tx, order_id)["ledger_cancelled"] == [(1,)], timeout=30)
    assert _books(db_url, tx, order_id)["bpp_order"][0][0] == "CANCELLED"
