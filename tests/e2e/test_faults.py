"""Faults: a BPP that dies between confirm and its on_confirm, and a BAP that is down when its
callback is sent. In both cases the callback arrives exactly once after the restart."""

from __future__ import annotations

import signal
import time

import pytest

from bap.client import BapClient, order_in, order_of
from flexmarket.runner import Network
from tests.e2e.helpers import bap_client, eventually, rows, scalar, tomorrow_window

pytestmark = pytest.mark.e2e


def initialised_order(network: Network, provider: str, kw: float) -> tuple[BapClient, str, dict]:
    bap = bap_client(network)
    start, end = tomorrow_window(30, 1)  # the morning offers, which the other e2e tests leave free
    tx = bap.search(start, end, kw, region="GB-R13")["transaction_id"]
    view = bap.wait(tx, lambda v: any(o["provider_id"] == provider for o in v["offers"]), timeout=30)
    offer = next(o for o in view["offers"] if o["provider_id"] == provider and "morning" in o["item_id"])
    for action, state in (("select", "QUOTED"), ("init", "CREATED")):
        bap.order(
            action,
            tx,
            offer["bpp_id"],
            provider,
            item_id=offer["item_id"],
            power_kw=kw,
            window_start=start,
            window_end=end,
        )
        bap.wait(tx, order_in(provider, state), timeout=30)
    return bap, tx, offer


def test_bpp_killed_between_confirm_and_on_confirm(network: Network, db_url: str) -> None:
    bap, tx, offer = initialised_order(network, "dc-03", 100)
    worker_bpp, bpp = network.processes["worker-bpp"], network.processes["bpp"]
    worker_bpp.stop(signal.SIGKILL)  # the BPP's own worker: nothing will process its queue
    try:
        bap.order("confirm", tx, offer["bpp_id"], "dc-03")
        # The BPP web process accepts (ACK) and records the confirm, then dies before answering.
        eventually(
            lambda: (
                rows(db_url, "select status from bpp.inbox where transaction_id = %s and action = 'confirm'", tx)
                == [("RECEIVED",)]
            )
        )
        bpp.stop(signal.SIGKILL)
        time.sleep(3)  # the beat sweep re-enqueues the stuck confirm several times meanwhile
        assert order_of(bap.transaction(tx), "dc-03")["state"] == "CREATED"
        assert (
            scalar(db_url, "select count(*) from bpp.outbox where transaction_id = %s and action = 'on_confirm'", tx)
            == 0
        )
    finally:
        network.start(["bpp", "worker-bpp"])
    view = bap.wait(tx, order_in("dc-03", "ACCEPTED"), timeout=30)
    assert order_of(view, "dc-03")["last_error"] is None
    time.sleep(3)  # give duplicate tasks from the sweep every chance to do harm
    assert scalar(db_url, "select count(*) from bap.inbox where transaction_id = %s and action = 'on_confirm'", tx) == 1
    assert rows(db_url, "select status from bpp.outbox where transaction_id = %s and action = 'on_confirm'", tx) == [
        ("DELIVERED",)
    ]
    order_id = order_of(view, "dc-03")["order_id"]
    assert rows(
        db_url, "select from_state, to_state from bpp.order_events where order_id = %s order by id", order_id
    ) == [(None, "CREATED"), ("CREATED", "ACCEPTED")]


def test_callback_retried_until_the_bap_is_back(network: Network, db_url: str) -> None:
    bap, tx, offer = initialised_order(network, "dc-01", 100)
    worker_bpp, bap_web = network.processes["worker-bpp"], network.processes["bap"]
    worker_bpp.stop(signal.SIGKILL)
    try:
        bap.order("confirm", tx, offer["bpp_id"], "dc-01")
        eventually(
            lambda: (
                rows(db_url, "select count(*) from bpp.inbox where transaction_id = %s and action = 'confirm'", tx)
                == [(1,)]
            )
        )
        bap_web.stop(signal.SIGKILL)  # the receiver of on_confirm goes down
        network.start(["worker-bpp"])
        # The BPP keeps trying, with backoff, and records each failure.
        eventually(
            lambda: (
                (
                    scalar(
                        db_url,
                        "select max(attempts) from bpp.outbox where transaction_id = %s and action = 'on_confirm'",
                        tx,
                    )
                    or 0
                )
                >= 2
            ),
            timeout=30,
        )
        row = rows(
            db_url, "select status, last_error from bpp.outbox where transaction_id = %s and action = 'on_confirm'", tx
        )[0]
        assert row[0] == "PENDING" and "Connect" in (row[1] or "")
    finally:
        network.start(["bap"])
    view = bap.wait(tx, order_in("dc-01", "ACCEPTED"), timeout=60)
    assert order_of(view, "dc-01")["last_error"] is None
    assert order_of(view, "dc-01")["state"] == "ACCEPTED"
    time.sleep(2)
    assert scalar(db_url, "select count(*) from bap.inbox where transaction_id = %s and action = 'on_confirm'", tx) == 1
    status, attempts = rows(
        db_url, "select status, attempts from bpp.outbox where transaction_id = %s and action = 'on_confirm'", tx
    )[0]
    assert status == "DELIVERED" and attempts >= 2
