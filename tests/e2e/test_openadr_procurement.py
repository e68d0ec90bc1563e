"""An OpenADR event from a real openleadr VTN becomes confirmed orders on the shared network's real processes,
and the VEN's final answer to the VTN is optIn.

The VTN (tests/bap/test_ven.py `Vtn`) runs in the test on loopback; the real VEN (`run_ven`) hands the event to
the BAP's grid-events endpoint with an operator key (`HttpProcurementSink`); the orchestrator searches, chooses
and orders; the VEN sees the procurement covered and sends `oadrCreatedEvent` again with optIn.

The event asks for 700 then 1,000 kW over 07:00–08:00 the day after tomorrow, the static morning offers'
window (300 + 400 + 500 kW from London's dc-01..dc-03, 300 kW from dc-north-scotland: the search is national),
which the other e2e tests leave free after 07:00: the second half-hour needs at least three providers.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from bap.ven import HttpProcurementSink, run_ven
from flexmarket.runner import Network
from flexmarket.vtn import Vtn, dr_event
from kernel.config import Settings
from tests.bap.test_ven import wait_until
from tests.e2e.helpers import bap_headers, bap_key

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.fixture
def vtn_and_ven(network: Network) -> Iterator[Vtn]:
    vtn = Vtn()
    settings = Settings(  # type: ignore[call-arg]
        FLEXMARKET_OPENADR_VTN_URL=vtn.url, FLEXMARKET_OPENADR_STATUS_POLL_S=0.5
    )
    sink = HttpProcurementSink(network.url("bap"), bap_key(network, "operator"))
    stop = threading.Event()
    ven = threading.Thread(target=run_ven, args=(settings, sink), kwargs={"stop": stop}, daemon=True)
    ven.start()
    try:
        yield vtn
    finally:
        stop.set()
        ven.join(15)
        vtn.close()


def test_an_openadr_event_is_covered_by_three_providers_and_opted_in(network: Network, vtn_and_ven: Vtn) -> None:
    day = (datetime.now(UTC) + timedelta(days=2)).replace(hour=7, minute=0, second=0, microsecond=0)
    vtn_and_ven.send(dr_event("ev-evening-1", day, [-700.0, -1000.0]))
    wait_until(
        lambda: "optIn" in vtn_and_ven.opts("ev-evening-1") and len(vtn_and_ven.opts("ev-evening-1")) >= 2,
        timeout_s=120,
    )
    listed = httpx.get(
        f"{network.url('bap')}/api/v1/procurements?source=openadr", headers=bap_headers(network, "viewer"), timeout=30
    ).json()
    (p,) = [x for x in listed if x["event_id"] == "ev-evening-1#0"]
    view = httpx.get(
        f"{network.url('bap')}/api/v1/procurements/{p['procurement_id']}",
        headers=bap_headers(network, "viewer"),
        timeout=30,
    ).json()
    assert view["status"] == "covered", view["status_reason"]
    assert [s["target_kw"] for s in view["slots"]] == [700.0, 1000.0]
    assert all(s["covered_kw"] >= s["target_kw"] - 0.1 for s in view["slots"])
    accepted = [o for o in view["orders"] if o["state"] == "ACCEPTED"]
    assert len({o["provider_id"] for o in accepted}) >= 3
    assert vtn_and_ven.opts("ev-evening-1")[-1] == "optIn"
