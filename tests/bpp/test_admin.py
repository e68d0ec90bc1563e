"""The admin API's use cases (bpp/admin.py) on real PostgreSQL: a provider joins a platform (persisted, hosted
again at start-up), a bad file or a providers-file id is refused with nothing written, and leaving withdraws
its offers while its orders stay; a provider cancels an order (CANCELLED with its reason, an unsolicited
on_cancel queued for the buyer) only while it is cancellable and before its window opens. The HTTP side runs on
real processes in tests/e2e/test_provider_join.py and tests/e2e/test_procurement_failures.py."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from beckn.errors import Role
from beckn.identity import load_or_create_identity
from beckn.models import outbox
from bpp import admin, lifecycle, service
from bpp.catalog import PlatformConfig, example_config, parse_config
from bpp.models import JoinedProvider, Offer, Order, OrderEvent, Provider
from bpp.provider_file import provider_template
from kernel.config import reset_settings
from kernel.db import session_scope

NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


@pytest.fixture()
def platform(isolated_db: str) -> PlatformConfig:
    p = parse_config(example_config(1))[0]
    with session_scope("bpp") as s:
        service.sync_platform(s, p)
    return p


def static_provider(provider_id: str = "dc-joined", items: tuple[str, ...] = ("peak", "night")) -> dict[str, Any]:
    data = provider_template(provider_id)
    del data["agent"]
    site = data["sites"][0]["id"]
    data["offers"] = [
        {
            "id": f"{provider_id}-{item}",
            "location_id": site,
            "window_start": (NOW + timedelta(hours=24 + 2 * i)).isoformat(),
            "window_end": (NOW + timedelta(hours=26 + 2 * i)).isoformat(),
            "available_kw": 300,
            "price_gbp_per_mwh": 120,
        }
        for i, item in enumerate(items)
    ]
    return data


def active_items(bpp_id: str, provider_id: str) -> set[str]:
    with session_scope("bpp") as s:
        q = select(Offer.item_id).where(Offer.bpp_id == bpp_id, Offer.provider_id == provider_id, Offer.active)
        return set(s.scalars(q))


def test_a_joined_provider_is_hosted_and_hosted_again_after_a_restart(platform: PlatformConfig) -> None:
    with session_scope("bpp") as s:
        offers = admin.join(s, platform, static_provider(), NOW)
    assert {o.item_id for o in offers} == {"dc-joined-peak", "dc-joined-night"}
    assert active_items(platform.subscriber_id, "dc-joined") == {"dc-joined-peak", "dc-joined-night"}
    assert active_items(platform.subscriber_id, "dc-01"), "the file's providers keep their offers"
    with session_scope("bpp") as s:
        joined = admin.joined_providers(s, platform)
        assert [p.id for p in joined] == ["dc-joined"]
        service.sync_platform(s, admin.hosted(s, platform))  # what bpp/main.py's start-up does
    assert active_items(platform.subscriber_id, "dc-joined") == {"dc-joined-peak", "dc-joined-night"}
    with session_scope("bpp") as s:  # a re-sync given only the providers file withdraws a joined provider
        service.sync_platform(s, platform)
    assert active_items(platform.subscriber_id, "dc-joined") == set()


def test_an_agent_provider_plans_when_it_joins(platform: PlatformConfig) -> None:
    data = provider_template("dc-agent")
    data["agent"]["jobs"]["n_jobs"] = 60
    with session_scope("bpp") as s:
        offers = admin.join(s, platform, data, NOW)
        row = s.get(Provider, (platform.subscriber_id, "dc-agent"))
        assert row is not None and row.agent is not None and row.agent_anchor_utc is not None
    assert offers and all(o.resource_type == "compute" and o.available_kw > 0 for o in offers)
    assert active_items(platform.subscriber_id, "dc-agent") == {o.item_id for o in offers}


@pytest.mark.parametrize(
    ("data", "status", "named"),
    [
        (static_provider() | {"sites": []}, 400, "sites"),
        (static_provider() | {"id": "dc 2"}, 400, "id"),
        (static_provider("dc-01"), 409, "id"),  # the providers file's own
    ],
)
def test_refused_joins_write_nothing(platform: PlatformConfig, data: dict[str, Any], status: int, named: str) -> None:
    with session_scope("bpp") as s:
        before = s.scalar(select(func.count()).select_from(Offer))
        with pytest.raises(admin.AdminRefused) as refused:
            admin.join(s, platform, data, NOW)
    assert refused.value.status == status and str(refused.value).startswith(named)
    with session_scope("bpp") as s:
        assert s.scalar(select(func.count()).select_from(Offer)) == before
        assert s.scalar(select(func.count()).select_from(JoinedProvider)) == 0


def test_rejoining_withdraws_the_offers_no_longer_published(platform: PlatformConfig) -> None:
    with session_scope("bpp") as s:
        admin.join(s, platform, static_provider(), NOW)
    with session_scope("bpp") as s:
        admin.join(s, platform, static_provider(items=("peak",)), NOW)
    assert active_items(platform.subscriber_id, "dc-joined") == {"dc-joined-peak"}


def test_leaving_withdraws_offers_and_keeps_orders(platform: PlatformConfig) -> None:
    with session_scope("bpp") as s:
        admin.join(s, platform, static_provider(), NOW)
        offer = s.get(Offer, (platform.subscriber_id, "dc-joined", "dc-joined-peak"))
        assert offer is not None
        order = Order(
            id=str(uuid.uuid4()),
            bpp_id=platform.subscriber_id,
            bap_id="bap",
            bap_uri="http://127.0.0.1:9",
            transaction_id=str(uuid.uuid4()),
            provider_id="dc-joined",
            item_id=offer.item_id,
            power_kw=100,
            window_start=offer.window_start,
            window_end=offer.window_end,
            meter_id=offer.meter_id,
            settlement_method="P415",
            price_gbp_per_mwh=offer.price_gbp_per_mwh,
            state="ACCEPTED",
            city_code="GB-R13",
            country_code="GBR",
        )
        s.add(order)
    with session_scope("bpp") as s:
        gone = admin.leave(s, platform, "dc-joined", NOW)
    assert (gone.withdrawn_offers, gone.open_orders) == (2, 1)
    assert active_items(platform.subscriber_id, "dc-joined") == set()
    with session_scope("bpp") as s:
        kept = s.get(Order, order.id)
        assert kept is not None and kept.state == "ACCEPTED"
        assert admin.joined_providers(s, platform) == []  # a restart does not bring it back
        with pytest.raises(admin.AdminRefused) as again:
            admin.leave(s, platform, "dc-joined", NOW)
        assert again.value.status == 404
        with pytest.raises(admin.AdminRefused) as file_owned:
            admin.leave(s, platform, "dc-01", NOW)
        assert file_owned.value.status == 409


# -- a provider cancels an order ---------------------------------------------------------------------------
CANCEL_AT = NOW + timedelta(hours=24)  # the order's window opens here


@pytest.fixture()
def signing_platform(platform: PlatformConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PlatformConfig:
    """The platform with a signing identity under the test's home, so its on_cancel can be queued."""
    monkeypatch.setenv("FLEXMARKET_HOME", str(tmp_path))
    reset_settings()
    load_or_create_identity(tmp_path, platform.subscriber_id, Role.BPP, "http://127.0.0.1:9/dc-platform")
    return platform


def an_order(bpp_id: str, state: str) -> str:
    with session_scope("bpp") as s:
        order = Order(
            id=str(uuid.uuid4()),
            bpp_id=bpp_id,
            bap_id="bap.test",
            bap_uri="http://127.0.0.1:9/beckn",
            transaction_id=str(uuid.uuid4()),
            provider_id="dc-01",
            item_id="dc-01-evening-peak",
            power_kw=200,
            window_start=CANCEL_AT,
            window_end=CANCEL_AT + timedelta(hours=1),
            meter_id="MTR-0001",
            settlement_method="P415",
            price_gbp_per_mwh=150,
            state=state,
            cancelled_by="CONSUMER" if state == "CANCELLED" else None,  # set exactly when CANCELLED (a CHECK)
            city_code="GB-R13",
            country_code="GBR",
        )
        s.add(order)
        return order.id


def on_cancels() -> list[tuple[str, dict[str, Any]]]:
    with session_scope("bpp") as s:
        sent = s.execute(select(outbox.c.receiver_url, outbox.c.body).where(outbox.c.action == "on_cancel")).all()
    return [(url, json.loads(bytes(body))) for url, body in sent]


def test_a_provider_cancels_an_accepted_order_and_the_buyer_is_told(signing_platform: PlatformConfig) -> None:
    order_id = an_order(signing_platform.subscriber_id, "ACCEPTED")
    with session_scope("bpp") as s:
        done = admin.cancel_order(
            s, signing_platform, order_id, "cooling plant failure", CANCEL_AT - timedelta(seconds=1)
        )
    assert (done.order_id, done.reason) == (order_id, "cooling plant failure")
    with session_scope("bpp") as s:
        order = s.get(Order, order_id)
        assert order is not None and order.state == "CANCELLED"
        assert order.cancellation_reason == "cooling plant failure"
        assert order.cancelled_by == "PROVIDER"
        events = s.scalars(select(OrderEvent).where(OrderEvent.order_id == order_id)).all()
        assert [(e.from_state, e.to_state) for e in events] == [("ACCEPTED", "CANCELLED")]
        assert "cooling plant failure" in (events[0].reason or "")
    [(url, body)] = on_cancels()
    assert url == "http://127.0.0.1:9/beckn/on_cancel"  # unsolicited: to the buyer's own URI
    assert body["context"]["action"] == "on_cancel" and body["context"]["bpp_id"] == signing_platform.subscriber_id
    sent = body["message"]["order"]
    assert sent["id"] == order_id and sent["fulfillments"][0]["state"]["descriptor"]["code"] == "CANCELLED"
    assert sent["cancellation"]["reason"]["descriptor"]["name"] == "cooling plant failure"
    assert sent["cancellation"]["cancelled_by"] == "PROVIDER"  # not the buyer's: it never asked


@pytest.mark.parametrize("state", ["CREATED", "ACCEPTED", "IN-PROGRESS", "COMPLETED", "CANCELLED", "SETTLED"])
@pytest.mark.parametrize("before_window", [True, False])
def test_only_a_cancellable_order_before_its_window_can_be_cancelled(
    signing_platform: PlatformConfig, state: str, before_window: bool
) -> None:
    order_id = an_order(signing_platform.subscriber_id, state)
    now = CANCEL_AT - timedelta(minutes=1) if before_window else CANCEL_AT
    allowed = state in lifecycle.CANCELLABLE_STATES and before_window
    with session_scope("bpp") as s:
        if allowed:
            admin.cancel_order(s, signing_platform, order_id, "maintenance", now)
        else:
            with pytest.raises(admin.AdminRefused) as refused:
                admin.cancel_order(s, signing_platform, order_id, "maintenance", now)
            assert refused.value.status == 409 and str(refused.value).startswith("order_id")
    with session_scope("bpp") as s:
        order = s.get(Order, order_id)
        assert order is not None and order.state == ("CANCELLED" if allowed else state)
    assert len(on_cancels()) == (1 if allowed else 0)  # a refusal writes nothing


def test_an_order_the_platform_does_not_hold_is_not_found(signing_platform: PlatformConfig) -> None:
    elsewhere = an_order("other-platform.bpp.flexmarket.local", "ACCEPTED")
    for order_id in (elsewhere, str(uuid.uuid4())):
        with session_scope("bpp") as s, pytest.raises(admin.AdminRefused) as refused:
            admin.cancel_order(s, signing_platform, order_id, "maintenance", NOW)
        assert refused.value.status == 404
    with session_scope("bpp") as s:
        kept = s.get(Order, elsewhere)
        assert kept is not None and kept.state == "ACCEPTED"
    assert on_cancels() == []


@pytest.mark.parametrize(
    ("data", "ok"),
    [
        ({"reason": "maintenance"}, True),
        ({"reason": "  maintenance  "}, True),
        ({}, False),
        ({"reason": ""}, False),
        ({"reason": "   "}, False),
        ({"reason": 5}, False),
        ({"reason": "x" * (admin.MAX_REASON_CHARS + 1)}, False),
    ],
)
def test_a_cancellation_needs_a_reason(data: dict[str, Any], ok: bool) -> None:
    if ok:
        assert admin.cancellation_reason(data) == "maintenance"
    else:
        with pytest.raises(admin.AdminRefused) as refused:
            admin.cancellation_reason(data)
        assert refused.value.status == 400 and str(refused.value).startswith("reason")
