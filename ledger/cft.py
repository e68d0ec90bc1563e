"""Compute Flex Token rules over plain data (issue 4 "Compute Flex Tokens").

A CFT is the right to call 1 MWh of compute deferral (load reduction) from a named provider within a
validity window. Each series (one provider, one window, one declared capacity) is its own ledger
`CFT:<series>` (ledger/accounts.py). Lifecycle, all as ledger transfers:

- mint:     issuance:<p>:<s> → holding:<p>:<s>. The issuance account's limit is the series' max
            tokens = floor(declared capacity × window hours / 1 MWh), so minting beyond the declared
            flexibility capacity is refused under the row lock, atomically.
- sell:     holding:<p>:<s> → holding:<buyer>:<s> and, in the same linked batch, the buyer's GBP
            payment (delivery versus payment).
- transfer: holding:<a>:<s> → holding:<b>:<s> on a secondary market, optionally with a linked payment.
- redeem:   holding:<h>:<s> → redeemed:<p>:<s> (the token is burned) and a load-reduction obligation
            for the provider in a peak period inside the validity window, registered as an order with
            settlement_method CFT (utilisation prepaid) so the normal settlement measures delivery.
- expire:   after valid_to, every remaining holding → expired:<p>:<s> (Celery beat). Expired tokens
            cannot be redeemed or traded.
Invariant per provider, property-tested: minted = outstanding + redeemed + expired — it follows from
Σ debits = Σ credits on each series ledger because those four account kinds are all there is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction

from grid.periods import is_period_aligned
from ledger.errors import LedgerError

TOKEN_ENERGY_WH = 1_000_000  # 1 token = 1 MWh of callable deferral


class CftError(LedgerError):
    def __init__(self, code: str, message: str, status: int = 422) -> None:
        super().__init__(code, message, status=status)


@dataclass(frozen=True)
class Series:
    series_id: str
    provider_id: str
    valid_from: datetime
    valid_to: datetime
    declared_capacity_w: int
    max_tokens: int


def max_tokens(declared_capacity_w: int, valid_from: datetime, valid_to: datetime) -> int:
    """Tokens a declared capacity can back over the window: floor(W × h / 1 MWh)."""
    if declared_capacity_w <= 0:
        raise CftError("capacity_invalid", "declared capacity must be positive")
    if valid_to <= valid_from:
        raise CftError("window_invalid", "valid_to must be after valid_from")
    seconds = int((valid_to - valid_from).total_seconds())
    return (declared_capacity_w * seconds) // (3600 * TOKEN_ENERGY_WH)


def check_tradable(series: Series, now: datetime) -> None:
    """Minting, selling and transferring stop when the validity window ends."""
    if now >= series.valid_to:
        raise CftError("series_expired", f"CFT series {series.series_id} expired at {series.valid_to.isoformat()}", 409)


def redemption_power_w(tokens: int, period_start: datetime, period_end: datetime) -> int:
    """Load reduction (W) that delivers `tokens` MWh evenly over the called period."""
    seconds = int((period_end - period_start).total_seconds())
    watts = Fraction(tokens * TOKEN_ENERGY_WH * 3600, seconds)
    if watts.denominator != 1:
        raise CftError(
            "period_invalid",
            f"{tokens} MWh over {seconds / 3600:g} h is not a whole number of "
            "watts; choose a period that divides the energy evenly",
        )
    return int(watts)


def check_redemption(
    series: Series,
    tokens: int,
    *,
    now: datetime,
    period_start: datetime,
    period_end: datetime,
    gate_closure_minutes: int,
) -> None:
    if tokens <= 0:
        raise CftError("amount_not_positive", "tokens must be a positive integer")
    if now >= series.valid_to:
        raise CftError(
            "series_expired", f"CFT series {series.series_id} has expired; its tokens cannot be redeemed", 409
        )
    if not (is_period_aligned(period_start) and is_period_aligned(period_end)) or period_end <= period_start:
        raise CftError("period_invalid", "the called period must start and end on half-hour boundaries")
    if period_start < series.valid_from or period_end > series.valid_to:
        raise CftError("period_outside_validity", "the called period must lie inside the series' validity window")
    if period_start - timedelta(minutes=gate_closure_minutes) < now:
        raise CftError(
            "after_gate_closure",
            f"the called period must start at least {gate_closure_minutes} minutes from now (gate closure)",
        )


def expire_transfer_id(series_id: str, holder_id: str, holder_credits_posted: int) -> str:
    """Deterministic per holding state: re-running expiry is a no-op; tokens that arrive later (a
    transfer committed at the same instant) get a new id and expire too."""
    return f"cft:{series_id}:expire:{holder_id}:{holder_credits_posted}"


@dataclass(frozen=True)
class ProviderTokens:
    minted: int
    outstanding: int
    redeemed: int
    expired: int

    @property
    def holds(self) -> bool:
        return self.minted == self.outstanding + self.redeemed + self.expired


def provider_invariant(
    net_by_account: Mapping[str, int], series_provider: Mapping[str, str]
) -> dict[str, ProviderTokens]:
    """minted / outstanding / redeemed / expired per provider from account balances (credits − debits).

    `series_provider` maps series id → provider id; accounts of other ledgers are ignored."""
    acc: dict[str, list[int]] = {p: [0, 0, 0, 0] for p in set(series_provider.values())}
    for name, net in net_by_account.items():
        parts = name.split(":")
        if len(parts) != 3 or parts[2] not in series_provider:
            continue
        provider = series_provider[parts[2]]
        slot = {"issuance": 0, "holding": 1, "redeemed": 2, "expired": 3}.get(parts[0])
        if slot is None:
            continue
        acc[provider][slot] += -net if slot == 0 else net
    return {p: ProviderTokens(*v) for p, v in acc.items()}


def series_of(names: Iterable[str]) -> set[str]:
    return {
        n.split(":")[2]
        for n in names
        if n.count(":") == 2 and n.split(":")[0] in ("issuance", "holding", "redeemed", "expired")
    }
