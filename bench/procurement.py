"""Procurement benchmark, both halves in one run: prints JSON and writes ``bench/results/procurement.json``
(the MILP half also alone to ``bench/results/procurement_milp.json``).

    DATABASE_URL=… REDIS_URL=… .venv/bin/python bench/procurement.py [--sizes 50,500,2000] [--repeats 3]
        [--seeds 20] [--providers 10,50] [--events 20] [--ttl 10] [--concurrency 1]
        [--skip-milp | --skip-e2e | --milp-only] [--quick]

``--quick`` is a smoke run (MILP 50 offers once, 2 seeds; 10 providers, 5 events) and writes no file unless ``--out``.
``--milp-only`` runs the MILP half alone: it writes ``bench/results/procurement_milp.json`` and replaces only the
``milp`` section of ``bench/results/procurement.json``, keeping its end-to-end results (and their machine).

**milp**: the exact choice of :func:`bap.procurement_choice.choose` for 50, 500 and 2,000 offers
over a 4-hour event (8 half-hour slots, 2023-01-12 16:00–20:00 UTC, a winter evening peak). Offers are
generated with a seeded RNG: about three per provider, prices spread around that evening's real GB
market-index prices (``grid.signals.load_gb`` on ``../shared/data/grid/``; a flat £150/MWh when the data is
absent), windows anywhere in the event, minimum and maximum kW and durations, a delivery record
(reliability 0.7–1.0), carbon stated or not, one offer in twenty paid with Compute Flex Tokens of one
series. The target follows the evening peak and asks for about a third of what the offers could cover.
Solved to ``mip_rel_gap`` 1e-3, production's gap (``bap/procurement_offers.py``) and the issue's "proven within
0.1 %". Per size, on the bench's own instance (seed 12): the median solve time of ``--repeats`` runs (model
building included), our cost and objective against the solver's proven bound (the gap of the rounded portfolio,
in %), and against the in-merit stack (price order, as NESO's DFS) and first-come-first-served (arrival order) as
ratios, both accounted the same way. Then over ``--seeds`` other instances (seeds 0, 1, …; one solve each):
the solve time (median, max), every status and the worst proven gap of the rounded portfolio. Goals (issue 12):
500 offers solved in < 1 s and cost proven within 0.1 % of optimal, on every instance.

**e2e**: event → all orders confirmed on real processes (loopback) for 10 and 50 providers (10 per BPP
platform): ``--events`` DR events per size through ``POST /api/v1/grid-events`` with the operator key, sent
one at a time (``--concurrency``), inside the static example offers' windows (:func:`plan_events`), after two
warm-up events that buy nothing. Per size: client-observed seconds (POST until a GET shows a final status with
every order ACCEPTED) and the procurement's own ``seconds_to_all_confirmed``, p50/p99; covered / partially
covered / failed; orders refused and re-procured; where the time went (market-log time stamps); RSS and the
machine's load. ``FLEXMARKET_MESSAGE_TTL_S`` is set to ``--ttl``. Goal (issue 12): p99 < 5 s for 50 providers
when every provider answers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import re
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import highspy
import numpy as np

from bap.procurement_baselines import first_come_first_served, in_merit_stack
from bap.procurement_choice import Offer, Portfolio, ProcurementRequest, Spot, TokenRedemption, choose
from grid.signals import load_gb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `bench.load` (its RSS helper) and the project's packages
SHARED = ROOT.parent / "shared" / "data"
OUT = ROOT / "bench" / "results" / "procurement.json"
MILP_OUT = ROOT / "bench" / "results" / "procurement_milp.json"
EVENT_START = datetime(2023, 1, 12, 16, 0, tzinfo=UTC)
N_SLOTS = 8
SERIES = "cft-bench"
TOKEN_VALUE_GBP_PER_MWH = 120.0
MIP_REL_GAP = 1e-3  # production's (bap/procurement_offers.py); the goal is "proven within 0.1 %"
SEED = 12


# -- instances ------------------------------------------------------------------------------------


def evening_prices() -> tuple[np.ndarray, str]:
    """Half-hourly GB market-index prices of the event, and where they came from."""
    end = datetime(2023, 1, 12, 20, 0, tzinfo=UTC)
    try:
        series = load_gb(EVENT_START, end, SHARED / "grid")
    except (OSError, ValueError) as exc:
        return np.full(N_SLOTS, 150.0), f"flat £150/MWh ({exc})"
    return np.asarray(series.price_gbp_per_mwh, dtype=float), "GB market index 2023-01-12 16:00–20:00 UTC"


def instance(n_offers: int, prices: np.ndarray, seed: int = SEED) -> tuple[list[Offer], ProcurementRequest]:
    rng = np.random.default_rng(seed + n_offers)
    offers = []
    for i in range(n_offers):
        first = int(rng.integers(0, N_SLOTS))
        last = N_SLOTS - 1 if rng.random() < 0.4 else int(rng.integers(first, N_SLOTS))
        max_kw = float(rng.choice([50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0]))
        min_duration = int(rng.integers(1, 3))
        window_price = float(prices[first : last + 1].mean())
        offers.append(
            Offer(
                offer_id=f"offer-{i}",
                provider_id=f"provider-{i // 3}",
                first_slot=first,
                last_slot=last,
                min_kw=float(max_kw * rng.choice([0.0, 0.1, 0.25, 0.5])),
                max_kw=max_kw,
                min_duration_slots=min_duration,
                max_duration_slots=int(rng.integers(min_duration, N_SLOTS + 1)),
                price_gbp_per_mwh=round(window_price * float(rng.uniform(0.6, 2.5)), 2),
                carbon_g_per_kwh=None if rng.random() < 0.2 else round(float(rng.uniform(20.0, 350.0)), 1),
                reliability=round(float(rng.uniform(0.7, 1.0)), 3),
                payment=TokenRedemption(SERIES) if rng.random() < 0.05 else Spot(),
            )
        )
    capacity = np.zeros(N_SLOTS)
    for o in offers:
        capacity[o.first_slot : o.last_slot + 1] += o.reliability * o.max_kw
    shape = 0.75 + 0.25 * np.sin(np.linspace(0.2, np.pi - 0.2, N_SLOTS))  # rises to the peak, falls after
    target = np.round(capacity.min() / 3.0 * shape, 1)
    token_offers = sum(1 for o in offers if isinstance(o.payment, TokenRedemption))
    request = ProcurementRequest(
        target_kw=tuple(float(t) for t in target),
        token_budgets_mwh={SERIES: 0.25 * token_offers},
        token_value_gbp_per_mwh={SERIES: TOKEN_VALUE_GBP_PER_MWH},
        mip_rel_gap=MIP_REL_GAP,
        time_limit_s=60.0,
    )
    return offers, request


# -- the milp section -----------------------------------------------------------------------------


def _figures(p: Portfolio) -> dict[str, Any]:
    return {
        "orders": len(p.orders),
        "cost_gbp": round(p.cost_gbp, 2),
        "objective": round(p.objective_value, 4),
        "shortfall_mwh": round(p.shortfall_mwh, 4),
        "carbon_kg": round(p.carbon_kg, 1),
    }


def run_size(n_offers: int, prices: np.ndarray, repeats: int, seeds: int) -> dict[str, Any]:
    offers, request = instance(n_offers, prices)
    times, ours = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        ours = choose(offers, request)
        times.append(time.perf_counter() - t0)
    assert ours is not None
    merit = in_merit_stack(offers, request)
    fcfs = first_come_first_served(offers, request)
    gap = _proven_gap(ours)
    median_s = statistics.median(times)
    over_seeds = run_seeds(n_offers, prices, seeds)
    goals = {"proven_within_0.1pct": gap <= 1e-3}
    if seeds:
        goals["proven_within_0.1pct_every_seed"] = over_seeds["worst_gap_vs_bound_pct"] <= 0.1
    if n_offers == 500:
        goals["solved_under_1s"] = median_s < 1.0
        if seeds:
            goals["solved_under_1s_every_seed"] = over_seeds["solve_s"]["max"] < 1.0
    row = {
        "n_offers": n_offers,
        "n_providers": len({o.provider_id for o in offers}),
        "n_slots": N_SLOTS,
        "target_kw": list(request.target_kw),
        "excluded": len(ours.excluded),
        "solve_s": {"median": round(median_s, 4), "all": [round(t, 4) for t in times]},
        "status": ours.status,
        "milp": _figures(ours),
        "best_bound": round(ours.best_bound, 4),
        "solver_mip_gap": ours.mip_gap,
        "gap_vs_bound_pct": round(100.0 * gap, 5),
        "in_merit_stack": _figures(merit),
        "first_come_first_served": _figures(fcfs),
        "cost_ratio_in_merit_over_milp": round(merit.cost_gbp / ours.cost_gbp, 4),
        "cost_ratio_fcfs_over_milp": round(fcfs.cost_gbp / ours.cost_gbp, 4),
        "tokens_redeemed_mwh": {k: round(v, 4) for k, v in ours.tokens_redeemed_mwh.items()},
        "seeds": over_seeds,
        "goals_met": goals,
    }
    print(json.dumps(row))
    return row


def _proven_gap(p: Portfolio) -> float:
    """The rounded portfolio's objective against the solver's proven bound, relative."""
    return (p.objective_value - p.best_bound) / max(abs(p.objective_value), 1e-12)


def run_seeds(n_offers: int, prices: np.ndarray, seeds: int) -> dict[str, Any]:
    """``n_offers`` offers on instances of seeds 0 … seeds − 1, each solved once (model building included)."""
    rows: list[dict[str, Any]] = []
    times: list[float] = []
    gaps: list[float] = []
    for seed in range(seeds):
        offers, request = instance(n_offers, prices, seed)
        t0 = time.perf_counter()
        p = choose(offers, request)
        times.append(round(time.perf_counter() - t0, 4))
        gaps.append(round(100.0 * _proven_gap(p), 5))
        rows.append(
            {
                "seed": seed,
                "solve_s": times[-1],
                "status": p.status,
                "gap_vs_bound_pct": gaps[-1],
                "solver_mip_gap_pct": round(100.0 * p.mip_gap, 5),
            }
        )
    return {
        "seeds": seeds,
        "solve_s": {"median": round(statistics.median(times), 4), "max": max(times)} if times else None,
        "worst_gap_vs_bound_pct": max(gaps, default=0.0),
        "all_optimal": all(r["status"] == "optimal" for r in rows),
        "per_seed": rows,
    }


def run_milp(sizes: list[int], repeats: int, seeds: int) -> dict[str, Any]:
    prices, source = evening_prices()
    rows = [run_size(n, prices, repeats, seeds) for n in sizes]
    five_hundred = [r for r in rows if r["n_offers"] == 500]
    return {
        "goal": {
            "target": "issue 12: 500 offers solved in < 1 s and cost proven within 0.1 % of optimal (the rounded "
            "portfolio against the solver's proven bound), on the bench's instance and on every seed; 2 cores "
            "shared with other work, one thread",
            "met": all(all(r["goals_met"].values()) for r in five_hundred) if five_hundred else None,
        },
        "setup": {
            "event": f"{EVENT_START.isoformat()} + {N_SLOTS} half hours",
            "prices": source,
            "event_prices_gbp_per_mwh": [round(float(p), 2) for p in prices],
            "mip_rel_gap": MIP_REL_GAP,
            "repeats": repeats,
            "seed": SEED,
            "seeds": f"0..{seeds - 1}, one solve each" if seeds else "none",
            "threads": 1,
            "token_value_gbp_per_mwh": TOKEN_VALUE_GBP_PER_MWH,
        },
        "sizes": rows,
    }


# -- the e2e section --------------------------------------------------------------------------------------
# Event → all orders confirmed on real processes (loopback): the network `flexmarket up` runs (registry,
# gateway, BAP, BPP, ledger, one Celery worker with beat), hosting the static example catalog
# (bpp.catalog.example_config: every provider offers 16:00–20:00 tomorrow and 06:00–09:00 the day after).

FINAL_STATUSES = ("covered", "partially_covered", "failed", "cancelled", "halted")
E2E_TIMEOUT_S = 90.0  # per event, client side: after this the event counts as timed out
POLL_S = 0.1  # GET /procurements/{id} every 100 ms: client-observed times are ±0.1 s


def _slot_capacity_kw(config: dict[str, Any]) -> dict[datetime, float]:
    """Σ max_kw of every offer over each half-hour its window covers: the network's per-slot capacity."""
    cap: dict[datetime, float] = {}
    for platform_ in config["platforms"]:
        for provider in platform_["providers"]:
            for offer in provider["offers"]:
                t = datetime.fromisoformat(offer["window_start"])
                while t < datetime.fromisoformat(offer["window_end"]):
                    cap[t] = cap.get(t, 0.0) + float(offer["max_kw"])
                    t += timedelta(minutes=30)
    return cap


def plan_events(config: dict[str, Any], n_events: int, *, tag: str) -> list[dict[str, Any]]:
    """DR events inside the offers' windows, three evening to two morning, 1–2 half-hours each, starts spread
    over the window. Peak targets exceed any one offer's max_kw (1,200 kW evening, 600 kW morning), so each
    event needs at least 2 providers, and stay under what the 3–4 cheapest cover. Invariant (asserted): the
    events' summed target in every slot is at most 60 % of the network's capacity there, so all of them fit
    even though orders of earlier events consume capacity (a refused confirm is re-procured elsewhere)."""
    cap = _slot_capacity_kw(config)
    evening = sorted(t for t in cap if t.hour >= 16)
    morning = sorted(t for t in cap if t.hour < 12)
    used: dict[datetime, float] = {}
    events = []
    for k in range(n_events):
        is_evening = k % 5 in (0, 2, 4)
        window, base_kw, step_kw = (evening, 1300.0, 100.0) if is_evening else (morning, 700.0, 50.0)
        n_slots = 1 + k % 2
        starts = range(len(window) - n_slots + 1)  # the least asked-for place so far: events spread out
        first = min(starts, key=lambda i: (sum(used.get(t, 0.0) for t in window[i : i + n_slots]), (i * 5 + k) % 7))
        peak = base_kw + step_kw * ((k * 7) % 8)
        intervals = []
        for j in range(n_slots):
            start = window[first + j]
            target = peak if j == 0 else round(0.85 * peak, 1)
            used[start] = used.get(start, 0.0) + target
            end = start + timedelta(minutes=30)
            intervals.append({"start": start.isoformat(), "end": end.isoformat(), "target_kw": target})
        events.append({"event_id": f"bench-{tag}-{k:03d}", "kind": "DR_EVENT", "intervals": intervals})
    worst = max(used[t] / cap[t] for t in used)
    assert worst <= 0.6, f"events ask {worst:.0%} of a slot's capacity"
    return events


def _all_confirmed(view: dict[str, Any]) -> bool:
    """Final status, and every order it still counts on ACCEPTED (failed ones carry an error or were cancelled)."""
    if view["status"] not in FINAL_STATUSES:
        return False
    return all(o["state"] == "ACCEPTED" or o["last_error"] or o["state"] == "CANCELLED" for o in view["orders"])


async def _one_event(client: Any, api: str, headers: dict[str, str], event: dict[str, Any]) -> dict[str, Any]:
    """POST the event, poll until every order is confirmed; client-observed seconds and the final view."""
    t0 = time.perf_counter()
    async with client.post(f"{api}/grid-events", json=event, headers=headers) as r:
        body = await r.json()
        if r.status != 202:
            return {"event_id": event["event_id"], "error": f"HTTP {r.status}: {body}"}
    pid = body["procurement_id"]
    post_s = time.perf_counter() - t0
    while time.perf_counter() - t0 < E2E_TIMEOUT_S:
        async with client.get(f"{api}/procurements/{pid}", headers=headers) as r:
            view = await r.json()
        if _all_confirmed(view):
            return {"event_id": event["event_id"], "client_s": time.perf_counter() - t0, "post_s": post_s, "view": view}
        await asyncio.sleep(POLL_S)
    return {"event_id": event["event_id"], "client_s": None, "post_s": post_s, "view": view, "error": "timeout"}


def _phases(view: dict[str, Any]) -> dict[str, float | None]:
    """Where the time went, from the market log's time stamps (market time is the wall clock here):
    created → search sent (the first worker step), → first choice (collecting offers and the MILP),
    → final status (select → init → confirm, and any re-procurement)."""
    at: dict[str, datetime] = {}
    for e in view["market_log"]:
        at.setdefault(e["kind"], datetime.fromisoformat(e["market_at"]))
    created = datetime.fromisoformat(view["created_at"])
    final = at.get(view["status"])

    def span(a: datetime | None, b: datetime | None) -> float | None:
        return round((b - a).total_seconds(), 3) if a and b else None

    return {
        "to_search_s": span(created, at.get("search")),
        "search_to_choice_s": span(at.get("search"), at.get("choice")),
        "choice_to_final_s": span(at.get("choice"), final),
    }


# The BAP's Beckn messages of a procurement's transactions, epoch time stamps from PostgreSQL: the first
# delivery of each action the BAP sent (outbox delivered_at; created_at is only its transaction's start) and the
# arrival of the last callback of each action (inbox received_at).
_TIMELINE_SQL = """
select 'sent_' || action, min(delivered_at) from bap.outbox where transaction_id = any(%(tx)s) group by action
union all
select 'received_' || action, max(received_at) from bap.inbox where transaction_id = any(%(tx)s) group by action
"""
TIMELINE_STEPS = (
    "sent_search",
    "received_on_search",
    "choice",
    "sent_select",
    "received_on_select",
    "sent_init",
    "received_on_init",
    "sent_confirm",
    "received_on_confirm",
    "final",
)


def timeline(conn: Any, view: dict[str, Any]) -> dict[str, float]:
    """Seconds after the procurement was created: the first search/select/init/confirm delivered (sent_*),
    the last callback of each kind in (received_*), the first choice and the final status (market log)."""
    created = datetime.fromisoformat(view["created_at"])
    at: dict[str, datetime] = {}
    for name, when in conn.execute(_TIMELINE_SQL, {"tx": view["transaction_ids"]}).fetchall():
        if when is not None:
            at[name] = when
    for e in view["market_log"]:
        if e["kind"] in ("choice", view["status"]):
            at.setdefault("choice" if e["kind"] == "choice" else "final", datetime.fromisoformat(e["market_at"]))
    return {k: round((at[k] - created).total_seconds(), 3) for k in TIMELINE_STEPS if k in at}


_TASK_LINE = re.compile(r"Task ([\w.]+)\[[^\]]+\] succeeded in ([0-9.]+)s")


def worker_tasks(log_path: Path) -> dict[str, dict[str, float]]:
    """Every Celery task of the network's worker (its whole life: start-up, warm-up and events) by name: how
    many ran, and their total, mean and longest seconds as Celery logged them (waits for row locks included)."""
    times: dict[str, list[float]] = {}
    for m in _TASK_LINE.finditer(log_path.read_text(errors="replace")):
        times.setdefault(m.group(1), []).append(float(m.group(2)))
    return {
        name: {"n": len(t), "total_s": round(sum(t), 1), "mean_s": round(sum(t) / len(t), 3), "max_s": round(max(t), 2)}
        for name, t in sorted(times.items(), key=lambda kv: -sum(kv[1]))
    }


def _event_row(res: dict[str, Any]) -> dict[str, Any]:
    view = res.get("view") or {}
    orders = view.get("orders", [])
    log_kinds = [e["kind"] for e in view.get("market_log", [])]
    return {
        "event_id": res["event_id"],
        "status": view.get("status"),
        "error": res.get("error"),
        "client_s": None if res.get("client_s") is None else round(res["client_s"], 3),
        "post_s": None if res.get("post_s") is None else round(res["post_s"], 3),
        "seconds_to_all_confirmed": view.get("seconds_to_all_confirmed"),
        "providers": len({o["provider_id"] for o in orders if o["state"] == "ACCEPTED"}),
        "orders_accepted": sum(1 for o in orders if o["state"] == "ACCEPTED"),
        "orders_failed": log_kinds.count("order_failed"),
        "reprocurements": log_kinds.count("reprocure"),
        "searches": log_kinds.count("search"),
        "offers_seen": log_kinds.count("offer_seen"),
        "covered_fraction": view.get("covered_fraction"),
        "target_kw": [s["target_kw"] for s in view.get("slots", [])],
        "phases": _phases(view) if view else None,
        "failures": [e["message"][:160] for e in view.get("market_log", []) if e["kind"] == "order_failed"][:4],
        "timeline_s": res.get("timeline"),
    }


def _stats(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    s = sorted(values)
    return {
        "n": len(s),
        "p50": round(statistics.median(s), 3),
        "p99": round(s[min(len(s) - 1, math.ceil(0.99 * len(s)) - 1)], 3),  # nearest rank: the max below 100
        "max": round(s[-1], 3),
    }


async def _drive(api: str, api_key: str, events: list[dict[str, Any]], concurrency: int) -> list[dict[str, Any]]:
    import aiohttp

    headers = {"Authorization": f"Bearer {api_key}"}
    gate = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as client:

        async def one(ev: dict[str, Any]) -> dict[str, Any]:
            async with gate:
                return await _one_event(client, api, headers, ev)

        return list(await asyncio.gather(*(one(ev) for ev in events)))


def _warm_up(api: str, api_key: str, tag: str) -> list[dict[str, Any]]:
    """Two events priced below every offer (cap £1/MWh): every process, the registry caches, the worker's
    imports and a whole search round warm up, and no capacity is consumed. Reported, not counted."""
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=1, hours=2)
    events = [
        {
            "event_id": f"warmup-{tag}-{i}",
            "kind": "DR_EVENT",
            "price_cap_gbp_per_mwh": 1.0,
            "intervals": [
                {"start": start.isoformat(), "end": (start + timedelta(minutes=30)).isoformat(), "target_kw": 500}
            ],
        }
        for i in range(2)
    ]
    out = [asyncio.run(_drive(api, api_key, [ev], 1))[0] for ev in events]
    return [
        {"event_id": r["event_id"], "status": (r.get("view") or {}).get("status"), "client_s": r.get("client_s")}
        for r in out
    ]


def run_network_size(n_providers: int, args: argparse.Namespace, server_url: str) -> dict[str, Any]:
    """One network of `n_providers` (real processes), its warm-up, then the events."""
    import psycopg

    from bench.load import rss_mb
    from bpp.catalog import example_config
    from flexmarket.runner import prepare_network
    from kernel.config import reset_settings
    from kernel.db import create_database, drop_database, libpq_url
    from kernel.embedded import free_port_range

    platforms = max(1, math.ceil(n_providers / args.providers_per_platform))
    db_url = create_database(server_url, f"fm_procbench{n_providers}")
    home = Path(tempfile.mkdtemp(prefix=f"fm-procbench-{n_providers}-"))
    os.environ.update(
        DATABASE_URL=db_url,
        FLEXMARKET_HOME=str(home),
        FLEXMARKET_CELERY_QUEUE=f"procbench-{uuid.uuid4().hex[:6]}",
        FLEXMARKET_MESSAGE_TTL_S=str(args.ttl),
        FLEXMARKET_GRID_SIGNAL_SOURCE="none",
    )
    reset_settings()
    config = example_config(n_providers, platforms=platforms)
    providers_file = home / "bench-providers.json"
    providers_file.write_text(json.dumps(config, indent=2))
    events = plan_events(config, args.events, tag=f"{n_providers}p-{uuid.uuid4().hex[:6]}")
    net = prepare_network(home=home, base_port=free_port_range(5), providers=n_providers, providers_file=providers_file)
    load_before = os.getloadavg()
    try:
        t_start = time.perf_counter()
        net.start(timeout=180)
        start_s = time.perf_counter() - t_start
        api = net.manifest["participants"]["bap"]["api"]
        key = net.manifest["participants"]["bap"]["api_keys"]["operator"]
        warm = _warm_up(api, key, uuid.uuid4().hex[:6])
        rss_start = rss_mb(net)
        t0 = time.perf_counter()
        results = asyncio.run(_drive(api, key, events, args.concurrency))
        wall = time.perf_counter() - t0
        rss_end = rss_mb(net)
        with psycopg.connect(libpq_url(db_url), autocommit=True) as conn:
            for r in results:
                if r.get("view"):
                    r["timeline"] = timeline(conn, r["view"])
    finally:
        net.stop()
        drop_database(server_url, db_url)
    tasks = worker_tasks(Path(net.manifest["logs"]) / "worker.log")
    rows = [_event_row(r) for r in results]
    statuses = [r["status"] for r in rows]
    confirmed = [r for r in rows if r["client_s"] is not None and r["status"] in ("covered", "partially_covered")]
    answered = [r for r in confirmed if r["orders_failed"] == 0]
    out = {
        "providers": n_providers,
        "platforms": platforms,
        "events": len(rows),
        "network_start_s": round(start_s, 1),
        "warmup": warm,
        "wall_s": round(wall, 1),
        "counts": {
            **{k: statuses.count(k) for k in ("covered", "partially_covered", "failed")},
            "other": {str(k): statuses.count(k) for k in set(statuses) - {"covered", "partially_covered", "failed"}},
            "timeout_or_error": sum(1 for r in rows if r["error"]),
        },
        "client_s": _stats([r["client_s"] for r in confirmed]),
        "seconds_to_all_confirmed": _stats([r["seconds_to_all_confirmed"] for r in confirmed]),
        "first_round_only": {
            "note": "events whose orders were all confirmed at the first choice (no refusal, no re-procurement)",
            "client_s": _stats([r["client_s"] for r in answered]),
            "seconds_to_all_confirmed": _stats([r["seconds_to_all_confirmed"] for r in answered]),
        },
        "phases_p50_s": {
            k: _stats([r["phases"][k] for r in confirmed if r["phases"] and r["phases"][k] is not None])["p50"]
            for k in ("to_search_s", "search_to_choice_s", "choice_to_final_s")
        },
        "worker_tasks": tasks,
        "timeline_p50_s_first_round_only": {
            k: _stats([r["timeline_s"][k] for r in answered if k in (r["timeline_s"] or {})])["p50"]
            for k in TIMELINE_STEPS
        },
        "providers_per_event": _stats([float(r["providers"]) for r in confirmed]),
        "orders_failed_total": sum(r["orders_failed"] for r in rows),
        "events_with_reprocurement": sum(1 for r in rows if r["reprocurements"]),
        "rss_mb": {"start": rss_start, "end": rss_end},
        "loadavg": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in os.getloadavg()]},
        "per_event": rows,
    }
    p99 = out["seconds_to_all_confirmed"]["p99"]
    if n_providers >= 50:
        out["goal_p99_under_5s"] = {
            "met": p99 is not None and p99 < 5.0 and out["client_s"]["p99"] < 5.0,
            "met_first_round_only": (out["first_round_only"]["client_s"]["p99"] or 1e9) < 5.0,
        }
    print(json.dumps({k: v for k, v in out.items() if k != "per_event"}), file=sys.stderr)
    return out


def run_e2e(args: argparse.Namespace) -> dict[str, Any]:
    from kernel.embedded import ensure_services

    server_url = ensure_services().database_url
    return {
        "setup": {
            "catalog": "bpp.catalog.example_config: static offers, evening 16:00–20:00 tomorrow (max 600–1200 kW, "
            "min 100 kW, £150–225/MWh), morning 06:00–09:00 the day after (300–600 kW, £110–140/MWh)",
            "events": f"{args.events} DR_EVENTs per size via POST /api/v1/grid-events (operator key), 1–2 "
            "half-hours each, peak 1,300–2,000 kW evening / 700–1,050 kW morning; plus 2 warm-up events "
            "priced below every offer (not counted)",
            "sending": "sequential (one event at a time)"
            if args.concurrency == 1
            else f"up to {args.concurrency} at once",
            "client_observed": "POST until a GET shows a final status with every order it counts on ACCEPTED "
            f"(polled every {POLL_S:g} s)",
            "message_ttl_s": args.ttl,
            "providers_per_platform": args.providers_per_platform,
            "choice": "engine's MILP: mip_rel_gap 1e-3, 5 s time limit (bap/procurement_engine.py)",
            "processes": "registry, gateway, BAP, BPP (every platform in one process), ledger, one Celery worker "
            "(every queue, concurrency 16, beat), PostgreSQL and Redis",
        },
        "sizes": [run_network_size(n, args, server_url) for n in args.providers],
    }


# -- main -----------------------------------------------------------------------------------------


def _machine(load_before: tuple[float, float, float]) -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "shared": "the 2 cores are shared with other work (other sessions' tests and helpers)",
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "highs": f"{highspy.Highs().version()}",
        "numpy": np.__version__,
    }


def _write_milp(result: dict[str, Any], load_before: tuple[float, float, float], t0: float) -> dict[str, Any]:
    milp_only = {
        "benchmark": "procurement: the exact choice (MILP) vs its proven bound, in-merit stack and FCFS",
        "generated_utc": result["generated_utc"],
        "command": result["command"],
        "milp": result["milp"],
        "machine": _machine(load_before),
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    MILP_OUT.write_text(json.dumps(milp_only, indent=2) + "\n", encoding="utf-8")
    return milp_only


def _milp_only(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """The MILP half alone; ``procurement.json`` keeps its e2e half, and says when its MILP half was redone."""
    load_before, t0 = os.getloadavg(), time.perf_counter()
    result: dict[str, Any] = {
        "generated_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "milp": run_milp([int(n) for n in args.sizes.split(",")], args.repeats, args.seeds),
    }
    milp_only = _write_milp(result, load_before, t0)
    if OUT.exists():
        both = json.loads(OUT.read_text(encoding="utf-8"))
        both["milp"] = result["milp"]
        both["milp_regenerated"] = {k: milp_only[k] for k in ("generated_utc", "command", "machine", "wall_s")}
        OUT.write_text(json.dumps(both, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(milp_only, indent=2))
    return milp_only


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--sizes", default="50,500,2000", help="MILP: comma-separated offer counts")
    ap.add_argument("--repeats", type=int, default=3, help="MILP: solves per size (the median is reported)")
    ap.add_argument("--seeds", type=int, default=20, help="MILP: other instances per size (seeds 0, 1, …), once each")
    ap.add_argument("--providers", default="10,50", help="e2e: comma-separated network sizes")
    ap.add_argument("--events", type=int, default=20, help="e2e: events per network size")
    ap.add_argument("--ttl", type=int, default=10, help="e2e: FLEXMARKET_MESSAGE_TTL_S, seconds")
    ap.add_argument("--concurrency", type=int, default=1, help="e2e: events in flight at once (1: sequential)")
    ap.add_argument("--providers-per-platform", type=int, default=10, help="e2e: providers per BPP platform")
    ap.add_argument("--skip-milp", action="store_true")
    ap.add_argument("--skip-e2e", action="store_true")
    ap.add_argument(
        "--milp-only",
        action="store_true",
        help=f"the MILP half alone: writes {MILP_OUT.name} and the milp section of {OUT.name}, keeping its e2e",
    )
    ap.add_argument("--quick", action="store_true", help="smoke run: 50 offers once; 10 providers, 5 events")
    ap.add_argument("--out", default=None, help=f"default {OUT.relative_to(ROOT)} (--quick: no file)")
    args = ap.parse_args(argv)
    if args.milp_only:
        return _milp_only(args, " ".join(sys.argv if argv is None else ["bench/procurement.py", *argv]))
    if args.quick:
        args.sizes, args.repeats, args.seeds, args.providers, args.events = "50", 1, 2, "10", 5
    args.providers = [int(n) for n in str(args.providers).split(",")]
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    result: dict[str, Any] = {
        "benchmark": "procurement: the exact choice (MILP) vs its proven bound, in-merit stack and FCFS; "
        "event → all orders confirmed on real processes",
        "generated_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv if argv is None else ["bench/procurement.py", *argv]),
    }
    if not args.skip_milp:
        result["milp"] = run_milp([int(n) for n in args.sizes.split(",")], args.repeats, args.seeds)
        if not args.quick:  # the MILP half alone, as it was written before the e2e half existed
            _write_milp(result, load_before, t0)
    result["e2e"] = "skipped (--skip-e2e)" if args.skip_e2e else run_e2e(args)
    result["machine"] = _machine(load_before)
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    out = args.out or (None if args.quick else OUT)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
