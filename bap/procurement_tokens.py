"""Compute Flex Tokens in a procurement's choice: redeeming held tokens is another way to pay for an offer.

For every offer of a provider whose series this BAP holds tokens of, the choice also sees the same item paid
with tokens (`procurement_choice.TokenRedemption`, valued at the policy's `tokens.value_gbp_per_mwh`), over the
part of the offer's window inside the series' validity; both share the item's key, so at most one of them is
ordered (the BAP holds one open order per item). A redemption pays whole tokens (1 token = 1 MWh), so the
chosen kW is set to whole MWh over its window (`whole_token_kw`), or the order falls back to spot when no
whole number of tokens fits the offer's minimum and maximum.
"""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import datetime

import structlog
from sqlalchemy.orm import Session

from bap import procurement_choice as pc
from bap import tokens
from bap.procurement import SlotTarget

log = structlog.get_logger(__name__)

Held = dict[str, tuple[str, datetime, datetime, int]]  # series → (provider, valid from, valid to, tokens)
CFT_MARK = "|cft:"


def held(
    session: Session, *, providers: set[str] | None = None, window: tuple[datetime, datetime] | None = None
) -> Held:
    """The tokens this BAP holds (of `providers`' series valid during `window`, when given), as the ledger states
    them; none when the ledger cannot say (logged)."""
    try:
        return tokens.holdings(session, providers=providers, window=window)
    except Exception as exc:  # no ledger configured or reachable: spot only this time
        log.warning("token holdings unavailable; choosing spot only", error=str(exc))
        return {}


def variants(offer: pc.Offer, grid: list[SlotTarget], holdings: Held) -> list[pc.Offer]:
    """The offer paid with each held series of its provider whose validity covers some of its slots."""
    out = []
    for series, (provider, valid_from, valid_to, _n) in sorted(holdings.items()):
        if provider != offer.provider_id:
            continue
        inside = [
            i
            for i in range(offer.first_slot, offer.last_slot + 1)
            if valid_from <= grid[i].start and grid[i].end <= valid_to
        ]
        if not inside:
            continue
        out.append(
            replace(
                offer,
                offer_id=f"{offer.offer_id}{CFT_MARK}{series}",
                first_slot=inside[0],
                last_slot=inside[-1],
                payment=pc.TokenRedemption(series),
                item_key=offer.offer_id,
            )
        )
    return out


def request_terms(holdings: Held, token_value_gbp_per_mwh: float) -> tuple[dict[str, float], dict[str, float]]:
    """Token budgets (MWh) and values (£/MWh) per series, for the choice's request."""
    return (
        {series: float(h[3]) for series, h in holdings.items()},
        {series: token_value_gbp_per_mwh for series in holdings},
    )


def series_of(offer_id: str) -> str | None:
    return offer_id.split(CFT_MARK, 1)[1] if CFT_MARK in offer_id else None


def whole_token_kw(power_kw: float, hours: float, *, min_kw: float, max_kw: float, budget: int) -> float | None:
    """The kW nearest `power_kw` that is a whole number of MWh over `hours` within the offer's limits and the
    tokens held; None when none is."""
    want = max(1, round(power_kw * hours / 1000.0))
    for n in sorted(range(1, budget + 1), key=lambda k: (abs(k - want), -k)):
        kw = n * 1000.0 / hours
        if min_kw - 1e-9 <= kw <= max_kw + 1e-9 and math.isclose(kw * hours / 1000.0, n):
            return kw
    return None
