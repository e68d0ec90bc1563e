"""A Compute Flex Token redemption's order cancelled before its window gives the burned tokens back to the
holder (ledger/orders.py `cancel_order`); once the window has opened it cannot be cancelled and the tokens
stay burned."""

from __future__ import annotations

import uuid
from datetime import timedelta

import psycopg
import pytest

from ledger import accounts as acct
from ledger.accounts_db import account_info
from ledger.db import in_transaction
from ledger.errors import LedgerError
from ledger.orders import cancel_order
from ledger.tokens import create_series, mint, provider_tokens, redeem, trade
from tests.ledger.conftest import utc
from tests.ledger.helpers import snapshot

T0 = utc(2024, 5, 6)


def test_cancelling_a_redemption_before_its_window_returns_the_tokens(conn: psycopg.Connection) -> None:
    tag = uuid.uuid4().hex[:6]
    sid, p, holder = f"rc-{tag}", f"rcp-{tag}", f"rch-{tag}"
    before_window = T0 - timedelta(days=1)

    def tx(fn):  # type: ignore[no-untyped-def]
        return in_transaction(conn, fn)

    tx(
        lambda c: create_series(
            c,
            sid,
            provider_id=p,
            valid_from=T0,
            valid_to=T0 + timedelta(days=7),
            declared_capacity_w=1_000_000,
            now=before_window,
        )
    )
    tx(lambda c: mint(c, f"m-{sid}", sid, 10, before_window))
    tx(
        lambda c: trade(
            c, f"g-{sid}", series_id=sid, seller_id=p, buyer_id=holder, tokens=4, price_pence=0, now=before_window
        )
    )
    start = T0 + timedelta(days=1, hours=17)

    def redeem_two(op: str):  # type: ignore[no-untyped-def]
        return lambda c: redeem(
            c,
            op,
            series_id=sid,
            holder_id=holder,
            tokens=2,
            period_start=start,
            period_end=start + timedelta(hours=1),
            meter_id=f"M-{tag}",
            supplier_id=f"sup-{tag}",
            now=T0,
        )

    first = tx(redeem_two(f"r1-{tag}"))
    assert account_info(conn, acct.holding(holder, sid))["balance"] == 2
    out = tx(lambda c: cancel_order(c, first["order_id"], T0 + timedelta(hours=1)))
    assert (out["status"], out["tokens_returned"]) == ("cancelled", 2)
    assert account_info(conn, acct.holding(holder, sid))["balance"] == 4
    assert account_info(conn, acct.redeemed(p, sid))["balance"] == 0
    assert tx(lambda c: cancel_order(c, first["order_id"], T0 + timedelta(hours=2)))["status"] == "exists"
    assert account_info(conn, acct.holding(holder, sid))["balance"] == 4  # returned once

    # once the window has opened the order stands: refused, nothing written, the tokens stay burned
    second = tx(redeem_two(f"r2-{tag}"))
    before = snapshot(conn)
    with pytest.raises(LedgerError) as err:
        tx(lambda c: cancel_order(c, second["order_id"], start))
    assert err.value.code == "window_started" and snapshot(conn) == before
    tokens = provider_tokens(conn, p)[p]
    assert (tokens.minted, tokens.outstanding, tokens.redeemed) == (10, 8, 2) and tokens.holds
