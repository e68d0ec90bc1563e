"""The grid orchestrator's client API (/api/v1): procurements, grid events, approvals, the kill switch,
policies and the market and carbon logs. Same guard as bap/router.py (API key, permission table, audit)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field, field_validator, model_validator
from sqlalchemy.orm import Session

from bap import governance, market_log, procurement, procurement_engine, signals
from bap.auth_route import GuardedRoute, principal_of, run_audited
from bap.permissions import Role
from bap.policy import PolicyBody
from bap.router import KEY_SCHEMES, aware, error_response, fan_out_of, run_in_session
from bap.service import ClientError
from beckn.webapp import CLIENT_API_RESPONSES
from kernel.celery_app import celery_app
from schemas import limits

orchestrator = APIRouter(
    prefix="/api/v1",
    tags=["grid orchestrator"],
    responses=CLIENT_API_RESPONSES,
    route_class=GuardedRoute,
    dependencies=KEY_SCHEMES,
)
T = TypeVar("T")


def _kick(procurement_id: str) -> None:
    """Ask a worker to move the procurement on now; the beat tick does it anyway within a second."""
    with contextlib.suppress(Exception):  # the broker is restarting: the tick will
        celery_app.send_task("bap.advance_procurement", args=[procurement_id])


class SlotIn(BaseModel):
    start: datetime
    end: datetime
    target_kw: float = Field(ge=0, le=limits.MAX_KW, allow_inf_nan=False)

    _tz = field_validator("start", "end")(aware)


class ProcurementIn(BaseModel):
    slots: list[SlotIn] | None = Field(
        default=None, max_length=limits.MAX_WINDOW_DAYS * 48, description="a target per half-hour slot"
    )
    window_start: datetime | None = Field(default=None, description="or a window and one kW for all of it")
    window_end: datetime | None = None
    power_kw: limits.Kilowatts | None = None
    price_cap_gbp_per_mwh: limits.PositivePriceGbpPerMwh | None = Field(default=None, description="default: policy")
    objective: Literal["cost", "carbon", "cost_plus_carbon"] | None = Field(default=None, description="default: policy")
    national: bool = Field(default=True, description="search every BPP in the country (False: the BAP's city)")

    _tz = field_validator("window_start", "window_end")(aware)

    @model_validator(mode="after")
    def _one_form(self) -> ProcurementIn:
        window = (self.window_start, self.window_end, self.power_kw)
        if (self.slots is None) == all(v is None for v in window):
            raise ValueError("give either slots, or window_start, window_end and power_kw")
        if self.slots is None and any(v is None for v in window):
            raise ValueError("window_start, window_end and power_kw go together")
        return self

    def targets(self) -> tuple[procurement.SlotTarget, ...]:
        if self.slots is not None:
            return tuple(procurement.SlotTarget(s.start, s.end, s.target_kw) for s in self.slots)
        assert self.window_start and self.window_end and self.power_kw
        n = int((self.window_end - self.window_start) / procurement.SLOT)
        if n < 1 or self.window_start + n * procurement.SLOT != self.window_end:
            raise ClientError("window_end - window_start must be a whole number of half-hours")
        return tuple(
            procurement.SlotTarget(
                self.window_start + i * procurement.SLOT, self.window_start + (i + 1) * procurement.SLOT, self.power_kw
            )
            for i in range(min(n, limits.MAX_WINDOW_DAYS * 48 + 1))
        )


async def _create(request: Request, body_targets: Any, new_fields: dict[str, Any], national: bool) -> JSONResponse:
    from kernel.config import get_settings

    settings = get_settings()
    who = principal_of(request)
    city = "" if national else settings.city_code
    expected = await fan_out_of(request, city, settings.country_code)
    me = request.app.state.identity
    try:
        new = procurement.NewProcurement(
            slots=body_targets(),
            expected_bpps=tuple(expected),
            city_code=city,
            country_code=settings.country_code,
            key_id=who.key_id,
            aggregator_id=who.aggregator_id if who.role is Role.AGGREGATOR else None,
            **new_fields,
        )

        def make(s: Session) -> tuple[str, str, bool]:
            p, created = procurement.create(s, new)
            p.request = {**p.request, "gateway_url": request.app.state.gateway_url, "bap_id": me.subscriber_id}
            return p.id, p.status, created

        pid, status, created = await run_audited(request, make, status_code=202)
    except ClientError as exc:
        return error_response(exc, exc.status)
    if created:
        _kick(pid)
    return JSONResponse({"procurement_id": pid, "status": status, "created": created}, status_code=202)


@orchestrator.post("/procurements", summary="Buy a load reduction: a kW target per half-hour", status_code=202)
async def create_procurement(body: ProcurementIn, request: Request) -> JSONResponse:
    fields = {"price_cap_gbp_per_mwh": body.price_cap_gbp_per_mwh, "objective": body.objective, "source": "api"}
    return await _create(request, body.targets, fields, body.national)


@orchestrator.get("/procurements", summary="Procurements, newest first")
async def list_procurements(
    request: Request,
    status: Annotated[str | None, Query(max_length=32, pattern=limits.PRINTABLE_PATTERN)] = None,
    source: Annotated[Literal["api", "openadr", "webhook"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=limits.MAX_PAGE_SIZE)] = 100,
) -> JSONResponse:
    who = principal_of(request)
    mine = who.aggregator_id if who.role is Role.AGGREGATOR else None
    return JSONResponse(
        await run_in_session(
            lambda s: procurement.listing(s, status=status, source=source, aggregator_id=mine, limit=limit)
        )
    )


def _visible(s: Session, request: Request, procurement_id: str) -> procurement.Procurement:
    who = principal_of(request)
    p = procurement.get(s, procurement_id)
    if who.role is Role.AGGREGATOR and p.aggregator_id != who.aggregator_id:
        raise ClientError(f"unknown procurement {procurement_id}", 404)
    return p


@orchestrator.get("/procurements/{procurement_id}", summary="A procurement: slots, orders, costs, its market log")
async def get_procurement(procurement_id: limits.Identifier, request: Request) -> JSONResponse:
    try:
        return JSONResponse(await run_in_session(lambda s: procurement.view(s, _visible(s, request, procurement_id))))
    except ClientError as exc:
        return error_response(exc, exc.status)


class DecisionIn(BaseModel):
    reason: limits.FreeText = ""


def _decision(approve: bool) -> Callable[..., Any]:
    async def endpoint(
        procurement_id: limits.Identifier, request: Request, body: DecisionIn | None = None
    ) -> JSONResponse:
        who = principal_of(request)
        reason = body.reason if body else ""
        try:
            status = await run_audited(
                request,
                lambda s: (
                    procurement.decide(s, procurement_id, approve=approve, key_id=who.key_id, reason=reason).status
                ),
                status_code=200,
            )
        except ClientError as exc:
            return error_response(exc, exc.status)
        _kick(procurement_id)
        return JSONResponse({"procurement_id": procurement_id, "status": status})

    return endpoint


orchestrator.post("/procurements/{procurement_id}/approve", summary="Approve a procurement waiting for approval")(
    _decision(True)
)
orchestrator.post("/procurements/{procurement_id}/reject", summary="Reject a procurement waiting for approval")(
    _decision(False)
)


# -- grid events (webhook) --------------------------------------------------------------------------------------
class GridEventIn(BaseModel):
    event_id: limits.Name
    kind: Literal["DR_EVENT", "P415_REQUEST", "PRICE_SPIKE", "CARBON_PEAK"]
    source: Literal["webhook", "openadr"] = "webhook"
    modification_number: int = Field(default=0, ge=0, le=limits.MAX_SAFE_INTEGER)
    intervals: list[SlotIn] = Field(min_length=1, max_length=limits.MAX_WINDOW_DAYS * 48)
    price_cap_gbp_per_mwh: limits.PositivePriceGbpPerMwh | None = None


@orchestrator.post(
    "/grid-events", summary="A grid event: kW to reduce per half-hour (idempotent on event_id)", status_code=202
)
async def grid_event(body: GridEventIn, request: Request) -> JSONResponse:
    raw = json.dumps(body.model_dump(mode="json"), sort_keys=True).encode()
    event_id = f"{body.event_id}#{body.modification_number}"
    fields = {
        "price_cap_gbp_per_mwh": body.price_cap_gbp_per_mwh,
        "source": body.source,
        "event_id": event_id,
        "event_body": raw,
    }

    default_kw = 0.0
    if body.kind in ("PRICE_SPIKE", "CARBON_PEAK"):  # kW from the policy where the event names none
        default_kw = (await run_in_session(governance.active)).body.signal_events_kw.get(body.kind, 0.0)

    def targets() -> tuple[procurement.SlotTarget, ...]:
        return tuple(procurement.SlotTarget(s.start, s.end, s.target_kw or default_kw) for s in body.intervals)

    if not any(s.target_kw or default_kw for s in body.intervals):
        who = principal_of(request)
        await run_audited(
            request,
            lambda s: market_log.record(
                s,
                "grid_signal",
                f"{body.kind} {body.event_id} heard from key {who.key_id}: the active policy buys nothing for it "
                "(signal_events_kw)",
                procurement_id=None,
                event=body.model_dump(mode="json"),
            ),
            status_code=202,
        )
        return JSONResponse({"procurement_id": None, "status": "recorded", "created": False}, status_code=202)
    return await _create(request, targets, fields, True)


class CancelIn(BaseModel):
    reason: limits.FreeText = Field(default="cancelled by the grid operator", min_length=1)


@orchestrator.post("/grid-events/{event_id}/cancel", summary="A grid event is cancelled: so are its procurements")
async def cancel_grid_event(
    event_id: limits.Name,
    request: Request,
    body: CancelIn | None = None,
    source: Annotated[Literal["webhook", "openadr"], Query()] = "openadr",
) -> JSONResponse:
    reason = body.reason if body else "cancelled by the grid operator"
    ids = await run_audited(request, lambda s: procurement.cancel_event(s, source, event_id, reason), status_code=200)
    for pid in ids:
        _kick(pid)
    return JSONResponse({"event_id": event_id, "procurements": ids})


# -- the kill switch --------------------------------------------------------------------------------------------
class HaltIn(BaseModel):
    reason: limits.FreeText = Field(min_length=1)


@orchestrator.get("/halt", summary="Whether the kill switch is on, since when, who and why")
async def halt_state(request: Request) -> JSONResponse:
    return JSONResponse(await run_in_session(governance.halt_state))


def _switch(halted: bool) -> Callable[..., Any]:
    async def endpoint(body: HaltIn, request: Request) -> JSONResponse:
        who = principal_of(request)
        state = await run_audited(
            request,
            lambda s: governance.set_halt(s, halted=halted, key_id=who.key_id, reason=body.reason),
            status_code=200,
        )
        if halted:  # every procurement still moving halts now (its orders not yet started are cancelled)
            for pid in await run_in_session(procurement_engine.open_ids):
                _kick(pid)
        return JSONResponse(state)

    return endpoint


orchestrator.post("/halt", summary="Kill switch: stop new orders, cancel those not yet started")(_switch(True))
orchestrator.post("/resume", summary="Lift the kill switch")(_switch(False))


# -- policies ---------------------------------------------------------------------------------------------------
class PolicyIn(BaseModel):
    body: PolicyBody
    note: limits.FreeText = ""


class ActivateIn(BaseModel):
    mode: Literal["active", "shadow"] = "active"
    reason: limits.FreeText = ""


@orchestrator.get("/policies", summary="Every policy version; which is active and which runs in shadow")
async def list_policies(request: Request) -> JSONResponse:
    return JSONResponse(await run_in_session(governance.listing))


@orchestrator.get("/policies/active", summary="The active policy")
async def active_policy(request: Request) -> JSONResponse:
    def read(s: Session) -> dict[str, Any]:
        v = governance.active(s)
        return {"version": v.version, **v.body.model_dump(mode="json")}

    return JSONResponse(await run_in_session(read))


@orchestrator.post("/policies", summary="A new policy version (not active until activated)", status_code=201)
async def create_policy(body: PolicyIn, request: Request) -> JSONResponse:
    who = principal_of(request)
    v = await run_audited(
        request, lambda s: governance.create(s, body.body, note=body.note, key_id=who.key_id), status_code=201
    )
    return JSONResponse({"version": v.version, "body": v.body.model_dump(mode="json")}, status_code=201)


@orchestrator.post("/policies/{version}/activate", summary="Make a version active, or run it in shadow mode")
async def activate_policy(
    version: Annotated[int, Field(ge=1, le=2**31 - 1)], body: ActivateIn, request: Request
) -> JSONResponse:
    who = principal_of(request)
    try:
        await run_audited(
            request,
            lambda s: governance.activate(s, version, mode=body.mode, key_id=who.key_id, reason=body.reason),
            status_code=200,
        )
    except governance.GovernanceError as exc:
        return error_response(exc, exc.status)
    return JSONResponse(await run_in_session(governance.listing))


@orchestrator.post("/policies/shadow/end", summary="End shadow mode")
async def end_shadow(body: ActivateIn, request: Request) -> JSONResponse:
    who = principal_of(request)
    await run_audited(
        request, lambda s: governance.end_shadow(s, key_id=who.key_id, reason=body.reason), status_code=200
    )
    return JSONResponse(await run_in_session(governance.listing))


@orchestrator.get("/signals", summary="Grid signals heard: source, latest observations, staleness")
async def signal_status(request: Request) -> JSONResponse:
    return JSONResponse(await run_in_session(signals.status))


# -- logs -------------------------------------------------------------------------------------------------------
def _log_endpoint(name: str) -> Callable[..., Any]:
    async def endpoint(
        request: Request,
        procurement_id: Annotated[limits.Identifier | None, Query()] = None,
        provider_id: Annotated[limits.Name | None, Query()] = None,
        since: Annotated[datetime | None, Query(description="market time, inclusive")] = None,
        until: Annotated[datetime | None, Query(description="market time, exclusive")] = None,
        format: Annotated[Literal["json", "jsonl"], Query()] = "json",
        limit: Annotated[int, Query(ge=1, le=limits.MAX_PAGE_SIZE)] = 1000,
    ) -> Any:
        for label, t in (("since", since), ("until", until)):
            if t is not None and t.tzinfo is None:
                return error_response(ValueError(f"{label}: times must carry a UTC offset"))
        rows = await run_in_session(
            lambda s: market_log.query(
                s,
                log_name=name,
                procurement_id=procurement_id,
                provider_id=provider_id,
                since=since,
                until=until,
                limit=limit,
            )
        )
        if format == "jsonl":
            return PlainTextResponse("".join(market_log.jsonl(rows)), media_type="application/x-ndjson")
        return JSONResponse(rows)

    return endpoint


orchestrator.get("/market-log", summary="The market log: offers seen, choices and reasons, orders, re-procurements")(
    _log_endpoint("market")
)
orchestrator.get("/carbon-log", summary="The carbon log: expected and delivered carbon avoided per order")(
    _log_endpoint("carbon")
)
