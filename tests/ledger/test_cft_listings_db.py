"""Compute Flex Tokens' secondary market on the database (ledger/listings.py): listing escrows the tokens,
buying is delivery versus payment in one append with the buyer's signed confirm, refusals name their reason
and write nothing, cancelling returns what is left, expiry sweeps escrows. A hypothesis state machine runs
random sequences of list / buy / cancel / transfer (and sometimes expiry) against a model: every balance is
the model's, tokens conserve (minted = holdings + escrows + redeemed + expired), money conserves, and the
hash chain verifies afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grid.money import pence_to_gbp_str
from ledger import accounts as acct
from ledger.accounts_db import ensure_accounts
from ledger.agreements import Verified, verify_message
from ledger.db import connect, in_transaction
from ledger.errors import LedgerError
from ledger.listings import buy, cancel, create_listing, list_listings, listing_info
from ledger.store import append_one
from ledger.tokens import create_series, expire_due, mint, provider_tokens, series_info, trade
from ledger.transfers import TransferSpec
from ledger.verify import verify_ledger
from tests.ledger.agreements import TEST_KEYS, party, token_confirm
from tests.ledger.conftest import _clone, utc
from tests.ledger.helpers import snapshot

T0 = utc(2024, 3, 4)
END = T0 + timedelta(days=7)
NOW = T0 - timedelta(days=1)


def tx(conn: psycopg.Connection, fn):  # type: ignore[no-untyped-def]
    return in_transaction(conn, fn)


def consent(buyer: str, *, seller: str, series_id: str, tokens: int, price_pence: int) -> Verified:
    """The buyer's signed confirm for one purchase, verified as the route verifies it."""
    signed = token_confirm(
        party(buyer), provider_id=seller, series_id=series_id, tokens=tokens, price_gbp=pence_to_gbp_str(price_pence)
    )
    return verify_message(
        signed, TEST_KEYS, field="confirm", action="confirm", participant_type="BAP", now=datetime.now(UTC)
    )


def fund(conn: psycopg.Connection, bap: str, pence: int, tag: str) -> None:
    """Credit a BAP's cash (as finance would with POST /transfers) from a funding account."""
    source, cash = acct.bap_cash(f"fund-{tag}"), acct.bap_cash(bap)
    tx(conn, lambda c: ensure_accounts(c, [source, cash]))
    tx(
        conn,
        lambda c: append_one(
            c, [TransferSpec(f"fund:{tag}:{bap}:{uuid.uuid4().hex[:6]}", "single", "GBP", source, cash, pence)]
        ),
    )


def new_series(conn: psycopg.Connection, tag: str, provider: str, minted: int) -> str:
    sid = f"ls-{tag}"
    tx(
        conn,
        lambda c: create_series(
            c, sid, provider_id=provider, valid_from=T0, valid_to=END, declared_capacity_w=1_000_000, now=NOW
        ),
    )
    tx(conn, lambda c: mint(c, f"m-{sid}", sid, minted, NOW))
    return sid


def give(conn: psycopg.Connection, sid: str, provider: str, to: str, tokens: int) -> None:
    tx(
        conn,
        lambda c: trade(
            c, f"g-{sid}-{to}", series_id=sid, seller_id=provider, buyer_id=to, tokens=tokens, price_pence=0, now=NOW
        ),
    )


def balance(conn: psycopg.Connection, name: str) -> int:
    row = conn.execute(
        "SELECT credits_posted - debits_posted - debits_pending FROM ledger.balances WHERE account = %s", (name,)
    ).fetchone()
    conn.rollback()
    return 0 if row is None else int(row[0])


def refused_with(conn: psycopg.Connection, code: str, fn) -> LedgerError:  # type: ignore[no-untyped-def]
    before = snapshot(conn)
    with pytest.raises(LedgerError) as err:
        tx(conn, fn)
    assert err.value.code == code, err.value.message
    assert snapshot(conn) == before  # nothing written
    return err.value


def test_list_buy_cancel_and_every_refusal(conn: psycopg.Connection) -> None:
    tag = uuid.uuid4().hex[:6]
    p, seller, buyer, poor = f"lp-{tag}", f"ls-{tag}", f"lb-{tag}", f"lx-{tag}"
    sid = new_series(conn, tag, p, 20)
    give(conn, sid, p, seller, 8)
    fund(conn, buyer, 10_000, tag)

    # listing escrows the tokens in the same transaction
    out = tx(
        conn,
        lambda c: create_listing(
            c, f"l-{tag}", series_id=sid, seller_id=seller, tokens=5, price_pence_per_token=1_250, now=NOW
        ),
    )
    assert (out["status"], out["tokens_left"], out["seller_id"]) == ("created", 5, seller)
    escrow = acct.listing(f"l-{tag}", sid)
    assert (balance(conn, acct.holding(seller, sid)), balance(conn, escrow)) == (3, 5)
    again = tx(
        conn,
        lambda c: create_listing(
            c, f"l-{tag}", series_id=sid, seller_id=seller, tokens=5, price_pence_per_token=1_250, now=NOW
        ),
    )
    assert again["status"] == "exists" and balance(conn, escrow) == 5  # a retry escrows nothing twice
    refused_with(
        conn,
        "id_conflict",
        lambda c: create_listing(
            c, f"l-{tag}", series_id=sid, seller_id=seller, tokens=4, price_pence_per_token=1_250, now=NOW
        ),
    )
    refused_with(  # more than the seller holds (3 left)
        conn,
        "insufficient_tokens",
        lambda c: create_listing(
            c, f"l2-{tag}", series_id=sid, seller_id=seller, tokens=4, price_pence_per_token=1, now=NOW
        ),
    )
    refused_with(
        conn,
        "price_invalid",
        lambda c: create_listing(
            c, f"l3-{tag}", series_id=sid, seller_id=seller, tokens=1, price_pence_per_token=0, now=NOW
        ),
    )
    refused_with(
        conn,
        "series_expired",
        lambda c: create_listing(
            c, f"l4-{tag}", series_id=sid, seller_id=seller, tokens=1, price_pence_per_token=1, now=END
        ),
    )

    def purchase(pid: str, who: str, tokens: int, now: datetime = NOW, price: int | None = None):  # type: ignore[no-untyped-def]
        ok = consent(who, seller=seller, series_id=sid, tokens=tokens, price_pence=price or tokens * 1_250)
        return lambda c: buy(c, pid, listing_id=f"l-{tag}", buyer_id=who, tokens=tokens, consent=ok, now=now)

    # delivery versus payment: one append moves the tokens from escrow and the cash to the seller
    first = purchase(f"p1-{tag}", buyer, 2)
    bought = tx(conn, first)
    assert bought["status"] == "created" and bought["price_gbp"] == "25.00"
    assert {t["id"].rsplit(":", 1)[1] for t in bought["transfers"]} == {"tokens", "payment"}
    heights = conn.execute(  # one append: both transfers in the same chain link
        "SELECT DISTINCT height FROM ledger.entries WHERE id = ANY(%s)", ([t["id"] for t in bought["transfers"]],)
    ).fetchall()
    conn.rollback()
    assert heights == [(bought["height"],)]
    assert balance(conn, acct.holding(buyer, sid)) == 2 and balance(conn, escrow) == 3
    assert balance(conn, acct.bap_cash(buyer)) == 10_000 - 2_500 and balance(conn, acct.bap_cash(seller)) == 2_500
    assert tx(conn, first)["status"] == "exists"  # the same signed purchase again
    refused_with(conn, "sale_conflict", purchase(f"p1-{tag}", buyer, 2))  # its id with another signed confirm
    assert balance(conn, escrow) == 3

    # refusals, each naming its reason, each writing nothing
    refused_with(conn, "insufficient_tokens", purchase(f"p2-{tag}", buyer, 4))  # 3 left
    refused_with(conn, "buyer_is_seller", purchase(f"p3-{tag}", seller, 1))
    fund(conn, poor, 1_000, tag)
    err = refused_with(conn, "insufficient_funds", purchase(f"p4-{tag}", poor, 1))  # 1,000 p < 1,250 p
    assert "1000 pence" in err.message and "1250 pence" in err.message
    refused_with(conn, "terms_mismatch", purchase(f"p5-{tag}", buyer, 1, price=1_000))  # signed another price
    refused_with(conn, "listing_expired", purchase(f"p6-{tag}", buyer, 1, now=END))
    refused_with(conn, "id_conflict", purchase(f"p1-{tag}", buyer, 1))  # the id of another purchase

    view = tx(conn, lambda c: listing_info(c, f"l-{tag}", NOW))
    assert (view["tokens_left"], view["state"], len(view["purchases"])) == (3, "open", 1)
    assert [x["listing_id"] for x in tx(conn, lambda c: list_listings(c, now=NOW, series_id=sid))["listings"]] == [
        f"l-{tag}"
    ]

    # only the seller cancels; what is left returns to its holding
    refused_with(conn, "forbidden", lambda c: cancel(c, f"l-{tag}", by=buyer, now=NOW))
    done = tx(conn, lambda c: cancel(c, f"l-{tag}", by=seller, now=NOW))
    assert (done["status"], done["tokens_returned"], done["tokens_left"]) == ("cancelled", 3, 0)
    assert balance(conn, acct.holding(seller, sid)) == 6 and balance(conn, escrow) == 0
    assert tx(conn, lambda c: cancel(c, f"l-{tag}", by=seller, now=NOW))["status"] == "exists"
    refused_with(conn, "listing_cancelled", purchase(f"p7-{tag}", buyer, 1))
    assert tx(conn, lambda c: list_listings(c, now=NOW, series_id=sid))["listings"] == []
    assert [
        x["state"] for x in tx(conn, lambda c: list_listings(c, now=NOW, series_id=sid, state="all"))["listings"]
    ] == ["cancelled"]

    # an open listing's escrow expires with the series, like a holding; its cancel is then refused
    tx(
        conn,
        lambda c: create_listing(
            c, f"l5-{tag}", series_id=sid, seller_id=seller, tokens=2, price_pence_per_token=9, now=NOW
        ),
    )
    assert series_info(conn, sid)["listed"] == {f"l5-{tag}": 2}
    refused_with(conn, "listing_expired", lambda c: cancel(c, f"l5-{tag}", by=seller, now=END))
    tx(conn, lambda c: expire_due(c, END))
    assert balance(conn, acct.listing(f"l5-{tag}", sid)) == 0
    tokens = provider_tokens(conn, p)[p]
    assert (tokens.minted, tokens.outstanding, tokens.expired) == (20, 0, 20) and tokens.holds
    assert tx(conn, lambda c: listing_info(c, f"l5-{tag}", END))["state"] == "expired"


# -- the state machine -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def market_db(pg_server_url: str, _template_db: str) -> Iterator[str]:
    """A ledger of this module's own: the chain verification after each example reads only these examples."""
    from kernel import db

    url = _clone(pg_server_url, _template_db, "fm_llist")
    yield url
    db.drop_database(pg_server_url, url)


@dataclass
class Model:
    """What the ledger should hold: tokens per holder and per listing escrow, and cash per participant."""

    tag: str
    provider: str
    baps: list[str]
    held: dict[str, int]
    cash: dict[str, int]  # bap cash (available) and the provider's revenue, by participant
    escrow: dict[str, int] = field(default_factory=dict)
    seller: dict[str, str] = field(default_factory=dict)
    price: dict[str, int] = field(default_factory=dict)
    cancelled: set[str] = field(default_factory=set)
    funding: int = 0  # pence credited to the BAPs before the market opened

    def list_(self, seller: str, tokens: int) -> str | None:
        return None if self.held[seller] >= tokens else "insufficient_tokens"

    def buy(self, listing: str, buyer: str, tokens: int) -> str | None:
        if buyer == self.seller[listing]:
            return "buyer_is_seller"
        if listing in self.cancelled:
            return "listing_cancelled"
        if tokens > self.escrow[listing]:
            return "insufficient_tokens"
        if self.cash[buyer] < tokens * self.price[listing]:
            return "insufficient_funds"
        return None


HOLDERS = 4  # the provider and three BAPs
op = st.one_of(
    st.tuples(st.just("list"), st.integers(0, HOLDERS - 1), st.integers(1, 6), st.integers(1, 900)),
    st.tuples(st.just("buy"), st.integers(1, HOLDERS - 1), st.integers(0, 20), st.integers(1, 6)),
    st.tuples(st.just("cancel"), st.integers(0, HOLDERS - 1), st.integers(0, 20), st.just(0)),
    st.tuples(st.just("transfer"), st.integers(0, HOLDERS - 1), st.integers(0, HOLDERS - 1), st.integers(1, 4)),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ops=st.lists(op, min_size=1, max_size=14),
    funding=st.lists(st.integers(0, 3_000), min_size=HOLDERS - 1, max_size=HOLDERS - 1),
    expire_at_end=st.booleans(),
)
def test_random_market_conserves_tokens_and_money(
    market_db: str, ops: list[tuple[str, int, int, int]], funding: list[int], expire_at_end: bool
) -> None:
    conn = connect(market_db)
    try:
        _run(conn, ops, funding, expire_at_end)
    finally:
        conn.close()


def _run(conn: psycopg.Connection, ops: list[tuple[str, int, int, int]], funding: list[int], expire: bool) -> None:
    tag = uuid.uuid4().hex[:8]
    p = f"mp-{tag}"
    baps = [f"mb{i}-{tag}" for i in range(HOLDERS - 1)]
    sid = new_series(conn, tag, p, 30)
    for b in baps:
        give(conn, sid, p, b, 5)
    for b, pence in zip(baps, funding, strict=True):
        if pence:
            fund(conn, b, pence, tag)
    tx(conn, lambda c: ensure_accounts(c, [acct.provider_revenue(p)] + [acct.bap_cash(b) for b in baps]))
    m = Model(tag, p, baps, {p: 15, **dict.fromkeys(baps, 5)}, {p: 0, **dict(zip(baps, funding, strict=True))})
    m.funding = sum(funding)
    holders = [p, *baps]
    listings: list[str] = []
    for n, (kind, a, b, c) in enumerate(ops):
        _step(conn, m, sid, holders, listings, f"{tag}-{n}", kind, a, b, c)
    if expire:
        tx(conn, lambda c: expire_due(c, END))
    _check(conn, m, sid, holders, listings, expired=expire)


def _step(
    conn: psycopg.Connection,
    m: Model,
    sid: str,
    holders: list[str],
    listings: list[str],
    op_id: str,
    kind: str,
    a: int,
    b: int,
    c: int,
) -> None:
    expected: str | None
    call: Any
    if kind == "list":
        seller, lid = holders[a], f"l-{op_id}"
        expected = m.list_(seller, b)
        call = lambda x: create_listing(  # noqa: E731
            x, lid, series_id=sid, seller_id=seller, tokens=b, price_pence_per_token=c, now=NOW
        )
    elif kind == "buy":
        if not listings:
            return
        lid, buyer = listings[b % len(listings)], holders[a]
        expected = m.buy(lid, buyer, c)
        ok = consent(buyer, seller=m.seller[lid], series_id=sid, tokens=c, price_pence=c * m.price[lid])
        call = lambda x: buy(x, f"p-{op_id}", listing_id=lid, buyer_id=buyer, tokens=c, consent=ok, now=NOW)  # noqa: E731
    elif kind == "cancel":
        if not listings:
            return
        lid, by = listings[b % len(listings)], holders[a]
        expected = None if by == m.seller[lid] else "forbidden"
        call = lambda x: cancel(x, lid, by=by, now=NOW)  # noqa: E731
    else:
        giver, taker = holders[a], holders[b]
        expected = "accounts_must_differ" if giver == taker else (None if m.held[giver] >= c else "insufficient_tokens")
        call = lambda x: trade(  # noqa: E731
            x, f"t-{op_id}", series_id=sid, seller_id=giver, buyer_id=taker, tokens=c, price_pence=0, now=NOW
        )
    if expected is not None:
        refused_with(conn, expected, call)
        return
    tx(conn, call)
    _apply(m, listings, kind, holders, op_id, a, b, c)


def _apply(m: Model, listings: list[str], kind: str, holders: list[str], op_id: str, a: int, b: int, c: int) -> None:
    if kind == "list":
        lid = f"l-{op_id}"
        m.held[holders[a]] -= b
        m.escrow[lid], m.seller[lid], m.price[lid] = b, holders[a], c
        listings.append(lid)
    elif kind == "buy":
        lid, buyer = listings[b % len(listings)], holders[a]
        m.escrow[lid] -= c
        m.held[buyer] += c
        m.cash[buyer] -= c * m.price[lid]
        m.cash[m.seller[lid]] += c * m.price[lid]
    elif kind == "cancel":
        lid = listings[b % len(listings)]
        if lid not in m.cancelled:
            m.held[m.seller[lid]] += m.escrow[lid]
            m.escrow[lid] = 0
            m.cancelled.add(lid)
    else:
        m.held[holders[a]] -= c
        m.held[holders[b]] += c


def _check(
    conn: psycopg.Connection, m: Model, sid: str, holders: list[str], listings: list[str], *, expired: bool
) -> None:
    # every balance is the model's
    for h in holders:
        assert balance(conn, acct.holding(h, sid)) == (0 if expired else m.held[h]), h
    for lid in listings:
        assert balance(conn, acct.listing(lid, sid)) == (0 if expired else m.escrow[lid]), lid
    assert balance(conn, acct.provider_revenue(m.provider)) == m.cash[m.provider]
    for b in m.baps:
        assert balance(conn, acct.bap_cash(b)) == m.cash[b], b
    # tokens conserve: minted = holdings + escrows + redeemed + expired
    t = provider_tokens(conn, m.provider)[m.provider]
    assert t.holds and t.minted == 30 and t.redeemed == 0
    assert t.outstanding == (0 if expired else sum(m.held.values()) + sum(m.escrow.values()))
    assert t.expired == (30 if expired else 0)
    # money conserves: what buyers paid is what sellers received; with the funding account it sums to zero
    gbp = [acct.bap_cash(f"fund-{m.tag}"), acct.provider_revenue(m.provider), *(acct.bap_cash(b) for b in m.baps)]
    assert sum(balance(conn, name) for name in gbp) == 0
    assert sum(m.cash.values()) == m.funding
    assert all(balance(conn, acct.bap_cash(b)) >= 0 for b in m.baps)  # nobody paid beyond its cash
    # and the hash chain re-verifies, with every balance against its entries and the CFT invariant
    report = verify_ledger(conn)
    assert report.ok, report.summary()
