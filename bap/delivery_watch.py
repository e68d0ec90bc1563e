"""Watching delivery during the window: a shortfall seen in metering → the gap re-procured (issue 12).

While a procurement delivers, its tick (bap/procurement_engine.py `_after`) asks the ledger what metering shows
of each of its contracted orders so far (`GET /api/v1/orders/{id}/delivery`, ledger/delivery.py: this order's
share of its meter's delivered volume per half hour, against the same baseline settlement uses). The rules:

- Each metered half hour of an order is judged once, in order; `st["metered"][order]` keeps the latest one
  judged (`through`, the end of that half hour) and its delivered fraction.
- An order whose latest judged fraction ``f`` is below the policy's `delivery.reprocure_below_fraction` is
  expected to keep delivering ``f``: in its slots from `through` on it counts ``f × kW``, so the engine's gap
  (:func:`expected_loss_kw`) grows by ``(1 − f) × kW`` there and is re-procured in the slots still beyond gate
  closure. A later half hour judged at or above the threshold lifts that again.
- A half hour awaiting its reading is not judged: late data is not a shortfall (settlement decides what a
  reading missing at its final run means).
- The ledger unreachable, or an order it does not hold yet, is skipped for this tick and logged; it never
  fails the procurement.

:func:`judge` and :func:`expected_loss_kw` are the rules on plain data; :func:`observe` reads the ledger.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog

from bap.models import BapOrder
from bap.tokens import LedgerUnreachable, TokenClientError, ledger_call
from schemas.outcome import ledger_order_id

log = structlog.get_logger(__name__)

HALF_HOUR = timedelta(minutes=30)
LEDGER_TIMEOUT_S = 5.0
WATCH_AFTER_WINDOW = timedelta(hours=2)  # readings arriving later are settlement's business, not the watch's


class Slot(Protocol):
    @property
    def start(self) -> datetime: ...

    @property
    def end(self) -> datetime: ...


@dataclass(frozen=True)
class Judged:
    """The latest metered half hour of an order not judged before: its end and delivered fraction."""

    through: datetime
    fraction: float
    period_start: datetime
    reading_kind: str | None


def judge(periods: Sequence[dict[str, Any]], *, through: datetime | None) -> Judged | None:
    """The latest half hour of the ledger's `periods` that is metered and ends after `through` (None: none)."""
    latest = None
    for p in periods:
        end = datetime.fromisoformat(p["end_utc"])
        new = p["state"] == "metered" and (through is None or end > through)
        if new and (latest is None or end > latest.through):
            start = datetime.fromisoformat(p["start_utc"])
            latest = Judged(end, float(p["delivered_fraction"]), start, p.get("reading_kind"))
    return latest


def expected_loss_kw(
    grid: Sequence[Slot], contracted: Sequence[BapOrder], metered: dict[str, Any], *, below: float
) -> list[float]:
    """kW per slot that `contracted` orders under-delivering in metering are not expected to deliver."""
    loss = [0.0] * len(grid)
    for o in contracted:
        seen = metered.get(o.id)
        if seen is None or seen["fraction"] >= below:
            continue
        through = datetime.fromisoformat(seen["through"])
        for i, t in enumerate(grid):
            if t.start >= through and o.window_start <= t.start and t.end <= o.window_end:
                loss[i] += (1.0 - seen["fraction"]) * o.power_kw
    return loss


def _due(o: BapOrder, metered: dict[str, Any], now: datetime) -> bool:
    """Whether a half hour of contracted `o` has ended since the last one judged (and the watch still runs)."""
    if not o.order_id or now > o.window_end + WATCH_AFTER_WINDOW:
        return False
    seen = metered.get(o.id)
    judged_to = datetime.fromisoformat(seen["through"]) if seen else o.window_start
    return judged_to < o.window_end and now >= judged_to + HALF_HOUR


def fetch(o: BapOrder) -> list[dict[str, Any]] | None:
    """The ledger's view of the order's delivery so far, or None (no ledger, not registered yet, unreachable)."""
    if not o.order_id:
        return None
    path = f"/orders/{ledger_order_id(o.order_id, o.settlement_method)}/delivery"
    try:
        status, answer = ledger_call("GET", path, timeout_s=LEDGER_TIMEOUT_S)
    except TokenClientError:
        return None  # this BAP has no ledger
    except LedgerUnreachable as exc:
        log.warning("delivery watch: ledger unreachable", order=o.id, error=str(exc))
        return None
    if status != 200:
        log.info("delivery watch: the ledger has no delivery for the order yet", order=o.id, status=status)
        return None
    return list(answer["periods"])


def observe(contracted: Sequence[BapOrder], metered: dict[str, Any], now: datetime) -> list[tuple[BapOrder, Judged]]:
    """Judge every contracted order with a half hour ended since its last judgement; record it in `metered` (in
    place)."""
    found = []
    for o in contracted:
        if not _due(o, metered, now):
            continue
        periods = fetch(o)
        seen = metered.get(o.id)
        through = datetime.fromisoformat(seen["through"]) if seen else None
        judged = None if periods is None else judge(periods, through=through)
        if judged is None:
            continue
        metered[o.id] = {
            "through": judged.through.isoformat(),
            "fraction": round(judged.fraction, 4),
            "provider_id": o.provider_id,
        }
        found.append((o, judged))
    return found
