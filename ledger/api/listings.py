"""Routes: Compute Flex Tokens' secondary market — list, browse, buy, cancel (ledger/listings.py).

A holder lists tokens with its own key (bap or provider; the listing's seller is the key's participant) and
alone cancels its listing. A BAP buys with its own key and its signed Beckn confirm for exactly that purchase
(provider.id = the seller, one item = the series, quantity.selected.count = the tokens, quote.price = tokens ×
the listing's price per token), as a primary sale needs (ledger/api/tokens.py `/cft/sell`)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from grid.money import decimal_to_units
from kernel import clock
from ledger import listings
from ledger.agreements import verify_message
from ledger.api.deps import Body, LedgerRoute, Runtime, Text, Tokens, Who, created, read, tx
from ledger.api.signed import Keys, SignedMessageIn
from ledger.api_keys import Principal
from ledger.errors import forbidden
from schemas import limits

router = APIRouter(route_class=LedgerRoute)


class ListingIn(Body):
    id: Text
    series_id: Text
    tokens: Tokens
    price_gbp_per_token: Decimal


class BuyIn(Body):
    """`id` names the purchase (idempotent); `confirm` is the buyer's signed Beckn confirm for exactly it."""

    id: Text
    tokens: Tokens
    confirm: SignedMessageIn


def _participant(who: Principal) -> str:
    if who.participant_id is None:
        raise forbidden("a listing is made, bought and cancelled with the participant's own key")
    return who.participant_id


@router.post("/cft/listings")
def post_listing(body: ListingIn, rt: Runtime, who: Who) -> JSONResponse:
    """The key's participant lists tokens it holds; they move into the listing's escrow at once."""
    seller = _participant(who)
    price_pence = decimal_to_units(body.price_gbp_per_token, 2, "price_gbp_per_token")
    return created(
        tx(
            rt,
            lambda c: listings.create_listing(
                c,
                body.id,
                series_id=body.series_id,
                seller_id=seller,
                tokens=body.tokens,
                price_pence_per_token=price_pence,
                now=clock.now(),
            ),
        )
    )


@router.get("/cft/listings")
def get_listings(
    rt: Runtime,
    who: Who,
    series_id: Annotated[str | None, Query(max_length=200)] = None,
    seller_id: Annotated[str | None, Query(max_length=200)] = None,
    state: Literal["open", "all"] = "open",
    limit: Annotated[int, Query(ge=1, le=limits.MAX_PAGE_SIZE)] = 100,
) -> dict[str, Any]:
    """Listings, cheapest first: open ones (default) or all, of one series or seller when given."""
    return read(
        rt,
        lambda c: listings.list_listings(
            c, now=clock.now(), series_id=series_id, seller_id=seller_id, state=state, limit=limit
        ),
    )


@router.get("/cft/listings/{listing_id}")
def get_listing(listing_id: str, rt: Runtime, who: Who) -> dict[str, Any]:
    return read(rt, lambda c: listings.listing_info(c, listing_id, clock.now()))


@router.post("/cft/listings/{listing_id}/buy")
def post_buy(listing_id: str, body: BuyIn, rt: Runtime, who: Who, keys: Keys) -> JSONResponse:
    """Delivery versus payment: the listing's tokens to the buyer and the buyer's cash to the seller, in one
    append, with the buyer's signed consent and only when its cash covers the price."""
    buyer = _participant(who)
    consent = verify_message(
        body.confirm.signed("confirm"),
        keys,
        field="confirm",
        action="confirm",
        participant_type="BAP",
        now=clock.wall_now(),
    )
    return created(
        tx(
            rt,
            lambda c: listings.buy(
                c, body.id, listing_id=listing_id, buyer_id=buyer, tokens=body.tokens, consent=consent, now=clock.now()
            ),
        )
    )


@router.post("/cft/listings/{listing_id}/cancel")
def post_cancel(listing_id: str, rt: Runtime, who: Who) -> JSONResponse:
    """The seller withdraws its listing; the tokens left return to its holding."""
    seller = _participant(who)
    return created(tx(rt, lambda c: listings.cancel(c, listing_id, by=seller, now=clock.now())))
