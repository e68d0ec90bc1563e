"""Realistic job mixes from real cluster traces, and a synthetic fallback with the same statistics.

Sources (read in place from ``../shared/data/jobs/``, never copied; see its README for licences):

- ``alibaba_gpu2023_openb_pod_list_default.csv`` — Alibaba GPU cluster 2023 (Weng et al., ATC '23;
  research/study use only). One row per task with CPU millicores, memory, GPU count and share, QoS
  class and creation/scheduled/deletion seconds.
- ``gaia_pai_1k.csv`` — GAIA's one-week PAI workload (Hanafy et al., ASPLOS '24; MIT, upstream
  Alibaba cluster-trace-gpu-v2020 CC BY 4.0): arrival and length in seconds, CPU count.

Mapping (assumptions, all parameters of :class:`MixSettings`):

- **class**: ``BE`` → batch (deferrable), ``Burstable`` → flexible, ``LS`` and ``Guaranteed`` → critical
  (the jobs README: "map BE → deferrable, LS → critical"). GAIA jobs are batch.
- **power**: ``power_kw = pue · (gpu_kw · num_gpu · gpu_milli/1000 + cpu_kw_per_core · cores)``:
  0.40 kW per whole GPU (an A100-SXM-class board at TDP), 0.010 kW per CPU core (host share), facility
  overhead PUE 1.2; ``power_scale`` multiplies it (one trace task standing for that many replicas).
- **duration**: run time = ``deletion − scheduled`` seconds (Alibaba; Pending rows, never scheduled, are
  skipped) or ``length`` (GAIA), rounded up to the plan's slots (``slot_minutes``: 15, 30 or 60; default
  30), capped at ``max_duration_slots``. Every ``*_slots`` setting counts the plan's slots; the defaults
  are for 30-minute slots and :meth:`MixSettings.for_slot_minutes` restates them for another length.
- **arrivals**: consecutive rows from the dense part of the Alibaba trace (creation_time ≥ 9,941,376 s,
  where 99.7% of rows arrive) or from GAIA's start, their relative arrival times compressed linearly
  into the first ``arrival_fraction`` of the horizon (the traces' real rate is 9.9 and 5.95 jobs/h; a
  benchmark asks for N jobs in 48 h). When N exceeds the rows available, rows are reused cyclically
  (another pass of the same tasks, a fresh id).
- **deadline** = release + duration + slack: 8 h for batch, 4 h for flexible, 0 for critical.
- **interruptible/checkpointable**: the traces do not say; a seeded ``preemptible_share`` (50%) of
  batch and flexible jobs are both.
- **migration**: batch/flexible jobs may run in any of the provider's regions; migration cost
  £0.02 + £0.001 per GiB of requested memory (moving a checkpoint/container image between the
  provider's own sites over leased links: operations, not cloud egress fees; GAIA: per core).
- **carbon thresholds**: given the home-region carbon series, a seeded ``threshold_share`` of
  batch/flexible jobs get a threshold at the horizon's ``threshold_percentile`` — raised when needed
  so that the job still has enough eligible slots at home before its deadline (an instance generator,
  not a scheduler rule: the scheduler reports infeasible thresholds, the generator avoids making them).
- **home site**: drawn with probability proportional to site capacity.

Synthetic fallback (``../shared`` absent): the same mapping applied to tasks sampled from the
statistics the jobs README publishes for the Alibaba trace — class shares LS 57.0%, BE 41.7%,
Burstable 1.2%, Guaranteed 0.1%; GPUs 0/1/2/4/8 at 13.35/85.73/0.20/0.18/0.54% with 44% of 1-GPU tasks
using a share (uniform 0.1–0.9 GPU); cores log-normal with median 11.3 (1–120); memory log-normal
median 40.6 GiB; run time log-normal with the per-class medians (BE 241 s, LS 896 s, Burstable
3,660 s, Guaranteed 3,836 s) and σ = 1.98 (overall p90/median = 7,764/616); Poisson arrivals.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bpp.domain import MARKET_SLOT_MINUTES, FloatArray, Job, Priority, check_slot_minutes

ALIBABA_FILE = "alibaba_gpu2023_openb_pod_list_default.csv"
GAIA_FILE = "gaia_pai_1k.csv"
#: creation_time from which the Alibaba trace is dense (../shared/data/jobs/README.md)
ALIBABA_DENSE_FROM_S = 9_941_376

_REPO = Path(__file__).resolve().parent.parent


def default_jobs_dir() -> Path:
    return _REPO.parent / "shared" / "data" / "jobs"


@dataclass(frozen=True)
class MixSettings:
    gpu_kw: float = 0.40
    cpu_kw_per_core: float = 0.010
    pue: float = 1.2
    power_scale: float = 1.0
    max_duration_slots: int = 16
    #: the scheduler's max deferral (thresholds are drawn so each job stays feasible within it)
    max_deferral_slots: int = 8
    arrival_fraction: float = 0.6
    batch_slack_slots: int = 16
    flexible_slack_slots: int = 8
    preemptible_share: float = 0.5
    threshold_share: float = 0.3
    threshold_percentile: float = 70.0
    migration_base_gbp: float = 0.02
    migration_gbp_per_gib: float = 0.001

    @classmethod
    def for_slot_minutes(cls, slot_minutes: int, **fields: object) -> MixSettings:
        """Settings for a plan of ``slot_minutes`` slots: the ``*_slots`` defaults (stated for 30-minute
        slots) restated as the same durations in that slot length (rounded up), ``fields`` as given."""
        per_half_hour = MARKET_SLOT_MINUTES / check_slot_minutes(slot_minutes)
        scaled: dict[str, object] = {
            name: math.ceil(getattr(cls, name) * per_half_hour)
            for name in ("max_duration_slots", "max_deferral_slots", "batch_slack_slots", "flexible_slack_slots")
        }
        return cls(**{**scaled, **fields})  # type: ignore[arg-type]


@dataclass(frozen=True)
class _Task:
    """A trace row reduced to what the mapping needs."""

    arrival_s: float
    run_s: float
    cores: float
    gpus: float  # whole-GPU equivalents (num_gpu · gpu_milli / 1000)
    mem_gib: float
    priority: Priority


_QOS = {
    "BE": Priority.BATCH,
    "Burstable": Priority.FLEXIBLE,
    "LS": Priority.CRITICAL,
    "Guaranteed": Priority.CRITICAL,
}


def read_alibaba(path: Path) -> list[_Task]:
    """Scheduled rows of the dense period, in arrival order."""
    tasks = []
    with path.open(newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            if not r["scheduled_time"]:
                continue  # Pending: never ran, no duration
            created = int(r["creation_time"])
            if created < ALIBABA_DENSE_FROM_S:
                continue
            run = int(r["deletion_time"]) - int(r["scheduled_time"])
            gpus = int(r["num_gpu"]) * int(r["gpu_milli"]) / 1000.0
            tasks.append(
                _Task(
                    created,
                    max(run, 1),
                    int(r["cpu_milli"]) / 1000.0,
                    gpus,
                    int(r["memory_mib"]) / 1024.0,
                    _QOS.get(r["qos"], Priority.CRITICAL),
                )
            )
    return tasks


def read_gaia(path: Path) -> list[_Task]:
    """GAIA rows (seconds in the 1k file); CPU-only batch work."""
    tasks = []
    with path.open(newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            cpus = float(r["cpus"])
            tasks.append(_Task(float(r["arrival_time"]), float(r["length"]), cpus, 0.0, cpus, Priority.BATCH))
    return tasks


def synthetic_tasks(n: int, rng: np.random.Generator, mean_gap_s: float = 364.0) -> list[_Task]:
    """Tasks sampled from the published Alibaba statistics (see module docstring)."""
    classes = rng.choice(4, size=n, p=[0.570, 0.417, 0.012, 0.001])
    prio = [Priority.CRITICAL, Priority.BATCH, Priority.FLEXIBLE, Priority.CRITICAL]
    med = np.array([896.0, 241.0, 3660.0, 3836.0])[classes]
    run = np.exp(np.log(med) + 1.98 * rng.standard_normal(n)).clip(4, 1.25e7)
    ngpu = rng.choice([0, 1, 2, 4, 8], size=n, p=[0.1335, 0.8573, 0.0020, 0.0018, 0.0054])
    share = np.where((ngpu == 1) & (rng.random(n) < 0.44), rng.uniform(0.1, 0.9, n), 1.0)
    cores = np.exp(np.log(11.3) + 0.8 * rng.standard_normal(n)).clip(1, 120)
    mem = np.exp(np.log(40.6) + 0.9 * rng.standard_normal(n)).clip(1, 720)
    arrival = np.cumsum(rng.exponential(mean_gap_s, n))  # 9.9 jobs/h
    return [
        _Task(
            float(arrival[i]),
            float(run[i]),
            float(cores[i]),
            float(ngpu[i] * share[i]),
            float(mem[i]),
            prio[classes[i]],
        )
        for i in range(n)
    ]


def job_mix(
    n_jobs: int,
    horizon_slots: int,
    site_ids: list[str],
    site_capacity_kw: list[float] | None = None,
    *,
    source: str = "alibaba",
    jobs_dir: Path | None = None,
    seed: int = 0,
    home_carbon_g_per_kwh: Mapping[str, FloatArray] | None = None,
    settings: MixSettings | None = None,
    id_prefix: str = "",
    offset_rows: int | None = None,
    slot_minutes: int = MARKET_SLOT_MINUTES,
) -> list[Job]:
    """``n_jobs`` jobs over a ``horizon_slots`` horizon (slot 0 = horizon start) for the given sites.

    ``source``: ``alibaba`` (GPU tasks), ``gaia`` (CPU batch) or ``mixed`` (half each); falls back to
    ``synthetic`` when the trace file is absent. ``home_carbon_g_per_kwh`` maps site id → carbon array
    of the horizon, for thresholds (none are set without it). ``offset_rows`` picks where in the trace
    the jobs start (default: a seeded random offset). Slots are of ``slot_minutes``."""
    cfg = settings or MixSettings.for_slot_minutes(slot_minutes)
    slot_s = check_slot_minutes(slot_minutes) * 60
    rng = np.random.default_rng(seed)
    jobs_dir = jobs_dir or default_jobs_dir()
    if source == "mixed":
        half = n_jobs // 2
        a = job_mix(
            half,
            horizon_slots,
            site_ids,
            site_capacity_kw,
            source="alibaba",
            jobs_dir=jobs_dir,
            seed=seed,
            home_carbon_g_per_kwh=home_carbon_g_per_kwh,
            settings=cfg,
            id_prefix="A",
            offset_rows=offset_rows,
            slot_minutes=slot_minutes,
        )
        b = job_mix(
            n_jobs - half,
            horizon_slots,
            site_ids,
            site_capacity_kw,
            source="gaia",
            jobs_dir=jobs_dir,
            seed=seed + 1,
            home_carbon_g_per_kwh=home_carbon_g_per_kwh,
            settings=cfg,
            id_prefix="G",
            offset_rows=offset_rows,
            slot_minutes=slot_minutes,
        )
        return a + b
    path = {"alibaba": jobs_dir / ALIBABA_FILE, "gaia": jobs_dir / GAIA_FILE}.get(source)
    if source == "synthetic" or path is None or not path.is_file():
        if source not in ("alibaba", "gaia", "synthetic"):
            raise ValueError(f"unknown job source {source!r}")
        tasks = synthetic_tasks(max(n_jobs, 1), rng)
        tag = "S"
    else:
        tasks = read_alibaba(path) if source == "alibaba" else read_gaia(path)
        tag = "A" if source == "alibaba" else "G"
    prefix = id_prefix or tag
    n_rows = len(tasks)
    start = int(rng.integers(0, n_rows)) if offset_rows is None else offset_rows % n_rows
    picked = [tasks[(start + i) % n_rows] for i in range(n_jobs)]
    # arrival times: relative, unwrapped across passes, compressed into the arrival span
    rel = np.zeros(n_jobs)
    span = tasks[-1].arrival_s - tasks[0].arrival_s + 1.0
    for i in range(n_jobs):
        k = (start + i) // n_rows
        rel[i] = picked[i].arrival_s + k * span
    rel -= rel.min() if n_jobs else 0.0
    arrival_span = max(1, int(cfg.arrival_fraction * horizon_slots))
    scale = arrival_span / max(rel.max() if n_jobs else 1.0, 1.0)
    releases = np.minimum(np.floor(rel * scale).astype(int), arrival_span - 1)
    caps = np.asarray(site_capacity_kw if site_capacity_kw is not None else [1.0] * len(site_ids), dtype=float)
    homes = rng.choice(len(site_ids), size=n_jobs, p=caps / caps.sum())
    pre = rng.random(n_jobs) < cfg.preemptible_share
    thr_draw = rng.random(n_jobs) < cfg.threshold_share
    jobs: list[Job] = []
    for i, t in enumerate(picked):
        d = int(min(max(math.ceil(t.run_s / slot_s), 1), cfg.max_duration_slots))
        r = int(releases[i])
        d = min(d, horizon_slots - r)  # a task longer than what is left of the horizon is cut there
        slack = {Priority.BATCH: cfg.batch_slack_slots, Priority.FLEXIBLE: cfg.flexible_slack_slots}.get(t.priority, 0)
        deadline = min(r + d + slack, horizon_slots)
        power = cfg.pue * (cfg.gpu_kw * t.gpus + cfg.cpu_kw_per_core * t.cores) * cfg.power_scale
        home = site_ids[int(homes[i])]
        movable = t.priority is not Priority.CRITICAL
        threshold = None
        if movable and thr_draw[i] and home_carbon_g_per_kwh and home in home_carbon_g_per_kwh:
            c = np.asarray(home_carbon_g_per_kwh[home], dtype=float)[:horizon_slots]
            level = float(np.percentile(c, cfg.threshold_percentile))
            end = min(deadline, r + d + cfg.max_deferral_slots)
            window = np.sort(c[r:end])
            # contiguous need: the d-slot run with the lowest peak must fit under the threshold
            best_peak = min(float(c[s : s + d].max()) for s in range(r, end - d + 1))
            needed = best_peak if not pre[i] else float(window[d - 1])
            threshold = float(math.ceil(max(level, needed)))
        jobs.append(
            Job(
                id=f"{prefix}{i:05d}",
                power_kw=round(max(power, 0.001), 4),
                duration_slots=d,
                release_slot=r,
                deadline_slot=deadline,
                priority=t.priority,
                carbon_threshold_g_per_kwh=threshold,
                interruptible=bool(movable and pre[i]),
                checkpointable=bool(movable and pre[i]),
                site_id=home,
                allowed_regions=None,
                migration_cost_gbp=round(cfg.migration_base_gbp + cfg.migration_gbp_per_gib * t.mem_gib, 4)
                if movable
                else 0.0,
            )
        )
    return jobs


def synthetic_solar_kw(
    start_utc: datetime,
    n_slots: int,
    capacity_kw: float,
    *,
    latitude_deg: float = 52.0,
    longitude_deg: float = -1.5,
    clearness: float = 1.0,
    slot_minutes: int = MARKET_SLOT_MINUTES,
) -> FloatArray:
    """Clear-sky PV output per slot of ``slot_minutes`` (synthetic — the shared data has no solar series).

    Solar elevation from declination ``23.44° · sin(2π(284 + doy)/365)`` and the hour angle at the
    slot midpoint; output = ``capacity · clearness · min(1, sin(elevation) / sin(50°))`` — a tilted
    array reaches nameplate once the sun is ≥ 50° up. At 52° N that gives "green" slots (≥ 80%) around
    midday from spring to autumn and none in winter."""
    start = start_utc.astimezone(UTC)
    midday_offset_h = start.hour + start.minute / 60.0 + (np.arange(n_slots) + 0.5) * slot_minutes / 60.0
    doy = start.timetuple().tm_yday - 1 + midday_offset_h / 24.0
    hours_utc = midday_offset_h % 24.0
    decl = np.radians(23.44) * np.sin(2 * np.pi * (284 + doy) / 365.0)
    hour_angle = np.radians(15.0 * (hours_utc + longitude_deg / 15.0 - 12.0))
    lat = np.radians(latitude_deg)
    sin_el = np.sin(lat) * np.sin(decl) + np.cos(lat) * np.cos(decl) * np.cos(hour_angle)
    solar: FloatArray = capacity_kw * clearness * np.clip(sin_el / np.sin(np.radians(50.0)), 0.0, 1.0)
    return solar
