"""Compute Flex Tokens for the BAP (issue 12): the series providers publish, buying tokens as a Beckn order,
holding them on the ledger, and paying a flexibility order with them.

- Series arrive in on_search as catalog items with the tag group `cft_series` (schemas/flex.py) and are kept
  in `bap.token_offers`, per transaction, beside the flexibility offers.
- `POST /api/v1/tokens/buy` is one call that runs the whole order: it sends select; each answer sends the next
  step as soon as it is stored (on_select → init, on_init → confirm), and on_confirm ends it: ACCEPTED once the
  provider's ledger has settled the sale delivery versus payment (the ledger checks this BAP's signed confirm
  before it debits its cash), FAILED with the reason when anyone refused (the refusing callback also shows in
  GET /api/v1/failures). One call, because nothing in between is the buyer's to decide: the quote is the
  catalog's price × tokens, and a quote that differs from the catalog's ends the order instead of confirming.
- Holdings are the ledger's (`holdings`): this BAP's holding accounts read with its own key, whether the tokens
  were bought through Beckn, on the ledger's secondary market (/cft/listings) or given to it.
- A flexibility order with `settlement_method` CFT is paid with tokens: at on_confirm the ledger step redeems
  (`redeem`: `/cft/redeem` with the Beckn order id, tokens = the order's whole MWh) instead of registering the
  order; the ledger's obligation `cft-<order id>` is then settled like any order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
import structlog
from sqlalchemy import event, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from bap.models import TokenOffer, TokenOrder, Transaction
from beckn import envelope, outbox
from beckn.errors import BecknError
from beckn.pipeline import Accepted, Handler, Inbound
from beckn.tasks import send_delivery
from kernel import clock
from kernel.config import get_settings
from schemas.core import Item
from schemas.flex import (
    FlexFormatError,
    OrderSpec,
    TokenOrderSpec,
    TokenSeriesSpec,
    item_to_series,
    order_to_token_spec,
    token_order_to_order,
    whole_tokens,
)
from schemas.messages import OrderMessage
from schemas.outcome import ledger_order_id

log = structlog.get_logger(__name__)


class TokenClientError(ValueError):
    """A token request the BAP refuses (HTTP `status` with this message)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# -- series from on_search ------------------------------------------------------------------------------
def parse_series(item: Item, provider_id: str, path: str) -> TokenSeriesSpec:
    """A series item of an on_search catalog; its format errors are the on_search's NACK."""
    try:
        return item_to_series(item, provider_id, path)
    except FlexFormatError as exc:
        raise BecknError("invalid_response", str(exc), http_status=400, paths=exc.path) from exc


def store_series(session: Session, ctx: Any, bpp_uri: str, series: list[TokenSeriesSpec]) -> None:
    """Upsert one catalog's series (one statement; the last answer for a series wins)."""
    if not series:
        return
    rows = {
        s.series_id: {
            "transaction_id": ctx.transaction_id,
            "bpp_id": ctx.bpp_id,
            "provider_id": s.provider_id,
            "series_id": s.series_id,
            "bpp_uri": bpp_uri,
            "valid_from": s.valid_from,
            "valid_to": s.valid_to,
            "price_gbp_per_token": s.price_gbp_per_token,
            "tokens_available": s.tokens_available,
        }
        for s in series
    }
    stmt = insert(TokenOffer).values(list(rows.values()))
    updated = ("bpp_uri", "valid_from", "valid_to", "price_gbp_per_token", "tokens_available")
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=["transaction_id", "bpp_id", "provider_id", "series_id"],
            set_={c: stmt.excluded[c] for c in updated},
        )
    )


def offers_view(session: Session, tx: str) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(TokenOffer)
        .where(TokenOffer.transaction_id == tx)
        .order_by(TokenOffer.price_gbp_per_token, TokenOffer.provider_id, TokenOffer.series_id)
    ).all()
    return [
        {
            "bpp_id": r.bpp_id,
            "provider_id": r.provider_id,
            "series_id": r.series_id,
            "valid_from": r.valid_from.isoformat(),
            "valid_to": r.valid_to.isoformat(),
            "price_gbp_per_token": str(r.price_gbp_per_token),
            "tokens_available": r.tokens_available,
        }
        for r in rows
    ]


def orders_view(session: Session, tx: str) -> list[dict[str, Any]]:
    rows = session.scalars(select(TokenOrder).where(TokenOrder.transaction_id == tx).order_by(TokenOrder.created_at))
    return [order_json(t) for t in rows]


def order_json(t: TokenOrder) -> dict[str, Any]:
    return {
        "token_order_ref": t.id,
        "bpp_id": t.bpp_id,
        "provider_id": t.provider_id,
        "series_id": t.series_id,
        "tokens": t.tokens,
        "price_gbp_per_token": None if t.price_gbp_per_token is None else str(t.price_gbp_per_token),
        "order_id": t.order_id,
        "state": t.state,
        "last_error": t.last_error,
        "updated_at": t.updated_at.isoformat() if t.updated_at else None,
    }


# -- buying: select → init → confirm ---------------------------------------------------------------------
@dataclass(frozen=True)
class Buy:
    transaction_id: str
    bpp_id: str
    provider_id: str
    series_id: str
    tokens: int


def buy(session: Session, bap_id: str, bap_uri: str, r: Buy) -> TokenOrder:
    """Start a purchase of `r.tokens` of a series this transaction's search found: the select is queued (its
    outbox id is delivered after commit); on_select, on_init and on_confirm carry it on (`on_callback`)."""
    if r.tokens <= 0:
        raise TokenClientError("tokens must be a positive whole number")
    t = session.get(Transaction, r.transaction_id)
    if t is None:
        raise TokenClientError(f"unknown transaction {r.transaction_id}", 404)
    offer = session.get(TokenOffer, (r.transaction_id, r.bpp_id, r.provider_id, r.series_id))
    if offer is None:
        raise TokenClientError(
            f"no token series {r.series_id} from {r.provider_id} at {r.bpp_id} in transaction {r.transaction_id}", 404
        )
    if offer.valid_to <= clock.now():
        raise TokenClientError(f"series {r.series_id} expired at {offer.valid_to.isoformat()}", 409)
    order = TokenOrder(
        transaction_id=t.id,
        bpp_id=r.bpp_id,
        bpp_uri=offer.bpp_uri,
        provider_id=r.provider_id,
        series_id=r.series_id,
        tokens=r.tokens,
        state="SELECTING",
        message_id="",
        updated_at=clock.now(),
    )
    session.add(order)
    _send(session, order, t, bap_id, bap_uri, "select", TokenOrderSpec(r.provider_id, r.series_id, r.tokens))
    return order


def _send(
    session: Session, o: TokenOrder, t: Transaction, bap_id: str, bap_uri: str, action: str, spec: TokenOrderSpec
) -> None:
    ctx = envelope.context(
        action,
        bap_id=bap_id,
        bap_uri=bap_uri,
        transaction_id=t.id,
        bpp_id=o.bpp_id,
        bpp_uri=o.bpp_uri,
        city_code=t.city_code or get_settings().city_code,
        country_code=t.country_code,
    )
    oid = outbox.enqueue(
        session,
        sender_id=bap_id,
        receiver_url=outbox.endpoint(o.bpp_uri, action),
        action=action,
        payload={"context": ctx, "message": {"order": token_order_to_order(spec).dump()}},
    )
    o.message_id = ctx["message_id"]
    session.info.setdefault(_DELIVER, []).append(oid)


_DELIVER = "flexmarket_token_deliveries"


@event.listens_for(Session, "after_commit")
def _deliver(session: Session) -> None:
    ids = session.info.pop(_DELIVER, None)
    if ids:
        with contextlib.suppress(Exception):  # the broker is away: the outbox sweep sends them
            send_delivery("bap", list(ids))


@event.listens_for(Session, "after_rollback")
def _forget(session: Session) -> None:
    session.info.pop(_DELIVER, None)


def routed(flex_handler: Handler) -> Handler:
    """The callback handler: a token order's answer (its request's message id names it) here, others as before."""

    def handle(session: Session, msg: Inbound, inbox_id: int) -> Accepted:
        t = session.scalars(
            select(TokenOrder)
            .where(
                TokenOrder.transaction_id == msg.context.transaction_id,
                TokenOrder.message_id == msg.context.message_id,
            )
            .with_for_update()
        ).first()
        if t is None:
            return flex_handler(session, msg, inbox_id)
        on_callback(session, msg, t)
        return Accepted(process_async=False)

    return handle


def on_callback(session: Session, msg: Inbound, t: TokenOrder) -> None:
    """on_select → init; on_init → confirm; on_confirm → ACCEPTED. An error answer ends the order (FAILED)."""
    t.updated_at = clock.now()
    if msg.error is not None:
        t.state, t.last_error = "FAILED", f"{msg.action} {msg.error.code}: {msg.error.message}"[:2000]
        return
    order = msg.message.order if isinstance(msg.message, OrderMessage) else None
    try:
        spec = order_to_token_spec(order)
    except FlexFormatError as exc:
        raise BecknError("invalid_response", str(exc), http_status=400, paths=exc.path) from exc
    if (spec.provider_id, spec.series_id, spec.tokens) != (t.provider_id, t.series_id, t.tokens):
        raise BecknError("invalid_response", f"{msg.action} names other terms than token order {t.id}", http_status=200)
    step = _STEPS.get(str(msg.action))
    if step is not None:
        step(session, msg, t, spec)


def _quoted(session: Session, msg: Inbound, t: TokenOrder, spec: TokenOrderSpec) -> None:
    offer = session.get(TokenOffer, (t.transaction_id, t.bpp_id, t.provider_id, t.series_id))
    if spec.price_gbp_per_token is None or offer is None or spec.price_gbp_per_token != offer.price_gbp_per_token:
        t.state, t.last_error = "FAILED", f"quoted {spec.price_gbp_per_token} GBP/token, not the catalog's price"
        return
    t.state, t.price_gbp_per_token = "QUOTED", spec.price_gbp_per_token
    _next(session, msg, t, "init", TokenOrderSpec(t.provider_id, t.series_id, t.tokens, t.price_gbp_per_token))


def _created(session: Session, msg: Inbound, t: TokenOrder, spec: TokenOrderSpec) -> None:
    if not spec.order_id or spec.price_gbp_per_token != t.price_gbp_per_token:
        t.state, t.last_error = "FAILED", "on_init without an order id, or at another price than quoted"
        return
    t.state, t.order_id = "CREATED", spec.order_id
    confirm = TokenOrderSpec(t.provider_id, t.series_id, t.tokens, t.price_gbp_per_token, t.order_id)
    _next(session, msg, t, "confirm", confirm)


def _confirmed(session: Session, msg: Inbound, t: TokenOrder, spec: TokenOrderSpec) -> None:
    if spec.state == "ACCEPTED":
        t.state, t.last_error = "ACCEPTED", None


def _next(session: Session, msg: Inbound, t: TokenOrder, action: str, spec: TokenOrderSpec) -> None:
    tx = session.get(Transaction, t.transaction_id)
    assert tx is not None  # token orders belong to a stored transaction
    _send(session, t, tx, str(msg.context.bap_id), str(msg.context.bap_uri), action, spec)


_STEPS: dict[str, Callable[[Session, Inbound, TokenOrder, TokenOrderSpec], None]] = {
    "on_select": _quoted,
    "on_init": _created,
    "on_confirm": _confirmed,
}


# -- the ledger: holdings and redemption -------------------------------------------------------------
Holding = tuple[str, datetime, datetime, int]  # provider id, valid from, valid to, tokens held


def my_id() -> str:
    """This BAP's subscriber id: its holder id on the ledger (the worker knows it as FLEXMARKET_BAP_SUBSCRIBER_ID)."""
    settings = get_settings()
    me = settings.bap_subscriber_id or settings.subscriber_id
    if not me:
        raise RuntimeError("FLEXMARKET_BAP_SUBSCRIBER_ID is not set: the BAP's ledger holder id is unknown")
    return me


class LedgerUnreachable(RuntimeError):
    """The ledger could not be asked, or did not answer with JSON (HTTP 502 at the client API)."""


def ledger_call(
    method: str, path: str, body: dict[str, Any] | None = None, *, timeout_s: float = 10.0
) -> tuple[int, dict[str, Any]]:
    """The ledger's status and JSON answer to one request made with this BAP's own ledger key."""
    settings = get_settings()
    if not settings.ledger_url:
        raise TokenClientError("this BAP has no ledger (FLEXMARKET_LEDGER_URL)", 503)
    headers = {"Authorization": f"Bearer {settings.ledger_api_key}"} if settings.ledger_api_key else {}
    url = f"{str(settings.ledger_url).rstrip('/')}/api/v1{path}"
    try:
        with httpx.Client(timeout=timeout_s) as client:
            r = client.request(method, url, json=body, headers=headers)
    except httpx.HTTPError as exc:
        raise LedgerUnreachable(f"ledger unreachable: {exc}") from exc
    try:
        answer = r.json() if r.content else {}
    except ValueError as exc:
        raise LedgerUnreachable(f"ledger answered {r.status_code} without JSON: {r.text[:200]}") from exc
    if not isinstance(answer, dict):
        raise LedgerUnreachable(f"ledger answered {r.status_code} with JSON that is not an object")
    return r.status_code, answer


def holdings(
    session: Session, *, providers: set[str] | None = None, window: tuple[datetime, datetime] | None = None
) -> dict[str, Holding]:
    """Series id → (provider id, valid from, valid to, tokens this BAP holds), as the ledger states them now, for
    every series it holds tokens of however they came: bought through Beckn, bought on the ledger's secondary
    market, given with /cft/transfer, or back from a cancelled listing (tokens it has listed are in the
    listing's escrow, not held). One ledger read lists its holding accounts (`holding:<me>:<series>`); the
    series' provider and validity come from the catalogs seen, or from the ledger for a series never seen in
    one. Only those of `providers` and valid during `window` when given. Plain data out (for the orchestrator)."""
    held = _held_tokens(my_id())
    out: dict[str, Holding] = {}
    for series_id, (provider_id, valid_from, valid_to) in _series_terms(session, set(held)).items():
        if providers is not None and provider_id not in providers:
            continue
        if window is not None and not (valid_from < window[1] and valid_to > window[0]):
            continue
        out[series_id] = (provider_id, valid_from, valid_to, held[series_id])
    return out


def _held_tokens(me: str) -> dict[str, int]:
    """Series id → tokens, for this BAP's holding accounts with tokens in them (paged through GET /accounts)."""
    prefix = f"holding:{me}:"
    held: dict[str, int] = {}
    after: str | None = None
    while True:
        query = httpx.QueryParams({"prefix": prefix, "limit": 1000, **({"after": after} if after else {})})
        status, body = ledger_call("GET", f"/accounts?{query}")
        if status != 200:
            raise RuntimeError(f"ledger answered {status} for this BAP's token holdings: {str(body)[:200]}")
        for account in body.get("accounts") or []:
            if int(account["balance"]) > 0:
                held[str(account["name"]).removeprefix(prefix)] = int(account["balance"])
        after = body.get("next_after")
        if not after:
            return held


def _series_terms(session: Session, series_ids: set[str]) -> dict[str, tuple[str, datetime, datetime]]:
    """Series id → (provider id, valid from, valid to): from the catalogs this BAP stored, else the ledger's."""
    if not series_ids:
        return {}
    terms = {
        row[0]: (row[1], row[2], row[3])
        for row in session.execute(
            select(TokenOffer.series_id, TokenOffer.provider_id, TokenOffer.valid_from, TokenOffer.valid_to)
            .where(TokenOffer.series_id.in_(series_ids))
            .distinct()
        ).all()
    }
    for series_id in sorted(series_ids - set(terms)):
        status, body = ledger_call("GET", f"/cft/series/{series_id}")
        if status != 200:
            raise RuntimeError(f"ledger answered {status} for series {series_id}: {str(body)[:200]}")
        terms[series_id] = (
            str(body["provider_id"]),
            datetime.fromisoformat(body["valid_from"]),
            datetime.fromisoformat(body["valid_to"]),
        )
    return terms


def holdings_view(session: Session) -> list[dict[str, Any]]:
    return [
        {
            "series_id": sid,
            "provider_id": h[0],
            "valid_from": h[1].isoformat(),
            "valid_to": h[2].isoformat(),
            "tokens": h[3],
        }
        for sid, h in sorted(holdings(session).items())
    ]


def cft_refusal(spec: OrderSpec) -> str | None:
    """Why a CFT-paid order cannot be paid with whole tokens (`power_kw: …`), or None."""
    if spec.window_start is None or spec.window_end is None:
        return None
    if whole_tokens(spec.power_kw, spec.window_start, spec.window_end) is None:
        hours = Decimal(int((spec.window_end - spec.window_start).total_seconds())) / 3600
        return (
            f"power_kw: {spec.power_kw:g} kW over {hours:g} h is not a whole number of MWh; an order paid with "
            "Compute Flex Tokens (1 token = 1 MWh) needs one"
        )
    return None


def choose_series(held: dict[str, Holding], spec: OrderSpec, tokens: int) -> str | None:
    """The held series of the order's provider whose window covers the order's and that holds enough tokens,
    the one that expires first; None when there is none."""
    fits = [
        (h[2], sid)
        for sid, h in held.items()
        if h[0] == spec.provider_id and h[1] <= spec.window_start and spec.window_end <= h[2] and h[3] >= tokens
    ]
    return min(fits)[1] if fits else None


def redeem(session: Session, spec: OrderSpec) -> dict[str, Any]:
    """Pay an accepted CFT order: burn its MWh in tokens on the ledger with the Beckn order id (the ledger
    registers the provider's obligation `cft-<order id>`; the order is not registered again). Idempotent: the
    ledger answers a repeated redemption with the existing one. Raises on failure (the sweep retries)."""
    tokens = whole_tokens(spec.power_kw, spec.window_start, spec.window_end)
    if tokens is None or not spec.order_id:
        raise RuntimeError(cft_refusal(spec) or "a CFT order needs its order id")
    existing_status, existing = ledger_call("GET", f"/orders/{ledger_order_id(spec.order_id, 'CFT')}")
    if existing_status == 200:
        return existing  # redeemed before: the obligation stands (the tokens are gone from the holding)
    series_id = choose_series(holdings(session), spec, tokens)
    if series_id is None:
        raise RuntimeError(
            f"no held token series of {spec.provider_id} covers {spec.window_start.isoformat()}–"
            f"{spec.window_end.isoformat()} with {tokens} tokens"
        )
    settings = get_settings()
    status, body = ledger_call(
        "POST",
        "/cft/redeem",
        {
            "id": spec.order_id,
            "series_id": series_id,
            "holder_id": my_id(),
            "tokens": tokens,
            "period_start": spec.window_start.isoformat(),
            "period_end": spec.window_end.isoformat(),
            "meter_id": spec.meter_id or "",
            "supplier_id": settings.default_supplier_id,
        },
    )
    if status >= 300:
        raise RuntimeError(f"ledger refused the redemption ({status}): {str(body)[:300]}")
    log.info("CFT order paid with tokens", order_id=spec.order_id, series_id=series_id, tokens=tokens)
    return body
