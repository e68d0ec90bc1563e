"""An order's outcome after delivery, as the ledger's settlement runs establish it, and how the outcome
travels in a Beckn order so the BPP and the BAP hold the ledger's word.

When each outcome state applies (../shared/DESIGN.md order states), read from the order's settlement runs
at the ledger (`GET /api/v1/orders/{id}` lists them, `GET /api/v1/settlement/{id}/{run}` holds each run's
result):

- no run yet: no outcome. The order keeps the state its window gives it at the BPP: IN-PROGRESS while the
  window is open, COMPLETED once it has closed (provisional: the window is over, delivery not yet measured);
- the latest run is one of II … RF and it found the delivered energy of the declared periods at least the
  contracted energy: COMPLETED;
- the latest run is one of II … RF and it found less (nothing included): PARTIALLY-DELIVERED;
- the final run DF has been made: SETTLED. The amounts and the delivered energy are final.

Each outcome names the run it comes from. A later run may restate the delivered energy and move the order
between COMPLETED and PARTIALLY-DELIVERED (a revised meter reading), but an outcome is taken only from a
later run than the one already held, and never moves an order to an earlier state (`advances`).

On the wire: the state is `fulfillments[0].state.descriptor.code` (as for every state), and the outcome is
the tag group `delivery` of `fulfillments[0]`: `settlement_run`, `delivered_energy_kwh` (three decimals,
the ledger's Wh) and `settled_amount_pence` (utilisation + availability of that run: what the buyer pays
the provider for the order).

Pure: plain data in and out (mypy --strict; no framework, database or HTTP client).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any

from schemas.core import Descriptor, Order, Tag, TagGroup
from schemas.limits import MAX_KW, MAX_SAFE_INTEGER, MAX_WINDOW_DAYS

#: A token-paid order (settlement method CFT) is registered on the ledger as the obligation of the buyer's
#: redemption, `cft-<Beckn order id>` (ledger/tokens.py `redeem`); every other order under its Beckn order id.
CFT_OBLIGATION_PREFIX = "cft-"


def ledger_order_id(order_id: str, settlement_method: str | None) -> str:
    """The ledger's id of a Beckn order."""
    return f"{CFT_OBLIGATION_PREFIX}{order_id}" if settlement_method == "CFT" else order_id


# The ledger's settlement runs, in order (P415 rule 10; ledger/settlement.py RUNS is the ledger's own copy).
RUNS = ("II", "SF", "R1", "R2", "R3", "RF", "DF")
FINAL_RUN = RUNS[-1]
OUTCOME_TAG_GROUP = "delivery"
PAID_LINES = ("utilisation", "availability")

# Lifecycle rank once an order is accepted: an order never moves to a lower rank. COMPLETED and
# PARTIALLY-DELIVERED share one: a later settlement run may restate which of the two applies.
RANK = {"ACCEPTED": 1, "IN-PROGRESS": 2, "COMPLETED": 3, "PARTIALLY-DELIVERED": 3, "SETTLED": 4}
OUTCOME_STATES = ("COMPLETED", "PARTIALLY-DELIVERED", "SETTLED")


class OutcomeFormatError(ValueError):
    """An outcome that cannot be read (the message names the field)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


@dataclass(frozen=True)
class LedgerOutcome:
    state: str  # COMPLETED | PARTIALLY-DELIVERED | SETTLED
    settlement_run: str  # II … DF: the run it comes from
    delivered_energy_kwh: Decimal  # three decimals (Wh)
    settled_amount_pence: int


def run_index(run: str | None) -> int:
    """The position of a run (II = 0 … DF = 6); -1 for none."""
    return -1 if run is None else RUNS.index(run)


def energy_kwh(energy_wh: Fraction) -> Decimal:
    """Wh (exact) → kWh with three decimals, rounded half to even once (to the Wh)."""
    return Decimal(round(energy_wh)) / 1000


def outcome_of_run(
    run: str, *, delivered_wh: Fraction, contracted_wh: Fraction, lines_pence: Mapping[str, int]
) -> LedgerOutcome:
    """The outcome a settlement run establishes (module docstring)."""
    if run not in RUNS:
        raise OutcomeFormatError("run", f"must be one of {', '.join(RUNS)}; got {run!r}")
    if run == FINAL_RUN:
        state = "SETTLED"
    elif contracted_wh > 0 and delivered_wh >= contracted_wh:
        state = "COMPLETED"
    else:
        state = "PARTIALLY-DELIVERED"
    amount = sum(int(lines_pence.get(line, 0)) for line in PAID_LINES)
    return LedgerOutcome(state, run, energy_kwh(delivered_wh), amount)


def outcome_from_ledger(summary: Mapping[str, Any], stored_run: Mapping[str, Any] | None) -> LedgerOutcome | None:
    """The outcome from the ledger's order summary and its latest stored run (None: no run yet).

    `stored_run` must be the run the summary lists last (GET /api/v1/settlement/{order}/{run})."""
    runs = summary.get("runs")
    if not isinstance(runs, list):
        raise OutcomeFormatError("runs", "the ledger's order summary must list its runs")
    if not runs:
        return None
    latest = runs[-1].get("run") if isinstance(runs[-1], Mapping) else None
    if stored_run is None or stored_run.get("run") != latest:
        raise OutcomeFormatError("run", f"the stored run must be the latest one, {latest!r}")
    result = stored_run.get("result")
    lines = stored_run.get("lines_pence")
    if not isinstance(result, Mapping) or not isinstance(lines, Mapping):
        raise OutcomeFormatError("result", "a stored run carries its result and lines_pence")
    try:
        delivered = Fraction(str(result["delivered_wh"]))
        contracted = Fraction(str(result["contracted_wh"]))
        paid = {k: int(v) for k, v in lines.items()}
    except (KeyError, ValueError, ZeroDivisionError) as exc:
        raise OutcomeFormatError(
            "result", f"delivered_wh, contracted_wh and lines_pence must be numbers: {exc}"
        ) from exc
    return outcome_of_run(str(latest), delivered_wh=delivered, contracted_wh=contracted, lines_pence=paid)


def held(
    state: str, settlement_run: str | None, delivered_energy_kwh: float | None, settled_amount_pence: int | None
) -> LedgerOutcome | None:
    """The outcome an order's stored columns hold (None when it holds none)."""
    if settlement_run is None or delivered_energy_kwh is None or settled_amount_pence is None:
        return None
    kwh = Decimal(str(delivered_energy_kwh)).quantize(Decimal("0.001"))
    return LedgerOutcome(state, settlement_run, kwh, settled_amount_pence)


def advances(current_state: str, current_run: str | None, outcome: LedgerOutcome) -> bool:
    """Whether an order in `current_state`, holding the outcome of `current_run`, takes `outcome`: only
    from a later run, only for an order past acceptance and never to an earlier state."""
    rank = RANK.get(current_state)
    if rank is None or rank < RANK["IN-PROGRESS"]:
        return False  # cancelled, or never reached its window
    return run_index(outcome.settlement_run) > run_index(current_run) and RANK[outcome.state] >= rank


def moves_back(current_state: str, new_state: str | None) -> bool:
    """True when a reported state would move an order back (a late message overtaken by a later one)."""
    if new_state is None or current_state not in RANK or new_state not in RANK:
        return False
    return RANK[new_state] < RANK[current_state]


def stale(held_state: str, held_run: str | None, new_state: str | None, new_outcome: LedgerOutcome | None) -> bool:
    """Whether a reported order is older news than the copy held (a message overtaken by a later one): it
    would move the order back, or it carries no outcome or an earlier run's while the copy holds one."""
    if moves_back(held_state, new_state):
        return True
    if held_run is None:
        return False
    return new_outcome is None or run_index(new_outcome.settlement_run) < run_index(held_run)


# -- on the wire ---------------------------------------------------------------------------------------------
def outcome_tags(outcome: LedgerOutcome) -> TagGroup:
    values = {
        "settlement_run": outcome.settlement_run,
        "delivered_energy_kwh": str(outcome.delivered_energy_kwh.quantize(Decimal("0.001"))),
        "settled_amount_pence": str(outcome.settled_amount_pence),
    }
    return TagGroup(
        display=True,
        descriptor=Descriptor(code=OUTCOME_TAG_GROUP),
        list_=[Tag(descriptor=Descriptor(code=k), value=v) for k, v in values.items()],
    )


def with_outcome(order: Order, outcome: LedgerOutcome) -> Order:
    """The order with the outcome's tag group on fulfillments[0] (the state code is the caller's)."""
    if not order.fulfillments:
        raise OutcomeFormatError("order.fulfillments", "an order with an outcome needs its fulfillment")
    fulfillment = order.fulfillments[0]
    others = [g for g in fulfillment.tags or [] if not (g.descriptor and g.descriptor.code == OUTCOME_TAG_GROUP)]
    fulfillment.tags = [*others, outcome_tags(outcome)]
    return order


def read_outcome(order: Order | None, path: str = "message.order") -> LedgerOutcome | None:
    """The outcome an order carries (None when it carries none); OutcomeFormatError names a bad field."""
    if order is None or not order.fulfillments:
        return None
    fulfillment = order.fulfillments[0]
    group = next((g for g in fulfillment.tags or [] if g.descriptor and g.descriptor.code == OUTCOME_TAG_GROUP), None)
    if group is None:
        return None
    where = f"{path}.fulfillments[0].tags.{OUTCOME_TAG_GROUP}"
    state = fulfillment.state.descriptor.code if fulfillment.state and fulfillment.state.descriptor else None
    if state not in OUTCOME_STATES:
        raise OutcomeFormatError(f"{path}.fulfillments[0].state", f"an outcome's state must be one of {OUTCOME_STATES}")
    run = group.get("settlement_run")
    if run not in RUNS:
        raise OutcomeFormatError(f"{where}.settlement_run", f"must be one of {', '.join(RUNS)}")
    try:
        kwh = Decimal(group.get("delivered_energy_kwh") or "")
        pence = int(group.get("settled_amount_pence") or "")
    except (ArithmeticError, ValueError) as exc:
        raise OutcomeFormatError(where, "delivered_energy_kwh and settled_amount_pence must be numbers") from exc
    if not kwh.is_finite() or not 0 <= kwh <= MAX_KW * 24 * MAX_WINDOW_DAYS:
        raise OutcomeFormatError(f"{where}.delivered_energy_kwh", "must be a non-negative number of kWh")
    if abs(pence) > MAX_SAFE_INTEGER:
        raise OutcomeFormatError(f"{where}.settled_amount_pence", "is out of range")
    if (run == FINAL_RUN) != (state == "SETTLED"):
        raise OutcomeFormatError(f"{where}.settlement_run", "SETTLED comes with the final run DF, and only it")
    return LedgerOutcome(str(state), str(run), kwh, pence)
