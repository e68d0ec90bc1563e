"""End to end over real processes: search → on_search (via the gateway) → select → init → confirm →
status with three providers; order states on both sides; signatures verified at every hop."""

from __future__ import annotations

import pytest

from bap.client import order_in, order_of
from flexmarket.runner import GATEWAY_ID, Network
from tests.e2e.conftest import OTHER_CITY
from tests.e2e.helpers import bap_client, eventually, rows, tomorrow_window

pytestmark = pytest.mark.e2e


def test_search_reaches_only_matching_city_and_returns_three_providers(flow: dict, db_url: str) -> None:
    providers = {o["provider_id"] for o in flow["view"]["offers"]}
    assert providers == {"dc-01", "dc-02", "dc-03"}
    # The North Scotland platform serves another city: the gateway must not have sent it the search.
    north = rows(
        db_url,
        "select count(*) from bpp.inbox where receiver_id like 'north-platform%%' and transaction_id = %s",
        flow["tx"],
    )[0][0]
    assert north == 0
    assert all(o["bpp_id"] != "north-platform.bpp.flexmarket.local" for o in flow["view"]["offers"])
    assert OTHER_CITY != "GB-R13"


def test_plan_meets_target_at_least_cost(flow: dict) -> None:
    chosen = flow["choices"]
    assert sum(c["power_kw"] for c in chosen) >= 1500 - 0.1 * len(chosen)
    # With minimum sizes small enough to be irrelevant here, filling cheapest-first is optimal:
    # the MILP's cost must equal it.
    start, end = flow["window"]
    eligible = sorted(
        (
            o
            for o in flow["view"]["offers"]
            if o["window_start"] <= start.isoformat() and o["window_end"] >= end.isoformat()
        ),
        key=lambda o: o["price_gbp_per_mwh"],
    )
    need, expected = 1500.0, 0.0
    for o in eligible:
        take = min(need, o["max_kw"])
        expected += take * o["price_gbp_per_mwh"]
        need -= take
    assert need == 0
    assert sum(c["power_kw"] * c["price_gbp_per_mwh"] for c in chosen) == pytest.approx(expected, rel=1e-6)


def test_orders_accepted_on_both_sides(flow: dict, db_url: str) -> None:
    view = flow["view"]
    for c in flow["choices"]:
        o = order_of(view, c["provider_id"])
        assert o is not None and o["state"] == "ACCEPTED" and o["last_error"] is None
        assert o["order_id"]
        bpp = rows(
            db_url, "select state, power_kw, meter_id, transaction_id from bpp.orders where id = %s", o["order_id"]
        )
        assert bpp == [("ACCEPTED", c["power_kw"], o["meter_id"], flow["tx"])]
        assert o["meter_id"].startswith("MTR-")
        # The BPP's audit trail shows exactly one acceptance.
        events = rows(
            db_url, "select from_state, to_state from bpp.order_events where order_id = %s order by id", o["order_id"]
        )
        assert events == [(None, "CREATED"), ("CREATED", "ACCEPTED")]
        # The BAP registered the accepted order with the ledger for settlement (asynchronously).
        eventually(
            lambda o=o, c=c: (
                rows(db_url, "select provider_id, meter_id from ledger.orders where order_id = %s", o["order_id"])
                == [(c["provider_id"], o["meter_id"])]
            )
        )


def test_every_callback_arrived_once(flow: dict, db_url: str) -> None:
    n = len(flow["choices"])
    got = dict(
        rows(db_url, "select action, count(*) from bap.inbox where transaction_id = %s group by action", flow["tx"])
    )
    assert got["on_search"] == 1  # one BPP platform in the city, one catalog with three providers
    for action in ("on_select", "on_init", "on_confirm", "on_status"):
        assert got[action] == n, (action, got)


def test_signatures_verified_at_every_hop(flow: dict, db_url: str) -> None:
    tx = flow["tx"]
    bap_id = "grid-orchestrator.bap.flexmarket.local"
    # gateway received the BAP's search, signed by the BAP
    gw = rows(
        db_url,
        "select action, sender_id, signature_verified from gateway.inbox where transaction_id = %s order by id",
        tx,
    )
    assert ("search", bap_id, True) in gw
    assert any(a == "on_search" and v for a, _, v in gw)
    # the BPP received the search through the gateway: BAP's signature AND the gateway's, both verified
    bpp_search = rows(
        db_url,
        'select sender_id, gateway_id, signature_verified, "authorization", '
        "gateway_authorization from bpp.inbox where transaction_id = %s and action = 'search'",
        tx,
    )
    assert len(bpp_search) == 1
    sender, gateway, verified, auth, gw_auth = bpp_search[0]
    assert (sender, gateway, verified) == (bap_id, GATEWAY_ID, True)
    assert auth.startswith('Signature keyId="' + bap_id) and gw_auth.startswith('Signature keyId="' + GATEWAY_ID)
    # the BAP received on_search relayed by the gateway with the BPP's original signature kept
    on_search = rows(
        db_url,
        "select sender_id, gateway_id, signature_verified from bap.inbox "
        "where transaction_id = %s and action = 'on_search'",
        tx,
    )
    assert on_search == [("dc-platform.bpp.flexmarket.local", GATEWAY_ID, True)]
    # every inbox row of every participant in this transaction is verified; every outbox row delivered
    for schema in ("bap", "bpp", "gateway"):
        assert (
            rows(
                db_url, f"select count(*) from {schema}.inbox where transaction_id = %s and not signature_verified", tx
            )[0][0]
            == 0
        )
        undelivered = rows(
            db_url,
            f"select action, status, last_error from {schema}.outbox "
            "where transaction_id = %s and status <> 'DELIVERED'",
            tx,
        )
        assert undelivered == [], (schema, undelivered)


def test_bpp_refuses_confirm_beyond_capacity(network: Network, flow: dict, db_url: str) -> None:
    """A second buyer transaction asking for more than what is left on an offer is refused at confirm."""
    bap = bap_client(network)
    start, end = flow["window"]
    c = next(c for c in flow["choices"] if c["provider_id"] == "dc-01")
    available = next(o["available_kw"] for o in flow["view"]["offers"] if o["item_id"] == c["item_id"])
    left = available - c["power_kw"]
    tx = bap.search(start, end, 100, region="GB-R13")["transaction_id"]
    bap.wait(tx, lambda v: any(o["provider_id"] == "dc-01" for o in v["offers"]))
    want = max(left + 100, 100)
    for action, states in [("select", ("QUOTED",)), ("init", ("CREATED",))]:
        bap.order(
            action, tx, c["bpp_id"], "dc-01", item_id=c["item_id"], power_kw=want, window_start=start, window_end=end
        )
        bap.wait(tx, order_in("dc-01", *states))
    bap.order("confirm", tx, c["bpp_id"], "dc-01")
    view = bap.wait(tx, lambda v: bool(order_of(v, "dc-01")["last_error"]))
    o = order_of(view, "dc-01")
    assert o["state"] == "CREATED"
    assert o["last_error"].startswith("40002")
    assert rows(db_url, "select state from bpp.orders where id = %s", o["order_id"]) == [("CREATED",)]
    total = rows(
        db_url,
        "select coalesce(sum(power_kw), 0) from bpp.orders where item_id = %s and state = 'ACCEPTED'",
        c["item_id"],
    )[0][0]
    assert total <= available


def test_cancel_and_update_round_trip(network: Network, flow: dict, db_url: str) -> None:
    bap = bap_client(network)
    start, end = tomorrow_window(30, 1)  # the morning offers (06:00 the day after tomorrow)
    tx = bap.search(start, end, 100, region="GB-R13")["transaction_id"]
    view = bap.wait(tx, lambda v: any(o["item_id"] == "dc-02-morning" for o in v["offers"]))
    o = next(o for o in view["offers"] if o["item_id"] == "dc-02-morning")
    for action, states in [("select", ("QUOTED",)), ("init", ("CREATED",)), ("confirm", ("ACCEPTED",))]:
        bap.order(
            action, tx, o["bpp_id"], "dc-02", item_id=o["item_id"], power_kw=100, window_start=start, window_end=end
        )
        bap.wait(tx, order_in("dc-02", *states))
    bap.order("update", tx, o["bpp_id"], "dc-02", power_kw=150)
    view = bap.wait(
        tx,
        lambda v: order_of(v, "dc-02")["power_kw"] == 150 and any(cb["action"] == "on_update" for cb in v["callbacks"]),
    )
    order_id = order_of(view, "dc-02")["order_id"]
    assert rows(db_url, "select power_kw from bpp.orders where id = %s", order_id) == [(150.0,)]
    bap.order("cancel", tx, o["bpp_id"], "dc-02", reason="grid need passed")
    view = bap.wait(tx, order_in("dc-02", "CANCELLED"))
    assert order_of(view, "dc-02")["state"] == "CANCELLED"
    assert rows(db_url, "select state, cancellation_reason from bpp.orders where id = %s", order_id) == [
        ("CANCELLED", "grid need passed")
    ]
    # A cancelled order cannot be updated: the BPP answers on_update with a policy error.
    bap.order("update", tx, o["bpp_id"], "dc-02", power_kw=120)
    view = bap.wait(tx, lambda v: bool(order_of(v, "dc-02")["last_error"]))
    assert order_of(view, "dc-02")["last_error"].startswith("50002")
    assert rows(db_url, "select power_kw from bpp.orders where id = %s", order_id) == [(150.0,)]
