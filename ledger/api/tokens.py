"""Routes: Compute Flex Token series, mint, sell, transfer and redeem (ledger/tokens.py).

A buyer's cash moves only with the buyer's signed Beckn confirm for that trade (ledger/agreements.py):
always for a primary sale, and for a secondary-market transfer that has a price. Tokens leave a holding
only with the holder's own key."""

from __future__ import annotations

from datetime import UTC
from decimal import Decimal
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime

from grid.money import decimal_to_units
from kernel import clock
from ledger import tokens
from ledger.agreements import KeyDirectory, TokenSale, Verified, check_token_consent, verify_message
from ledger.api.deps import Body, LedgerRoute, LedgerRuntime, Runtime, Text, Tokens, Who, created, read, tx
from ledger.api.signed import Keys, SignedMessageIn
from ledger.errors import LedgerError, forbidden
from ledger.settlement import DEFAULT_POLICY
from schemas import limits

router = APIRouter(route_class=LedgerRoute)


class SeriesIn(Body):
    series_id: Text
    provider_id: Text
    valid_from: AwareDatetime
    valid_to: AwareDatetime
    declared_capacity_kw: limits.KilowattsDecimal


class MintIn(Body):
    id: Text
    series_id: Text
    tokens: Tokens


class SellIn(Body):
    """A primary sale; `confirm` is the buyer's signed Beckn confirm for exactly it (provider = the series'
    provider, one item = the series, quantity.selected.count = tokens, quote.price = price_gbp)."""

    id: Text
    series_id: Text
    buyer_id: Text
    tokens: Tokens
    price_gbp: Decimal = Decimal(0)
    confirm: SignedMessageIn


class CftTransferIn(Body):
    """A secondary-market transfer by the holder (`from_id`); with a price, `confirm` is the receiver's
    signed consent (as for a sale, with provider.id = from_id)."""

    id: Text
    series_id: Text
    from_id: Text
    to_id: Text
    tokens: Tokens
    price_gbp: Decimal = Decimal(0)
    confirm: SignedMessageIn | None = None


class RedeemIn(Body):
    id: Text
    series_id: Text
    holder_id: Text
    tokens: Tokens
    period_start: AwareDatetime
    period_end: AwareDatetime
    meter_id: Text
    supplier_id: Text
    policy_version: Text = DEFAULT_POLICY


def _series_provider(rt: LedgerRuntime, series_id: str) -> str:
    provider: str = read(rt, lambda c: tokens.series_info(c, series_id))["provider_id"]
    return provider


@router.post("/cft/series")
def post_series(body: SeriesIn, rt: Runtime, who: Who) -> JSONResponse:
    who.require_participant("provider", body.provider_id)
    capacity_w = decimal_to_units(body.declared_capacity_kw, 3, "declared_capacity_kw")
    return created(
        tx(
            rt,
            lambda c: tokens.create_series(
                c,
                body.series_id,
                provider_id=body.provider_id,
                valid_from=body.valid_from.astimezone(UTC),
                valid_to=body.valid_to.astimezone(UTC),
                declared_capacity_w=capacity_w,
                now=clock.now(),
            ),
        )
    )


@router.get("/cft/series/{series_id}")
def get_series(series_id: str, rt: Runtime, who: Who) -> dict[str, Any]:
    return read(rt, lambda c: tokens.series_info(c, series_id))


@router.post("/cft/mint")
def post_mint(body: MintIn, rt: Runtime, who: Who) -> JSONResponse:
    who.require_participant("provider", _series_provider(rt, body.series_id))
    return created(tx(rt, lambda c: tokens.mint(c, body.id, body.series_id, body.tokens, clock.now())))


def _consent(confirm: SignedMessageIn, keys: KeyDirectory, sale: TokenSale) -> Verified:
    """The buyer's signed confirm for exactly `sale` (ledger/agreements.py), verified against the registry."""
    verified = verify_message(
        confirm.signed("confirm"), keys, field="confirm", action="confirm", participant_type="BAP", now=clock.wall_now()
    )
    check_token_consent(verified, sale)
    return verified


def _sale(body: SellIn | CftTransferIn, *, seller: str, buyer: str) -> TokenSale:
    return TokenSale(
        series_id=body.series_id,
        seller_id=seller,
        buyer_id=buyer,
        tokens=body.tokens,
        price_pence=decimal_to_units(body.price_gbp, 2, "price_gbp"),
    )


@router.post("/cft/sell")
def post_sell(body: SellIn, rt: Runtime, who: Who, keys: Keys) -> JSONResponse:
    """The series' provider sells to a buyer that signed a confirm for this sale (role provider)."""
    provider = _series_provider(rt, body.series_id)
    who.require_participant("provider", provider)
    sale = _sale(body, seller=provider, buyer=body.buyer_id)
    consent = _consent(body.confirm, keys, sale)
    return created(tx(rt, lambda c: tokens.sell_with_consent(c, body.id, sale, consent, clock.now())))


@router.post("/cft/transfer")
def post_cft_transfer(body: CftTransferIn, rt: Runtime, who: Who, keys: Keys) -> JSONResponse:
    """The holder moves its own tokens (its own bap or provider key — nobody else's, not even an admin's);
    a priced transfer also needs the receiver's signed confirm, since it debits the receiver's cash."""
    if who.role not in ("bap", "provider") or who.participant_id != body.from_id:
        raise forbidden("only the holder's own key can transfer its tokens")
    sale = _sale(body, seller=body.from_id, buyer=body.to_id)
    if sale.price_pence > 0:
        if body.confirm is None:
            raise LedgerError("consent_required", "confirm: a priced transfer needs the receiver's signed confirm")
        consent = _consent(body.confirm, keys, sale)
        return created(tx(rt, lambda c: tokens.sell_with_consent(c, body.id, sale, consent, clock.now())))
    return created(
        tx(
            rt,
            lambda c: tokens.trade(
                c,
                body.id,
                series_id=sale.series_id,
                seller_id=sale.seller_id,
                buyer_id=sale.buyer_id,
                tokens=sale.tokens,
                price_pence=0,
                now=clock.now(),
            ),
        )
    )


@router.post("/cft/redeem")
def post_redeem(body: RedeemIn, rt: Runtime, who: Who) -> JSONResponse:
    if who.role != "admin" and who.participant_id != body.holder_id:
        raise forbidden("only the holder can redeem its tokens")
    return created(
        tx(
            rt,
            lambda c: tokens.redeem(
                c,
                body.id,
                series_id=body.series_id,
                holder_id=body.holder_id,
                tokens=body.tokens,
                period_start=body.period_start.astimezone(UTC),
                period_end=body.period_end.astimezone(UTC),
                meter_id=body.meter_id.removeprefix("der://"),
                supplier_id=body.supplier_id,
                now=clock.now(),
                policy_version=body.policy_version,
            ),
        )
    )
