"""Batteries as plain data: :class:`Battery` (power, energy, efficiencies, losses, SoC bounds per slot,
targets, degradation), :class:`SocTarget`, and :class:`Exclusivity` (where a battery model keeps
charge and discharge apart). The models that plan them are in :mod:`bpp.storage`.

Pure (numpy only). Slot-length agnostic: per-slot fields are per slot of whatever model the battery is
planned in (:mod:`bpp.scheduler` uses 30-minute slots, the storage model 15, 30 or 60 minutes).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

#: per-slot kWh values (the same type as :data:`bpp.domain.FloatArray`, which builds on this module)
Floats: TypeAlias = npt.NDArray[np.float64]
#: how far a target may sit above the SoC maximum and still count as on it (rounding of fractions)
FRACTION_TOL = 1e-9


class Exclusivity(StrEnum):
    """Where a battery model carries a binary that keeps charge and discharge apart in a slot (one
    inverter cannot do both). The LP never needs one where prices are non-negative (the argument is
    in :mod:`bpp.storage`):

    - ``where_prices_negative``: a binary in every slot with a negative price, from the start;
    - ``where_used``: none at first — the LP is solved, and only the slots where its optimum charges
      and discharges at once get a binary before it is solved again (exact: an optimum of the relaxation
      that does one direction per slot is an optimum of the model with every binary);
    - ``every_slot``: a binary in every slot.

    Whatever the start, slots where a solution still does both get a binary and the model is solved
    again, so no returned plan does both."""

    WHERE_PRICES_NEGATIVE = "where_prices_negative"
    WHERE_USED = "where_used"
    EVERY_SLOT = "every_slot"


@dataclass(frozen=True)
class SocTarget:
    """A lower bound on a battery's state of charge at one instant: at the end of slot ``slot`` the
    SoC is ≥ ``soc_min_fraction`` of the battery's energy (e.g. "80 % by 07:00" is the slot ending at
    07:00). Targets outside a horizon bind nothing in it."""

    slot: int
    soc_min_fraction: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.soc_min_fraction <= 1.0:
            raise ValueError("soc_targets: soc_min_fraction must be in [0, 1]")


@dataclass(frozen=True)
class Battery:
    """A battery. Charging ``c`` kW for a slot of ``h`` hours stores ``η_c · c · h`` kWh; discharging
    ``d`` kW (delivered at the connection) removes ``d · h / η_d`` kWh; and the SoC keeps a fraction
    ``(1 − self_discharge_fraction_per_hour)^h`` of itself over the slot. ``η_c`` and ``η_d`` are
    ``charge_efficiency`` and ``discharge_efficiency`` when both are given, otherwise
    ``√round_trip_efficiency`` each. SoC is kept in ``[soc_min, soc_max] · energy_kwh`` at the end of
    every slot — the fractions, or per slot ``soc_min_fraction_by_slot`` / ``soc_max_fraction_by_slot``
    when given — and above each of ``soc_targets``; it starts at ``initial_soc_fraction`` and must end
    the horizon at ≥ ``terminal_soc_fraction`` (default: the initial level, so a plan cannot sell
    energy it did not buy). Degradation is charged per MWh of throughput, charged plus discharged
    (both at the connection): wear follows the energy cycled through the cells either way, and a cost
    on both directions also makes a wasted charge-and-discharge loop cost money."""

    energy_kwh: float
    charge_power_kw: float
    discharge_power_kw: float
    round_trip_efficiency: float = 0.9
    soc_min_fraction: float = 0.1
    soc_max_fraction: float = 0.9
    initial_soc_fraction: float = 0.5
    terminal_soc_fraction: float | None = None
    degradation_gbp_per_mwh: float = 0.0
    charge_efficiency: float | None = None
    discharge_efficiency: float | None = None
    self_discharge_fraction_per_hour: float = 0.0
    soc_min_fraction_by_slot: tuple[float, ...] | None = None
    soc_max_fraction_by_slot: tuple[float, ...] | None = None
    soc_targets: tuple[SocTarget, ...] = ()

    def __post_init__(self) -> None:
        for name in ("soc_min_fraction_by_slot", "soc_max_fraction_by_slot"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(float(x) for x in value))
        object.__setattr__(
            self,
            "soc_targets",
            tuple(t if isinstance(t, SocTarget) else SocTarget(**t) for t in self.soc_targets),
        )
        problems = self._problems()
        if problems:
            raise ValueError("; ".join(problems))

    def _problems(self) -> list[str]:
        """What is wrong with the fields, each message naming its field (empty = valid)."""
        out: list[str] = []
        numbers = [self.energy_kwh, self.charge_power_kw, self.discharge_power_kw, self.round_trip_efficiency]
        if not all(math.isfinite(x) for x in numbers):
            out.append("battery energy_kwh, power limits and round_trip_efficiency must be finite numbers")
        if self.energy_kwh <= 0 or self.charge_power_kw < 0 or self.discharge_power_kw < 0:
            out.append("battery energy_kwh must be > 0 and power limits ≥ 0")
        if not 0.0 < self.round_trip_efficiency <= 1.0:
            out.append("round_trip_efficiency must be in (0, 1]")
        if (self.charge_efficiency is None) != (self.discharge_efficiency is None):
            out.append("give both charge_efficiency and discharge_efficiency, or neither")
        for name in ("charge_efficiency", "discharge_efficiency"):
            eff = getattr(self, name)
            if eff is not None and not 0.0 < eff <= 1.0:
                out.append(f"{name} must be in (0, 1]")
        if not 0.0 <= self.soc_min_fraction <= self.initial_soc_fraction <= self.soc_max_fraction <= 1.0:
            out.append("need 0 ≤ soc_min ≤ initial ≤ soc_max ≤ 1")
        t = self.terminal_soc_fraction
        if t is not None and not self.soc_min_fraction <= t <= self.soc_max_fraction:
            out.append("terminal_soc_fraction must lie within the SoC bounds")
        if not self.degradation_gbp_per_mwh >= 0:
            out.append("degradation_gbp_per_mwh must be ≥ 0")
        if not 0.0 <= self.self_discharge_fraction_per_hour < 1.0:
            out.append("self_discharge_fraction_per_hour must be in [0, 1)")
        return out + self._profile_problems()

    def _profile_problems(self) -> list[str]:
        out: list[str] = []
        lo, hi = self.soc_min_fraction_by_slot, self.soc_max_fraction_by_slot
        for name, prof in (("soc_min_fraction_by_slot", lo), ("soc_max_fraction_by_slot", hi)):
            if prof is not None and not all(0.0 <= x <= 1.0 for x in prof):
                out.append(f"{name} values must be in [0, 1]")
        if lo is not None and hi is not None:
            if len(lo) != len(hi):
                out.append("soc_min_fraction_by_slot and soc_max_fraction_by_slot must have the same length")
            elif any(a > b for a, b in zip(lo, hi, strict=True)):
                out.append("soc_min_fraction_by_slot must be ≤ soc_max_fraction_by_slot in every slot")
        for target in self.soc_targets:
            if target.slot < 0:
                out.append("soc_targets: slot must be ≥ 0")
            elif target.soc_min_fraction > self._max_fraction_at(target.slot) + FRACTION_TOL:
                out.append(f"soc_targets: {target.soc_min_fraction} at slot {target.slot} is above the SoC maximum")
        return out

    def _max_fraction_at(self, slot: int) -> float:
        hi = self.soc_max_fraction_by_slot
        return hi[slot] if hi is not None and slot < len(hi) else self.soc_max_fraction

    # -- efficiencies and losses ---------------------------------------------------------------
    @property
    def one_way_efficiency(self) -> float:
        """√round_trip_efficiency: each way's efficiency when they are not given separately."""
        return math.sqrt(self.round_trip_efficiency)

    @property
    def eta_charge(self) -> float:
        """kWh stored per kWh drawn at the connection while charging."""
        return self.one_way_efficiency if self.charge_efficiency is None else self.charge_efficiency

    @property
    def eta_discharge(self) -> float:
        """kWh delivered at the connection per kWh taken out of the cells while discharging."""
        return self.one_way_efficiency if self.discharge_efficiency is None else self.discharge_efficiency

    def retention_per_slot(self, slot_hours: float) -> float:
        """Fraction of the SoC still there after one slot of ``slot_hours`` with no charge/discharge."""
        return float((1.0 - self.self_discharge_fraction_per_hour) ** slot_hours)

    # -- state of charge bounds ------------------------------------------------------------------
    @property
    def soc_min_kwh(self) -> float:
        return self.soc_min_fraction * self.energy_kwh

    @property
    def soc_max_kwh(self) -> float:
        return self.soc_max_fraction * self.energy_kwh

    @property
    def initial_soc_kwh(self) -> float:
        return self.initial_soc_fraction * self.energy_kwh

    @property
    def terminal_soc_kwh(self) -> float:
        frac = self.initial_soc_fraction if self.terminal_soc_fraction is None else self.terminal_soc_fraction
        return frac * self.energy_kwh

    def soc_lower_kwh(self, n_slots: int) -> Floats:
        """(n_slots,) lowest SoC allowed at the end of each slot: the minimum (per slot if given),
        raised by the targets inside the horizon and, in the last slot, by the terminal level."""
        lo = self.soc_min_by_slot_kwh(n_slots)
        for target in self.soc_targets:
            if target.slot < n_slots:
                lo[target.slot] = max(lo[target.slot], target.soc_min_fraction * self.energy_kwh)
        if n_slots:
            lo[-1] = max(lo[-1], self.terminal_soc_kwh)
        return lo

    def soc_min_by_slot_kwh(self, n_slots: int) -> Floats:
        """(n_slots,) the SoC minimum at the end of each slot, before targets and the terminal level."""
        return self._fractions(self.soc_min_fraction_by_slot, self.soc_min_fraction, n_slots) * self.energy_kwh

    def soc_upper_kwh(self, n_slots: int) -> Floats:
        """(n_slots,) highest SoC allowed at the end of each slot."""
        return self._fractions(self.soc_max_fraction_by_slot, self.soc_max_fraction, n_slots) * self.energy_kwh

    @staticmethod
    def _fractions(profile: tuple[float, ...] | None, default: float, n_slots: int) -> Floats:
        if profile is None:
            return np.full(n_slots, default)
        if len(profile) < n_slots:
            raise ValueError(f"a SoC profile has {len(profile)} slots, the horizon {n_slots}")
        return np.array(profile[:n_slots], dtype=float)

    def sliced(self, a: int, b: int) -> Battery:
        """The battery over slots ``[a, b)`` of its horizon (profiles cut, targets shifted)."""
        return replace(
            self,
            soc_min_fraction_by_slot=None
            if self.soc_min_fraction_by_slot is None
            else self.soc_min_fraction_by_slot[a:b],
            soc_max_fraction_by_slot=None
            if self.soc_max_fraction_by_slot is None
            else self.soc_max_fraction_by_slot[a:b],
            soc_targets=tuple(replace(t, slot=t.slot - a) for t in self.soc_targets if a <= t.slot < b),
        )

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["soc_targets"] = [{"slot": t.slot, "soc_min_fraction": t.soc_min_fraction} for t in self.soc_targets]
        for name in ("soc_min_fraction_by_slot", "soc_max_fraction_by_slot"):
            d[name] = None if d[name] is None else list(d[name])
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Battery:
        known = cls.__dataclass_fields__
        unknown = set(d) - set(known)
        if unknown:
            raise ValueError(f"unknown battery fields: {sorted(unknown)}")
        return cls(**{k: v for k, v in d.items()})


def battery_profile_check(battery: Battery, n_slots: int, name: str) -> None:
    """Raise unless the battery's per-slot SoC profiles cover ``n_slots``."""
    for field_name in ("soc_min_fraction_by_slot", "soc_max_fraction_by_slot"):
        profile = getattr(battery, field_name)
        if profile is not None and len(profile) < n_slots:
            raise ValueError(f"{name} {field_name} has {len(profile)} slots, the horizon {n_slots}")
