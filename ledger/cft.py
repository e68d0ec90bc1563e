"""Compute Flex Token rules over plain data (issue 4 "Compute Flex Tokens").

A CFT is the right to call 1 MWh of compute deferral (load reduction) from a named provider within a
validity window. Each series (one provider, one window, one declared capacity) is its own ledger
`CFT:<series>` (ledger/accounts.py). Lifecycle, all as ledger transfers:

- mint:     issuance:<p>:<s> → holding:<p>:<s>. The issuance account's limit is the series' max
            tokens = floor(declared capacity × window hours / 1 MWh), so minting beyond the declared
            flexibility capacity is refused under the row lock, atomically.
- sell:     holding:<p>:<s> → holding:<buyer>:<s> and, in the same linked batch, the buyer's GBP
            payment (delivery versus payment).
- transfer: holding:<a>:<s> → holding:<b>:<s> between participants (a gift, or an OTC deal settled elsewhere),
            optionally with a linked payment.
- list:     holding:<seller>:<s> → listing:<l>:<s>, the listing's escrow (ledger/listings.py): listed tokens
            leave the seller's holding at once, so what a listing offers is always there to deliver.
- buy:      listing:<l>:<s> → holding:<buyer>:<s> and, in the same linked batch, the buyer's GBP payment to the
            seller (delivery versus payment); only while the listing is open, from a buyer that is not the
            seller and whose cash covers the price.
- cancel:   listing:<l>:<s> → holding:<seller>:<s>, whatever is left.
- redeem:   holding:<h>:<s> → redeemed:<p>:<s> (the token is burned) and a load-reduction obligation
            for the provider in a peak period inside the validity window, registered as an order with
            settlement_method CFT (utilisation prepaid) so the normal settlement measures delivery.
- expire:   after valid_to, every remaining holding and listing escrow → expired:<p>:<s> (Celery beat).
            Expired tokens cannot be redeemed or traded.
Invariant per provider, property-tested: minted = outstanding + redeemed + expired, where outstanding counts
holdings and listing escrows — it follows from Σ debits = Σ credits on each series ledger because those five
account kinds are all there is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction

from grid.money import MAX_SAFE_INTEGER
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


def expire_listing_transfer_id(series_id: str, listing_id: str, escrow_credits_posted: int) -> str:
    """As `expire_transfer_id`, for a listing's escrow (its own name space: a listing id may equal a holder id)."""
    return f"cft:{series_id}:expire-listing:{listing_id}:{escrow_credits_posted}"


# -- the secondary market: listings (ledger/listings.py) -------------------------------------------
@dataclass(frozen=True)
class Listing:
    """A holder's offer of `tokens_listed` tokens of a series at a price per token. `tokens_left` is its escrow
    account's balance (the ledger's, never a counter of its own); `cancelled` once the seller withdrew it."""

    listing_id: str
    series_id: str
    seller_id: str
    tokens_listed: int
    price_pence_per_token: int
    tokens_left: int
    cancelled: bool


def listing_status(listing: Listing, series: Series, now: datetime) -> str:
    """cancelled | expired (the series' validity ended) | sold (nothing left) | open."""
    if listing.cancelled:
        return "cancelled"
    if now >= series.valid_to:
        return "expired"
    return "open" if listing.tokens_left > 0 else "sold"


def check_listing_terms(tokens: int, price_pence_per_token: int) -> None:
    """A listing offers a positive number of tokens at a positive price (a gift is a transfer), and the whole
    listing's price stays a safe integer of pence."""
    if type(tokens) is not int or tokens <= 0 or tokens > MAX_SAFE_INTEGER:
        raise CftError("amount_not_positive", "tokens: must be a positive integer")
    if type(price_pence_per_token) is not int or price_pence_per_token <= 0:
        raise CftError(
            "price_invalid",
            "price_gbp_per_token: must be positive (give tokens away with POST /api/v1/cft/transfer)",
        )
    if tokens * price_pence_per_token > MAX_SAFE_INTEGER:
        raise CftError("price_invalid", "price_gbp_per_token: tokens × price is too large")


def purchase_price_pence(listing: Listing, series: Series, *, buyer_id: str, tokens: int, now: datetime) -> int:
    """What buying `tokens` of an open listing costs the buyer; refuses a buyer that is the seller, a listing
    that is cancelled, expired or sold, and more tokens than it has left."""
    if type(tokens) is not int or tokens <= 0 or tokens > MAX_SAFE_INTEGER:
        raise CftError("amount_not_positive", "tokens: must be a positive integer")
    if buyer_id == listing.seller_id:
        raise CftError("buyer_is_seller", f"listing {listing.listing_id} is the buyer's own; cancel it instead")
    status = listing_status(listing, series, now)
    if status == "cancelled":
        raise CftError("listing_cancelled", f"listing {listing.listing_id} was cancelled by its seller", 409)
    if status == "expired":
        raise CftError(
            "listing_expired",
            f"listing {listing.listing_id}: series {series.series_id} expired at {series.valid_to.isoformat()}",
            409,
        )
    if tokens > listing.tokens_left:
        raise CftError(
            "insufficient_tokens",
            f"tokens: listing {listing.listing_id} has {listing.tokens_left} token(s) left, {tokens} asked",
            409,
        )
    return tokens * listing.price_pence_per_token


def check_buyer_funds(*, available_after_pence: int, price_pence: int) -> None:
    """The buyer's cash must cover the price: its available balance (credits − debits − reserved) after the
    payment is not negative. Judged under the row lock of the payment itself, so no concurrent debit slips in."""
    if available_after_pence < 0:
        raise CftError(
            "insufficient_funds",
            f"the buyer's cash holds {available_after_pence + price_pence} pence available; "
            f"the purchase costs {price_pence} pence",
            409,
        )


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
    """minted / outstanding (holdings and listing escrows) / redeemed / expired per provider from account
    balances (credits − debits).

    `series_provider` maps series id → provider id; accounts of other ledgers are ignored."""
    acc: dict[str, list[int]] = {p: [0, 0, 0, 0] for p in set(series_provider.values())}
    for name, net in net_by_account.items():
        parts = name.split(":")
        if len(parts) != 3 or parts[2] not in series_provider:
            continue
        provider = series_provider[parts[2]]
        slot = {"issuance": 0, "holding": 1, "listing": 1, "redeemed": 2, "expired": 3}.get(parts[0])
        if slot is None:
            continue
        acc[provider][slot] += -net if slot == 0 else net
    return {p: ProviderTokens(*v) for p, v in acc.items()}


def series_of(names: Iterable[str]) -> set[str]:
    return {
        n.split(":")[2]
        for n in names
        if n.count(":") == 2 and n.split(":")[0] in ("issuance", "holding", "listing", "redeemed", "expired")
    }
