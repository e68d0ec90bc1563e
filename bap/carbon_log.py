"""The carbon log of a procurement's orders (bap/market_log.py, log "carbon"): the carbon each order is expected
to avoid once contracted, and, once settled, the carbon it avoided — its energy at the grid intensity heard for
each of its half-hours (bap/signals.py) — with the delivered kW and settled cost it leaves on the procurement."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from bap import market_log, signals
from bap.models import BapOrder, Procurement
from bap.procurement import CONTRACTED, SLOT, orders_of, slots_of


def carbon_kg(s: Session, start: datetime, end: datetime, energy_kwh_per_slot: float) -> tuple[float, int]:
    """Carbon avoided (kg) by `energy_kwh_per_slot` less in each half-hour of [start, end), at the grid
    intensity heard for it; and how many half-hours had none."""
    heard = signals.intensity(s, start, end)
    total, missing, t = 0.0, 0, start
    while t < end:
        if t in heard:
            total += energy_kwh_per_slot * heard[t] / 1000.0
        else:
            missing += 1
        t += SLOT
    return total, missing


def log_expected_carbon(s: Session, p: Procurement, st: dict[str, Any]) -> None:
    """The carbon log's expected line for each order as it is contracted."""
    logged = set(st.setdefault("carbon_logged", []))
    for o in orders_of(s, p):
        if o.id in logged or o.id in st["abandoned"] or o.state not in CONTRACTED:
            continue
        kg, missing = carbon_kg(s, o.window_start, o.window_end, o.power_kw * 0.5)
        note = f" ({missing} half-hours without a signal heard)" if missing else ""
        market_log.record(
            s,
            "expected_carbon",
            f"order with {o.provider_id}: {kg:,.1f} kg CO2 expected avoided{note}",
            procurement_id=p.id,
            provider_id=o.provider_id,
            order_ref=o.id,
            carbon=True,
            expected_avoided_kg=round(kg, 3),
            half_hours_without_signal=missing,
        )
        st["carbon_logged"] = [*st["carbon_logged"], o.id]


def record_settlement(s: Session, p: Procurement, st: dict[str, Any], contracted: list[BapOrder]) -> None:
    """Delivered kW per slot, settled cost, and the carbon log's delivered line per order."""
    grid = slots_of(p)
    delivered = [0.0] * len(grid)
    cost_pence = 0
    for o in contracted:
        hours = (o.window_end - o.window_start).total_seconds() / 3600
        kwh = o.delivered_energy_kwh or 0.0
        cost_pence += o.settled_amount_pence or 0
        for i, t in enumerate(grid):
            if o.window_start <= t.start and t.end <= o.window_end:
                delivered[i] += kwh / hours
        kg, missing = carbon_kg(s, o.window_start, o.window_end, kwh / (2 * hours))
        market_log.record(
            s,
            "delivered_carbon",
            f"order with {o.provider_id}: {kwh:,.1f} kWh delivered, {kg:,.1f} kg CO2 avoided",
            procurement_id=p.id,
            provider_id=o.provider_id,
            order_ref=o.id,
            carbon=True,
            delivered_energy_kwh=kwh,
            delivered_avoided_kg=round(kg, 3),
            half_hours_without_signal=missing,
        )
    st["delivered_kw"] = [round(x, 3) for x in delivered]
    st["settled_cost_gbp"] = round(cost_pence / 100, 2)
