"""When the orchestrator buys Compute Flex Tokens (Celery beat `bap-tokens`): a series seen in a catalog is bought
when the active policy finds it cheap — its price per token (1 token = 1 MWh) at or below
`tokens.buy_below_fraction_of_spot` × the median spot price of the flexibility offered over its validity in the
same catalogs — up to `tokens.max_tokens_per_series` held or being bought. Each decision is in the market log
with its reason. Buying is the Beckn token order of bap/tokens.py (settled delivery versus payment)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bap import market_log, tokens
from bap.models import CatalogOffer, TokenOffer, TokenOrder
from bap.policy import PolicyBody

OPEN_PURCHASE = ("SELECTING", "QUOTED", "CREATED")


@dataclass(frozen=True)
class Purchase:
    series_id: str
    tokens: int
    reason: str


def _latest_series(session: Session, now: datetime) -> list[TokenOffer]:
    """The latest catalog answer for each series still valid and with tokens left."""
    latest = (
        select(TokenOffer.series_id, func.max(TokenOffer.received_at).label("at"))
        .group_by(TokenOffer.series_id)
        .subquery()
    )
    q = (
        select(TokenOffer)
        .join(latest, (TokenOffer.series_id == latest.c.series_id) & (TokenOffer.received_at == latest.c.at))
        .where(TokenOffer.valid_to > now, TokenOffer.tokens_available > 0)
        .order_by(TokenOffer.series_id)
    )
    return list(session.scalars(q))


def spot_gbp_per_mwh(session: Session, series: TokenOffer) -> float | None:
    """The median price of the flexibility offered over the series' validity in the same catalogs."""
    prices = session.scalars(
        select(CatalogOffer.price_gbp_per_mwh).where(
            CatalogOffer.transaction_id == series.transaction_id,
            CatalogOffer.window_start < series.valid_to,
            CatalogOffer.window_end > series.valid_from,
        )
    ).all()
    return statistics.median(prices) if prices else None


def _buying(session: Session, series_id: str) -> int:
    return int(
        session.scalar(
            select(func.coalesce(func.sum(TokenOrder.tokens), 0)).where(
                TokenOrder.series_id == series_id, TokenOrder.state.in_(OPEN_PURCHASE)
            )
        )
        or 0
    )


def decide(session: Session, policy: PolicyBody, held: dict[str, tokens.Holding], now: datetime) -> list[Purchase]:
    """What to buy now, and why (every series considered is logged, bought or not)."""
    fraction = policy.tokens.buy_below_fraction_of_spot
    if fraction is None:
        return []
    out = []
    for s in _latest_series(session, now):
        spot = spot_gbp_per_mwh(session, s)
        have = (held.get(s.series_id) or (s.provider_id, s.valid_from, s.valid_to, 0))[3] + _buying(
            session, s.series_id
        )
        room = min(s.tokens_available, policy.tokens.max_tokens_per_series - have)
        price = float(s.price_gbp_per_token)
        if spot is None:
            why = "no spot offer over its validity to compare with"
        elif price > fraction * spot:
            why = f"£{price:g}/token is above {fraction:g} × the £{spot:g}/MWh spot median over its validity"
        elif room <= 0:
            why = f"already holding or buying {have} (the policy's most: {policy.tokens.max_tokens_per_series})"
        else:
            why = ""
        if why:
            market_log.record(
                session,
                "token_skipped",
                f"series {s.series_id} not bought: {why}",
                procurement_id=None,
                provider_id=s.provider_id,
            )
            continue
        reason = (
            f"£{price:g}/token ≤ {fraction:g} × £{spot:g}/MWh spot median over its validity; "
            f"buying {room} (holding or buying {have})"
        )
        out.append(Purchase(s.series_id, room, reason))
    return out


def buy(session: Session, purchases: list[Purchase], *, bap_id: str, bap_uri: str) -> int:
    """Start each purchase (a Beckn token order) from the series' latest catalog answer."""
    for p in purchases:
        offer = session.scalars(
            select(TokenOffer).where(TokenOffer.series_id == p.series_id).order_by(TokenOffer.received_at.desc())
        ).first()
        assert offer is not None
        tokens.buy(
            session,
            bap_id,
            bap_uri,
            tokens.Buy(offer.transaction_id, offer.bpp_id, offer.provider_id, p.series_id, p.tokens),
        )
        market_log.record(
            session,
            "token_buy",
            f"buying {p.tokens} tokens of {p.series_id}: {p.reason}",
            procurement_id=None,
            provider_id=offer.provider_id,
        )
    return len(purchases)
