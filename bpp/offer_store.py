"""The BPP's stored catalog: offers upserted as published (start-up, a provider joining, a re-plan) and
withdrawn with the reason a buyer that selects one later is told (bpp/replan.py, bpp/service.py)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from bpp.catalog import ProviderConfig
from bpp.models import Offer
from schemas.flex import FlexOfferSpec


def offer_to_json(o: FlexOfferSpec) -> dict[str, Any]:
    d = asdict(o)
    d["window_start"] = o.window_start.isoformat()
    d["window_end"] = o.window_end.isoformat()
    return d


def upsert_offers(session: Session, bpp_id: str, provider: ProviderConfig, offers: list[FlexOfferSpec]) -> None:
    """Publish `offers` of `provider`: each becomes (again) active, any earlier withdrawal cleared."""
    for o in offers:
        site = provider.site(o.location_id)
        assert site is not None  # parse_config checked it
        values = dict(
            location_id=o.location_id,
            region=site.region,
            meter_id=site.meter_id,
            window_start=o.window_start,
            window_end=o.window_end,
            available_kw=o.available_kw,
            price_gbp_per_mwh=o.price_gbp_per_mwh,
            spec=offer_to_json(o),
            active=True,
            withdrawn_at=None,
            withdrawn_reason=None,
        )
        session.execute(
            insert(Offer)
            .values(bpp_id=bpp_id, provider_id=provider.id, item_id=o.item_id, **values)
            .on_conflict_do_update(index_elements=["bpp_id", "provider_id", "item_id"], set_=values)
        )


def withdraw(row: Offer, *, at: datetime, reason: str) -> None:
    """Take the offer out of the catalog; a later select, init or confirm of it is refused with `reason`."""
    row.active, row.withdrawn_at, row.withdrawn_reason = False, at, reason


def unavailable_message(item_id: str, provider_id: str, row: Offer | None) -> str:
    """Why a buyer cannot order the item: never offered here, or withdrawn (when, and why)."""
    if row is None or row.withdrawn_at is None:
        return f"item {item_id!r} is not offered by {provider_id}"
    return (
        f"item {item_id!r} of {provider_id} was withdrawn at {row.withdrawn_at.isoformat()}: "
        f"{row.withdrawn_reason or 'no longer offered'}"
    )
