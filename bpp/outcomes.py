"""Order outcomes flow back from the ledger (Celery beat: bpp.sync_outcomes).

Once an order's window has closed, the BPP asks the ledger for its settlement runs, takes the outcome the
latest one establishes (schemas/outcome.py: COMPLETED, PARTIALLY-DELIVERED, SETTLED, the delivered energy
and the settled amount), and tells the buyer with an unsolicited, signed on_status carrying it — so the BPP,
the BAP and the ledger hold the same outcome.

How the BPP reads the ledger: with each hosted provider's own ledger key (bpp/ledger_client.py). A provider
without a key is skipped with a warning: its orders keep the state their window gives them.

Idempotent: an outcome is taken only from a later run than the one the order holds, and never moves it
back (`schemas.outcome.advances`); the ledger is read outside any row lock, and each order is locked
(skipping one another worker holds) only to apply what was read.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

import httpx
import structlog
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bpp import lifecycle
from bpp.ledger_client import LedgerReader, LedgerReadError
from bpp.ledger_client import load_provider_keys as load_provider_keys  # bpp/tasks.py reads the keys from here
from bpp.models import Order, OrderEvent
from kernel import clock
from schemas.outcome import LedgerOutcome, OutcomeFormatError, advances, ledger_order_id, outcome_from_ledger

log = structlog.get_logger(__name__)

# Orders whose outcome the ledger may still establish or restate (SETTLED is final).
OPEN_STATES = ("IN-PROGRESS", "COMPLETED", "PARTIALLY-DELIVERED")
BATCH = 500  # orders read from the ledger per task run: the least recently checked first, the rest next time


class OutcomeSource(Protocol):
    def outcome(self, provider_id: str, order_id: str) -> LedgerOutcome | None:
        """The outcome of the order's latest settlement run; None when it has none (or no key reads it)."""
        ...


class LedgerOutcomes:
    """Reads outcomes over the ledger's HTTP API with the provider's key."""

    def __init__(self, client: httpx.Client, base_url: str, keys: Mapping[str, str]) -> None:
        self.reader = LedgerReader(client, base_url)
        self.keys = keys
        self.unkeyed: set[str] = set()  # providers already warned about in this run

    def _get(self, path: str, key: str) -> dict[str, Any] | None:
        return self.reader.get(path, key)

    def outcome(self, provider_id: str, order_id: str) -> LedgerOutcome | None:
        key = self.keys.get(provider_id)
        if key is None:
            if provider_id not in self.unkeyed:
                self.unkeyed.add(provider_id)
                log.warning("no ledger key for this provider: its outcomes are not read", provider_id=provider_id)
            return None
        ledger_id = order_id
        summary = self._get(f"/orders/{order_id}", key)
        if summary is None:  # an order paid with tokens is the ledger's redemption obligation `cft-<order id>`
            ledger_id = ledger_order_id(order_id, "CFT")
            summary = self._get(f"/orders/{ledger_id}", key)
        if summary is None or not summary.get("runs"):
            return None  # not registered (yet), or no run made
        latest = summary["runs"][-1].get("run")
        return outcome_from_ledger(summary, self._get(f"/settlement/{ledger_id}/{latest}", key))


def candidates(session: Session, now: datetime) -> list[tuple[str, str]]:
    """(order id, provider id) of orders whose window has closed and whose outcome may still change, the least
    recently checked first (never checked: first of all), at most BATCH; each is noted as checked now."""
    rows = session.execute(
        select(Order.id, Order.provider_id)
        .where(Order.state.in_(OPEN_STATES), Order.window_end <= now)
        .order_by(Order.outcome_checked_at.asc().nulls_first(), Order.window_end, Order.id)
        .limit(BATCH)
        .with_for_update(skip_locked=True)
    ).all()
    ids = [r[0] for r in rows]
    if ids:
        # updated_at stays: it is when the order last changed, which a check is not
        session.execute(
            update(Order).where(Order.id.in_(ids)).values(outcome_checked_at=now, updated_at=Order.updated_at)
        )
    return [(r[0], r[1]) for r in rows]


def read_outcomes(source: OutcomeSource, orders: list[tuple[str, str]]) -> dict[str, LedgerOutcome]:
    """The outcome of each order the ledger has settled; an order it cannot be read for is left for later."""
    found: dict[str, LedgerOutcome] = {}
    for order_id, provider_id in orders:
        try:
            outcome = source.outcome(provider_id, order_id)
        except (LedgerReadError, OutcomeFormatError) as exc:
            log.warning("order outcome not read from the ledger", order_id=order_id, error=str(exc))
            continue
        if outcome is not None:
            found[order_id] = outcome
    return found


def apply_outcome(session: Session, order: Order, outcome: LedgerOutcome) -> bool:
    """Take the ledger's outcome when it advances the order (state, delivered energy, amount); True if so."""
    if not advances(order.state, order.settlement_run, outcome):
        return False
    reason = (
        f"ledger run {outcome.settlement_run}: {outcome.delivered_energy_kwh} kWh delivered, "
        f"{outcome.settled_amount_pence} pence"
    )
    if outcome.state != order.state:
        lifecycle.transition(session, order, outcome.state, reason)
    else:  # the same state restated by a later run (the event trail records it all the same)
        session.add(OrderEvent(order_id=order.id, from_state=order.state, to_state=order.state, reason=reason))
        order.updated_at = clock.now()
    order.settlement_run = outcome.settlement_run
    order.delivered_energy_kwh = float(outcome.delivered_energy_kwh)
    order.settled_amount_pence = outcome.settled_amount_pence
    return True


def sync_outcomes(session: Session, source: OutcomeSource, now: datetime) -> list[int]:
    """Take every new outcome the ledger holds and announce each with an on_status; the outbox ids."""
    orders = candidates(session, now)
    session.commit()  # no transaction stays open while the ledger is read; each order is locked below
    outcomes = read_outcomes(source, orders)
    ids: list[int] = []
    for order_id, outcome in outcomes.items():
        order = session.scalars(select(Order).where(Order.id == order_id).with_for_update(skip_locked=True)).first()
        if order is not None and apply_outcome(session, order, outcome):
            ids.append(lifecycle.announce_status(session, order))
            log.info("order outcome from the ledger", order_id=order_id, state=order.state, run=outcome.settlement_run)
    return ids
