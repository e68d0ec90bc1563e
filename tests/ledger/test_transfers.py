"""Double-entry rules over plain data (ledger/transfers.py), including hypothesis invariants."""

from __future__ import annotations

from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.transfers import (
    FLAG_CREDITS_MUST_NOT_EXCEED_DEBITS,
    FLAG_DEBITS_MUST_NOT_EXCEED_CREDITS,
    Account,
    Balance,
    Entry,
    LedgerState,
    TransferError,
    TransferSpec,
    apply_request,
    balances_from_entries,
)

NOW = 1_700_000_000_000_000


def make_state(*accounts: Account, funded: dict[str, int] | None = None) -> LedgerState:
    balances = {a.name: Balance() for a in accounts}
    for name, amount in (funded or {}).items():
        balances[name].credits_posted = amount
    return LedgerState({a.name: a for a in accounts}, balances, {}, {})


CASH = Account("bap:b:cash", "GBP")
REV = Account("provider:p:revenue", "GBP", FLAG_DEBITS_MUST_NOT_EXCEED_CREDITS)
PEN = Account("provider:p:penalties", "GBP", FLAG_CREDITS_MUST_NOT_EXCEED_DEBITS)
HOLD = Account("holding:x:s1", "CFT:s1", FLAG_DEBITS_MUST_NOT_EXCEED_CREDITS)
ISS = Account("issuance:p:s1", "CFT:s1", 0, max_net_debit=10)


def single(tid: str, debit: str, credit: str, amount: int, ledger: str = "GBP", memo: str = "") -> TransferSpec:
    return TransferSpec(tid, "single", ledger, debit, credit, amount, memo=memo)


def test_single_transfer_moves_posted_balances() -> None:
    st_ = make_state(CASH, REV)
    out = apply_request([single("t1", CASH.name, REV.name, 500)], st_, NOW)
    assert out.status == "created" and out.entries[0].amount == 500
    assert st_.balances[CASH.name].debits_posted == 500
    assert st_.balances[REV.name].net_posted == 500


@pytest.mark.parametrize(
    ("spec", "code"),
    [
        (single("t", CASH.name, REV.name, 0), "amount_not_positive"),
        (single("t", CASH.name, REV.name, -5), "amount_not_positive"),
        (TransferSpec("t", "single", "GBP", CASH.name, REV.name, True), "amount_not_positive"),
        (single("t", CASH.name, REV.name, 2**53), "amount_too_large"),
        (single("t", CASH.name, "provider:nobody:revenue", 5), "unknown_account"),
        (single("t", CASH.name, CASH.name, 5), "accounts_must_differ"),
        (single("t", CASH.name, HOLD.name, 5), "ledger_mismatch"),
        (single("t", CASH.name, REV.name, 5, ledger="CFT:s1"), "ledger_mismatch"),
        (single("t", REV.name, CASH.name, 5), "exceeds_credits"),
        (single("t", CASH.name, PEN.name, 5), "exceeds_debits"),
        (single(" bad id", CASH.name, REV.name, 5), "id_invalid"),
        (single("t", CASH.name, REV.name, 5, memo="\x00"), "memo_invalid"),
        (TransferSpec("t", "post"), "missing_field"),
        (TransferSpec("t", "post", pending_id="nope"), "pending_not_found"),
        (TransferSpec("t", "teleport", "GBP", CASH.name, REV.name, 5), "kind_invalid"),
        (TransferSpec("t", "pending", "GBP", CASH.name, REV.name, 5, timeout_us=2**53), "timeout_invalid"),
        (TransferSpec("t", "pending", "GBP", CASH.name, REV.name, 5, timeout_us=1.5), "timeout_invalid"),  # type: ignore[arg-type]
        (TransferSpec("t", "pending", "GBP", CASH.name, REV.name, 5, timeout_us=0), "timeout_invalid"),
    ],
)
def test_refusals_leave_state_untouched(spec: TransferSpec, code: str) -> None:
    st_ = make_state(CASH, REV, PEN, HOLD)
    before = {k: v.as_tuple() for k, v in st_.balances.items()}
    with pytest.raises(TransferError) as err:
        apply_request([spec], st_, NOW)
    assert err.value.code == code
    assert {k: v.as_tuple() for k, v in st_.balances.items()} == before
    assert st_.entries == {}


def test_linked_batch_is_all_or_nothing() -> None:
    st_ = make_state(CASH, REV, HOLD, funded={HOLD.name: 3})
    batch = [
        single("pay", CASH.name, REV.name, 100),
        single("tok", HOLD.name, "holding:y:s1", 5, ledger="CFT:s1"),
    ]  # unknown account → refuse all
    with pytest.raises(TransferError):
        apply_request(batch, st_, NOW)
    assert st_.balances[REV.name].net_posted == 0
    assert "pay" not in st_.entries


def test_later_transfer_in_a_batch_sees_earlier_ones() -> None:
    st_ = make_state(CASH, REV, Account("provider:q:revenue", "GBP", FLAG_DEBITS_MUST_NOT_EXCEED_CREDITS))
    out = apply_request(
        [single("a", CASH.name, REV.name, 10), single("b", REV.name, "provider:q:revenue", 10)], st_, NOW
    )
    assert out.status == "created" and st_.balances["provider:q:revenue"].net_posted == 10


def test_idempotency_same_content_returns_existing_different_content_conflicts() -> None:
    st_ = make_state(CASH, REV)
    first = apply_request([single("t1", CASH.name, REV.name, 500, memo="m")], st_, NOW)
    again = apply_request([single("t1", CASH.name, REV.name, 500, memo="m")], st_, NOW + 5)
    assert again.status == "exists" and again.entries == first.entries
    assert st_.balances[REV.name].net_posted == 500
    for changed in (single("t1", CASH.name, REV.name, 501, memo="m"), single("t1", CASH.name, REV.name, 500)):
        with pytest.raises(TransferError) as err:
            apply_request([changed], st_, NOW)
        assert err.value.code == "id_conflict" and err.value.status == 409
    with pytest.raises(TransferError) as err:  # part of a linked batch exists
        apply_request(
            [single("t1", CASH.name, REV.name, 500, memo="m"), single("t2", CASH.name, REV.name, 1)], st_, NOW
        )
    assert err.value.code == "id_conflict"


def test_pending_post_partial_then_no_second_resolution() -> None:
    st_ = make_state(CASH, REV)
    apply_request([TransferSpec("p1", "pending", "GBP", CASH.name, REV.name, 1000, timeout_us=NOW + 10)], st_, NOW)
    assert st_.balances[REV.name].credits_pending == 1000
    apply_request([TransferSpec("c1", "post", pending_id="p1", amount=600)], st_, NOW)
    rev = st_.balances[REV.name]
    assert (rev.credits_pending, rev.credits_posted) == (0, 600)
    for spec in (TransferSpec("c2", "post", pending_id="p1"), TransferSpec("c3", "void", pending_id="p1")):
        with pytest.raises(TransferError) as err:
            apply_request([spec], st_, NOW)
        assert err.value.code == "pending_already_resolved"


def test_post_more_than_reserved_is_refused() -> None:
    st_ = make_state(CASH, REV)
    apply_request([TransferSpec("p1", "pending", "GBP", CASH.name, REV.name, 100)], st_, NOW)
    with pytest.raises(TransferError) as err:
        apply_request([TransferSpec("c1", "post", pending_id="p1", amount=101)], st_, NOW)
    assert err.value.code == "exceeds_pending_amount"


def test_void_and_expire() -> None:
    st_ = make_state(CASH, REV)
    apply_request(
        [
            TransferSpec("p1", "pending", "GBP", CASH.name, REV.name, 100, timeout_us=NOW + 10),
            TransferSpec("p2", "pending", "GBP", CASH.name, REV.name, 50, timeout_us=NOW + 10),
        ],
        st_,
        NOW,
    )
    apply_request([TransferSpec("v1", "void", pending_id="p1")], st_, NOW)
    with pytest.raises(TransferError) as err:
        apply_request([TransferSpec("e2", "expire", pending_id="p2")], st_, NOW)
    assert err.value.code == "pending_not_expired"
    with pytest.raises(TransferError) as err:
        apply_request([TransferSpec("c2", "post", pending_id="p2")], st_, NOW + 10)
    assert err.value.code == "pending_expired"
    apply_request([TransferSpec("e2", "expire", pending_id="p2")], st_, NOW + 10)
    assert st_.balances[REV.name].as_tuple() == (0, 0, 0, 0)
    assert st_.balances[CASH.name].as_tuple() == (0, 0, 0, 0)


def test_pending_counts_against_protected_balance() -> None:
    st_ = make_state(
        HOLD, Account("holding:y:s1", "CFT:s1", FLAG_DEBITS_MUST_NOT_EXCEED_CREDITS), funded={HOLD.name: 5}
    )
    apply_request([TransferSpec("p", "pending", "CFT:s1", HOLD.name, "holding:y:s1", 4)], st_, NOW)
    with pytest.raises(TransferError) as err:
        apply_request([single("s", HOLD.name, "holding:y:s1", 2, ledger="CFT:s1")], st_, NOW)
    assert err.value.code == "exceeds_credits"


def test_limit_on_net_debits() -> None:
    st_ = make_state(ISS, HOLD)
    apply_request([single("m1", ISS.name, HOLD.name, 10, ledger="CFT:s1")], st_, NOW)
    with pytest.raises(TransferError) as err:
        apply_request([single("m2", ISS.name, HOLD.name, 1, ledger="CFT:s1")], st_, NOW)
    assert err.value.code == "exceeds_limit"


# --- properties -----------------------------------------------------------------------------------------

ACCOUNTS = [
    Account("bap:b:cash", "GBP"),
    Account("pot:supplier-compensation", "GBP"),
    Account("provider:p:revenue", "GBP", FLAG_DEBITS_MUST_NOT_EXCEED_CREDITS),
    Account("provider:p:penalties", "GBP", FLAG_CREDITS_MUST_NOT_EXCEED_DEBITS),
    Account("issuance:p:s", "CFT:s", 0, 50),
    Account("holding:p:s", "CFT:s", FLAG_DEBITS_MUST_NOT_EXCEED_CREDITS),
    Account("holding:b:s", "CFT:s", FLAG_DEBITS_MUST_NOT_EXCEED_CREDITS),
]
NAMES = [a.name for a in ACCOUNTS]

op = st.one_of(
    st.tuples(st.just("single"), st.sampled_from(NAMES), st.sampled_from(NAMES), st.integers(-5, 60)),
    st.tuples(st.just("pending"), st.sampled_from(NAMES), st.sampled_from(NAMES), st.integers(1, 60)),
    st.tuples(st.just("post"), st.integers(0, 30), st.none() | st.integers(1, 70), st.just(0)),
    st.tuples(st.just("void"), st.integers(0, 30), st.none(), st.just(0)),
    st.tuples(st.just("expire"), st.integers(0, 30), st.none(), st.just(0)),
    st.tuples(st.just("retry"), st.integers(0, 30), st.none(), st.just(0)),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(op, min_size=1, max_size=3), max_size=25))
def test_invariants_hold_for_any_sequence_of_requests(requests: list) -> None:
    """Σ debits = Σ credits per ledger; balance = Σ entries; nothing resolves twice; refused requests
    change nothing; retries never duplicate."""
    st_ = LedgerState({a.name: a for a in ACCOUNTS}, {a.name: Balance() for a in ACCOUNTS}, {}, {})
    journal: list[Entry] = []
    pendings: list[str] = []
    submitted: list[list[TransferSpec]] = []
    now = NOW
    for n, req in enumerate(requests):
        now += 1
        specs = []
        if req[0][0] == "retry" and submitted:
            specs = submitted[req[0][1] % len(submitted)]
        else:
            for i, (kind, a, b, amount) in enumerate(req):
                tid = f"r{n}-{i}"
                if kind in ("single", "pending"):
                    led = st_.accounts[a].ledger
                    specs.append(
                        TransferSpec(tid, kind, led, a, b, amount, timeout_us=now + 3 if kind == "pending" else None)
                    )
                elif kind in ("post", "void", "expire") and pendings:
                    specs.append(
                        TransferSpec(
                            tid, kind, pending_id=pendings[a % len(pendings)], amount=b if kind == "post" else None
                        )
                    )
        if not specs:
            continue
        before = {k: v.as_tuple() for k, v in st_.balances.items()}
        try:
            out = apply_request(specs, st_, now)
        except TransferError:
            assert {k: v.as_tuple() for k, v in st_.balances.items()} == before
            continue
        submitted.append(specs)
        if out.status == "created":
            journal.extend(out.entries)
            pendings += [e.id for e in out.entries if e.kind == "pending"]
        else:
            assert {k: v.as_tuple() for k, v in st_.balances.items()} == before
    # ids unique, each pending resolved at most once
    assert len({e.id for e in journal}) == len(journal)
    resolutions = [e.pending_id for e in journal if e.kind in ("post", "void", "expire")]
    assert len(resolutions) == len(set(resolutions))
    # every balance equals the sum of its entries
    recomputed = balances_from_entries(journal)
    for name, bal in st_.balances.items():
        assert bal.as_tuple() == recomputed.get(name, Balance()).as_tuple()
    # Σ debits = Σ credits per ledger (posted and pending), hence money and tokens are conserved
    sums: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for a in ACCOUNTS:
        b = st_.balances[a.name]
        for i, v in enumerate(b.as_tuple()):
            sums[a.ledger][i] += v
    for dp, cp, dpe, cpe in sums.values():
        assert dp == cp and dpe == cpe
    # flags were never violated
    for a in ACCOUNTS:
        b = st_.balances[a.name]
        if a.flags & FLAG_DEBITS_MUST_NOT_EXCEED_CREDITS:
            assert b.debits_posted + b.debits_pending <= b.credits_posted
        if a.flags & FLAG_CREDITS_MUST_NOT_EXCEED_DEBITS:
            assert b.credits_posted + b.credits_pending <= b.debits_posted
        if a.max_net_debit is not None:
            assert b.debits_posted + b.debits_pending - b.credits_posted <= a.max_net_debit
