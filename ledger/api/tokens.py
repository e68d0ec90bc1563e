"""Routes: Compute Flex Token series, mint, sell, transfer and redeem (ledger/tokens.py)."""

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
from ledger.api.deps import Body, LedgerRoute, LedgerRuntime, Runtime, Text, Tokens, Who, created, read, tx
from ledger.errors import forbidden
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
    id: Text
    series_id: Text
    buyer_id: Text
    tokens: Tokens
    price_gbp: Decimal = Decimal(0)


class CftTransferIn(Body):
    id: Text
    series_id: Text
    from_id: Text
    to_id: Text
    tokens: Tokens
    price_gbp: Decimal = Decimal(0)


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


def _trade(
    rt: LedgerRuntime, op_id: str, series_id: str, *, seller: str, buyer: str, tokens_n: int, price: Decimal
) -> JSONResponse:
    """Tokens for cash, delivery-versus-payment (a primary sale or a secondary-market transfer)."""
    price_pence = decimal_to_units(price, 2, "price_gbp")
    return created(
        tx(
            rt,
            lambda c: tokens.trade(
                c,
                op_id,
                series_id=series_id,
                seller_id=seller,
                buyer_id=buyer,
                tokens=tokens_n,
                price_pence=price_pence,
                now=clock.now(),
            ),
        )
    )


@router.post("/cft/sell")
def post_sell(body: SellIn, rt: Runtime, who: Who) -> JSONResponse:
    provider = _series_provider(rt, body.series_id)
    who.require_participant("provider", provider)
    return _trade(
        rt, body.id, body.series_id, seller=provider, buyer=body.buyer_id, tokens_n=body.tokens, price=body.price_gbp
    )


@router.post("/cft/transfer")
def post_cft_transfer(body: CftTransferIn, rt: Runtime, who: Who) -> JSONResponse:
    if who.role != "admin" and who.participant_id != body.from_id:
        raise forbidden("only the holder can transfer its tokens")
    return _trade(
        rt, body.id, body.series_id, seller=body.from_id, buyer=body.to_id, tokens_n=body.tokens, price=body.price_gbp
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
