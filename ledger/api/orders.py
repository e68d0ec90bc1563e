"""Routes: register (with both parties' signed Beckn messages), amend (with the provider's signed
on_update), cancel and read orders and their signed agreements (ledger/orders.py, ledger/agreements.py)."""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime

from grid.money import gbp_per_mwh_to_millipence
from kernel import clock
from kernel.config import get_settings
from ledger import agreements_db, delivery, orders
from ledger.agreements import AgreedTerms, order_agreement, verify_message
from ledger.api.deps import Body, LedgerRoute, Runtime, Text, Who, created, read, require_order_reader, tx
from ledger.api.signed import Keys, SignedMessageIn
from ledger.errors import LedgerError
from ledger.settlement import DEFAULT_POLICY
from schemas import limits

router = APIRouter(route_class=LedgerRoute)


class OrderIn(Body):
    """An order both parties signed: the buyer's confirm and the provider's on_confirm as they travelled.
    The order's id, provider, BAP, meter, window, kW, price, settlement method, transaction and acceptance
    time come from the signed on_confirm; the fields below are what the messages do not carry."""

    confirm: SignedMessageIn
    on_confirm: SignedMessageIn
    supplier_id: Text
    availability_price_gbp_per_mw_h: limits.PriceDecimal | None = None
    resource_type: Literal["compute", "storage"] = "compute"
    policy_version: Text = DEFAULT_POLICY

    def extras(self) -> orders.OrderExtras:
        avail = self.availability_price_gbp_per_mw_h
        return orders.OrderExtras(
            supplier_id=self.supplier_id,
            availability_price_millipence_per_mw_h=None
            if avail is None
            else gbp_per_mwh_to_millipence(avail, "availability_price_gbp_per_mw_h"),
            resource_type=self.resource_type,
            policy_version=self.policy_version,
        )


_WINDOW_FIELD = "on_confirm.message.order.fulfillments[0].stops[0].time"


def _window_in_reach(terms: AgreedTerms) -> None:
    """Not centuries ahead, nor longer than a month (schemas/limits.py); a window already open is the
    domain's refusal (after_gate_closure), with its own code."""
    days = get_settings().max_window_ahead_days
    if terms.window_start > clock.now() + timedelta(days=days):
        raise LedgerError("window_invalid", f"{_WINDOW_FIELD}: the window starts more than {days:g} days ahead")
    if terms.window_end - terms.window_start > timedelta(days=limits.MAX_WINDOW_DAYS):
        raise LedgerError("window_invalid", f"{_WINDOW_FIELD}: the window is longer than {limits.MAX_WINDOW_DAYS} days")


class CancelIn(Body):
    reason: limits.FreeText = ""


class AmendIn(Body):
    """The provider's signed on_update accepting new kW and window; its message id makes a re-send idempotent."""

    on_update: SignedMessageIn


@router.post("/orders")
def post_order(body: OrderIn, rt: Runtime, who: Who, keys: Keys) -> JSONResponse:
    """Register an order with both signed messages (role bap: the BAP that signed the confirm)."""
    agreement = order_agreement(
        body.confirm.signed("confirm"),
        body.on_confirm.signed("on_confirm"),
        keys,
        bap_id=None if who.role == "admin" else who.participant_id,
        now=clock.wall_now(),
    )
    _window_in_reach(agreement.terms)
    extras = body.extras()
    return created(tx(rt, lambda c: orders.register_agreed_order(c, agreement, extras, clock.now())))


@router.get("/orders/{order_id}/agreement")
def get_agreement(order_id: str, rt: Runtime, who: Who) -> dict[str, Any]:
    """The signed messages the order was registered with (base64 bytes + Authorization headers), and its
    amendments' — enough to re-verify every signature offline against the registry's keys."""
    terms, _ = read(rt, lambda c: orders.load_order(c, order_id))
    require_order_reader(who, terms)
    return read(rt, lambda c: agreements_db.order_agreements(c, order_id))


@router.post("/orders/{order_id}/cancel")
def cancel_order(order_id: str, rt: Runtime, who: Who, body: CancelIn | None = None) -> JSONResponse:
    terms, _ = read(rt, lambda c: orders.load_order(c, order_id))
    who.require_participant("bap", terms.bap_id)
    reason = body.reason if body else ""
    return created(tx(rt, lambda c: orders.cancel_order(c, order_id, clock.now(), reason)))


@router.post("/orders/{order_id}/amend")
def amend_order(order_id: str, body: AmendIn, rt: Runtime, who: Who, keys: Keys) -> JSONResponse:
    """Amend the order's kW and window before its window opens with the provider's signed on_update (role
    bap, own orders only); append-only, the escrow follows the new terms and settlement uses them."""
    terms, _ = read(rt, lambda c: orders.load_order(c, order_id))
    who.require_participant("bap", terms.bap_id)
    on_update = verify_message(
        body.on_update.signed("on_update"),
        keys,
        field="on_update",
        action="on_update",
        participant_type="BPP",
        now=clock.wall_now(),
    )
    result = tx(rt, lambda c: orders.amend_agreed_order(c, order_id, on_update, clock.now()))
    return JSONResponse(result, status_code=201 if result["status"] == "amended" else 200)


@router.get("/orders")
def list_orders(
    rt: Runtime,
    who: Who,
    provider_id: Annotated[str | None, Query(max_length=200)] = None,
    bap_id: Annotated[str | None, Query(max_length=200)] = None,
    meter_id: Annotated[str | None, Query(max_length=200)] = None,
    transaction_id: Annotated[str | None, Query(max_length=200)] = None,
    window_from: Annotated[AwareDatetime | None, Query()] = None,
    window_to: Annotated[AwareDatetime | None, Query()] = None,
    cancelled: Annotated[bool | None, Query()] = None,
    after: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=limits.MAX_PAGE_SIZE)] = 100,
) -> dict[str, Any]:
    """Orders this key may read (admin, finance: all; a provider its own; a BAP those it registered), by id;
    the window filters keep orders overlapping [window_from, window_to); page with `after` = `next_after`."""
    return read(
        rt,
        lambda c: orders.list_orders(
            c,
            role=who.role,
            participant_id=who.participant_id,
            provider_id=provider_id,
            bap_id=bap_id,
            meter_id=meter_id,
            transaction_id=transaction_id,
            window_from=None if window_from is None else window_from.astimezone(UTC),
            window_to=None if window_to is None else window_to.astimezone(UTC),
            cancelled=cancelled,
            after=after,
            limit=limit,
        ),
    )


@router.get("/orders/{order_id}")
def get_order(order_id: str, rt: Runtime, who: Who) -> dict[str, Any]:
    terms, _ = read(rt, lambda c: orders.load_order(c, order_id))
    require_order_reader(who, terms)
    return read(rt, lambda c: orders.order_summary(c, order_id))


@router.get("/orders/{order_id}/delivery")
def get_delivery(order_id: str, rt: Runtime, who: Who) -> dict[str, Any]:
    """The order's delivery so far, per declared period, as metering evidences it (ledger/delivery.py): what its
    BAP watches during the window. Read only; settlement runs decide what is paid."""
    terms, _ = read(rt, lambda c: orders.load_order(c, order_id))
    require_order_reader(who, terms)
    return read(rt, lambda c: delivery.delivery_so_far(c, order_id, clock.now()))
