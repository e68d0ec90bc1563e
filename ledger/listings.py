"""Compute Flex Tokens' secondary market in PostgreSQL: a holder lists tokens at a price per token, a BAP buys
from a listing delivery versus payment, the seller cancels what is left (issue 12).

Escrow, not a check at purchase: listing moves the tokens from the seller's holding into the listing's own
account `listing:<listing>:<series>` in the same transaction as the listing row, so a listing never offers
tokens its seller has since sold, transferred or redeemed, and what is left is the ledger's balance. A
purchase moves `tokens` out of that escrow to the buyer and the buyer's cash to the seller in ONE linked
append (ledger/tokens.py `sell_with_consent`): both or neither, only with the buyer's signed Beckn confirm for
exactly that purchase (the rule of a primary sale, ledger/agreements.py `check_token_consent`: provider.id =
the seller, one item = the series, count = the tokens, quote = tokens × the listing's price), and only when
the buyer's cash covers the price (judged under the payment's own row lock). Cancelling returns what is left
to the seller. Expiry (ledger/tokens.py `expire_due`) sweeps listing escrows like holdings.

Every write on a listing (buy, cancel) first locks its row, so they happen one at a time per listing. The
rules are the pure ledger/cft.py; the tables come from migration 0016_cft_listings (append-only).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

import psycopg

from grid.money import pence_to_gbp_str
from ledger import accounts as acct
from ledger import agreements_db
from ledger import cft as cftrules
from ledger.accounts_db import ensure_accounts
from ledger.agreements import TokenSale, Verified, agreement_sha256, check_token_consent
from ledger.db import iso
from ledger.errors import LedgerError, forbidden, not_found
from ledger.tokens import append_tokens, load_series, sell_with_consent
from ledger.transfers import TransferSpec
from ledger.transfers_db import transfer_result_json
from schemas import limits

_LISTING_SQL = (
    "SELECT l.listing_id, l.series_id, l.seller_id, l.tokens, l.price_pence_per_token, "
    "coalesce(b.credits_posted - b.debits_posted, 0), c.listing_id IS NOT NULL, l.listed_at "
    "FROM ledger.cft_listings l "
    "LEFT JOIN ledger.balances b ON b.account = 'listing:' || l.listing_id || ':' || l.series_id "
    "LEFT JOIN ledger.cft_listing_cancellations c ON c.listing_id = l.listing_id "
)


def _ids(**ids: str) -> None:
    try:
        for what, value in ids.items():
            acct.check_id(value, what)
    except acct.AccountNameError as exc:
        raise LedgerError("id_invalid", str(exc)) from exc


def _load(conn: psycopg.Connection, listing_id: str, *, lock: bool) -> tuple[cftrules.Listing, datetime]:
    if lock:  # serialises buys and the cancel of one listing (a row lock; the table stays append-only)
        found = conn.execute(
            "SELECT 1 FROM ledger.cft_listings WHERE listing_id = %s FOR UPDATE", (listing_id,)
        ).fetchone()
        if found is None:
            raise not_found(f"listing {listing_id!r}")
    row = conn.execute(_LISTING_SQL + "WHERE l.listing_id = %s", (listing_id,)).fetchone()
    if row is None:
        raise not_found(f"listing {listing_id!r}")
    return cftrules.Listing(*row[:7]), row[7]


def _json(listing: cftrules.Listing, listed_at: datetime, series: cftrules.Series, now: datetime) -> dict[str, Any]:
    return {
        "listing_id": listing.listing_id,
        "series_id": listing.series_id,
        "provider_id": series.provider_id,
        "seller_id": listing.seller_id,
        "tokens_listed": listing.tokens_listed,
        "tokens_left": listing.tokens_left,
        "price_gbp_per_token": pence_to_gbp_str(listing.price_pence_per_token),
        "state": cftrules.listing_status(listing, series, now),
        "listed_at": iso(listed_at),
        "valid_from": iso(series.valid_from),
        "valid_to": iso(series.valid_to),
        "escrow_account": acct.listing(listing.listing_id, listing.series_id),
    }


def create_listing(
    conn: psycopg.Connection,
    listing_id: str,
    *,
    series_id: str,
    seller_id: str,
    tokens: int,
    price_pence_per_token: int,
    now: datetime,
) -> dict[str, Any]:
    """List `tokens` of the seller's holding: the listing row and the move into its escrow, in one transaction.
    Idempotent by `listing_id` with the same terms; other terms under that id are a 409."""
    _ids(listing_id=listing_id, seller_id=seller_id)
    series = load_series(conn, series_id)
    cftrules.check_listing_terms(tokens, price_pence_per_token)
    existing = conn.execute(
        "SELECT series_id, seller_id, tokens, price_pence_per_token FROM ledger.cft_listings WHERE listing_id = %s",
        (listing_id,),
    ).fetchone()
    if existing is not None:
        if tuple(existing) != (series_id, seller_id, tokens, price_pence_per_token):
            raise LedgerError("id_conflict", f"listing {listing_id} already exists with other terms", status=409)
        listing, listed_at = _load(conn, listing_id, lock=False)
        return {"status": "exists", **_json(listing, listed_at, series, now)}
    cftrules.check_tradable(series, now)
    conn.execute(
        "INSERT INTO ledger.cft_listings (listing_id, series_id, seller_id, tokens, price_pence_per_token, "
        "listed_at) VALUES (%s, %s, %s, %s, %s, %s)",
        (listing_id, series_id, seller_id, tokens, price_pence_per_token, now),
    )
    escrow = acct.listing(listing_id, series_id)
    ensure_accounts(conn, [escrow, acct.holding(seller_id, series_id)])
    res = append_tokens(
        conn,
        [
            TransferSpec(
                f"cft:listing:{listing_id}:tokens",
                "single",
                acct.cft_ledger(series_id),
                acct.holding(seller_id, series_id),
                escrow,
                tokens,
                memo=f"{seller_id} lists {tokens} CFT of {series_id} at {price_pence_per_token} pence each",
            )
        ],
        now,
        series,
        "list",
    )
    listing, listed_at = _load(conn, listing_id, lock=False)
    return {
        "status": "created",
        **_json(listing, listed_at, series, now),
        "transfers": transfer_result_json(res)["transfers"],
    }


def buy(
    conn: psycopg.Connection,
    purchase_id: str,
    *,
    listing_id: str,
    buyer_id: str,
    tokens: int,
    consent: Verified,
    now: datetime,
) -> dict[str, Any]:
    """Buy `tokens` from an open listing: escrow → buyer and buyer's cash → seller in one linked append, only
    with the buyer's verified signed confirm for exactly this purchase. Idempotent by `purchase_id` with the
    same confirm."""
    _ids(purchase_id=purchase_id, buyer_id=buyer_id)
    listing, _ = _load(conn, listing_id, lock=True)
    series = load_series(conn, listing.series_id)
    op_id = f"buy:{purchase_id}"
    existing = conn.execute(
        "SELECT listing_id, buyer_id, tokens, price_pence FROM ledger.cft_listing_purchases WHERE purchase_id = %s",
        (purchase_id,),
    ).fetchone()
    if existing is not None:
        return _bought_before(conn, existing, purchase_id, listing_id, buyer_id, tokens, consent, op_id)
    price_pence = cftrules.purchase_price_pence(listing, series, buyer_id=buyer_id, tokens=tokens, now=now)
    sale = TokenSale(
        series_id=listing.series_id,
        seller_id=listing.seller_id,
        buyer_id=buyer_id,
        tokens=tokens,
        price_pence=price_pence,
    )
    check_token_consent(consent, sale)
    # Funds are judged twice: before the append (a buyer short of money writes nothing at all), and after it
    # under the payment's own row lock, which no concurrent debit of the buyer's cash can slip past.
    cftrules.check_buyer_funds(available_after_pence=_available(conn, buyer_id) - price_pence, price_pence=price_pence)
    result = sell_with_consent(
        conn, op_id, sale, consent, now, token_source=acct.listing(listing_id, listing.series_id)
    )
    cftrules.check_buyer_funds(available_after_pence=_available(conn, buyer_id), price_pence=price_pence)
    conn.execute(
        "INSERT INTO ledger.cft_listing_purchases (purchase_id, listing_id, buyer_id, tokens, price_pence, "
        "bought_at) VALUES (%s, %s, %s, %s, %s, %s)",
        (purchase_id, listing_id, buyer_id, tokens, price_pence, now),
    )
    return {**result, "purchase_id": purchase_id, "listing_id": listing_id, "price_gbp": pence_to_gbp_str(price_pence)}


def _available(conn: psycopg.Connection, bap_id: str) -> int:
    """A BAP's cash it may spend: credits − debits − reserved (0 for an account not opened yet)."""
    row = conn.execute(
        "SELECT credits_posted - debits_posted - debits_pending FROM ledger.balances WHERE account = %s",
        (acct.bap_cash(bap_id),),
    ).fetchone()
    return 0 if row is None else int(row[0])


def _bought_before(
    conn: psycopg.Connection,
    existing: Sequence[Any],
    purchase_id: str,
    listing_id: str,
    buyer_id: str,
    tokens: int,
    consent: Verified,
    op_id: str,
) -> dict[str, Any]:
    """A repeated purchase: the same terms and the same signed confirm answer what was done; anything else is a 409."""
    digest = agreement_sha256(consent.sha256)
    if tuple(existing[:3]) != (listing_id, buyer_id, tokens):
        raise LedgerError("id_conflict", f"purchase {purchase_id} already exists with other terms", status=409)
    if agreements_db.existing_hash(conn, "token_sale", op_id) != digest:
        raise LedgerError(
            "sale_conflict", f"purchase {purchase_id} is already recorded with another signed confirm", status=409
        )
    return {
        "status": "exists",
        "purchase_id": purchase_id,
        "listing_id": listing_id,
        "tokens": tokens,
        "price_gbp": pence_to_gbp_str(existing[3]),
        "agreement_sha256": digest.hex(),
    }


def cancel(conn: psycopg.Connection, listing_id: str, *, by: str, now: datetime) -> dict[str, Any]:
    """The seller (`by`, the caller's participant id) withdraws its listing: what is left returns to its holding,
    in the same transaction as the cancellation row."""
    listing, listed_at = _load(conn, listing_id, lock=True)
    if by != listing.seller_id:
        raise forbidden(f"only the seller ({listing.seller_id}) can cancel listing {listing_id}")
    series = load_series(conn, listing.series_id)
    if listing.cancelled:
        return {"status": "exists", **_json(listing, listed_at, series, now)}
    if cftrules.listing_status(listing, series, now) == "expired":
        raise LedgerError(
            "listing_expired",
            f"listing {listing_id}: series {series.series_id} has expired; its tokens expire with it (ledger expire)",
            status=409,
        )
    conn.execute(
        "INSERT INTO ledger.cft_listing_cancellations (listing_id, tokens_returned, cancelled_at) VALUES (%s, %s, %s)",
        (listing_id, listing.tokens_left, now),
    )
    transfers: list[dict[str, Any]] = []
    if listing.tokens_left > 0:
        res = append_tokens(
            conn,
            [
                TransferSpec(
                    f"cft:listing:{listing_id}:return",
                    "single",
                    acct.cft_ledger(listing.series_id),
                    acct.listing(listing_id, listing.series_id),
                    acct.holding(listing.seller_id, listing.series_id),
                    listing.tokens_left,
                    memo=f"listing {listing_id} cancelled: {listing.tokens_left} CFT back to {listing.seller_id}",
                )
            ],
            now,
            series,
            "cancel",
        )
        transfers = transfer_result_json(res)["transfers"]
    after, _ = _load(conn, listing_id, lock=False)
    return {
        "status": "cancelled",
        **_json(after, listed_at, series, now),
        "tokens_returned": listing.tokens_left,
        "transfers": transfers,
    }


def listing_info(conn: psycopg.Connection, listing_id: str, now: datetime) -> dict[str, Any]:
    """One listing, with its purchases (oldest first)."""
    listing, listed_at = _load(conn, listing_id, lock=False)
    series = load_series(conn, listing.series_id)
    purchases = [
        {
            "purchase_id": r[0],
            "buyer_id": r[1],
            "tokens": r[2],
            "price_gbp": pence_to_gbp_str(r[3]),
            "bought_at": iso(r[4]),
        }
        for r in conn.execute(
            "SELECT purchase_id, buyer_id, tokens, price_pence, bought_at FROM ledger.cft_listing_purchases "
            "WHERE listing_id = %s ORDER BY bought_at, purchase_id",
            (listing_id,),
        )
    ]
    return {**_json(listing, listed_at, series, now), "purchases": purchases}


def list_listings(
    conn: psycopg.Connection,
    *,
    now: datetime,
    series_id: str | None = None,
    seller_id: str | None = None,
    state: Literal["open", "all"] = "open",
    limit: int = 100,
) -> dict[str, Any]:
    """Listings, cheapest first (then oldest): `open` ones (not cancelled, series still valid, tokens left) or
    `all`, optionally of one series or one seller."""
    where = [
        "(%(series)s::text IS NULL OR l.series_id = %(series)s)",
        "(%(seller)s::text IS NULL OR l.seller_id = %(seller)s)",
    ]
    if state == "open":
        where += [
            "c.listing_id IS NULL",
            "s.valid_to > %(now)s",
            "coalesce(b.credits_posted - b.debits_posted, 0) > 0",
        ]
    rows = conn.execute(
        _LISTING_SQL
        + "JOIN ledger.cft_series s ON s.series_id = l.series_id WHERE "
        + " AND ".join(where)
        + " ORDER BY l.price_pence_per_token, l.listed_at, l.listing_id LIMIT %(limit)s",
        {"series": series_id, "seller": seller_id, "now": now, "limit": max(1, min(limit, limits.MAX_PAGE_SIZE))},
    ).fetchall()
    series: dict[str, cftrules.Series] = {}
    out = []
    for r in rows:
        if r[1] not in series:
            series[r[1]] = load_series(conn, r[1])
        out.append(_json(cftrules.Listing(*r[:7]), r[7], series[r[1]], now))
    return {"listings": out}
