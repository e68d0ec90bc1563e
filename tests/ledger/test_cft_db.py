"""Compute Flex Tokens on the database: mint within capacity, delivery-versus-payment sale, secondary
transfer, redemption into a settled obligation, expiry, and the per-provider invariant."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from grid.periods import PERIOD
from kernel import clock
from ledger import accounts as acct
from ledger.accounts_db import account_info, ensure_accounts
from ledger.db import connect, in_transaction, us
from ledger.errors import LedgerError
from ledger.metering import Reading, ingest_metering
from ledger.orders import order_summary
from ledger.settlement_runs import settle_due
from ledger.store import append_one
from ledger.tokens import create_series, expire_due, mint, provider_tokens, redeem, series_info, trade
from ledger.transfers import TransferSpec
from ledger.transfers_db import get_transfer
from tests.ledger.conftest import utc
from tests.ledger.helpers import snapshot

T0 = utc(2024, 1, 8)  # series valid for a week from Monday


@pytest.fixture
def conn(ledger_url: str):
    c = connect(ledger_url)
    yield c
    c.close()


def tx(conn: psycopg.Connection, fn):  # type: ignore[no-untyped-def]
    return in_transaction(conn, fn)


def test_token_lifecycle(conn: psycopg.Connection, ledger_url: str) -> None:
    tag = uuid.uuid4().hex[:6]
    s, p, b1, b2 = f"s-{tag}", f"dc-{tag}", f"bap1-{tag}", f"bap2-{tag}"
    now = T0 - timedelta(days=1)
    out = tx(
        conn,
        lambda c: create_series(
            c, s, provider_id=p, valid_from=T0, valid_to=T0 + timedelta(days=7), declared_capacity_w=120_000, now=now
        ),
    )
    assert out["max_tokens"] == 20  # 120 kW × 168 h = 20.16 MWh → 20 tokens
    assert (
        tx(
            conn,
            lambda c: create_series(
                c,
                s,
                provider_id=p,
                valid_from=T0,
                valid_to=T0 + timedelta(days=7),
                declared_capacity_w=120_000,
                now=now,
            ),
        )["status"]
        == "exists"
    )

    tx(conn, lambda c: mint(c, f"m1-{tag}", s, 15, now))
    before = snapshot(conn)
    with pytest.raises(LedgerError) as err:  # 15 + 6 > 20
        tx(conn, lambda c: mint(c, f"m2-{tag}", s, 6, now))
    assert err.value.code == "exceeds_capacity" and err.value.status == 409
    assert snapshot(conn) == before
    tx(conn, lambda c: mint(c, f"m3-{tag}", s, 5, now))

    # sale: tokens and payment in one linked batch
    sale = tx(
        conn,
        lambda c: trade(
            c, f"sale-{tag}", series_id=s, seller_id=p, buyer_id=b1, tokens=8, price_pence=240_000, now=now
        ),
    )
    assert [t["ledger"] for t in sale["transfers"]] == [acct.cft_ledger(s), "GBP"]
    assert account_info(conn, acct.holding(b1, s))["balance"] == 8
    assert account_info(conn, acct.provider_revenue(p))["balance"] == 240_000
    # a sale the seller cannot deliver moves neither tokens nor money
    before = snapshot(conn)
    with pytest.raises(LedgerError) as err:
        tx(
            conn,
            lambda c: trade(
                c, f"sale2-{tag}", series_id=s, seller_id=p, buyer_id=b2, tokens=13, price_pence=100, now=now
            ),
        )
    assert err.value.code == "insufficient_tokens"
    assert snapshot(conn) == before

    # secondary market
    tx(
        conn,
        lambda c: trade(c, f"sec-{tag}", series_id=s, seller_id=b1, buyer_id=b2, tokens=3, price_pence=99_000, now=now),
    )
    assert account_info(conn, acct.bap_cash(b1))["balance"] == -240_000 + 99_000

    # redemption: burns tokens, creates an obligation order settled like any other (CFT: prepaid)
    start = T0 + timedelta(days=1, hours=17)

    def redeem_two(c: psycopg.Connection) -> dict[str, Any]:
        return redeem(
            c,
            f"r1-{tag}",
            series_id=s,
            holder_id=b1,
            tokens=2,
            period_start=start,
            period_end=start + timedelta(hours=1),
            meter_id=f"M-{tag}",
            supplier_id=f"sup-{tag}",
            now=T0,
        )

    red = tx(conn, redeem_two)
    assert red["status"] == "created" and red["load_reduction_kw"] == "2000.0"
    order = order_summary(conn, red["order_id"])
    assert (order["settlement_method"], order["contracted_w"], order["bap_id"]) == ("CFT", 2_000_000, b1)
    assert tx(conn, redeem_two)["status"] == "exists"  # a retry: not burned twice
    before = snapshot(conn)
    with pytest.raises(LedgerError) as err:  # redeeming more than is held (3 left)
        tx(
            conn,
            lambda c: redeem(
                c,
                f"r2-{tag}",
                series_id=s,
                holder_id=b1,
                tokens=4,
                period_start=start,
                period_end=start + timedelta(hours=2),
                meter_id=f"M-{tag}",
                supplier_id=f"sup-{tag}",
                now=T0,
            ),
        )
    assert err.value.code == "insufficient_tokens"
    with pytest.raises(LedgerError) as err:  # same id, different content
        tx(
            conn,
            lambda c: redeem(
                c,
                f"r1-{tag}",
                series_id=s,
                holder_id=b1,
                tokens=1,
                period_start=start,
                period_end=start + timedelta(minutes=30),
                meter_id=f"M-{tag}",
                supplier_id=f"sup-{tag}",
                now=T0,
            ),
        )
    assert err.value.status == 409
    assert snapshot(conn) == before

    # the obligation settles through the normal runs: delivery measured, shortfall charged, nothing paid
    readings, t = [], start - timedelta(days=30)
    while t < start + timedelta(hours=4):
        readings.append(Reading(t, 1_500_000 if not start <= t < start + timedelta(hours=1) else 1_000_000))
        t += PERIOD
    tx(conn, lambda c: ingest_metering(c, f"M-{tag}", readings, provider_id=p, now=start + timedelta(hours=5)))
    run = settle_due(ledger_url, start + timedelta(hours=5), order_ids=[red["order_id"]])[0]
    assert run.lines["utilisation"] == 0 and run.lines["supplier_compensation"] == 9_853  # 1 MWh delivered

    # expiry: remaining tokens move to expired; nothing can be redeemed or traded afterwards
    end = T0 + timedelta(days=7)
    res = tx(conn, lambda c: expire_due(c, end))
    assert res["tokens_expired"] >= 18  # 12 with the provider, 3 with b2, 3 with b1 (plus any other series)
    assert tx(conn, lambda c: expire_due(c, end))["tokens_expired"] == 0  # idempotent
    for holder in (p, b1, b2):
        assert account_info(conn, acct.holding(holder, s))["balance"] == 0
    for fn in (
        lambda c: redeem(
            c,
            f"r3-{tag}",
            series_id=s,
            holder_id=b2,
            tokens=1,
            period_start=end - timedelta(hours=1),
            period_end=end,
            meter_id=f"M-{tag}",
            supplier_id=f"sup-{tag}",
            now=end,
        ),
        lambda c: mint(c, f"m4-{tag}", s, 1, end),
    ):
        with pytest.raises(LedgerError) as err:
            tx(conn, fn)
        assert err.value.code == "series_expired"

    tokens = provider_tokens(conn, p)[p]
    assert (tokens.minted, tokens.outstanding, tokens.redeemed, tokens.expired) == (20, 0, 2, 18)
    assert tokens.holds
    info = series_info(conn, s)
    assert info["provider_invariant"]["holds"] is True


def test_pending_transfers_expire_in_the_sweep(conn: psycopg.Connection) -> None:
    tag = uuid.uuid4().hex[:6]
    cash, rev = acct.bap_cash(f"b-{tag}"), acct.provider_revenue(f"p-{tag}")
    tx(conn, lambda c: ensure_accounts(c, [cash, rev]))
    now = clock.now()
    tx(
        conn,
        lambda c: append_one(
            c, [TransferSpec(f"p-{tag}", "pending", "GBP", cash, rev, 70, timeout_us=us(now + timedelta(hours=1)))]
        ),
    )
    assert tx(conn, lambda c: expire_due(c, now))["pending_expired"] == 0
    later = now + timedelta(hours=2)
    assert tx(conn, lambda c: expire_due(c, later))["pending_expired"] >= 1
    assert get_transfer(conn, f"p-{tag}")["resolved_by"]["kind"] == "expire"
    assert account_info(conn, rev)["credits_pending"] == 0
