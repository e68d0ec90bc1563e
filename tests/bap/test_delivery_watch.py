"""The delivery watch's rules on plain data (bap/delivery_watch.py): which metered half hour is judged, which
orders are due a look, and the kW an under-delivering order is not expected to deliver in its later slots."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from bap.delivery_watch import WATCH_AFTER_WINDOW, _due, expected_loss_kw, judge
from bap.models import BapOrder
from bap.procurement import SlotTarget

T0 = datetime(2023, 1, 24, 16, 0, tzinfo=UTC)
HALF = timedelta(minutes=30)
GRID = [SlotTarget(T0 + i * HALF, T0 + (i + 1) * HALF, 400.0) for i in range(8)]


def _order(oid: str = "o1", *, power_kw: float = 400.0, first: int = 0, last: int = 7) -> BapOrder:
    return BapOrder(
        id=oid,
        order_id=f"bpp-{oid}",
        provider_id="dc-01",
        power_kw=power_kw,
        window_start=T0 + first * HALF,
        window_end=T0 + (last + 1) * HALF,
        state="ACCEPTED",
        settlement_method="P415",
    )


def _period(i: int, state: str, fraction: str | None = None) -> dict[str, Any]:
    return {
        "start_utc": (T0 + i * HALF).isoformat(),
        "end_utc": (T0 + (i + 1) * HALF).isoformat(),
        "state": state,
        "delivered_fraction": fraction,
        "reading_kind": "meter_operator" if state == "metered" else None,
    }


def test_the_latest_metered_half_hour_after_the_last_judged_is_judged() -> None:
    periods = [_period(0, "metered", "1.0000"), _period(1, "metered", "0.2500"), _period(2, "awaiting_reading")]
    judged = judge(periods, through=None)
    assert judged is not None and judged.through == T0 + 2 * HALF and judged.fraction == 0.25
    assert judge(periods, through=T0 + 2 * HALF) is None  # nothing new: an awaited reading is not judged
    assert judge([_period(0, "insufficient_data"), _period(1, "pending")], through=None) is None


def test_an_under_delivering_order_counts_its_fraction_from_the_half_hour_judged_on() -> None:
    o = _order(power_kw=400.0)
    metered = {o.id: {"through": (T0 + HALF).isoformat(), "fraction": 0.25, "provider_id": "dc-01"}}
    loss = expected_loss_kw(GRID, [o], metered, below=0.9)
    assert loss == [0.0] + [300.0] * 7
    assert expected_loss_kw(GRID, [o], metered, below=0.2) == [0.0] * 8  # above the threshold: trusted in full
    assert expected_loss_kw(GRID, [], metered, below=0.9) == [0.0] * 8  # no longer contracted: nothing expected


def test_an_order_is_due_a_look_once_a_half_hour_has_ended_since_the_last_judged() -> None:
    o = _order(first=0, last=3)
    assert not _due(o, {}, T0 + timedelta(minutes=29))
    assert _due(o, {}, T0 + HALF)
    seen = {o.id: {"through": (T0 + HALF).isoformat(), "fraction": 1.0, "provider_id": "dc-01"}}
    assert not _due(o, seen, T0 + HALF + timedelta(minutes=10))
    assert _due(o, seen, T0 + 2 * HALF)
    judged_all = {o.id: {"through": o.window_end.isoformat(), "fraction": 1.0, "provider_id": "dc-01"}}
    assert not _due(o, judged_all, o.window_end + HALF)
    assert not _due(o, {}, o.window_end + WATCH_AFTER_WINDOW + HALF)  # too late: settlement's business
    o.order_id = None
    assert not _due(o, {}, T0 + HALF)  # not accepted by its BPP: nothing at the ledger


@given(
    first=st.integers(0, 7),
    length=st.integers(1, 8),
    through=st.integers(0, 8),
    fraction=st.floats(0, 1),
    power_kw=st.floats(0.1, 5000),
)
def test_the_expected_loss_is_within_the_order_and_after_the_judged_half_hour(
    first: int, length: int, through: int, fraction: float, power_kw: float
) -> None:
    last = min(7, first + length - 1)
    o = _order(power_kw=power_kw, first=first, last=last)
    metered = {o.id: {"through": (T0 + through * HALF).isoformat(), "fraction": fraction, "provider_id": "dc-01"}}
    loss = expected_loss_kw(GRID, [o], metered, below=0.9)
    for i, x in enumerate(loss):
        inside = first <= i <= last and i >= through
        expected = (1.0 - fraction) * power_kw if inside and fraction < 0.9 else 0.0
        assert x == expected
        assert 0.0 <= x <= power_kw
