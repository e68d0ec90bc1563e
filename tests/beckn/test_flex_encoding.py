"""The flexibility encoding (schemas/flex.py) and the BPP's commitment rules (bpp/catalog.py): pure,
no database. Round trips are exact; malformed messages name the path at fault; capacity holds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpp.catalog import (
    Commitment,
    CommitmentError,
    check_capacity,
    check_order_fits_offer,
    example_config,
    matching_offers,
    parse_config,
    slot_starts,
)
from schemas.core import Item, Order
from schemas.flex import (
    FlexFormatError,
    FlexOfferSpec,
    FlexRequest,
    OrderSpec,
    intent_to_request,
    item_to_offer,
    offer_to_item,
    order_spec_to_order,
    order_to_spec,
    request_to_intent,
)

T0 = datetime(2026, 11, 24, 16, 0, tzinfo=UTC)
slots = st.integers(min_value=0, max_value=40)
kw = st.decimals(min_value="0.1", max_value="9999.9", places=1).map(float)


@given(
    start=slots,
    n=st.integers(1, 8),
    avail=kw,
    price=st.decimals("0.01", "5000", places=2).map(float),
    carbon=st.none() | st.decimals("0", "900", places=1).map(float),
)
def test_offer_round_trip(start: int, n: int, avail: float, price: float, carbon: float | None) -> None:
    o = FlexOfferSpec(
        "it-1",
        "p-1",
        "site-1",
        T0 + timedelta(minutes=30 * start),
        T0 + timedelta(minutes=30 * (start + n)),
        avail,
        0.0,
        avail,
        price,
        expected_carbon_g_per_kwh=carbon,
        name="evening turn-down",
    )
    wire = Item.model_validate(offer_to_item(o).dump())
    assert item_to_offer(wire, "p-1") == o


@given(
    power=kw,
    start=slots,
    n=st.integers(1, 8),
    method=st.sampled_from(["P415", "CFT"]),
    meter=st.none() | st.from_regex(r"[A-Z]{3}-[0-9]{4}", fullmatch=True),
)
def test_order_round_trip(power: float, start: int, n: int, method: str, meter: str | None) -> None:
    spec = OrderSpec(
        "p-1",
        "it-1",
        power,
        T0 + timedelta(minutes=30 * start),
        T0 + timedelta(minutes=30 * (start + n)),
        meter,
        method,
        "ord-1",
    )
    assert order_to_spec(Order.model_validate(order_spec_to_order(spec).dump())) == spec


def test_request_round_trip() -> None:
    r = FlexRequest(T0, T0 + timedelta(hours=2), 1500.0, 300.0, "GB-R13", "compute")
    assert intent_to_request(request_to_intent(r)) == r


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda o: o["items"][0]["quantity"]["selected"]["measure"].update(value="-5"), "selected.measure.value"),
        (
            lambda o: o["fulfillments"][0]["stops"][0]["time"]["range"].update(end="2026-11-24T15:00:00Z"),
            "stops[0].time",
        ),
        (lambda o: o["fulfillments"][0]["stops"][0]["location"].update(address="meter-7"), "location.address"),
        (lambda o: o.pop("provider"), "provider.id"),
        (lambda o: o["items"].append({"id": "x"}), "items"),
        (lambda o: o["payments"][0]["tags"][0]["list"][0].update(value="CASH"), "settlement_method"),
    ],
)
def test_malformed_orders_name_the_path(mutate, path: str) -> None:  # type: ignore[no-untyped-def]
    doc = order_spec_to_order(OrderSpec("p", "i", 10, T0, T0 + timedelta(hours=1), "M-1")).dump()
    mutate(doc)
    with pytest.raises(FlexFormatError) as e:
        order_to_spec(Order.model_validate(doc))
    assert path in e.value.path


def offer(avail: float = 500.0) -> FlexOfferSpec:
    return FlexOfferSpec("it", "p", "s", T0, T0 + timedelta(hours=4), avail, 50.0, avail, 100.0)


@settings(max_examples=200)
@given(st.lists(st.tuples(st.integers(0, 7), st.integers(1, 8), st.integers(1, 500)), max_size=25))
def test_accepted_commitments_never_exceed_capacity(requests: list[tuple[int, int, int]]) -> None:
    """Invariant of bpp/service.py confirm: in every slot Σ committed kW ≤ available kW."""
    o, accepted = offer(), []
    for start, n, power in requests:
        c = Commitment(float(power), T0 + timedelta(minutes=30 * start), T0 + timedelta(minutes=30 * min(start + n, 8)))
        try:
            check_capacity(o, accepted, c)
        except CommitmentError as exc:
            assert exc.kind == "quantity_unavailable"
            continue
        accepted.append(c)
    for slot in slot_starts(o.window_start, o.window_end):
        assert sum(c.power_kw for c in accepted if c.window_start <= slot < c.window_end) <= o.available_kw


def test_capacity_refusal_names_the_slot() -> None:
    o = offer(500)
    with pytest.raises(CommitmentError, match="17:00"):
        check_capacity(
            o,
            [Commitment(400, T0 + timedelta(hours=1), T0 + timedelta(hours=2))],
            Commitment(200, T0, T0 + timedelta(hours=4)),
        )


@pytest.mark.parametrize(
    ("power", "start_min", "end_min", "kind"),
    [
        (600, 0, 60, "quantity_unavailable"),
        (10, 0, 60, "quantity_unavailable"),
        (100, -30, 60, "fulfillment_unavailable"),
        (100, 0, 300, "fulfillment_unavailable"),
        (100, 15, 75, "fulfillment_unavailable"),
    ],
)
def test_order_must_fit_the_offer(power: float, start_min: int, end_min: int, kind: str) -> None:
    with pytest.raises(CommitmentError) as e:
        check_order_fits_offer(offer(), power, T0 + timedelta(minutes=start_min), T0 + timedelta(minutes=end_min))
    assert e.value.kind == kind
    check_order_fits_offer(offer(), 100, T0, T0 + timedelta(hours=1))  # and a fitting one passes


def test_search_matching_filters_window_type_region_price() -> None:
    platforms = parse_config(example_config(3, now=T0 - timedelta(days=1)))
    offers = [o for p in platforms[0].providers for o in p.offers]
    region = {s.id: s.region for p in platforms[0].providers for s in p.sites}
    evening = FlexRequest(T0, T0 + timedelta(hours=1), 100)
    got = matching_offers(offers, evening, region)
    assert {o.item_id for o in got} == {"dc-01-evening-peak", "dc-02-evening-peak", "dc-03-evening-peak"}
    cheap = FlexRequest(T0, T0 + timedelta(hours=1), 100, max_price_gbp_per_mwh=160)
    assert {o.item_id for o in matching_offers(offers, cheap, region)} == {"dc-01-evening-peak"}
    assert matching_offers(offers, FlexRequest(T0, T0 + timedelta(hours=1), 100, region="GB-R1"), region) == []
    assert matching_offers(offers, FlexRequest(T0, T0 + timedelta(hours=1), 100, resource_type="storage"), region) == []
    night = FlexRequest(T0 + timedelta(hours=6), T0 + timedelta(hours=7), 100)
    assert matching_offers(offers, night, region) == []
