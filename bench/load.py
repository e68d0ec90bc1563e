"""Load benchmark: C aggregators searching through the BAP's client API for T seconds against the network
`flexmarket up --providers 10` starts (real processes on loopback, PostgreSQL, Redis, one Celery worker).

Modes:
  closed loop (default)  C aggregators, each posting its next search as soon as the last one is answered
                         (after Retry-After when it was throttled);
  open loop (--rate R)   searches offered at R per second whatever the answers (C bounds the requests open);
  --find-max             open loop at rising rates (--rates), each for T seconds: the highest rate at which
                         no search is throttled or fails and every accepted one has every provider's catalog
                         within --complete-within seconds.

Reports (JSON on stdout and bench/results/load.json): searches accepted, errors (timeouts, 5xx, other),
throttled (429), client-API latency p50/p99, the fraction of accepted searches that received every
provider's catalog and how long after acceptance (and after the load ended), Celery queue depth over time
(Redis LLEN of every queue), RSS of every process at start and end and every 5 s between (/proc), and the
machine's load. Before measuring, a warm-up of --warmup seconds at the full concurrency (its figures are kept
under "warmup"): RSS growth is measured from a network that has already served C concurrent clients.

Goals on 2 cores: 0 errors; every accepted search complete within 30 s of the load ending; RSS growth ≤ 10 %;
sustained offered rate ≥ 20 searches/s with every search complete within 10 s.

    DATABASE_URL=… REDIS_URL=… python bench/load.py [-C 200] [-T 60] [--rate R | --find-max]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flexmarket.runner import Network, prepare_network  # noqa: E402
from kernel.celery_app import all_queues  # noqa: E402
from kernel.config import get_settings, reset_settings  # noqa: E402
from kernel.db import create_database, drop_database, libpq_url  # noqa: E402
from kernel.embedded import ensure_services, free_port_range  # noqa: E402

JSON = {"Content-Type": "application/json"}


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[max(0, min(len(s) - 1, round(q / 100 * (len(s) - 1))))]


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _tree(pid: int) -> list[int]:
    """pid and its descendants (a Celery worker's pool processes)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in (task / "children").read_text().split()]
    return out


def rss_mb(net: Network) -> dict[str, float]:
    """RSS of every process of the network (a worker with its pool children), MB."""
    out = {}
    for name, proc in net.processes.items():
        if proc.popen is not None and proc.alive():
            out[name] = round(sum(_rss_kb(p) for p in _tree(proc.popen.pid)) / 1024, 1)
    return out


class Load:
    """The aggregators: post searches, record each answer."""

    def __init__(self, api: str, start: datetime, end: datetime, timeout_s: float, *, api_key: str) -> None:
        self.api = api
        self.headers = {**JSON, "Authorization": f"Bearer {api_key}"}  # the manifest's aggregator key
        self.body = {
            "window_start": start.isoformat(),
            "window_end": end.isoformat(),
            "power_kw": 500,
            "region": "GB-R13",
        }
        self.payload = json.dumps(self.body).encode()
        self.timeout_s = timeout_s
        self.accepted: list[str] = []
        self.latency_ms: list[float] = []
        self.throttled = 0
        self.errors: dict[str, int] = {"timeout": 0, "5xx": 0, "other": 0}
        self.error_kinds: Counter[str] = Counter()  # "other" by exception class or HTTP status

    def session(self, concurrency: int) -> aiohttp.ClientSession:
        # aiohttp, not httpx: with hundreds of requests open, httpx's pool cost the load generator (on the same
        # two cores) more CPU than the BAP spent answering.
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency),
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
        )

    async def one(self, client: aiohttp.ClientSession) -> float:
        """One search; the seconds to wait before the next (Retry-After when throttled)."""
        t0 = time.perf_counter()
        try:
            async with client.post(f"{self.api}/search", data=self.payload, headers=self.headers) as r:
                status, body = r.status, await r.read()
                retry_after = r.headers.get("Retry-After", "1")
        except TimeoutError:
            self.errors["timeout"] += 1
            return 0.0
        except aiohttp.ClientError as exc:
            self.errors["other"] += 1
            self.error_kinds[type(exc).__name__] += 1
            return 0.1
        self.latency_ms.append((time.perf_counter() - t0) * 1000)
        if status == 202:
            self.accepted.append(json.loads(body)["transaction_id"])
            return 0.0
        if status == 429:
            self.throttled += 1
            return float(retry_after)
        self.errors["5xx" if status >= 500 else "other"] += 1
        self.error_kinds[f"HTTP {status}"] += 1
        return 0.1

    async def closed_loop(self, concurrency: int, duration_s: float) -> None:
        stop = time.monotonic() + duration_s
        async with self.session(concurrency) as client:

            async def aggregator() -> None:
                await asyncio.sleep(random.uniform(0, 1))  # not all at the same instant
                while time.monotonic() < stop:
                    wait = await self.one(client)
                    if wait:
                        await asyncio.sleep(min(wait, max(0.0, stop - time.monotonic())))

            await asyncio.gather(*(aggregator() for _ in range(concurrency)))

    async def open_loop(self, rate: float, concurrency: int, duration_s: float) -> int:
        """Offer `rate` searches/s; answers the number not sent because `concurrency` requests were open."""
        skipped, open_requests = 0, 0
        tasks: set[asyncio.Task[None]] = set()
        async with self.session(concurrency) as client:

            async def fire() -> None:
                nonlocal open_requests
                open_requests += 1
                try:
                    await self.one(client)
                finally:
                    open_requests -= 1

            t0 = time.monotonic()
            n = 0
            while (now := time.monotonic()) < t0 + duration_s:
                due = t0 + n / rate
                if due > now:
                    await asyncio.sleep(due - now)
                n += 1
                if open_requests >= concurrency:
                    skipped += 1
                    continue
                task = asyncio.get_running_loop().create_task(fire())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks)
        return skipped


class Watch:
    """Queue depth (Redis LLEN of every Celery queue) sampled once a second, and every process's RSS every
    RSS_EVERY_S, while the load runs (the RSS series shows whether memory plateaus or keeps growing)."""

    RSS_EVERY_S = 5.0

    def __init__(self, redis_url: str, net: Network) -> None:
        self.r = redis.Redis.from_url(redis_url)
        self.net = net
        self.queues = all_queues()
        self.samples: list[dict[str, Any]] = []
        self.rss_series: list[dict[str, Any]] = []
        self.t0 = time.monotonic()
        self._next_rss = self.t0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            pipe = self.r.pipeline()
            for q in self.queues:
                pipe.llen(q)
            depths = await asyncio.to_thread(pipe.execute)
            sample: dict[str, Any] = {"t_s": round(time.monotonic() - self.t0, 1)}
            sample.update({q: int(d) for q, d in zip(self.queues, depths, strict=True)})
            self.samples.append(sample)
            if time.monotonic() >= self._next_rss:
                self._next_rss += self.RSS_EVERY_S
                rss = await asyncio.to_thread(rss_mb, self.net)
                self.rss_series.append({"t_s": sample["t_s"], **rss})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    def summary(self) -> dict[str, Any]:
        total = [sum(v for k, v in s.items() if k != "t_s") for s in self.samples]
        return {"max_total": max(total, default=0), "last_total": total[-1] if total else 0, "series": self.samples}


def completion(conn: psycopg.Connection, txs: list[str], providers: int) -> dict[str, tuple[float, float | None]]:
    """Per transaction: (accepted at, when its last provider's catalog arrived or None), epoch seconds from
    PostgreSQL's clock."""
    out: dict[str, tuple[float, float | None]] = {}
    for i in range(0, len(txs), 2000):
        chunk = txs[i : i + 2000]
        for tx, created, n, last in conn.execute(
            "select t.id, extract(epoch from t.created_at), "
            "(select count(distinct o.provider_id) from bap.catalog_offers o where o.transaction_id = t.id), "
            "(select extract(epoch from max(i.received_at)) from bap.inbox i "
            " where i.transaction_id = t.id and i.action = 'on_search') "
            "from bap.transactions t where t.id = any(%s)",
            (chunk,),
        ).fetchall():
            out[tx] = (float(created), float(last) if n >= providers and last is not None else None)
    return out


def db_now(conn: psycopg.Connection) -> float:
    return float(conn.execute("select extract(epoch from clock_timestamp())").fetchone()[0])  # type: ignore[index]


def run_phase(
    net: Network,
    conn: psycopg.Connection,
    *,
    providers: int,
    concurrency: int,
    duration_s: float,
    rate: float | None,
    settle_s: float,
    timeout_s: float,
) -> dict[str, Any]:
    day = (datetime.now(UTC) + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    load = Load(
        f"{net.url('bap')}/api/v1",
        day + timedelta(hours=16),
        day + timedelta(hours=18),
        timeout_s,
        api_key=net.manifest["participants"]["bap"]["api_keys"]["aggregator"],
    )
    watch = Watch(net.manifest["redis_url"], net)
    rss_start = rss_mb(net)
    load_before = os.getloadavg()

    async def go() -> int:
        stop = asyncio.Event()
        watcher = asyncio.get_running_loop().create_task(watch.run(stop))
        skipped = 0
        if rate is None:
            await load.closed_loop(concurrency, duration_s)
        else:
            skipped = await load.open_loop(rate, concurrency, duration_s)
        load_end[0] = db_now(conn)
        # after the load: until every accepted search is complete, or settle_s
        deadline = time.monotonic() + settle_s
        while time.monotonic() < deadline:
            done = completion(conn, load.accepted, providers)
            if all(v[1] is not None for v in done.values()):
                break
            await asyncio.sleep(1.0)
        stop.set()
        await watcher
        return skipped

    load_end = [0.0]
    t0 = time.monotonic()
    skipped = asyncio.run(go())
    wall = time.monotonic() - t0
    done = completion(conn, load.accepted, providers)
    after_accept = [v[1] - v[0] for v in done.values() if v[1] is not None]
    after_end = [max(0.0, v[1] - load_end[0]) for v in done.values() if v[1] is not None]
    n = len(load.accepted)
    complete = len(after_accept)
    rss_end = rss_mb(net)
    growth = {k: round((rss_end.get(k, 0) - v) / v * 100, 1) for k, v in rss_start.items() if v}
    errors = sum(load.errors.values())
    return {
        "mode": "closed loop" if rate is None else "open loop",
        "offered_rate_per_s": rate,
        "concurrency": concurrency,
        "duration_s": duration_s,
        "accepted": n,
        "accepted_per_s": round(n / duration_s, 1),
        "errors": load.errors,
        "error_kinds": dict(load.error_kinds),
        "throttled_429": load.throttled,
        "not_sent_concurrency_bound": skipped,
        "client_api_ms": {
            "p50": round(pct(load.latency_ms, 50) or 0, 1),
            "p99": round(pct(load.latency_ms, 99) or 0, 1),
            "n": len(load.latency_ms),
        },
        "complete": {
            "fraction": round(complete / n, 4) if n else None,
            "fraction_within_10s_of_acceptance": round(sum(1 for s in after_accept if s <= 10) / n, 4) if n else None,
            "s_after_acceptance": {
                "p50": round(pct(after_accept, 50) or 0, 2),
                "p99": round(pct(after_accept, 99) or 0, 2),
                "max": round(max(after_accept, default=0), 2),
            },
            "last_s_after_load_end": round(max(after_end, default=0), 2),
            "settle_waited_s": round(wall - duration_s, 1),
        },
        "celery_queue_depth": watch.summary(),
        "rss_mb": {"start": rss_start, "end": rss_end, "growth_pct": growth, "series": watch.rss_series},
        "loadavg": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in os.getloadavg()]},
        "goals": {
            "zero_errors": errors == 0,
            "all_complete_within_30s_of_load_end": n > 0 and complete == n and max(after_end, default=0) <= 30,
            "rss_growth_le_10pct": all(g <= 10 for g in growth.values()),
        },
        "sustained": n > 0 and errors == 0 and load.throttled == 0 and skipped == 0,
        "all_within_s": max(after_accept, default=0) if complete == n else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("-C", "--concurrency", type=int, default=200, help="aggregators (open loop: requests open)")
    ap.add_argument("-T", "--duration", type=float, default=60.0, help="seconds of load (per rate with --find-max)")
    ap.add_argument("--rate", type=float, default=None, help="open loop at this many searches/s")
    ap.add_argument("--find-max", action="store_true", help="open loop at rising --rates")
    ap.add_argument("--rates", default="10,15,20,25,30,40,50", help="rates --find-max steps through")
    ap.add_argument("--complete-within", type=float, default=10.0, help="--find-max criterion, seconds")
    ap.add_argument("--providers", type=int, default=10)
    ap.add_argument("--warmup", type=float, default=15.0, help="seconds of closed loop at -C before measuring")
    ap.add_argument("--settle", type=float, default=30.0, help="seconds to wait for completion after the load")
    ap.add_argument("--timeout", type=float, default=10.0, help="client-side request timeout, seconds")
    ap.add_argument("--base-port", type=int, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/load.json")
    args = ap.parse_args()

    urls = ensure_services()
    server = urls.database_url
    bench_url = create_database(server, "fm_load")
    home = Path(tempfile.mkdtemp(prefix="fm-load-"))
    os.environ.update(
        DATABASE_URL=bench_url, FLEXMARKET_HOME=str(home), FLEXMARKET_CELERY_QUEUE=f"load-{uuid.uuid4().hex[:6]}"
    )
    reset_settings()
    # what `flexmarket up --providers N` runs (its defaults: one worker for every queue, the ledger)
    net = prepare_network(home=home, base_port=args.base_port or free_port_range(5), providers=args.providers)
    machine = {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
    }
    settings = get_settings()
    phases: list[dict[str, Any]] = []
    try:
        net.start(timeout=120)
        conn = psycopg.connect(libpq_url(bench_url), autocommit=True)
        # warm-up: connections, registry caches, imports; then the full concurrency for --warmup seconds, so
        # that first-touch memory (a connection's buffers for each of C clients, allocator arenas) is not
        # counted as growth under load. Its own figures are kept in the result ("warmup").
        run_phase(
            net, conn, providers=args.providers, concurrency=2, duration_s=3, rate=None, settle_s=15, timeout_s=10
        )
        warmup = None
        if args.warmup > 0:
            warmup = run_phase(
                net,
                conn,
                providers=args.providers,
                concurrency=args.concurrency,
                duration_s=args.warmup,
                rate=None,
                settle_s=args.settle,
                timeout_s=args.timeout,
            )
            print(f"warm-up: {_line(warmup)}", file=sys.stderr)
        common = {
            "providers": args.providers,
            "concurrency": args.concurrency,
            "duration_s": args.duration,
            "settle_s": args.settle,
            "timeout_s": args.timeout,
        }
        if args.find_max:
            best = None
            for rate in [float(r) for r in args.rates.split(",")]:
                phase = run_phase(net, conn, rate=rate, **common)
                phases.append(phase)
                ok = phase["sustained"] and (phase["all_within_s"] or 1e9) <= args.complete_within
                print(f"rate {rate:g}/s: {'ok' if ok else 'not sustained'} — {_line(phase)}", file=sys.stderr)
                if not ok:
                    break
                best = rate
            headline: dict[str, Any] = {
                "max_sustained_rate_per_s": best,
                "criterion": f"no error, no 429, every search complete within {args.complete_within:g} s",
                "goal_ge_20_per_s": best is not None and best >= 20,
            }
        else:
            phase = run_phase(net, conn, rate=args.rate, **common)
            phases.append(phase)
            print(_line(phase), file=sys.stderr)
            headline = {"goals": phase["goals"]}
        result = {
            "benchmark": "load: aggregators searching through the BAP client API (flexmarket up, real processes)",
            "generated_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {**machine, "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
            "network": {
                "providers": args.providers,
                "bap_max_searches_in_flight": settings.bap_max_searches_in_flight,
                "rate_limit_per_s": settings.rate_limit_per_s,
                "rate_limit_burst": settings.rate_limit_burst,
            },
            "command": " ".join(sys.argv),
            **headline,
            "warmup": None if warmup is None else _brief(warmup),
            "phases": phases,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
        print(json.dumps({k: v for k, v in result.items() if k != "phases"} | {"phases": [_brief(p) for p in phases]}))
    finally:
        net.stop()
        drop_database(server, bench_url)


def _brief(p: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in p.items() if k != "celery_queue_depth"} | {
        "celery_queue_depth_max": p["celery_queue_depth"]["max_total"]
    }


def _line(p: dict[str, Any]) -> str:
    c = p["complete"]
    return (
        f"accepted {p['accepted']} ({p['accepted_per_s']}/s), errors {p['errors']}, 429 {p['throttled_429']}, "
        f"api p50/p99 {p['client_api_ms']['p50']}/{p['client_api_ms']['p99']} ms, complete {c['fraction']} "
        f"(p99 {c['s_after_acceptance']['p99']} s after acceptance, last {c['last_s_after_load_end']} s after the "
        f"load), queue max {p['celery_queue_depth']['max_total']}, rss growth {p['rss_mb']['growth_pct']}"
    )


if __name__ == "__main__":
    main()
