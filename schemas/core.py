"""Beckn core v1.1 objects, as in ../shared/reference/beckn/core-v1.1.1/api/transaction/build/transaction.yaml.

Only the fields flexmarket reads are typed; everything else rides along in `model_extra`
(extra="allow") and is serialised back unchanged. Serialise with `.dump()` (drops None, keeps aliases).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.limits import CountryCode, Identifier, Name, Uri

# Beckn's DecimalValue: a decimal number carried as a string.
DECIMAL_PATTERN = r"^[+-]?([0-9]*[.])?[0-9]+$"


class BecknModel(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Descriptor(BecknModel):
    name: str | None = None
    code: str | None = None
    short_desc: str | None = None
    long_desc: str | None = None


class Tag(BecknModel):
    descriptor: Descriptor | None = None
    value: str | None = None
    display: bool | None = None


class TagGroup(BecknModel):
    display: bool | None = None
    descriptor: Descriptor | None = None
    list_: list[Tag] | None = Field(default=None, alias="list")

    def get(self, code: str) -> str | None:
        for tag in self.list_ or []:
            if tag.descriptor and tag.descriptor.code == code:
                return tag.value
        return None


class City(BecknModel):
    name: str | None = None
    code: Identifier | None = None


class Country(BecknModel):
    name: str | None = None
    code: CountryCode | None = None


class Location(BecknModel):
    id: str | None = None
    descriptor: Descriptor | None = None
    gps: str | None = None
    address: str | None = None
    city: City | None = None
    country: Country | None = None
    area_code: str | None = None


class Context(BecknModel):
    """Ids within their columns, printable, no NUL (schemas/limits.py)."""

    domain: Name | None = None
    location: Location | None = None
    action: Identifier | None = None
    version: Identifier | None = None
    bap_id: Name | None = None
    bap_uri: Uri | None = None
    bpp_id: Name | None = None
    bpp_uri: Uri | None = None
    transaction_id: Name | None = None
    message_id: Name | None = None
    timestamp: datetime | None = None
    key: str | None = None
    ttl: Identifier | None = None

    @property
    def city_code(self) -> str | None:
        return self.location.city.code if self.location and self.location.city else None

    @property
    def country_code(self) -> str | None:
        return self.location.country.code if self.location and self.location.country else None


class TimeRange(BecknModel):
    start: datetime | None = None
    end: datetime | None = None


class Time(BecknModel):
    label: str | None = None
    timestamp: datetime | None = None
    duration: str | None = None
    range: TimeRange | None = None


class Scalar(BecknModel):
    type: Literal["CONSTANT", "VARIABLE"] | None = None
    value: str | None = Field(default=None, pattern=DECIMAL_PATTERN)
    unit: str | None = None


class QuantityValue(BecknModel):
    count: int | None = Field(default=None, ge=0)
    measure: Scalar | None = None


class ItemQuantity(BecknModel):
    allocated: QuantityValue | None = None
    available: QuantityValue | None = None
    maximum: QuantityValue | None = None
    minimum: QuantityValue | None = None
    selected: QuantityValue | None = None
    unitized: QuantityValue | None = None


class Price(BecknModel):
    currency: str | None = None
    value: str | None = Field(default=None, pattern=DECIMAL_PATTERN)
    estimated_value: str | None = Field(default=None, pattern=DECIMAL_PATTERN)
    computed_value: str | None = Field(default=None, pattern=DECIMAL_PATTERN)
    listed_value: str | None = Field(default=None, pattern=DECIMAL_PATTERN)
    minimum_value: str | None = Field(default=None, pattern=DECIMAL_PATTERN)
    maximum_value: str | None = Field(default=None, pattern=DECIMAL_PATTERN)


class Item(BecknModel):
    id: Name | None = None
    parent_item_id: str | None = None
    descriptor: Descriptor | None = None
    price: Price | None = None
    quantity: ItemQuantity | None = None
    category_ids: list[str] | None = None
    fulfillment_ids: list[str] | None = None
    location_ids: list[str] | None = None
    payment_ids: list[str] | None = None
    time: Time | None = None
    tags: list[TagGroup] | None = None


class FulfillmentState(BecknModel):
    descriptor: Descriptor | None = None
    updated_at: datetime | None = None
    updated_by: str | None = None


class Stop(BecknModel):
    id: str | None = None
    parent_stop_id: str | None = None
    location: Location | None = None
    type: str | None = None
    time: Time | None = None


class Fulfillment(BecknModel):
    id: str | None = None
    type: str | None = None
    state: FulfillmentState | None = None
    tracking: bool | None = None
    stops: list[Stop] | None = None
    tags: list[TagGroup] | None = None


class Payment(BecknModel):
    id: str | None = None
    collected_by: str | None = None
    url: str | None = None
    params: dict[str, Any] | None = None
    type: Literal["PRE-ORDER", "PRE-FULFILLMENT", "ON-FULFILLMENT", "POST-FULFILLMENT"] | None = None
    status: Literal["PAID", "NOT-PAID"] | None = None
    tags: list[TagGroup] | None = None


class QuoteBreakup(BecknModel):
    item: Item | None = None
    title: str | None = None
    price: Price | None = None


class Quotation(BecknModel):
    id: str | None = None
    price: Price | None = None
    breakup: list[QuoteBreakup] | None = None
    ttl: str | None = None


class Provider(BecknModel):
    id: Name | None = None
    descriptor: Descriptor | None = None
    category_id: str | None = None
    time: Time | None = None
    fulfillments: list[Fulfillment] | None = None
    payments: list[Payment] | None = None
    locations: list[Location] | None = None
    items: list[Item] | None = None
    exp: datetime | None = None
    ttl: int | None = None
    tags: list[TagGroup] | None = None


class Catalog(BecknModel):
    descriptor: Descriptor | None = None
    fulfillments: list[Fulfillment] | None = None
    payments: list[Payment] | None = None
    providers: list[Provider] | None = None
    exp: datetime | None = None
    ttl: str | None = None


# Beckn 1.1 Cancellation.cancelled_by: the two parties the spec names. A cancellation nobody asked for (the
# platform's own: an expiry, an undeliverable order) is the provider side's: PROVIDER.
CancelledBy = Literal["CONSUMER", "PROVIDER"]


class Cancellation(BecknModel):
    time: datetime | None = None
    cancelled_by: CancelledBy | None = None
    reason: dict[str, Any] | None = None


class Order(BecknModel):
    id: Identifier | None = None  # the BPP's and the BAP's order-id columns hold 64
    ref_order_ids: list[str] | None = None
    # Beckn 1.1.1 restricts order.status to these three; the finer lifecycle (CREATED, ACCEPTED,
    # IN-PROGRESS, …) travels in fulfillments[0].state.descriptor.code (see README, design notes).
    status: Literal["ACTIVE", "COMPLETE", "CANCELLED"] | None = None
    type: Literal["DRAFT", "DEFAULT"] | None = None
    provider: Provider | None = None
    items: list[Item] | None = None
    fulfillments: list[Fulfillment] | None = None
    cancellation: Cancellation | None = None
    quote: Quotation | None = None
    payments: list[Payment] | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    tags: list[TagGroup] | None = None


class Intent(BecknModel):
    descriptor: Descriptor | None = None
    provider: Provider | None = None
    fulfillment: Fulfillment | None = None
    payment: Payment | None = None
    item: Item | None = None
    tags: list[TagGroup] | None = None


class Ack(BecknModel):
    status: Literal["ACK", "NACK"]
    tags: list[TagGroup] | None = None


class Error(BecknModel):
    code: str
    paths: str | None = None
    message: str | None = None

    @field_validator("code", mode="before")
    @classmethod
    def _code_as_text(cls, v: Any) -> str:
        return str(v)


class AckMessage(BecknModel):
    ack: Ack


class AckResponse(BecknModel):
    """The synchronous answer to every Beckn call."""

    message: AckMessage
    error: Error | None = None

    @classmethod
    def ack(cls) -> AckResponse:
        return cls(message=AckMessage(ack=Ack(status="ACK")))

    @classmethod
    def nack(cls, code: str, message: str, paths: str | None = None) -> AckResponse:
        return cls(message=AckMessage(ack=Ack(status="NACK")), error=Error(code=code, message=message, paths=paths))
