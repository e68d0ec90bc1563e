"""Routes: register, cancel and read orders (ledger/orders.py)."""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, model_validator

from grid.money import decimal_to_units, gbp_per_mwh_to_millipence
from kernel import clock
from kernel.config import get_settings
from ledger import orders
from ledger.api.deps import Body, LedgerRoute, Runtime, Text, Who, created, read, require_order_reader, tx
from ledger.settlement import DEFAULT_POLICY, OrderTerms
from schemas import limits

router = APIRouter(route_class=LedgerRoute)


class OrderIn(Body):
    order_id: Text
    transaction_id: Text
    provider_id: Text
    bap_id: Text
    meter_id: Text
    supplier_id: Text
    window_start: AwareDatetime
    window_end: AwareDatetime
    contracted_kw: limits.KilowattsDecimal
    price_gbp_per_mwh: limits.PriceDecimal
    availability_price_gbp_per_mw_h: limits.PriceDecimal | None = None
    settlement_method: Literal["P415", "CFT"] = "P415"
    resource_type: Literal["compute", "storage"] = "compute"
    confirmed_at: AwareDatetime
    policy_version: Text = DEFAULT_POLICY

    @model_validator(mode="after")
    def _window_in_reach(self) -> OrderIn:
        # Not centuries ahead, nor longer than a month (schemas/limits.py); a window already open is the
        # domain's refusal (after_gate_closure), with its own code.
        days = get_settings().max_window_ahead_days
        if self.window_start > clock.now() + timedelta(days=days):
            raise ValueError(f"window_start: is more than {days:g} days ahead of market time")
        if self.window_end - self.window_start > timedelta(days=limits.MAX_WINDOW_DAYS):
            raise ValueError(f"window_end: the window is longer than {limits.MAX_WINDOW_DAYS} days")
        return self

    def terms(self) -> OrderTerms:
        meter = self.meter_id.removeprefix("der://")
        return OrderTerms(
            self.order_id,
            self.provider_id,
            self.bap_id,
            meter,
            self.supplier_id,
            self.window_start.astimezone(UTC),
            self.window_end.astimezone(UTC),
            decimal_to_units(self.contracted_kw, 3, "contracted_kw"),
            gbp_per_mwh_to_millipence(self.price_gbp_per_mwh, "price_gbp_per_mwh"),
            None
            if self.availability_price_gbp_per_mw_h is None
            else gbp_per_mwh_to_millipence(self.availability_price_gbp_per_mw_h, "availability_price_gbp_per_mw_h"),
            self.settlement_method,
            self.resource_type,
            self.confirmed_at.astimezone(UTC),
            self.policy_version,
        )


class CancelIn(Body):
    reason: limits.FreeText = ""


class AmendIn(Body):
    """New terms of a registered order (an accepted Beckn update); `reference` makes a re-send idempotent."""

    contracted_kw: limits.KilowattsDecimal
    window_start: AwareDatetime
    window_end: AwareDatetime
    amended_at: AwareDatetime
    reference: Text


@router.post("/orders")
def post_order(body: OrderIn, rt: Runtime, who: Who) -> JSONResponse:
    who.require_participant("bap", body.bap_id)
    terms = body.terms()
    return created(tx(rt, lambda c: orders.register_order(c, terms, body.transaction_id, clock.now())))


@router.post("/orders/{order_id}/cancel")
def cancel_order(order_id: str, rt: Runtime, who: Who, body: CancelIn | None = None) -> JSONResponse:
    terms, _ = read(rt, lambda c: orders.load_order(c, order_id))
    who.require_participant("bap", terms.bap_id)
    reason = body.reason if body else ""
    return created(tx(rt, lambda c: orders.cancel_order(c, order_id, clock.now(), reason)))


@router.post("/orders/{order_id}/amend")
def amend_order(order_id: str, body: AmendIn, rt: Runtime, who: Who) -> JSONResponse:
    """Amend the order's kW and window before its window opens (role bap, own orders only); append-only,
    the escrow follows the new terms and settlement uses them."""
    terms, _ = read(rt, lambda c: orders.load_order(c, order_id))
    who.require_participant("bap", terms.bap_id)
    contracted_w = decimal_to_units(body.contracted_kw, 3, "contracted_kw")
    result = tx(
        rt,
        lambda c: orders.amend_order(
            c,
            order_id,
            window_start=body.window_start.astimezone(UTC),
            window_end=body.window_end.astimezone(UTC),
            contracted_w=contracted_w,
            amended_at=body.amended_at.astimezone(UTC),
            reference=body.reference,
            now=clock.now(),
        ),
    )
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
