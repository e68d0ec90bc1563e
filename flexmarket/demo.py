"""`flexmarket demo`: a real GB grid peak day replayed end to end on the whole marketplace, with a report.

On fresh state (a database, Celery queue and home of its own) and one stepped simulated clock starting on the
replayed day (default 2023-01-24, a day NESO called Demand Flexibility Service events):

1. the data centres (flexmarket/demo_config.py) onboard themselves through the registry's `/subscribe` with their
   own keys; their agents plan on forecasts from the days before and publish offers and token series;
2. in the morning the orchestrator surveys the evening's flexibility and buys the Compute Flex Tokens its policy
   finds cheap (bap/token_policy.py);
3. at 14:00 the utility's VTN (an embedded openleadr server) sends a DR event over 17:00–19:00; the VEN hands it
   to the orchestrator, which procures through the gateway, redeeming tokens where that is cheaper; the silent
   data centre stops answering and is replaced;
4. after the window each metered site's delivery — its re-planned schedule as the BPP states it, plus meter
   noise — reaches the ledger signed by the meter operator; the ledger's own beat task settles (P415, supplier
   compensation); statements are fetched and the chain verified;
5. everything the participants' APIs say is written to `--out` (summary.json, report.html, statements, logs).

Every figure comes from a running participant's API (flexmarket/demo_collect.py); this module only drives.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from time import monotonic
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from flexmarket.demo_config import BATTERY_SITE, EVENT_HOURS, EVENT_START_HOUR, SILENT, fleet, subscriber_id
from flexmarket.demo_meter import post_metering, post_prices
from flexmarket.demo_network import DemoError, DemoNetwork, demo_network, silent_saw_search, wait_for
from flexmarket.vtn import dr_event
from kernel import clock, db
from kernel.config import environment, get_settings
from schemas.outcome import ledger_order_id

DEMO_DAY = date(2023, 1, 24)
HALF_HOUR = timedelta(minutes=30)
FINAL = ("covered", "partially_covered", "failed", "cancelled", "halted")
#: the event's shape over its half hours (the utility's request rises to the peak and eases off)
EVENT_SHAPE = (0.8, 1.0, 1.0, 0.8)
#: what the orchestrator's policy values a held token at when it weighs redeeming against buying spot (£/MWh)
TOKEN_VALUE_GBP_PER_MWH = 35.0


@dataclass(frozen=True)
class DemoOptions:
    day: date = DEMO_DAY
    providers: int = 5
    seed: int = 7
    jobs_per_site: int = 120
    out: Path | None = None
    base_port: int | None = None
    #: called with the live network, the run and the summary document before the network stops (the tests
    #: recompute the invariants from the participants' APIs there)
    inspect: Callable[[DemoNetwork, DemoRun, dict[str, Any]], None] | None = None


@dataclass
class DemoRun:
    """What the drive learnt along the way (ids, instants): the collector reads the figures from the APIs."""

    options: DemoOptions
    day_start: datetime
    event_id: str
    event_start: datetime
    event_end: datetime
    survey_tx: str = ""
    procurement_id: str = ""
    target_kw: list[float] = field(default_factory=list)
    schedules_morning: dict[str, Any] = field(default_factory=dict)
    schedules_event: dict[str, Any] = field(default_factory=dict)
    metered: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)


@contextmanager
def fresh_state(run_home: Path) -> Iterator[str]:
    """One demo's own state: a new database on the server of DATABASE_URL (dropped afterwards), `run_home` as
    FLEXMARKET_HOME (identities, keys, checkpoints, logs) and a Celery queue of its own, so a demo never sees
    an earlier one's orders, metering or tasks. Yields the database URL."""
    settings = get_settings()
    server = settings.database_url
    if not server:
        raise RuntimeError("the demo needs DATABASE_URL (the CLI's ensure_services() sets it)")
    url = db.create_database(server, "fm_demo")
    values = {
        "DATABASE_URL": url,
        "FLEXMARKET_HOME": str(run_home),
        "FLEXMARKET_CELERY_QUEUE": f"{settings.celery_queue}-demo-{uuid.uuid4().hex[:8]}",
    }
    db.dispose_engines()
    try:
        with environment(values):
            yield url
    finally:
        with environment({"DATABASE_URL": server}):
            db.drop_database(server, url)  # disposes this process's engines first


def run_demo(console: Console, options: DemoOptions) -> int:
    """One demo on fresh state of its own under $FLEXMARKET_HOME/demo/<run>/; outputs go to `options.out`
    (default: that folder). Returns the exit code: 0 when the run completed and the ledger verified."""
    from flexmarket.demo_console import print_summary

    run_name = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    run_home = (get_settings().home / "demo" / run_name).resolve()
    out = (options.out or run_home).resolve()
    out.mkdir(parents=True, exist_ok=True)
    day_start = datetime.combine(options.day, time(6, 0), tzinfo=UTC)
    event_start = day_start.replace(hour=EVENT_START_HOUR)
    run = DemoRun(
        options=options,
        day_start=day_start,
        event_id=f"dfs-{options.day:%Y%m%d}-evening",
        event_start=event_start,
        event_end=event_start + timedelta(hours=EVENT_HOURS),
    )
    fleet(options.providers)  # refuses a bad --providers before anything starts
    with fresh_state(run_home):
        run_home.mkdir(parents=True, exist_ok=True)
        with _progress(console) as progress:
            task = progress.add_task(
                "starting the network: sites onboard through /subscribe, agents plan", total=len(STEPS) + 1
            )
            with _network(run_home, day_start, options) as net:
                progress.advance(task)
                doc = _drive(net, run, out, progress, task)
    print_summary(console, doc)
    console.print(f"outputs: {out}")
    return 0 if doc["ledger"]["verified"] else 1


def _network(run_home: Path, day_start: datetime, options: DemoOptions) -> Any:
    return demo_network(
        run_home,
        day_start=day_start,
        n_data_centres=options.providers,
        seed=options.seed,
        n_jobs=options.jobs_per_site,
        base_port=options.base_port,
    )


def _drive(net: DemoNetwork, run: DemoRun, out: Path, progress: Progress, task: Any) -> dict[str, Any]:
    """The day's steps on the running network, then the outputs (written while the network still answers)."""
    from flexmarket.demo_collect import collect, write_outputs

    for description, step in STEPS:
        progress.update(task, description=description)
        started = monotonic()
        step(net, run)
        run.timings_s[step.__name__.strip("_")] = round(monotonic() - started, 1)
        progress.advance(task)
    progress.update(task, description="collecting every figure from the participants' APIs")
    doc = collect(net, run, out)
    write_outputs(doc, out)
    if run.options.inspect is not None:
        run.options.inspect(net, run, doc)
    return doc


def _progress(console: Console) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


# -- the day, step by step --------------------------------------------------------------------------------------


def _onboarded(net: DemoNetwork, run: DemoRun) -> None:
    """Every platform subscribed itself (the BPPs are healthy only after their /subscribe); the clock moves to
    06:00 and runs at real-time speed from there; every agent plans from 06:00; the policy the
    orchestrator runs under: no approval needed at this size, tokens bought at or below the spot median, a held
    token valued at TOKEN_VALUE_GBP_PER_MWH (about what it cost and a margin), so the procurement's choice
    redeems one only where spot flexibility is dearer."""
    net.advance_to(run.day_start, speed=1.0)
    _plans_start(net, run.day_start)
    _activate(net, _policy(buy_tokens=True), "the day: buy evening tokens at or below the spot median")


def _policy(*, buy_tokens: bool) -> dict[str, Any]:
    return {
        "objective": "cost",
        "approval": {"max_power_mw": 50, "max_cost_gbp": 100_000},
        "tokens": {
            "value_gbp_per_mwh": TOKEN_VALUE_GBP_PER_MWH,
            "buy_below_fraction_of_spot": 1.0 if buy_tokens else None,
            "max_tokens_per_series": 2,
        },
        "openadr": {"default_opt": "optIn", "min_covered_fraction": 0.9},
    }


def _activate(net: DemoNetwork, body: dict[str, Any], note: str) -> None:
    bap = net.bap("operator")
    created = bap.post("/policies", {"body": body, "note": note})
    bap.post(f"/policies/{created['version']}/activate", {"mode": "active"})


def _survey_and_buy_tokens(net: DemoNetwork, run: DemoRun) -> None:
    """The morning survey of the evening's flexibility (a national search), then the token purchases the policy
    makes on its own beat; the schedules each provider plans for the day are kept for the load-shift chart."""
    bap = net.bap("aggregator")
    window = (run.day_start.replace(hour=16), run.day_start.replace(hour=20))
    started = bap.post(
        "/search",
        {
            "window_start": window[0].isoformat(),
            "window_end": window[1].isoformat(),
            "power_kw": 1000,
            "national": True,
        },
    )
    run.survey_tx = started["transaction_id"]
    platforms = {subscriber_id(dc.provider_id) for dc in [*fleet(run.options.providers), BATTERY_SITE, SILENT]}

    def heard() -> set[str]:
        view = bap.get(f"/transactions/{run.survey_tx}")
        return {c["from"] for c in view["callbacks"] if c["action"] == "on_search"}

    wait_for(
        "every platform's answer to the morning survey",
        lambda: platforms <= heard(),
        timeout_s=60,
        seen=lambda: f"answers from {sorted(heard())} of {sorted(platforms)}",
    )
    run.schedules_morning = _schedules(net, run)
    series = [dc.provider_id for dc in fleet(run.options.providers) if dc.battery]

    def bought() -> list[dict[str, Any]] | None:
        held = net.bap("viewer").get("/tokens")["holdings"]
        return held if {h["provider_id"] for h in held} >= set(series) else None

    try:
        wait_for("the orchestrator's token purchases", bought, timeout_s=60, interval_s=1)
    except DemoError as exc:
        run.notes.append(f"{exc} — the procurement runs on spot offers only")


def _event(net: DemoNetwork, run: DemoRun) -> None:
    """14:00: the utility's DR event for the evening peak; the silent data centre goes quiet mid-procurement."""
    net.advance_to(run.day_start.replace(hour=14))
    _plans_start(net, run.day_start.replace(hour=14))
    _activate(net, _policy(buy_tokens=False), "the event is announced: redeem what is held, buy no more tokens")
    _signals_heard(net, since=run.day_start.replace(hour=13))
    view = net.bap("viewer").get(f"/transactions/{run.survey_tx}")
    run.target_kw = _event_target(view["offers"], run)
    net.freeze_silent_worker()
    # The event's status is the VTN's, on the market clock (openleadr would derive "completed" from the wall
    # clock for a 2023 event): announced hours ahead, it is "far".
    event = dr_event(run.event_id, run.event_start, [-kw for kw in run.target_kw], status="far", created=clock.now())
    net.vtn.send(event)

    def procurement() -> dict[str, Any] | None:
        listed = net.bap("viewer").get("/procurements", source="openadr")
        mine = [p for p in listed if str(p.get("event_id", "")).startswith(run.event_id)]
        if not mine:
            return None
        view: dict[str, Any] = net.bap("viewer").get(f"/procurements/{mine[0]['procurement_id']}")
        return view if view.get("transaction_ids") else None

    p = wait_for("the VEN's procurement for the event", procurement, timeout_s=60)
    run.procurement_id = p["procurement_id"]
    tx = p["transaction_ids"][0]
    wait_for("the silent data centre receiving the search", lambda: silent_saw_search(net, tx), timeout_s=30)
    net.silence()

    def final() -> dict[str, Any] | None:
        v = net.bap("viewer").get(f"/procurements/{run.procurement_id}")
        return v if v["status"] in FINAL else None

    view = wait_for("the procurement's final state", final, timeout_s=120, interval_s=1)
    if view["status"] not in ("covered", "partially_covered"):
        raise DemoError(f"the procurement ended {view['status']}: {view.get('status_reason')}")
    wait_for("the VEN's final opt to the VTN", lambda: net.vtn.opts(run.event_id), timeout_s=30)
    run.schedules_event = _schedules(net, run)  # re-planned with the orders imposed: what the sites will run


def _plans_start(net: DemoNetwork, anchor: datetime) -> None:
    """Every agent has re-planned from `anchor` (its BPP's beat re-plans from the market time, on the hour), so
    the offers and schedules read next are that hour's plans whatever this machine's speed."""
    want = anchor.isoformat()
    wait_for(
        f"every agent's plan from {anchor:%H:%M}",
        lambda: all(a is None or a == want for a in net.plan_starts().values()),
        timeout_s=60,
        seen=net.plan_starts,
    )


def _signals_heard(net: DemoNetwork, *, since: datetime) -> None:
    """The orchestrator has polled the replayed carbon and price feeds since the jump (it refuses new procurements
    on signals older than its policy allows)."""

    def fresh() -> bool:
        status = net.bap("viewer").get("/signals")
        latest = [v["latest_observed"] for v in status["signals"].values()]
        return not status["blocking_new_procurements"] and all(t and datetime.fromisoformat(t) >= since for t in latest)

    wait_for(
        "fresh grid signals at the orchestrator", fresh, timeout_s=30, seen=lambda: net.bap("viewer").get("/signals")
    )


def _event_target(offers: list[dict[str, Any]], run: DemoRun) -> list[float]:
    """The utility asks for about half of what the fleet registered over the evening, shaped to the peak
    (a DFS request sized to the capacity the aggregator registered), in whole 10 kW."""
    slots = [run.event_start + i * HALF_HOUR for i in range(len(EVENT_SHAPE))]
    fleet_ids = {dc.provider_id for dc in [*fleet(run.options.providers), BATTERY_SITE]}
    offered = []
    for t in slots:
        kw = sum(
            float(o["max_kw"] or o["available_kw"])
            for o in offers
            if o["provider_id"] in fleet_ids
            and datetime.fromisoformat(o["window_start"]) <= t < datetime.fromisoformat(o["window_end"])
        )
        offered.append(kw)
    if min(offered) <= 0:
        seen = sorted(
            (o["provider_id"], o["window_start"][11:16], o["window_end"][11:16], o["max_kw"] or o["available_kw"])
            for o in offers
        )
        raise DemoError(f"the fleet offers nothing in some evening half hour: {offered}; offers: {seen}")
    return [round(0.5 * shape * kw, -1) or 10.0 for shape, kw in zip(EVENT_SHAPE, offered, strict=True)]


def _deliver(net: DemoNetwork, run: DemoRun) -> None:
    """17:00: the window starts; the sites run their re-planned schedules (read once the orders were placed). After
    19:00 the meter operator's
    signed readings reach the ledger, whose beat task settles once the window has closed and metering is in."""
    net.advance_to(run.event_start)
    net.advance_to(run.event_end + timedelta(minutes=5))
    post_prices(net, run.day_start, run.event_end)
    run.metered = post_metering(net, run)
    orders = [o for o in _accepted(net, run)]

    def settled() -> bool:
        finance = net.ledger("finance")
        ids = [ledger_order_id(o["order_id"], o["settlement_method"]) for o in orders]
        return all(finance.get(f"/orders/{i}")["runs"] for i in ids)

    wait_for("the ledger's settlement of every order (run II)", settled, timeout_s=90, interval_s=1)

    def known_to_the_orchestrator() -> bool:  # the outcomes flow back: ledger → BPP → signed on_status → BAP
        return bool(net.bap("viewer").get(f"/procurements/{run.procurement_id}")["status"] == "settled")

    wait_for("the orchestrator hearing the settled outcomes", known_to_the_orchestrator, timeout_s=60, interval_s=1)


STEPS = [
    ("policy: the orchestrator's rules for the day", _onboarded),
    ("06:00 survey of the evening; token purchases the policy finds cheap", _survey_and_buy_tokens),
    ("14:00 DR event from the VTN → procurement (one provider goes silent)", _event),
    ("17:00–19:00 delivery, metering, the ledger's own settlement", _deliver),
]


# -- small reads the steps share ---------------------------------------------------------------------------------


def _schedules(net: DemoNetwork, run: DemoRun) -> dict[str, Any]:
    """Each provider's schedule as its BPP states it now (baseline vs planned kW, price and carbon per slot)."""
    out = {}
    for dc in [*fleet(run.options.providers), BATTERY_SITE]:
        out[dc.provider_id] = net.bpp(dc.provider_id).get(f"/providers/{dc.provider_id}/schedule")
    return out


def _accepted(net: DemoNetwork, run: DemoRun) -> list[dict[str, Any]]:
    view = net.bap("viewer").get(f"/procurements/{run.procurement_id}")
    return [o for o in view["orders"] if o["state"] in ("ACCEPTED", "IN-PROGRESS", "COMPLETED")]


__all__ = ["DEMO_DAY", "SILENT", "DemoOptions", "DemoRun", "fresh_state", "run_demo"]
