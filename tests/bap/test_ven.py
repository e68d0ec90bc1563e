"""bap/ven.py against a real openleadr VTN: an `OpenADRServer` on a free loopback port, and the real VEN
(`run_ven`, in a thread, as `flexmarket ven` runs it) registering with it, polling it and answering it.

The BAP side (the procurement API and its grid-events webhook) is being built separately and is not ready, so the
VEN's `ProcurementSink` here is an in-memory recording sink implementing the same Protocol: the test sees
exactly what the VEN hands over, and decides when a procurement is final and how well it was covered.

The VTN uses openleadr's external polling (`on_poll` hands out the events the test queues), because only then
does openleadr call the VTN's `on_created_event` for every `oadrCreatedEvent` — the immediate opt and the
final one alike."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from bap.openadr_events import HALF_HOUR, FinalState, GridEventRequest, OptType, Slot
from bap.ven import HttpProcurementSink, SinkError, run_ven
from flexmarket.vtn import Vtn, dr_event
from kernel.config import Settings

pytestmark = pytest.mark.timeout(90)
VEN_NAME = "flexmarket-orchestrator"


@dataclass
class RecordingSink:
    """The ProcurementSink Protocol in memory: records submits and cancels; the test sets final states."""

    opt: OptType = "optIn"
    minimum: float = 0.8
    levels: dict[int, float] = field(default_factory=lambda: {1: 500.0, 2: 1000.0, 3: 2000.0})
    submitted: list[tuple[str, GridEventRequest]] = field(default_factory=list)
    cancelled: list[tuple[str, str]] = field(default_factory=list)
    finals: dict[str, FinalState] = field(default_factory=dict)

    def submit(self, request: GridEventRequest) -> str:
        procurement_id = f"proc-{len(self.submitted) + 1}"
        self.submitted.append((procurement_id, request))
        return procurement_id

    def cancel(self, event_id: str, reason: str) -> None:
        self.cancelled.append((event_id, reason))

    def final_state(self, procurement_id: str) -> FinalState | None:
        return self.finals.get(procurement_id)

    def default_opt(self) -> OptType:
        return self.opt

    def min_covered_fraction(self) -> float:
        return self.minimum

    def simple_levels(self) -> Mapping[int, float]:
        return self.levels

    def procurement_of(self, event_id: str) -> list[tuple[str, GridEventRequest]]:
        return [(p, r) for p, r in self.submitted if r.event_id == event_id]


def wait_until(predicate: Callable[[], object], *, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {predicate}")
        time.sleep(0.05)


@dataclass
class Network:
    vtn: Vtn
    sink: RecordingSink
    # 17:00 UTC tomorrow (wall clock): openleadr answers only events that have not completed yet.
    t17: datetime


@pytest.fixture(scope="module")
def net() -> Iterator[Network]:
    vtn = Vtn()
    sink = RecordingSink()
    settings = Settings(FLEXMARKET_OPENADR_VTN_URL=vtn.url, FLEXMARKET_OPENADR_STATUS_POLL_S=0.2)  # type: ignore[call-arg]
    stop = threading.Event()
    ven = threading.Thread(target=run_ven, args=(settings, sink), kwargs={"stop": stop}, daemon=True)
    ven.start()
    tomorrow = datetime.now(UTC).date() + timedelta(days=1)
    try:
        yield Network(vtn, sink, datetime(tomorrow.year, tomorrow.month, tomorrow.day, 17, tzinfo=UTC))
    finally:
        stop.set()
        ven.join(15)
        vtn.close()
    assert not ven.is_alive(), "the VEN stops when asked"


def test_the_ven_registers_under_its_name(net: Network) -> None:
    wait_until(lambda: net.vtn.registrations)
    assert net.vtn.registrations == [VEN_NAME]


def test_a_delta_event_becomes_one_procurement_and_a_covered_one_opts_in(net: Network) -> None:
    net.sink.opt = "optOut"  # the policy's default opt, so that the final optIn is told apart from it
    net.vtn.send(dr_event("ev-covered", net.t17, [-500.0, -500.0]))
    wait_until(lambda: net.sink.procurement_of("ev-covered") and net.vtn.opts("ev-covered"))
    [(procurement_id, request)] = net.sink.procurement_of("ev-covered")
    assert request.intervals == (
        Slot(net.t17, net.t17 + HALF_HOUR, 500.0),
        Slot(net.t17 + HALF_HOUR, net.t17 + 2 * HALF_HOUR, 500.0),
    )
    assert (request.source, request.kind, request.modification_number) == ("openadr", "DR_EVENT", 0)
    assert net.vtn.opts("ev-covered") == ["optOut"]  # the immediate default opt

    time.sleep(0.5)  # not final yet: no second answer
    assert net.vtn.opts("ev-covered") == ["optOut"]
    net.sink.finals[procurement_id] = FinalState("covered", 1.0)
    wait_until(lambda: len(net.vtn.opts("ev-covered")) == 2)
    assert net.vtn.opts("ev-covered") == ["optOut", "optIn"]
    net.sink.opt = "optIn"


def test_a_procurement_covered_below_the_minimum_opts_out(net: Network) -> None:
    net.vtn.send(dr_event("ev-partial", net.t17, [-300.0]))
    wait_until(lambda: net.sink.procurement_of("ev-partial") and net.vtn.opts("ev-partial"))
    [(procurement_id, _)] = net.sink.procurement_of("ev-partial")
    assert net.vtn.opts("ev-partial") == ["optIn"]
    net.sink.finals[procurement_id] = FinalState("partially_covered", 0.5)  # minimum 0.8
    wait_until(lambda: len(net.vtn.opts("ev-partial")) == 2)
    assert net.vtn.opts("ev-partial") == ["optIn", "optOut"]


def test_a_simple_level_is_procured_at_the_policys_kw(net: Network) -> None:
    net.vtn.send(dr_event("ev-simple", net.t17, [2.0], signal=("SIMPLE", "level")))
    wait_until(lambda: net.sink.procurement_of("ev-simple"))
    [(_, request)] = net.sink.procurement_of("ev-simple")
    assert request.intervals == (Slot(net.t17, net.t17 + HALF_HOUR, 1000.0),)


def test_a_request_to_increase_load_is_opted_out_and_not_procured(net: Network) -> None:
    net.vtn.send(dr_event("ev-increase", net.t17, [400.0]))
    wait_until(lambda: net.vtn.opts("ev-increase"))
    assert net.vtn.opts("ev-increase") == ["optOut"]
    assert net.sink.procurement_of("ev-increase") == []


def test_a_modified_event_is_re_procured_and_a_cancelled_one_cancelled(net: Network) -> None:
    net.vtn.send(dr_event("ev-changing", net.t17, [-500.0]))
    wait_until(lambda: net.sink.procurement_of("ev-changing"))
    net.vtn.send(dr_event("ev-changing", net.t17, [-500.0, -900.0], modification=1))
    wait_until(lambda: len(net.sink.procurement_of("ev-changing")) == 2)
    (first_id, _), (second_id, second) = net.sink.procurement_of("ev-changing")
    assert second.modification_number == 1
    assert [s.reduce_kw for s in second.intervals] == [500.0, 900.0]

    net.vtn.send(dr_event("ev-changing", net.t17, [-500.0, -900.0], modification=2, status="cancelled"))
    wait_until(lambda: net.sink.cancelled)
    assert net.sink.cancelled == [("ev-changing", "cancelled by the VTN")]
    answers_before = len(net.vtn.opts("ev-changing"))
    # Neither the superseded procurement nor the cancelled one is answered when it finishes.
    net.sink.finals[first_id] = FinalState("covered", 1.0)
    net.sink.finals[second_id] = FinalState("cancelled", 0.0)
    time.sleep(1.0)
    assert len(net.vtn.opts("ev-changing")) == answers_before


def test_the_http_sink_speaks_the_bap_contract() -> None:
    """HttpProcurementSink against a stand-in transport: the request bodies, the key header, final states and
    the active policy's OpenADR rules, as the BAP's procurement API will answer them."""
    seen: list[tuple[str, str, Any]] = []
    statuses = {
        "p-1": {"status": "collecting", "covered_fraction": 0.2},
        "p-2": {"status": "partially_covered", "covered_fraction": 0.6},
    }

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.headers["X-API-Key"] == "fmb_test"
        body = json.loads(request.content) if request.content else None
        seen.append((request.method, request.url.path, body))
        if request.url.path == "/api/v1/grid-events":
            return httpx.Response(201, json={"procurement_id": "p-1", "status": "collecting"})
        if request.url.path.startswith("/api/v1/procurements/"):
            return httpx.Response(200, json=statuses[request.url.path.rsplit("/", 1)[1]])
        if request.url.path == "/api/v1/policies/active":
            policy = {"default_opt": "optOut", "min_covered_fraction": 0.75, "simple_levels_kw": {"1": 100, "3": 900}}
            return httpx.Response(200, json={"version": 4, "openadr": policy})
        if request.url.path == "/api/v1/grid-events/ev-9/cancel":
            return httpx.Response(200, json={})
        return httpx.Response(404, json={"detail": "no such route"})

    sink = HttpProcurementSink("http://bap.test/", "fmb_test", transport=httpx.MockTransport(answer))
    t = datetime(2026, 12, 3, 17, tzinfo=UTC)
    request = GridEventRequest("ev-9", 3, (Slot(t, t + HALF_HOUR, 500.0),))
    assert sink.submit(request) == "p-1"
    assert seen[-1] == (
        "POST",
        "/api/v1/grid-events",
        {
            "event_id": "ev-9",
            "kind": "DR_EVENT",
            "source": "openadr",
            "modification_number": 3,
            "intervals": [
                {"start": "2026-12-03T17:00:00+00:00", "end": "2026-12-03T17:30:00+00:00", "target_kw": 500.0}
            ],
        },
    )
    sink.cancel("ev-9", "cancelled by the VTN")
    assert seen[-1] == ("POST", "/api/v1/grid-events/ev-9/cancel", {"reason": "cancelled by the VTN"})
    assert sink.final_state("p-1") is None
    assert sink.final_state("p-2") == FinalState("partially_covered", 0.6)
    assert (sink.default_opt(), sink.min_covered_fraction(), dict(sink.simple_levels())) == (
        "optOut",
        0.75,
        {1: 100.0, 3: 900.0},
    )
    assert [path for _, path, _ in seen].count("/api/v1/policies/active") == 1  # read once within its lifetime
    with pytest.raises(SinkError, match="404"):
        sink.cancel("ev-unknown", "x")
