"""Routes: register, cancel and read orders (ledger/orders.py)."""

from __future__ import annotations

from datetime import UTC
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, Field

from grid.money import decimal_to_units, gbp_per_mwh_to_millipence
from kernel import clock
from ledger import orders
from ledger.api.deps import Body, LedgerRoute, Runtime, Text, Who, created, read, require_order_reader, tx
from ledger.settlement import DEFAULT_POLICY, OrderTerms

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
    contracted_kw: Decimal
    price_gbp_per_mwh: Decimal
    availability_price_gbp_per_mw_h: Decimal | None = None
    settlement_method: Literal["P415", "CFT"] = "P415"
    resource_type: Literal["compute", "storage"] = "compute"
    confirmed_at: AwareDatetime
    policy_version: Text = DEFAULT_POLICY

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
    reason: Annotated[str, Field(max_length=500)] = ""


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


@router.get("/orders/{order_id}")
def get_order(order_id: str, rt: Runtime, who: Who) -> dict[str, Any]:
    terms, _ = read(rt, lambda c: orders.load_order(c, order_id))
    require_order_reader(who, terms)
    return read(rt, lambda c: orders.order_summary(c, order_id))
