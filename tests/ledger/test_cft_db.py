"""Compute Flex Tokens on the database: mint within capacity, delivery-versus-payment sale, secondary
transfer, redemption into a settled obligation, expiry, and the per-provider invariant."""

from __future__ import annotations

import uuid
from datetime import timedelta

import psycopg
import pytest

from grid.periods import PERIOD
from ledger import accounts as acct
from ledger import service as svc
from ledger.errors import LedgerError
from tests.ledger.conftest import utc
from tests.ledger.helpers import snapshot

T0 = utc(2024, 1, 8)  # series valid for a week from Monday


@pytest.fixture
def conn(ledger_url: str):
    c = svc.connect(ledger_url)
    yield c
    c.close()


def tx(conn: psycopg.Connection, fn):  # type: ignore[no-untyped-def]
    return svc.in_transaction(conn, fn)


def test_token_lifecycle(conn: psycopg.Connection, ledger_url: str) -> None:
    tag = uuid.uuid4().hex[:6]
    s, p, b1, b2 = f"s-{tag}", f"dc-{tag}", f"bap1-{tag}", f"bap2-{tag}"
    now = T0 - timedelta(days=1)
    out = tx(conn, lambda c: svc.create_series(c, s, p, T0, T0 + timedelta(days=7), 120_000, now))
    assert out["max_tokens"] == 20  # 120 kW × 168 h = 20.16 MWh → 20 tokens
    assert (
        tx(conn, lambda c: svc.create_series(c, s, p, T0, T0 + timedelta(days=7), 120_000, now))["status"] == "exists"
    )

    tx(conn, lambda c: svc.mint(c, f"m1-{tag}", s, 15, now))
    before = snapshot(conn)
    with pytest.raises(LedgerError) as err:  # 15 + 6 > 20
        tx(conn, lambda c: svc.mint(c, f"m2-{tag}", s, 6, now))
    assert err.value.code == "exceeds_capacity" and err.value.status == 409
    assert snapshot(conn) == before
    tx(conn, lambda c: svc.mint(c, f"m3-{tag}", s, 5, now))

    # sale: tokens and payment in one linked batch
    sale = tx(conn, lambda c: svc.trade(c, f"sale-{tag}", s, p, b1, 8, 240_000, now))
    assert [t["ledger"] for t in sale["transfers"]] == [acct.cft_ledger(s), "GBP"]
    assert svc.account_info(conn, acct.holding(b1, s))["balance"] == 8
    assert svc.account_info(conn, acct.provider_revenue(p))["balance"] == 240_000
    # a sale the seller cannot deliver moves neither tokens nor money
    before = snapshot(conn)
    with pytest.raises(LedgerError) as err:
        tx(conn, lambda c: svc.trade(c, f"sale2-{tag}", s, p, b2, 13, 100, now))
    assert err.value.code == "insufficient_tokens"
    assert snapshot(conn) == before

    # secondary market
    tx(conn, lambda c: svc.trade(c, f"sec-{tag}", s, b1, b2, 3, 99_000, now))
    assert svc.account_info(conn, acct.bap_cash(b1))["balance"] == -240_000 + 99_000

    # redemption: burns tokens, creates an obligation order settled like any other (CFT: prepaid)
    start = T0 + timedelta(days=1, hours=17)
    red = tx(
        conn,
        lambda c: svc.redeem(c, f"r1-{tag}", s, b1, 2, start, start + timedelta(hours=1), f"M-{tag}", f"sup-{tag}", T0),
    )
    assert red["status"] == "created" and red["load_reduction_kw"] == "2000.0"
    order = svc.order_summary(conn, red["order_id"])
    assert (order["settlement_method"], order["contracted_w"], order["bap_id"]) == ("CFT", 2_000_000, b1)
    assert (
        tx(
            conn,
            lambda c: svc.redeem(
                c, f"r1-{tag}", s, b1, 2, start, start + timedelta(hours=1), f"M-{tag}", f"sup-{tag}", T0
            ),
        )["status"]
        == "exists"
    )  # a retry: not burned twice
    before = snapshot(conn)
    with pytest.raises(LedgerError) as err:  # redeeming more than is held (3 left)
        tx(
            conn,
            lambda c: svc.redeem(
                c, f"r2-{tag}", s, b1, 4, start, start + timedelta(hours=2), f"M-{tag}", f"sup-{tag}", T0
            ),
        )
    assert err.value.code == "insufficient_tokens"
    with pytest.raises(LedgerError) as err:  # same id, different content
        tx(
            conn,
            lambda c: svc.redeem(
                c, f"r1-{tag}", s, b1, 1, start, start + timedelta(minutes=30), f"M-{tag}", f"sup-{tag}", T0
            ),
        )
    assert err.value.status == 409
    assert snapshot(conn) == before

    # the obligation settles through the normal runs: delivery measured, shortfall charged, nothing paid
    readings, t = [], start - timedelta(days=30)
    while t < start + timedelta(hours=4):
        readings.append(svc.Reading(t, 1_500_000 if not start <= t < start + timedelta(hours=1) else 1_000_000))
        t += PERIOD
    tx(conn, lambda c: svc.ingest_metering(c, f"M-{tag}", readings, provider_id=p, now=start + timedelta(hours=5)))
    run = svc.settle_due(ledger_url, start + timedelta(hours=5), order_ids=[red["order_id"]])[0]
    assert run.lines["utilisation"] == 0 and run.lines["supplier_compensation"] == 9_853  # 1 MWh delivered

    # expiry: remaining tokens move to expired; nothing can be redeemed or traded afterwards
    end = T0 + timedelta(days=7)
    res = tx(conn, lambda c: svc.expire_due(c, end))
    assert res["tokens_expired"] >= 18  # 12 with the provider, 3 with b2, 3 with b1 (plus any other series)
    assert tx(conn, lambda c: svc.expire_due(c, end))["tokens_expired"] == 0  # idempotent
    for holder in (p, b1, b2):
        assert svc.account_info(conn, acct.holding(holder, s))["balance"] == 0
    for fn in (
        lambda c: svc.redeem(c, f"r3-{tag}", s, b2, 1, end - timedelta(hours=1), end, f"M-{tag}", f"sup-{tag}", end),
        lambda c: svc.mint(c, f"m4-{tag}", s, 1, end),
    ):
        with pytest.raises(LedgerError) as err:
            tx(conn, fn)
        assert err.value.code == "series_expired"

    tokens = svc.provider_tokens(conn, p)[p]
    assert (tokens.minted, tokens.outstanding, tokens.redeemed, tokens.expired) == (20, 0, 2, 18)
    assert tokens.holds
    info = svc.series_info(conn, s)
    assert info["provider_invariant"]["holds"] is True


def test_pending_transfers_expire_in_the_sweep(conn: psycopg.Connection) -> None:
    tag = uuid.uuid4().hex[:6]
    cash, rev = acct.bap_cash(f"b-{tag}"), acct.provider_revenue(f"p-{tag}")
    from ledger.store import append_one
    from ledger.transfers import TransferSpec

    tx(conn, lambda c: svc.ensure_accounts(c, [cash, rev]))
    now = svc.utcnow()
    tx(
        conn,
        lambda c: append_one(
            c, [TransferSpec(f"p-{tag}", "pending", "GBP", cash, rev, 70, timeout_us=svc.us(now + timedelta(hours=1)))]
        ),
    )
    assert tx(conn, lambda c: svc.expire_due(c, now))["pending_expired"] == 0
    later = now + timedelta(hours=2)
    assert tx(conn, lambda c: svc.expire_due(c, later))["pending_expired"] >= 1
    assert svc.get_transfer(conn, f"p-{tag}")["resolved_by"]["kind"] == "expire"
    assert svc.account_info(conn, rev)["credits_pending"] == 0
