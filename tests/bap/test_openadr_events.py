"""bap/openadr_events.py: OpenADR events (as openleadr parses them) → procurement decisions.

LOAD_DISPATCH delta: negative = reduce by that many kW, positive → optOut; SIMPLE levels → kW through the
policy's mapping; other signals → optOut; intervals split/aligned to UTC half-hours (each half-hour gets the
largest reduction asked of it); cancelled → Cancel; a higher modification number → Reprocure / Withdraw."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bap.openadr_events import (
    HALF_HOUR,
    Cancel,
    FinalState,
    GridEventRequest,
    OptOut,
    Procure,
    Reprocure,
    Slot,
    Unchanged,
    Withdraw,
    decide,
    final_opt,
    half_hour_slots,
)

T17 = datetime(2026, 12, 3, 17, 0, tzinfo=UTC)
LEVELS = {1: 500.0, 2: 1000.0, 3: 2000.0}


def interval(start: datetime, minutes: float, payload: float) -> dict[str, Any]:
    return {"dtstart": start, "duration": timedelta(minutes=minutes), "signal_payload": payload, "uid": 0}


def event(
    *intervals: dict[str, Any],
    name: str = "LOAD_DISPATCH",
    kind: str = "delta",
    event_id: str = "ev-1",
    modification: int = 0,
    status: str = "far",
    measurement: dict[str, Any] | None = None,
) -> dict[str, Any]:
    signal: dict[str, Any] = {"signal_name": name, "signal_type": kind, "signal_id": "s", "intervals": list(intervals)}
    if measurement is not None:
        signal["measurement"] = measurement
    return {
        "event_descriptor": {"event_id": event_id, "modification_number": modification, "event_status": status},
        "active_period": {"dtstart": intervals[0]["dtstart"] if intervals else T17, "duration": timedelta(hours=1)},
        "event_signals": [signal],
        "response_required": "always",
    }


def decide_new(ev: dict[str, Any]) -> object:
    """The decision on an event seen for the first time, under LEVELS."""
    return decide(ev, previous_modification=None, simple_levels=LEVELS)


def procure(ev: dict[str, Any], previous: int | None = None) -> GridEventRequest:
    decision = decide(ev, previous_modification=previous, simple_levels=LEVELS)
    assert isinstance(decision, Procure | Reprocure), decision
    return decision.request


def test_delta_minus_500_over_an_hour_is_two_half_hours_of_500_kw() -> None:
    request = procure(event(interval(T17, 60, -500.0)))
    assert request == GridEventRequest(
        event_id="ev-1",
        modification_number=0,
        intervals=(Slot(T17, T17 + HALF_HOUR, 500.0), Slot(T17 + HALF_HOUR, T17 + 2 * HALF_HOUR, 500.0)),
    )
    assert (request.source, request.kind) == ("openadr", "DR_EVENT")


@pytest.mark.parametrize("payloads", [[250.0], [-500.0, 100.0]])
def test_a_request_to_increase_load_is_opted_out(payloads: list[float]) -> None:
    ev = event(*(interval(T17 + i * HALF_HOUR, 30, p) for i, p in enumerate(payloads)))
    decision = decide_new(ev)
    assert isinstance(decision, OptOut) and "increase" in decision.reason


def test_a_measurement_in_watts_or_megawatts_is_converted_to_kw() -> None:
    watts = procure(event(interval(T17, 30, -250_000.0), measurement={"unit": "W", "scale": "none"}))
    megawatts = procure(event(interval(T17, 30, -1.5), measurement={"unit": "W", "scale": "M"}))
    assert [s.reduce_kw for s in watts.intervals] == [250.0]
    assert [s.reduce_kw for s in megawatts.intervals] == [1500.0]
    odd = decide_new(event(interval(T17, 30, -1.0), measurement={"unit": "A", "scale": "k"}))
    assert isinstance(odd, OptOut)


@pytest.mark.parametrize("level", [1, 2, 3])
def test_simple_levels_map_to_the_policys_kw(level: int) -> None:
    request = procure(event(interval(T17, 30, float(level)), name="SIMPLE", kind="level"))
    assert [s.reduce_kw for s in request.intervals] == [LEVELS[level]]


def test_simple_levels_follow_the_mapping_passed_in() -> None:
    ev = event(interval(T17, 30, 2.0), name="SIMPLE", kind="level")
    decision = decide(ev, previous_modification=None, simple_levels={2: 42.0})
    assert isinstance(decision, Procure) and decision.request.intervals[0].reduce_kw == 42.0


@pytest.mark.parametrize("payload", [4.0, 1.5, -1.0])
def test_a_simple_level_without_kw_is_opted_out(payload: float) -> None:
    decision = decide_new(event(interval(T17, 30, payload), name="SIMPLE", kind="level"))
    assert isinstance(decision, OptOut) and "SIMPLE level" in decision.reason


def test_level_zero_intervals_ask_nothing_and_an_all_zero_event_is_opted_out() -> None:
    mixed = procure(event(interval(T17, 30, 0.0), interval(T17 + HALF_HOUR, 30, 1.0), name="SIMPLE", kind="level"))
    assert [s.start_utc for s in mixed.intervals] == [T17 + HALF_HOUR]
    nothing = decide_new(event(interval(T17, 60, 0.0), name="SIMPLE", kind="level"))
    assert isinstance(nothing, OptOut)


@pytest.mark.parametrize(
    ("name", "kind"), [("ELECTRICITY_PRICE", "price"), ("LOAD_DISPATCH", "setpoint"), ("SIMPLE", "delta")]
)
def test_other_signals_are_opted_out_with_a_reason(name: str, kind: str) -> None:
    decision = decide_new(event(interval(T17, 30, -1.0), name=name, kind=kind))
    assert isinstance(decision, OptOut) and f"{name}/{kind}" in decision.reason


def test_an_open_ended_or_naive_interval_is_opted_out() -> None:
    open_ended = decide_new(event(interval(T17, 0, -5.0)))
    naive = decide_new(event(interval(T17.replace(tzinfo=None), 30, -5.0)))
    assert isinstance(open_ended, OptOut) and isinstance(naive, OptOut)


def test_unaligned_intervals_are_split_over_the_half_hours_they_touch() -> None:
    # 17:10–17:40 at 300 kW, then 17:40–18:05 at 700 kW (intervals chain from the first start).
    ev = event(
        interval(T17 + timedelta(minutes=10), 30, -300.0), {"duration": timedelta(minutes=25), "signal_payload": -700.0}
    )
    request = procure(ev)
    assert [(s.start_utc - T17, s.reduce_kw) for s in request.intervals] == [
        (timedelta(0), 300.0),
        (timedelta(minutes=30), 700.0),
        (timedelta(minutes=60), 700.0),
    ]


def test_a_non_utc_start_is_aligned_in_utc() -> None:
    india = timezone(timedelta(hours=5, minutes=30))
    request = procure(event(interval(T17.astimezone(india), 30, -100.0)))
    assert request.intervals == (Slot(T17, T17 + HALF_HOUR, 100.0),)
    assert request.intervals[0].start_utc.tzinfo is UTC


def test_a_cancelled_event_is_cancelled_whatever_it_asked() -> None:
    ev = event(interval(T17, 60, -500.0), status="cancelled", modification=1)
    assert decide(ev, previous_modification=0, simple_levels=LEVELS) == Cancel("ev-1", "cancelled by the VTN")


def test_a_new_modification_number_re_procures_the_new_intervals() -> None:
    ev = event(interval(T17, 30, -800.0), modification=2)
    decision = decide(ev, previous_modification=0, simple_levels=LEVELS)
    assert isinstance(decision, Reprocure)
    assert decision.request.modification_number == 2
    assert decision.request.intervals == (Slot(T17, T17 + HALF_HOUR, 800.0),)


def test_a_modification_into_a_load_increase_withdraws() -> None:
    decision = decide(event(interval(T17, 30, 100.0), modification=1), previous_modification=0, simple_levels=LEVELS)
    assert isinstance(decision, Withdraw) and "increase" in decision.reason


@pytest.mark.parametrize(
    ("previous", "modification", "status"), [(3, 3, "far"), (3, 2, "active"), (None, 0, "completed")]
)
def test_the_same_or_an_older_modification_or_a_completed_event_changes_nothing(
    previous: int | None, modification: int, status: str
) -> None:
    ev = event(interval(T17, 30, -1.0), modification=modification, status=status)
    assert decide(ev, previous_modification=previous, simple_levels=LEVELS) == Unchanged("ev-1")


@pytest.mark.parametrize(
    ("status", "fraction", "expected"),
    [
        ("covered", 1.0, "optIn"),
        ("partially_covered", 0.8, "optIn"),
        ("partially_covered", 0.79, "optOut"),
        ("failed", 0.9, "optOut"),
        ("halted", 1.0, "optOut"),
        ("cancelled", 0.0, "optOut"),
    ],
)
def test_final_opt(status: str, fraction: float, expected: str) -> None:
    assert final_opt(FinalState(status, fraction), min_covered_fraction=0.8) == expected


def test_a_final_state_must_be_final() -> None:
    with pytest.raises(AssertionError):
        FinalState("collecting", 0.5)


# -- half-hour alignment, as properties ------------------------------------------------------------
minutes = st.integers(min_value=0, max_value=24 * 60)
raw_intervals = st.lists(
    st.tuples(
        minutes, st.integers(min_value=0, max_value=300), st.floats(min_value=-2000, max_value=2000, allow_nan=False)
    ),
    min_size=0,
    max_size=8,
)


@given(raw_intervals)
def test_slots_are_the_half_hours_asked_of_each_at_the_largest_reduction(raw: list[tuple[int, int, float]]) -> None:
    reductions = [(T17 + timedelta(minutes=s), T17 + timedelta(minutes=s + d), kw) for s, d, kw in raw]
    slots = half_hour_slots(reductions)
    starts = [s.start_utc for s in slots]
    assert starts == sorted(set(starts))
    asking = [(s, e, kw) for s, e, kw in reductions if kw > 0 and e > s]
    for slot in slots:
        assert slot.end_utc - slot.start_utc == HALF_HOUR and slot.start_utc.minute % 30 == 0
        overlapping = [kw for s, e, kw in asking if s < slot.end_utc and e > slot.start_utc]
        assert overlapping and slot.reduce_kw == max(overlapping)
    for s, e, _ in asking:  # every instant asked for lies in some slot
        assert any(slot.start_utc <= s < slot.end_utc for slot in slots)
        assert any(slot.start_utc < e <= slot.end_utc for slot in slots)
    assert sum((s.end_utc - s.start_utc for s in slots), timedelta(0)) >= max(
        (e - s for s, e, _ in asking), default=timedelta(0)
    )


@given(st.lists(st.floats(min_value=-5000, max_value=-0.001), min_size=1, max_size=6), st.integers(0, 59))
def test_a_reducing_delta_event_is_procured_and_the_request_holds_its_invariants(
    kws: list[float], offset_min: int
) -> None:
    start = T17 + timedelta(minutes=offset_min)
    ev = event(*(interval(start + i * timedelta(minutes=20), 20, kw) for i, kw in enumerate(kws)))
    request = procure(ev)  # GridEventRequest.__post_init__ asserts alignment, order and positivity
    assert max(s.reduce_kw for s in request.intervals) == pytest.approx(-min(kws))
    assert request.intervals[0].start_utc <= start < request.intervals[0].end_utc
