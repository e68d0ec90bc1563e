"""Procurements: a load reduction to buy, per half-hour slot, and what became of it (use cases).

Life of a procurement (bap/procurement_engine.py moves it on):

    collecting ──► pending_approval ──► ordering ──► covered | partially_covered | failed
        │                 │ (reject)        │ (kill switch)
        └─────────────────┴─► cancelled     └─► halted
    then, once its last slot has begun: delivering; once every order is settled: settled.

A procurement is created by the client API (`source` api), a grid-event webhook (webhook) or the OpenADR VEN
(openadr). It searches the network, collects offers until every BPP the gateway fans out to has answered or the
message TTL ends, chooses exactly (bap/procurement_choice.py), waits for approval when the active policy says
so, and orders: select → init → confirm per chosen order. Failures are re-procured from the remaining offers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from bap import delivery_watch, governance, market_log, signals
from bap.models import BapOrder, Procurement
from bap.service import ClientError, order_json
from kernel import clock
from kernel.config import get_settings
from schemas import limits

log = structlog.get_logger(__name__)

SLOT = timedelta(minutes=30)
FINAL = ("covered", "partially_covered", "failed", "cancelled", "halted", "settled")
ACTIVE = ("collecting", "ordering", "pending_approval")
OBJECTIVES = ("cost", "carbon", "cost_plus_carbon")


@dataclass(frozen=True)
class SlotTarget:
    start: datetime
    end: datetime
    target_kw: float


@dataclass(frozen=True)
class NewProcurement:
    slots: tuple[SlotTarget, ...]
    price_cap_gbp_per_mwh: float | None = None
    objective: str | None = None  # None: the policy's
    source: str = "api"
    event_id: str | None = None
    event_body: bytes | None = None  # the grid event it answers, for idempotency
    expected_bpps: tuple[str, ...] = ()
    city_code: str = ""
    country_code: str = "GBR"
    key_id: str | None = None
    aggregator_id: str | None = None


def slot_grid(slots: tuple[SlotTarget, ...], now: datetime) -> list[SlotTarget]:
    """The contiguous half-hour grid the slots span (target 0 where none was asked), validated."""
    if not slots:
        raise ClientError("slots: at least one slot is required")
    by_start: dict[datetime, float] = {}
    for i, s in enumerate(slots):
        if s.start.tzinfo is None:
            raise ClientError(f"slots[{i}].start must carry a time zone")
        if s.end - s.start != SLOT or s.start.minute % 30 or s.start.second or s.start.microsecond:
            raise ClientError(f"slots[{i}]: a slot is one half-hour starting on :00 or :30")
        if not 0 <= s.target_kw <= limits.MAX_KW:
            raise ClientError(f"slots[{i}].target_kw must be in [0, {limits.MAX_KW:g}]")
        if s.start in by_start:
            raise ClientError(f"slots[{i}].start repeats an earlier slot")
        by_start[s.start] = s.target_kw
    first, last = min(by_start), max(by_start)
    if last + SLOT <= now:
        raise ClientError("slots: every slot is already past")
    if last + SLOT - first > timedelta(days=limits.MAX_WINDOW_DAYS):
        raise ClientError(f"slots: a procurement spans at most {limits.MAX_WINDOW_DAYS} days")
    if first > now + timedelta(days=get_settings().max_window_ahead_days):
        raise ClientError("slots: the first slot is further ahead than FLEXMARKET_MAX_WINDOW_AHEAD_DAYS")
    if not any(by_start.values()):
        raise ClientError("slots: at least one slot needs a positive target_kw")
    n = int((last - first) / SLOT) + 1
    return [SlotTarget(first + i * SLOT, first + (i + 1) * SLOT, by_start.get(first + i * SLOT, 0.0)) for i in range(n)]


def request_cancel(session: Session, p: Procurement, reason: str) -> None:
    """Ask the engine to cancel it: orders not yet started are cancelled at their BPPs."""
    if p.status in ("cancelled", "settled", "failed"):
        return
    p.choice = {**(p.choice or {}), "cancel_requested": reason}
    market_log.record(
        session,
        "cancel_requested",
        f"cancellation requested: {reason}",
        procurement_id=p.id,
        policy_version=p.policy_version,
    )


def cancel_event(session: Session, source: str, event_id: str, reason: str) -> list[str]:
    """Cancel every procurement made for any modification of a grid event (`<event_id>#<modification>`)."""
    found = session.scalars(
        select(Procurement).where(Procurement.source == source, Procurement.event_id.like(f"{_like(event_id)}#%"))
    ).all()
    for p in found:
        request_cancel(session, p, reason)
    return [p.id for p in found]


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def event_sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def create(session: Session, new: NewProcurement) -> tuple[Procurement, bool]:
    """A new procurement (collecting), or the one an identical grid event already made (False)."""
    if new.event_id is not None:
        existing = session.scalars(
            select(Procurement).where(Procurement.source == new.source, Procurement.event_id == new.event_id)
        ).first()
        if existing is not None:
            if new.event_body is not None and existing.event_sha256 != event_sha256(new.event_body):
                raise ClientError(f"event {new.event_id} was received before with a different body", 409)
            return existing, False
    if governance.is_halted(session):
        raise ClientError("the kill switch is on (POST /api/v1/resume lifts it): no new procurement", 409)
    stale = signals.blocking_reason(session)
    if stale is not None:
        log.warning("new procurement refused", reason=stale, source=new.source, event_id=new.event_id)
        raise ClientError(f"{stale}: no new procurement until they are fresh (GET /api/v1/signals)", 409)
    if new.event_id is not None and "#" in new.event_id:  # a modified event replaces its earlier versions
        base, _, modification = new.event_id.rpartition("#")
        cancel_event(session, new.source, base, f"replaced by modification {modification} of event {base}")
    policy = governance.active(session)
    grid = slot_grid(new.slots, clock.now())
    objective = new.objective or policy.body.objective
    if objective not in OBJECTIVES:
        raise ClientError(f"objective must be one of {', '.join(OBJECTIVES)}")
    cap = new.price_cap_gbp_per_mwh if new.price_cap_gbp_per_mwh is not None else policy.body.price_cap_gbp_per_mwh
    now = clock.now()
    p = Procurement(
        source=new.source,
        event_id=new.event_id,
        event_sha256=event_sha256(new.event_body) if new.event_body is not None else None,
        status="collecting",
        policy_version=policy.version,
        request={
            "slots": [{"start": s.start.isoformat(), "end": s.end.isoformat(), "target_kw": s.target_kw} for s in grid],
            "price_cap_gbp_per_mwh": cap,
            "objective": objective,
            "expected_bpps": list(new.expected_bpps),
            "city_code": new.city_code,
            "country_code": new.country_code,
        },
        transaction_ids=[],
        aggregator_id=new.aggregator_id,
        created_by=new.key_id,
        created_at=now,
        created_wall=clock.wall_now(),
        updated_at=now,
    )
    session.add(p)
    session.flush()
    peak = max(s.target_kw for s in grid)
    market_log.record(
        session,
        "procurement_created",
        f"procurement for up to {peak:g} kW over {len(grid)} half-hours from {grid[0].start.isoformat()} "
        f"({new.source}{', event ' + new.event_id if new.event_id else ''}), objective {objective}, "
        f"price cap £{cap:g}/MWh",
        procurement_id=p.id,
        policy_version=policy.version,
    )
    return p, True


def get(session: Session, procurement_id: str, *, lock: bool = False) -> Procurement:
    p = session.get(Procurement, procurement_id, with_for_update=lock)
    if p is None:
        raise ClientError(f"unknown procurement {procurement_id}", 404)
    return p


def slots_of(p: Procurement) -> list[SlotTarget]:
    return [
        SlotTarget(datetime.fromisoformat(s["start"]), datetime.fromisoformat(s["end"]), float(s["target_kw"]))
        for s in p.request["slots"]
    ]


def orders_of(session: Session, p: Procurement) -> list[BapOrder]:
    return list(session.scalars(select(BapOrder).where(BapOrder.procurement_id == p.id).order_by(BapOrder.id)))


LIVE_STATES = (
    "SELECTING",
    "QUOTED",
    "CREATED",
    "ACCEPTED",
    "IN-PROGRESS",
    "COMPLETED",
    "PARTIALLY-DELIVERED",
    "SETTLED",
)
CONTRACTED = (  # the provider accepted: the order's kW is contracted (and stays so through its settled outcomes)
    "ACCEPTED",
    "IN-PROGRESS",
    "COMPLETED",
    "PARTIALLY-DELIVERED",
    "SETTLED",
)


def is_live(o: BapOrder, abandoned: set[str]) -> bool:
    return o.state in LIVE_STATES and o.id not in abandoned


def covered_kw(session: Session, p: Procurement, *, contracted_only: bool) -> list[float]:
    """kW per slot of the procurement's orders: accepted ones (contracted_only) or every live one."""
    abandoned = set((p.choice or {}).get("abandoned", {}))
    grid = slots_of(p)
    out = [0.0] * len(grid)
    for o in orders_of(session, p):
        ok = o.state in CONTRACTED if contracted_only else is_live(o, abandoned)
        if not ok:
            continue
        for i, s in enumerate(grid):
            if o.window_start <= s.start and s.end <= o.window_end:
                out[i] += o.power_kw
    return out


def contracted_orders(session: Session, p: Procurement) -> list[BapOrder]:
    """The procurement's orders its providers accepted (and did not fail for it)."""
    abandoned = set((p.choice or {}).get("abandoned", {}))
    return [o for o in orders_of(session, p) if o.state in CONTRACTED and o.id not in abandoned]


def expected_loss_kw(session: Session, p: Procurement) -> list[float]:
    """kW per slot its orders under-delivering in metering are not expected to deliver (bap/delivery_watch.py)."""
    metered = (p.choice or {}).get("metered") or {}
    if not metered:
        return [0.0] * len(p.request["slots"])
    below = governance.version(session, p.policy_version).body.delivery.reprocure_below_fraction
    return delivery_watch.expected_loss_kw(slots_of(p), contracted_orders(session, p), metered, below=below)


def view(session: Session, p: Procurement) -> dict[str, Any]:
    grid = slots_of(p)
    covered = covered_kw(session, p, contracted_only=True)
    loss = expected_loss_kw(session, p)
    delivered = (p.choice or {}).get("delivered_kw")
    slots = []
    for i, s in enumerate(grid):
        row: dict[str, Any] = {
            "start": s.start.isoformat(),
            "end": s.end.isoformat(),
            "target_kw": s.target_kw,
            "covered_kw": round(covered[i], 3),
        }
        if delivered is not None:
            row["delivered_kw"] = delivered[i]
        slots.append(row)
    # covered_kw is what is contracted; the shortfall also counts what metering shows will not be delivered
    shortfall = [max(0.0, s.target_kw - c + x) for s, c, x in zip(grid, covered, loss, strict=True)]
    wanted = sum(s.target_kw for s in grid)
    choice = p.choice or {}
    return {
        "procurement_id": p.id,
        "status": p.status,
        "status_reason": p.status_reason,
        "source": p.source,
        "event_id": p.event_id,
        "policy_version": p.policy_version,
        "objective": p.request["objective"],
        "price_cap_gbp_per_mwh": p.request["price_cap_gbp_per_mwh"],
        "slots": slots,
        "shortfall_kw": round(max(shortfall), 3),
        "covered_fraction": round(1.0 - sum(shortfall) / wanted, 6) if wanted else 1.0,
        "orders": [order_json(o) for o in orders_of(session, p)],
        "metering": _metering(choice),
        "expected_cost_gbp": choice.get("expected_cost_gbp"),
        "expected_carbon_kg": choice.get("expected_carbon_kg"),
        "settled_cost_gbp": choice.get("settled_cost_gbp"),
        "transaction_ids": p.transaction_ids,
        "explanation": p.explanation,
        "shadow": p.shadow,
        "approval_latency_s": p.approval_latency_s,
        "decided_by": p.decided_by,
        "created_at": p.created_at.isoformat(),
        "seconds_to_all_confirmed": (
            (p.covered_wall - p.created_wall).total_seconds() if p.covered_wall is not None else None
        ),
        "market_log": market_log.query(session, procurement_id=p.id),
    }


def _metering(choice: dict[str, Any]) -> list[dict[str, Any]]:
    """Per order watched in its window: the latest half hour metering showed and the fraction delivered."""
    return [
        {"order": order, "provider_id": m["provider_id"], "through": m["through"], "delivered_fraction": m["fraction"]}
        for order, m in sorted((choice.get("metered") or {}).items())
    ]


def listing(
    session: Session, *, status: str | None, source: str | None, aggregator_id: str | None, limit: int
) -> list[dict[str, Any]]:
    q = select(Procurement).order_by(Procurement.created_at.desc()).limit(limit)
    if status:
        q = q.where(Procurement.status == status)
    if source:
        q = q.where(Procurement.source == source)
    if aggregator_id:
        q = q.where(Procurement.aggregator_id == aggregator_id)
    return [
        {
            "procurement_id": p.id,
            "status": p.status,
            "source": p.source,
            "event_id": p.event_id,
            "policy_version": p.policy_version,
            "first_slot": p.request["slots"][0]["start"],
            "slots": len(p.request["slots"]),
            "created_at": p.created_at.isoformat(),
        }
        for p in session.scalars(q)
    ]


def decide(session: Session, procurement_id: str, *, approve: bool, key_id: str | None, reason: str) -> Procurement:
    """An operator's answer to a procurement waiting for approval; refused after gate closure (its first
    slot begun)."""
    p = get(session, procurement_id, lock=True)
    if p.status != "pending_approval":
        raise ClientError(f"procurement {p.id} is {p.status}, not pending_approval", 409)
    if approve and clock.now() >= slots_of(p)[0].start:
        raise ClientError("gate closure has passed (its first slot has begun): approval refused", 409)
    asked = datetime.fromisoformat((p.explanation or {}).get("asked_wall") or clock.wall_now().isoformat())
    p.approval_latency_s = (clock.wall_now() - asked).total_seconds()
    p.decided_by = key_id
    p.status = "ordering" if approve else "cancelled"
    p.status_reason = reason or ("approved" if approve else "rejected")
    p.updated_at = clock.now()
    market_log.record(
        session,
        "approved" if approve else "rejected",
        f"{'approved' if approve else 'rejected'} by key {key_id} after {p.approval_latency_s:.1f} s: {reason}",
        procurement_id=p.id,
        policy_version=p.policy_version,
    )
    return p


def dumps(v: Any) -> str:
    return json.dumps(v, sort_keys=True, default=str)
