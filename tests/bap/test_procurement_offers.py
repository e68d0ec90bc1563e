"""What a procurement's choice sees of an offer (bap/procurement_offers.py): its capacity less what this BAP's
other live orders already hold of the same item in the procurement's slots (a catalog states the whole
capacity, and buying it twice is refused at confirm), and the offer left out, with the reason, when nothing is
left."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bap.models import BapOrder, CatalogOffer, Procurement
from bap.procurement import SLOT, SlotTarget
from bap.procurement_offers import own_orders_kw, to_choice_offer
from kernel.db import session_scope

T0 = (datetime.now(UTC) + timedelta(days=1)).replace(hour=17, minute=0, second=0, microsecond=0)
GRID = [SlotTarget(T0 + i * SLOT, T0 + (i + 1) * SLOT, 500.0) for i in range(4)]


def _offer() -> CatalogOffer:
    return CatalogOffer(
        transaction_id="tx",
        bpp_id="bpp",
        provider_id="p",
        item_id="i",
        bpp_uri="http://bpp",
        price_gbp_per_mwh=100.0,
        available_kw=800.0,
        window_start=T0 - timedelta(hours=1),
        window_end=T0 + timedelta(hours=3),
        spec={"min_kw": 100, "max_kw": 800, "response_time_s": 0},
    )


def _order(
    oid: str, kw: float, start: datetime, end: datetime, state: str = "ACCEPTED", pid: str | None = None
) -> BapOrder:
    return BapOrder(
        id=oid,
        transaction_id=f"tx-{oid}",
        bpp_id="bpp",
        provider_id="p",
        bpp_uri="http://bpp",
        item_id="i",
        power_kw=kw,
        window_start=start,
        window_end=end,
        state=state,
        procurement_id=pid,
    )


def test_other_orders_of_the_item_are_subtracted_and_an_exhausted_offer_left_out(bap_db: str) -> None:
    now = datetime.now(UTC)
    with session_scope("bap") as s:
        s.add(
            Procurement(
                id="proc-offers",
                source="api",
                status="collecting",
                policy_version=1,
                request={},
                transaction_ids=[],
                created_at=now,
                created_wall=now,
                updated_at=now,
            )
        )
        s.add(_order("o1", 300.0, T0, T0 + timedelta(hours=1)))  # overlaps slots 0–1
        s.add(_order("o2", 200.0, T0 + SLOT, T0 + 2 * SLOT))  # slot 1: 500 kW held there in all
        s.add(_order("o3", 700.0, T0, T0 + timedelta(hours=2), state="CANCELLED"))  # not live
        s.add(_order("o4", 700.0, T0, T0 + timedelta(hours=2), pid="proc-offers"))  # this procurement's own
    with session_scope("bap") as s:
        p = s.get(Procurement, "proc-offers")
        assert p is not None
        held = own_orders_kw(s, p, GRID)
    assert held == {("bpp", "p", "i"): 500.0}
    offer, why = to_choice_offer(_offer(), GRID, now, 1.0, held_kw=held[("bpp", "p", "i")])
    assert offer is not None and why is None and offer.max_kw == 300.0
    gone, why = to_choice_offer(_offer(), GRID, now, 1.0, held_kw=750.0)  # 50 kW left, below its 100 kW minimum
    assert gone is None and why is not None and "already hold 750 kW" in why
