"""P415 rules 2 and 4-12 as pure functions, with hand-computed examples."""

from __future__ import annotations

from datetime import datetime, timedelta
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grid.periods import PERIOD
from ledger.settlement import (
    BUILTIN_POLICIES,
    EscrowState,
    OrderTerms,
    Policy,
    PolicyError,
    SettlementInputs,
    availability_pence,
    contracted_energy_wh,
    declared_periods,
    delivered_volume_wh,
    inputs_digest,
    max_exposure_pence,
    next_run,
    payable_volume_wh,
    rebound_wh,
    run_transfers,
    settle,
    shortfall_pence,
    shortfall_price,
    supplier_compensation_pence,
    utilisation_pence,
)
from tests.ledger.conftest import utc

P415 = BUILTIN_POLICIES["p415-v1"]
DFS = BUILTIN_POLICIES["dfs-v1"]
DNO = BUILTIN_POLICIES["dno-v1"]
GBP300 = 30_000_000  # £300/MWh in milli-pence per MWh


def order(
    start: datetime,
    hours: float = 1,
    *,
    kw: int = 1000,
    price: int = GBP300,
    policy: str = "p415-v1",
    confirmed: datetime | None = None,
    method: str = "P415",
    avail: int | None = None,
    resource: str = "compute",
) -> OrderTerms:
    return OrderTerms(
        "o1",
        "dc",
        "bap",
        "M1",
        "sup",
        start,
        start + timedelta(hours=hours),
        kw * 1000,
        price,
        avail,
        method,
        resource,
        confirmed or start - timedelta(days=1),
        policy,
    )


def flat_history(event: datetime, days: int = 40, wh: int = 1_000_000) -> dict[datetime, int]:
    out = {}
    t = event - timedelta(days=days)
    while t < event + timedelta(hours=6):
        out[t] = wh
        t += PERIOD
    return out


def test_rule2_gate_closure_per_period() -> None:
    start = utc(2023, 12, 5, 17)
    accepted, rejected = declared_periods(start, start + timedelta(hours=1), utc(2023, 12, 5, 16, 30), P415)
    assert [p.start_utc for p in accepted] == [utc(2023, 12, 5, 17, 30)]  # confirmed exactly at its gate
    assert [p.start_utc for p, _ in rejected] == [start] and "gate closure" in rejected[0][1]


def test_rule4_delivered_volume_and_floor() -> None:
    assert delivered_volume_wh(Fraction(1000), 1200) == -200  # recorded as is
    assert payable_volume_wh(Fraction(-200), P415) == 0
    no_floor = Policy("x", floor_negative_dv=False)
    assert payable_volume_wh(Fraction(-200), no_floor) == -200


def test_rule5_rebound_is_recorded_not_charged() -> None:
    assert rebound_wh(Fraction(1000), 1300) == 300 and rebound_wh(Fraction(1000), 900) == 0


def test_rule6_utilisation_caps_at_contract_and_sliding_scale() -> None:
    c = contracted_energy_wh(1_000_000)  # 1 MW for half an hour
    assert c == 500_000
    assert utilisation_pence(Fraction(600_000), c, GBP300, P415) == 15_000  # capped at contract: 0.5 MWh × £300
    assert utilisation_pence(Fraction(200_000), c, GBP300, P415) == 6_000
    assert utilisation_pence(Fraction(200_000), c, GBP300, DNO) == 0  # 40% < 50%: nothing
    assert utilisation_pence(Fraction(250_000), c, GBP300, DNO) == 7_500  # exactly 50%: paid


def test_rule7_shortfall_imbalance_dfs_floor_and_fallback() -> None:
    c = Fraction(500_000)
    short, charge = shortfall_pence(Fraction(200_000), c, 12_345_678, P415)
    assert short == 300_000 and charge == Fraction(300_000 * 12_345_678, 10**9)
    assert shortfall_pence(Fraction(200_000), c, 12_345_678, DFS)[1] == 0
    assert shortfall_pence(Fraction(-50), c, 1_000_000, P415)[0] == c  # negative DV: all of it is short
    assert shortfall_price(-5_000_000, 1, P415) == (0, "imbalance -5000000 floored at 0")
    assert shortfall_price(None, 7_000_000, P415)[0] == 7_000_000
    assert shortfall_price(None, None, P415)[0] is None


def test_rule8_availability_pro_rata() -> None:
    # £10 per MW per hour × 2 MW × 1.5 h × 75% delivery = £22.50
    assert availability_pence(1_000_000, 2_000_000, Fraction(3, 2), Fraction(3, 4)) == 2250
    assert availability_pence(None, 2_000_000, Fraction(1), Fraction(1)) == 0
    assert availability_pence(1_000_000, 1_000_000, Fraction(1), Fraction(2)) == 1000  # ratio capped at 1


def test_rule9_supplier_compensation_at_scrp() -> None:
    assert supplier_compensation_pence(Fraction(1_000_000), P415) == 9853  # 1 MWh × £98.53
    assert supplier_compensation_pence(Fraction(-5), P415) == 0


def hand_example(policy: Policy) -> tuple[OrderTerms, SettlementInputs]:
    start = utc(2023, 12, 5, 17)  # Tuesday, GMT
    o = order(start, policy=policy.version)
    readings = flat_history(start)
    readings[start] = 500_000  # full delivery (DV 500 kWh of 500 contracted)
    readings[start + PERIOD] = 800_000  # 40% delivery
    prices = {start: 5_000_000, start + PERIOD: 12_345_678}
    return o, SettlementInputs(o, readings, frozenset({start.date()}), prices, {})


def test_settle_hand_computed_p415() -> None:
    _o, inputs = hand_example(P415)
    res = settle(inputs, P415)
    # utilisation 0.7 MWh × £300 = £210; shortfall 0.3 MWh × £123.45678 = 3703.7034p → 3704;
    # supplier compensation 0.7 MWh × £98.53 = 6897.1p → 6897
    assert res.lines == {"utilisation": 21_000, "availability": 0, "shortfall": 3_704, "supplier_compensation": 6_897}
    assert res.exact_lines["shortfall"] == Fraction(37_037_034, 10_000)
    assert [p.status for p in res.periods] == ["settled", "settled"]
    assert res.delivered_wh == 700_000 and res.contracted_wh == 1_000_000
    assert res.periods[1].delivered_wh == 200_000 and res.periods[1].shortfall_wh == 300_000


def test_settle_policies_differ_as_specified() -> None:
    _, inputs = hand_example(DFS)
    assert settle(inputs, DFS).lines["shortfall"] == 0
    _, inputs = hand_example(DNO)
    dno = settle(inputs, DNO).lines
    assert dno["utilisation"] == 15_000 and dno["shortfall"] == 0  # period 2 below 50%: unpaid


def test_rounding_happens_once_per_line() -> None:
    # two periods each worth exactly half a penny: per-period rounding (half-even) would give 0 + 0,
    # rounding the line once gives 1
    start = utc(2023, 12, 5, 17)
    price = 1_000_000  # £10/MWh; 500 Wh at £10/MWh = 0.5p
    o = order(start, kw=1, price=price)
    readings = flat_history(start, wh=1_000)
    readings[start] = readings[start + PERIOD] = 500
    res = settle(SettlementInputs(o, readings, frozenset(), {}, {}), P415)
    assert res.exact_lines["utilisation"] == 1 and res.lines["utilisation"] == 1
    one = order(start, hours=0.5, kw=1, price=price)
    assert settle(SettlementInputs(one, readings, frozenset(), {}, {}), P415).lines["utilisation"] == 0  # 0.5 → 0


def test_missing_data_settles_at_zero_with_reason() -> None:
    start = utc(2023, 12, 5, 17)
    o = order(start)
    readings = flat_history(start, days=3)  # too little history
    res = settle(SettlementInputs(o, readings, frozenset(), {}, {}), P415)
    assert all(p.status == "insufficient_data" for p in res.periods)
    assert res.lines == dict.fromkeys(res.lines, 0)
    readings = flat_history(start)
    del readings[start]
    res = settle(SettlementInputs(o, readings, frozenset(), {}, {}), P415)
    # a missing reading is no longer "nothing to settle": before RF it is estimated as no delivery
    # (tests/ledger/test_metering_trust.py has the rest of that rule)
    first, second = res.periods[0], res.periods[1]
    assert (first.status, first.reading_kind, first.delivered_wh) == ("settled", "estimated", 0)
    assert first.shortfall_wh == first.contracted_wh and second.reading_kind == "self_reported"


def test_cft_orders_are_prepaid() -> None:
    _, inputs = hand_example(P415)
    o = order(utc(2023, 12, 5, 17), method="CFT", price=0)
    res = settle(SettlementInputs(o, inputs.readings, inputs.event_days, inputs.imbalance_prices, {}), P415)
    assert res.lines["utilisation"] == 0 and res.lines["shortfall"] == 3_704


@pytest.mark.parametrize(
    ("day", "labels"),
    [
        (utc(2023, 3, 26, 0, 0), ["2023-03-26/1", "2023-03-26/2", "2023-03-26/3", "2023-03-26/4"]),  # 46-period day
        (utc(2023, 10, 29, 0, 0), ["2023-10-29/3", "2023-10-29/4", "2023-10-29/5", "2023-10-29/6"]),  # 50-period day
    ],
)
def test_settlement_on_clock_change_days(day: datetime, labels: list[str]) -> None:
    o = order(day, hours=2, kw=200)
    readings = flat_history(day, days=70)
    for i in range(4):
        readings[day + i * PERIOD] = 900_000  # 100 kWh delivered each period
    res = settle(SettlementInputs(o, readings, frozenset(), {}, {}), P415)
    assert [p.period for p in res.periods] == labels
    assert all(p.status == "settled" and p.delivered_wh == 100_000 for p in res.periods)
    assert res.lines["utilisation"] == 4 * 3_000  # 4 × 0.1 MWh × £300


def test_run_transfers_first_run_via_escrow_then_restatement() -> None:
    o, _ = hand_example(P415)
    esc = EscrowState("order:o1:reserve", 30_000, True)
    first = {"utilisation": 21_000, "availability": 0, "shortfall": 3_704, "supplier_compensation": 6_897}
    ts = run_transfers(o, "II", first, previous=None, policy=P415, escrow=esc)
    assert [(t.kind, t.id.split(":")[-1], t.amount) for t in ts] == [
        ("post", "escrow-post", 21_000),
        ("single", "utilisation", 21_000),
        ("single", "shortfall", 3_704),
        ("single", "supplier_compensation", 6_897),
    ]
    assert ts[1].debit_account == "escrow:o1" and ts[1].credit_account == "provider:dc:revenue"
    assert ts[3].debit_account == "pot:supplier-compensation"
    restated = {**first, "utilisation": 25_000, "shortfall": 0}
    rs = run_transfers(o, "SF", restated, previous=first, policy=P415, escrow=None)
    assert [(t.id.split(":", 3)[-1], t.debit_account, t.credit_account, t.amount) for t in rs] == [
        ("utilisation:reversal", "provider:dc:revenue", "bap:bap:cash", 21_000),
        ("utilisation", "bap:bap:cash", "provider:dc:revenue", 25_000),
        ("shortfall:reversal", "bap:bap:cash", "provider:dc:penalties", 3_704),
    ]
    assert (
        run_transfers(o, "R1", restated, previous=restated, policy=P415, escrow=None) == []
    )  # nothing changed: nothing appended
    nothing = run_transfers(o, "II", dict.fromkeys(first, 0), previous=None, policy=P415, escrow=esc)
    assert [t.kind for t in nothing] == ["void"]
    buyer_pays = run_transfers(
        order(utc(2023, 12, 5, 17), policy="dno-v1"), "II", first, previous=None, policy=DNO, escrow=None
    )
    assert buyer_pays[-1].debit_account == "bap:bap:cash"


def test_runs_happen_in_order() -> None:
    assert next_run([]) == "II" and next_run(["II", "SF"]) == "R1"
    assert next_run(["II", "SF", "R1", "R2", "R3", "RF", "DF"]) is None
    with pytest.raises(ValueError):
        next_run(["SF"])


def test_policy_json_roundtrip_and_validation() -> None:
    for p in BUILTIN_POLICIES.values():
        assert Policy.from_json(p.version, p.to_json()) == p
    with pytest.raises(PolicyError):
        Policy.from_json("bad", {"shortfall_rule": "double"})
    with pytest.raises(PolicyError):
        Policy.from_json("bad", {"baseline": {"method": "5_of_5"}})
    with pytest.raises(PolicyError):
        Policy.from_json("bad", {"scrp_millipence_per_mwh": 1.5})


def test_inputs_digest_changes_with_any_input() -> None:
    o, inputs = hand_example(P415)
    as_of = utc(2023, 12, 6)
    d = inputs_digest(inputs, P415, as_of)
    assert d == inputs_digest(inputs, P415, as_of)
    changed = dict(inputs.readings)
    changed[o.window_start] += 1
    assert inputs_digest(SettlementInputs(o, changed, inputs.event_days, inputs.imbalance_prices, {}), P415, as_of) != d
    assert inputs_digest(inputs, P415, as_of + timedelta(seconds=1)) != d


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 2_000_000), min_size=4, max_size=4),
    st.integers(1, 5000),
    st.integers(0, 50_000_000),
    st.none() | st.integers(0, 5_000_000),
)
def test_reserve_covers_any_outcome(metered: list[int], kw: int, price: int, avail: int | None) -> None:
    start = utc(2023, 12, 5, 17)
    o = order(start, hours=2, kw=kw, price=price, avail=avail)
    readings = flat_history(start)
    for i, m in enumerate(metered):
        readings[start + i * PERIOD] = m
    res = settle(SettlementInputs(o, readings, frozenset(), {}, {}), P415)
    assert res.lines["utilisation"] + res.lines["availability"] <= max_exposure_pence(o, P415)
