"""An order's lifecycle at the BPP: its states and transitions, its cancellation (who and why), its Beckn form,
and the buyer told of what changed without asking (an unsolicited on_status / on_cancel). The Beckn requests
that move it are handled in bpp/service.py.

State machine (../shared/DESIGN.md): CREATED (on_init) → ACCEPTED (on_confirm) → IN-PROGRESS (window open) →
COMPLETED (window closed) → COMPLETED | PARTIALLY-DELIVERED (the ledger's settlement runs, schemas/outcome.py) →
SETTLED (its final run); CANCELLED from CREATED or ACCEPTED before the window opens. Invariant, checked under a
row lock on the offer at confirm and update: in every 30-minute slot, Σ kW of ACCEPTED/IN-PROGRESS orders on an
offer ≤ its available kW.

Cancellation: `cancel` is the one way into CANCELLED, and it records who cancelled, in Beckn 1.1's words
(`Cancellation.cancelled_by`, schemas/core.py `CancelledBy`): CONSUMER when the buyer's Beckn cancel asked for
it, PROVIDER when the provider did (bpp/admin.py). The spec names no third party, so a cancellation the platform
makes on its own (an expiry, an undeliverable order) is the provider side's: PROVIDER, its reason saying why.
Invariant (CHECK constraints on bpp.orders, bpp/models.py): an order is CANCELLED exactly when `cancelled_by`
is set; every on_cancel, on_status and order the BPP sends carries it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from beckn import envelope
from bpp.callbacks import callback
from bpp.catalog import CommitmentError
from bpp.models import Order, OrderEvent
from kernel import clock
from schemas.core import CancelledBy
from schemas.flex import OrderCancellation, OrderSpec, OrderView, order_view_to_order, quote_gbp
from schemas.outcome import held, with_outcome

COMMITTED_STATES = ("ACCEPTED", "IN-PROGRESS")
CANCELLABLE_STATES = ("CREATED", "ACCEPTED")
TRANSITIONS = {
    None: {"CREATED"},
    "CREATED": {"CREATED", "ACCEPTED", "CANCELLED"},
    "ACCEPTED": {"IN-PROGRESS", "CANCELLED"},
    # The ledger's settlement runs decide the outcome (schemas/outcome.py, bpp/outcomes.py); a later run may
    # restate COMPLETED as PARTIALLY-DELIVERED or back, and the final run makes it SETTLED.
    "IN-PROGRESS": {"COMPLETED", "PARTIALLY-DELIVERED", "SETTLED"},
    "COMPLETED": {"PARTIALLY-DELIVERED", "SETTLED"},
    "PARTIALLY-DELIVERED": {"COMPLETED", "SETTLED"},
}
PARTY = {"CONSUMER": "the consumer", "PROVIDER": "the provider"}  # how the order's history names who cancelled


def transition(
    session: Session, order: Order, to_state: str, reason: str | None = None, message_id: str | None = None
) -> None:
    """Move `order` to `to_state` (TRANSITIONS allows it, or CommitmentError), recorded in its history.
    CANCELLED is entered only through `cancel`, which says who cancelled."""
    if to_state == "CANCELLED" and order.cancelled_by is None:
        raise ValueError(f"order {order.id}: cancel() it, saying who cancelled")
    if to_state not in TRANSITIONS.get(order.state, set()):
        raise CommitmentError("invalid_request", f"order {order.id} cannot go from {order.state} to {to_state}")
    session.add(
        OrderEvent(order_id=order.id, from_state=order.state, to_state=to_state, reason=reason, message_id=message_id)
    )
    order.state = to_state
    order.updated_at = clock.now()


def cancel(
    session: Session,
    order: Order,
    *,
    by: CancelledBy,
    reason: str,
    now: datetime,
    message_id: str | None = None,
) -> None:
    """CANCELLED by `by` for `reason`. The Beckn cancel's rule holds whoever cancels: a CREATED or ACCEPTED order,
    before its window opens (`now` < window_start); CommitmentError otherwise, and nothing changes."""
    if order.state not in CANCELLABLE_STATES or now >= order.window_start:
        raise CommitmentError(
            "cancellation_not_possible",
            f"order {order.id} is {order.state}; cancellation is possible only before the window opens",
        )
    order.cancellation_reason, order.cancelled_by = reason, by
    transition(session, order, "CANCELLED", f"cancelled by {PARTY[by]}: {reason}", message_id)


def cancellation_of(order: Order) -> OrderCancellation | None:
    """Who cancelled `order` and why; None unless it is CANCELLED."""
    if order.state != "CANCELLED":
        return None
    assert order.cancelled_by is not None, order.id  # the orders_cancelled_by_when_cancelled CHECK
    return OrderCancellation(cancelled_by=order.cancelled_by, reason=order.cancellation_reason or "no reason given")


def view(order: Order) -> dict[str, Any]:
    """The order as the BPP states it in a callback's message: {"order": Beckn order}, with its outcome and, when
    CANCELLED, its `cancellation` (cancelled_by, reason)."""
    spec = OrderSpec(
        provider_id=order.provider_id,
        item_id=order.item_id,
        power_kw=order.power_kw,
        window_start=order.window_start,
        window_end=order.window_end,
        meter_id=order.meter_id,
        settlement_method=order.settlement_method,
        order_id=order.id,
    )
    v = OrderView(
        spec=spec,
        state=order.state,
        price_gbp_per_mwh=order.price_gbp_per_mwh,
        quote_gbp=quote_gbp(order.power_kw, order.window_start, order.window_end, order.price_gbp_per_mwh),
        updated_at=order.updated_at or clock.now(),
        cancellation=cancellation_of(order),
    )
    beckn_order = order_view_to_order(v)
    outcome = held(order.state, order.settlement_run, order.delivered_energy_kwh, order.settled_amount_pence)
    return {"order": (with_outcome(beckn_order, outcome) if outcome else beckn_order).dump()}


# -- time-driven transitions (Celery beat: bpp.advance_orders) ------------------------------------
def advance_orders(session: Session, now: datetime | None = None) -> list[int]:
    """ACCEPTED → IN-PROGRESS when the window opens, IN-PROGRESS → COMPLETED when it closes; each
    transition is announced to the buyer with an unsolicited on_status."""
    now = now or clock.now()
    ids = []
    q = select(Order).where(Order.state.in_(COMMITTED_STATES)).with_for_update(skip_locked=True)
    for order in session.scalars(q):
        target = None
        if order.state == "ACCEPTED" and order.window_start <= now:
            target = "IN-PROGRESS"
        if (order.state == "IN-PROGRESS" or target) and order.window_end <= now:
            if target:
                transition(session, order, target, "window opened")
            target = "COMPLETED"
        if target is None:
            continue
        transition(session, order, target, "window opened" if target == "IN-PROGRESS" else "window closed")
        ids.append(announce_status(session, order))
    return ids


# -- the buyer told without asking ----------------------------------------------------------------
def announce_status(session: Session, order: Order) -> int:
    """Queue an unsolicited on_status telling the buyer the order as it now stands; its outbox id."""
    return _announce(session, order, "on_status")


def announce_cancellation(session: Session, order: Order) -> int:
    """Queue an unsolicited on_cancel telling the buyer that the order was cancelled without its asking (the
    provider's, bpp/admin.py): the buyer treats it as any on_cancel — the order is CANCELLED, and its ledger
    registration is cancelled — and reads who cancelled in `cancellation.cancelled_by`."""
    assert order.state == "CANCELLED", order.state
    return _announce(session, order, "on_cancel")


def _announce(session: Session, order: Order, action: str) -> int:
    ctx = envelope.context(
        action,
        bap_id=order.bap_id,
        bap_uri=order.bap_uri,
        transaction_id=order.transaction_id,
        city_code=order.city_code,
        country_code=order.country_code,
    )
    return callback(session, order.bpp_id, ctx, action, message=view(order))
