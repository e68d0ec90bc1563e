"""Trust between parties, as pure rules: which reading a period rests on, a withheld reading never helps,
signed (net export) metering in the baseline and delivered volume, and one meter's delivery shared among the
orders on it so that nobody is paid twice (ledger/allocation.py, ledger/settlement.py, ledger/baseline.py)."""

from __future__ import annotations

from datetime import datetime, timedelta
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from grid.periods import PERIOD
from ledger.allocation import allocate, reading_kind, strengthened, weakest
from ledger.baseline import Adjustment, BaselineParams, adjusted_baseline, event_start, unadjusted_baseline
from ledger.settlement import (
    BUILTIN_POLICIES,
    RUNS,
    OrderTerms,
    PeriodResult,
    SettlementInputs,
    declared_periods,
    delivered_volume_wh,
    rebound_wh,
    settle,
)
from schemas.limits import MAX_ENERGY_WH_PER_PERIOD
from tests.ledger.conftest import utc

P415 = BUILTIN_POLICIES["p415-v1"]
GBP300 = 30_000_000
EVENT = utc(2023, 12, 5, 17)  # a Tuesday, GMT
PRICES = {EVENT + i * PERIOD: 10_000_000 for i in range(8)}  # £100/MWh imbalance
signed_wh = st.integers(min_value=-MAX_ENERGY_WH_PER_PERIOD, max_value=MAX_ENERGY_WH_PER_PERIOD)


def order(oid: str, start: datetime = EVENT, periods: int = 2, kw: int = 1000, resource: str = "compute") -> OrderTerms:
    return OrderTerms(
        oid,
        "dc",
        "bap",
        "M1",
        "sup",
        start,
        start + periods * PERIOD,
        kw * 1000,
        GBP300,
        None,
        "P415",
        resource,
        start - timedelta(days=1),
        "p415-v1",
    )


def history(wh: int = 1_000_000, days: int = 40) -> dict[datetime, int]:
    out, t = {}, EVENT - timedelta(days=days)
    while t < EVENT + timedelta(hours=6):
        out[t] = wh
        t += PERIOD
    return out


def inputs(o: OrderTerms, readings: dict[datetime, int], **extra: object) -> SettlementInputs:
    return SettlementInputs(o, readings, frozenset({EVENT.date()}), PRICES, {}, **extra)  # type: ignore[arg-type]


# --- allocation -----------------------------------------------------------------------------------


def test_allocation_in_contracted_proportion_capped_with_remainder_paid_to_nobody() -> None:
    contracted = {"a": Fraction(300_000), "b": Fraction(100_000)}
    short = allocate(Fraction(200_000), contracted)
    assert short.paid_wh == {"a": 150_000, "b": 50_000} and short.unallocated_wh == 0
    over = allocate(Fraction(500_000), contracted)
    assert over.paid_wh == contracted and over.unallocated_wh == 100_000  # over-delivery: nobody is paid for it
    assert over.compensated_wh == {"a": 375_000, "b": 125_000}  # but the supplier is compensated for all of it, once
    assert allocate(Fraction(-5), contracted).paid_wh == {"a": 0, "b": 0}
    assert allocate(Fraction(7), {}).unallocated_wh == 7


@settings(max_examples=200, deadline=None)
@given(
    delivered=st.fractions(min_value=-(10**9), max_value=10**9, max_denominator=10**6),
    contracted=st.dictionaries(
        st.text("abcdef", min_size=1, max_size=3), st.fractions(min_value=0, max_value=10**9), max_size=6
    ),
)
def test_allocation_never_pays_more_than_the_meter_delivered(
    delivered: Fraction, contracted: dict[str, Fraction]
) -> None:
    share = allocate(delivered, contracted)
    volume = max(Fraction(0), delivered)
    total = sum(contracted.values(), Fraction(0))
    assert sum(share.paid_wh.values(), Fraction(0)) <= volume
    assert all(0 <= share.paid_wh[o] <= c for o, c in contracted.items())
    assert share.unallocated_wh == volume - sum(share.paid_wh.values(), Fraction(0)) >= 0
    if total:
        assert sum(share.compensated_wh.values(), Fraction(0)) == volume  # compensated exactly once
        assert sum(share.paid_wh.values(), Fraction(0)) == min(volume, total)  # nothing withheld either
        if volume <= total:  # in proportion
            assert all(share.paid_wh[o] * total == volume * c for o, c in contracted.items())


@st.composite
def overlapping_orders(draw: st.DrawFn) -> tuple[list[OrderTerms], dict[datetime, int]]:
    """2-5 orders on one meter, each a random run of periods in a 4-hour span, and random signed readings."""
    orders = []
    for i in range(draw(st.integers(2, 5))):
        first = draw(st.integers(0, 6))
        orders.append(
            order(f"o{i}", EVENT + first * PERIOD, draw(st.integers(1, 8 - first)), draw(st.integers(1, 2000)))
        )
    readings = history()
    for i in range(8):
        readings[EVENT + i * PERIOD] = draw(st.integers(-2_000_000, 2_000_000))
    return orders, readings


@settings(max_examples=60, deadline=None)
@given(case=overlapping_orders())
def test_orders_sharing_a_meter_are_never_paid_twice(case: tuple[list[OrderTerms], dict[datetime, int]]) -> None:
    orders, readings = case
    sharing: dict[datetime, dict[str, int]] = {}
    for o in orders:
        accepted, _ = declared_periods(o.window_start, o.window_end, o.confirmed_at, P415)
        for p in accepted:
            sharing.setdefault(p.start_utc, {})[o.order_id] = o.contracted_w
    by_period: dict[datetime, list[tuple[str, PeriodResult]]] = {}
    for o in orders:
        for p in settle(inputs(o, readings, sharing_w=sharing), P415).periods:
            by_period.setdefault(p.start_utc, []).append((o.order_id, p))
    for t, results in by_period.items():
        assert len({r.payable_wh for _, r in results}) == 1  # one delivered volume per meter-period, whoever asks
        volume = max(Fraction(0), results[0][1].payable_wh)
        assert sum((r.allocated_wh for _, r in results), Fraction(0)) <= volume
        paid_wh = sum((r.utilisation_pence * 10**9 / GBP300 for _, r in results), Fraction(0))  # pence → Wh
        assert paid_wh <= volume
        assert all(set(r.sharing_orders) == set(sharing[t]) - {oid} for oid, r in results)


def test_two_orders_on_one_meter_split_its_delivery() -> None:
    a, b = order("a", kw=1000), order("b", kw=1000)
    readings = history()
    readings[EVENT] = readings[EVENT + PERIOD] = 500_000  # 500 kWh delivered per period; 1000 kWh contracted
    sharing = {EVENT + i * PERIOD: {"a": 1_000_000, "b": 1_000_000} for i in range(2)}
    alone = settle(inputs(a, readings), P415)
    shared = [settle(inputs(o, readings, sharing_w=sharing), P415) for o in (a, b)]
    assert alone.lines["utilisation"] == 30_000  # 2 × 0.5 MWh × £300: all of it, with no one else on the meter
    assert [s.lines["utilisation"] for s in shared] == [15_000, 15_000]  # the same energy, paid once in total
    assert [s.lines["shortfall"] for s in shared] == [5_000, 5_000]  # each 2 × 0.25 MWh short, × £100/MWh
    # the supplier is compensated once for the energy (exactly; each order's line is rounded on its own)
    exact = [s.exact_lines["supplier_compensation"] for s in shared]
    assert sum(exact) == alone.exact_lines["supplier_compensation"] == Fraction(19_706, 2)


# --- reading kinds and withheld readings ----------------------------------------------------------


def test_reading_kinds() -> None:
    readings = {EVENT: 5}
    kinds = {EVENT: "meter_operator"}
    assert reading_kind(EVENT, readings, kinds, run="II") == "meter_operator"  # type: ignore[arg-type]
    assert reading_kind(EVENT, readings, {}, run="DF") == "self_reported"
    assert [reading_kind(EVENT + PERIOD, readings, {}, run=r) for r in RUNS] == ["estimated"] * 5 + ["missing"] * 2
    assert weakest(["meter_operator", "self_reported", "meter_operator"]) == "self_reported"
    assert weakest(["self_reported", "estimated"]) == "estimated" and weakest([]) is None
    assert strengthened("self_reported", "meter_operator") and strengthened("missing", "self_reported")
    assert not strengthened("meter_operator", "self_reported") and not strengthened("estimated", "missing")


def test_withheld_reading_is_estimated_then_missing_and_charged_the_shortfall() -> None:
    o = order("o")
    readings = history()
    readings[EVENT] = 500_000  # full delivery in the first period; the second period's reading is withheld
    del readings[EVENT + PERIOD]
    for run, kind in (("II", "estimated"), ("R3", "estimated"), ("RF", "missing"), ("DF", "missing")):
        res = settle(inputs(o, readings, run=run), P415)
        withheld = res.periods[1]
        assert (withheld.status, withheld.reading_kind, withheld.delivered_wh) == ("settled", kind, 0)
        assert withheld.shortfall_wh == 500_000 and kind in withheld.reason
        assert res.reading_kind == kind and res.periods[0].reading_kind == "self_reported"
        assert res.lines["utilisation"] == 15_000 and res.lines["shortfall"] == 5_000  # 0.5 MWh × £100


@settings(max_examples=100, deadline=None)
@given(metered=signed_wh, run=st.sampled_from(RUNS), kw=st.integers(1, 5000))
def test_withholding_a_reading_never_helps_the_provider(metered: int, run: str, kw: int) -> None:
    o = order("o", kw=kw)
    readings = history()
    readings[EVENT], readings[EVENT + PERIOD] = metered, 1_000_000
    posted = settle(inputs(o, readings, run=run), P415)
    del readings[EVENT]
    withheld = settle(inputs(o, readings, run=run), P415)
    assert withheld.lines["utilisation"] <= posted.lines["utilisation"]
    assert withheld.lines["shortfall"] >= posted.lines["shortfall"]
    assert withheld.lines["supplier_compensation"] <= posted.lines["supplier_compensation"]


# --- net export: signed metering ------------------------------------------------------------------


def test_battery_exporting_beyond_site_load_delivers_more_than_its_import() -> None:
    battery = order("bat", kw=300, resource="storage")  # 150 kWh per period contracted
    readings = history(wh=100_000)  # the site imports 100 kWh per half-hour
    readings[EVENT] = readings[EVENT + PERIOD] = -50_000  # discharging: 50 kWh exported per half-hour
    res = settle(inputs(battery, readings), P415)
    assert [p.delivered_wh for p in res.periods] == [150_000, 150_000]  # baseline 100 − (−50)
    assert res.lines["shortfall"] == 0 and res.lines["utilisation"] == 9_000  # 0.3 MWh × £300
    exporter = history(wh=-200_000)  # a site that normally exports (on-site generation)
    exporter[EVENT] = exporter[EVENT + PERIOD] = -300_000
    assert [p.delivered_wh for p in settle(inputs(battery, exporter), P415).periods] == [100_000, 100_000]


@settings(max_examples=200, deadline=None)
@given(level=signed_wh, metered=signed_wh, step=st.integers(1, 10**6))
def test_baseline_and_delivered_volume_with_negative_consumption(level: int, metered: int, step: int) -> None:
    params = BaselineParams()
    flat = {t: level for t in history()}
    base = unadjusted_baseline(EVENT, flat, frozenset(), params).energy_wh
    assert base == level  # the mean of a constant history, import or export alike
    assert delivered_volume_wh(Fraction(level), metered) == level - metered
    assert delivered_volume_wh(Fraction(level), metered - step) > delivered_volume_wh(Fraction(level), metered)
    assert rebound_wh(Fraction(level), metered) == max(0, metered - level)
    adj = adjusted_baseline(Fraction(level), Adjustment(Fraction(metered), True), params)
    assert abs(adj - level) <= params.in_day_cap_ratio * abs(level)  # the cap is a magnitude, for either sign


def test_back_to_back_orders_share_one_in_day_adjustment() -> None:
    declared = {EVENT, EVENT + PERIOD, EVENT + 2 * PERIOD, EVENT + 5 * PERIOD}
    assert event_start(EVENT + 2 * PERIOD, declared) == EVENT
    assert event_start(EVENT + 5 * PERIOD, declared) == EVENT + 5 * PERIOD
    readings = history()
    for i in range(-8, -2):
        readings[EVENT + i * PERIOD] = 1_100_000  # the 3 hours ending 1 hour before 17:00 ran 100 kWh high
    second = order("b", EVENT + 2 * PERIOD, 2)  # order a holds 17:00-18:00, order b 18:00-19:00
    sharing = {EVENT + i * PERIOD: {("a" if i < 2 else "b"): 1_000_000} for i in range(4)}
    res = settle(inputs(second, readings, sharing_w=sharing), P415)
    assert res.adjustment.energy_wh == 100_000  # anchored before the event's first period (17:00) …
    alone = settle(inputs(second, readings), P415)
    assert alone.adjustment.energy_wh == Fraction(400_000, 6)  # … not before order b's own (18:00)


def test_withheld_history_no_longer_escapes_the_shortfall_at_the_final_runs() -> None:
    o = order("o")
    readings = {EVENT: 1_000_000, EVENT + PERIOD: 1_000_000}  # no reduction, and every history reading withheld
    early = settle(inputs(o, readings, run="R3"), P415)
    assert [p.status for p in early.periods] == ["insufficient_data"] * 2  # rule 3: zero, with the reason
    assert early.lines == dict.fromkeys(early.lines, 0)
    final = settle(inputs(o, readings, run="RF"), P415)
    assert [(p.status, p.delivered_wh, p.shortfall_wh) for p in final.periods] == [("settled", 0, 500_000)] * 2
    assert "no delivery at a final run" in final.periods[0].reason
    assert final.lines["shortfall"] == 10_000 and final.lines["utilisation"] == 0  # 1 MWh × £100/MWh


def test_withheld_in_day_window_readings_get_the_lowest_adjustment_at_the_final_runs() -> None:
    o = order("o")
    readings = history()
    for i in range(-8, -2):
        readings[EVENT + i * PERIOD] = 900_000  # the 3 hours before ran 100 kWh low: a −100 kWh adjustment …
    readings[EVENT] = readings[EVENT + PERIOD] = 600_000
    posted = settle(inputs(o, readings, run="RF"), P415)
    assert posted.adjustment.energy_wh == -100_000 and posted.periods[0].delivered_wh == 300_000
    del readings[EVENT - 5 * PERIOD]  # … which the provider would rather not show
    early = settle(inputs(o, readings, run="R3"), P415)
    assert not early.adjustment.available and early.periods[0].delivered_wh == 400_000  # unadjusted until RF
    final = settle(inputs(o, readings, run="RF"), P415)
    assert final.periods[0].adjusted_baseline_wh == 800_000  # the full −20 % cap: lower than the real −10 %
    assert final.periods[0].delivered_wh == 200_000 < posted.periods[0].delivered_wh
    assert "lowest adjustment" in final.adjustment.reason and final.to_json()["in_day_adjustment_wh"] is None
    battery = settle(inputs(order("b", resource="storage"), readings, run="RF"), P415)
    assert battery.periods[0].adjusted_baseline_wh == 1_000_000  # storage gets no adjustment, lowest or not
