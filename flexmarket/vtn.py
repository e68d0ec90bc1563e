"""An embedded utility VTN: a real openleadr 2.0b server on a loopback port, in a thread of its own.

`flexmarket demo` plays the utility with it (the evening DR event of the replayed day) and the tests drive the
orchestrator's VEN (bap/ven.py) against it. It uses openleadr's external polling (`on_poll` hands out the events
queued with :meth:`Vtn.send`), because only then does openleadr call the VTN's `on_created_event` for every
`oadrCreatedEvent` the VEN sends — the immediate opt and the final one alike (:meth:`Vtn.opts`).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from openleadr import OpenADRServer, objects

HALF_HOUR = timedelta(minutes=30)
VEN_ID = "VEN-FLEXMARKET-1"  # the id this VTN gives the (one) VEN that registers


class Vtn:
    """A real openleadr VTN on its own event loop and thread."""

    def __init__(self, *, vtn_id: str = "FLEXMARKET-VTN", ven_id: str = VEN_ID, poll_s: float = 1.0) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.vtn_id, self.ven_id, self.poll_s = vtn_id, ven_id, poll_s
        self.queue: list[objects.Event] = []
        self.registrations: list[str] = []
        self.responses: list[tuple[str, str]] = []  # (event id, opt type), in arrival order
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/OpenADR2/Simple/2.0b"

    async def _start(self) -> OpenADRServer:
        server = OpenADRServer(
            vtn_id=self.vtn_id,
            http_port=self.port,
            http_host="127.0.0.1",
            requested_poll_freq=timedelta(seconds=self.poll_s),
            show_fingerprint=False,
        )
        server.add_handler("on_create_party_registration", self._register)
        server.add_handler("on_poll", lambda ven_id: self.queue.pop(0) if self.queue else None)
        server.add_handler("on_request_event", lambda ven_id: None)
        server.add_handler("on_created_event", self._created_event)
        await server.run()
        return server

    def _register(self, payload: dict[str, Any]) -> tuple[str, str]:
        self.registrations.append(payload["ven_name"])
        return self.ven_id, f"REG-{len(self.registrations)}"

    def _created_event(self, ven_id: str, event_id: str, opt_type: str) -> None:
        if ven_id == self.ven_id:
            self.responses.append((event_id, opt_type))

    def opts(self, event_id: str) -> list[str]:
        """The opts the VEN sent for ``event_id``, in arrival order."""
        return [opt for e, opt in self.responses if e == event_id]

    def send(self, event: objects.Event) -> None:
        self.queue.append(event)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def dr_event(
    event_id: str,
    start: datetime,
    payloads: list[float],
    *,
    ven_id: str = VEN_ID,
    signal: tuple[str, str] = ("LOAD_DISPATCH", "delta"),
    modification: int = 0,
    status: str | None = None,
    created: datetime | None = None,
) -> objects.Event:
    """An event with one signal: one 30-minute interval per payload, from `start` (a LOAD_DISPATCH `delta` in kW:
    negative = reduce load by that much)."""
    event = objects.Event(
        event_descriptor=objects.EventDescriptor(
            event_id=event_id,
            modification_number=modification,
            market_context="oadr://flexmarket.local",
            event_status=status,
            created_date_time=created or datetime.now(UTC),
        ),
        event_signals=[
            objects.EventSignal(
                signal_name=signal[0],
                signal_type=signal[1],
                signal_id=f"{event_id}-signal",
                intervals=[
                    objects.Interval(dtstart=start + i * HALF_HOUR, duration=HALF_HOUR, signal_payload=p)
                    for i, p in enumerate(payloads)
                ],
            )
        ],
        targets=[objects.Target(ven_id=ven_id)],
        response_required="always",
    )
    if status is not None:  # Event() derives the status from its period; cancelling sets it, as cancel_event does
        event.event_descriptor.event_status = status
    return event
