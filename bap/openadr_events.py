"""OpenADR 2.0b events → procurement decisions (pure: plain data in, plain data out; no clock, no I/O).

The VEN (`bap/ven.py`) receives events as openleadr parses them: dicts with `event_descriptor`
(`event_id`, `modification_number`, `event_status`), `active_period` (`dtstart`, `duration`) and
`event_signals` (each `signal_name`, `signal_type`, `intervals` of `dtstart`, `duration`, `signal_payload`).
`decide` turns one into a `Decision`:

- `LOAD_DISPATCH` of type `delta`: the payload is kW per interval; negative = reduce load by that much;
  any positive value (a request to increase load) → `OptOut`.
- `SIMPLE` of type `level`: levels 1–3 → kW through the active policy's `SimpleLevelMapping`; level 0 asks
  for nothing.
- anything else → `OptOut` with the reason.
- status `cancelled` → `Cancel`; a modification number above the one already seen → `Reprocure` (or
  `Withdraw` when the modified event is one we refuse).

OpenADR intervals (any start, any length) become half-hour slots on UTC half-hour boundaries. A slot's target
is the largest reduction any interval asks for during that slot, so the procured reduction meets the request
at every instant; slots no interval asks anything of are left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NamedTuple

HALF_HOUR = timedelta(minutes=30)
MAX_EVENT_SPAN = timedelta(days=7)
OptType = Literal["optIn", "optOut"]
SimpleLevelMapping = Mapping[int, float]
# The BAP's procurement statuses after which nothing changes for the event (GET /api/v1/procurements/{id}).
FINAL_STATUSES = frozenset({"covered", "partially_covered", "failed", "cancelled", "halted"})
# The unit scales openleadr may attach to a LOAD_DISPATCH signal's measurement (W), as a factor to kW.
_KW_PER_UNIT = {("W", "none"): 0.001, ("W", "k"): 1.0, ("W", "M"): 1000.0}


class Slot(NamedTuple):
    """One half-hour of a request: reduce load by `reduce_kw` from `start_utc` to `end_utc`."""

    start_utc: datetime
    end_utc: datetime
    reduce_kw: float


@dataclass(frozen=True)
class GridEventRequest:
    """A DR event as the BAP's `POST /api/v1/grid-events` takes it."""

    event_id: str
    modification_number: int
    intervals: tuple[Slot, ...]
    source: str = "openadr"
    kind: str = "DR_EVENT"

    def __post_init__(self) -> None:
        assert self.intervals, "a request asks for at least one slot"
        for slot in self.intervals:
            assert slot.start_utc.tzinfo is UTC, "slots are in UTC"
            assert _on_half_hour(slot.start_utc) and slot.end_utc - slot.start_utc == HALF_HOUR, slot
            assert slot.reduce_kw > 0, slot
        starts = [s.start_utc for s in self.intervals]
        assert starts == sorted(set(starts)), "slots are in time order, each once"


@dataclass(frozen=True)
class Procure:
    request: GridEventRequest


@dataclass(frozen=True)
class Reprocure:
    """The event changed (a higher modification number): buy for the new intervals instead."""

    request: GridEventRequest


@dataclass(frozen=True)
class Cancel:
    event_id: str
    reason: str


@dataclass(frozen=True)
class OptOut:
    """An event we do not take part in, and never bought for."""

    event_id: str
    reason: str


@dataclass(frozen=True)
class Withdraw:
    """An event we bought for, modified into one we refuse: cancel the procurement and opt out."""

    event_id: str
    reason: str


@dataclass(frozen=True)
class Unchanged:
    """Nothing to do (the same modification again, or an event already completed)."""

    event_id: str


Decision = Procure | Reprocure | Cancel | OptOut | Withdraw | Unchanged


@dataclass(frozen=True)
class FinalState:
    """A procurement that will not change any more."""

    status: str
    covered_fraction: float

    def __post_init__(self) -> None:
        assert self.status in FINAL_STATUSES, self.status
        assert 0.0 <= self.covered_fraction <= 1.0 + 1e-9, self.covered_fraction


class Refusal(Exception):
    """An event we cannot or will not translate; its message is the opt-out reason."""


def final_opt(state: FinalState, *, min_covered_fraction: float) -> OptType:
    """optIn when covered, or partially covered at least to the policy's minimum fraction; optOut otherwise
    (failed, cancelled, halted, or too little covered)."""
    if state.status == "covered":
        return "optIn"
    if state.status == "partially_covered" and state.covered_fraction >= min_covered_fraction:
        return "optIn"
    return "optOut"


def decide(
    event: Mapping[str, Any], *, previous_modification: int | None, simple_levels: SimpleLevelMapping
) -> Decision:
    """What to do about `event`, given the modification number last seen for it (None: never seen)."""
    descriptor = event["event_descriptor"]
    event_id = str(descriptor["event_id"])
    modification = int(descriptor.get("modification_number") or 0)
    status = descriptor.get("event_status")
    if status == "cancelled":
        return Cancel(event_id, "cancelled by the VTN")
    if status == "completed" or (previous_modification is not None and modification <= previous_modification):
        return Unchanged(event_id)
    try:
        slots = event_slots(event, simple_levels=simple_levels)
    except Refusal as refusal:
        return OptOut(event_id, str(refusal)) if previous_modification is None else Withdraw(event_id, str(refusal))
    request = GridEventRequest(event_id=event_id, modification_number=modification, intervals=slots)
    return Procure(request) if previous_modification is None else Reprocure(request)


def event_slots(event: Mapping[str, Any], *, simple_levels: SimpleLevelMapping) -> tuple[Slot, ...]:
    """The event's reduction as half-hour slots; raises `Refusal` for an event we do not take part in."""
    signals = list(event.get("event_signals") or [])
    signal = _supported_signal(signals)
    intervals = _timed_intervals(signal, event.get("active_period") or {})
    if signal["signal_name"] == "LOAD_DISPATCH":
        reductions = _delta_reductions(intervals, kw_per_unit=_kw_per_unit(signal))
    else:
        reductions = _level_reductions(intervals, simple_levels)
    slots = half_hour_slots(reductions)
    if not slots:
        raise Refusal("the event asks for no load reduction")
    return slots


def half_hour_slots(reductions: Iterable[tuple[datetime, datetime, float]]) -> tuple[Slot, ...]:
    """Spread (start, end, reduce_kw) intervals over the UTC half-hours they touch; each half-hour gets the
    largest reduction asked of it. Intervals asking for nothing (≤ 0 kW) or lasting no time are skipped."""
    by_start: dict[datetime, float] = {}
    for start, end, reduce_kw in reductions:
        if reduce_kw <= 0 or end <= start:
            continue
        slot_start = _floor_half_hour(start.astimezone(UTC))
        while slot_start < end:
            by_start[slot_start] = max(by_start.get(slot_start, 0.0), reduce_kw)
            slot_start += HALF_HOUR
    return tuple(Slot(s, s + HALF_HOUR, kw) for s, kw in sorted(by_start.items()))


def _supported_signal(signals: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    for name, kind in (("LOAD_DISPATCH", "delta"), ("SIMPLE", "level")):
        for signal in signals:
            if signal.get("signal_name") == name and signal.get("signal_type") == kind:
                return signal
    seen = ", ".join(f"{s.get('signal_name')}/{s.get('signal_type')}" for s in signals) or "none"
    raise Refusal(f"no supported signal (LOAD_DISPATCH/delta or SIMPLE/level); the event has {seen}")


def _timed_intervals(
    signal: Mapping[str, Any], active_period: Mapping[str, Any]
) -> list[tuple[datetime, datetime, float]]:
    """(start, end, payload) per interval; an interval without its own dtstart follows the one before it
    (the first starts at the active period's dtstart)."""
    cursor = active_period.get("dtstart")
    out: list[tuple[datetime, datetime, float]] = []
    for interval in signal.get("intervals") or []:
        start = interval.get("dtstart") or cursor
        duration = interval.get("duration")
        if not isinstance(start, datetime) or start.tzinfo is None:
            raise Refusal("an interval has no time-zone-aware start")
        if not isinstance(duration, timedelta) or duration <= timedelta(0):
            raise Refusal("an interval is open-ended or has no duration")
        out.append((start, start + duration, float(interval["signal_payload"])))
        cursor = start + duration
    if not out:
        raise Refusal("the signal has no intervals")
    if max(e for _, e, _ in out) - min(s for s, _, _ in out) > MAX_EVENT_SPAN:
        raise Refusal(f"the event spans more than {MAX_EVENT_SPAN.days} days")
    return out


def _kw_per_unit(signal: Mapping[str, Any]) -> float:
    measurement = signal.get("measurement")
    if not measurement:
        return 1.0  # the convention: a delta without a measurement is in kW
    key = (measurement.get("unit"), measurement.get("scale") or "none")
    if key not in _KW_PER_UNIT:
        raise Refusal(f"unsupported LOAD_DISPATCH unit {key[1]}·{key[0]}")
    return _KW_PER_UNIT[key]


def _delta_reductions(
    intervals: list[tuple[datetime, datetime, float]], *, kw_per_unit: float
) -> list[tuple[datetime, datetime, float]]:
    if any(payload > 0 for _, _, payload in intervals):
        raise Refusal("LOAD_DISPATCH delta asks to increase load")
    return [(start, end, -payload * kw_per_unit) for start, end, payload in intervals]


def _level_reductions(
    intervals: list[tuple[datetime, datetime, float]], simple_levels: SimpleLevelMapping
) -> list[tuple[datetime, datetime, float]]:
    out = []
    for start, end, payload in intervals:
        level = int(payload)
        if level != payload or not (level == 0 or level in simple_levels):
            raise Refusal(f"SIMPLE level {payload:g} has no kW in the active policy")
        out.append((start, end, float(simple_levels[level]) if level else 0.0))
    return out


def _on_half_hour(t: datetime) -> bool:
    return t.minute % 30 == 0 and t.second == 0 and t.microsecond == 0


def _floor_half_hour(t: datetime) -> datetime:
    return t.replace(minute=t.minute - t.minute % 30, second=0, microsecond=0)
