"""BPP use cases: accept Beckn requests (synchronous checks) and process them (Celery) into
on_search / on_select / on_init / on_confirm / on_status / on_cancel / on_update callbacks (bpp/callbacks.py).

The order's state machine, its cancellation (who cancelled: CONSUMER here, for the buyer's cancel), its Beckn
form and the unsolicited on_status / on_cancel are bpp/lifecycle.py's. Invariant, checked under a row lock on
the offer at confirm and update: in every 30-minute slot, Σ kW of ACCEPTED/IN-PROGRESS orders on an offer ≤ its
available kW.
"""

from __future__ import annotations

import functools
import itertools
import json
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Select, case, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from beckn import outbox
from beckn.errors import BecknError
from beckn.identity import load_identity
from beckn.pipeline import Accepted, Handler, Inbound
from beckn.registry_client import url_of_sync
from bpp import agent_service, offer_store
from bpp.callbacks import callback, callback_message
from bpp.catalog import (
    Commitment,
    CommitmentError,
    PlatformConfig,
    ProviderConfig,
    check_capacity,
    check_order_fits_offer,
    matching_offers,
)
from bpp.lifecycle import COMMITTED_STATES, cancel, transition, view
from bpp.models import Offer, Order, OrderEvent, Provider
from kernel import clock
from kernel.config import get_settings
from kernel.db import raw
from schemas.core import Descriptor, Fulfillment, Location
from schemas.core import Order as BecknOrder
from schemas.core import Provider as BecknProvider
from schemas.flex import (
    FULFILLMENT_TYPE,
    FlexFormatError,
    FlexOfferSpec,
    FlexRequest,
    OrderSpec,
    OrderView,
    intent_to_request,
    offer_to_item,
    order_to_spec,
    order_view_to_order,
    quote_gbp,
)
from schemas.messages import CancelMessage, OrderMessage, SearchMessage, StatusMessage, UpdateMessage

log = structlog.get_logger(__name__)

UPDATE_TARGETS = {"item", "items", "fulfillment", "fulfillments"}


# -- catalog sync (web process start-up, providers joining; re-plans: bpp/replan.py) --------------
def offer_from_row(row: Offer) -> FlexOfferSpec:
    return offer_from_json(row.spec)


def offer_from_json(spec: dict[str, Any]) -> FlexOfferSpec:
    """The offer as stored in offers.spec (offer_to_json): every FlexOfferSpec field, ISO times."""
    d = dict(spec)
    d["window_start"] = datetime.fromisoformat(d["window_start"])
    d["window_end"] = datetime.fromisoformat(d["window_end"])
    return FlexOfferSpec(**d)


def sync_platform(session: Session, platform: PlatformConfig) -> int:
    """Upsert the platform's providers and offers; offers no longer published become inactive."""
    keep: set[tuple[str, str]] = set()
    for p in platform.providers:
        keep.update((p.id, o.item_id) for o in sync_provider(session, platform.subscriber_id, p))
    for row in session.scalars(select(Offer).where(Offer.bpp_id == platform.subscriber_id, Offer.active)):
        if (row.provider_id, row.item_id) not in keep:
            offer_store.withdraw(row, at=clock.now(), reason=f"provider {row.provider_id} is no longer hosted here")
    return len(keep)


def sync_provider(session: Session, bpp_id: str, p: ProviderConfig) -> list[FlexOfferSpec]:
    """Upsert one provider and the offers it publishes now (its agent plans first, if it has one); returns them.
    Its offers no longer published are left to the caller (sync_platform, bpp/admin.py)."""
    session.execute(
        insert(Provider)
        .values(bpp_id=bpp_id, provider_id=p.id, name=p.name, sites=[asdict(s) for s in p.sites])
        .on_conflict_do_update(
            index_elements=["bpp_id", "provider_id"], set_={"name": p.name, "sites": [asdict(s) for s in p.sites]}
        )
    )
    offers = agent_service.static_catalog(p, agent_service.metered_history_of(p))  # each with its expected paid
    if p.agent is not None:  # the catalog comes from the provider's own optimal schedule
        session.flush()
        offers = agent_service.publish(session, bpp_id, p)
    offer_store.upsert_offers(session, bpp_id, p, offers)
    return offers


# -- synchronous acceptance (inside the pipeline's dispatch transaction) --------------------------
def _flex_error(exc: FlexFormatError) -> BecknError:
    return BecknError("invalid_request", str(exc), paths=exc.path)


def _offer_for(session: Session, bpp_id: str, spec: OrderSpec) -> Offer:
    if session.get(Provider, (bpp_id, spec.provider_id)) is None:
        raise BecknError(
            "provider_not_found",
            f"provider {spec.provider_id!r} is not hosted here",
            http_status=200,
            paths="message.order.provider.id",
        )
    offer = session.get(Offer, (bpp_id, spec.provider_id, spec.item_id))
    if offer is None or not offer.active:  # a withdrawn offer's refusal says when and why (bpp/replan.py)
        raise BecknError(
            "item_not_found",
            offer_store.unavailable_message(spec.item_id, spec.provider_id, offer),
            http_status=200,
            paths="message.order.items[0].id",
        )
    return offer


def _order_for_tx(session: Session, msg: Inbound, spec: OrderSpec) -> Order | None:
    ctx = {"bap_id": msg.context.bap_id, "transaction_id": msg.context.transaction_id}
    named = _order_named(
        msg.receiver.subscriber_id, ctx, provider_id=spec.provider_id, item_id=spec.item_id, order_id=spec.order_id
    )
    return session.scalars(named).first()


def _order_by_id(session: Session, msg: Inbound, order_id: str) -> Order:
    order = session.get(Order, order_id)
    if order is None or order.bpp_id != msg.receiver.subscriber_id or order.bap_id != msg.context.bap_id:
        raise BecknError("order_not_found", f"order {order_id!r} not found", http_status=200, paths="message.order_id")
    return order


def accept_search(session: Session, msg: Inbound, inbox_id: int) -> Accepted:
    """Any well-formed search is ACKed (the pipeline's steps checked it against the schema): one this
    BPP cannot answer gets an on_search carrying the error (_on_search), never silence."""
    assert isinstance(msg.message, SearchMessage)
    return Accepted(process_async=True)


def accept_order(session: Session, msg: Inbound, inbox_id: int) -> Accepted:
    """select / init / confirm: the order must name a hosted provider and item; confirm needs init."""
    assert isinstance(msg.message, OrderMessage)
    try:  # a select without a window takes the item's (said so in the quote); confirm keeps init's
        spec = order_to_spec(msg.message.order, need_window=msg.action == "init")
    except FlexFormatError as exc:
        raise _flex_error(exc) from exc
    _offer_for(session, msg.receiver.subscriber_id, spec)
    if msg.action == "confirm":
        order = _order_for_tx(session, msg, spec)
        if order is None:
            raise BecknError(
                "order_not_found",
                f"no order was initialised for transaction {msg.context.transaction_id} with provider "
                f"{spec.provider_id}; send init first",
                http_status=200,
            )
    return Accepted(process_async=True)


def accept_status(session: Session, msg: Inbound, inbox_id: int) -> Accepted:
    assert isinstance(msg.message, StatusMessage)
    _order_by_id(session, msg, msg.message.order_id)
    return Accepted(process_async=True)


def accept_cancel(session: Session, msg: Inbound, inbox_id: int) -> Accepted:
    assert isinstance(msg.message, CancelMessage)
    _order_by_id(session, msg, msg.message.order_id)
    return Accepted(process_async=True)


def accept_update(session: Session, msg: Inbound, inbox_id: int) -> Accepted:
    assert isinstance(msg.message, UpdateMessage)
    targets = {t.strip() for t in msg.message.update_target.split(",") if t.strip()}
    if not targets or not targets <= UPDATE_TARGETS:
        raise BecknError(
            "invalid_update_target",
            f"update_target must name {', '.join(sorted(UPDATE_TARGETS))}; got {msg.message.update_target!r}",
            paths="message.update_target",
        )
    if not msg.message.order.id:
        raise BecknError("invalid_request", "message.order.id is required", paths="message.order.id")
    order = _order_by_id(session, msg, msg.message.order.id)
    try:
        spec = order_to_spec(msg.message.order)
    except FlexFormatError as exc:
        raise _flex_error(exc) from exc
    if "CFT" in (order.settlement_method, spec.settlement_method):
        # A token-paid order's obligation on the ledger is its redemption, which cannot be amended.
        raise BecknError(
            "update_not_possible",
            f"settlement_method: order {order.id} is paid with {order.settlement_method}; an order paid with Compute "
            "Flex Tokens cannot be amended, nor an order switched to them: cancel it and order again",
            http_status=200,
            paths="message.order.payments[0].tags.settlement_method",
        )
    return Accepted(process_async=True)


HANDLERS: dict[str, Handler] = {
    "search": accept_search,
    "select": accept_order,
    "init": accept_order,
    "confirm": accept_order,
    "status": accept_status,
    "cancel": accept_cancel,
    "update": accept_update,
}


# -- asynchronous processing (Celery: beckn.process_inbox → process) -------------------------------
def _committed(session: Session, offer: Offer, exclude: str | None = None) -> list[Commitment]:
    q = select(Order).where(
        Order.bpp_id == offer.bpp_id,
        Order.provider_id == offer.provider_id,
        Order.item_id == offer.item_id,
        Order.state.in_(COMMITTED_STATES),
    )
    return [Commitment(o.power_kw, o.window_start, o.window_end) for o in session.scalars(q) if o.id != exclude]


def _locked_offer(session: Session, bpp_id: str, provider_id: str, item_id: str) -> Offer | None:
    # The offer row serialises concurrent commitments against it (no double-booking).
    return session.scalars(
        select(Offer)
        .where(Offer.bpp_id == bpp_id, Offer.provider_id == provider_id, Offer.item_id == item_id)
        .with_for_update()
    ).first()


def process(session: Session, row: Any) -> list[int]:
    """Turn one accepted request into its callback (the beckn.processing contract)."""
    payload = json.loads(row.body)
    ctx = payload["context"]
    bpp_id = row.receiver_id
    on = f"on_{row.action}"
    try:
        if row.action == "search":  # writes nothing but its answer: no savepoint needed
            _on_search(session, bpp_id, payload, row)
            return []
        with session.begin_nested():  # a refusal undoes any partial change before the error callback
            return _process(session, bpp_id, row.action, ctx=ctx, payload=payload, row=row)
    except CommitmentError as exc:
        # A well-formed request the BPP cannot honour: the callback carries the error; nothing else changes.
        return [
            callback(
                session,
                bpp_id,
                ctx,
                on,
                error=BecknError(exc.kind, str(exc)),
                message=_error_message(session, bpp_id, ctx, payload, row.action),
            )
        ]
    except FlexFormatError as exc:
        return [callback(session, bpp_id, ctx, on, error=BecknError("invalid_request", str(exc)))]


def _process(
    session: Session, bpp_id: str, action: str, *, ctx: dict[str, Any], payload: dict[str, Any], row: Any
) -> list[int]:
    on = f"on_{action}"
    if action in ("status", "cancel"):
        order = session.get(Order, payload["message"]["order_id"])
        assert order is not None  # checked at acceptance; orders are never deleted
        if action == "cancel":  # the buyer's: CONSUMER
            reason = (
                (payload["message"].get("descriptor") or {}).get("name")
                or payload["message"].get("cancellation_reason_id")
                or "cancelled by buyer"
            )
            cancel(session, order, by="CONSUMER", reason=reason, now=clock.now(), message_id=ctx["message_id"])
        return [callback(session, bpp_id, ctx, on, message=view(order))]
    spec = order_to_spec(BecknOrder.model_validate(payload["message"]["order"]), need_window=action == "init")
    if action == "select":
        offer = session.get(Offer, (bpp_id, spec.provider_id, spec.item_id))
        assert offer is not None
        extra: dict[str, str] = {}
        if spec.window_start is None:  # no window asked for: the item's own, and the quote says so
            spec = replace(spec, window_start=offer.window_start, window_end=offer.window_end)
            extra["window_source"] = "item"
        check_order_fits_offer(offer_from_row(offer), spec.power_kw, spec.window_start, spec.window_end)
        quote = OrderView(
            spec=spec,
            state=None,
            price_gbp_per_mwh=offer.price_gbp_per_mwh,
            quote_gbp=quote_gbp(spec.power_kw, spec.window_start, spec.window_end, offer.price_gbp_per_mwh),
            updated_at=clock.now(),
            extra_tags=extra,
        )
        return [callback(session, bpp_id, ctx, on, message={"order": order_view_to_order(quote).dump()})]
    if action == "init":
        return [callback(session, bpp_id, ctx, on, message=view(_init(session, bpp_id, ctx, spec)))]
    if action == "confirm":
        order = session.scalars(_order_for_update(bpp_id, ctx, spec)).one()
        if order.state == "CREATED":
            # the provider row, then the offer: every confirm of a provider waits its turn (agent_service.commit)
            session.get(Provider, (bpp_id, order.provider_id), with_for_update=True)
            offer = _locked_offer(session, bpp_id, order.provider_id, order.item_id)
            assert offer is not None
            check_capacity(
                offer_from_row(offer),
                _committed(session, offer),
                Commitment(order.power_kw, order.window_start, order.window_end),
            )
            agent_service.commit(session, order, offer.location_id)  # re-plan with it, or refuse
            transition(session, order, "ACCEPTED", "confirmed", ctx["message_id"])
        elif order.state not in COMMITTED_STATES:
            raise CommitmentError("invalid_request", f"order {order.id} is {order.state}; it cannot be confirmed")
        return [callback(session, bpp_id, ctx, on, message=view(order))]
    if action == "update":
        return [callback(session, bpp_id, ctx, on, message=view(_update(session, spec)))]
    raise CommitmentError("action_not_applicable", f"no processor for {action}")


def processing_failed(session: Session, row: Any, reason: str) -> list[int]:
    """beckn.processing failure handler: a request whose processing failed for good (every attempt
    raised) is answered with on_<action> carrying a Beckn error, and the order as it stands — never
    silence. A search is answered through the gateway that relayed it when the registry names it."""
    payload = json.loads(row.body)
    ctx = payload["context"]
    error = BecknError("internal_error", f"{row.action} could not be processed: {reason}"[:500])
    to_url = None
    if row.action == "search" and row.gateway_id:
        try:
            to_url = url_of_sync(row.gateway_id, type="BG")
        except Exception:  # the registry may be the reason: answer the BAP directly
            to_url = None
    message = None if row.action == "search" else _error_message(session, row.receiver_id, ctx, payload, row.action)
    return [callback(session, row.receiver_id, ctx, f"on_{row.action}", error=error, message=message, to_url=to_url)]


def _error_message(
    session: Session, bpp_id: str, ctx: dict[str, Any], payload: dict[str, Any], action: str
) -> dict[str, Any] | None:
    """The current order (if there is one) travels with the error so the buyer sees its true state."""
    message = payload.get("message") or {}
    order_id = message.get("order_id") or (message.get("order") or {}).get("id")
    order = session.get(Order, order_id) if order_id else None
    if order is None and action in ("confirm", "init"):
        sent = (payload.get("message") or {}).get("order") or {}
        items = sent.get("items") or [{}]
        named = _order_named(
            bpp_id,
            ctx,
            provider_id=str((sent.get("provider") or {}).get("id") or ""),
            item_id=str((items[0] if isinstance(items[0], dict) else {}).get("id") or ""),
            order_id=sent.get("id") if isinstance(sent.get("id"), str) else None,
        )
        order = session.scalars(named).first()
    if order is not None:
        return view(order)
    # No order exists yet (a refused select): echo the buyer's order so it can tell which one failed.
    echo = message.get("order")
    return {"order": echo} if isinstance(echo, dict) else None


def _order_named(
    bpp_id: str, ctx: dict[str, Any], *, provider_id: str, item_id: str, order_id: str | None
) -> Select[Any]:
    """The buyer's order a select/init/confirm names. A buyer may hold several orders with one provider in one
    transaction (different items, or a re-purchase after a cancellation), so the order id the BPP assigned at
    init names it when the message carries one; otherwise the item's open draft (CREATED, at most one: a partial
    unique index) or else the item's latest order."""
    q = select(Order).where(
        Order.bpp_id == bpp_id,
        Order.bap_id == ctx["bap_id"],
        Order.transaction_id == ctx["transaction_id"],
        Order.provider_id == provider_id,
    )
    if order_id:
        return q.where(Order.id == order_id)
    draft_first = case((Order.state == "CREATED", 0), else_=1)
    return q.where(Order.item_id == item_id).order_by(draft_first, Order.created_at.desc()).limit(1)


def _order_for_update(bpp_id: str, ctx: dict[str, Any], spec: OrderSpec) -> Select[Any]:
    """The order _order_named finds, locked for the change being made."""
    named = _order_named(bpp_id, ctx, provider_id=spec.provider_id, item_id=spec.item_id, order_id=spec.order_id)
    return named.with_for_update()


def _init(session: Session, bpp_id: str, ctx: dict[str, Any], spec: OrderSpec) -> Order:
    offer = session.get(Offer, (bpp_id, spec.provider_id, spec.item_id))
    assert offer is not None
    check_order_fits_offer(offer_from_row(offer), spec.power_kw, spec.window_start, spec.window_end)
    order = session.scalars(_order_for_update(bpp_id, ctx, spec)).first()
    if order is not None and order.state != "CREATED" and spec.order_id:
        raise CommitmentError("invalid_request", f"order {order.id} is already {order.state}")
    if order is not None and order.state != "CREATED":
        order = None  # the item's earlier order is past its draft: this init starts a new order (a re-purchase)
    previous = order.state if order is not None else None
    if order is None:
        order = Order(
            bpp_id=bpp_id,
            bap_id=ctx["bap_id"],
            bap_uri=ctx["bap_uri"],
            transaction_id=ctx["transaction_id"],
            provider_id=spec.provider_id,
            state="CREATED",
            city_code=ctx["location"]["city"]["code"],
            country_code=ctx["location"]["country"]["code"],
        )
        session.add(order)
    order.item_id = spec.item_id
    order.power_kw = spec.power_kw
    order.window_start, order.window_end = spec.window_start, spec.window_end
    order.meter_id = spec.meter_id or offer.meter_id
    order.settlement_method = spec.settlement_method
    order.price_gbp_per_mwh = offer.price_gbp_per_mwh
    order.updated_at = clock.now()
    session.flush()
    session.add(
        OrderEvent(
            order_id=order.id,
            from_state=previous,
            to_state="CREATED",
            reason="initialised",
            message_id=ctx["message_id"],
        )
    )
    return order


def _update(session: Session, spec: OrderSpec) -> Order:
    order = session.get(Order, spec.order_id, with_for_update=True)
    assert order is not None
    if order.state not in ("CREATED", "ACCEPTED") or clock.now() >= order.window_start:
        raise CommitmentError(
            "update_not_possible", f"order {order.id} is {order.state}; it can change only before its window opens"
        )
    if spec.provider_id != order.provider_id or spec.item_id != order.item_id:
        raise CommitmentError("update_inconsistency", "provider and item of an order cannot change")
    offer = _locked_offer(session, order.bpp_id, order.provider_id, order.item_id)
    assert offer is not None
    flex = offer_from_row(offer)
    try:
        check_order_fits_offer(flex, spec.power_kw, spec.window_start, spec.window_end)
        if order.state == "ACCEPTED":
            check_capacity(
                flex,
                _committed(session, offer, exclude=order.id),
                Commitment(spec.power_kw, spec.window_start, spec.window_end),
            )
            agent_service.check_update(
                session,
                order,
                offer.location_id,
                power_kw=spec.power_kw,
                start=spec.window_start,
                end=spec.window_end,
            )
    except CommitmentError as exc:
        raise CommitmentError("update_not_possible", str(exc)) from exc
    order.power_kw = spec.power_kw
    order.window_start, order.window_end = spec.window_start, spec.window_end
    if spec.meter_id:
        order.meter_id = spec.meter_id
    session.add(
        OrderEvent(
            order_id=order.id,
            from_state=order.state,
            to_state=order.state,
            reason=f"updated to {spec.power_kw:g} kW {spec.window_start.isoformat()}–{spec.window_end.isoformat()}",
        )
    )
    order.updated_at = clock.now()
    return order


# A search reaches every platform of a host at once (50 siblings in one batch, beckn/processing.py), and
# catalogs change only when offers do: the Beckn form of each offer and provider is built once per distinct
# stored content and reused. Keys are the stored JSON text, so a changed offer is simply a new key.
@functools.lru_cache(maxsize=8192)
def _offer_entry(spec_text: str) -> tuple[FlexOfferSpec, dict[str, Any]]:
    spec = offer_from_json(json.loads(spec_text))
    return spec, offer_to_item(spec).dump()


@functools.lru_cache(maxsize=4096)
def _provider_entry(provider_id: str, name: str, sites_text: str) -> tuple[dict[str, str], dict[str, Any]]:
    sites = json.loads(sites_text)
    skeleton = BecknProvider(
        id=provider_id,
        descriptor=Descriptor(name=name),
        locations=[
            Location(
                id=s["id"],
                descriptor=Descriptor(name=s.get("name") or s["id"]),
                city={"code": s["region"]},
                country={"code": "GBR"},
            )
            for s in sites
        ],
        fulfillments=[Fulfillment(id=FULFILLMENT_TYPE, type=FULFILLMENT_TYPE)],
    ).dump()
    return {s["id"]: s["region"] for s in sites}, skeleton


# A search without a window asks for the current catalog over the planning horizon: every offer that
# has not ended and starts within PLANNING_HORIZON (the agents plan 48 h; static catalogs may reach further).
PLANNING_HORIZON = timedelta(days=7)
_OPEN = (datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC))


@functools.lru_cache(maxsize=256)
def _search_request(message_text: str) -> FlexRequest:
    return intent_to_request(SearchMessage.model_validate_json(message_text).intent, default_window=_OPEN)


def search_request(message: dict[str, Any], now: datetime) -> FlexRequest:
    """The search's request; without a window, [now, now + PLANNING_HORIZON)."""
    req = _search_request(json.dumps(message, sort_keys=True))
    if (req.window_start, req.window_end) == _OPEN:
        req = replace(req, window_start=now, window_end=now + PLANNING_HORIZON)
    return req


_CATALOG_SQL = (
    "SELECT p.provider_id, p.name, p.sites::text, o.spec::text FROM providers p "
    "LEFT JOIN offers o ON o.bpp_id = p.bpp_id AND o.provider_id = p.provider_id AND o.active "
    "WHERE p.bpp_id = %s ORDER BY p.provider_id, o.item_id"
)


def _on_search(session: Session, bpp_id: str, payload: dict[str, Any], row: Any) -> None:
    """Queue the platform's on_search (written with its siblings' in one statement: beckn.outbox.defer).
    A search it cannot answer is answered with an on_search carrying the error."""
    # Answer through the gateway that relayed the search (Beckn: on_search goes back via the BG).
    to_url = None
    if row.gateway_id:
        to_url = url_of_sync(row.gateway_id, type="BG")
        if to_url is None:
            raise RuntimeError(f"gateway {row.gateway_id} is not in the registry")
    try:
        req = search_request(payload.get("message") or {}, clock.now())
    except FlexFormatError as exc:
        error = BecknError("invalid_request", str(exc), paths=exc.path)
        outbox.defer(session, callback_message(bpp_id, payload["context"], "on_search", error=error, to_url=to_url))
        return
    providers: list[dict[str, Any]] = []
    rows = raw(session).execute(_CATALOG_SQL, (bpp_id,)).fetchall()
    for provider_id, grouped in itertools.groupby(rows, key=lambda r: r[0]):
        group = list(grouped)
        region_of, skeleton = _provider_entry(provider_id, group[0][1], group[0][2])
        offers = [_offer_entry(r[3]) for r in group if r[3] is not None]
        matched = {id(o) for o in matching_offers([spec for spec, _ in offers], req, region_of)}
        items = [item for spec, item in offers if id(spec) in matched]
        if items:
            providers.append({**skeleton, "items": items})
    from bpp import cft_market  # token series beside the offers (it imports this module)

    cft_market.add_series(session, bpp_id, req, providers, {r[0]: _provider_entry(*r[:3])[1] for r in rows}.get)
    ident = load_identity(get_settings().home, bpp_id)
    catalog = {"descriptor": Descriptor(name=ident.extra.get("name") or bpp_id).dump(), "providers": providers}
    outbox.defer(
        session, callback_message(bpp_id, payload["context"], "on_search", message={"catalog": catalog}, to_url=to_url)
    )
