"""bap/differences.py: the pure comparison of three snapshots of each order (the BAP's, the BPP's, the
ledger's). Books that agree give no difference; each field changed in one book gives exactly that field's
difference, naming all three values."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from bap.differences import Difference, Kind, LedgerOrder, PartyOrder, compare, compare_books
from schemas.outcome import LedgerOutcome

T0 = datetime(2026, 11, 24, 16, 0, tzinfo=UTC)
T1 = T0 + timedelta(hours=1)
OUTCOME = LedgerOutcome("PARTIALLY-DELIVERED", "II", Decimal("62.500"), 1250)


def party(state: str = "ACCEPTED", **kw: object) -> PartyOrder:
    base = PartyOrder(state, 100.0, T0, T1, 150.0)
    return replace(base, **kw)  # type: ignore[arg-type]


def ledger(**kw: object) -> LedgerOrder:
    return replace(LedgerOrder(100.0, T0, T1, 150.0, cancelled=False), **kw)  # type: ignore[arg-type]


def settled_party(state: str = "PARTIALLY-DELIVERED") -> PartyOrder:
    return party(state, delivered_energy_kwh=62.5, settled_amount_pence=1250)


def test_agreeing_books_have_no_difference() -> None:
    assert compare("o", party(), party(), ledger()) == []
    assert compare("o", party("CREATED"), party("CREATED"), None) == []
    assert compare("o", party("COMPLETED"), party("COMPLETED"), ledger()) == []  # window closed, no run yet
    assert compare("o", settled_party(), settled_party(), ledger(outcome=OUTCOME)) == []
    assert compare("o", party("CANCELLED"), party("CANCELLED"), ledger(cancelled=True)) == []
    assert compare("o", party("CANCELLED"), party("CANCELLED"), None) == []  # cancelled before acceptance


def test_the_bpps_kw_changed() -> None:
    assert compare("o", party(), party(power_kw=120.0), ledger()) == [
        Difference("o", Kind.POWER_KW, "100", "120", "100")
    ]


def test_presence() -> None:
    assert compare("o", party(), party(), None) == [Difference("o", Kind.PRESENCE, "present", "present", "absent")]
    assert compare("o", party("CREATED"), party("CREATED"), ledger()) == [
        Difference("o", Kind.PRESENCE, "present", "present", "present")
    ]
    assert compare("o", party(), None, ledger()) == [Difference("o", Kind.PRESENCE, "present", "absent", "present")]
    assert compare("o", None, None, ledger()) == [Difference("o", Kind.PRESENCE, "absent", "absent", "present")]


def test_states_against_the_ledger() -> None:
    # the ledger cancelled it, the others did not
    assert compare("o", party(), party(), ledger(cancelled=True)) == [
        Difference("o", Kind.STATE, "ACCEPTED", "ACCEPTED", "CANCELLED")
    ]
    # the BPP claims an outcome the ledger has not established
    [diff] = [d for d in compare("o", party("SETTLED"), party("SETTLED"), ledger()) if d.kind is Kind.STATE]
    assert diff.ledger == "REGISTERED"
    # the ledger's run says partial; the buyer still holds the provisional COMPLETED and no outcome
    kinds = {d.kind for d in compare("o", party("COMPLETED"), settled_party(), ledger(outcome=OUTCOME))}
    assert kinds == {Kind.STATE, Kind.DELIVERED, Kind.AMOUNT}


def test_across_books() -> None:
    found = compare_books(
        {"a": party(), "b": party()},
        {"a": party(), "b": party(window_end=T1 + timedelta(minutes=30))},
        {"a": ledger(), "b": ledger(), "c": ledger()},
    )
    assert [(d.order_id, d.kind) for d in found] == [("b", Kind.WINDOW), ("c", Kind.PRESENCE)]
    window = found[0]
    assert window.bap == f"{T0.isoformat()}/{T1.isoformat()}" and window.bpp != window.bap


PARTY_CHANGES = {
    Kind.POWER_KW: {"power_kw": 99.5},
    Kind.WINDOW: {"window_start": T0 - timedelta(minutes=30)},
    Kind.PRICE: {"price_gbp_per_mwh": 151.0},
    Kind.DELIVERED: {"delivered_energy_kwh": 61.0},
    Kind.AMOUNT: {"settled_amount_pence": 1249},
    Kind.STATE: {"state": "COMPLETED"},
}
LEDGER_CHANGES = {
    Kind.POWER_KW: {"power_kw": 99.5},
    Kind.WINDOW: {"window_end": T1 + timedelta(minutes=30)},
    Kind.PRICE: {"price_gbp_per_mwh": 149.0},
    Kind.DELIVERED: {"outcome": replace(OUTCOME, delivered_energy_kwh=Decimal("61.000"))},
    Kind.AMOUNT: {"outcome": replace(OUTCOME, settled_amount_pence=1249)},
    Kind.STATE: {"outcome": replace(OUTCOME, state="COMPLETED")},
}


def _only(found: list[Difference], kind: Kind, odd_one: str) -> None:
    """Exactly one difference, of `kind`, in which `odd_one`'s value stands out and the two others agree."""
    assert [d.kind for d in found] == [kind]
    values = {"bap": found[0].bap, "bpp": found[0].bpp, "ledger": found[0].ledger}
    others = [v for book, v in values.items() if book != odd_one]
    assert others[0] == others[1] != values[odd_one]


@given(st.sampled_from(sorted(PARTY_CHANGES)), st.sampled_from(["bap", "bpp"]))
def test_one_field_changed_in_one_party_is_exactly_that_difference(kind: Kind, book: str) -> None:
    books = {"bap": settled_party(), "bpp": settled_party()}
    books[book] = replace(books[book], **PARTY_CHANGES[kind])  # type: ignore[arg-type]
    _only(compare("o", books["bap"], books["bpp"], ledger(outcome=OUTCOME)), kind, book)


@given(st.sampled_from(sorted(LEDGER_CHANGES)))
def test_one_field_changed_in_the_ledger_is_exactly_that_difference(kind: Kind) -> None:
    led = ledger(**{"outcome": OUTCOME, **LEDGER_CHANGES[kind]})
    _only(compare("o", settled_party(), settled_party(), led), kind, "ledger")


@given(st.sampled_from(["ACCEPTED", "IN-PROGRESS", "COMPLETED", "CANCELLED", "CREATED"]), st.booleans())
def test_the_comparison_is_symmetric_between_bap_and_bpp(state: str, with_ledger: bool) -> None:
    a, b = party(state), party(state, power_kw=42.0)
    led = ledger(cancelled=state == "CANCELLED") if with_ledger else None
    one = compare("o", a, b, led)
    other = compare("o", b, a, led)
    assert [(d.kind, d.bap, d.bpp) for d in one] == [(d.kind, d.bpp, d.bap) for d in other]


def test_a_token_paid_order_is_not_compared_on_its_money_price() -> None:
    """The ledger holds a token-paid order as the redemption's obligation at no money price (the tokens prepaid
    it): that is not a difference; the buyer and the provider still must agree on the price, and kW, window and
    state are compared with the ledger as ever."""
    tokens = ledger(price_gbp_per_mwh=0.0, paid_with_tokens=True)
    assert compare("o", party(), party(), tokens) == []
    assert compare("o", party(), party(), ledger(price_gbp_per_mwh=0.0)) == [
        Difference("o", Kind.PRICE, "150", "150", "0")
    ]
    assert [d.kind for d in compare("o", party(), party(price_gbp_per_mwh=160.0), tokens)] == [Kind.PRICE]
    assert [d.kind for d in compare("o", party(), party(), replace(tokens, power_kw=90.0))] == [Kind.POWER_KW]
