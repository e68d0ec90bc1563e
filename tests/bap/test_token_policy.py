"""When the orchestrator buys Compute Flex Tokens (bap/token_policy.py): a series priced at or below the policy's
fraction of the spot median over its validity is bought, up to the most the policy holds; dearer series, series
with nothing to compare with, and series already held to the limit are not — each decision logged with why."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import select

from bap import token_policy
from bap.models import CatalogOffer, MarketLogEntry, TokenOffer, Transaction
from bap.policy import PolicyBody, Tokens
from kernel.db import session_scope

NOW = datetime.now(UTC).replace(microsecond=0)
EVENING = NOW.replace(hour=16, minute=0, second=0) + timedelta(days=1)


def _catalog(s: object, tx: str) -> None:
    s.add(Transaction(id=tx, request={}, city_code="GB-R13", country_code="GBR"))  # type: ignore[attr-defined]
    for i, price in enumerate((150.0, 160.0, 170.0)):  # spot median over the evening: £160/MWh
        s.add(  # type: ignore[attr-defined]
            CatalogOffer(
                transaction_id=tx,
                bpp_id="bpp",
                provider_id=f"p{i}",
                item_id=f"p{i}-evening",
                bpp_uri="http://bpp",
                price_gbp_per_mwh=price,
                available_kw=500,
                window_start=EVENING,
                window_end=EVENING + timedelta(hours=4),
                spec={},
            )
        )
    for series, provider, price in (("cheap", "p0", "120"), ("dear", "p1", "150"), ("elsewhen", "p2", "1")):
        start = EVENING if series != "elsewhen" else EVENING + timedelta(days=3)
        s.add(  # type: ignore[attr-defined]
            TokenOffer(
                transaction_id=tx,
                bpp_id="bpp",
                provider_id=provider,
                series_id=f"{tx}-{series}",
                bpp_uri="http://bpp",
                valid_from=start,
                valid_to=start + timedelta(hours=4),
                price_gbp_per_token=Decimal(price),
                tokens_available=5,
            )
        )


def test_cheap_series_are_bought_up_to_the_limit_and_the_rest_logged(bap_db: str) -> None:
    tx = "tx-token-policy"
    with session_scope("bap") as s:
        _catalog(s, tx)
    policy = PolicyBody(tokens=Tokens(buy_below_fraction_of_spot=0.9, max_tokens_per_series=3))
    with session_scope("bap") as s:
        (purchase,) = token_policy.decide(s, policy, {}, NOW)
        assert (purchase.series_id, purchase.tokens) == (f"{tx}-cheap", 3)  # £120 ≤ 0.9 × £160
        assert "£120/token" in purchase.reason
    with session_scope("bap") as s:
        held = {f"{tx}-cheap": ("p0", EVENING, EVENING + timedelta(hours=4), 3)}
        assert token_policy.decide(s, policy, held, NOW) == []  # the limit is held already
        never = PolicyBody()  # the default policy never buys
        assert token_policy.decide(s, never, {}, NOW) == []
    with session_scope("bap") as s:
        skipped = [e.message for e in s.scalars(select(MarketLogEntry).where(MarketLogEntry.kind == "token_skipped"))]
    assert any(f"{tx}-dear" in m and "above 0.9" in m for m in skipped)
    assert any(f"{tx}-elsewhen" in m and "no spot offer" in m for m in skipped)
    assert any(f"{tx}-cheap" in m and "already holding or buying 3" in m for m in skipped)
