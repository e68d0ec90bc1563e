"""BPP HTTP: every hosted platform serves the Beckn actions under its own path
(`<BPP base URL>/<platform slug>/<action>`), all through the one pipeline in beckn/pipeline.py."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, ValidationError
from sqlalchemy import select

from beckn.errors import BecknError
from beckn.webapp import BECKN_RESPONSES, CLIENT_API_RESPONSES
from bpp.agent_service import DecisionQuery, query_decisions
from bpp.book import BookRefused, BookRequest, book, verify_bap
from bpp.models import Order, OrderEvent
from bpp.schedule import check_range
from bpp.schedule_service import NoSchedule, ScheduleQuery, provider_schedule
from bpp.scheduler.conflicts import SchedulingInfeasible
from kernel import clock
from kernel.config import get_settings
from kernel.db import session_scope
from schemas import limits
from schemas.limits import Identifier, Name

router = APIRouter(tags=["beckn"])


@router.post("/{slug}/{action}", summary="Beckn action of one hosted BPP platform", responses=BECKN_RESPONSES)
async def beckn_action(slug: str, action: str, request: Request) -> JSONResponse:
    pipeline = request.app.state.pipeline
    identity = request.app.state.platforms.get(slug)
    if identity is None:  # routing, before the pipeline's steps: no receiver to run them for
        error = BecknError("not_found", f"no BPP platform {slug!r} is hosted here", http_status=404)
        return pipeline.nack(error, step="route")
    return await pipeline.handle(request, action, identity)


@router.get(
    "/{slug}/orders/{order_id}",
    tags=["ops"],
    summary="An order's current state and history",
    responses={k: CLIENT_API_RESPONSES[k] for k in (400, 404)},
)
def get_order(slug: str, order_id: Identifier, request: Request) -> JSONResponse:
    identity = request.app.state.platforms.get(slug)
    with session_scope("bpp") as s:
        order = s.get(Order, order_id)
        if identity is None or order is None or order.bpp_id != identity.subscriber_id:
            return JSONResponse(
                {"error": {"code": "not_found", "message": f"order {order_id} not found"}}, status_code=404
            )
        events = s.scalars(select(OrderEvent).where(OrderEvent.order_id == order_id).order_by(OrderEvent.id)).all()
        return JSONResponse(
            {
                "order_id": order.id,
                "state": order.state,
                "cancelled_by": order.cancelled_by,  # CONSUMER | PROVIDER when CANCELLED (bpp/lifecycle.py)
                "provider_id": order.provider_id,
                "item_id": order.item_id,
                "power_kw": order.power_kw,
                "window_start": order.window_start.isoformat(),
                "window_end": order.window_end.isoformat(),
                "meter_id": order.meter_id,
                "transaction_id": order.transaction_id,
                "bap_id": order.bap_id,
                "events": [
                    {"from": e.from_state, "to": e.to_state, "reason": e.reason, "at": e.at.isoformat()} for e in events
                ],
            }
        )


@router.post(
    "/{slug}/reconciliation/orders",
    tags=["ops"],
    summary="The platform's copy of the signing BAP's orders, for its reconciliation (BECKN-006 signed)",
    responses={k: CLIENT_API_RESPONSES[k] for k in (400, 404)},
)
async def reconciliation_orders(slug: str, request: Request) -> JSONResponse:
    identity = request.app.state.platforms.get(slug)
    if identity is None:
        return JSONResponse({"error": {"code": "not_found", "message": f"no platform {slug!r}"}}, status_code=404)
    try:
        raw = await limits.read_within_limit(request.stream(), request.headers.get("content-length"))
    except limits.BodyTooLarge as exc:
        return JSONResponse({"error": {"code": "too_large", "message": str(exc)}}, status_code=413)
    try:
        req = BookRequest.model_validate_json(raw)
    except ValidationError as exc:
        where = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
        return JSONResponse({"error": {"code": "invalid_request", "message": where}}, status_code=400)

    def answer() -> dict[str, Any]:
        signer = verify_bap(raw, request.headers.get("authorization"))
        with session_scope("bpp") as s:
            return book(s, identity.subscriber_id, signer, req)

    try:
        return JSONResponse(await run_in_threadpool(answer))
    except BookRefused as exc:
        return JSONResponse({"error": {"code": exc.code, "message": str(exc)}}, status_code=exc.status)


@router.get(
    "/{slug}/decisions",
    tags=["ops"],
    summary="The compute agents' decision log, by job and time",
    responses={k: CLIENT_API_RESPONSES[k] for k in (400, 404)},
)
def decisions(slug: str, request: Request, query: Annotated[DecisionQuery, Depends()]) -> JSONResponse:
    identity = request.app.state.platforms.get(slug)
    if identity is None:
        return JSONResponse({"error": {"code": "not_found", "message": f"no platform {slug!r}"}}, status_code=404)
    if not 1 <= query.limit <= 5000:
        return JSONResponse({"error": {"code": "invalid_request", "message": "limit must be 1..5000"}}, status_code=400)
    with session_scope("bpp") as s:
        found = query_decisions(s, identity.subscriber_id, query)
        return JSONResponse(found)


@router.get(
    "/{slug}/providers/{provider_id}/schedule",
    tags=["ops"],
    summary="A provider's load-shift schedule: baseline vs planned kW per plan slot, orders, price and carbon",
    responses={k: CLIENT_API_RESPONSES[k] for k in (400, 404, 409)},
)
def schedule(
    slug: str,
    provider_id: Name,
    request: Request,
    start: Annotated[AwareDatetime | None, Query()] = None,
    end: Annotated[AwareDatetime | None, Query()] = None,
) -> JSONResponse:
    """Both series are the meters' net grid import (bpp/schedule.py): `baseline_kw` with no shifting (compute:
    run-at-release; storage: battery idle), `planned_kw` the optimal plan the offers come from."""
    identity = request.app.state.platforms.get(slug)
    if identity is None:
        return JSONResponse({"error": {"code": "not_found", "message": f"no platform {slug!r}"}}, status_code=404)
    now = clock.now()
    refused = check_range(start, end, now, get_settings().max_window_ahead_days)
    if refused is not None:
        field, reason = refused
        return JSONResponse({"error": {"code": "invalid_request", "message": f"{field}: {reason}"}}, status_code=400)
    query = ScheduleQuery(provider_id=provider_id, start_utc=start, end_utc=end)
    try:
        with session_scope("bpp") as s:
            found = provider_schedule(s, identity.subscriber_id, query, now=now)
    except NoSchedule as exc:
        return JSONResponse({"error": {"code": "not_found", "message": str(exc)}}, status_code=404)
    except SchedulingInfeasible as exc:  # the accepted orders cannot all be met on the current plan: say why
        return JSONResponse({"error": {"code": "infeasible", "message": str(exc)}}, status_code=409)
    return JSONResponse(found.to_dict())
