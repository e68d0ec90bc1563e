"""Compute Flex Tokens in PostgreSQL: series (one token ledger each, minting capped by the declared
capacity), mint, trade (tokens and payment in one linked batch), redeem (burn tokens into a CFT order
settled like any other) and expiry, plus each provider's minted = outstanding + redeemed + expired.

The rules are the pure ledger/cft.py; redemptions register their order through ledger/orders.py.
A sale that debits a buyer's cash needs the buyer's signed Beckn confirm for it (`sell`, `sell_with_consent`:
verified by ledger/agreements.py, stored in ledger.agreements, its hash in the entries' memos).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg

from grid.money import MAX_SAFE_INTEGER
from ledger import accounts as acct
from ledger import agreements_db
from ledger import cft as cftrules
from ledger.accounts_db import ensure_accounts
from ledger.agreements import TokenSale, Verified, agreement_sha256, with_agreement
from ledger.db import iso, us
from ledger.errors import LedgerError, not_found
from ledger.orders import load_order, register_order
from ledger.policies import get_policy
from ledger.settlement import OrderTerms
from ledger.store import RequestResult, append, append_one
from ledger.transfers import TransferError, TransferSpec
from ledger.transfers_db import transfer_result_json
from schemas.outcome import ledger_order_id


def load_series(conn: psycopg.Connection, series_id: str) -> cftrules.Series:
    row = conn.execute(
        "SELECT series_id, provider_id, valid_from, valid_to, declared_capacity_w, max_tokens "
        "FROM ledger.cft_series WHERE series_id = %s",
        (series_id,),
    ).fetchone()
    if row is None:
        raise not_found(f"CFT series {series_id!r}")
    return cftrules.Series(row[0], row[1], row[2].astimezone(UTC), row[3].astimezone(UTC), row[4], row[5])


def create_series(
    conn: psycopg.Connection,
    series_id: str,
    *,
    provider_id: str,
    valid_from: datetime,
    valid_to: datetime,
    declared_capacity_w: int,
    now: datetime,
) -> dict[str, Any]:
    try:
        acct.check_id(series_id, "series_id")
        acct.check_id(provider_id, "provider_id")
    except acct.AccountNameError as exc:
        raise LedgerError("id_invalid", str(exc)) from exc
    tokens = cftrules.max_tokens(declared_capacity_w, valid_from, valid_to)
    if valid_to <= now:
        raise LedgerError("window_invalid", "the validity window has already ended")
    row = conn.execute(
        "SELECT provider_id, valid_from, valid_to, declared_capacity_w FROM ledger.cft_series WHERE series_id = %s",
        (series_id,),
    ).fetchone()
    out = {
        "series_id": series_id,
        "provider_id": provider_id,
        "valid_from": iso(valid_from),
        "valid_to": iso(valid_to),
        "declared_capacity_w": declared_capacity_w,
        "max_tokens": tokens,
        "ledger": acct.cft_ledger(series_id),
    }
    if row is not None:
        if (row[0], row[1], row[2], row[3]) != (provider_id, valid_from, valid_to, declared_capacity_w):
            raise LedgerError("series_conflict", f"series {series_id} exists with different terms", status=409)
        return {"status": "exists", **out}
    conn.execute(
        "INSERT INTO ledger.ledgers (code, kind, unit) VALUES (%s, 'token', 'token (1 MWh)')",
        (acct.cft_ledger(series_id),),
    )
    conn.execute(
        "INSERT INTO ledger.cft_series (series_id, provider_id, valid_from, valid_to, declared_capacity_w, "
        "max_tokens) VALUES (%s, %s, %s, %s, %s, %s)",
        (series_id, provider_id, valid_from, valid_to, declared_capacity_w, tokens),
    )
    issuance = acct.issuance(provider_id, series_id)
    ensure_accounts(
        conn,
        [
            issuance,
            acct.holding(provider_id, series_id),
            acct.redeemed(provider_id, series_id),
            acct.expired(provider_id, series_id),
        ],
        limits={issuance: tokens},
    )
    return {"status": "created", **out}


def append_tokens(
    conn: psycopg.Connection, specs: list[TransferSpec], now: datetime, series: cftrules.Series, what: str
) -> RequestResult:
    """Append a token request; a mint beyond capacity and tokens a holder (or a listing's escrow) does not have
    become 409s naming the reason (token transfer ids end in `:tokens` or `:burn`)."""
    try:
        return append_one(conn, specs, rule_now_us=us(now))
    except TransferError as exc:
        if exc.code == "exceeds_limit":
            minted = conn.execute(
                "SELECT debits_posted - credits_posted FROM ledger.balances WHERE account = %s",
                (acct.issuance(series.provider_id, series.series_id),),
            ).fetchone()
            raise LedgerError(
                "exceeds_capacity",
                f"minting would exceed series {series.series_id}'s declared "
                f"capacity of {series.max_tokens} tokens ({minted[0] if minted else 0} minted)",
                status=409,
            ) from exc
        if exc.code == "exceeds_credits" and (exc.transfer_id or "").endswith((":tokens", ":burn")):
            raise LedgerError(
                "insufficient_tokens", f"{what}: the holder does not hold enough tokens ({exc.message})", status=409
            ) from exc
        raise


def mint(conn: psycopg.Connection, op_id: str, series_id: str, tokens: int, now: datetime) -> dict[str, Any]:
    series = load_series(conn, series_id)
    cftrules.check_tradable(series, now)
    res = append_tokens(
        conn,
        [
            TransferSpec(
                f"cft:{op_id}:tokens",
                "single",
                acct.cft_ledger(series_id),
                acct.issuance(series.provider_id, series_id),
                acct.holding(series.provider_id, series_id),
                tokens,
                memo=f"mint {tokens} CFT of {series_id}",
            )
        ],
        now,
        series,
        "mint",
    )
    return transfer_result_json(res)


def trade(
    conn: psycopg.Connection,
    op_id: str,
    *,
    series_id: str,
    seller_id: str,
    buyer_id: str,
    tokens: int,
    price_pence: int,
    now: datetime,
    payer_account: str | None = None,
    payee_account: str | None = None,
    agreement: bytes | None = None,
    token_source: str | None = None,
) -> dict[str, Any]:
    """Sell (seller = the series' provider) or transfer on a secondary market: tokens and payment in
    one linked batch — delivery versus payment, both or neither. Who may ask is the caller's rule: the
    buyer's cash moves only with its signed consent (`sell_with_consent`), whose `agreement` hash the
    entries' memos carry. The tokens leave the seller's holding, or `token_source` (a listing's escrow)."""
    series = load_series(conn, series_id)
    cftrules.check_tradable(series, now)
    try:
        acct.check_id(buyer_id, "buyer_id")
        acct.check_id(seller_id, "seller_id")
    except acct.AccountNameError as exc:
        raise LedgerError("id_invalid", str(exc)) from exc
    if buyer_id == seller_id:
        raise LedgerError("accounts_must_differ", "buyer and seller must differ")
    if type(price_pence) is not int or price_pence < 0 or price_pence > MAX_SAFE_INTEGER:
        raise LedgerError("amount_invalid", "price must be a non-negative amount")
    payer = payer_account or acct.bap_cash(buyer_id)
    payee = payee_account or (
        acct.provider_revenue(seller_id) if seller_id == series.provider_id else acct.bap_cash(seller_id)
    )
    names = [acct.holding(buyer_id, series_id)]
    specs = [
        TransferSpec(
            f"cft:{op_id}:tokens",
            "single",
            acct.cft_ledger(series_id),
            token_source or acct.holding(seller_id, series_id),
            acct.holding(buyer_id, series_id),
            tokens,
            memo=with_agreement(f"{tokens} CFT of {series_id} from {seller_id} to {buyer_id}", agreement),
        )
    ]
    if price_pence > 0:
        try:
            for n in (payer, payee):
                if acct.describe(n).ledger != acct.GBP:
                    raise LedgerError("ledger_mismatch", f"payment account {n} is not a GBP account")
        except acct.AccountNameError as exc:
            raise LedgerError("account_invalid", str(exc)) from exc
        names += [payer, payee]
        specs.append(
            TransferSpec(
                f"cft:{op_id}:payment",
                "single",
                acct.GBP,
                payer,
                payee,
                price_pence,
                memo=with_agreement(f"payment for {tokens} CFT of {series_id}", agreement),
            )
        )
    # Accounts for the sender must already exist: a holder that never received tokens cannot send any.
    ensure_accounts(conn, names)
    return transfer_result_json(append_tokens(conn, specs, now, series, "transfer"))


def sell_with_consent(
    conn: psycopg.Connection,
    op_id: str,
    sale: TokenSale,
    consent: Verified,
    now: datetime,
    *,
    token_source: str | None = None,
) -> dict[str, Any]:
    """A trade the buyer consented to with its signed confirm (checked by ledger/agreements.py
    `check_token_consent`); the confirm is stored (ledger.agreements, kind token_sale) and backs this
    trade only. Idempotent by `op_id` with the same confirm; another confirm for the same id is a 409.
    The tokens come from the seller's holding, or from `token_source` (a listing's escrow)."""
    digest = agreement_sha256(consent.sha256)
    stored = agreements_db.existing_hash(conn, "token_sale", op_id)
    if stored is not None and stored != digest:
        raise LedgerError("sale_conflict", f"sale {op_id} is already recorded with another signed confirm", status=409)
    if stored is None:
        agreements_db.check_not_replayed(conn, consent)
    result = trade(
        conn,
        op_id,
        series_id=sale.series_id,
        seller_id=sale.seller_id,
        buyer_id=sale.buyer_id,
        tokens=sale.tokens,
        price_pence=sale.price_pence,
        now=now,
        agreement=digest,
        token_source=token_source,
    )
    if stored is None and result["status"] == "created":
        agreements_db.record(
            conn,
            kind="token_sale",
            subject=op_id,
            transaction_id=str(consent.context.get("transaction_id") or ""),
            bap_id=sale.buyer_id,
            provider_id=sale.seller_id,
            buyer=consent,
            provider=None,
            now=now,
        )
    return {**result, "agreement_sha256": digest.hex()}


def redeem(
    conn: psycopg.Connection,
    op_id: str,
    *,
    series_id: str,
    holder_id: str,
    tokens: int,
    period_start: datetime,
    period_end: datetime,
    meter_id: str,
    supplier_id: str,
    now: datetime,
    policy_version: str = "p415-v1",
) -> dict[str, Any]:
    """Burn `tokens` and oblige the provider to reduce load by the matching power in the period;
    the obligation is an order (settlement_method CFT, utilisation prepaid) settled like any other."""
    series = load_series(conn, series_id)
    try:
        acct.check_id(op_id, "redemption id")
        acct.check_id(holder_id, "holder_id")
    except acct.AccountNameError as exc:
        raise LedgerError("id_invalid", str(exc)) from exc
    order_id = ledger_order_id(op_id, "CFT")
    existing = conn.execute(
        "SELECT series_id, holder_id, tokens, order_id FROM ledger.cft_redemptions WHERE redemption_id = %s", (op_id,)
    ).fetchone()
    if existing is not None:
        terms, _ = load_order(conn, existing[3])
        same = (
            existing[0],
            existing[1],
            existing[2],
            terms.window_start,
            terms.window_end,
            terms.meter_id,
            terms.supplier_id,
        ) == (series_id, holder_id, tokens, period_start, period_end, meter_id, supplier_id)
        if not same:
            raise LedgerError("id_conflict", f"redemption {op_id} already exists with different content", status=409)
        return {"status": "exists", "redemption_id": op_id, "order_id": existing[3], "tokens": tokens}
    if type(tokens) is not int or tokens <= 0 or tokens > MAX_SAFE_INTEGER:
        raise LedgerError("amount_not_positive", "tokens must be a positive integer")
    policy = get_policy(conn, policy_version)
    cftrules.check_redemption(
        series,
        tokens,
        now=now,
        period_start=period_start,
        period_end=period_end,
        gate_closure_minutes=policy.gate_closure_minutes,
    )
    power_w = cftrules.redemption_power_w(tokens, period_start, period_end)
    terms = OrderTerms(
        order_id,
        series.provider_id,
        holder_id,
        meter_id,
        supplier_id,
        period_start,
        period_end,
        power_w,
        0,
        None,
        "CFT",
        "compute",
        now,
        policy_version,
    )
    register_order(conn, terms, f"cft-redemption:{op_id}", now)
    conn.execute(
        "INSERT INTO ledger.cft_redemptions (redemption_id, series_id, holder_id, tokens, order_id, "
        "redeemed_at) VALUES (%s, %s, %s, %s, %s, %s)",
        (op_id, series_id, holder_id, tokens, order_id, now),
    )
    res = append_tokens(
        conn,
        [
            TransferSpec(
                f"cft:{op_id}:burn",
                "single",
                acct.cft_ledger(series_id),
                acct.holding(holder_id, series_id),
                acct.redeemed(series.provider_id, series_id),
                tokens,
                memo=f"redeem {tokens} CFT for order {order_id}",
            )
        ],
        now,
        series,
        "redeem",
    )
    return {
        "status": "created",
        "redemption_id": op_id,
        "order_id": order_id,
        "tokens": tokens,
        "load_reduction_kw": str(power_w / 1000),
        "transfers": [e.as_json() for e in res.entries],
    }


def expire_due(conn: psycopg.Connection, now: datetime) -> dict[str, int]:
    """Expire remaining tokens of ended series (holdings and listing escrows) and pending transfers past their
    timeout."""
    now_us_ = us(now)
    requests: list[list[TransferSpec]] = []
    for series_id, provider_id in conn.execute(
        "SELECT series_id, provider_id FROM ledger.cft_series WHERE valid_to <= %s", (now,)
    ).fetchall():
        ledger = acct.cft_ledger(series_id)
        for name, credits, debits, debits_pending in conn.execute(
            "SELECT b.account, b.credits_posted, b.debits_posted, b.debits_pending FROM ledger.balances b "
            "JOIN ledger.accounts a ON a.name = b.account WHERE a.ledger = %s "
            "AND (a.name LIKE 'holding:%%' OR a.name LIKE 'listing:%%') "
            "AND b.credits_posted - b.debits_posted - b.debits_pending > 0",
            (ledger,),
        ).fetchall():
            kind, owner = name.split(":")[:2]  # a holder's tokens, or a listing's escrow
            expire_id = cftrules.expire_listing_transfer_id if kind == "listing" else cftrules.expire_transfer_id
            requests.append(
                [
                    TransferSpec(
                        expire_id(series_id, owner, credits),
                        "single",
                        ledger,
                        name,
                        acct.expired(provider_id, series_id),
                        credits - debits - debits_pending,
                        memo=f"tokens of {series_id} expired",
                    )
                ]
            )
    for (pid,) in conn.execute(
        "SELECT p.id FROM ledger.entries p WHERE p.kind = 'pending' AND p.timeout_us <= %s AND NOT EXISTS "
        "(SELECT 1 FROM ledger.entries r WHERE r.pending_id = p.id) ORDER BY p.timeout_us LIMIT 10000",
        (now_us_,),
    ).fetchall():
        requests.append(
            [TransferSpec(f"sys:expire:{pid}", "expire", pending_id=pid, memo="pending transfer timed out")]
        )
    if not requests:
        return {"tokens_expired": 0, "pending_expired": 0}
    results = append(conn, requests, rule_now_us=now_us_)
    created = [(req, r) for req, r in zip(requests, results, strict=True) if r.status == "created"]
    return {
        "tokens_expired": sum(r.entries[0].amount for req, r in created if req[0].kind == "single"),
        "pending_expired": sum(1 for req, _ in created if req[0].kind == "expire"),
    }


def provider_tokens(conn: psycopg.Connection, provider_id: str | None = None) -> dict[str, cftrules.ProviderTokens]:
    series = {
        r[0]: r[1]
        for r in conn.execute(
            "SELECT series_id, provider_id FROM ledger.cft_series WHERE %s::text IS NULL OR provider_id = %s",
            (provider_id, provider_id),
        )
    }
    if not series:
        return {}
    ledgers = [acct.cft_ledger(s) for s in series]
    nets = {
        r[0]: r[1]
        for r in conn.execute(
            "SELECT b.account, b.credits_posted - b.debits_posted FROM ledger.balances b JOIN ledger.accounts a "
            "ON a.name = b.account WHERE a.ledger = ANY(%s)",
            (ledgers,),
        )
    }
    return cftrules.provider_invariant(nets, series)


def series_info(conn: psycopg.Connection, series_id: str) -> dict[str, Any]:
    s = load_series(conn, series_id)
    tokens = provider_tokens(conn, s.provider_id)
    ledger = acct.cft_ledger(series_id)
    holdings = {
        r[0].split(":")[1]: r[1]
        for r in conn.execute(
            "SELECT b.account, b.credits_posted - b.debits_posted FROM ledger.balances b JOIN ledger.accounts a "
            "ON a.name = b.account WHERE a.ledger = %s AND a.name LIKE 'holding:%%' ORDER BY 1",
            (ledger,),
        )
    }
    listed = {
        r[0].split(":")[1]: r[1]
        for r in conn.execute(
            "SELECT b.account, b.credits_posted - b.debits_posted FROM ledger.balances b JOIN ledger.accounts a "
            "ON a.name = b.account WHERE a.ledger = %s AND a.name LIKE 'listing:%%' "
            "AND b.credits_posted - b.debits_posted > 0 ORDER BY 1",
            (ledger,),
        )
    }
    pt = tokens.get(s.provider_id)
    return {
        "series_id": s.series_id,
        "provider_id": s.provider_id,
        "valid_from": iso(s.valid_from),
        "valid_to": iso(s.valid_to),
        "declared_capacity_w": s.declared_capacity_w,
        "max_tokens": s.max_tokens,
        "holdings": holdings,
        "listed": listed,  # listing id → tokens in its escrow (for sale; ledger/listings.py)
        "provider_invariant": None
        if pt is None
        else {
            "minted": pt.minted,
            "outstanding": pt.outstanding,
            "redeemed": pt.redeemed,
            "expired": pt.expired,
            "holds": pt.holds,
        },
    }
