"""The Compute Flex Tokens' secondary market at the BAP's client API (issue 12): this BAP lists tokens it holds,
buys from others' listings, cancels its own listings and gives tokens away — each one call to the ledger's
market (ledger/listings.py, ledger/api/listings.py, `/cft/transfer`) with this BAP's own ledger key.

Invariants:
- The ledger is the one book. Nothing is stored here: every answer is the ledger's, and a listing's seller, a
  purchase's buyer and a transfer's sender are the participant of this BAP's ledger key (its subscriber id).
- Retries are safe. A listing and a transfer are idempotent on their id at the ledger (generated here when the
  caller gives none, and returned). A purchase is idempotent on its id too: one the listing already records for
  this buyer and these tokens is answered from the listing (`200 exists`) without signing anything again,
  since the ledger would refuse a second, newly signed confirm for the same purchase id.
- A purchase moves money only with this BAP's signed consent: a Beckn `confirm` for exactly that purchase
  (provider.id = the seller, one item = the series, count = the tokens, quote = tokens × the price per token),
  built with the same order encoding (schemas/flex.py `token_order_to_order`) and BECKN-006 signature
  (beckn/signing.py, this BAP's Ed25519 key) as every confirm it sends. The price consented to is the
  listing's as read just before; the ledger refuses (`terms_mismatch`) a confirm at any other price.
- Refusals keep their meaning (`refusal_of`): a ledger 4xx comes back with its status, code and message; a
  ledger that cannot be asked, answers 5xx or refuses this BAP's own ledger key (401) is a 502 naming the
  ledger; a BAP without a ledger is a 503.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import quote, urlencode

from bap import tokens as bap_tokens
from beckn import envelope, signing
from beckn.identity import Identity
from kernel.config import get_settings
from schemas.flex import TokenOrderSpec, token_order_to_order

Answer = tuple[int, dict[str, Any]]  # the HTTP status to answer with and the ledger's JSON body


class MarketRefusal(Exception):
    """A market request refused, by the ledger or on its way there: HTTP `status`, error `code`, message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


# -- the pure rules ----------------------------------------------------------------------------------------
def refusal_of(status: int, body: dict[str, Any]) -> MarketRefusal:
    """What the client is told when the ledger answered `status` (≥ 300) with `body`: a 4xx refusal as the ledger
    gave it (its code and message), except 401 (this BAP's own ledger key refused: not the caller's fault);
    that, a 5xx or any other answer is a 502 naming the ledger."""
    error = body.get("error")
    if not isinstance(error, dict):
        error = {}
    code, message = str(error.get("code") or "ledger_error"), str(error.get("message") or body)[:1000]
    if 400 <= status < 500 and status != 401:
        return MarketRefusal(status, code, message)
    return MarketRefusal(502, "ledger_error", f"the ledger answered {status} ({code}): {message}")


def new_id(kind: str) -> str:
    """A fresh ledger id for a listing, purchase or transfer of this BAP (the ledger's id alphabet)."""
    return f"bap-{kind}-{uuid.uuid4().hex[:20]}"


def prior_purchase(listing: dict[str, Any], purchase_id: str, *, buyer_id: str, tokens: int) -> dict[str, Any] | None:
    """The purchase `purchase_id` the listing already records, when it is this buyer's of these tokens (a retry);
    None when the listing records none. The id used for another buyer or other tokens is a 409."""
    for p in listing.get("purchases") or []:
        if p.get("purchase_id") != purchase_id:
            continue
        if (p.get("buyer_id"), p.get("tokens")) != (buyer_id, tokens):
            raise MarketRefusal(
                409, "id_conflict", f"purchase_id: {purchase_id} is already a purchase of other terms on this listing"
            )
        return {"status": "exists", "listing_id": listing.get("listing_id"), **p}
    return None


def purchase_terms(listing: dict[str, Any], tokens: int) -> TokenOrderSpec:
    """The order this BAP consents to when it buys `tokens` of a listing at the listing's price per token."""
    return TokenOrderSpec(
        provider_id=str(listing["seller_id"]),
        series_id=str(listing["series_id"]),
        tokens=tokens,
        price_gbp_per_token=Decimal(str(listing["price_gbp_per_token"])),
    )


def signed_confirm(me: Identity, terms: TokenOrderSpec) -> dict[str, str]:
    """This BAP's Beckn confirm of `terms`, signed as it signs every confirm it sends: the exact bytes (base64)
    and the BECKN-006 Authorization header the ledger verifies against the registry."""
    ctx = envelope.context(
        "confirm",
        bap_id=me.subscriber_id,
        bap_uri=me.url,
        transaction_id=envelope.new_id(),
        city_code=me.city_code,
        country_code=me.country_code,
    )
    body = envelope.dumps({"context": ctx, "message": {"order": token_order_to_order(terms).dump()}})
    authorization = signing.authorization_header(
        body,
        me.keys.signing_private_key,
        me.subscriber_id,
        me.unique_key_id,
        validity_s=get_settings().signature_validity_s,
    )
    return {"body_base64": base64.b64encode(body).decode("ascii"), "authorization": authorization}


# -- the ledger calls --------------------------------------------------------------------------------------
def _ledger(method: str, path: str, body: dict[str, Any] | None = None) -> Answer:
    """The ledger's answer to one call with this BAP's key; every refusal as a MarketRefusal."""
    try:
        status, answer = bap_tokens.ledger_call(method, path, body)
    except bap_tokens.LedgerUnreachable as exc:
        raise MarketRefusal(502, "ledger_unreachable", str(exc)) from exc
    except bap_tokens.TokenClientError as exc:
        raise MarketRefusal(exc.status, "ledger_not_configured", str(exc)) from exc
    if status >= 300:
        raise refusal_of(status, answer)
    return status, answer


def _listing_path(listing_id: str, action: str = "") -> str:
    return f"/cft/listings/{quote(listing_id, safe='')}{action}"


def listings(*, series_id: str | None, seller_id: str | None, state: Literal["open", "all"], limit: int) -> Answer:
    """The ledger's listings, cheapest first: open ones or all, of one series or seller when given."""
    query = {"series_id": series_id, "seller_id": seller_id, "state": state, "limit": limit}
    return _ledger("GET", "/cft/listings?" + urlencode({k: v for k, v in query.items() if v is not None}))


@dataclass(frozen=True, kw_only=True)
class NewListing:
    series_id: str
    tokens: int
    price_gbp_per_token: Decimal
    listing_id: str | None = None


def create_listing(r: NewListing) -> Answer:
    """List `r.tokens` this BAP holds at `r.price_gbp_per_token` (escrowed on the ledger at once)."""
    body = {
        "id": r.listing_id or new_id("l"),
        "series_id": r.series_id,
        "tokens": r.tokens,
        "price_gbp_per_token": f"{r.price_gbp_per_token:.2f}",
    }
    return _ledger("POST", "/cft/listings", body)


def buy(me: Identity, listing_id: str, *, tokens: int, purchase_id: str | None = None) -> Answer:
    """Buy `tokens` of a listing delivery versus payment, with this BAP's signed confirm at the listing's price
    as read now; a purchase id the listing already records for this BAP and these tokens answers it again."""
    _, listing = _ledger("GET", _listing_path(listing_id))
    if purchase_id is not None:
        before = prior_purchase(listing, purchase_id, buyer_id=me.subscriber_id, tokens=tokens)
        if before is not None:
            return 200, before
    confirm = signed_confirm(me, purchase_terms(listing, tokens))
    body = {"id": purchase_id or new_id("p"), "tokens": tokens, "confirm": confirm}
    return _ledger("POST", _listing_path(listing_id, "/buy"), body)


def cancel(listing_id: str) -> Answer:
    """Withdraw this BAP's listing: the tokens left return to its holding."""
    return _ledger("POST", _listing_path(listing_id, "/cancel"))


@dataclass(frozen=True, kw_only=True)
class Transfer:
    to_id: str
    series_id: str
    tokens: int
    transfer_id: str | None = None


def transfer(me: Identity, r: Transfer) -> Answer:
    """Give `r.tokens` this BAP holds to `r.to_id`, unpriced (no money moves, so no consent is needed)."""
    transfer_id = r.transfer_id or new_id("t")
    body = {"id": transfer_id, "series_id": r.series_id, "from_id": me.subscriber_id, "to_id": r.to_id}
    status, answer = _ledger("POST", "/cft/transfer", {**body, "tokens": r.tokens})
    return status, {"transfer_id": transfer_id, **answer}
