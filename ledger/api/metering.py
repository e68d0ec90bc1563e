"""Routes: half-hourly metering for one meter (ledger/metering.py) — self-reported by the meter's provider, or
signed by a meter operator; read back as settlement would use it — and the meter operators' Ed25519 keys
(ledger/meter_data.py)."""

from __future__ import annotations

from datetime import UTC
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, Field, ValidationError

from grid.money import decimal_to_units
from grid.periods import PERIOD
from kernel import clock
from ledger import meter_data, metering
from ledger.api.deps import Body, LedgerRoute, Runtime, Text, Who, created, read, tx
from ledger.api_keys import Principal
from ledger.errors import LedgerError, forbidden
from schemas import limits

router = APIRouter(route_class=LedgerRoute)


class ReadingIn(Body):
    period_start: AwareDatetime
    energy_kwh: limits.EnergyKwhDecimal  # signed: negative = net export


class MeteringIn(Body):
    meter_id: Text
    readings: Annotated[list[ReadingIn], Field(min_length=1, max_length=limits.MAX_ROWS_PER_REQUEST)]
    correction: bool = False
    provider_id: Text | None = None  # admin keys only: the owner of a meter seen for the first time


class SignedPayloadIn(Body):
    """What a meter operator signs (ledger/meter_data.py): the readings, with the payload format."""

    format: Literal["flexmarket.meter-readings.v1"]
    meter_id: Text
    readings: Annotated[list[ReadingIn], Field(min_length=1, max_length=limits.MAX_ROWS_PER_REQUEST)]
    correction: bool = False


class SignedMeteringIn(Body):
    # Kept as parsed JSON: the signature covers the payload exactly as sent, checked before it is validated.
    payload: dict[str, Any]
    key_id: Text
    signature: Annotated[str, Field(min_length=1, max_length=200)]


class MeterDataKeyIn(Body):
    public_key: Annotated[str, Field(min_length=1, max_length=200)]  # base64 of the 32-byte Ed25519 public key
    participant_id: Text | None = None  # admin keys only: the meter operator the key is for


def _readings(readings: list[ReadingIn]) -> list[metering.Reading]:
    return [
        metering.Reading(r.period_start.astimezone(UTC), decimal_to_units(r.energy_kwh, 3, "energy_kwh"))
        for r in readings
    ]


@router.post("/metering")
def post_metering(body: MeteringIn, rt: Runtime, who: Who) -> JSONResponse:
    """Self-reported readings: a provider's for its own meters (an admin's for any, naming a new meter's owner)."""
    if who.role == "provider":  # or an admin (ledger/api/permissions.py)
        if body.provider_id not in (None, who.participant_id):
            raise forbidden("a provider key posts metering only for its own meters")
        provider = who.participant_id
    else:
        provider = body.provider_id
    readings = _readings(body.readings)
    meter = body.meter_id.removeprefix("der://")
    return created(
        tx(
            rt,
            lambda c: metering.ingest_metering(
                c, meter, readings, provider_id=provider, now=clock.now(), correction=body.correction
            ),
        )
    )


@router.get("/metering/{meter_id}")
def get_metering(
    meter_id: str,
    rt: Runtime,
    who: Who,
    *,
    from_: Annotated[AwareDatetime, Query(alias="from")],
    to: Annotated[AwareDatetime, Query()],
) -> JSONResponse:
    """The meter's reading per half hour in [from, to) that settlement would use now (the meter operator's
    wins, then the latest version): a provider's key reads only its own meters; admin and finance any."""
    start, end = from_.astimezone(UTC), to.astimezone(UTC)
    if end <= start:
        raise LedgerError("invalid_request", "to: must be after from", status=400)
    if (end - start) / PERIOD > limits.MAX_ROWS_PER_REQUEST:
        raise LedgerError(
            "invalid_request", f"to: at most {limits.MAX_ROWS_PER_REQUEST} half-hours after from", status=400
        )
    meter = meter_id.removeprefix("der://")
    body = read(
        rt,
        lambda c: metering.meter_readings(
            c, meter, start, end, as_of=clock.now(), reader_provider_id=_own_meters_only(who)
        ),
    )
    return JSONResponse(body)


def _own_meters_only(who: Principal) -> str | None:
    """The provider whose meters alone the key reads; None for a key that reads every meter (admin, finance)."""
    return str(who.participant_id) if who.role == "provider" else None


@router.post("/metering/signed")
def post_signed_metering(body: SignedMeteringIn, rt: Runtime, who: Who) -> JSONResponse:
    """A meter operator's readings, signed with one of its registered keys; stored as `meter_operator`."""
    signer = None if who.role == "admin" else who.participant_id  # an admin may relay an operator's signed file

    def store(conn: Any) -> dict[str, Any]:
        verified = meter_data.verify_readings_signature(
            conn, body.payload, key_id=body.key_id, signature_b64=body.signature, participant_id=signer
        )
        try:
            payload = SignedPayloadIn.model_validate(body.payload)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in ("payload", *first.get("loc", ())))
            raise LedgerError("invalid_request", f"{where}: {first.get('msg', 'invalid')}", status=400) from exc
        return metering.ingest_metering(
            conn,
            payload.meter_id.removeprefix("der://"),
            _readings(payload.readings),
            provider_id=None,
            now=clock.now(),
            correction=payload.correction,
            source=f"meter_operator:{verified.key_id}",
            origin=verified,
        )

    return created(tx(rt, store))


@router.post("/meter-data-keys")
def post_meter_data_key(body: MeterDataKeyIn, rt: Runtime, who: Who) -> JSONResponse:
    """Register an Ed25519 public key that signs a meter operator's readings (rotation: register, then revoke)."""
    if who.role == "admin":
        if not body.participant_id:
            raise LedgerError("participant_required", "participant_id: an admin names the meter operator")
        participant = body.participant_id
    elif body.participant_id not in (None, who.participant_id):
        raise forbidden("a meter operator registers keys only for itself")
    else:
        participant = str(who.participant_id)
    key = tx(rt, lambda c: meter_data.register_key(c, participant, body.public_key, now=clock.now()))
    return JSONResponse({"status": "created", **key.as_json()}, status_code=201)


@router.get("/meter-data-keys")
def get_meter_data_keys(rt: Runtime, who: Who) -> JSONResponse:
    """A meter operator's own keys (an admin or finance key: every operator's)."""
    participant = who.participant_id if who.role == "meter_operator" else None
    keys = read(rt, lambda c: meter_data.list_keys(c, participant))
    return JSONResponse({"keys": [k.as_json() for k in keys]})


@router.post("/meter-data-keys/{key_id}/revoke")
def revoke_meter_data_key(key_id: str, rt: Runtime, who: Who) -> JSONResponse:
    """Revoke a key: later signatures by it are refused; readings it signed before stay."""
    owner = None if who.role == "admin" else who.participant_id
    key = tx(rt, lambda c: meter_data.revoke_key(c, key_id, owner, now=clock.now()))
    return JSONResponse({"status": "revoked", **key.as_json()})
