"""BAP HTTP: the aggregators' client API (/api/v1, documented at /docs) and the Beckn callbacks
(/beckn/on_*), the latter through the one pipeline in beckn/pipeline.py."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal, TypeVar

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, field_validator
from sqlalchemy.orm import Session

from bap import service
from bap.selection import SelectionError
from beckn.tasks import send_delivery
from kernel.config import get_settings
from kernel.db import session_scope
from schemas.flex import FlexRequest

beckn_router = APIRouter(prefix="/beckn", tags=["beckn callbacks"])
api = APIRouter(prefix="/api/v1", tags=["aggregator API"])
T = TypeVar("T")


@beckn_router.post("/{action}", summary="Beckn callback (on_search, on_select, on_init, on_confirm, …)")
async def beckn_callback(action: str, request: Request) -> JSONResponse:
    return await request.app.state.pipeline.handle(request, action, request.app.state.identity)


def _aware(v: datetime | None) -> datetime | None:
    if v is not None and v.tzinfo is None:
        raise ValueError("times must carry a UTC offset, e.g. 2026-11-24T17:00:00Z")
    return v


class SearchIn(BaseModel):
    window_start: datetime = Field(description="Start of the wanted load-reduction window (UTC offset required)")
    window_end: datetime
    power_kw: float = Field(gt=0, description="Load reduction wanted, kW")
    max_price_gbp_per_mwh: float | None = Field(default=None, gt=0)
    region: str | None = Field(default=None, description="NESO region code of the sites, e.g. GB-R13")
    resource_type: Literal["compute", "storage"] | None = None
    city_code: str | None = Field(default=None, description="Beckn routing city (default: FLEXMARKET_CITY)")
    country_code: str | None = None

    _tz = field_validator("window_start", "window_end")(_aware)

    model_config = {
        "json_schema_extra": {
            "example": {
                "window_start": "2026-11-24T16:00:00Z",
                "window_end": "2026-11-24T18:00:00Z",
                "power_kw": 2000,
                "max_price_gbp_per_mwh": 300,
                "region": "GB-R13",
                "resource_type": "compute",
            }
        }
    }


class OrderIn(BaseModel):
    transaction_id: str
    bpp_id: str
    provider_id: str
    item_id: str | None = None
    power_kw: float | None = Field(default=None, gt=0)
    window_start: datetime | None = None
    window_end: datetime | None = None
    meter_id: str | None = None
    settlement_method: Literal["P415", "CFT"] | None = None
    reason: str | None = Field(default=None, description="cancel only: why")

    _tz = field_validator("window_start", "window_end")(_aware)


class PlanIn(BaseModel):
    transaction_id: str
    target_kw: float = Field(gt=0)
    objective: Literal["cost", "carbon", "balanced"] = "cost"
    window_start: datetime | None = Field(default=None, description="default: the searched window")
    window_end: datetime | None = None

    _tz = field_validator("window_start", "window_end")(_aware)


def _error(exc: Exception, status: int = 400) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": "invalid_request" if status < 500 else "error", "message": str(exc)}}, status_code=status
    )


async def _run(fn: Callable[[Session], T]) -> T:
    def work() -> T:
        with session_scope("bap") as s:
            return fn(s)

    return await run_in_threadpool(work)


@api.post("/search", summary="Search the network for flexibility", status_code=202)
async def search(body: SearchIn, request: Request) -> JSONResponse:
    settings = get_settings()
    me = request.app.state.identity
    req = FlexRequest(
        body.window_start, body.window_end, body.power_kw, body.max_price_gbp_per_mwh, body.region, body.resource_type
    )
    try:
        sent = await _run(
            lambda s: service.search(
                s,
                me,
                req,
                gateway_url=request.app.state.gateway_url,
                city_code=body.city_code or settings.city_code,
                country_code=body.country_code or settings.country_code,
            )
        )
    except service.ClientError as exc:
        return _error(exc, exc.status)
    send_delivery("bap", [sent.outbox_id])
    return JSONResponse({"transaction_id": sent.transaction_id, "message_id": sent.message_id}, status_code=202)


def _order_endpoint(action: str) -> Callable[..., Any]:
    async def endpoint(body: OrderIn, request: Request) -> JSONResponse:
        me = request.app.state.identity
        r = service.OrderRequest(**body.model_dump())
        try:
            sent = await _run(lambda s: service.order_action(s, me, action, r))
        except service.ClientError as exc:
            return _error(exc, exc.status)
        send_delivery("bap", [sent.outbox_id])
        return JSONResponse({"transaction_id": sent.transaction_id, "message_id": sent.message_id}, status_code=202)

    endpoint.__name__ = action
    return endpoint


for _action, _summary in [
    ("select", "Ask a provider for a quote"),
    ("init", "Initialise an order (draft with meter and window)"),
    ("confirm", "Confirm an initialised order"),
    ("status", "Ask for an order's current state"),
    ("cancel", "Cancel an order before its window opens"),
    ("update", "Change an order's kW or window"),
]:
    api.add_api_route(f"/{_action}", _order_endpoint(_action), methods=["POST"], summary=_summary, status_code=202)


@api.get("/transactions/{transaction_id}", summary="A transaction: offers, orders, callbacks, deliveries")
async def transaction(transaction_id: str) -> JSONResponse:
    try:
        return JSONResponse(await _run(lambda s: service.transaction_view(s, transaction_id)))
    except service.ClientError as exc:
        return _error(exc, exc.status)


@api.post("/plan", summary="Cheapest / lowest-carbon set of received offers meeting a kW target")
async def plan(body: PlanIn) -> JSONResponse:
    try:
        choices = await _run(
            lambda s: service.plan(
                s,
                body.transaction_id,
                target_kw=body.target_kw,
                objective=body.objective,
                start=body.window_start,
                end=body.window_end,
            )
        )
    except service.ClientError as exc:
        return _error(exc, exc.status)
    except SelectionError as exc:
        return _error(exc, 422)
    return JSONResponse(
        {
            "transaction_id": body.transaction_id,
            "target_kw": body.target_kw,
            "choices": [
                {
                    "bpp_id": c.key[0],
                    "provider_id": c.key[1],
                    "item_id": c.key[2],
                    "power_kw": c.power_kw,
                    "price_gbp_per_mwh": c.price_gbp_per_mwh,
                }
                for c in choices
            ],
        }
    )


@api.get("/deliveries/failed", summary="Outbound messages that could not be delivered within their TTL")
async def failed_deliveries() -> JSONResponse:
    return JSONResponse(await _run(service.delivery_failures))
