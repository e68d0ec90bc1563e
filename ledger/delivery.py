"""An order's delivery so far, as metered: what its buyer watches during the window (issue 12, "a shortfall seen
in metering → re-procure the gap").

Read only. It evaluates the settlement rules (ledger/settlement.py `settle`, run II) on the inputs the ledger
holds now — the same readings, baseline and sharing among the meter's orders a run would use — and reports,
per declared period, only what metering has evidenced:

    pending            the period has not ended
    awaiting_reading   it has ended and no reading has arrived (NOT counted as a shortfall: the meter
                       operator's data may simply be late; settlement decides what a missing reading means)
    insufficient_data  a reading, but the history gives no baseline yet
    metered            a reading and a baseline: ``delivered_wh`` is this order's share of the meter's
                       delivered volume (ledger/allocation.py), capped at its contracted energy

Nothing is written: no run, no transfer. Settlement runs alone decide what is paid.
"""

from __future__ import annotations

from datetime import datetime
from fractions import Fraction
from typing import Any

import psycopg

from grid.periods import PERIOD
from ledger.db import iso
from ledger.settlement import PeriodResult, settle
from ledger.settlement_runs import load_inputs


def _state(result: PeriodResult, now: datetime) -> str:
    if result.start_utc + PERIOD > now:
        return "pending"
    if result.metered_wh is None:
        return "awaiting_reading"
    return "metered" if result.status == "settled" else "insufficient_data"


def _fraction(delivered_wh: Fraction, contracted_wh: Fraction) -> str | None:
    return None if contracted_wh <= 0 else f"{float(delivered_wh / contracted_wh):.4f}"


def delivery_so_far(conn: psycopg.Connection, order_id: str, now: datetime) -> dict[str, Any]:
    """The order's declared periods with what metering shows of each (module doc); `order_id` must exist."""
    terms, policy, inputs, cancelled = load_inputs(conn, order_id, now)
    result = settle(inputs, policy)
    periods = []
    for r in result.periods:
        if r.status == "rejected":
            continue
        state = _state(r, now)
        evidenced = state == "metered"
        periods.append(
            {
                "start_utc": iso(r.start_utc),
                "end_utc": iso(r.start_utc + PERIOD),
                "state": state,
                "reading_kind": r.reading_kind if state not in ("pending", "awaiting_reading") else None,
                "contracted_wh": str(r.contracted_wh),
                "delivered_wh": str(r.allocated_wh) if evidenced else None,
                "delivered_fraction": _fraction(r.allocated_wh, r.contracted_wh) if evidenced else None,
            }
        )
    return {
        "order_id": order_id,
        "meter_id": terms.meter_id,
        "provider_id": terms.provider_id,
        "contracted_w": terms.contracted_w,
        "cancelled": cancelled,
        "as_of": iso(now),
        "periods": periods,
    }
