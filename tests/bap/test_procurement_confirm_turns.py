"""bap/procurement_engine.py `_confirm_turn`: a procurement confirms one order per provider at a time, the earlier
window first, so which of two orders a provider can honour depends on the choice, not on message timing; and an
order whose outcome the ledger has settled still counts as contracted (bap/procurement.py CONTRACTED)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from bap.models import BapOrder
from bap.procurement import CONTRACTED, LIVE_STATES
from bap.procurement_engine import _confirm_turn

T0 = datetime(2023, 1, 24, 17, tzinfo=UTC)


def order(oid: str, provider: str, hour: int, state: str = "CREATED") -> BapOrder:
    return BapOrder(
        id=oid,
        transaction_id="tx",
        bpp_id=f"{provider}.bpp",
        provider_id=provider,
        bpp_uri="http://x",
        item_id=f"{provider}-{hour}",
        power_kw=100.0,
        window_start=T0 + timedelta(hours=hour),
        window_end=T0 + timedelta(hours=hour + 1),
        state=state,
    )


def sent(**actions: str) -> dict[str, Any]:
    return {
        "abandoned": {},
        "sent": {oid: {"action": a, "wall": "2026-01-01T00:00:00+00:00"} for oid, a in actions.items()},
    }


def test_the_earlier_window_of_one_provider_is_confirmed_first() -> None:
    early, late = order("b", "dc-1", 0), order("a", "dc-1", 1)
    orders = [late, early]
    st_ = sent(a="init", b="init")
    assert _confirm_turn(early, orders, st_) and not _confirm_turn(late, orders, st_)


def test_a_later_order_waits_for_the_earlier_confirm_answer_then_goes() -> None:
    early, late = order("e", "dc-1", 0), order("l", "dc-1", 1)
    assert not _confirm_turn(late, [early, late], sent(e="confirm", l="init"))
    early.state = "ACCEPTED"
    assert _confirm_turn(late, [early, late], sent(e="confirm", l="init"))


def test_other_providers_and_abandoned_orders_do_not_hold_an_order_back() -> None:
    mine, other, gone = order("m", "dc-1", 1), order("o", "dc-2", 0), order("g", "dc-1", 0)
    st_ = sent(m="init", o="confirm", g="select")
    st_["abandoned"] = {"g": "no answer"}
    assert _confirm_turn(mine, [mine, other, gone], st_)


@given(st.lists(st.tuples(st.sampled_from(["p1", "p2"]), st.integers(0, 3)), min_size=1, max_size=6, unique=True))
def test_at_most_one_order_per_provider_may_be_confirmed_at_once(specs: list[tuple[str, int]]) -> None:
    orders = [order(f"o{i}", p, h) for i, (p, h) in enumerate(specs)]
    st_ = sent(**{o.id: "init" for o in orders})
    ready = [o for o in orders if _confirm_turn(o, orders, st_)]
    assert len({o.provider_id for o in ready}) == len(ready)  # one per provider
    for p in {o.provider_id for o in orders}:  # and it is that provider's earliest window
        mine = [o for o in orders if o.provider_id == p]
        assert [o for o in ready if o.provider_id == p] == [min(mine, key=lambda o: (o.window_start, o.id))]


def test_a_settled_outcome_is_still_contracted_and_live() -> None:
    for state in ("COMPLETED", "PARTIALLY-DELIVERED", "SETTLED"):
        assert state in CONTRACTED and state in LIVE_STATES
