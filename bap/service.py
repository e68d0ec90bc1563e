"""BAP use cases: the aggregator-facing operations (each becomes one signed Beckn message, written to
the outbox in the same transaction as the state it announces) and the on_* callback handlers."""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, get_args

import structlog
from psycopg.types.json import Json
from sqlalchemy import select
from sqlalchemy.orm import Session

from bap import kicks, orders, tokens
from bap.backpressure import SEARCHES
from bap.failures import failures
from bap.models import BapOrder, CatalogOffer, Transaction
from bap.selection import Candidate, Choice, select_offers
from beckn import envelope, outbox
from beckn.errors import BecknError
from beckn.identity import Identity
from beckn.models import inbox
from beckn.models import outbox as outbox_table
from beckn.pipeline import Accepted, Handler, Inbound
from kernel import clock
from kernel.config import get_settings
from kernel.db import raw
from schemas.core import CancelledBy
from schemas.flex import (
    FlexFormatError,
    FlexRequest,
    OrderSpec,
    is_series_item,
    item_to_offer,
    order_spec_to_order,
    order_state,
    order_to_spec,
    request_to_intent,
)
from schemas.messages import OnSearchMessage, OrderMessage
from schemas.outcome import OutcomeFormatError, read_outcome, stale

log = structlog.get_logger(__name__)


class ClientError(ValueError):
    """An aggregator request the BAP cannot turn into a message (HTTP 4xx with this message)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Sent:
    transaction_id: str
    message_id: str
    outbox_id: int


# -- client operations ----------------------------------------------------------------------------
def search(
    session: Session,
    me: Identity,
    req: FlexRequest,
    *,
    gateway_url: str,
    city_code: str,
    country_code: str,
    aggregator_id: str | None = None,
) -> Sent:
    """`aggregator_id`: the aggregator whose key asks (bap/auth.py); the transaction is then its own."""
    if req.window_end <= req.window_start:
        raise ClientError("window_end must be after window_start")
    if req.power_kw <= 0:
        raise ClientError("power_kw must be positive")
    tx = envelope.new_id()
    body = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in asdict(req).items()}
    session.add(
        Transaction(id=tx, request=body, city_code=city_code, country_code=country_code, aggregator_id=aggregator_id)
    )
    ctx = envelope.context(
        "search",
        bap_id=me.subscriber_id,
        bap_uri=me.url,
        transaction_id=tx,
        city_code=city_code,
        country_code=country_code,
    )
    payload = {"context": ctx, "message": {"intent": request_to_intent(req).dump()}}
    oid = outbox.enqueue(
        session,
        sender_id=me.subscriber_id,
        receiver_url=outbox.endpoint(gateway_url, "search"),
        action="search",
        payload=payload,
    )
    return Sent(tx, ctx["message_id"], oid)


def _transaction(session: Session, tx: str) -> Transaction:
    t = session.get(Transaction, tx)
    if t is None:
        raise ClientError(f"unknown transaction {tx}", 404)
    return t


def _order(
    session: Session, tx: str, bpp_id: str, provider_id: str, item_id: str | None = None, *, open_only: bool
) -> BapOrder | None:
    """The open order with this provider (and item); unless `open_only`, else its latest (a cancelled order
    can still be asked for its status). A select starts a new order once the previous one is cancelled."""
    try:
        found = orders.open_order(session, tx, bpp_id, provider_id, item_id)
    except orders.AmbiguousOrder as exc:
        raise ClientError(str(exc), 409) from exc
    if found is not None or open_only:
        return found
    return orders.named_by(session, tx, bpp_id, provider_id=provider_id, item_id=item_id, order_id=None)


@dataclass(frozen=True)
class OrderRequest:
    transaction_id: str
    bpp_id: str
    provider_id: str
    item_id: str | None = None
    power_kw: float | None = None
    window_start: datetime | None = None
    window_end: datetime | None = None
    meter_id: str | None = None
    settlement_method: str | None = None
    reason: str | None = None
    procurement_id: str | None = None  # set by the orchestrator (bap/procurement.py), never by the client API


def _send(session: Session, me: Identity, t: Transaction, o: BapOrder, *, action: str, message: dict[str, Any]) -> Sent:
    ctx = envelope.context(
        action,
        bap_id=me.subscriber_id,
        bap_uri=me.url,
        transaction_id=t.id,
        bpp_id=o.bpp_id,
        bpp_uri=o.bpp_uri,
        # a national search's orders name the BAP's own city (every request but a search needs one)
        city_code=t.city_code or get_settings().city_code,
        country_code=t.country_code,
    )
    oid = outbox.enqueue(
        session,
        sender_id=me.subscriber_id,
        receiver_url=outbox.endpoint(o.bpp_uri, action),
        action=action,
        payload={"context": ctx, "message": message},
    )
    return Sent(t.id, ctx["message_id"], oid)


# Order states whose terms are still the buyer's to change (nothing is committed at the BPP).
DRAFT_STATES = ("SELECTING", "QUOTED", "CREATED")


def order_action(session: Session, me: Identity, action: str, r: OrderRequest) -> Sent:
    """select / init / confirm / status / cancel / update for one provider's order in a transaction.

    Fields left out default to what the previous step established (the offer's window at select,
    the selected quantity at init, …)."""
    t = _transaction(session, r.transaction_id)
    o = _order(session, t.id, r.bpp_id, r.provider_id, r.item_id, open_only=action == "select")
    if action == "select":
        item_id = r.item_id or (o.item_id if o else None)
        if not item_id:
            raise ClientError("item_id is required to select")
        offer = session.get(CatalogOffer, (t.id, r.bpp_id, r.provider_id, item_id))
        if offer is None:
            raise ClientError(f"no offer {item_id} from {r.provider_id} at {r.bpp_id} in transaction {t.id}", 404)
        if o is None:
            o = BapOrder(
                procurement_id=r.procurement_id,
                transaction_id=t.id,
                bpp_id=r.bpp_id,
                provider_id=r.provider_id,
                bpp_uri=offer.bpp_uri,
                settlement_method=r.settlement_method or "P415",
                item_id=item_id,
                power_kw=r.power_kw or offer.available_kw,
                window_start=r.window_start or offer.window_start,
                window_end=r.window_end or offer.window_end,
                state="SELECTING",
            )
            session.add(o)
        proposed: dict[str, Any] = {
            "item_id": item_id,
            "power_kw": r.power_kw or o.power_kw or offer.available_kw,
            "window_start": r.window_start or o.window_start or offer.window_start,
            "window_end": r.window_end or o.window_end or offer.window_end,
        }
    elif o is None:
        raise ClientError(f"no order with {r.provider_id} at {r.bpp_id} in transaction {t.id}: select first", 409)
    else:
        proposed = {}
    if action in ("init", "update"):
        proposed = {
            "power_kw": r.power_kw or o.power_kw,
            "window_start": r.window_start or o.window_start,
            "window_end": r.window_end or o.window_end,
            "meter_id": r.meter_id or o.meter_id,
            "settlement_method": r.settlement_method or o.settlement_method,
        }
    # The stored order is what the BPP last agreed. A draft's terms are the buyer's to change (select
    # before init, init before confirm); a select or update of an order the BPP has created or accepted
    # is only a proposal: the stored terms and state change when the BPP answers, not before.
    if (action == "select" and o.state in ("SELECTING", "QUOTED")) or (action == "init" and o.state in DRAFT_STATES):
        for k, v in proposed.items():
            setattr(o, k, v)
        if action == "select":
            o.state = "SELECTING"
    if action in ("status", "cancel", "update") and not o.order_id:
        raise ClientError(f"{action} needs the order id the BPP assigns at init; init first", 409)
    if action == "confirm" and o.state not in ("CREATED", "ACCEPTED"):
        raise ClientError(f"order is {o.state}; confirm needs an initialised order (CREATED)", 409)
    if action == "update":
        _check_amendable(o, proposed)
    _check_cft(action, r, o, proposed)
    terms: dict[str, Any] = {
        "item_id": o.item_id,
        "power_kw": o.power_kw,
        "window_start": o.window_start,
        "window_end": o.window_end,
        "meter_id": o.meter_id,
        "settlement_method": o.settlement_method,
        **proposed,
    }
    spec = OrderSpec(
        provider_id=o.provider_id,
        item_id=terms["item_id"],
        power_kw=terms["power_kw"],
        window_start=terms["window_start"],
        window_end=terms["window_end"],
        meter_id=terms["meter_id"],
        settlement_method=terms["settlement_method"],
        order_id=o.order_id,
    )
    if action in ("select", "init", "confirm"):
        message: dict[str, Any] = {"order": order_spec_to_order(spec).dump()}
    elif action == "update":
        message = {"update_target": "item,fulfillment", "order": order_spec_to_order(spec).dump()}
    elif action == "status":
        message = {"order_id": o.order_id}
    elif action == "cancel":
        message = {"order_id": o.order_id, "descriptor": {"name": r.reason or "cancelled by the grid orchestrator"}}
    else:
        raise ClientError(f"unknown action {action}", 404)
    o.last_error = None
    return _send(session, me, t, o, action=action, message=message)


class NotAmendable(ClientError):
    code = "not_amendable"


def _check_amendable(o: BapOrder, proposed: dict[str, Any]) -> None:
    """An update of an order paid with tokens is refused before anything is sent (409 naming settlement_method):
    its ledger obligation is the redemption `cft-<order id>`, which cannot be amended; nor may an update switch
    an order to token payment."""
    if o.settlement_method == "CFT":
        raise NotAmendable(
            "settlement_method: a token-paid order cannot be amended: cancel it (its tokens return before the "
            "window) and order again",
            409,
        )
    if proposed.get("settlement_method") == "CFT":
        raise NotAmendable(
            f"settlement_method: an update cannot change how an order is paid ({o.settlement_method} to CFT): "
            "cancel it and order again",
            409,
        )


def _check_cft(action: str, r: OrderRequest, o: BapOrder, proposed: dict[str, Any]) -> None:
    """An order paid with tokens must be a whole number of MWh (1 token = 1 MWh): refused at select and init."""
    method = r.settlement_method or (o.settlement_method if action == "init" else None)
    if action not in ("select", "init") or method != "CFT":
        return
    terms = {"power_kw": o.power_kw, "window_start": o.window_start, "window_end": o.window_end, **proposed}
    spec = OrderSpec(o.provider_id, o.item_id, terms["power_kw"], terms["window_start"], terms["window_end"])
    refused = tokens.cft_refusal(spec)
    if refused:
        raise ClientError(refused)


def plan(
    session: Session,
    tx: str,
    *,
    target_kw: float,
    objective: str,
    start: datetime | None = None,
    end: datetime | None = None,
) -> list[Choice]:
    """The cheapest (or lowest-carbon) set of received offers that meets `target_kw` (bap/selection.py)."""
    t = _transaction(session, tx)
    start = start or datetime.fromisoformat(t.request["window_start"])
    end = end or datetime.fromisoformat(t.request["window_end"])
    cands = [
        Candidate(
            key=(c.bpp_id, c.provider_id, c.item_id),
            min_kw=float(c.spec.get("min_kw", 0)),
            max_kw=float(c.spec.get("max_kw", c.available_kw)),
            price_gbp_per_mwh=c.price_gbp_per_mwh,
            carbon_g_per_kwh=c.spec.get("expected_carbon_g_per_kwh"),
            window_start=c.window_start,
            window_end=c.window_end,
        )
        for c in session.scalars(select(CatalogOffer).where(CatalogOffer.transaction_id == tx))
    ]
    return select_offers(cands, target_kw, start, end, objective)


def transaction_view(session: Session, tx: str) -> dict[str, Any]:
    t = _transaction(session, tx)
    offers = session.scalars(
        select(CatalogOffer)
        .where(CatalogOffer.transaction_id == tx)
        .order_by(CatalogOffer.price_gbp_per_mwh, CatalogOffer.provider_id)
    ).all()
    orders = session.scalars(select(BapOrder).where(BapOrder.transaction_id == tx).order_by(BapOrder.provider_id)).all()
    received = session.execute(
        select(
            inbox.c.action,
            inbox.c.sender_id,
            inbox.c.gateway_id,
            inbox.c.message_id,
            inbox.c.signature_verified,
            inbox.c.received_at,
        )
        .where(inbox.c.transaction_id == tx)
        .order_by(inbox.c.id)
    ).all()
    sent = session.execute(
        select(
            outbox_table.c.action,
            outbox_table.c.receiver_url,
            outbox_table.c.message_id,
            outbox_table.c.status,
            outbox_table.c.attempts,
            outbox_table.c.last_error,
        )
        .where(outbox_table.c.transaction_id == tx)
        .order_by(outbox_table.c.id)
    ).all()
    return {
        "transaction_id": t.id,
        "request": t.request,
        "created_at": t.created_at.isoformat(),
        "offers": [
            {
                "bpp_id": c.bpp_id,
                "bpp_uri": c.bpp_uri,
                "provider_id": c.provider_id,
                "provider_name": c.provider_name,
                "item_id": c.item_id,
                "price_gbp_per_mwh": c.price_gbp_per_mwh,
                "available_kw": c.available_kw,
                "window_start": c.window_start.isoformat(),
                "window_end": c.window_end.isoformat(),
                **{
                    k: c.spec.get(k)
                    for k in (
                        "min_kw",
                        "max_kw",
                        "resource_type",
                        "expected_carbon_g_per_kwh",
                        "marginal_cost_gbp_per_mwh",
                        "response_time_s",
                        "expected_paid_kw",
                        "expected_paid_reason",
                    )
                },
            }
            for c in offers
        ],
        "orders": [order_json(o) for o in orders],
        "token_offers": tokens.offers_view(session, tx),
        "token_orders": tokens.orders_view(session, tx),
        "callbacks": [
            {
                "action": r.action,
                "from": r.sender_id,
                "via": r.gateway_id,
                "message_id": r.message_id,
                "signature_verified": r.signature_verified,
                "received_at": r.received_at.isoformat(),
            }
            for r in received
        ],
        "sent": [
            {
                "action": r.action,
                "to": r.receiver_url,
                "message_id": r.message_id,
                "status": r.status,
                "attempts": r.attempts,
                "last_error": r.last_error,
            }
            for r in sent
        ],
        "failures": failures(session, tx),
    }


def order_json(o: BapOrder) -> dict[str, Any]:
    return {
        "order_ref": o.id,  # the BAP's own id of the order (bap/orders.py)
        "procurement_id": o.procurement_id,
        "bpp_id": o.bpp_id,
        "provider_id": o.provider_id,
        "item_id": o.item_id,
        "order_id": o.order_id,
        "state": o.state,
        "power_kw": o.power_kw,
        "window_start": o.window_start.isoformat(),
        "window_end": o.window_end.isoformat(),
        "meter_id": o.meter_id,
        "price_gbp_per_mwh": o.price_gbp_per_mwh,
        "quote_gbp": o.quote_gbp,
        "settlement_method": o.settlement_method,
        "last_error": o.last_error,
        "cancellation_reason": cancellation_reason(o),
        "cancelled_by": cancelled_by(o),
        "updated_at": o.updated_at.isoformat() if o.updated_at else None,
        # the ledger's outcome as the BPP reported it (schemas/outcome.py): none before its first settlement run
        "settlement_run": o.settlement_run,
        "delivered_energy_kwh": o.delivered_energy_kwh,
        "settled_amount_pence": o.settled_amount_pence,
    }


def cancellation_reason(o: BapOrder) -> str | None:
    """Why the order was cancelled, as the BPP's last order object says (`cancellation.reason`), if it was."""
    if o.state != "CANCELLED" or not isinstance(o.order, dict):
        return None
    reason = (o.order.get("cancellation") or {}).get("reason") or {}
    name = (reason.get("descriptor") or {}).get("name") if isinstance(reason, dict) else None
    return str(name)[:500] if name else None


def cancelled_by(o: BapOrder) -> CancelledBy | None:
    """Who cancelled the order (CONSUMER: this BAP; PROVIDER: the provider or its platform), as the BPP's last
    order object says (`cancellation.cancelled_by`), if it was cancelled and the BPP said."""
    if o.state != "CANCELLED" or not isinstance(o.order, dict):
        return None
    by = (o.order.get("cancellation") or {}).get("cancelled_by")
    return by if by in get_args(CancelledBy) else None


# -- callbacks (synchronous: storing them is all the work there is) --------------------------------
def _known_tx(session: Session, msg: Inbound) -> Transaction:
    t = session.get(Transaction, msg.context.transaction_id)
    if t is None:
        raise BecknError(
            "not_found",
            f"unknown transaction {msg.context.transaction_id}",
            http_status=200,
            paths="context.transaction_id",
        )
    return t


def on_search(session: Session, msg: Inbound, inbox_id: int) -> Accepted:
    """Store the offers of one catalog. It refuses only before it writes (every check first, then ONE
    statement), so it needs no savepoint when it shares a transaction with other messages (bap/main.py)."""
    # Fifty of these arrive per search: an existence check in plain SQL, not an ORM load.
    known = (
        raw(session)
        .execute("SELECT request->>'procurement_id' FROM transactions WHERE id = %s", (msg.context.transaction_id,))
        .fetchone()
    )
    if known is None:
        raise BecknError(
            "not_found",
            f"unknown transaction {msg.context.transaction_id}",
            http_status=200,
            paths="context.transaction_id",
        )
    SEARCHES.answered(msg.context.transaction_id, msg.context.bpp_id)  # bap/backpressure.py
    if known[0]:  # a procurement's search: it may have heard every BPP now (bap/kicks.py)
        kicks.after_commit(session, known[0])
    if msg.error is not None:
        log.info("on_search error", bpp=msg.context.bpp_id, code=msg.error.code, message=msg.error.message)
        return Accepted(process_async=False)
    assert isinstance(msg.message, OnSearchMessage)
    ctx = msg.context
    rows: dict[tuple[str, str], tuple[Any, ...]] = {}  # one row per (provider, item): the last one wins
    series = []  # Compute Flex Token series (bap/tokens.py)
    for i, prov in enumerate(msg.message.catalog.providers or []):
        if not prov.id:
            raise BecknError("invalid_response", f"message.catalog.providers[{i}].id is required", http_status=400)
        for j, item in enumerate(prov.items or []):
            if is_series_item(item):
                series.append(tokens.parse_series(item, prov.id, f"message.catalog.providers[{i}].items[{j}]"))
                continue
            try:
                offer = item_to_offer(item, prov.id, f"message.catalog.providers[{i}].items[{j}]")
            except FlexFormatError as exc:
                raise BecknError("invalid_response", str(exc), http_status=400, paths=exc.path) from exc
            spec = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in vars(offer).items()}
            rows[(prov.id, offer.item_id)] = (
                ctx.transaction_id,
                ctx.bpp_id,
                prov.id,
                offer.item_id,
                ctx.bpp_uri,
                prov.descriptor.name if prov.descriptor else None,
                offer.price_gbp_per_mwh,
                offer.available_kw,
                offer.window_start,
                offer.window_end,
                Json(spec),
            )
    if rows:  # one statement for the whole catalog
        raw(session).execute(_upsert_offers_sql(len(rows)), [v for row in rows.values() for v in row])
    tokens.store_series(session, ctx, str(ctx.bpp_uri), series)
    return Accepted(process_async=False)


_OFFER_COLUMNS = (
    "transaction_id",
    "bpp_id",
    "provider_id",
    "item_id",
    "bpp_uri",
    "provider_name",
    "price_gbp_per_mwh",
    "available_kw",
    "window_start",
    "window_end",
    "spec",
)


@functools.lru_cache(maxsize=64)
def _upsert_offers_sql(n: int) -> str:
    # Plain VALUES rows: psycopg adapts scalars in C, where arrays for unnest() went through Python.
    row = "(" + ", ".join(["%s"] * len(_OFFER_COLUMNS)) + ")"
    return (
        f"INSERT INTO catalog_offers ({', '.join(_OFFER_COLUMNS)}) VALUES {', '.join([row] * n)} "
        "ON CONFLICT (transaction_id, bpp_id, provider_id, item_id) DO UPDATE SET "
        + ", ".join(f"{c} = excluded.{c}" for c in _OFFER_COLUMNS[4:])
    )


def on_order(session: Session, msg: Inbound, inbox_id: int) -> Accepted:
    """on_select / on_init / on_confirm / on_status / on_cancel / on_update."""
    _known_tx(session, msg)
    order = msg.message.order if isinstance(msg.message, OrderMessage) else None
    provider_id = order.provider.id if order and order.provider else None
    if provider_id is None:
        # A callback without an order (an error answer): the request it answers — same message_id — names it.
        o = _order_of_request(session, msg)
    else:
        o = orders.named_by(
            session,
            str(msg.context.transaction_id),
            str(msg.context.bpp_id),
            provider_id=provider_id,
            item_id=order.items[0].id if order and order.items else None,
            order_id=order.id if order else None,
        )
    if o is None:
        raise BecknError("invalid_response", f"{msg.action} for an order this BAP never placed", http_status=200)
    state = order_state(order)
    try:  # the ledger's outcome (schemas/outcome.py), when the BPP reports one
        outcome = read_outcome(order)
    except OutcomeFormatError as exc:
        raise BecknError("invalid_response", str(exc), http_status=400, paths=exc.path) from exc
    # A quote moves only an order still being selected (never an accepted one back to QUOTED); an error
    # answer changes the stored terms only when it carries the BPP's order (with its state), not an echo;
    # older news than the copy holds (a late on_status overtaken by a later one) changes nothing.
    applies = (
        o.state in ("SELECTING", "QUOTED") and msg.error is None
        if msg.action == "on_select"
        else (msg.error is None or state is not None) and not stale(o.state, o.settlement_run, state, outcome)
    )
    if order is not None and applies and outcome is not None:
        o.settlement_run, o.settled_amount_pence = outcome.settlement_run, outcome.settled_amount_pence
        o.delivered_energy_kwh = float(outcome.delivered_energy_kwh)
    if order is not None and applies:
        if msg.action == "on_select":
            state = "QUOTED"
        if state:
            o.state = state
        if order.id:
            o.order_id = order.id
        try:  # the BPP's view of quantity, window and meter is authoritative once it answers
            spec = order_to_spec(order, need_window=False)
            o.power_kw = spec.power_kw
            if spec.window_start is not None:
                o.window_start, o.window_end = spec.window_start, spec.window_end
            o.meter_id = spec.meter_id or o.meter_id
        except FlexFormatError as exc:
            raise BecknError("invalid_response", str(exc), http_status=400, paths=exc.path) from exc
        if order.quote and order.quote.price and order.quote.price.value:
            o.quote_gbp = float(order.quote.price.value)
        if order.items and order.items[0].price and order.items[0].price.value:
            o.price_gbp_per_mwh = float(order.items[0].price.value)
        o.order = order.dump()
    o.last_error = f"{msg.error.code}: {msg.error.message}" if msg.error else None
    o.updated_at = clock.now()
    if o.procurement_id:  # the orchestrator's order: its procurement takes its next step (bap/kicks.py)
        kicks.after_commit(session, o.procurement_id)
    # Orders the provider accepted (or cancelled) are registered with the ledger for settlement —
    # asynchronously, by bap/tasks.py, so the callback is ACKed whatever the ledger is doing.
    settle_worthy = msg.error is None and (
        (msg.action == "on_confirm" and o.state == "ACCEPTED")
        or (msg.action == "on_cancel" and o.state == "CANCELLED")
        or (msg.action == "on_update" and o.state == "ACCEPTED")  # the amended terms (ledger amend)
    )
    return Accepted(process_async=settle_worthy and bool(get_settings().ledger_url))


def _order_of_request(session: Session, msg: Inbound) -> BapOrder | None:
    body = session.scalar(
        select(outbox_table.c.body).where(
            outbox_table.c.message_id == msg.context.message_id,
            outbox_table.c.transaction_id == msg.context.transaction_id,
        )
    )
    if body is None:
        return None
    request = json.loads(bytes(body)).get("message", {})
    sent = request.get("order") or {}
    items = sent.get("items") or [{}]
    return orders.named_by(
        session,
        str(msg.context.transaction_id),
        str(msg.context.bpp_id),
        provider_id=(sent.get("provider") or {}).get("id"),
        item_id=items[0].get("id"),
        order_id=request.get("order_id") or sent.get("id"),
    )


HANDLERS: dict[str, Handler] = {
    "on_search": on_search,
    **{a: on_order for a in ("on_select", "on_init", "on_confirm", "on_status", "on_cancel", "on_update")},
    **{a: tokens.routed(on_order) for a in ("on_select", "on_init", "on_confirm")},  # token purchases too
}
