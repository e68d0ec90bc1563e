"""Compute Flex Token series and token orders in Beckn messages (schemas/flex.py): what the BPP publishes the BAP
reads back unchanged, through the JSON the network carries; malformed series are refused naming the field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.core import Item, Order
from schemas.flex import (
    FlexFormatError,
    FlexOfferSpec,
    TokenOrderSpec,
    TokenSeriesSpec,
    is_series_item,
    item_to_series,
    offer_to_item,
    order_to_token_spec,
    series_to_item,
    token_order_to_order,
    whole_tokens,
)

T0 = datetime(2026, 12, 3, 16, tzinfo=UTC)
ids = st.from_regex(r"[a-z][a-z0-9-]{0,30}", fullmatch=True)
pence = st.integers(min_value=0, max_value=10**9).map(lambda p: Decimal(p) / 100)


def _wire_item(item: Item) -> Item:
    return Item.model_validate_json(item.model_dump_json(by_alias=True, exclude_none=True))


@given(
    series_id=ids,
    provider_id=ids,
    start_min=st.integers(0, 10_000),
    length_min=st.integers(1, 10_000),
    price=pence,
    available=st.integers(0, 10**6),
)
def test_series_round_trip(
    series_id: str, provider_id: str, start_min: int, length_min: int, price: Decimal, available: int
) -> None:
    start = T0 + timedelta(minutes=start_min)
    s = TokenSeriesSpec(series_id, provider_id, start, start + timedelta(minutes=length_min), price, available)
    item = _wire_item(series_to_item(s))
    assert is_series_item(item)
    assert item_to_series(item, provider_id) == s


def test_offers_are_not_series() -> None:
    offer = FlexOfferSpec("o-1", "dc-01", "site", T0, T0 + timedelta(hours=4), 600, 100, 600, 150)
    assert not is_series_item(offer_to_item(offer))


def _series_item(**tag_changes: str) -> Item:
    s = TokenSeriesSpec("dc-01-cft", "dc-01", T0, T0 + timedelta(hours=4), Decimal("135.00"), 2)
    item = series_to_item(s)
    for tag in item.tags[0].list_ or []:  # type: ignore[index]
        if tag.descriptor and tag.descriptor.code in tag_changes:
            tag.value = tag_changes[tag.descriptor.code]
    return item


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"series_id": "other"}, "series_id"),
        ({"provider_id": "dc-02"}, "provider_id"),
        ({"tokens_available": "-1"}, "tokens_available"),
        ({"tokens_available": "1.5"}, "tokens_available"),
        ({"price_gbp_per_token": "1.005"}, "price_gbp_per_token"),
        ({"price_gbp_per_token": "134.00"}, "price.value"),
        ({"valid_from": "2026-12-03T16:00:00"}, "valid_from"),
        ({"valid_to": "2026-12-03T15:00:00+00:00"}, "cft_series"),
    ],
)
def test_malformed_series_refused_naming_the_field(change: dict[str, str], field: str) -> None:
    with pytest.raises(FlexFormatError) as err:
        item_to_series(_series_item(**change), "dc-01", "items[0]")
    assert field in err.value.path


@given(
    tokens=st.integers(1, 10**6),
    price=pence,
    order_id=st.none() | ids,
    state=st.sampled_from([None, "CREATED", "ACCEPTED"]),
)
def test_token_order_round_trip(tokens: int, price: Decimal, order_id: str | None, state: str | None) -> None:
    spec = TokenOrderSpec("dc-01", "dc-01-cft", tokens, price, order_id, state)
    wire = Order.model_validate_json(token_order_to_order(spec).model_dump_json(by_alias=True, exclude_none=True))
    back = order_to_token_spec(wire)
    assert back == spec
    assert wire.quote is not None and wire.quote.price is not None
    assert Decimal(wire.quote.price.value or "") == price * tokens  # the total the ledger checks the consent against


def test_unpriced_token_order_has_no_quote() -> None:
    order = token_order_to_order(TokenOrderSpec("dc-01", "dc-01-cft", 3))
    assert order.quote is None
    assert order_to_token_spec(order).price_gbp_per_token is None


def test_token_order_needs_a_count() -> None:
    order = token_order_to_order(TokenOrderSpec("dc-01", "dc-01-cft", 3))
    order.items[0].quantity = None  # type: ignore[index]
    with pytest.raises(FlexFormatError) as err:
        order_to_token_spec(order)
    assert err.value.path.endswith("quantity.selected.count")


@given(
    mwh=st.integers(1, 1000),
    half_hours=st.integers(1, 16),
    extra_kw=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
)
def test_whole_tokens(mwh: int, half_hours: int, extra_kw: float) -> None:
    hours = Decimal(half_hours) / 2
    power = Decimal(mwh * 1000) / hours
    if power != power.quantize(Decimal("0.1")):
        return  # not a kW figure an order carries (0.1 kW)
    end = T0 + timedelta(minutes=30 * half_hours)
    assert whole_tokens(float(power), T0, end) == mwh
    if extra_kw:
        assert whole_tokens(float(power) + extra_kw, T0, end) is None
