"""BAP HTTP: the aggregators' client API (/api/v1, documented at /docs) and the Beckn callbacks
(/beckn/on_*), the latter through the one pipeline in beckn/pipeline.py.

Every /api/v1 route runs behind bap/auth_route.py `GuardedRoute` (API key, the permission table in
bap/permissions.py, the audit log in bap/audit.py). Endpoints that change state do their work through
`run_audited`, so the audit row commits with the change. An aggregator's key sees and acts on only the
transactions it started (`_visible`), and its lists hold only those."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar

import structlog
from fastapi import APIRouter, Query, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy.orm import Session

from bap import audit, reconcile, service, token_market, tokens
from bap import failures as failure_log
from bap.auth import Principal, may_see
from bap.auth_route import GuardedRoute, principal_of, run_audited
from bap.backpressure import SEARCHES
from bap.permissions import Role
from bap.selection import SelectionError
from beckn.envelope import DOMAIN
from beckn.tasks import send_delivery
from beckn.webapp import BECKN_RESPONSES, CLIENT_API_RESPONSES
from kernel import clock
from kernel.config import get_settings
from kernel.db import session_scope
from schemas import limits
from schemas.flex import FlexRequest

log = structlog.get_logger(__name__)
beckn_router = APIRouter(prefix="/beckn", tags=["beckn callbacks"], responses=BECKN_RESPONSES)
# The two ways to present a key, declared so /docs offers them; GuardedRoute does the checking.
KEY_SCHEMES = [
    Security(HTTPBearer(auto_error=False, description="Authorization: Bearer fmb_…")),
    Security(APIKeyHeader(name="X-API-Key", auto_error=False, description="the same key, as X-API-Key")),
]
api = APIRouter(
    prefix="/api/v1",
    tags=["aggregator API"],
    responses=CLIENT_API_RESPONSES,
    route_class=GuardedRoute,
    dependencies=KEY_SCHEMES,
)
T = TypeVar("T")


@beckn_router.post("/{action}", summary="Beckn callback (on_search, on_select, on_init, on_confirm, …)")
async def beckn_callback(action: str, request: Request) -> JSONResponse:
    return await request.app.state.pipeline.handle(request, action, request.app.state.identity)


def aware(v: datetime | None) -> datetime | None:
    if v is not None and v.tzinfo is None:
        raise ValueError("times must carry a UTC offset, e.g. 2026-11-24T17:00:00Z")
    return v


def _window_refusal(start: datetime | None, end: datetime | None) -> str | None:
    """`field: reason` when a window to trade is out of the market clock's reach (schemas/limits.py)."""
    if start is None or end is None:
        return None
    refused = limits.check_market_window(start, end, clock.now(), get_settings().max_window_ahead_days)
    return None if refused is None else f"{refused[0]}: {refused[1]}"


def _search_example() -> dict[str, Any]:
    """The /docs example: tomorrow's 16:00-18:00 UTC by the market clock, so it is always a valid window."""
    day = (clock.now() + timedelta(days=1)).date().isoformat()
    return {
        "window_start": f"{day}T16:00:00Z",
        "window_end": f"{day}T18:00:00Z",
        "power_kw": 2000,
        "max_price_gbp_per_mwh": 300,
        "region": "GB-R13",
        "resource_type": "compute",
    }


class SearchIn(BaseModel):
    window_start: datetime = Field(description="Start of the wanted load-reduction window (UTC offset required)")
    window_end: datetime
    power_kw: limits.Kilowatts = Field(description="Load reduction wanted, kW (at most 1,000,000)")
    max_price_gbp_per_mwh: limits.PositivePriceGbpPerMwh | None = None
    region: limits.Identifier | None = Field(default=None, description="NESO region code of the sites, e.g. GB-R13")
    resource_type: Literal["compute", "storage"] | None = None
    city_code: limits.Identifier | None = Field(
        default=None, description="Beckn routing city (default: FLEXMARKET_CITY)"
    )
    country_code: limits.CountryCode | None = None
    national: bool = Field(
        default=False, description="search the whole country (no city): every BPP subscribed in it answers"
    )

    _tz = field_validator("window_start", "window_end")(aware)

    @model_validator(mode="after")
    def _in_reach(self) -> SearchIn:
        refused = _window_refusal(self.window_start, self.window_end)
        if refused:
            raise ValueError(refused)
        return self

    model_config = {"json_schema_extra": lambda schema: schema.update(example=_search_example())}


class OrderIn(BaseModel):
    transaction_id: limits.Identifier
    bpp_id: limits.Name
    provider_id: limits.Name
    item_id: limits.Name | None = None
    power_kw: limits.Kilowatts | None = None
    window_start: datetime | None = None
    window_end: datetime | None = None
    meter_id: limits.Name | None = None
    settlement_method: Literal["P415", "CFT"] | None = None
    reason: limits.FreeText | None = Field(default=None, description="cancel only: why")

    _tz = field_validator("window_start", "window_end")(aware)


class PlanIn(BaseModel):
    transaction_id: limits.Identifier
    target_kw: limits.Kilowatts
    objective: Literal["cost", "carbon", "balanced"] = "cost"
    window_start: datetime | None = Field(default=None, description="default: the searched window")
    window_end: datetime | None = None

    _tz = field_validator("window_start", "window_end")(aware)


def error_response(exc: Exception, status: int = 400) -> JSONResponse:
    code = getattr(exc, "code", None) or ("invalid_request" if status < 500 else "error")
    return JSONResponse({"error": {"code": code, "message": str(exc)}}, status_code=status)


class NotYourTransaction(service.ClientError):
    code = "not_your_transaction"

    def __init__(self, transaction_id: str) -> None:
        super().__init__(f"transaction {transaction_id} was started by another aggregator", 403)


def _visible(session: Session, who: Principal, transaction_id: str) -> None:
    """Refuses (403) an aggregator's key on another aggregator's transaction; an unknown one is left to the
    endpoint (404)."""
    if not may_see(session, who, transaction_id):
        raise NotYourTransaction(transaction_id)


async def run_in_session(fn: Callable[[Session], T]) -> T:
    def work() -> T:
        with session_scope("bap") as s:
            return fn(s)

    return await run_in_threadpool(work)


def _deliver_soon(outbox_id: int) -> None:
    """Ask a worker to send the committed outbox row now. If the broker is unreachable (Redis restarting) the
    request still succeeded: the row is in the outbox and the beat sweep sends it once Redis is back."""
    try:
        send_delivery("bap", [outbox_id])
    except Exception:
        log.warning("could not enqueue delivery; the outbox sweep will send it", outbox_id=outbox_id)


async def fan_out_of(request: Request, city_code: str, country_code: str) -> list[str]:
    """The BPPs a search in this city reaches (the gateway's rule; the registry answer is cached). When the
    registry cannot be asked, none: the search then counts only toward its own acceptance."""
    registry = request.app.state.registry
    try:
        rows = await registry.subscribers(
            request.app.state.http, type="BPP", domain=DOMAIN, city=city_code or None, country=country_code
        )
    except Exception:  # the registry is down: accept without tracking rather than refuse
        return []
    return [r["subscriber_id"] for r in rows]


@api.post("/search", summary="Search the network for flexibility", status_code=202)
async def search(body: SearchIn, request: Request) -> JSONResponse:
    settings = get_settings()
    me = request.app.state.identity
    req = FlexRequest(
        body.window_start, body.window_end, body.power_kw, body.max_price_gbp_per_mwh, body.region, body.resource_type
    )
    city_code = "" if body.national else (body.city_code or settings.city_code)
    country_code = body.country_code or settings.country_code
    # Backpressure (bap/backpressure.py): a bounded number of searches in flight, 429 beyond it.
    retry_after = SEARCHES.reserve()
    if retry_after is not None:
        return JSONResponse(
            {
                "error": {
                    "code": "busy",
                    "message": f"{SEARCHES.limit} searches are in flight, the most this BAP accepts; retry later",
                }
            },
            status_code=429,
            headers={"Retry-After": str(retry_after)},
        )
    who = principal_of(request)
    try:
        expected = await fan_out_of(request, city_code, country_code)
        sent = await run_audited(
            request,
            lambda s: service.search(
                s,
                me,
                req,
                gateway_url=request.app.state.gateway_url,
                city_code=city_code,
                country_code=country_code,
                aggregator_id=who.aggregator_id,
            ),
            status_code=202,
            transaction_of=lambda sent: sent.transaction_id,
        )
    except service.ClientError as exc:
        SEARCHES.release()
        return error_response(exc, exc.status)
    except BaseException:
        SEARCHES.release()
        raise
    SEARCHES.opened(sent.transaction_id, expected)
    _deliver_soon(sent.outbox_id)
    return JSONResponse({"transaction_id": sent.transaction_id, "message_id": sent.message_id}, status_code=202)


_BOOKING = frozenset({"select", "init", "confirm", "update"})  # a window given with these must be in reach


def _order_endpoint(action: str) -> Callable[..., Any]:
    async def endpoint(body: OrderIn, request: Request) -> JSONResponse:
        me = request.app.state.identity
        refused = _window_refusal(body.window_start, body.window_end) if action in _BOOKING else None
        if refused:
            return error_response(ValueError(refused), 400)
        r = service.OrderRequest(**body.model_dump())
        who = principal_of(request)

        def act(s: Session) -> service.Sent:
            _visible(s, who, r.transaction_id)
            return service.order_action(s, me, action, r)

        try:
            sent = await run_audited(request, act, status_code=202)
        except service.ClientError as exc:
            return error_response(exc, exc.status)
        _deliver_soon(sent.outbox_id)
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
async def transaction(transaction_id: limits.Identifier, request: Request) -> JSONResponse:
    who = principal_of(request)

    def view(s: Session) -> dict[str, Any]:
        _visible(s, who, transaction_id)
        return service.transaction_view(s, transaction_id)

    try:
        return JSONResponse(await run_in_session(view))
    except service.ClientError as exc:
        return error_response(exc, exc.status)


@api.post("/plan", summary="Cheapest / lowest-carbon set of received offers meeting a kW target")
async def plan(body: PlanIn, request: Request) -> JSONResponse:
    who = principal_of(request)

    def choose(s: Session) -> list[Any]:
        _visible(s, who, body.transaction_id)
        return service.plan(
            s,
            body.transaction_id,
            target_kw=body.target_kw,
            objective=body.objective,
            start=body.window_start,
            end=body.window_end,
        )

    try:
        choices = await run_audited(request, choose, status_code=200)
    except service.ClientError as exc:
        return error_response(exc, exc.status)
    except SelectionError as exc:
        return error_response(exc, 422)
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


@api.get("/failures", summary="Accepted actions that failed: refused, failed at the receiver, or undeliverable")
async def failures(request: Request, transaction_id: limits.Identifier | None = None) -> JSONResponse:
    who = principal_of(request)

    def listed(s: Session) -> list[dict[str, Any]]:
        if transaction_id is not None:
            _visible(s, who, transaction_id)
        return failure_log.failures(s, transaction_id, aggregator_id=_only_own(who))

    try:
        return JSONResponse(await run_in_session(listed))
    except service.ClientError as exc:
        return error_response(exc, exc.status)


@api.get("/deliveries/failed", summary="Outbound messages that could not be delivered within their TTL")
async def failed_deliveries(request: Request) -> JSONResponse:
    who = principal_of(request)
    return JSONResponse(await run_in_session(lambda s: failure_log.delivery_failures(s, aggregator_id=_only_own(who))))


def _only_own(who: Principal) -> str | None:
    """The aggregator whose transactions a list is limited to; None: every transaction."""
    return who.aggregator_id if who.role is Role.AGGREGATOR else None


@api.get("/audit", summary="The audit log: state-changing and refused calls, newest first (operator keys only)")
async def audit_log(
    key_id: Annotated[limits.Identifier | None, Query(description="only this key's calls")] = None,
    outcome: Annotated[audit.Outcome | None, Query(description="ok, unauthenticated, forbidden, …")] = None,
    since: Annotated[datetime | None, Query(description="wall time, inclusive (UTC offset required)")] = None,
    until: Annotated[datetime | None, Query(description="wall time, exclusive (UTC offset required)")] = None,
    before_id: Annotated[int | None, Query(ge=1, le=limits.MAX_SAFE_INTEGER, description="next page")] = None,
    limit: Annotated[int, Query(ge=1, le=limits.MAX_PAGE_SIZE)] = 100,
) -> JSONResponse:
    for name, t in (("since", since), ("until", until)):
        if t is not None and t.tzinfo is None:
            return error_response(ValueError(f"{name}: times must carry a UTC offset, e.g. 2026-11-24T17:00:00Z"))
    q = audit.AuditQuery(key_id, outcome, since, until, before_id, limit)
    return JSONResponse(await run_in_session(lambda s: audit.page(s, q)))


# -- reconciliation of the three books (bap/reconcile.py) -----------------------------------------------------
class ReconcileIn(BaseModel):
    transaction_id: limits.Identifier | None = Field(
        default=None, description="compare only this transaction's orders (default: every order)"
    )


@api.post("/reconciliation/run", summary="Compare every order across the BAP, the BPP and the ledger now")
async def reconciliation_run(request: Request, body: ReconcileIn | None = None) -> JSONResponse:
    """Runs one reconciliation and answers its report: the orders compared, each difference between the books
    (also kept as alerts) and each book that could not be read (`unreadable`; its orders are left out)."""
    me = request.app.state.identity
    tx = body.transaction_id if body else None
    report = await run_in_threadpool(lambda: reconcile.run(me, transaction_id=tx))
    return JSONResponse(report.as_json())


@api.get("/reconciliation/alerts", summary="Differences between the books found by reconciliation")
async def reconciliation_alerts(
    status: Annotated[Literal["open", "resolved", "all"], Query(description="open, resolved or all")] = "open",
    transaction_id: Annotated[limits.Identifier | None, Query(description="only this transaction's")] = None,
    after: Annotated[int | None, Query(ge=0, le=limits.MAX_SAFE_INTEGER, description="next page: ids after")] = None,
    limit: Annotated[int, Query(ge=1, le=limits.MAX_PAGE_SIZE)] = 100,
) -> JSONResponse:
    return JSONResponse(
        await run_in_session(
            lambda s: reconcile.list_alerts(s, status=status, transaction_id=transaction_id, after=after, limit=limit)
        )
    )


class TokenBuyIn(BaseModel):
    transaction_id: limits.Identifier = Field(description="the search whose catalog listed the series")
    bpp_id: limits.Name
    provider_id: limits.Name
    series_id: limits.Name
    tokens: int = Field(gt=0, le=1_000_000, description="whole tokens (1 token = 1 MWh of callable reduction)")


@api.post("/tokens/buy", summary="Buy Compute Flex Tokens: select → init → confirm, each sent on the last answer")
async def buy_tokens(body: TokenBuyIn, request: Request) -> JSONResponse:
    me = request.app.state.identity
    who = principal_of(request)
    r = tokens.Buy(body.transaction_id, body.bpp_id, body.provider_id, body.series_id, body.tokens)

    def act(s: Session) -> dict[str, Any]:
        _visible(s, who, r.transaction_id)
        order = tokens.buy(s, me.subscriber_id, me.url, r)
        s.flush()
        return {"transaction_id": order.transaction_id, "message_id": order.message_id, **tokens.order_json(order)}

    try:
        return JSONResponse(await run_audited(request, act, status_code=202), status_code=202)
    except (service.ClientError, tokens.TokenClientError) as exc:
        return error_response(exc, exc.status)


@api.get("/tokens", summary="The Compute Flex Tokens this BAP holds, per series, as the ledger states them")
async def held_tokens(request: Request) -> JSONResponse:
    try:
        return JSONResponse({"holdings": await run_in_session(tokens.holdings_view)})
    except tokens.TokenClientError as exc:
        return error_response(exc, exc.status)
    except RuntimeError as exc:
        return error_response(exc, 502)


# -- the tokens' secondary market on the ledger (bap/token_market.py) ---------------------------------------------
MAX_TOKENS_PER_CALL = 1_000_000
WholeTokens = Annotated[int, Field(gt=0, le=MAX_TOKENS_PER_CALL, description="whole tokens (1 token = 1 MWh)")]
PricePerToken = Annotated[
    Decimal,
    Field(
        gt=0,
        le=Decimal(int(limits.MAX_PRICE_GBP_PER_MWH)),  # a token is 1 MWh
        decimal_places=2,
        allow_inf_nan=False,
        description="GBP per token, at most 2 decimal places",
    ),
]


class ListingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    listing_id: limits.Name | None = Field(default=None, description="idempotency: the same listing again is 200")
    series_id: limits.Name
    tokens: WholeTokens
    price_gbp_per_token: PricePerToken


class ListingBuyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tokens: WholeTokens
    purchase_id: limits.Name | None = Field(default=None, description="idempotency: the same purchase again is 200")


class TokenTransferIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to_id: limits.Name = Field(description="the participant (BAP or provider) receiving the tokens")
    series_id: limits.Name
    tokens: WholeTokens
    transfer_id: limits.Name | None = Field(default=None, description="idempotency: the same transfer again is 200")


async def _market_write(request: Request, call: Callable[[], token_market.Answer]) -> JSONResponse:
    """One write on the ledger's market, then its audit row; a refusal answers as the ledger gave it (its audit
    row is written by GuardedRoute)."""
    try:
        status, body = await run_in_threadpool(call)
    except token_market.MarketRefusal as exc:
        return error_response(exc, exc.status)
    await run_audited(request, lambda _: None, status_code=status)
    return JSONResponse(body, status_code=status)


@api.get("/tokens/listings", summary="Compute Flex Token listings on the ledger's market, cheapest first")
async def token_listings(
    series_id: Annotated[limits.Name | None, Query(description="only this series'")] = None,
    seller_id: Annotated[limits.Name | None, Query(description="only this seller's")] = None,
    state: Annotated[Literal["open", "all"], Query(description="open (default) or all")] = "open",
    limit: Annotated[int, Query(ge=1, le=limits.MAX_PAGE_SIZE)] = 100,
) -> JSONResponse:
    try:
        _, body = await run_in_threadpool(
            lambda: token_market.listings(series_id=series_id, seller_id=seller_id, state=state, limit=limit)
        )
    except token_market.MarketRefusal as exc:
        return error_response(exc, exc.status)
    return JSONResponse(body)


@api.post("/tokens/listings", summary="List tokens this BAP holds on the ledger's market (escrowed at once)")
async def list_tokens(body: ListingIn, request: Request) -> JSONResponse:
    r = token_market.NewListing(
        series_id=body.series_id,
        tokens=body.tokens,
        price_gbp_per_token=body.price_gbp_per_token,
        listing_id=body.listing_id,
    )
    return await _market_write(request, lambda: token_market.create_listing(r))


@api.post("/tokens/listings/{listing_id}/buy", summary="Buy from a listing: this BAP's signed confirm, DvP")
async def buy_listed_tokens(listing_id: limits.Name, body: ListingBuyIn, request: Request) -> JSONResponse:
    me = request.app.state.identity
    return await _market_write(
        request, lambda: token_market.buy(me, listing_id, tokens=body.tokens, purchase_id=body.purchase_id)
    )


@api.post("/tokens/listings/{listing_id}/cancel", summary="Withdraw this BAP's listing; the rest returns")
async def cancel_token_listing(listing_id: limits.Name, request: Request) -> JSONResponse:
    return await _market_write(request, lambda: token_market.cancel(listing_id))


@api.post("/tokens/transfer", summary="Give tokens this BAP holds to another participant (unpriced)")
async def transfer_tokens(body: TokenTransferIn, request: Request) -> JSONResponse:
    me = request.app.state.identity
    r = token_market.Transfer(
        to_id=body.to_id, series_id=body.series_id, tokens=body.tokens, transfer_id=body.transfer_id
    )
    return await _market_write(request, lambda: token_market.transfer(me, r))
