"""One meter, several obligations: which reading a period rests on, and how the meter's delivered volume is
shared among the orders (and token redemptions, which are orders too) declared on it — so that nobody is
paid twice for the same energy. Pure functions over exact Fractions of Wh (no database here).

Reading kinds, strongest first (README "Settlement"):

    meter_operator  a reading signed by a registered meter operator (ledger/meter_data.py)
    self_reported   a reading the meter's provider posted (or an operator imported from CSV)
    estimated       no reading yet, before the final runs: delivery estimated as none (metered = baseline)
    missing         no reading at a final run (RF, DF): counts as no delivery

Allocation rule, per meter and settlement period: with DV⁺ = max(0, the meter's payable delivered volume)
and cᵢ each order's contracted energy, order i is paid for

    paidᵢ = min(cᵢ, DV⁺ × cᵢ / Σc)        (in contracted proportion, capped at its contracted volume)

so Σ paidᵢ = min(DV⁺, Σc) ≤ DV⁺. The remainder DV⁺ − Σ paidᵢ (over-delivery beyond every contract) is paid
to no provider; it is still energy the host supplier sourced and its customer did not consume, so supplier
compensation is shared on the uncapped proportional shares DV⁺ × cᵢ / Σc, which sum to exactly DV⁺ —
compensated once, never once per order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from typing import Literal

ReadingKind = Literal["meter_operator", "self_reported", "estimated", "missing"]
READING_KINDS: tuple[ReadingKind, ...] = ("meter_operator", "self_reported", "estimated", "missing")
STORED_READING_KINDS: tuple[ReadingKind, ...] = ("meter_operator", "self_reported")  # what ledger.metering holds
# How much a kind is worth as evidence of delivery: estimated and missing both evidence nothing.
_TRUST: dict[str, int] = {"meter_operator": 2, "self_reported": 1, "estimated": 0, "missing": 0}


FINAL_RUNS = ("RF", "DF")  # the runs at which a period still without a reading counts as no delivery
ESTIMATED_NOTE = (
    "estimated: no reading yet; delivery taken as none (metered = baseline) until a reading arrives and a "
    "later run restates it"
)
MISSING_NOTE = "missing: no reading by a final run (RF/DF) counts as no delivery"


def reading_kind(
    period_start_utc: datetime, readings: Mapping[datetime, int], kinds: Mapping[datetime, ReadingKind], *, run: str
) -> ReadingKind:
    """The kind of reading a period rests on in run `run`: its stored kind (a reading `kinds` does not name
    is self_reported); without a reading, `estimated` before the final runs and `missing` at RF and DF."""
    if period_start_utc in readings:
        return kinds.get(period_start_utc, "self_reported")
    return "missing" if run in FINAL_RUNS else "estimated"


def no_reading_note(kind: ReadingKind) -> str:
    """Why a period without a reading settles as no delivery (`estimated` before RF, `missing` at RF/DF)."""
    return ESTIMATED_NOTE if kind == "estimated" else MISSING_NOTE


def trust(kind: str) -> int:
    """The evidential weight of a reading kind (2 meter_operator, 1 self_reported, 0 estimated / missing)."""
    return _TRUST[kind]


def weakest(kinds: Iterable[ReadingKind]) -> ReadingKind | None:
    """The kind a result resting on all of `kinds` rests on: the least trusted one (None for no periods)."""
    ordered = sorted(kinds, key=lambda k: (_TRUST[k], -READING_KINDS.index(k)))
    return ordered[0] if ordered else None


def strengthened(before: ReadingKind, now: ReadingKind) -> bool:
    """True when the evidence for a period improved (e.g. self_reported → meter_operator, missing → any)."""
    return _TRUST[now] > _TRUST[before]


@dataclass(frozen=True)
class Allocation:
    """How one meter-period's delivered volume is shared (see the module docstring)."""

    paid_wh: dict[str, Fraction]  # per order: the volume it is paid for (≤ its contracted volume)
    compensated_wh: dict[str, Fraction]  # per order: its share of DV⁺ for supplier compensation (Σ = DV⁺)
    unallocated_wh: Fraction  # DV⁺ − Σ paid: over-delivery, paid to no provider


def allocate(delivered_wh: Fraction, contracted_wh: Mapping[str, Fraction]) -> Allocation:
    """Share a meter-period's delivered volume among the orders declared on it, in contracted proportion,
    each capped at its contracted volume. A non-positive volume allocates nothing; orders with no
    contracted volume get nothing."""
    if any(c < 0 for c in contracted_wh.values()):
        raise ValueError("contracted volumes must be non-negative")
    volume = max(Fraction(0), delivered_wh)
    total = sum(contracted_wh.values(), Fraction(0))
    if total == 0:
        zero = dict.fromkeys(contracted_wh, Fraction(0))
        return Allocation(zero, dict(zero), volume)
    shares = {oid: volume * c / total for oid, c in contracted_wh.items()}
    paid = {oid: min(contracted_wh[oid], share) for oid, share in shares.items()}
    return Allocation(paid, shares, volume - sum(paid.values(), Fraction(0)))
