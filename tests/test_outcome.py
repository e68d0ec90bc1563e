"""schemas/outcome.py: when each outcome state applies (from the ledger's settlement runs), that an order
never moves back, and the outcome's Beckn encoding round trip."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.core import Order
from schemas.flex import OrderSpec, OrderView, order_view_to_order
from schemas.outcome import (
    RANK,
    RUNS,
    LedgerOutcome,
    OutcomeFormatError,
    advances,
    outcome_from_ledger,
    outcome_of_run,
    read_outcome,
    stale,
    with_outcome,
)

T0 = datetime(2026, 11, 24, 16, 0, tzinfo=UTC)
CONTRACTED_WH = Fraction(100_000)  # 100 kW for one hour
LINES = {"utilisation": 1500, "availability": 200, "shortfall": 40, "supplier_compensation": 90}


def test_states_from_runs() -> None:
    full = outcome_of_run("II", delivered_wh=CONTRACTED_WH, contracted_wh=CONTRACTED_WH, lines_pence=LINES)
    part = outcome_of_run("SF", delivered_wh=Fraction(60_001, 2), contracted_wh=CONTRACTED_WH, lines_pence=LINES)
    none = outcome_of_run("RF", delivered_wh=Fraction(0), contracted_wh=CONTRACTED_WH, lines_pence=LINES)
    final = outcome_of_run("DF", delivered_wh=Fraction(1), contracted_wh=CONTRACTED_WH, lines_pence=LINES)
    assert (full.state, part.state, none.state, final.state) == (
        "COMPLETED",
        "PARTIALLY-DELIVERED",
        "PARTIALLY-DELIVERED",
        "SETTLED",
    )
    assert full.delivered_energy_kwh == Decimal("100.000")
    assert part.delivered_energy_kwh == Decimal("30.000")  # 30,000.5 Wh: half to even
    assert full.settled_amount_pence == 1700  # utilisation + availability: what the buyer pays the provider
    with pytest.raises(OutcomeFormatError):
        outcome_of_run("XX", delivered_wh=Fraction(0), contracted_wh=CONTRACTED_WH, lines_pence=LINES)


def test_outcome_from_the_ledgers_json() -> None:
    summary = {"runs": [{"run": "II"}, {"run": "SF"}]}
    stored = {"run": "SF", "lines_pence": LINES, "result": {"delivered_wh": "200000/3", "contracted_wh": "100000"}}
    got = outcome_from_ledger(summary, stored)
    assert got == LedgerOutcome("PARTIALLY-DELIVERED", "SF", Decimal("66.667"), 1700)
    assert outcome_from_ledger({"runs": []}, None) is None
    with pytest.raises(OutcomeFormatError, match="latest"):
        outcome_from_ledger(summary, {**stored, "run": "II"})
    with pytest.raises(OutcomeFormatError):
        outcome_from_ledger(summary, {**stored, "result": {"delivered_wh": "a lot"}})


def _outcome(state: str, run: str) -> LedgerOutcome:
    return LedgerOutcome(state, run, Decimal("1.000"), 1)


def test_advances_only_forward_and_from_later_runs() -> None:
    assert advances("COMPLETED", None, _outcome("PARTIALLY-DELIVERED", "II"))  # the provisional COMPLETED restated
    assert advances("IN-PROGRESS", None, _outcome("SETTLED", "DF"))
    assert not advances("ACCEPTED", None, _outcome("COMPLETED", "II"))  # its window is not over at this BPP
    assert not advances("CANCELLED", None, _outcome("COMPLETED", "II"))
    assert not advances("COMPLETED", "SF", _outcome("COMPLETED", "SF"))  # the same run twice: idempotent
    assert not advances("COMPLETED", "SF", _outcome("PARTIALLY-DELIVERED", "II"))  # an earlier run
    assert not advances("SETTLED", "DF", _outcome("SETTLED", "DF"))


@given(
    st.sampled_from(list(RANK)),
    st.sampled_from([None, *RUNS]),
    st.sampled_from(["COMPLETED", "PARTIALLY-DELIVERED", "SETTLED"]),
    st.sampled_from(RUNS),
)
def test_an_outcome_taken_never_lowers_the_state_or_the_run(
    state: str, held_run: str | None, new_state: str, new_run: str
) -> None:
    outcome = _outcome(new_state, new_run)
    if advances(state, held_run, outcome):
        assert RANK[new_state] >= RANK[state]
        assert held_run is None or RUNS.index(new_run) > RUNS.index(held_run)


def test_stale_messages() -> None:
    assert stale("SETTLED", "DF", "COMPLETED", None)  # a late window-closed on_status
    assert stale("PARTIALLY-DELIVERED", "II", "COMPLETED", None)  # provisional COMPLETED after the outcome
    assert stale("COMPLETED", "SF", "PARTIALLY-DELIVERED", _outcome("PARTIALLY-DELIVERED", "II"))
    assert not stale("COMPLETED", "II", "PARTIALLY-DELIVERED", _outcome("PARTIALLY-DELIVERED", "SF"))
    assert not stale("ACCEPTED", None, "IN-PROGRESS", None)
    assert stale("IN-PROGRESS", None, "ACCEPTED", None)


def _order(state: str) -> Order:
    spec = OrderSpec("p", "i", 100.0, T0, T0 + timedelta(hours=1), "M", "P415", "o-1")
    return order_view_to_order(OrderView(spec, state, 100.0, 10.0, T0))


@given(
    st.sampled_from(RUNS[:-1]),
    st.sampled_from(["COMPLETED", "PARTIALLY-DELIVERED"]),
    st.integers(min_value=0, max_value=10**9),
    st.integers(min_value=-(10**12), max_value=10**12),
)
def test_the_outcome_round_trips_through_a_beckn_order(run: str, state: str, wh: int, pence: int) -> None:
    outcome = LedgerOutcome(state, run, Decimal(wh) / 1000, pence)
    order = Order.model_validate(with_outcome(_order(state), outcome).dump())  # as it crosses the wire
    assert read_outcome(order) == outcome


def test_an_order_without_an_outcome_reads_none_and_a_bad_one_is_refused() -> None:
    assert read_outcome(_order("COMPLETED")) is None
    good = with_outcome(_order("SETTLED"), LedgerOutcome("SETTLED", "DF", Decimal("1.5"), 3)).dump()
    assert read_outcome(Order.model_validate(good)) is not None
    tags = good["fulfillments"][0]["tags"][0]["list"]
    for code, bad in (("settlement_run", "II"), ("delivered_energy_kwh", "-1"), ("settled_amount_pence", "x")):
        broken = Order.model_validate(good)
        for tag in broken.fulfillments[0].tags[0].list_:  # type: ignore[index, union-attr]
            if tag.descriptor and tag.descriptor.code == code:
                tag.value = bad
        with pytest.raises(OutcomeFormatError, match=code if code != "settled_amount_pence" else "numbers"):
            read_outcome(broken)
    assert {t["descriptor"]["code"] for t in tags} == {
        "settlement_run",
        "delivered_energy_kwh",
        "settled_amount_pence",
    }


def test_a_token_paid_order_is_its_redemption_obligation_on_the_ledger() -> None:
    from schemas.outcome import ledger_order_id

    assert ledger_order_id("o-1", "CFT") == "cft-o-1"
    assert ledger_order_id("o-1", "P415") == ledger_order_id("o-1", None) == "o-1"
