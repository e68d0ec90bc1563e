"""The OpenADR 2.0b VEN (`flexmarket ven`): hears the utility's VTN and hands each event to the BAP.

One process per deployment. An openleadr `OpenADRClient` registers with `FLEXMARKET_OPENADR_VTN_URL` as
`FLEXMARKET_OPENADR_VEN_NAME` and polls for events. `on_event` (and `on_update_event`, for a new modification
number) must return within openleadr's poll cycle, so it only decides (`bap/openadr_events.py`, pure),
queues the decision for the sink and answers at once with the active policy's default opt. One background
loop then, in order, hands each queued decision to the `ProcurementSink` (retrying a failed hand-off before
any later one, so a cancel never overtakes the submit it cancels) and asks the sink for each open event's
final state; when final, it sends `oadrCreatedEvent` again with the final opt (`final_opt`).

The sink is the BAP's procurement API (`HttpProcurementSink`), or any object with the same methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

import httpx
import structlog
from openleadr import OpenADRClient

from bap.openadr_events import (
    FINAL_STATUSES,
    Cancel,
    Decision,
    FinalState,
    GridEventRequest,
    OptOut,
    OptType,
    Procure,
    Reprocure,
    Unchanged,
    Withdraw,
    decide,
    final_opt,
)
from kernel.config import Settings

log = structlog.get_logger(__name__)
REGISTRATION_RETRY_S = 10.0


class ProcurementSink(Protocol):
    """Where the VEN's decisions go, and where it reads the active policy's OpenADR rules."""

    def submit(self, request: GridEventRequest) -> str:
        """Start (or, for a replay, find) the procurement for this event; its procurement id."""
        ...

    def cancel(self, event_id: str, reason: str) -> None: ...

    def final_state(self, procurement_id: str) -> FinalState | None:
        """None while the procurement is not final."""
        ...

    def default_opt(self) -> OptType: ...

    def min_covered_fraction(self) -> float: ...

    def simple_levels(self) -> Mapping[int, float]: ...


class SinkError(RuntimeError):
    pass


class HttpProcurementSink:
    """The BAP's procurement API (`X-API-Key`). The active policy is read at most once per `policy_ttl_s`."""

    def __init__(
        self,
        bap_url: str,
        api_key: str,
        *,
        timeout_s: float = 10.0,
        policy_ttl_s: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.http = httpx.Client(
            base_url=bap_url.rstrip("/") + "/api/v1",
            timeout=timeout_s,
            headers={"X-API-Key": api_key},
            transport=transport,
        )
        self.policy_ttl_s = policy_ttl_s
        self._policy: tuple[float, dict[str, Any]] | None = None

    def close(self) -> None:
        self.http.close()

    def submit(self, request: GridEventRequest) -> str:
        body = {
            "event_id": request.event_id,
            "kind": request.kind,
            "source": request.source,
            "modification_number": request.modification_number,
            "intervals": [
                {"start": s.start_utc.isoformat(), "end": s.end_utc.isoformat(), "target_kw": s.reduce_kw}
                for s in request.intervals
            ],
        }
        return str(self._call("POST", "/grid-events", body)["procurement_id"])

    def cancel(self, event_id: str, reason: str) -> None:
        self._call("POST", f"/grid-events/{event_id}/cancel", {"reason": reason})

    def final_state(self, procurement_id: str) -> FinalState | None:
        answer = self._call("GET", f"/procurements/{procurement_id}")
        if answer["status"] not in FINAL_STATUSES:
            return None
        return FinalState(status=answer["status"], covered_fraction=float(answer.get("covered_fraction") or 0.0))

    def default_opt(self) -> OptType:
        opt = self._openadr_policy().get("default_opt", "optIn")
        if opt not in ("optIn", "optOut"):
            raise SinkError(f"the active policy's default_opt is {opt!r}")
        return cast(OptType, opt)

    def min_covered_fraction(self) -> float:
        return float(self._openadr_policy().get("min_covered_fraction", 1.0))

    def simple_levels(self) -> Mapping[int, float]:
        levels = self._openadr_policy().get("simple_levels_kw") or {}
        return {int(level): float(kw) for level, kw in levels.items()}

    def _openadr_policy(self) -> dict[str, Any]:
        if self._policy is None or time.monotonic() - self._policy[0] > self.policy_ttl_s:
            self._policy = (time.monotonic(), self._call("GET", "/policies/active").get("openadr") or {})
        return self._policy[1]

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.http.request(method, path, json=body)
        if response.status_code >= 400:
            raise SinkError(f"{method} {path} answered {response.status_code}: {response.text[:300]}")
        return cast(dict[str, Any], response.json())


@dataclass
class Watch:
    """An open event: the request handed to the sink, and its procurement once the sink has taken it."""

    request: GridEventRequest
    procurement_id: str | None = None


class Ven:
    """The VEN's state and its two halves: `on_event` (openleadr's handler) and `step` (the background loop)."""

    def __init__(self, client: OpenADRClient, sink: ProcurementSink) -> None:
        self.client = client
        self.sink = sink
        self.seen: dict[str, int] = {}  # event id → the last modification number decided on
        self.answered: dict[str, OptType] = {}  # event id → the last opt sent
        self.watches: dict[str, Watch] = {}  # open events whose final opt is still to be sent
        self.pending: deque[Decision] = deque()  # decisions not yet handed to the sink, in arrival order
        self.wake = asyncio.Event()
        client.add_handler("on_event", self.on_event)
        client.add_handler("on_update_event", self.on_event)

    async def on_event(self, event: dict[str, Any]) -> OptType:
        event_id = str(event["event_descriptor"]["event_id"])
        default_opt, levels = await asyncio.to_thread(self._policy)
        decision = decide(event, previous_modification=self.seen.get(event_id), simple_levels=levels)
        log.info("openadr event", event_id=event_id, decision=type(decision).__name__, detail=str(decision))
        opt = self._take(decision, default_opt=default_opt)
        self.answered[event_id] = opt
        return opt

    def _take(self, decision: Decision, *, default_opt: OptType) -> OptType:
        """Record the decision and queue what the sink must do; the opt to answer with now."""
        if isinstance(decision, Unchanged):
            return self.answered.get(decision.event_id, default_opt)
        if isinstance(decision, OptOut):  # nothing bought: a later modification is decided afresh
            return "optOut"
        if isinstance(decision, Procure | Reprocure):
            self.seen[decision.request.event_id] = decision.request.modification_number
            self.watches[decision.request.event_id] = Watch(decision.request)
            opt = default_opt
        else:  # Cancel, Withdraw: no final opt follows
            self.seen.pop(decision.event_id, None)
            self.watches.pop(decision.event_id, None)
            opt = "optIn" if isinstance(decision, Cancel) else "optOut"  # optIn acknowledges the cancellation
        self.pending.append(decision)
        self.wake.set()
        return opt

    def _policy(self) -> tuple[OptType, Mapping[int, float]]:
        try:
            return self.sink.default_opt(), self.sink.simple_levels()
        except Exception as exc:  # the BAP is unreachable: promise nothing; the final opt follows later
            log.warning("openadr policy unreadable; answering optOut", error=str(exc))
            return "optOut", {}

    async def step(self) -> None:
        """Hand queued decisions to the sink in order, then send the final opt of every event now final."""
        while self.pending:
            decision = self.pending[0]
            try:
                procurement_id = await asyncio.to_thread(self._hand_off, decision)
            except Exception as exc:
                log.warning("openadr hand-off failed; will retry", decision=str(decision), error=str(exc))
                return
            self.pending.popleft()
            if isinstance(decision, Procure | Reprocure):
                watch = self.watches.get(decision.request.event_id)
                if watch is not None and watch.request is decision.request:  # not modified or cancelled since
                    watch.procurement_id = procurement_id
        for event_id, watch in list(self.watches.items()):
            if watch.procurement_id is not None:
                await self._report_if_final(event_id, watch)

    def _hand_off(self, decision: Decision) -> str | None:
        """The sink's part of a decision (in a worker thread: touches no VEN state); a procurement id."""
        if isinstance(decision, Procure | Reprocure):
            return self.sink.submit(decision.request)
        if isinstance(decision, Cancel | Withdraw):
            self.sink.cancel(decision.event_id, decision.reason)
        return None

    async def _report_if_final(self, event_id: str, watch: Watch) -> None:
        assert watch.procurement_id is not None
        try:
            state = await asyncio.to_thread(self.sink.final_state, watch.procurement_id)
            if state is None:
                return
            minimum = await asyncio.to_thread(self.sink.min_covered_fraction)
        except Exception as exc:
            log.warning("openadr procurement unreadable", event_id=event_id, error=str(exc))
            return
        opt = final_opt(state, min_covered_fraction=minimum)
        if self.watches.get(event_id) is not watch:  # cancelled or modified meanwhile
            return
        await self.client.created_event(
            request_id=uuid.uuid4().hex,
            event_id=event_id,
            opt_type=opt,
            modification_number=watch.request.modification_number,
        )
        del self.watches[event_id]
        self.answered[event_id] = opt
        # openleadr answers a re-sent event (same modification number) from this table: keep it the final opt.
        self.client.responded_events[event_id] = opt
        log.info("openadr final opt", event_id=event_id, opt=opt, status=state.status, covered=state.covered_fraction)

    async def run_loop(self, *, stop: threading.Event, status_poll_s: float) -> None:
        while not stop.is_set():
            self.wake.clear()  # before the step: a decision queued during it wakes the next one at once
            await self.step()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=status_poll_s)


async def serve_ven(
    *, vtn_url: str, ven_name: str, sink: ProcurementSink, stop: threading.Event, status_poll_s: float
) -> None:
    """Register (retrying until the VTN accepts), then run until `stop` is set."""
    while not stop.is_set():
        client = OpenADRClient(ven_name=ven_name, vtn_url=vtn_url, disable_signature=True, show_fingerprint=False)
        ven = Ven(client, sink)
        await client.run()
        if client.registration_id is not None:
            log.info("openadr VEN registered", vtn_url=vtn_url, ven_name=ven_name, ven_id=client.ven_id)
            try:
                await ven.run_loop(stop=stop, status_poll_s=status_poll_s)
            finally:
                await client.stop()
            return
        log.warning("openadr registration refused or VTN unreachable; retrying", vtn_url=vtn_url)
        await asyncio.sleep(REGISTRATION_RETRY_S)


def run_ven(settings: Settings, sink: ProcurementSink, *, stop: threading.Event | None = None) -> None:
    """Run the VEN until `stop` is set (or the process is interrupted)."""
    if not settings.openadr_vtn_url:
        raise ValueError("FLEXMARKET_OPENADR_VTN_URL is not set")
    asyncio.run(
        serve_ven(
            vtn_url=settings.openadr_vtn_url,
            ven_name=settings.openadr_ven_name,
            sink=sink,
            stop=stop or threading.Event(),
            status_poll_s=settings.openadr_status_poll_s,
        )
    )
