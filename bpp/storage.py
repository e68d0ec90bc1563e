"""Battery storage: the battery block shared by every LP that plans a battery, its checker, the
storage model (batteries behind one connection, slots of 15, 30 or 60 minutes) and the storage agent's
plan on the site scheduler.

**The battery block** (:func:`add_battery_block`; the site LP of :mod:`bpp.scheduler.milp` adds one per
site battery when storage coordination is on, the storage model one per battery). Per slot t of
``h`` hours: charge ``c[t] ∈ [0, charge_power_kw]`` and discharge ``d[t] ∈ [0, discharge_power_kw]``
at the connection, end-of-slot state of charge ``e[t] ∈ [lower[t], upper[t]]`` (the SoC minimum and
maximum, per slot if given, raised by the SoC targets and, in the last slot, the terminal level):

    e[t] = r · e[t−1] + η_c · h · c[t] − h · d[t] / η_d        (e[−1] = initial SoC)
    r = (1 − self_discharge_fraction_per_hour)^h

The site balance adds ``+c − d`` to the meter's net import. Degradation costs
``degradation_gbp_per_mwh`` per MWh of throughput, ``(c + d) · h / 1000``.

**Charge or discharge, never both (why the block is an LP almost everywhere).** One inverter cannot
charge and discharge in the same slot, yet the LP allows ``c[t] > 0`` and ``d[t] > 0`` together. Claim:
if slot t's import price and export price are ≥ 0 and ``η = η_c · η_d < 1``, a solution with both can
be changed into one at least as good with one of them zero. Proof: lower ``c[t]`` by ε and ``d[t]`` by
``η·ε`` (ε ≤ min(c[t], d[t]/η)). The SoC change in slot t, ``η_c·h·ε − h·η·ε/η_d``, is 0, so every
``e`` — and with it every SoC bound, target and the terminal level — is unchanged, and the power
bounds still hold. The site's net demand falls by ``(1 − η)·ε ≥ 0``; take it off the import (or, at
zero import, add it to the export, or curtail on-site solar). The objective changes by
``−(1 − η)·ε·h·price/1000 − (1 + η)·ε·h·degradation/1000 ≤ 0``. Applied with the largest ε, one of
``c[t]``, ``d[t]`` reaches 0. When the change is strictly better (a positive price or degradation) no
optimal LP solution charges and discharges at once, so the LP alone is exact there. It can matter in
three cases only: (i) a negative price, where wasting energy in a charge-discharge loop earns money —
those slots get a binary ``b[t]`` (charge mode), ``c[t] ≤ P_c·b[t]``, ``d[t] ≤ P_d·(1 − b[t])``
(:func:`exclusive_slot_mask`; :class:`bpp.domain.Exclusivity` says where: every negative-price slot
from the start, only where the LP optimum does both, or every slot on request);
(ii) a zero-cost tie (zero price and no degradation), where the LP may return either; (iii) a
surplus the site cannot take (no import to cut, export at its limit, no solar), where the loop
burns energy to meet an SoC bound. The solvers detect (ii) and (iii) after the solve
(:func:`simultaneous_slots`) and re-solve with binaries in exactly those slots — exact, because each
solve relaxes the model with a binary in every slot, so an optimum that does one direction per slot
is optimal for that model too; the checker (:func:`battery_violations`) rejects any schedule that
still does both. The same argument with
``import − export`` shows the meter never needs to import and export at once unless export pays more
than import costs; those slots get an import-or-export binary in the storage model.

**The storage model** (:class:`StorageProblem`, :func:`solve_storage`): several batteries behind one
connection (import and export limits), the rest of the site's demand as a fixed profile, import and
export prices, any of :data:`STORAGE_SLOT_MINUTES`. :func:`storage_cost_gbp` and
:func:`storage_violations` recompute the objective and check every limit from a schedule alone.

**The storage agent** (:mod:`bpp.storage_agent`, a battery-only provider) plans each site on the
storage model, its committed orders as ``net_import_cap_kw``. :func:`storage_instance` is the site
scheduler's job-less instance of one battery site (the scheduler's battery block on a fixed load), for
comparisons and tests; a battery on a compute site is planned by the compute agent alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from bpp.domain import (
    SLOT_HOURS,
    TOL,
    Battery,
    BoolArray,
    CommittedReduction,
    ControlActions,
    Exclusivity,
    FloatArray,
    Instance,
    IntArray,
    ObjectiveSpec,
    Site,
    SolverSettings,
    battery_profile_check,
)
from bpp.lp import LPParts
from bpp.plan import Plan


@dataclass(frozen=True)
class BatteryBlock:
    """Column indices of one battery in an LP: per slot charge, discharge, end-of-slot SoC; and the
    charge-mode binaries with the slots they sit in (empty where the block stays an LP)."""

    site_index: int
    charge_cols: IntArray
    discharge_cols: IntArray
    soc_cols: IntArray
    mode_slots: IntArray
    mode_cols: IntArray


def exclusive_slot_mask(exclusivity: Exclusivity, *weights_per_slot: FloatArray | None, n_slots: int) -> BoolArray:
    """Slots whose battery gets a charge-or-discharge binary from the start: every slot; where any of
    the given per-slot weights (import weight; export revenue) is negative — the only slots where the
    LP may gain from charging and discharging at once (module docstring); or none (``where_used``:
    the solve adds them where the LP does both)."""
    if exclusivity is Exclusivity.EVERY_SLOT:
        return np.ones(n_slots, dtype=bool)
    mask = np.zeros(n_slots, dtype=bool)
    if exclusivity is Exclusivity.WHERE_USED:
        return mask
    for w in weights_per_slot:
        if w is not None:
            mask |= np.asarray(w, dtype=float) < 0
    return mask


def add_battery_block(
    lp: LPParts,
    site_index: int,
    battery: Battery,
    *,
    n_slots: int,
    balance_rows: IntArray,
    gbp_weight: float,
    slot_hours: float = SLOT_HOURS,
    exclusive_slots: BoolArray | None = None,
) -> BatteryBlock:
    """Append one battery's columns and SoC rows to ``lp`` and link it to the site's balance rows
    (``grid − load − c + d + … = fixed``: the battery enters with −1 on charge, +1 on discharge).
    ``exclusive_slots`` (n_slots,) marks the slots that get a charge-mode binary ``b``:
    ``c ≤ P_c · b`` and ``d ≤ P_d · (1 − b)``."""
    deg = battery.degradation_gbp_per_mwh * slot_hours / 1000.0 * gbp_weight  # £ per kW-slot, each way
    zeros = np.zeros(n_slots)
    c = lp.add_cols(np.full(n_slots, deg), zeros, np.full(n_slots, battery.charge_power_kw))
    d = lp.add_cols(np.full(n_slots, deg), zeros, np.full(n_slots, battery.discharge_power_kw))
    e = lp.add_cols(zeros, battery.soc_lower_kwh(n_slots), battery.soc_upper_kwh(n_slots))
    lp.add_entries(balance_rows, c, -np.ones(n_slots))
    lp.add_entries(balance_rows, d, np.ones(n_slots))
    # Dynamics rows: e[t] − r·e[t−1] − η_c·h·c[t] + (h/η_d)·d[t] = (r·initial if t == 0 else 0)
    r = battery.retention_per_slot(slot_hours)
    rhs = np.zeros(n_slots)
    rhs[0] = r * battery.initial_soc_kwh
    rows = lp.add_rows(rhs, rhs)
    lp.add_entries(rows, e, np.ones(n_slots))
    lp.add_entries(rows[1:], e[:-1], np.full(n_slots - 1, -r))
    lp.add_entries(rows, c, np.full(n_slots, -battery.eta_charge * slot_hours))
    lp.add_entries(rows, d, np.full(n_slots, slot_hours / battery.eta_discharge))
    slots = np.flatnonzero(exclusive_slots) if exclusive_slots is not None else np.zeros(0, dtype=np.int64)
    modes = _add_mode_binaries(lp, battery, slots=slots, charge_cols=c, discharge_cols=d)
    return BatteryBlock(site_index, c, d, e, slots.astype(np.int64), modes)


def _add_mode_binaries(
    lp: LPParts, battery: Battery, *, slots: IntArray, charge_cols: IntArray, discharge_cols: IntArray
) -> IntArray:
    """One binary per slot in ``slots`` (1 = charge mode): ``c − P_c·b ≤ 0`` and ``d + P_d·b ≤ P_d``."""
    n = len(slots)
    if not n:
        return np.zeros(0, dtype=np.int64)
    b = lp.add_cols(np.zeros(n), np.zeros(n), np.ones(n), integer=True)
    charge_rows = lp.add_rows(np.full(n, -np.inf), np.zeros(n))
    lp.add_entries(charge_rows, charge_cols[slots], np.ones(n))
    lp.add_entries(charge_rows, b, np.full(n, -battery.charge_power_kw))
    discharge_rows = lp.add_rows(np.full(n, -np.inf), np.full(n, battery.discharge_power_kw))
    lp.add_entries(discharge_rows, discharge_cols[slots], np.ones(n))
    lp.add_entries(discharge_rows, b, np.full(n, battery.discharge_power_kw))
    return b


def soc_trajectory_kwh(
    battery: Battery, charge_kw: FloatArray, discharge_kw: FloatArray, *, slot_hours: float = SLOT_HOURS
) -> FloatArray:
    """End-of-slot SoC implied by a charge/discharge schedule (the plan checker recomputes it):
    ``e[t] = r·e[t−1] + η_c·h·c[t] − h·d[t]/η_d`` from the initial SoC, ``r`` the slot's retention."""
    delta = battery.eta_charge * slot_hours * np.asarray(
        charge_kw, dtype=float
    ) - slot_hours / battery.eta_discharge * np.asarray(discharge_kw, dtype=float)
    r = battery.retention_per_slot(slot_hours)
    if r == 1.0:
        out: FloatArray = battery.initial_soc_kwh + np.cumsum(delta)
        return out
    soc = np.empty(len(delta))
    level = battery.initial_soc_kwh
    for t, step in enumerate(delta.tolist()):
        level = r * level + step
        soc[t] = level
    return soc


def simultaneous_slots(charge_kw: FloatArray, discharge_kw: FloatArray, tol: float = 1e-5) -> BoolArray:
    """Slots in which a schedule both charges and discharges (more than ``tol`` kW each)."""
    both: BoolArray = np.minimum(np.asarray(charge_kw), np.asarray(discharge_kw)) > tol
    return both


def battery_violations(
    site: Site | str,
    battery: Battery,
    *,
    charge_kw: FloatArray,
    discharge_kw: FloatArray,
    soc_kwh: FloatArray,
    slot_hours: float = SLOT_HOURS,
    tol: float = 1e-5,
) -> list[str]:
    """Every way a battery schedule breaks the battery's physics or bounds (empty = valid), recomputed
    from the schedule alone: power limits, one direction per slot, the SoC dynamics (efficiencies,
    self-discharge), the SoC bounds per slot, every target and the terminal level."""
    name = site if isinstance(site, str) else f"site {site.id}: battery"
    n = len(soc_kwh)
    out: list[str] = []
    scale = max(1.0, battery.energy_kwh)
    if np.any(charge_kw < -tol) or np.any(charge_kw > battery.charge_power_kw + tol):
        out.append(f"{name} charge outside [0, {battery.charge_power_kw}] kW")
    if np.any(discharge_kw < -tol) or np.any(discharge_kw > battery.discharge_power_kw + tol):
        out.append(f"{name} discharge outside [0, {battery.discharge_power_kw}] kW")
    both = np.flatnonzero(simultaneous_slots(charge_kw, discharge_kw, tol))
    if len(both):
        out.append(f"{name} charges and discharges in the same slot (slots {both[:5].tolist()})")
    expected = soc_trajectory_kwh(battery, charge_kw, discharge_kw, slot_hours=slot_hours)
    if np.max(np.abs(expected - soc_kwh), initial=0.0) > tol * scale:
        out.append(f"{name} SoC does not follow its charge/discharge dynamics")
    lo = battery.soc_min_by_slot_kwh(n)
    hi = battery.soc_upper_kwh(n)
    bad = np.flatnonzero((soc_kwh < lo - tol * scale) | (soc_kwh > hi + tol * scale))
    if len(bad):
        t = int(bad[0])
        out.append(f"{name} SoC {soc_kwh[t]:.1f} kWh outside [{lo[t]:.1f}, {hi[t]:.1f}] kWh in slot {t}")
    for target in battery.soc_targets:
        want = target.soc_min_fraction * battery.energy_kwh
        if target.slot < n and soc_kwh[target.slot] < want - tol * scale:
            out.append(f"{name} misses its target {want:.1f} kWh at the end of slot {target.slot}")
    if n and soc_kwh[-1] < battery.terminal_soc_kwh - tol * scale:
        out.append(f"{name} ends at {soc_kwh[-1]:.1f} kWh < terminal {battery.terminal_soc_kwh} kWh")
    return out


# -- the stand-alone storage plan ----------------------------------------------------------------


@dataclass(frozen=True)
class StoragePlanSummary:
    """What a battery plan does, in money and carbon, against leaving the battery idle."""

    site_id: str
    charged_mwh: float
    discharged_mwh: float
    equivalent_full_cycles: float
    energy_cost_gbp: float
    idle_energy_cost_gbp: float
    carbon_kg: float
    idle_carbon_kg: float
    degradation_gbp: float

    @property
    def arbitrage_saving_gbp(self) -> float:
        return self.idle_energy_cost_gbp - self.energy_cost_gbp - self.degradation_gbp

    def to_dict(self) -> dict[str, float | str]:
        d: dict[str, float | str] = dict(self.__dict__)
        d["arbitrage_saving_gbp"] = self.arbitrage_saving_gbp
        return d


def storage_instance(
    site: Site,
    start_utc: datetime,
    price_gbp_per_mwh: FloatArray,
    carbon_g_per_kwh: FloatArray,
    *,
    objective: ObjectiveSpec | None = None,
    commitments: tuple[CommittedReduction, ...] = (),
    solver: SolverSettings | None = None,
) -> Instance:
    """A job-less instance: the site's baseline is its net non-battery load (e.g. the compute agent's
    planned load when the two run separately); the only decisions are the battery and solar use."""
    if site.battery is None:
        raise ValueError(f"site {site.id} has no battery")
    return Instance(
        start_utc=start_utc,
        n_slots=site.n_slots,
        sites=(site,),
        jobs=(),
        price_gbp_per_mwh={site.region: np.asarray(price_gbp_per_mwh, dtype=float)},
        carbon_g_per_kwh={site.region: np.asarray(carbon_g_per_kwh, dtype=float)},
        commitments=tuple(commitments),
        actions=ControlActions(storage_coordination=True, geographic_migration=False),
        objective=objective or ObjectiveSpec(),
        solver=solver or SolverSettings(),
    )


def summarise_storage(instance: Instance, plan: Plan) -> list[StoragePlanSummary]:
    """Per-battery summary of a plan."""
    out = []
    price = instance.price_matrix()
    carbon = instance.carbon_matrix()
    mwh = instance.mwh_per_kw_slot  # per kW held one slot of the instance
    for k, site in enumerate(instance.sites):
        b = site.battery
        if b is None:
            continue
        ch = plan.charge_kw[k]
        dis = plan.discharge_kw[k]
        grid = plan.grid_import_kw(instance)[k]
        idle = np.maximum(grid - ch + dis, 0.0)
        out.append(
            StoragePlanSummary(
                site_id=site.id,
                charged_mwh=float(ch.sum() * mwh),
                discharged_mwh=float(dis.sum() * mwh),
                equivalent_full_cycles=float(dis.sum() * instance.slot_hours / b.energy_kwh),
                energy_cost_gbp=float((grid * price[k]).sum() * mwh),
                idle_energy_cost_gbp=float((idle * price[k]).sum() * mwh),
                carbon_kg=float((grid * carbon[k]).sum() * mwh),
                idle_carbon_kg=float((idle * carbon[k]).sum() * mwh),
                degradation_gbp=float((ch.sum() + dis.sum()) * mwh * b.degradation_gbp_per_mwh),
            )
        )
    return out


# -- the storage model: batteries behind one connection, slots of 15, 30 or 60 minutes ------------

#: slot lengths the storage model takes
STORAGE_SLOT_MINUTES = (15, 30, 60)


class StorageSolveError(RuntimeError):
    """The storage model has no feasible schedule, or HiGHS stopped without one."""


@dataclass(frozen=True)
class Connection:
    """A site's grid connection: at most ``import_limit_kw`` in (None = unlimited) and at most
    ``export_limit_kw`` out (0 = no export), shared by everything behind the meter."""

    import_limit_kw: float | None = None
    export_limit_kw: float = 0.0

    def __post_init__(self) -> None:
        if self.import_limit_kw is not None and not (0.0 <= self.import_limit_kw < math.inf):
            raise ValueError("import_limit_kw must be a finite number ≥ 0")
        if not 0.0 <= self.export_limit_kw < math.inf:
            raise ValueError("export_limit_kw must be a finite number ≥ 0")


@dataclass(frozen=True, eq=False)
class StorageProblem:
    """Batteries behind one connection over ``n_slots`` slots of ``slot_minutes``. ``site_load_kw`` is
    the rest of the site's net demand per slot (negative = on-site generation); energy imported costs
    ``import_price_gbp_per_mwh``, energy exported earns ``export_price_gbp_per_mwh`` (None = the site
    may not export, whatever its connection allows). ``net_import_cap_kw`` caps the meter's net import
    (import − export) per slot — how committed reductions bind a battery (+inf where nothing binds;
    None = no cap beyond the connection). Objective: energy cost − export revenue + degradation, in £."""

    batteries: tuple[Battery, ...]
    import_price_gbp_per_mwh: FloatArray
    export_price_gbp_per_mwh: FloatArray | None = None
    site_load_kw: FloatArray | None = None
    connection: Connection = field(default_factory=Connection)
    slot_minutes: int = 30
    exclusivity: Exclusivity = Exclusivity.WHERE_USED
    solver: SolverSettings = field(default_factory=lambda: SolverSettings(mip_rel_gap=1e-7))
    net_import_cap_kw: FloatArray | None = None

    def __post_init__(self) -> None:
        if self.exclusivity not in set(Exclusivity):
            raise ValueError(f"exclusivity must be one of {[str(e) for e in Exclusivity]}")
        object.__setattr__(self, "exclusivity", Exclusivity(self.exclusivity))
        object.__setattr__(self, "batteries", tuple(self.batteries))
        price = _series(self.import_price_gbp_per_mwh, "import_price_gbp_per_mwh")
        object.__setattr__(self, "import_price_gbp_per_mwh", price)
        n = len(price)
        if self.export_price_gbp_per_mwh is not None:
            export = _series(self.export_price_gbp_per_mwh, "export_price_gbp_per_mwh", n)
            object.__setattr__(self, "export_price_gbp_per_mwh", export)
        load = np.zeros(n) if self.site_load_kw is None else _series(self.site_load_kw, "site_load_kw", n)
        object.__setattr__(self, "site_load_kw", load)
        if self.net_import_cap_kw is not None:
            cap = np.array(self.net_import_cap_kw, dtype=float)
            if cap.shape != (n,) or np.any(np.isnan(cap)) or np.any(cap == -np.inf):
                raise ValueError(f"net_import_cap_kw must be one number or +inf per slot ({n} slots)")
            cap.flags.writeable = False
            object.__setattr__(self, "net_import_cap_kw", cap)
        if self.slot_minutes not in STORAGE_SLOT_MINUTES:
            raise ValueError(f"slot_minutes must be one of {STORAGE_SLOT_MINUTES}")
        if not self.batteries:
            raise ValueError("batteries: a storage problem needs at least one battery")
        for k, b in enumerate(self.batteries):
            battery_profile_check(b, n, f"batteries[{k}]")

    @property
    def n_slots(self) -> int:
        return len(self.import_price_gbp_per_mwh)

    @property
    def slot_hours(self) -> float:
        return self.slot_minutes / 60.0

    @property
    def load_kw(self) -> FloatArray:
        assert self.site_load_kw is not None  # set in __post_init__
        return self.site_load_kw

    @property
    def export_limit_kw(self) -> float:
        """What the site may export: its connection's limit, or 0 without an export price."""
        return 0.0 if self.export_price_gbp_per_mwh is None else self.connection.export_limit_kw

    @property
    def export_price(self) -> FloatArray:
        return np.zeros(self.n_slots) if self.export_price_gbp_per_mwh is None else self.export_price_gbp_per_mwh


def _series(values: FloatArray, name: str, n_slots: int | None = None) -> FloatArray:
    arr = np.array(values, dtype=float)
    if arr.ndim != 1 or not len(arr) or (n_slots is not None and len(arr) != n_slots):
        raise ValueError(f"{name} must be one value per slot ({n_slots or 'at least one'} slots)")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN/inf")
    arr.flags.writeable = False
    return arr


@dataclass(frozen=True, eq=False)
class StorageSchedule:
    """A storage model's answer: per battery (n_batteries, n_slots) charge and discharge kW at the
    connection and end-of-slot SoC kWh; per slot import and export kW at the meter."""

    charge_kw: FloatArray
    discharge_kw: FloatArray
    soc_kwh: FloatArray
    import_kw: FloatArray
    export_kw: FloatArray
    objective_gbp: float
    status: str
    mip_gap: float
    solve_time_s: float
    n_binaries: int


@dataclass(frozen=True)
class _StorageModel:
    lp: LPParts
    import_cols: IntArray
    export_cols: IntArray | None
    blocks: tuple[BatteryBlock, ...]


def build_storage_lp(
    problem: StorageProblem, *, battery_modes: BoolArray | None = None, meter_modes: BoolArray | None = None
) -> _StorageModel:
    """The storage LP: ``import − export − Σ c + Σ d = site load`` per slot, each battery's block
    (:func:`add_battery_block`), a charge-or-discharge binary where a price is negative (or every
    slot) or ``battery_modes`` says, and an import-or-export binary where export pays more than
    import costs or ``meter_modes`` says."""
    n, h = problem.n_slots, problem.slot_hours
    lp = LPParts()
    imp_ub = np.full(n, math.inf if problem.connection.import_limit_kw is None else problem.connection.import_limit_kw)
    g = lp.add_cols(problem.import_price_gbp_per_mwh * h / 1000.0, np.zeros(n), imp_ub)
    rows = lp.add_rows(problem.load_kw, problem.load_kw)
    lp.add_entries(rows, g, np.ones(n))
    x = None
    if problem.export_limit_kw > 0:
        x = lp.add_cols(-problem.export_price * h / 1000.0, np.zeros(n), np.full(n, problem.export_limit_kw))
        lp.add_entries(rows, x, -np.ones(n))
        both = problem.export_price > problem.import_price_gbp_per_mwh
        _add_meter_binaries(lp, problem, g, x, both if meter_modes is None else both | meter_modes)
    negative = exclusive_slot_mask(
        problem.exclusivity, problem.import_price_gbp_per_mwh, problem.export_price, n_slots=n
    )
    mask = negative if battery_modes is None else negative | battery_modes
    _add_net_import_caps(lp, problem, g, x)
    blocks = tuple(
        add_battery_block(lp, 0, b, n_slots=n, balance_rows=rows, gbp_weight=1.0, slot_hours=h, exclusive_slots=mask)
        for b in problem.batteries
    )
    return _StorageModel(lp, g, x, blocks)


def _add_net_import_caps(lp: LPParts, problem: StorageProblem, g: IntArray, x: IntArray | None) -> None:
    """``import − export ≤ cap`` in every slot with a finite ``net_import_cap_kw``."""
    if problem.net_import_cap_kw is None:
        return
    idx = np.flatnonzero(np.isfinite(problem.net_import_cap_kw))
    if not len(idx):
        return
    rows = lp.add_rows(np.full(len(idx), -np.inf), problem.net_import_cap_kw[idx])
    lp.add_entries(rows, g[idx], np.ones(len(idx)))
    if x is not None:
        lp.add_entries(rows, x[idx], -np.ones(len(idx)))


def _add_meter_binaries(lp: LPParts, problem: StorageProblem, g: IntArray, x: IntArray, slots: BoolArray) -> None:
    """Import-or-export binaries ``z`` (1 = import) in ``slots``: ``g ≤ M·z``, ``x ≤ X·(1 − z)``;
    ``M`` is the import limit, or the most the site could draw (load + every battery charging + export)."""
    idx = np.flatnonzero(slots)
    if not len(idx):
        return
    lim = problem.connection.import_limit_kw
    most = float(np.max(problem.load_kw, initial=0.0)) + sum(b.charge_power_kw for b in problem.batteries)
    big_m = lim if lim is not None else most + problem.export_limit_kw
    k = len(idx)
    z = lp.add_cols(np.zeros(k), np.zeros(k), np.ones(k), integer=True)
    import_rows = lp.add_rows(np.full(k, -np.inf), np.zeros(k))
    lp.add_entries(import_rows, g[idx], np.ones(k))
    lp.add_entries(import_rows, z, np.full(k, -big_m))
    export_rows = lp.add_rows(np.full(k, -np.inf), np.full(k, problem.export_limit_kw))
    lp.add_entries(export_rows, x[idx], np.ones(k))
    lp.add_entries(export_rows, z, np.full(k, problem.export_limit_kw))


#: solves that add binaries where a solution does both before every slot gets one
RESOLVE_ROUNDS = 3


def solve_storage(problem: StorageProblem) -> StorageSchedule:
    """The optimal schedule of a storage problem. Where a solution still charges and discharges (or
    imports and exports) in one slot — the relaxation under ``where_used``, a zero-cost tie, or a
    surplus the site cannot take (module docstring) — it re-solves with binaries in those slots too;
    after :data:`RESOLVE_ROUNDS` such rounds, in every slot. Each solve relaxes the model with every
    binary, so a solution with one direction per slot is optimal for it. Raises
    :class:`StorageSolveError` when no schedule exists."""
    battery_modes = np.zeros(problem.n_slots, dtype=bool)
    meter_modes = np.zeros(problem.n_slots, dtype=bool)
    for attempt in range(RESOLVE_ROUNDS + 1):
        schedule = _solve_once(problem, battery_modes, meter_modes)
        both_battery = np.any(simultaneous_slots(schedule.charge_kw, schedule.discharge_kw), axis=0)
        both_meter = simultaneous_slots(schedule.import_kw, schedule.export_kw)
        if not (both_battery.any() or both_meter.any()):
            break
        if attempt < RESOLVE_ROUNDS - 1:
            battery_modes |= both_battery
            meter_modes |= both_meter
        else:
            battery_modes[:] = meter_modes[:] = True
    return schedule


def _solve_once(problem: StorageProblem, battery_modes: BoolArray, meter_modes: BoolArray) -> StorageSchedule:
    model = build_storage_lp(problem, battery_modes=battery_modes, meter_modes=meter_modes)
    st = problem.solver
    res = model.lp.solve(st.time_limit_s, st.mip_rel_gap, st.threads, reduced_cost_fixing=False)
    if res.x is None:
        raise StorageSolveError(f"no storage schedule: HiGHS status {res.status!r}")
    x = res.x
    n = problem.n_slots
    return StorageSchedule(
        charge_kw=np.array([np.clip(x[b.charge_cols], 0.0, None) for b in model.blocks]),
        discharge_kw=np.array([np.clip(x[b.discharge_cols], 0.0, None) for b in model.blocks]),
        soc_kwh=np.array([x[b.soc_cols] for b in model.blocks]),
        import_kw=np.clip(x[model.import_cols], 0.0, None),
        export_kw=np.zeros(n) if model.export_cols is None else np.clip(x[model.export_cols], 0.0, None),
        objective_gbp=float(res.objective),
        status=res.status,
        mip_gap=float(res.mip_gap),
        solve_time_s=float(res.solve_time_s),
        n_binaries=int(res.n_integer),
    )


def storage_cost_gbp(problem: StorageProblem, charge_kw: FloatArray, discharge_kw: FloatArray) -> float:
    """The objective of a battery schedule, recomputed from the schedule alone: the meter sees the net
    demand ``load + Σ c − Σ d`` — import when positive, export when negative — priced per MWh, plus
    every battery's degradation on its throughput."""
    h = problem.slot_hours
    net = problem.load_kw + np.sum(charge_kw, axis=0) - np.sum(discharge_kw, axis=0)
    energy = problem.import_price_gbp_per_mwh * np.maximum(net, 0.0) - problem.export_price * np.maximum(-net, 0.0)
    wear = sum(
        b.degradation_gbp_per_mwh * float(np.sum(charge_kw[k]) + np.sum(discharge_kw[k]))
        for k, b in enumerate(problem.batteries)
    )
    return float((energy.sum() + wear) * h / 1000.0)


def storage_violations(problem: StorageProblem, schedule: StorageSchedule, tol: float = 1e-5) -> list[str]:
    """Everything a schedule breaks, recomputed from the problem: each battery's physics and bounds
    (:func:`battery_violations`), the meter balance, one direction at the meter per slot, and the
    connection's import and export limits (no export without an export price)."""
    shape = (len(problem.batteries), problem.n_slots)
    if any(np.shape(a) != shape for a in (schedule.charge_kw, schedule.discharge_kw, schedule.soc_kwh)):
        return [f"battery arrays must have shape {shape}"]
    out: list[str] = []
    for k, b in enumerate(problem.batteries):
        out += battery_violations(
            f"battery {k}:",
            b,
            charge_kw=schedule.charge_kw[k],
            discharge_kw=schedule.discharge_kw[k],
            soc_kwh=schedule.soc_kwh[k],
            slot_hours=problem.slot_hours,
            tol=tol,
        )
    imp, exp = schedule.import_kw, schedule.export_kw
    net = problem.load_kw + schedule.charge_kw.sum(axis=0) - schedule.discharge_kw.sum(axis=0)
    scale = max(1.0, float(np.max(np.abs(net), initial=0.0)))
    if np.max(np.abs(imp - exp - net), initial=0.0) > tol * scale:
        out.append("meter: import − export ≠ site load + charge − discharge")
    if np.any(imp < -tol) or np.any(exp < -tol):
        out.append("meter: negative import or export")
    if np.any(simultaneous_slots(imp, exp, tol)):
        out.append("meter: imports and exports in the same slot")
    lim = problem.connection.import_limit_kw
    if lim is not None and np.any(imp > lim + tol * scale):
        out.append(f"meter: import above the connection's {lim} kW")
    if np.any(exp > problem.export_limit_kw + tol * scale):
        out.append(f"meter: export above {problem.export_limit_kw} kW (0 without an export price)")
    cap = problem.net_import_cap_kw
    if cap is not None and np.any(imp - exp > cap + tol * scale):
        out.append(f"meter: net import above its cap in slots {np.flatnonzero(imp - exp > cap + tol * scale)[:5]}")
    return out


__all__ = [
    "RESOLVE_ROUNDS",
    "STORAGE_SLOT_MINUTES",
    "TOL",
    "BatteryBlock",
    "Connection",
    "StoragePlanSummary",
    "StorageProblem",
    "StorageSchedule",
    "StorageSolveError",
    "add_battery_block",
    "battery_violations",
    "build_storage_lp",
    "exclusive_slot_mask",
    "simultaneous_slots",
    "soc_trajectory_kwh",
    "solve_storage",
    "storage_cost_gbp",
    "storage_instance",
    "storage_violations",
    "summarise_storage",
]
