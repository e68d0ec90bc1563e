"""Moving a procurement on (bap/procurement.py has its life): search and collect, choose exactly, wait for
approval, order, re-procure what fails, report what cannot be covered.

`advance(id)` runs one step under a row lock and is idempotent: the Celery task `bap.advance_procurement`
runs it when something happened, and the beat entry `bap-procurements` every second for every procurement
still moving, so a lost trigger only delays it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bap import carbon_log, delivery_watch, governance, market_log, procurement_offers, procurement_tokens
from bap import procurement_choice as pc
from bap.models import BapOrder, CatalogOffer, Procurement, Transaction
from bap.policy import needs_approval
from bap.procurement import (
    ACTIVE,
    CONTRACTED,
    contracted_orders,
    covered_kw,
    expected_loss_kw,
    get,
    orders_of,
    slots_of,
)
from bap.service import ClientError, OrderRequest, cancellation_reason, cancelled_by, order_action, search
from beckn.identity import Identity, load_identity
from beckn.models import inbox
from kernel import clock
from kernel.config import get_settings
from kernel.db import session_scope
from schemas.flex import FlexRequest

log = structlog.get_logger(__name__)

MAX_ROUNDS = 4  # choices per procurement: the first and up to three re-procurements
MAX_SEARCHES = 2  # a re-procurement with no offer left searches the network once more
WAITING = ("SELECTING", "QUOTED", "CREATED")
# Who cancelled an order this engine did not cancel itself, in the market log's words (Beckn cancelled_by): the
# provider or its platform, or this BAP by hand (the client API's cancel); None when the BPP did not say.
CANCELLED_BY = {"PROVIDER": "the provider", "CONSUMER": "this BAP (by hand)", None: "its BPP (who, not said)"}


@dataclass
class Step:
    """What one advance did: outbox rows to deliver once committed."""

    outbox_ids: list[int]


MAX_STEP_ERRORS = 5  # consecutive failed steps before a procurement is failed, visibly, with the error


def step_failed(procurement_id: str, error: BaseException) -> None:
    """A step raised: count it; after MAX_STEP_ERRORS in a row the procurement fails with the error as its
    reason (accepted means done or visibly failed, never stuck)."""
    with session_scope("bap") as s:
        p = get(s, procurement_id, lock=True)
        if p.status in ("failed", "cancelled", "halted", "settled"):
            return
        st = _state(p)
        st["step_errors"] = int(st.get("step_errors", 0)) + 1
        p.choice = st
        if st["step_errors"] >= MAX_STEP_ERRORS:
            _finish(s, p, "failed", f"the orchestrator could not move it on: {type(error).__name__}: {error}"[:500])


def advance(procurement_id: str) -> Step:
    step = Step([])
    with session_scope("bap") as s:
        p = get(s, procurement_id, lock=True)
        me = load_identity(get_settings().home, p.request["bap_id"])
        cancel = (p.choice or {}).get("cancel_requested")
        if cancel and p.status not in ("cancelled", "settled"):
            st = _state(p)
            _stop(s, p, me, step, st, status="cancelled", reason=cancel)
            p.choice = st
        else:
            _STEPS.get(p.status, _after)(s, p, me, step)
        if (p.choice or {}).get("step_errors"):
            p.choice = {**(p.choice or {}), "step_errors": 0}
        p.updated_at = clock.now()
    return step


# -- collecting -----------------------------------------------------------------------------------------
def _collecting(s: Session, p: Procurement, me: Identity, step: Step) -> None:
    if governance.is_halted(s):
        _finish(s, p, "halted", "the kill switch is on")
        return
    if not p.transaction_ids:
        _search(s, p, me, step)
        return
    assert p.collect_until is not None
    if clock.wall_now() < p.collect_until and not _all_answered(s, p):
        return
    _choose(s, p, me, step)


def _search(s: Session, p: Procurement, me: Identity, step: Step) -> None:
    now = clock.now()
    grid = [t for t in slots_of(p) if t.start > now] or slots_of(p)  # a re-search asks for what is still ahead
    req = FlexRequest(
        grid[0].start,
        grid[-1].end,
        max(t.target_kw for t in grid),
        p.request["price_cap_gbp_per_mwh"],
    )
    sent = search(
        s,
        me,
        req,
        gateway_url=p.request["gateway_url"],
        city_code=p.request["city_code"],
        country_code=p.request["country_code"],
        aggregator_id=p.aggregator_id,
    )
    t = s.get(Transaction, sent.transaction_id)
    assert t is not None
    t.request = {**t.request, "procurement_id": p.id}  # its on_search answers move the procurement on
    p.transaction_ids = [*p.transaction_ids, sent.transaction_id]
    p.collect_until = clock.wall_now() + timedelta(seconds=get_settings().message_ttl_s)
    p.status = "collecting"
    step.outbox_ids.append(sent.outbox_id)
    market_log.record(
        s,
        "search",
        f"searched the network (transaction {sent.transaction_id}); collecting offers for up to "
        f"{get_settings().message_ttl_s} s or until the {len(p.request['expected_bpps'])} BPPs fanned out to answer",
        procurement_id=p.id,
        policy_version=p.policy_version,
    )


def _all_answered(s: Session, p: Procurement) -> bool:
    expected = set(p.request["expected_bpps"])
    if not expected:
        return False
    answered = s.scalar(
        select(func.count(func.distinct(inbox.c.sender_id))).where(
            inbox.c.transaction_id == p.transaction_ids[-1],
            inbox.c.action == "on_search",
            inbox.c.sender_id.in_(expected),
        )
    )
    return int(answered or 0) >= len(expected)


# -- choosing -------------------------------------------------------------------------------------------


def _gap(s: Session, p: Procurement) -> list[float]:
    """Target minus what live (not failed) orders cover, per slot — an order under-delivering in metering
    counting only the fraction it delivers (bap/delivery_watch.py)."""
    grid = slots_of(p)
    covered = covered_kw(s, p, contracted_only=False)
    loss = expected_loss_kw(s, p)
    return [max(0.0, t.target_kw - c + x) for t, c, x in zip(grid, covered, loss, strict=True)]


def _reachable(s: Session, p: Procurement, gap: list[float]) -> float:
    """The largest gap (kW) in a slot that may still be bought: one starting beyond gate closure."""
    gate = timedelta(minutes=governance.version(s, p.policy_version).body.gate_closure_minutes)
    ready = clock.now() + gate
    return max((g for t, g in zip(slots_of(p), gap, strict=True) if t.start >= ready), default=0.0)


def _state(p: Procurement) -> dict[str, Any]:
    base: dict[str, Any] = {
        "rounds": 0,
        "searches": 0,
        "used": [],
        "abandoned": {},
        "sent": {},
        "pending": [],
        "metered": {},  # bap/delivery_watch.py: per order, the latest half hour judged and its delivered fraction
    }
    # A deep copy: the column is plain JSON (no mutation tracking), so a change must be a new value that
    # differs from the loaded one — nested dicts changed in place would compare equal and never be written.
    return copy.deepcopy({**base, **(p.choice or {})})


def _choose(s: Session, p: Procurement, me: Identity, step: Step) -> None:
    st = _state(p)
    policy = governance.version(s, p.policy_version).body
    first_round = st["rounds"] == 0
    gap = _gap(s, p)
    portfolio, by_key, holdings = procurement_offers.portfolio(
        s, p, policy, gap=gap, used=set(st["used"]) | _short_providers_offers(s, p, st), log_offers=first_round
    )
    grid = slots_of(p)
    for offer_id, why in portfolio.excluded:
        market_log.record(
            s,
            "offer_excluded",
            f"offer {offer_id} left out: {why}",
            procurement_id=p.id,
            policy_version=p.policy_version,
            offer=offer_id,
        )
    pending = []
    for order, why in zip(portfolio.orders, portfolio.reasons, strict=True):
        c = by_key[order.offer_id]
        method, power_kw = _payment(order, c, holdings)
        pending.append(
            {
                "offer": procurement_offers.offer_key(c),
                "transaction_id": c.transaction_id,
                "bpp_id": c.bpp_id,
                "provider_id": c.provider_id,
                "item_id": c.item_id,
                "power_kw": power_kw,
                "settlement_method": method,
                "start": grid[order.first_slot].start.isoformat(),
                "end": grid[order.last_slot].end.isoformat(),
            }
        )
        paid = "paid with tokens" if method == "CFT" else "paid spot"
        market_log.record(
            s,
            "chosen",
            f"chose {power_kw:g} kW ({paid}) from {c.provider_id} ({c.item_id}), "
            f"{grid[order.first_slot].start.isoformat()}–{grid[order.last_slot].end.isoformat()}: {why}",
            procurement_id=p.id,
            policy_version=p.policy_version,
            provider_id=c.provider_id,
            offer=order.offer_id,
        )
    st.update(
        rounds=st["rounds"] + 1,
        searches=max(st["searches"], len(p.transaction_ids)),
        used=[*st["used"], *(x["offer"] for x in pending)],
        pending=pending,
        expected_cost_gbp=round((st.get("expected_cost_gbp") or 0.0) + portfolio.cost_gbp, 2),
        expected_carbon_kg=round((st.get("expected_carbon_kg") or 0.0) + portfolio.carbon_kg, 3),
        best_bound=portfolio.best_bound,
        mip_gap=portfolio.mip_gap,
    )
    p.choice = st
    short = max(portfolio.shortfall_kw) if portfolio.shortfall_kw else 0.0
    market_log.record(
        s,
        "choice" if first_round else "reprocure",
        f"{'choice' if first_round else 're-procurement'} {st['rounds']}: {len(pending)} orders, expected "
        f"£{portfolio.cost_gbp:,.2f}, {portfolio.carbon_kg:,.1f} kg CO2, shortfall {short:g} kW "
        f"(MIP gap {portfolio.mip_gap:.2g})",
        procurement_id=p.id,
        policy_version=p.policy_version,
    )
    if first_round:
        _shadow(s, p, gap)
        asked = needs_approval(policy, peak_power_kw=max(portfolio.covered_kw or (0.0,)), cost_gbp=portfolio.cost_gbp)
        if asked is not None and pending:
            p.status, p.status_reason = "pending_approval", asked
            p.explanation = {
                "why": asked,
                "asked_wall": clock.wall_now().isoformat(),
                "offers_considered": len(by_key),
                "choice": pending,
                "expected_cost_gbp": st["expected_cost_gbp"],
                "expected_carbon_kg": st["expected_carbon_kg"],
                "if_rejected": f"no order is placed; up to {max(gap):g} kW of the target stays uncovered",
            }
            market_log.record(
                s,
                "approval_asked",
                f"waiting for approval: {asked}",
                procurement_id=p.id,
                policy_version=p.policy_version,
            )
            return
    p.status = "ordering"
    _ordering(s, p, me, step)


def _short_providers_offers(s: Session, p: Procurement, st: dict[str, Any]) -> set[str]:
    """The offers of providers whose orders here under-deliver in metering: not bought from again for it."""
    below = governance.version(s, p.policy_version).body.delivery.reprocure_below_fraction
    short = {m["provider_id"] for m in st["metered"].values() if m["fraction"] < below}
    return {procurement_offers.offer_key(c) for c in procurement_offers.offer_rows(s, p) if c.provider_id in short}


def _payment(order: pc.ChosenOrder, c: CatalogOffer, holdings: procurement_tokens.Held) -> tuple[str, float]:
    """How a chosen order is paid and at what kW: a redemption in whole tokens (kW set to whole MWh over its
    window), else spot at the chosen kW (also when no whole number of tokens fits the offer)."""
    series = procurement_tokens.series_of(order.offer_id)
    if series is None:
        return "P415", order.power_kw
    kw = procurement_tokens.whole_token_kw(
        order.power_kw,
        order.n_slots * 0.5,
        min_kw=float(c.spec.get("min_kw") or 0.0),
        max_kw=float(c.spec.get("max_kw") or c.available_kw),
        budget=holdings[series][3],
    )
    return ("CFT", kw) if kw is not None else ("P415", order.power_kw)


def _shadow(s: Session, p: Procurement, gap: list[float]) -> None:
    """What the shadow policy would have bought on the same offers: recorded, never ordered."""
    sh = governance.shadow(s)
    if sh is None or sh.version == p.policy_version:
        return
    portfolio, _, _ = procurement_offers.portfolio(s, p, sh.body, gap=gap, used=set(), log_offers=False)
    p.shadow = {
        "policy_version": sh.version,
        "orders": [
            {
                "offer": o.offer_id,
                "provider_id": o.provider_id,
                "power_kw": o.power_kw,
                "first_slot": o.first_slot,
                "last_slot": o.last_slot,
            }
            for o in portfolio.orders
        ],
        "expected_cost_gbp": round(portfolio.cost_gbp, 2),
        "expected_carbon_kg": round(portfolio.carbon_kg, 3),
        "shortfall_kw": max(portfolio.shortfall_kw or (0.0,)),
    }
    market_log.record(
        s,
        "shadow_choice",
        f"shadow policy v{sh.version} would buy {len(portfolio.orders)} orders "
        f"for £{portfolio.cost_gbp:,.2f} (no order placed)",
        procurement_id=p.id,
        policy_version=sh.version,
    )


# -- ordering -------------------------------------------------------------------------------------------
def _send(s: Session, p: Procurement, me: Identity, step: Step, action: str, r: OrderRequest) -> None:
    try:
        step.outbox_ids.append(order_action(s, me, action, r).outbox_id)
    except ClientError as exc:
        market_log.record(
            s,
            "order_refused",
            f"{action} to {r.provider_id} not sent: {exc}",
            procurement_id=p.id,
            provider_id=r.provider_id,
        )


def _place(s: Session, p: Procurement, me: Identity, step: Step, st: dict[str, Any]) -> None:
    for x in st["pending"]:
        r = OrderRequest(
            transaction_id=x["transaction_id"],
            bpp_id=x["bpp_id"],
            provider_id=x["provider_id"],
            item_id=x["item_id"],
            power_kw=x["power_kw"],
            settlement_method=x.get("settlement_method", "P415"),
            window_start=datetime.fromisoformat(x["start"]),
            window_end=datetime.fromisoformat(x["end"]),
            procurement_id=p.id,
        )
        _send(s, p, me, step, "select", r)
    s.flush()
    for o in orders_of(s, p):
        if o.state == "SELECTING" and o.id not in st["sent"]:
            st["sent"][o.id] = {"action": "select", "wall": clock.wall_now().isoformat()}
    st["pending"] = []


def _fail(s: Session, p: Procurement, st: dict[str, Any], o: BapOrder, why: str, **detail: Any) -> None:
    st["abandoned"][o.id] = why
    market_log.record(
        s,
        "order_failed",
        f"order with {o.provider_id} ({o.item_id}) failed: {why}; its gap is re-procured",
        procurement_id=p.id,
        provider_id=o.provider_id,
        order_ref=o.id,
        **detail,
    )


def _confirm_turn(o: BapOrder, orders: list[BapOrder], st: dict[str, Any]) -> bool:
    """Whether `o` may be confirmed now. A provider decides each confirm against the orders it has already
    accepted (its schedule must hold them all), so two orders with one provider are confirmed one after the
    other, the earlier window first: which of them the provider can honour then depends on the choice, not on
    which message happened to arrive first."""
    for x in orders:
        if x.id == o.id or x.id in st["abandoned"] or (x.bpp_id, x.provider_id) != (o.bpp_id, o.provider_id):
            continue
        awaiting = x.state == "CREATED" and st["sent"].get(x.id, {}).get("action") == "confirm"
        earlier = x.state in ("SELECTING", "QUOTED", "CREATED") and (x.window_start, x.id) < (o.window_start, o.id)
        if awaiting or earlier:
            return False
    return True


def _drive(s: Session, p: Procurement, me: Identity, step: Step, st: dict[str, Any]) -> None:
    ttl = timedelta(seconds=get_settings().message_ttl_s)
    orders = orders_of(s, p)
    for o in orders:
        if o.id in st["abandoned"]:
            continue
        sent = st["sent"].get(o.id, {"action": "select", "wall": clock.wall_now().isoformat()})
        if o.state == "CANCELLED":
            by = cancelled_by(o)
            why = cancellation_reason(o) or o.last_error or "no reason given"
            _fail(s, p, st, o, f"cancelled by {CANCELLED_BY[by]}: {why}", cancelled_by=by)
        elif o.state in WAITING and o.last_error:
            _fail(s, p, st, o, o.last_error)
        elif o.state == "QUOTED" and sent["action"] == "select":
            _next(s, p, me, step, st, o, "init")
        elif o.state == "CREATED" and sent["action"] != "confirm":
            if _confirm_turn(o, orders, st):  # else it waits, not timed: the order before it is
                _next(s, p, me, step, st, o, "confirm")
        elif o.state in WAITING and clock.wall_now() - datetime.fromisoformat(sent["wall"]) > ttl:
            _fail(s, p, st, o, f"no answer to {sent['action']} within the message TTL ({ttl.total_seconds():g} s)")


def _next(s: Session, p: Procurement, me: Identity, step: Step, st: dict[str, Any], o: BapOrder, action: str) -> None:
    r = OrderRequest(transaction_id=o.transaction_id, bpp_id=o.bpp_id, provider_id=o.provider_id, item_id=o.item_id)
    _send(s, p, me, step, action, r)
    st["sent"][o.id] = {"action": action, "wall": clock.wall_now().isoformat()}


def _ordering(s: Session, p: Procurement, me: Identity, step: Step) -> None:
    st = _state(p)
    if governance.is_halted(s):
        _halt(s, p, me, step, st)
        p.choice = st
        return
    if st["pending"]:
        _place(s, p, me, step, st)
    _drive(s, p, me, step, st)
    carbon_log.log_expected_carbon(s, p, st)
    p.choice = st
    live = [o for o in orders_of(s, p) if o.id not in st["abandoned"]]
    if any(o.state in WAITING for o in live):
        return
    gap = _gap(s, p)
    if _reachable(s, p, gap) > 0.05 and st["rounds"] < MAX_ROUNDS:
        if _has_unused_offers(s, p, st):
            _choose(s, p, me, step)
            return
        if len(p.transaction_ids) < MAX_SEARCHES and (st["abandoned"] or st["metered"]):
            _search(s, p, me, step)  # back to collecting: a fresh search for the gap
            return
    _settle_status(s, p, gap)


def _has_unused_offers(s: Session, p: Procurement, st: dict[str, Any]) -> bool:
    failed_providers = {o.provider_id for o in orders_of(s, p) if o.id in st["abandoned"]}
    short = _short_providers_offers(s, p, st)
    return any(
        (key := procurement_offers.offer_key(c)) not in st["used"]
        and key not in short
        and c.provider_id not in failed_providers
        for c in procurement_offers.offer_rows(s, p)
    )


def _settle_status(s: Session, p: Procurement, gap: list[float]) -> None:
    grid = slots_of(p)
    wanted = sum(t.target_kw for t in grid)
    missing = sum(gap)
    status = "covered" if missing <= 0.05 * len(grid) else ("partially_covered" if missing < wanted else "failed")
    reason = "every slot covered" if status == "covered" else f"shortfall up to {max(gap):g} kW"
    p.covered_wall = clock.wall_now() if status != "failed" else None
    _finish(s, p, status, reason)


def _finish(s: Session, p: Procurement, status: str, reason: str) -> None:
    p.status, p.status_reason = status, reason
    market_log.record(
        s, status, f"procurement {status}: {reason}", procurement_id=p.id, policy_version=p.policy_version
    )


def _halt(s: Session, p: Procurement, me: Identity, step: Step, st: dict[str, Any]) -> None:
    """The kill switch: orders not yet started are cancelled (drafts abandoned), the procurement halts."""
    _stop(s, p, me, step, st, status="halted", reason="the kill switch is on")


def _stop(
    s: Session, p: Procurement, me: Identity, step: Step, st: dict[str, Any], *, status: str, reason: str
) -> None:
    """Orders not yet started are cancelled at their BPPs (drafts abandoned); the procurement ends."""
    now = clock.now()
    for o in orders_of(s, p):
        if o.id in st["abandoned"] or o.window_start <= now:
            continue
        if o.order_id and o.state in ("CREATED", "ACCEPTED"):
            r = OrderRequest(
                transaction_id=o.transaction_id,
                bpp_id=o.bpp_id,
                provider_id=o.provider_id,
                item_id=o.item_id,
                reason=reason[:200],
            )
            _send(s, p, me, step, "cancel", r)
        st["abandoned"][o.id] = status
    st["pending"] = []
    _finish(s, p, status, reason)


# -- after the choice -----------------------------------------------------------------------------------
def _after(s: Session, p: Procurement, me: Identity, step: Step) -> None:
    """covered / partially_covered: a provider that cancels before its window is replaced; once the window
    has begun the procurement is delivering, and settled once every contracted order has a settlement run."""
    if p.status in ("covered", "partially_covered", "delivering"):
        st = _state(p)
        now = clock.now()
        if governance.is_halted(s) and any(
            o.window_start > now and o.state in CONTRACTED and o.id not in st["abandoned"] for o in orders_of(s, p)
        ):
            _halt(s, p, me, step, st)  # the kill switch cancels every order not yet started
            p.choice = st
            return
        for o in orders_of(s, p):
            if o.id not in st["abandoned"] and o.state == "CANCELLED" and o.window_start > now:
                p.status = "ordering"
                p.choice = st
                _ordering(s, p, me, step)
                return
        grid = slots_of(p)
        if now >= grid[0].start and _metering_shortfall(s, p, me, step, st):
            return
        contracted = [
            o for o in orders_of(s, p) if o.id not in st["abandoned"] and o.state in (*CONTRACTED, "CANCELLED")
        ]
        settled = [o for o in contracted if o.state != "CANCELLED"]
        if settled and all(o.settlement_run for o in settled):
            carbon_log.record_settlement(s, p, st, settled)
            p.choice = st
            _finish(s, p, "settled", "every order has a settlement run")
        elif now >= grid[0].start and p.status != "delivering":
            p.status = "delivering"


def _metering_shortfall(s: Session, p: Procurement, me: Identity, step: Step, st: dict[str, Any]) -> bool:
    """Judge what metering shows of the orders so far (bap/delivery_watch.py); when an order under-delivers and
    the gap it leaves falls in slots still beyond gate closure, re-procure (True: the procurement moved on)."""
    now = clock.now()
    policy = governance.version(s, p.policy_version).body
    below = policy.delivery.reprocure_below_fraction
    judged = delivery_watch.observe(contracted_orders(s, p), st["metered"], now)
    if not judged:
        return False
    p.choice = st
    for o, j in judged:
        if j.fraction < below:
            market_log.record(
                s,
                "metering_shortfall",
                f"order with {o.provider_id} ({o.item_id}) delivered {j.fraction:.0%} of its {o.power_kw:g} kW in "
                f"{j.period_start.isoformat()}–{j.through.isoformat()} ({j.reading_kind} reading); its later slots "
                f"count at that fraction and the gap is re-procured where gate closure allows",
                procurement_id=p.id,
                provider_id=o.provider_id,
                order_ref=o.id,
                policy_version=p.policy_version,
            )
    if _reachable(s, p, _gap(s, p)) <= 0.05 or st["rounds"] >= MAX_ROUNDS:
        return False
    p.status = "ordering"
    _ordering(s, p, me, step)
    return True


def _pending_approval(s: Session, p: Procurement, me: Identity, step: Step) -> None:
    if clock.now() >= slots_of(p)[0].start:
        _finish(s, p, "cancelled", "gate closure passed without an approval")


def _nothing(s: Session, p: Procurement, me: Identity, step: Step) -> None:
    return None


_STEPS = {
    "collecting": _collecting,
    "pending_approval": _pending_approval,
    "ordering": _ordering,
    "failed": _nothing,
    "cancelled": _nothing,
    "halted": _nothing,
    "settled": _nothing,
}


def open_ids(s: Session) -> list[str]:
    """Every procurement not yet final: what the kill switch reaches."""
    q = select(Procurement.id).where(Procurement.status.in_((*ACTIVE, "covered", "partially_covered", "delivering")))
    return list(s.scalars(q))


AFTER_CHOICE_EVERY = timedelta(seconds=30)  # market time between ticks of a procurement past its choice


def moving(s: Session) -> list[str]:
    """Procurements a tick advances: those still moving, every tick; and, every AFTER_CHOICE_EVERY, covered
    ones whose orders may yet change or settle (a callback of theirs kicks them at once: bap/kicks.py)."""
    due = clock.now() - AFTER_CHOICE_EVERY
    q = (
        select(Procurement.id)
        .where(
            Procurement.status.in_(ACTIVE)
            | (Procurement.status.in_(("covered", "partially_covered", "delivering")) & (Procurement.updated_at < due))
        )
        .order_by(Procurement.updated_at)
        .limit(200)
    )
    return list(s.scalars(q))
