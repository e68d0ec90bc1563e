"""The BPP's admin API: data centres join and leave a running BPP platform (`flexmarket provider join` /
`leave`), no restart; and a provider cancels one of its orders (`POST /admin/{slug}/orders/{order_id}/cancel`).

Every route needs ``Authorization: Bearer <FLEXMARKET_BPP_ADMIN_TOKEN>``: 401 without credentials, 403 with
wrong ones, 403 for every request when the BPP has no admin token configured. A joined provider is kept in
``bpp.joined_providers`` and hosted again after a restart; its agent plans at once and its offers are in the
next search. Leaving withdraws its offers (a later select of one is refused: the offer is inactive) and keeps
its orders, which go on to settle.

A provider's cancellation follows the Beckn cancel's rule (bpp/lifecycle.py `CANCELLABLE_STATES`, before the
window opens; 409 otherwise, 404 for an order the platform does not hold): the order becomes CANCELLED by the
PROVIDER with its reason, and the buyer hears it in an unsolicited signed `on_cancel` (`cancellation.cancelled_by`
PROVIDER), on which it cancels the order on the ledger too (bap/ledger_registration.py `ledger_process`).
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import structlog
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from beckn.tasks import send_delivery
from beckn.webapp import CLIENT_API_RESPONSES
from bpp import lifecycle, service
from bpp.catalog import PlatformConfig, ProviderConfig
from bpp.models import JoinedProvider, Offer, Order, Provider
from bpp.provider_file import ProviderFileError, parse_provider, without_notes
from kernel import clock
from kernel.config import get_settings
from kernel.db import session_scope
from schemas import limits
from schemas.flex import FlexOfferSpec
from schemas.limits import Identifier

log = structlog.get_logger(__name__)

OPEN_STATES = ("CREATED", "ACCEPTED", "IN-PROGRESS")
MAX_REASON_CHARS = 200


class AdminRefused(Exception):
    """A request the admin API answers with a 4xx: `status`, a machine `code` and a message naming the field."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


# -- use cases ------------------------------------------------------------------------------------
def join(session: Session, platform: PlatformConfig, data: dict[str, Any], now: datetime) -> list[FlexOfferSpec]:
    """Host the provider `data` describes (a provider file) on `platform`, or replace the config of one that
    joined before: its agent plans from `now`, its offers are published, its earlier ones not re-published
    are withdrawn. Refused (nothing written) if the file is invalid or the providers file owns that id."""
    try:
        provider = parse_provider(data)
    except ProviderFileError as exc:
        raise AdminRefused(400, "invalid_request", str(exc)) from None
    if platform.provider(provider.id) is not None:
        raise AdminRefused(409, "conflict", f"id: provider {provider.id!r} is in this BPP's providers file")
    try:
        offers = service.sync_provider(session, platform.subscriber_id, provider)
    except (KeyError, TypeError, ValueError) as exc:  # what the planner found wrong with the agent config
        raise AdminRefused(422, "invalid_agent", f"agent: {exc}") from None
    published = [o.item_id for o in offers]
    session.execute(
        update(Offer)
        .where(Offer.bpp_id == platform.subscriber_id, Offer.provider_id == provider.id, Offer.active)
        .where(Offer.item_id.not_in(published))
        .values(active=False, withdrawn_at=now, withdrawn_reason="its provider's new config no longer offers it")
    )
    values = {"config": without_notes(data), "joined_at": now, "left_at": None}
    session.execute(
        insert(JoinedProvider)
        .values(bpp_id=platform.subscriber_id, provider_id=provider.id, **values)
        .on_conflict_do_update(index_elements=["bpp_id", "provider_id"], set_=values)
    )
    log.info("provider joined", bpp_id=platform.subscriber_id, provider=provider.id, offers=len(offers))
    return offers


@dataclass(frozen=True)
class Departure:
    provider_id: str
    withdrawn_offers: int
    open_orders: int


def leave(session: Session, platform: PlatformConfig, provider_id: str, now: datetime) -> Departure:
    """Withdraw a joined provider's offers; its orders stay and settle. 404 for a provider that is not hosted
    through the admin API (409 for one of the providers file)."""
    row = session.get(JoinedProvider, (platform.subscriber_id, provider_id), with_for_update=True)
    if row is None or row.left_at is not None:
        if platform.provider(provider_id) is not None:
            raise AdminRefused(
                409, "conflict", f"provider_id: {provider_id!r} is in the providers file; remove it there"
            )
        raise AdminRefused(404, "not_found", f"provider_id: no joined provider {provider_id!r} on this platform")
    row.left_at = now
    withdrawn = session.execute(
        update(Offer)
        .where(Offer.bpp_id == platform.subscriber_id, Offer.provider_id == provider_id, Offer.active)
        .values(active=False, withdrawn_at=now, withdrawn_reason=f"provider {provider_id} left the platform")
        .returning(Offer.item_id)
    ).all()
    open_orders = session.scalar(
        select(func.count())
        .select_from(Order)
        .where(Order.bpp_id == platform.subscriber_id, Order.provider_id == provider_id, Order.state.in_(OPEN_STATES))
    )
    log.info("provider left", bpp_id=platform.subscriber_id, provider=provider_id, withdrawn_offers=withdrawn)
    return Departure(provider_id, len(withdrawn), int(open_orders or 0))


@dataclass(frozen=True)
class ProviderCancellation:
    order_id: str
    reason: str
    outbox_id: int  # the on_cancel to the buyer, delivered once committed


def cancel_order(
    session: Session, platform: PlatformConfig, order_id: str, reason: str, now: datetime
) -> ProviderCancellation:
    """The provider cancels `order_id`: CANCELLED by the PROVIDER with `reason`, and an unsolicited on_cancel queued
    for the buyer.
    404 for an order `platform` does not hold; 409 past CREATED/ACCEPTED or once its window has opened."""
    order = session.get(Order, order_id, with_for_update=True)
    if order is None or order.bpp_id != platform.subscriber_id:
        raise AdminRefused(404, "not_found", f"order_id: no order {order_id!r} on this platform")
    if order.state not in lifecycle.CANCELLABLE_STATES:
        raise AdminRefused(
            409, "conflict", f"order_id: order {order_id} is {order.state}; only CREATED or ACCEPTED can be cancelled"
        )
    if now >= order.window_start:
        raise AdminRefused(
            409, "conflict", f"order_id: order {order_id}'s window opened at {order.window_start.isoformat()}"
        )
    lifecycle.cancel(session, order, by="PROVIDER", reason=reason, now=now)
    outbox_id = lifecycle.announce_cancellation(session, order)
    log.info("provider cancelled an order", bpp_id=platform.subscriber_id, order_id=order_id, reason=reason)
    return ProviderCancellation(order_id, reason, outbox_id)


def cancellation_reason(data: dict[str, Any]) -> str:
    """The body's `reason`: a non-empty string of at most MAX_REASON_CHARS characters."""
    reason = data.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise AdminRefused(400, "invalid_request", "reason: a non-empty string is required")
    if len(reason) > MAX_REASON_CHARS:
        raise AdminRefused(400, "invalid_request", f"reason: at most {MAX_REASON_CHARS} characters")
    return reason.strip()


def joined_providers(session: Session, platform: PlatformConfig) -> list[ProviderConfig]:
    """The providers that joined `platform` and have not left (hosted again at start-up beside the file's)."""
    rows = session.scalars(
        select(JoinedProvider)
        .where(JoinedProvider.bpp_id == platform.subscriber_id, JoinedProvider.left_at.is_(None))
        .order_by(JoinedProvider.provider_id)
    )
    return [parse_provider(r.config) for r in rows if platform.provider(r.provider_id) is None]


def hosted(session: Session, platform: PlatformConfig) -> PlatformConfig:
    """Every provider `platform` hosts now: the providers file's and those that joined and have not left. Whatever
    re-syncs a platform's catalog (start-up, a re-plan) passes this to `service.sync_platform`, which withdraws
    the offers of any provider it is not given."""
    return replace(platform, providers=platform.providers + tuple(joined_providers(session, platform)))


def listing(session: Session, platform: PlatformConfig) -> list[dict[str, Any]]:
    active = (
        select(Offer.provider_id, func.count())
        .where(Offer.bpp_id == platform.subscriber_id, Offer.active)
        .group_by(Offer.provider_id)
    )
    offers = dict(session.execute(active).tuples().all())
    anchors = {
        r.provider_id: r.agent_anchor_utc
        for r in session.scalars(select(Provider).where(Provider.bpp_id == platform.subscriber_id))
    }
    file_rows = [{"provider_id": p.id, "source": "providers_file"} for p in platform.providers]
    joined = session.scalars(select(JoinedProvider).where(JoinedProvider.bpp_id == platform.subscriber_id))
    joined_rows = [
        {
            "provider_id": r.provider_id,
            "source": "joined",
            "joined_at": r.joined_at.isoformat(),
            "left_at": r.left_at.isoformat() if r.left_at else None,
        }
        for r in joined
    ]

    def planned_from(provider_id: str) -> str | None:  # where the agent's current plan starts (None: no agent)
        anchor = anchors.get(provider_id)
        return anchor.isoformat() if anchor else None

    return [
        {
            **r,
            "active_offers": offers.get(str(r["provider_id"]), 0),
            "plan_start_utc": planned_from(str(r["provider_id"])),
        }
        for r in file_rows + joined_rows
    ]


# -- HTTP -----------------------------------------------------------------------------------------
router = APIRouter(prefix="/admin", tags=["admin"])
ADMIN_RESPONSES: dict[int | str, dict[str, Any]] = {
    k: CLIENT_API_RESPONSES[k] for k in (400, 401, 403, 404, 409, 413, 422)
}


def _error(status: int, code: str, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="flexmarket-bpp-admin"'} if status == 401 else None
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _authorise(request: Request, slug: str) -> PlatformConfig:
    """The platform the request may administer, or AdminRefused (401/403/404)."""
    expected = get_settings().bpp_admin_token
    scheme, _, given = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise AdminRefused(401, "unauthorized", "Authorization: Bearer <admin token> is required")
    if not expected:
        raise AdminRefused(403, "forbidden", "this BPP has no admin token configured (FLEXMARKET_BPP_ADMIN_TOKEN)")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise AdminRefused(403, "forbidden", "the admin token is not valid")
    platform: PlatformConfig | None = request.app.state.platform_configs.get(slug)
    if platform is None:
        raise AdminRefused(404, "not_found", f"slug: no BPP platform {slug!r} is hosted here")
    return platform


@router.post(
    "/{slug}/providers", status_code=201, summary="A data centre joins this platform", responses=ADMIN_RESPONSES
)
async def join_route(slug: str, request: Request) -> JSONResponse:
    try:
        platform = _authorise(request, slug)
        raw = await limits.read_within_limit(request.stream(), request.headers.get("content-length"))
        data = _json_object(raw)

        def run() -> list[FlexOfferSpec]:
            with session_scope("bpp") as s:
                return join(s, platform, data, clock.now())

        offers = await run_in_threadpool(run)
    except AdminRefused as exc:
        return _error(exc.status, exc.code, str(exc))
    except limits.BodyTooLarge as exc:
        return _error(413, "too_large", str(exc))
    body = {"provider_id": data["id"], "platform": slug, "offers": [_offer_summary(o) for o in offers]}
    return JSONResponse(body, status_code=201)


def _json_object(raw: bytes, what: str = "a provider file") -> dict[str, Any]:
    problem = limits.depth_error(raw)
    if problem:
        raise AdminRefused(400, "invalid_request", problem)
    try:
        data = json.loads(raw, parse_constant=_not_a_number)
    except ValueError as exc:
        raise AdminRefused(400, "invalid_request", f"(body): not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise AdminRefused(400, "invalid_request", f"(body): must be {what} (a JSON object)")
    return data


def _not_a_number(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _offer_summary(o: FlexOfferSpec) -> dict[str, Any]:
    return {
        "item_id": o.item_id,
        "location_id": o.location_id,
        "resource_type": o.resource_type,
        "window_start": o.window_start.isoformat(),
        "window_end": o.window_end.isoformat(),
        "available_kw": o.available_kw,
        "min_kw": o.min_kw,
        "max_kw": o.max_kw,
        "price_gbp_per_mwh": o.price_gbp_per_mwh,
    }


@router.delete(
    "/{slug}/providers/{provider_id}", summary="A joined data centre leaves this platform", responses=ADMIN_RESPONSES
)
def leave_route(slug: str, provider_id: Identifier, request: Request) -> JSONResponse:
    try:
        platform = _authorise(request, slug)
        with session_scope("bpp") as s:
            gone = leave(s, platform, provider_id, clock.now())
    except AdminRefused as exc:
        return _error(exc.status, exc.code, str(exc))
    return JSONResponse(
        {"provider_id": gone.provider_id, "withdrawn_offers": gone.withdrawn_offers, "open_orders": gone.open_orders}
    )


@router.get("/{slug}/providers", summary="The platform's providers and their active offers", responses=ADMIN_RESPONSES)
def list_route(slug: str, request: Request) -> JSONResponse:
    try:
        platform = _authorise(request, slug)
    except AdminRefused as exc:
        return _error(exc.status, exc.code, str(exc))
    with session_scope("bpp") as s:
        return JSONResponse(listing(s, platform))


@router.post(
    "/{slug}/orders/{order_id}/cancel",
    summary="The provider cancels an order before its window opens; the buyer hears a signed on_cancel",
    responses=ADMIN_RESPONSES,
)
async def cancel_route(slug: str, order_id: Identifier, request: Request) -> JSONResponse:
    try:
        platform = _authorise(request, slug)
        raw = await limits.read_within_limit(request.stream(), request.headers.get("content-length"))
        reason = cancellation_reason(_json_object(raw, 'an object with "reason"'))

        def run() -> ProviderCancellation:
            with session_scope("bpp") as s:
                return cancel_order(s, platform, order_id, reason, clock.now())

        done = await run_in_threadpool(run)
    except AdminRefused as exc:
        return _error(exc.status, exc.code, str(exc))
    except limits.BodyTooLarge as exc:
        return _error(413, "too_large", str(exc))
    try:
        send_delivery("bpp", [done.outbox_id])
    except Exception as exc:  # the broker is down: the outbox sweep delivers it later
        log.warning("on_cancel delivery not enqueued", outbox_id=done.outbox_id, error=str(exc))
    return JSONResponse({"order_id": done.order_id, "state": "CANCELLED", "reason": done.reason})
