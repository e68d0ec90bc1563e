"""The expected paid reduction of an offer (bpp/paid_reduction.py): the BPP's 10-of-10 agrees with the ledger's
settlement baseline (ledger/baseline.py) on the same readings, and the paid reduction on a known history is what
settlement would pay when the plan's import is, or is not, the settlement baseline."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpp.agent_service import with_expected_paid
from bpp.paid_reduction import Baseline, ExpectedPaid, TenOfTen, expected_paid_kw, ten_of_ten_kw
from grid.periods import day_type, local_clock, utc_for_local
from ledger.baseline import BaselineParams, unadjusted_baseline
from schemas.flex import FlexOfferSpec, item_to_offer, offer_to_item

EVENT = datetime(2026, 11, 25, 17, 0, tzinfo=UTC)  # a Wednesday, GMT: local 17:00
WH_PER_KW_HALF_HOUR = 500


def _same_half_hour(days_back: int) -> datetime:
    instant = utc_for_local(EVENT.date() - timedelta(days=days_back), local_clock(EVENT))
    assert instant is not None
    return instant


def test_ten_of_ten_on_a_known_history() -> None:
    # 1000 + n kW on the n-th earlier day; weekends at 5000 kW must not count
    history = {_same_half_hour(n): 1000.0 + n for n in range(1, 61)}
    working = [n for n in range(1, 61) if day_type(EVENT.date() - timedelta(days=n)) == day_type(EVENT.date())]
    expected = sum(1000.0 + n for n in working[:10]) / 10
    for n in range(1, 61):
        if n not in working:
            history[_same_half_hour(n)] = 5000.0
    baseline = ten_of_ten_kw(EVENT, history)
    assert baseline.power_kw == pytest.approx(expected) and baseline.reason == ""
    # an event day is not a baseline day: the next eligible day takes its place
    excluded = EVENT.date() - timedelta(days=working[0])
    shifted = sum(1000.0 + n for n in working[1:11]) / 10
    assert ten_of_ten_kw(EVENT, history, event_days={excluded}).power_kw == pytest.approx(shifted)


def test_no_metered_history_says_so() -> None:
    baseline = ten_of_ten_kw(EVENT, {})
    assert baseline.power_kw is None and "insufficient metered history: 0 eligible day(s)" in baseline.reason
    paid = expected_paid_kw(offered_kw=100, planned_import_kw=[900.0], settlement_baseline=[baseline])
    assert paid == ExpectedPaid(None, baseline.reason)


def test_paid_reduction_differs_when_the_plan_is_not_the_settlement_baseline() -> None:
    at = [Baseline(1000.0)] * 4
    # the plan imports the settlement baseline: every offered kW is paid
    assert expected_paid_kw(offered_kw=100, planned_import_kw=[1000.0] * 4, settlement_baseline=at).reduction_kw == 100
    # the plan already imports 50 kW above the baseline: only 50 kW of the 100 shows against it
    assert expected_paid_kw(offered_kw=100, planned_import_kw=[1050.0] * 4, settlement_baseline=at).reduction_kw == 50
    # below the baseline already: paid at most what was contracted; far above: nothing
    assert expected_paid_kw(offered_kw=100, planned_import_kw=[700.0] * 4, settlement_baseline=at).reduction_kw == 100
    mixed = expected_paid_kw(offered_kw=100, planned_import_kw=[1000.0, 1050.0, 1300.0, 900.0], settlement_baseline=at)
    assert mixed.reduction_kw == pytest.approx((100 + 50 + 0 + 100) / 4)


days_back = st.integers(min_value=1, max_value=60)


@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(st.integers(min_value=-2_000_000, max_value=2_000_000), min_size=60, max_size=60),
    present=st.lists(st.booleans(), min_size=60, max_size=60),  # which earlier days have a reading
    events=st.sets(days_back, max_size=10),
    start=st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2027, 12, 31)).map(
        lambda t: t.replace(minute=30 * (t.minute // 30), second=0, microsecond=0, tzinfo=UTC)
    ),
)
def test_the_bpp_baseline_agrees_with_the_ledgers(
    values: list[int], present: list[bool], events: set[int], start: datetime
) -> None:
    clock = local_clock(start)
    wh: dict[datetime, int] = {}
    for back, (value, there) in enumerate(zip(values, present, strict=True), start=1):
        instant = utc_for_local(start.date() - timedelta(days=back), clock)
        if there and instant is not None:
            wh[instant] = value
    event_days: set[date] = {start.date() - timedelta(days=b) for b in events}
    ledger = unadjusted_baseline(start, wh, event_days, BaselineParams())
    bpp = ten_of_ten_kw(
        start, {t: v / WH_PER_KW_HALF_HOUR for t, v in wh.items()}, event_days=event_days, rule=TenOfTen()
    )
    if ledger.energy_wh is None:
        assert bpp.power_kw is None and bpp.reason
    else:
        assert bpp.power_kw == pytest.approx(
            float(ledger.energy_wh / Fraction(WH_PER_KW_HALF_HOUR)), rel=1e-9, abs=1e-9
        )


def _spec(**kw: object) -> FlexOfferSpec:
    base: dict[str, object] = dict(
        item_id="s-1",
        provider_id="p",
        location_id="site",
        window_start=EVENT,
        window_end=EVENT + timedelta(hours=1),
        available_kw=100.0,
        min_kw=10.0,
        max_kw=100.0,
        price_gbp_per_mwh=120.0,
        name="compute load reduction",
    )
    return FlexOfferSpec(**{**base, **kw})  # type: ignore[arg-type]


def test_an_offer_states_its_expected_paid_reduction_and_the_catalog_carries_it() -> None:
    # a flat 1000 kW metered history; the plan imports 1050 kW then 1000 kW in the offer's two slots
    history = {_same_half_hour(n) + timedelta(minutes=30 * k): 1000.0 for n in range(1, 61) for k in (0, 1)}
    offer = with_expected_paid(_spec(), (1050.0, 1000.0), history)
    assert offer.expected_paid_kw == 75.0 and offer.expected_paid_reason is None  # (50 + 100) / 2
    assert item_to_offer(offer_to_item(offer), "p") == offer
    unknown = with_expected_paid(_spec(), (1050.0, 1000.0), {})
    assert unknown.expected_paid_kw is None and "no metered history for site site" in (
        unknown.expected_paid_reason or ""
    )
    assert item_to_offer(offer_to_item(unknown), "p") == unknown
