"""The orchestrator's policy: what it buys, how, and when a person must approve (pure: plain data).

A policy is versioned (bap/governance.py stores the versions; a version never changes) and every decision
records the version it ran under. `PolicyBody()` is the built-in version 1 a fresh deployment starts with.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas import limits


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Approval(_Strict):
    """A procurement above either threshold waits in `pending_approval` for an operator."""

    max_power_mw: float = Field(5.0, ge=0, le=limits.MAX_KW / 1000)
    max_cost_gbp: float = Field(10_000.0, ge=0, le=1e9)


class OpenAdr(_Strict):
    """How OpenADR events are answered (bap/ven.py)."""

    default_opt: Literal["optIn", "optOut"] = "optIn"
    min_covered_fraction: float = Field(0.9, ge=0, le=1)
    # SIMPLE signal level → kW to reduce
    simple_levels_kw: dict[int, float] = Field(default_factory=lambda: {1: 500.0, 2: 1000.0, 3: 2000.0})

    @field_validator("simple_levels_kw")
    @classmethod
    def _levels(cls, v: dict[int, float]) -> dict[int, float]:
        if set(v) - {1, 2, 3}:
            raise ValueError("SIMPLE levels are 1, 2 and 3")
        if any(not 0 < kw <= limits.MAX_KW for kw in v.values()):
            raise ValueError(f"each level's kW must be in (0, {limits.MAX_KW:g}]")
        return v


class Tokens(_Strict):
    """Compute Flex Tokens: what a held token is worth when the choice weighs redeeming against buying spot, and
    when to buy them (bap/token_policy.py): a series priced at or below `buy_below_fraction_of_spot` × the spot
    price of the flexibility offered over its validity is bought, up to `max_tokens_per_series`. None: never buys."""

    value_gbp_per_mwh: float = Field(0.0, ge=0, le=limits.MAX_PRICE_GBP_PER_MWH)
    buy_below_fraction_of_spot: float | None = Field(None, gt=0, le=10)
    max_tokens_per_series: int = Field(4, ge=0, le=1_000_000)


class Delivery(_Strict):
    """Watching delivery during the window (bap/delivery_watch.py): an order metered below
    `reprocure_below_fraction` of its contracted energy in a half hour is expected to keep delivering that
    fraction, and the gap it leaves in later slots is re-procured. 0 turns the watch's re-procurement off (the
    shortfall is still logged)."""

    reprocure_below_fraction: float = Field(0.9, ge=0, le=1)


SignalEvent = Literal["PRICE_SPIKE", "CARBON_PEAK"]


def _no_signal_purchases() -> dict[SignalEvent, float]:
    return {"PRICE_SPIKE": 0.0, "CARBON_PEAK": 0.0}


class PolicyBody(_Strict):
    objective: Literal["cost", "carbon", "cost_plus_carbon"] = "cost"
    carbon_price_gbp_per_tco2: float = Field(0.0, ge=0, le=100_000)  # λ of cost + λ·carbon
    price_cap_gbp_per_mwh: float = Field(5_000.0, gt=0, le=limits.MAX_PRICE_GBP_PER_MWH)
    approval: Approval = Approval()
    # Delivery record (delivered ÷ contracted) derates a provider's offers; never below this factor.
    derate_by_delivery: bool = True
    min_reliability: float = Field(0.5, gt=0, le=1)
    # Grid signals older than this block new procurements (bap/signals.py).
    signal_staleness_limit_s: int = Field(6 * 3600, gt=0, le=7 * 86400)
    # What a PRICE_SPIKE or CARBON_PEAK webhook event buys per half-hour it names, when it names no kW itself:
    # 0 records the signal in the market log and buys nothing.
    signal_events_kw: dict[SignalEvent, float] = Field(default_factory=_no_signal_purchases)
    openadr: OpenAdr = OpenAdr()
    tokens: Tokens = Tokens()
    # No slot starting sooner than this is bought: the ledger settles no period whose order was confirmed after
    # its gate closure (ledger/settlement.py rule 2, 60 minutes in policy p415-v1).
    gate_closure_minutes: int = Field(60, ge=0, le=24 * 60)
    delivery: Delivery = Delivery()


def needs_approval(body: PolicyBody, *, peak_power_kw: float, cost_gbp: float) -> str | None:
    """Why a choice waits for a person (None: it does not)."""
    if peak_power_kw > body.approval.max_power_mw * 1000:
        return f"peak {peak_power_kw / 1000:g} MW is above the policy's {body.approval.max_power_mw:g} MW"
    if cost_gbp > body.approval.max_cost_gbp:
        return f"expected cost £{cost_gbp:,.2f} is above the policy's £{body.approval.max_cost_gbp:,.2f}"
    return None


def reliability(body: PolicyBody, *, delivered_kwh: float, contracted_kwh: float) -> float:
    """The factor a provider's offered kW counts with: its delivered ÷ contracted record, clipped to
    [min_reliability, 1]; 1 with no record (or derating off)."""
    if not body.derate_by_delivery or contracted_kwh <= 0:
        return 1.0
    return max(body.min_reliability, min(1.0, delivered_kwh / contracted_kwh))
