"""Compute Flex Token rules; the invariant minted = outstanding + redeemed + expired, property-tested
over the pure transfer engine."""

from __future__ import annotations

import contextlib
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import accounts as acct
from ledger.cft import CftError, Series, check_redemption, max_tokens, provider_invariant, redemption_power_w
from ledger.transfers import Account, Balance, LedgerState, TransferError, TransferSpec, apply_request
from tests.ledger.conftest import utc

T0 = utc(2026, 12, 1)
SERIES = Series("s1", "dc", T0, T0 + timedelta(days=7), 2_000_000, max_tokens(2_000_000, T0, T0 + timedelta(days=7)))


def test_max_tokens_from_declared_capacity() -> None:
    assert SERIES.max_tokens == 336  # 2 MW × 168 h = 336 MWh
    assert max_tokens(1_500_000, T0, T0 + timedelta(hours=1)) == 1  # floor(1.5)
    with pytest.raises(CftError):
        max_tokens(0, T0, T0 + timedelta(hours=1))


def test_redemption_rules() -> None:
    now = T0 + timedelta(days=1)
    start = now + timedelta(hours=2)
    check_redemption(
        SERIES, 2, now=now, period_start=start, period_end=start + timedelta(hours=1), gate_closure_minutes=60
    )
    with pytest.raises(CftError) as e:
        check_redemption(
            SERIES,
            2,
            now=SERIES.valid_to,
            period_start=start,
            period_end=start + timedelta(hours=1),
            gate_closure_minutes=60,
        )
    assert e.value.code == "series_expired"
    with pytest.raises(CftError) as e:
        check_redemption(
            SERIES,
            2,
            now=now,
            period_start=now + timedelta(minutes=30),
            period_end=now + timedelta(hours=1),
            gate_closure_minutes=60,
        )
    assert e.value.code == "after_gate_closure"
    with pytest.raises(CftError) as e:
        check_redemption(
            SERIES,
            2,
            now=now,
            period_start=SERIES.valid_to - timedelta(minutes=30),
            period_end=SERIES.valid_to + timedelta(hours=1),
            gate_closure_minutes=60,
        )
    assert e.value.code == "period_outside_validity"
    assert redemption_power_w(2, start, start + timedelta(hours=1)) == 2_000_000
    with pytest.raises(CftError):
        redemption_power_w(1, start, start + timedelta(hours=3))  # 333,333.3 W


OPS = st.lists(
    st.tuples(
        st.sampled_from(["mint", "sell", "transfer", "redeem", "expire"]),
        st.sampled_from(["dc", "bap1", "bap2"]),
        st.sampled_from(["dc", "bap1", "bap2"]),
        st.integers(-2, 40),
        st.sampled_from(["s1", "s2"]),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(OPS)
def test_token_invariant_per_provider(ops: list) -> None:
    series_provider = {"s1": "dc", "s2": "dc2"}
    caps = {"s1": 50, "s2": 30}
    accounts: dict[str, Account] = {}
    for s, p in series_provider.items():
        for spec_name in (
            acct.issuance(p, s),
            acct.redeemed(p, s),
            acct.expired(p, s),
            *(acct.holding(x, s) for x in ("dc", "dc2", "bap1", "bap2")),
        ):
            d = acct.describe(spec_name)
            accounts[spec_name] = Account(
                spec_name, d.ledger, d.flags, caps[s] if spec_name.startswith("iss") else None
            )
    state = LedgerState(accounts, {n: Balance() for n in accounts}, {}, {})
    expired: set[str] = set()
    for n, (kind, a, b, amount, s) in enumerate(ops):
        p = series_provider[s]
        ledger = acct.cft_ledger(s)
        if s in expired and kind != "expire":
            continue  # the service refuses every operation on an ended series
        if kind == "mint":
            specs = [TransferSpec(f"{n}", "single", ledger, acct.issuance(p, s), acct.holding(p, s), amount)]
        elif kind == "sell":
            specs = [TransferSpec(f"{n}", "single", ledger, acct.holding(p, s), acct.holding(b, s), amount)]
        elif kind == "transfer":
            specs = [TransferSpec(f"{n}", "single", ledger, acct.holding(a, s), acct.holding(b, s), amount)]
        elif kind == "redeem":
            specs = [TransferSpec(f"{n}", "single", ledger, acct.holding(a, s), acct.redeemed(p, s), amount)]
        else:
            expired.add(s)
            specs = [
                TransferSpec(
                    f"{n}-{h}",
                    "single",
                    ledger,
                    acct.holding(h, s),
                    acct.expired(p, s),
                    state.balances[acct.holding(h, s)].net_posted,
                )
                for h in ("dc", "dc2", "bap1", "bap2")
                if state.balances[acct.holding(h, s)].net_posted > 0
            ]
            if not specs:
                continue
        with contextlib.suppress(TransferError):
            apply_request(specs, state, 1)
    nets = {name: b.net_posted for name, b in state.balances.items()}
    for p, t in provider_invariant(nets, series_provider).items():
        assert t.holds, (p, t)
        assert 0 <= t.minted <= sum(caps[s] for s, q in series_provider.items() if q == p)
        assert min(t.outstanding, t.redeemed, t.expired) >= 0
    for s in expired:  # after expiry nobody holds tokens of that series
        assert all(state.balances[acct.holding(h, s)].net_posted == 0 for h in ("dc", "dc2", "bap1", "bap2"))


def test_invariant_detects_a_leak() -> None:
    nets = {"issuance:dc:s1": -10, "holding:bap1:s1": 6, "redeemed:dc:s1": 3, "expired:dc:s1": 0}
    assert not provider_invariant(nets, {"s1": "dc"})["dc"].holds
    nets["expired:dc:s1"] = 1
    assert provider_invariant(nets, {"s1": "dc"})["dc"].holds
