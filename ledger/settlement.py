"""P415-style settlement as pure functions over integers (../shared/reference/market/p415-settlement.md).

Units: energy in Wh (int readings; exact `Fraction` once averaged), power in W, prices in milli-pence per
MWh, money in exact Fraction pence until each line is rounded once (grid/money.py: half to even).
Each numbered rule of p415-settlement.md is a function here (or in periods.py / baseline.py):

 1 clock ............ grid.periods (period_of, day_periods, periods_between)
 2 declared activity  declared_periods — gate closure 1 h before each period
 3 baseline ......... ledger.baseline (10-of-10, in-day adjustment); at RF/DF withheld history: no delivery,
                      withheld in-day window: the lowest adjustment (least_favourable)
 4 delivered volume . delivered_volume_wh, payable_volume_wh (signed metering: negative = net export);
                      ledger.allocation.reading_kind (meter_operator > self_reported; none: no delivery);
                      ledger.allocation.allocate (orders sharing a meter: never paid twice)
 5 rebound .......... rebound_wh (recorded, never charged)
 6 utilisation ...... utilisation_pence
 7 shortfall ........ shortfall_pence (imbalance price or DFS-style none; sliding scale in rule 6)
 8 availability ..... availability_pence
 9 supplier comp. ... supplier_compensation_pence, line_accounts (mutualised pot or buyer pays)
10 runs ............. RUNS, next_run, run_transfers (reversing + new entries, never overwrite)
11 money ............ grid.money.round_half_even, applied once per line in settle()
12 reproducibility .. settle() is a pure function of SettlementInputs + Policy; inputs_digest()
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from typing import Any

from grid.money import MILLIPENCE_PER_PENNY, WH_PER_MWH, energy_price_pence, round_half_even
from grid.periods import PERIOD, SettlementPeriod, periods_between
from ledger import accounts as acct
from ledger.allocation import FINAL_RUNS, ReadingKind, allocate, no_reading_note, reading_kind, weakest
from ledger.baseline import (
    Adjustment,
    BaselineParams,
    adjusted_baseline,
    event_start,
    in_day_adjustment,
    least_favourable,
    unadjusted_baseline,
)
from ledger.canonical import canonical_json

RUNS = ("II", "SF", "R1", "R2", "R3", "RF", "DF")
LINES = ("utilisation", "availability", "shortfall", "supplier_compensation")
SHORTFALL_RULES = ("imbalance", "none")
COMPENSATION_FUNDING = ("pot", "buyer")


class PolicyError(ValueError):
    pass


# --- policy ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """A versioned settlement policy; every constant of p415-settlement.md is a parameter here."""

    version: str
    baseline: BaselineParams = field(default_factory=BaselineParams)
    floor_negative_dv: bool = True  # rule 4: negative DV paid as 0 (recorded as is)
    shortfall_rule: str = "imbalance"  # rule 7: "imbalance" or "none" (DFS-style: simply not paid)
    # A negative imbalance price would pay a provider for not delivering; floored here (None: no floor).
    shortfall_price_floor_millipence_per_mwh: int | None = 0
    shortfall_price_fallback: str = "market_index"  # when the imbalance price is missing: market_index | none
    sliding_scale_min_ratio: Fraction | None = None  # rule 7 option: pay nothing below this delivery
    supplier_compensation_funding: str = "pot"  # rule 9: "pot" (mutualised) or "buyer"
    scrp_millipence_per_mwh: int = 9_853_000  # £98.53/MWh, an observed SCRP (p415-settlement.md)
    gate_closure_minutes: int = 60  # rule 2
    rebound_periods: int = 4  # rule 5: undeclared periods after the event that are reported
    # rule 10: when each run falls due, in hours after the window ends. II also runs as soon as the
    # window has closed and every declared period has a reading.
    run_due_hours: tuple[int, ...] = (24, 14 * 24, 60 * 24, 120 * 24, 210 * 24, 420 * 24, 840 * 24)
    escrow_timeout_hours: int = 30 * 24  # the order's reserve expires this long after the window

    def __post_init__(self) -> None:
        if self.shortfall_rule not in SHORTFALL_RULES:
            raise PolicyError(f"shortfall_rule must be one of {SHORTFALL_RULES}")
        if self.supplier_compensation_funding not in COMPENSATION_FUNDING:
            raise PolicyError(f"supplier_compensation_funding must be one of {COMPENSATION_FUNDING}")
        if self.shortfall_price_fallback not in ("market_index", "none"):
            raise PolicyError("shortfall_price_fallback must be market_index or none")
        if len(self.run_due_hours) != len(RUNS) or list(self.run_due_hours) != sorted(self.run_due_hours):
            raise PolicyError("run_due_hours needs one non-decreasing value per run (II..DF)")
        if self.sliding_scale_min_ratio is not None and not 0 <= self.sliding_scale_min_ratio <= 1:
            raise PolicyError("sliding_scale_min_ratio must be between 0 and 1")
        if self.scrp_millipence_per_mwh < 0 or self.gate_closure_minutes < 0 or self.rebound_periods < 0:
            raise PolicyError("scrp, gate closure and rebound periods must be non-negative")

    def to_json(self) -> dict[str, Any]:
        b = self.baseline
        return {
            "baseline": {
                "method": "10_of_10",
                "days": b.days,
                "min_days": b.min_days,
                "lookback_days": b.lookback_days,
                "in_day_mode": b.in_day_mode,
                "in_day_cap_ratio": str(b.in_day_cap_ratio),
                "in_day_window_periods": b.in_day_window_periods,
                "in_day_gap_periods": b.in_day_gap_periods,
            },
            "floor_negative_dv": self.floor_negative_dv,
            "shortfall_rule": self.shortfall_rule,
            "shortfall_price_floor_millipence_per_mwh": self.shortfall_price_floor_millipence_per_mwh,
            "shortfall_price_fallback": self.shortfall_price_fallback,
            "sliding_scale_min_ratio": None
            if self.sliding_scale_min_ratio is None
            else str(self.sliding_scale_min_ratio),
            "supplier_compensation_funding": self.supplier_compensation_funding,
            "scrp_millipence_per_mwh": self.scrp_millipence_per_mwh,
            "gate_closure_minutes": self.gate_closure_minutes,
            "rebound_periods": self.rebound_periods,
            "run_due_hours": list(self.run_due_hours),
            "escrow_timeout_hours": self.escrow_timeout_hours,
            "rounding": "half_even_once_per_line",
        }

    @classmethod
    def from_json(cls, version: str, data: Mapping[str, Any]) -> Policy:
        try:
            b = dict(data.get("baseline") or {})
            if b.pop("method", "10_of_10") != "10_of_10":
                raise PolicyError("only the 10_of_10 baseline method is implemented")
            if "in_day_cap_ratio" in b:
                b["in_day_cap_ratio"] = Fraction(str(b["in_day_cap_ratio"]))
            base = BaselineParams(**b)
            kwargs = {k: v for k, v in data.items() if k not in ("baseline", "rounding")}
            if data.get("rounding", "half_even_once_per_line") != "half_even_once_per_line":
                raise PolicyError("the ledger rounds half to even once per line; no other rounding")
            if kwargs.get("sliding_scale_min_ratio") is not None:
                kwargs["sliding_scale_min_ratio"] = Fraction(str(kwargs["sliding_scale_min_ratio"]))
            if "run_due_hours" in kwargs:
                kwargs["run_due_hours"] = tuple(int(h) for h in kwargs["run_due_hours"])
            for key in ("scrp_millipence_per_mwh", "gate_closure_minutes", "rebound_periods", "escrow_timeout_hours"):
                if key in kwargs and type(kwargs[key]) is not int:
                    raise PolicyError(f"{key} must be an integer")
            return cls(version=version, baseline=base, **kwargs)
        except PolicyError:
            raise
        except (TypeError, ValueError, ZeroDivisionError) as exc:
            raise PolicyError(f"policy {version}: {exc}") from exc


BUILTIN_POLICIES: dict[str, Policy] = {
    # P415 with imbalance-priced shortfall and a mutualised supplier compensation pot.
    "p415-v1": Policy("p415-v1"),
    # NESO Demand Flexibility Service style: utilisation only, shortfall simply not paid.
    "dfs-v1": Policy("dfs-v1", shortfall_rule="none"),
    # DNO style: sliding scale (nothing below 50% delivery), buyer pays supplier compensation.
    "dno-v1": Policy(
        "dno-v1", shortfall_rule="none", sliding_scale_min_ratio=Fraction(1, 2), supplier_compensation_funding="buyer"
    ),
}
DEFAULT_POLICY = "p415-v1"


# --- orders and inputs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderTerms:
    order_id: str
    provider_id: str
    bap_id: str
    meter_id: str
    supplier_id: str
    window_start: datetime
    window_end: datetime
    contracted_w: int
    price_millipence_per_mwh: int
    availability_price_millipence_per_mw_h: int | None
    settlement_method: str  # P415 | CFT (utilisation prepaid with tokens)
    resource_type: str  # compute | storage
    confirmed_at: datetime
    policy_version: str

    def to_json(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "provider_id": self.provider_id,
            "bap_id": self.bap_id,
            "meter_id": self.meter_id,
            "supplier_id": self.supplier_id,
            "window_start": _iso(self.window_start),
            "window_end": _iso(self.window_end),
            "contracted_w": self.contracted_w,
            "price_millipence_per_mwh": self.price_millipence_per_mwh,
            "availability_price_millipence_per_mw_h": self.availability_price_millipence_per_mw_h,
            "settlement_method": self.settlement_method,
            "resource_type": self.resource_type,
            "confirmed_at": _iso(self.confirmed_at),
            "policy_version": self.policy_version,
        }


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class SettlementInputs:
    """Everything one order's settlement depends on, as of the run's cut-off instant."""

    order: OrderTerms
    readings: Mapping[datetime, int]  # meter's latest reading per UTC period start (Wh)
    event_days: frozenset[date]  # settlement dates with any declared activity on this meter
    imbalance_prices: Mapping[datetime, int | None]  # pence/MWh by UTC period start
    market_index_prices: Mapping[datetime, int | None]
    reading_kinds: Mapping[datetime, ReadingKind] = field(default_factory=dict)  # absent: self_reported
    # Contracted W per order id of every order (token redemptions too) declared on this meter, per period start.
    sharing_w: Mapping[datetime, Mapping[str, int]] = field(default_factory=dict)
    run: str = RUNS[0]  # the run being computed: before RF a missing reading is estimated, at RF/DF missing


# --- rule 2: declared activity and gate closure ----------------------------------------------------


def gate_closure(period: SettlementPeriod, policy: Policy) -> datetime:
    return period.start_utc - timedelta(minutes=policy.gate_closure_minutes)


def declared_periods(
    window_start: datetime, window_end: datetime, confirmed_at: datetime, policy: Policy
) -> tuple[list[SettlementPeriod], list[tuple[SettlementPeriod, str]]]:
    """Periods the order declares; a period whose gate closed before confirmation is rejected."""
    accepted, rejected = [], []
    for p in periods_between(window_start, window_end):
        closes = gate_closure(p, policy)
        if confirmed_at > closes:
            rejected.append((p, f"confirmed at {_iso(confirmed_at)}, after gate closure {_iso(closes)}"))
        else:
            accepted.append(p)
    return accepted, rejected


# --- rules 4-9 as functions of one period ------------------------------------------------------


def contracted_energy_wh(contracted_w: int) -> Fraction:
    """Energy of `contracted_w` sustained for one 30-minute period."""
    return Fraction(contracted_w * int(PERIOD.total_seconds()), 3600)


def delivered_volume_wh(baseline_wh: Fraction, metered_wh: int | Fraction) -> Fraction:
    """Rule 4: DV = baseline − metered (turn-down positive), recorded as is."""
    return baseline_wh - metered_wh


def payable_volume_wh(dv_wh: Fraction, policy: Policy) -> Fraction:
    """Rule 4: negative DV is floored at 0 for payment (opt-in style) unless the policy says not."""
    return max(Fraction(0), dv_wh) if policy.floor_negative_dv else dv_wh


def rebound_wh(baseline_wh: Fraction, metered_wh: int | Fraction) -> Fraction:
    """Rule 5: consumption above baseline after an event; reported, never charged to the provider."""
    return max(Fraction(0), metered_wh - baseline_wh)


def utilisation_pence(
    payable_wh: Fraction, contracted_wh: Fraction, price_millipence_per_mwh: int, policy: Policy
) -> Fraction:
    """Rule 6: min(DV, contracted) × agreed price; sliding-scale policies pay nothing below the
    minimum delivery ratio."""
    if contracted_wh <= 0:
        return Fraction(0)
    volume = max(Fraction(0), min(payable_wh, contracted_wh))
    if policy.sliding_scale_min_ratio is not None and volume / contracted_wh < policy.sliding_scale_min_ratio:
        return Fraction(0)
    return energy_price_pence(volume, price_millipence_per_mwh)


def shortfall_price(imbalance: int | None, market_index: int | None, policy: Policy) -> tuple[int | None, str]:
    """The price a shortfall is charged at, and where it came from."""
    price, source = imbalance, "imbalance"
    if price is None and policy.shortfall_price_fallback == "market_index":
        price, source = market_index, "market_index (imbalance price missing)"
    if price is None:
        return None, "no price for this period"
    floor = policy.shortfall_price_floor_millipence_per_mwh
    if floor is not None and price < floor:
        return floor, f"{source} {price} floored at {floor}"
    return price, source


def shortfall_pence(
    payable_wh: Fraction, contracted_wh: Fraction, price_millipence_per_mwh: int | None, policy: Policy
) -> tuple[Fraction, Fraction]:
    """Rule 7: (shortfall_wh, charge) with shortfall = max(0, contracted − DV); DFS-style: no charge."""
    short = max(Fraction(0), contracted_wh - max(Fraction(0), payable_wh))
    if policy.shortfall_rule == "none" or price_millipence_per_mwh is None:
        return short, Fraction(0)
    return short, energy_price_pence(short, price_millipence_per_mwh)


def availability_pence(
    price_millipence_per_mw_h: int | None, contracted_w: int, hours: Fraction, delivery_ratio: Fraction
) -> Fraction:
    """Rule 8: availability price × contracted MW × hours, pro rata to the delivery ratio (0..1)."""
    if not price_millipence_per_mw_h:
        return Fraction(0)
    ratio = max(Fraction(0), min(Fraction(1), delivery_ratio))
    return Fraction(price_millipence_per_mw_h * contracted_w, WH_PER_MWH * MILLIPENCE_PER_PENNY) * hours * ratio


def supplier_compensation_pence(payable_wh: Fraction, policy: Policy) -> Fraction:
    """Rule 9: DV⁺ × SCRP, for the host supplier."""
    return energy_price_pence(max(Fraction(0), payable_wh), policy.scrp_millipence_per_mwh)


# --- one order ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PeriodResult:
    period: str  # "2023-12-05/35"
    start_utc: datetime
    status: str  # settled | insufficient_data | rejected
    reason: str = ""
    baseline_wh: Fraction | None = None
    adjusted_baseline_wh: Fraction | None = None
    metered_wh: int | None = None
    delivered_wh: Fraction | None = None
    payable_wh: Fraction = Fraction(0)
    contracted_wh: Fraction = Fraction(0)
    utilisation_pence: Fraction = Fraction(0)
    shortfall_wh: Fraction = Fraction(0)
    shortfall_price_millipence_per_mwh: int | None = None
    shortfall_pence: Fraction = Fraction(0)
    supplier_compensation_pence: Fraction = Fraction(0)
    reading_kind: ReadingKind | None = None  # what the period rests on (ledger/allocation.py); None: rejected
    allocated_wh: Fraction = Fraction(0)  # this order's share of the meter's delivery (paid, ≤ contracted)
    unallocated_wh: Fraction = Fraction(0)  # the meter's delivery beyond every order's contract (paid to nobody)
    sharing_orders: tuple[str, ...] = ()  # the other orders declared on the meter in this period

    def to_json(self) -> dict[str, Any]:
        def f(v: Fraction | None) -> str | None:
            return None if v is None else str(v)

        return {
            "period": self.period,
            "start_utc": _iso(self.start_utc),
            "status": self.status,
            "reason": self.reason,
            "baseline_wh": f(self.baseline_wh),
            "adjusted_baseline_wh": f(self.adjusted_baseline_wh),
            "metered_wh": self.metered_wh,
            "delivered_wh": f(self.delivered_wh),
            "payable_wh": f(self.payable_wh),
            "contracted_wh": f(self.contracted_wh),
            "utilisation_pence": f(self.utilisation_pence),
            "shortfall_wh": f(self.shortfall_wh),
            "shortfall_price_millipence_per_mwh": self.shortfall_price_millipence_per_mwh,
            "shortfall_pence": f(self.shortfall_pence),
            "supplier_compensation_pence": f(self.supplier_compensation_pence),
            "reading_kind": self.reading_kind,
            "allocated_wh": f(self.allocated_wh),
            "unallocated_wh": f(self.unallocated_wh),
            "sharing_orders": list(self.sharing_orders),
        }


@dataclass(frozen=True)
class SettlementResult:
    order_id: str
    lines: dict[str, int]  # rounded pence per line (rule 11: rounded once, here)
    exact_lines: dict[str, Fraction]
    periods: list[PeriodResult]
    adjustment: Adjustment
    delivered_wh: Fraction
    contracted_wh: Fraction
    rebound: list[tuple[str, Fraction]]
    reading_kind: ReadingKind | None = None  # the weakest kind among the declared periods (None: none declared)

    def to_json(self) -> dict[str, Any]:
        adj = self.adjustment
        return {
            "order_id": self.order_id,
            "reading_kind": self.reading_kind,
            "lines_pence": dict(self.lines),
            "exact_lines_pence": {k: str(v) for k, v in self.exact_lines.items()},
            "delivered_wh": str(self.delivered_wh),
            "contracted_wh": str(self.contracted_wh),
            # None when unavailable, or the lowest (a per-period cap: see each period's adjusted_baseline_wh)
            "in_day_adjustment_wh": str(adj.energy_wh) if adj.available and type(adj) is Adjustment else None,
            "in_day_adjustment_note": self.adjustment.reason,
            "rebound_wh": [{"period": p, "energy_wh": str(e)} for p, e in self.rebound],
            "periods": [p.to_json() for p in self.periods],
        }


def _settle_period(
    p: SettlementPeriod, inputs: SettlementInputs, policy: Policy, *, adjustment: Adjustment
) -> PeriodResult:
    """Rules 3-9 for one declared period: the meter's delivered volume (none without a reading), this
    order's share of it (ledger/allocation.py) and the lines on that share."""
    order, t = inputs.order, p.start_utc
    contracted = contracted_energy_wh(order.contracted_w)
    kind = reading_kind(t, inputs.readings, inputs.reading_kinds, run=inputs.run)
    metered = inputs.readings.get(t)
    base = unadjusted_baseline(t, inputs.readings, inputs.event_days, policy.baseline)
    if base.energy_wh is None and inputs.run not in FINAL_RUNS:  # rule 3: zero, with the reason
        return PeriodResult(
            p.label(),
            t,
            "insufficient_data",
            base.reason,
            contracted_wh=contracted,
            metered_wh=metered,
            reading_kind=kind,
        )
    # At RF/DF a baseline the history cannot give (e.g. its readings withheld) evidences no delivery either.
    adj_base = (
        None
        if base.energy_wh is None
        else adjusted_baseline(base.energy_wh, adjustment, policy.baseline, order.resource_type)
    )
    # Signed energy: a net export (negative metered) below the baseline is a larger delivered volume.
    dv = Fraction(0) if metered is None or adj_base is None else delivered_volume_wh(adj_base, metered)
    pay_wh = payable_volume_wh(dv, policy)
    shares = {oid: contracted_energy_wh(w) for oid, w in inputs.sharing_w.get(t, {}).items()}
    shares[order.order_id] = contracted
    share = allocate(pay_wh, shares)
    mine = share.paid_wh[order.order_id]
    prepaid = order.settlement_method == "CFT"  # utilisation prepaid with tokens
    util = Fraction(0) if prepaid else utilisation_pence(mine, contracted, order.price_millipence_per_mwh, policy)
    price, price_note = shortfall_price(inputs.imbalance_prices.get(t), inputs.market_index_prices.get(t), policy)
    short_wh, short = shortfall_pence(mine, contracted, price, policy)
    notes = [no_reading_note(kind)] if metered is None else []
    if adj_base is None:
        notes.append(f"{base.reason}: no delivery at a final run")
    if short_wh and policy.shortfall_rule != "none":
        notes.append(f"shortfall price: {price_note}")
    return PeriodResult(
        p.label(),
        t,
        "settled",
        "; ".join(notes),
        baseline_wh=base.energy_wh,
        adjusted_baseline_wh=adj_base,
        metered_wh=metered,
        delivered_wh=dv,
        payable_wh=pay_wh,
        contracted_wh=contracted,
        utilisation_pence=util,
        shortfall_wh=short_wh,
        shortfall_price_millipence_per_mwh=price,
        shortfall_pence=short,
        supplier_compensation_pence=supplier_compensation_pence(share.compensated_wh[order.order_id], policy),
        reading_kind=kind,
        allocated_wh=mine,
        unallocated_wh=share.unallocated_wh,
        sharing_orders=tuple(sorted(set(shares) - {order.order_id})),
    )


def settle(inputs: SettlementInputs, policy: Policy) -> SettlementResult:
    """Settle one order from its inputs alone (rule 12: the same inputs always give the same lines)."""
    order = inputs.order
    if policy.version != order.policy_version:
        raise PolicyError(f"order {order.order_id} uses policy {order.policy_version}, not {policy.version}")
    params = policy.baseline
    accepted, rejected = declared_periods(order.window_start, order.window_end, order.confirmed_at, policy)
    declared_on_meter = set(inputs.sharing_w) | {p.start_utc for p in accepted}
    adjustments: dict[datetime, Adjustment] = {}

    def adjustment_for(t: datetime) -> Adjustment:
        anchor = event_start(t, declared_on_meter)
        if anchor not in adjustments:
            adj = in_day_adjustment(anchor, inputs.readings, inputs.event_days, params)
            missing = adj.missing_reading_at is not None and inputs.run in FINAL_RUNS
            adjustments[anchor] = least_favourable(adj) if missing else adj
        return adjustments[anchor]

    results = [PeriodResult(p.label(), p.start_utc, "rejected", reason) for p, reason in rejected]
    settled = [_settle_period(p, inputs, policy, adjustment=adjustment_for(p.start_utc)) for p in accepted]
    results += settled
    delivered_total = sum((r.allocated_wh for r in settled), Fraction(0))
    contracted_total = contracted_energy_wh(order.contracted_w) * len(accepted)
    ratio = delivered_total / contracted_total if contracted_total else Fraction(0)
    avail_price = None if order.settlement_method == "CFT" else order.availability_price_millipence_per_mw_h
    avail = availability_pence(avail_price, order.contracted_w, Fraction(len(accepted), 2), ratio)
    exact = {
        "utilisation": sum((r.utilisation_pence for r in settled), Fraction(0)),
        "availability": avail,
        "shortfall": sum((r.shortfall_pence for r in settled), Fraction(0)),
        "supplier_compensation": sum((r.supplier_compensation_pence for r in settled), Fraction(0)),
    }
    rebound = []
    if accepted:
        after = order.window_end
        for i in range(policy.rebound_periods):
            t = after + i * PERIOD
            metered = inputs.readings.get(t)
            base = unadjusted_baseline(t, inputs.readings, inputs.event_days, params)
            if metered is not None and base.energy_wh is not None:
                rebound.append((_iso(t), rebound_wh(base.energy_wh, metered)))
    results.sort(key=lambda r: r.start_utc)
    return SettlementResult(
        order.order_id,
        {k: round_half_even(v) for k, v in exact.items()},
        exact,
        results,
        adjustment_for(accepted[0].start_utc) if accepted else Adjustment(Fraction(0), False, "no declared periods"),
        delivered_total,
        contracted_total,
        rebound,
        weakest(r.reading_kind for r in settled if r.reading_kind is not None),
    )


def max_exposure_pence(order: OrderTerms, policy: Policy) -> int:
    """The most the buyer can owe for utilisation + availability (what the escrow reserves).

    Rounded with the same rule as the lines, so by monotonicity no settlement can exceed it."""
    if order.settlement_method == "CFT":
        return 0
    accepted, _ = declared_periods(order.window_start, order.window_end, order.confirmed_at, policy)
    contracted = contracted_energy_wh(order.contracted_w)
    util = energy_price_pence(contracted * len(accepted), order.price_millipence_per_mwh)
    avail = availability_pence(
        order.availability_price_millipence_per_mw_h, order.contracted_w, Fraction(len(accepted), 2), Fraction(1)
    )
    return round_half_even(util) + round_half_even(avail)


# --- rule 9 and 10: from lines to ledger transfers -----------------------------------------------


@dataclass(frozen=True)
class LineTransfer:
    """A planned ledger transfer (before it gets an entry and a place in the chain)."""

    id: str
    debit_account: str
    credit_account: str
    amount: int
    memo: str
    kind: str = "single"
    pending_id: str | None = None


def line_accounts(order: OrderTerms, line: str, policy: Policy) -> tuple[str, str]:
    """(debit, credit) of each settlement line, economically (escrow aside)."""
    if line in ("utilisation", "availability"):
        return acct.bap_cash(order.bap_id), acct.provider_revenue(order.provider_id)
    if line == "shortfall":
        return acct.provider_penalties(order.provider_id), acct.bap_cash(order.bap_id)
    if line == "supplier_compensation":
        payer = acct.POT if policy.supplier_compensation_funding == "pot" else acct.bap_cash(order.bap_id)
        return payer, acct.supplier_compensation(order.supplier_id)
    raise ValueError(f"unknown line {line}")


def reserve_transfer_id(order_id: str) -> str:
    return f"order:{order_id}:reserve"


def transfer_id(order_id: str, run: str, name: str) -> str:
    return f"settle:{order_id}:{run}:{name}"


@dataclass(frozen=True)
class EscrowState:
    """The order's reserve: usable when it is still pending (not resolved, not timed out)."""

    pending_id: str
    reserved_pence: int
    usable: bool


def run_transfers(
    order: OrderTerms,
    run: str,
    lines: Mapping[str, int],
    *,
    previous: Mapping[str, int] | None,
    policy: Policy,
    escrow: EscrowState | None,
) -> list[LineTransfer]:
    """Ledger transfers for one run (rule 10). The first run pays each line (through the escrow when
    it is usable); a later run appends, for each line whose amount changed, a reversal of the previous
    amount and the restated amount — the earlier entries stay untouched."""
    out: list[LineTransfer] = []
    if previous is None:
        paid = lines.get("utilisation", 0) + lines.get("availability", 0)
        via_escrow = escrow is not None and escrow.usable and paid <= escrow.reserved_pence
        if escrow is not None and escrow.usable:
            if via_escrow and paid > 0:
                out.append(
                    LineTransfer(
                        transfer_id(order.order_id, run, "escrow-post"),
                        acct.bap_cash(order.bap_id),
                        acct.escrow(order.order_id),
                        paid,
                        f"{run} post reserve of order {order.order_id}",
                        "post",
                        escrow.pending_id,
                    )
                )
            else:
                out.append(
                    LineTransfer(
                        transfer_id(order.order_id, run, "escrow-void"),
                        acct.bap_cash(order.bap_id),
                        acct.escrow(order.order_id),
                        0,
                        f"{run} release reserve of order {order.order_id}",
                        "void",
                        escrow.pending_id,
                    )
                )
        for line in LINES:
            amount = lines.get(line, 0)
            if amount <= 0:
                continue
            debit, credit = line_accounts(order, line, policy)
            if via_escrow and line in ("utilisation", "availability"):
                debit = acct.escrow(order.order_id)
            out.append(
                LineTransfer(
                    transfer_id(order.order_id, run, line),
                    debit,
                    credit,
                    amount,
                    f"{run} {line} order {order.order_id}",
                )
            )
        return out
    for line in LINES:
        before, after = previous.get(line, 0), lines.get(line, 0)
        if before == after:
            continue
        debit, credit = line_accounts(order, line, policy)
        if before > 0:
            out.append(
                LineTransfer(
                    transfer_id(order.order_id, run, f"{line}:reversal"),
                    credit,
                    debit,
                    before,
                    f"{run} reversal of earlier {line} order {order.order_id}",
                )
            )
        if after > 0:
            out.append(
                LineTransfer(
                    transfer_id(order.order_id, run, line),
                    debit,
                    credit,
                    after,
                    f"{run} restated {line} order {order.order_id}",
                )
            )
    return out


def run_due_at(order: OrderTerms, run: str, policy: Policy) -> datetime:
    return order.window_end + timedelta(hours=policy.run_due_hours[RUNS.index(run)])


def next_run(done: list[str]) -> str | None:
    """The run after the ones already done (runs happen strictly in order)."""
    for i, r in enumerate(done):
        if RUNS[i] != r:
            raise ValueError(f"settlement runs out of order: {done}")
    return RUNS[len(done)] if len(done) < len(RUNS) else None


def inputs_digest(inputs: SettlementInputs, policy: Policy, as_of: datetime) -> bytes:
    """SHA-256 of the canonical inputs that settle() reads — stored with each run for audit."""
    order = inputs.order
    lookback = timedelta(days=policy.baseline.lookback_days + 1)
    lo, hi = order.window_start - lookback, order.window_end + (policy.rebound_periods + 1) * PERIOD
    kinds = inputs.reading_kinds
    doc = {
        "as_of": _iso(as_of),
        "order": order.to_json(),
        "policy": {"version": policy.version, **policy.to_json()},
        "run": inputs.run,
        "readings": sorted(
            [_iso(t), v, kinds.get(t, "self_reported")] for t, v in inputs.readings.items() if lo <= t < hi
        ),
        "sharing_w": sorted([_iso(t), sorted(w.items())] for t, w in inputs.sharing_w.items() if lo <= t < hi),
        "event_days": sorted(d.isoformat() for d in inputs.event_days),
        "imbalance": sorted(
            [_iso(t), v] for t, v in inputs.imbalance_prices.items() if order.window_start <= t < order.window_end
        ),
        "market_index": sorted(
            [_iso(t), v] for t, v in inputs.market_index_prices.items() if order.window_start <= t < order.window_end
        ),
    }
    return hashlib.sha256(canonical_json(doc)).digest()
