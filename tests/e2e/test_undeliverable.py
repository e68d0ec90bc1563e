"""A BPP down for longer than the delivery TTL: the actions the BAP accepted (202) and could not deliver
show as failed — in the transaction view, in GET /api/v1/failures and on the order, whose state does not
pretend (a cancel that never arrived leaves it ACCEPTED) — and a search the gateway could not fan out to
it is reported by the gateway. A network of its own, with a short TTL."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from bap.client import order_in, order_of
from bpp.catalog import example_config
from flexmarket.runner import Network
from tests.e2e.helpers import bap_client, own_network, tomorrow_window

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TTL_S = 4


@pytest.fixture(scope="module")
def short_ttl_network(
    pg_server_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Network]:
    with own_network(
        pg_server_url,
        redis_url,
        tmp_path_factory.mktemp("short-ttl"),
        prefix="fm_ttl",
        providers_config=example_config(1),
        extra_env={"FLEXMARKET_REDELIVER_AFTER_S": "1", "FLEXMARKET_DELIVERY_TTL_S": str(TTL_S)},
    ) as net:
        yield net


def test_actions_to_a_bpp_down_past_the_ttl_show_as_failed(short_ttl_network: Network) -> None:
    net = short_ttl_network
    bap = bap_client(net)
    start, end = tomorrow_window(16, 1)
    tx = bap.search(start, end, 100, region="GB-R13")["transaction_id"]
    view = bap.wait(tx, lambda v: any(o["provider_id"] == "dc-01" for o in v["offers"]), timeout=30)
    bpp_id = view["offers"][0]["bpp_id"]
    for action, state in (("select", "QUOTED"), ("init", "CREATED"), ("confirm", "ACCEPTED")):
        kw = {"item_id": "dc-01-evening-peak", "power_kw": 100, "window_start": start, "window_end": end}
        bap.order(action, tx, bpp_id, "dc-01", **(kw if action == "select" else {}))
        bap.wait(tx, order_in("dc-01", state), timeout=30)
    net.processes["bpp"].stop(signal.SIGKILL)
    try:
        sent = [bap.order(a, tx, bpp_id, "dc-01")["message_id"] for a in ("status", "cancel")]
        # A search made now cannot reach the BPP either: the gateway reports its failed fan-out to the BAP.
        unanswered = bap.search(start, end, 100, region="GB-R13")["transaction_id"]
        bap.wait(
            tx,
            lambda v: [s["status"] for s in v["sent"] if s["message_id"] in sent] == ["FAILED", "FAILED"],
            timeout=TTL_S + 30,
        )
        view = bap.transaction(tx)
        reported = bap.wait(unanswered, lambda v: v["failures"], timeout=TTL_S + 30)["failures"]
    finally:
        net.start(["bpp"])
    assert [(f["kind"], f["bpp_id"]) for f in reported] == [("fan_out_failed", bpp_id)]
    assert (
        "TTL" in reported[0]["reason"]
        and reported[0]["from"] == net.manifest["participants"]["gateway"]["subscriber_id"]
    )
    failed = {f["message_id"]: f for f in view["failures"]}
    assert set(sent) <= set(failed)
    for mid, action in zip(sent, ("status", "cancel"), strict=True):
        assert failed[mid]["kind"] == "not_delivered" and failed[mid]["action"] == action
        assert "TTL" in failed[mid]["reason"] and failed[mid]["order"]["provider_id"] == "dc-01"
    order = order_of(view, "dc-01")
    assert order is not None and order["state"] == "ACCEPTED"  # the cancel never arrived: not CANCELLED
    assert order["last_error"] and "not delivered" in order["last_error"] and "TTL" in order["last_error"]
    listed = bap.failures(tx)
    assert {f["message_id"] for f in listed} == set(sent)
    assert [s["status"] for s in view["sent"] if s["message_id"] in sent] == ["FAILED", "FAILED"]
