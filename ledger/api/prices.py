"""Route: imbalance and market index prices (ledger/prices.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import AwareDatetime, Field, field_validator

from grid.money import gbp_per_mwh_to_millipence
from kernel import clock
from ledger import prices
from ledger.api.deps import Body, LedgerRoute, Runtime, Text, Who, tx
from schemas import limits

router = APIRouter(route_class=LedgerRoute)


class PriceIn(Body):
    period_start: AwareDatetime
    imbalance_price_gbp_per_mwh: limits.PriceDecimal | None = None
    market_index_price_gbp_per_mwh: limits.PriceDecimal | None = None

    @field_validator("period_start")
    @classmethod
    def _historical(cls, v: datetime) -> datetime:
        # an append-only table: no 1970 (`period_start: 0`) and no far future (schemas/limits.py)
        reason = limits.check_historical(v, clock.now())
        if reason:
            raise ValueError(reason)
        return v


class PricesIn(Body):
    source: Text
    prices: Annotated[list[PriceIn], Field(min_length=1, max_length=limits.MAX_ROWS_PER_REQUEST)]


@router.post("/prices")
def post_prices(body: PricesIn, rt: Runtime, who: Who) -> dict[str, Any]:

    def pence(v: Decimal | None, what: str) -> int | None:
        return None if v is None else gbp_per_mwh_to_millipence(v, what)

    rows = [
        prices.PriceRow(
            p.period_start.astimezone(UTC),
            pence(p.imbalance_price_gbp_per_mwh, "imbalance price"),
            pence(p.market_index_price_gbp_per_mwh, "market index price"),
        )
        for p in body.prices
    ]
    return tx(rt, lambda c: prices.ingest_prices(c, rows, body.source, clock.now()))
