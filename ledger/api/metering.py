"""Route: half-hourly metering for one meter (ledger/metering.py)."""

from __future__ import annotations

from datetime import UTC
from typing import Annotated

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, Field

from grid.money import decimal_to_units
from kernel import clock
from ledger import metering
from ledger.api.deps import Body, LedgerRoute, Runtime, Text, Who, created, tx
from ledger.errors import forbidden
from schemas import limits

router = APIRouter(route_class=LedgerRoute)


class ReadingIn(Body):
    period_start: AwareDatetime
    energy_kwh: limits.EnergyKwhDecimal


class MeteringIn(Body):
    meter_id: Text
    readings: Annotated[list[ReadingIn], Field(min_length=1, max_length=metering.MAX_READINGS_PER_REQUEST)]
    correction: bool = False
    provider_id: Text | None = None  # admin keys only: the owner of a meter seen for the first time


@router.post("/metering")
def post_metering(body: MeteringIn, rt: Runtime, who: Who) -> JSONResponse:
    if who.role == "provider":
        if body.provider_id not in (None, who.participant_id):
            raise forbidden("a provider key posts metering only for its own meters")
        provider = who.participant_id
    elif who.role == "admin":
        provider = body.provider_id
    else:
        raise forbidden("metering is posted with the provider's key")
    readings = [
        metering.Reading(r.period_start.astimezone(UTC), decimal_to_units(r.energy_kwh, 3, "energy_kwh"))
        for r in body.readings
    ]
    meter = body.meter_id.removeprefix("der://")
    return created(
        tx(
            rt,
            lambda c: metering.ingest_metering(
                c, meter, readings, provider_id=provider, now=clock.now(), correction=body.correction
            ),
        )
    )
