"""How flexibility is carried in Beckn 1.1 messages (../shared/DESIGN.md "Beckn 1.1 encoding").

- An offer is a catalog Item: `time.range` = callable window, `quantity.{available,minimum,maximum}
  .measure` in kW, `price` = utilisation price in GBP per MWh, and a TagGroup `flexibility` with the
  DEG demand-flexibility attributes (cf. ../shared/reference/beckn/deg/df-new-flow examples).
- A search intent: `intent.fulfillment.stops[0].time.range` = wanted window, `intent.item.quantity.
  selected.measure` = kW wanted, TagGroup `flexibility_request` (max price, region, resource type).
- An order: `items[0].quantity.selected.measure` kW, `fulfillments[0]` of type DEMAND_RESPONSE with
  one stop whose `time.range` is the committed window and `location.address` = "der://<meter-id>".

Parsing functions raise FlexFormatError with the JSON path at fault; the pipeline turns it into a NACK.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation

from schemas.core import (
    Cancellation,
    CancelledBy,
    Descriptor,
    Fulfillment,
    FulfillmentState,
    Intent,
    Item,
    ItemQuantity,
    Location,
    Order,
    Payment,
    Price,
    Provider,
    QuantityValue,
    Quotation,
    QuoteBreakup,
    Scalar,
    Stop,
    Tag,
    TagGroup,
    Time,
    TimeRange,
)
from schemas.limits import MAX_KW, MAX_SAFE_INTEGER

FLEX_TAG = "flexibility"
REQUEST_TAG = "flexibility_request"
SETTLEMENT_TAG = "settlement"
FULFILLMENT_TYPE = "DEMAND_RESPONSE"
METER_SCHEME = "der://"

# Lifecycle of a load-reduction order (../shared/DESIGN.md "order states"), carried in
# fulfillments[0].state.descriptor.code. Beckn 1.1.1's order.status allows only three values.
STATES = ("CREATED", "ACCEPTED", "IN-PROGRESS", "COMPLETED", "PARTIALLY-DELIVERED", "SETTLED", "CANCELLED")
ORDER_STATUS_FOR_STATE = {
    "CREATED": "ACTIVE",
    "ACCEPTED": "ACTIVE",
    "IN-PROGRESS": "ACTIVE",
    "COMPLETED": "COMPLETE",
    "PARTIALLY-DELIVERED": "COMPLETE",
    "SETTLED": "COMPLETE",
    "CANCELLED": "CANCELLED",
}


class FlexFormatError(ValueError):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


def dec(value: float | int | Decimal, places: int = 3) -> str:
    """A Beckn DecimalValue string with fixed places (no exponent, no float noise)."""
    q = Decimal(1).scaleb(-places)
    return str(Decimal(str(value)).quantize(q))


def _num(text: str | None, path: str) -> float:
    if text is None:
        raise FlexFormatError(path, "is required")
    try:
        value = float(Decimal(text))
    except InvalidOperation as exc:
        raise FlexFormatError(path, f"{text!r} is not a number") from exc
    if not math.isfinite(value) or abs(value) > MAX_SAFE_INTEGER:
        raise FlexFormatError(path, f"{text!r} is out of range")
    return value


def _power(text: str | None, path: str) -> float:
    """A kW quantity: 0 < kW ≤ MAX_KW (schemas/limits.py)."""
    power = _num(text, path)
    if power <= 0:
        raise FlexFormatError(path, "must be positive")
    if power > MAX_KW:
        raise FlexFormatError(path, f"{power:g} kW is beyond {MAX_KW:g} kW")
    return power


def _tags(code: str, values: Mapping[str, object]) -> TagGroup:
    return TagGroup(
        display=True,
        descriptor=Descriptor(code=code),
        list_=[Tag(descriptor=Descriptor(code=k), value=str(v)) for k, v in values.items() if v is not None],
    )


def _find_tags(groups: list[TagGroup] | None, code: str) -> TagGroup | None:
    for g in groups or []:
        if g.descriptor and g.descriptor.code == code:
            return g
    return None


def _range(time: Time | None, path: str) -> tuple[datetime, datetime]:
    if time is None or time.range is None or time.range.start is None or time.range.end is None:
        raise FlexFormatError(path, "time.range.start and time.range.end are required")
    start, end = time.range.start, time.range.end
    if start.tzinfo is None or end.tzinfo is None:
        raise FlexFormatError(path, "times must carry a UTC offset")
    if end <= start:
        raise FlexFormatError(path, "time.range.end must be after start")
    return start, end


def _window(start: datetime, end: datetime) -> Time:
    return Time(range=TimeRange(start=start, end=end))


def _kw(value: float) -> QuantityValue:
    return QuantityValue(measure=Scalar(type="CONSTANT", value=dec(value, 1), unit="kW"))


# -- offers ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FlexOfferSpec:
    item_id: str
    provider_id: str
    location_id: str
    window_start: datetime
    window_end: datetime
    available_kw: float
    min_kw: float
    max_kw: float
    price_gbp_per_mwh: float
    resource_type: str = "compute"  # compute | storage
    min_duration_min: int = 30
    max_duration_min: int = 240
    response_time_s: int = 300
    baseline_method: str = "10_of_10"
    availability_price_gbp_per_mw_h: float | None = None
    expected_carbon_g_per_kwh: float | None = None
    marginal_cost_gbp_per_mwh: float | None = None
    policy_version: str = "p415-v1"
    name: str | None = None
    # The reduction a buyer of the whole offer is expected to be paid for against the settlement baseline
    # (10-of-10 on the site's metered history; bpp/paid_reduction.py), beside the planned `available_kw`;
    # None with the reason when it cannot be known (no metered history yet).
    expected_paid_kw: float | None = None
    expected_paid_reason: str | None = None


def offer_to_item(o: FlexOfferSpec) -> Item:
    return Item(
        id=o.item_id,
        descriptor=Descriptor(name=o.name or f"{o.resource_type} load reduction", code=o.resource_type),
        price=Price(currency="GBP", value=dec(o.price_gbp_per_mwh, 2)),
        quantity=ItemQuantity(available=_kw(o.available_kw), minimum=_kw(o.min_kw), maximum=_kw(o.max_kw)),
        location_ids=[o.location_id],
        fulfillment_ids=[FULFILLMENT_TYPE],
        time=_window(o.window_start, o.window_end),
        tags=[
            _tags(
                FLEX_TAG,
                {
                    "resource_type": o.resource_type,
                    "min_duration_min": o.min_duration_min,
                    "max_duration_min": o.max_duration_min,
                    "response_time_s": o.response_time_s,
                    "baseline_method": o.baseline_method,
                    "price_unit": "GBP/MWh",
                    "availability_price_gbp_per_mw_h": (
                        dec(o.availability_price_gbp_per_mw_h, 2)
                        if o.availability_price_gbp_per_mw_h is not None
                        else None
                    ),
                    "expected_carbon_g_per_kwh": (
                        dec(o.expected_carbon_g_per_kwh, 1) if o.expected_carbon_g_per_kwh is not None else None
                    ),
                    "marginal_cost_gbp_per_mwh": (
                        dec(o.marginal_cost_gbp_per_mwh, 2) if o.marginal_cost_gbp_per_mwh is not None else None
                    ),
                    "policy_version": o.policy_version,
                    "expected_paid_kw": dec(o.expected_paid_kw, 1) if o.expected_paid_kw is not None else None,
                    "expected_paid_reason": o.expected_paid_reason,
                },
            )
        ],
    )


def item_to_offer(item: Item, provider_id: str, path: str = "item") -> FlexOfferSpec:
    """Parse a catalog item back into an offer (the BAP reading on_search)."""
    if not item.id:
        raise FlexFormatError(f"{path}.id", "is required")
    start, end = _range(item.time, f"{path}.time")
    q = item.quantity or ItemQuantity()

    def kw(v: QuantityValue | None, name: str) -> float:
        value_path = f"{path}.quantity.{name}.measure.value"
        value = _num(v.measure.value if v and v.measure else None, value_path)
        if value > MAX_KW:
            raise FlexFormatError(value_path, f"{value:g} kW is beyond {MAX_KW:g} kW")
        return value

    tags = _find_tags(item.tags, FLEX_TAG) or TagGroup()

    def opt(code: str) -> float | None:
        v = tags.get(code)
        return None if v is None else _num(v, f"{path}.tags.{FLEX_TAG}.{code}")

    return FlexOfferSpec(
        item_id=item.id,
        provider_id=provider_id,
        location_id=(item.location_ids or [""])[0],
        window_start=start,
        window_end=end,
        available_kw=kw(q.available, "available"),
        min_kw=kw(q.minimum, "minimum") if q.minimum else 0.0,
        max_kw=kw(q.maximum, "maximum") if q.maximum else kw(q.available, "available"),
        price_gbp_per_mwh=_num(item.price.value if item.price else None, f"{path}.price.value"),
        resource_type=tags.get("resource_type") or "compute",
        min_duration_min=int(opt("min_duration_min") or 30),
        max_duration_min=int(opt("max_duration_min") or 240),
        response_time_s=int(opt("response_time_s") or 300),
        baseline_method=tags.get("baseline_method") or "10_of_10",
        availability_price_gbp_per_mw_h=opt("availability_price_gbp_per_mw_h"),
        expected_carbon_g_per_kwh=opt("expected_carbon_g_per_kwh"),
        marginal_cost_gbp_per_mwh=opt("marginal_cost_gbp_per_mwh"),
        policy_version=tags.get("policy_version") or "p415-v1",
        name=item.descriptor.name if item.descriptor else None,
        expected_paid_kw=opt("expected_paid_kw"),
        expected_paid_reason=tags.get("expected_paid_reason"),
    )


# -- search intent --------------------------------------------------------------------------------
@dataclass(frozen=True)
class FlexRequest:
    window_start: datetime
    window_end: datetime
    power_kw: float
    max_price_gbp_per_mwh: float | None = None
    region: str | None = None
    resource_type: str | None = None


def request_to_intent(r: FlexRequest) -> Intent:
    return Intent(
        fulfillment=Fulfillment(
            type=FULFILLMENT_TYPE, stops=[Stop(type="end", time=_window(r.window_start, r.window_end))]
        ),
        item=Item(quantity=ItemQuantity(selected=_kw(r.power_kw))),
        tags=[
            _tags(
                REQUEST_TAG,
                {
                    "max_price_gbp_per_mwh": dec(r.max_price_gbp_per_mwh, 2)
                    if r.max_price_gbp_per_mwh is not None
                    else None,
                    "region": r.region,
                    "resource_type": r.resource_type,
                },
            )
        ],
    )


def intent_to_request(
    intent: Intent | None,
    path: str = "message.intent",
    default_window: tuple[datetime, datetime] | None = None,
) -> FlexRequest:
    """The flexibility request of a search intent. With `default_window` (a receiver that answers any
    well-formed search), a search without a window or a quantity asks for everything in that window."""
    if intent is None:
        if default_window is None:
            raise FlexFormatError(path, "is required")
        intent = Intent()
    stops = intent.fulfillment.stops if intent.fulfillment else None
    if not stops and default_window is None:
        raise FlexFormatError(f"{path}.fulfillment.stops", "one stop with the wanted time.range is required")
    if (stops and stops[0].time is not None) or default_window is None:
        start, end = _range(stops[0].time if stops else None, f"{path}.fulfillment.stops[0].time")
    else:
        start, end = default_window
    sel = intent.item.quantity.selected if intent.item and intent.item.quantity else None
    value = sel.measure.value if sel and sel.measure else None
    if value is None and default_window is not None:
        power = 0.0  # no quantity named: every offer, whatever its size
    else:
        power = _power(value, f"{path}.item.quantity.selected.measure.value")
    tags = _find_tags(intent.tags, REQUEST_TAG) or TagGroup()
    max_price = tags.get("max_price_gbp_per_mwh")
    return FlexRequest(
        window_start=start,
        window_end=end,
        power_kw=power,
        max_price_gbp_per_mwh=_num(max_price, f"{path}.tags.max_price_gbp_per_mwh") if max_price else None,
        region=tags.get("region"),
        resource_type=tags.get("resource_type"),
    )


# -- orders ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OrderSpec:
    provider_id: str
    item_id: str
    power_kw: float
    window_start: datetime
    window_end: datetime
    meter_id: str | None = None
    settlement_method: str = "P415"  # P415 | CFT
    order_id: str | None = None


@dataclass(frozen=True)
class OrderCancellation:
    """Who cancelled an order (Beckn `order.cancellation.cancelled_by`) and why (`reason.descriptor.name`)."""

    cancelled_by: CancelledBy
    reason: str


@dataclass(frozen=True)
class OrderView:
    """What the BPP answers in on_select/on_init/on_confirm/on_status/on_cancel/on_update."""

    spec: OrderSpec
    state: str | None  # None for a quote (on_select)
    price_gbp_per_mwh: float
    quote_gbp: float
    updated_at: datetime
    cancellation: OrderCancellation | None = None  # set exactly when state is CANCELLED
    extra_tags: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.state == "CANCELLED") != (self.cancellation is not None):
            raise ValueError(f"an order view in state {self.state} with cancellation {self.cancellation}")


def order_spec_to_order(o: OrderSpec) -> Order:
    stop = Stop(type="end", time=_window(o.window_start, o.window_end))
    if o.meter_id:
        stop.location = Location(address=f"{METER_SCHEME}{o.meter_id}")
    return Order(
        id=o.order_id,
        provider=Provider(id=o.provider_id),
        items=[Item(id=o.item_id, quantity=ItemQuantity(selected=_kw(o.power_kw)))],
        fulfillments=[Fulfillment(id=FULFILLMENT_TYPE, type=FULFILLMENT_TYPE, stops=[stop])],
        payments=[
            Payment(
                type="POST-FULFILLMENT",
                collected_by="BAP",
                params={"currency": "GBP"},
                tags=[_tags(SETTLEMENT_TAG, {"settlement_method": o.settlement_method})],
            )
        ],
    )


def order_to_spec(order: Order | None, path: str = "message.order", need_window: bool = True) -> OrderSpec:
    if order is None:
        raise FlexFormatError(path, "is required")
    if not order.provider or not order.provider.id:
        raise FlexFormatError(f"{path}.provider.id", "is required")
    if not order.items or not order.items[0].id:
        raise FlexFormatError(f"{path}.items[0].id", "is required")
    if len(order.items) != 1:
        raise FlexFormatError(f"{path}.items", "exactly one flexibility item per order")
    item = order.items[0]
    sel = item.quantity.selected if item.quantity else None
    power = _power(
        sel.measure.value if sel and sel.measure else None, f"{path}.items[0].quantity.selected.measure.value"
    )
    if sel and sel.measure and sel.measure.unit not in (None, "kW"):
        raise FlexFormatError(f"{path}.items[0].quantity.selected.measure.unit", "must be kW")
    stop = None
    if order.fulfillments and order.fulfillments[0].stops:
        stop = order.fulfillments[0].stops[0]
    if stop is None:
        if need_window:
            raise FlexFormatError(f"{path}.fulfillments[0].stops[0]", "the load-reduction window is required")
        start = end = None
    else:
        start, end = _range(stop.time, f"{path}.fulfillments[0].stops[0].time")
    meter = None
    if stop is not None and stop.location and stop.location.address:
        addr = stop.location.address
        if not addr.startswith(METER_SCHEME) or len(addr) <= len(METER_SCHEME):
            raise FlexFormatError(
                f"{path}.fulfillments[0].stops[0].location.address", f"must be {METER_SCHEME}<meter-id>"
            )
        meter = addr[len(METER_SCHEME) :]
    method = "P415"
    if order.payments:
        g = _find_tags(order.payments[0].tags, SETTLEMENT_TAG)
        if g and g.get("settlement_method"):
            method = str(g.get("settlement_method"))
    if method not in ("P415", "CFT"):
        raise FlexFormatError(f"{path}.payments[0].tags.settlement_method", "must be P415 or CFT")
    return OrderSpec(
        provider_id=order.provider.id,
        item_id=item.id or "",
        power_kw=power,
        window_start=start,  # type: ignore[arg-type]
        window_end=end,  # type: ignore[arg-type]
        meter_id=meter,
        settlement_method=method,
        order_id=order.id,
    )


def order_view_to_order(v: OrderView) -> Order:
    order = order_spec_to_order(v.spec)
    hours = (v.spec.window_end - v.spec.window_start).total_seconds() / 3600
    energy_mwh = v.spec.power_kw * hours / 1000
    order.items[0].price = Price(currency="GBP", value=dec(v.price_gbp_per_mwh, 2))  # type: ignore[index]
    order.quote = Quotation(
        price=Price(currency="GBP", value=dec(v.quote_gbp, 2)),
        breakup=[
            QuoteBreakup(
                item=Item(id=v.spec.item_id),
                title=f"utilisation {dec(energy_mwh, 3)} MWh @ {dec(v.price_gbp_per_mwh, 2)} GBP/MWh",
                price=Price(currency="GBP", value=dec(v.quote_gbp, 2)),
            )
        ],
        ttl="PT15M",
    )
    if v.state is not None:
        order.status = ORDER_STATUS_FOR_STATE[v.state]  # type: ignore[assignment]
        order.type = "DRAFT" if v.state == "CREATED" else "DEFAULT"
        order.updated_at = v.updated_at
        order.fulfillments[0].state = FulfillmentState(  # type: ignore[index]
            descriptor=Descriptor(code=v.state), updated_at=v.updated_at
        )
    if v.cancellation is not None:
        order.cancellation = Cancellation(
            cancelled_by=v.cancellation.cancelled_by, reason={"descriptor": {"name": v.cancellation.reason}}
        )
    if v.extra_tags:
        order.tags = [_tags("flexmarket", v.extra_tags)]
    return order


def order_state(order: Order | None) -> str | None:
    """The flexibility lifecycle state of an order (fulfillment state code)."""
    if order and order.fulfillments and order.fulfillments[0].state and order.fulfillments[0].state.descriptor:
        return order.fulfillments[0].state.descriptor.code
    return None


def quote_gbp(power_kw: float, window_start: datetime, window_end: datetime, price_gbp_per_mwh: float) -> float:
    hours = (window_end - window_start).total_seconds() / 3600
    return power_kw * hours / 1000 * price_gbp_per_mwh


# -- Compute Flex Token series and token orders (issue 12 "Compute Flex Tokens in the market") -----
# A series is a catalog item whose id is the ledger's series id, `time.range` its validity window,
# `price` the price per token (GBP), `quantity.available.count` the tokens the provider still sells, and
# a TagGroup `cft_series` carrying the same terms by name. A token order names the series as its one
# item, the tokens in `items[0].quantity.selected.count` and, from on_select on, the total in
# `quote.price` (GBP) — the terms the ledger checks the buyer's signed confirm against (`/cft/sell`).
SERIES_TAG = "cft_series"
TOKEN_PRICE_UNIT = "GBP/token"  # one token = 1 MWh of callable load reduction within the window


@dataclass(frozen=True)
class TokenSeriesSpec:
    series_id: str
    provider_id: str
    valid_from: datetime
    valid_to: datetime
    price_gbp_per_token: Decimal
    tokens_available: int


def is_series_item(item: Item) -> bool:
    """Whether a catalog item is a token series (tag group `cft_series`) rather than a flexibility offer."""
    return _find_tags(item.tags, SERIES_TAG) is not None


def _pence(value: Decimal, path: str) -> Decimal:
    if not value.is_finite() or value < 0 or value != value.quantize(Decimal("0.01")) or value > MAX_SAFE_INTEGER:
        raise FlexFormatError(path, f"{value} is not a non-negative amount in whole pence")
    return value.quantize(Decimal("0.01"))


def _money(text: str | None, path: str) -> Decimal:
    if text is None:
        raise FlexFormatError(path, "is required")
    try:
        return _pence(Decimal(text), path)
    except InvalidOperation as exc:
        raise FlexFormatError(path, f"{text!r} is not a number") from exc


def series_to_item(s: TokenSeriesSpec) -> Item:
    if s.tokens_available < 0:
        raise ValueError(f"series {s.series_id}: tokens_available must not be negative")
    price = str(_pence(s.price_gbp_per_token, "price_gbp_per_token"))
    return Item(
        id=s.series_id,
        descriptor=Descriptor(name=f"Compute Flex Tokens {s.series_id}", code="cft"),
        price=Price(currency="GBP", value=price),
        quantity=ItemQuantity(available=QuantityValue(count=s.tokens_available)),
        time=_window(s.valid_from, s.valid_to),
        tags=[
            _tags(
                SERIES_TAG,
                {
                    "series_id": s.series_id,
                    "provider_id": s.provider_id,
                    "valid_from": s.valid_from.isoformat(),
                    "valid_to": s.valid_to.isoformat(),
                    "price_gbp_per_token": price,
                    "tokens_available": s.tokens_available,
                    "price_unit": TOKEN_PRICE_UNIT,
                },
            )
        ],
    )


def item_to_series(item: Item, provider_id: str, path: str = "item") -> TokenSeriesSpec:
    """Parse a catalog series item (the BAP reading on_search); the tag group is the authority, and it must
    agree with the item's id, window and price."""
    tags = _find_tags(item.tags, SERIES_TAG)
    if tags is None:
        raise FlexFormatError(f"{path}.tags", f"a token series needs the tag group {SERIES_TAG!r}")
    where = f"{path}.tags.{SERIES_TAG}"
    series_id = tags.get("series_id")
    if not series_id or series_id != item.id:
        raise FlexFormatError(f"{where}.series_id", f"{series_id!r} must be the item id {item.id!r}")
    if tags.get("provider_id") not in (None, provider_id):
        raise FlexFormatError(f"{where}.provider_id", f"{tags.get('provider_id')!r} is not provider {provider_id!r}")
    start, end = _range(
        _window(
            _instant(tags.get("valid_from"), f"{where}.valid_from"), _instant(tags.get("valid_to"), f"{where}.valid_to")
        ),
        where,
    )
    price = _money(tags.get("price_gbp_per_token"), f"{where}.price_gbp_per_token")
    available = _num(tags.get("tokens_available"), f"{where}.tokens_available")
    if available < 0 or available != int(available):
        raise FlexFormatError(f"{where}.tokens_available", "must be a whole number of tokens, not negative")
    if (
        item.price is not None
        and item.price.value is not None
        and _money(item.price.value, f"{path}.price.value") != price
    ):
        raise FlexFormatError(f"{path}.price.value", "must equal the tag group's price_gbp_per_token")
    return TokenSeriesSpec(series_id, provider_id, start, end, price, int(available))


def _instant(text: str | None, path: str) -> datetime:
    if text is None:
        raise FlexFormatError(path, "is required")
    try:
        ts = datetime.fromisoformat(text)
    except ValueError as exc:
        raise FlexFormatError(path, f"{text!r} is not an ISO 8601 time") from exc
    if ts.tzinfo is None:
        raise FlexFormatError(path, "must carry a UTC offset")
    return ts


@dataclass(frozen=True)
class TokenOrderSpec:
    """A purchase of `tokens` of one series from its provider; `price_gbp_per_token` once quoted."""

    provider_id: str
    series_id: str
    tokens: int
    price_gbp_per_token: Decimal | None = None
    order_id: str | None = None
    state: str | None = None  # CREATED (on_init), ACCEPTED (on_confirm: sold on the ledger)

    @property
    def total_gbp(self) -> Decimal | None:
        if self.price_gbp_per_token is None:
            return None
        return (self.price_gbp_per_token * self.tokens).quantize(Decimal("0.01"))


def token_order_to_order(t: TokenOrderSpec) -> Order:
    if t.tokens <= 0:
        raise ValueError("a token order needs a positive number of tokens")
    item = Item(id=t.series_id, quantity=ItemQuantity(selected=QuantityValue(count=t.tokens)))
    order = Order(id=t.order_id, provider=Provider(id=t.provider_id), items=[item])
    total = t.total_gbp
    if t.price_gbp_per_token is not None and total is not None:
        item.price = Price(currency="GBP", value=str(_pence(t.price_gbp_per_token, "price_gbp_per_token")))
        order.quote = Quotation(
            price=Price(currency="GBP", value=str(total)),
            breakup=[
                QuoteBreakup(
                    item=Item(id=t.series_id),
                    title=f"{t.tokens} CFT @ {item.price.value} GBP/token",
                    price=Price(currency="GBP", value=str(total)),
                )
            ],
            ttl="PT15M",
        )
    if t.state is not None:
        order.status = ORDER_STATUS_FOR_STATE[t.state]  # type: ignore[assignment]
        order.tags = [_tags(SERIES_TAG, {"state": t.state})]
    return order


def order_to_token_spec(order: Order | None, path: str = "message.order") -> TokenOrderSpec:
    """A token order's terms; the quoted price, when there is one, is the total over the tokens."""
    if order is None:
        raise FlexFormatError(path, "is required")
    if not order.provider or not order.provider.id:
        raise FlexFormatError(f"{path}.provider.id", "is required")
    if not order.items or len(order.items) != 1 or not order.items[0].id:
        raise FlexFormatError(f"{path}.items", "exactly one item, the token series")
    item = order.items[0]
    count = item.quantity.selected.count if item.quantity and item.quantity.selected else None
    if count is None or count <= 0 or count > MAX_SAFE_INTEGER:
        raise FlexFormatError(f"{path}.items[0].quantity.selected.count", "a positive whole number of tokens")
    price = None
    if order.quote is not None and order.quote.price is not None:
        total = _money(order.quote.price.value, f"{path}.quote.price.value")
        if (order.quote.price.currency or "GBP") != "GBP":
            raise FlexFormatError(f"{path}.quote.price.currency", "must be GBP")
        price = total / count
        if price != price.quantize(Decimal("0.01")):
            raise FlexFormatError(f"{path}.quote.price.value", f"{total} is not {count} × a whole-pence price")
        price = price.quantize(Decimal("0.01"))
    state_tags = _find_tags(order.tags, SERIES_TAG)
    return TokenOrderSpec(
        provider_id=order.provider.id,
        series_id=item.id or "",
        tokens=count,
        price_gbp_per_token=price,
        order_id=order.id,
        state=state_tags.get("state") if state_tags else None,
    )


def whole_tokens(power_kw: float, window_start: datetime, window_end: datetime) -> int | None:
    """The tokens (MWh) an order of `power_kw` over the window redeems, or None when that energy is not a
    whole number of MWh (to 1 Wh)."""
    energy_wh = Decimal(str(power_kw)) * Decimal(int((window_end - window_start).total_seconds())) / 3600 * 1000
    if energy_wh <= 0 or energy_wh % 1_000_000 != 0:
        return None
    return int(energy_wh // 1_000_000)
