"""The demo's running network: the participants on one stepped simulated clock, the silent data centre's own BPP,
the embedded utility VTN, and typed HTTP access to each participant's API with the keys `flexmarket up` made.

Nothing here computes a figure: every call goes to a running participant over HTTP.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg

from flexmarket.demo_config import SILENT, network_providers, silent_providers
from flexmarket.runner import Network, PlatformsSubscribe, Process, own_bpp, prepare_network
from flexmarket.vtn import Vtn
from kernel import clock, db
from kernel.config import environment, get_settings
from kernel.db import libpq_url
from kernel.embedded import free_port_range

T = TypeVar("T")

#: the demo's transport timers: a message TTL short enough for the silent provider's replacement to be quick
DEMO_ENV = {
    "FLEXMARKET_MESSAGE_TTL_S": "5",
    "FLEXMARKET_REGISTRY_CACHE_TTL_S": "1",
    "FLEXMARKET_SWEEP_INTERVAL_S": "1",
    "FLEXMARKET_REDELIVER_AFTER_S": "2",
    "FLEXMARKET_OUTCOME_SYNC_INTERVAL_S": "30",
    "FLEXMARKET_GRID_SIGNAL_SOURCE": "replay",
    "FLEXMARKET_OPENADR_STATUS_POLL_S": "1",
    "FLEXMARKET_REPLAN_INTERVAL_S": "300",  # market seconds: every 5 real seconds at CLOCK_SPEED
}
#: simulated seconds per real second while the network starts: the beat's market-time schedules (settlement,
#: token purchases, series minting, re-plans) are set from it and so come every few real seconds all day; the
#: drive itself then runs at real-time speed between its jumps, so that no plan, offer or order depends on how
#: fast this machine is
CLOCK_SPEED = 60.0


class DemoError(RuntimeError):
    """A step of the demo did not happen; the message says which and what was seen."""


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    *,
    timeout_s: float,
    interval_s: float = 0.5,
    seen: Callable[[], object] | None = None,
) -> T:
    """`probe()` once it answers (truthy), polling; a DemoError after `timeout_s`, saying what `seen()` shows."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            raise DemoError(f"{what}: not within {timeout_s:g} s" + (f"; seen: {seen()}" if seen else ""))
        time.sleep(interval_s)


@dataclass
class Api:
    """One participant's HTTP API with one key."""

    base_url: str
    key: str | None = None

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    def get(self, path: str, **params: Any) -> Any:
        r = httpx.get(f"{self.base_url}{path}", params=params or None, headers=self._headers(), timeout=30)
        if r.status_code >= 400:
            raise DemoError(f"GET {path}: {r.status_code} {r.text[:300]}")
        kind = r.headers.get("content-type", "")
        return r.json() if "application/json" in kind else r.text

    def post(self, path: str, body: Any) -> Any:
        r = httpx.post(f"{self.base_url}{path}", json=body, headers=self._headers(), timeout=30)
        if r.status_code >= 400:
            raise DemoError(f"POST {path}: {r.status_code} {r.text[:300]}")
        return r.json()


@dataclass
class DemoNetwork:
    net: Network
    silent: Network
    vtn: Vtn
    clock_file: Path
    silent_db_url: str

    @property
    def manifest(self) -> dict[str, Any]:
        return self.net.manifest

    def bap(self, role: str = "operator") -> Api:
        return Api(f"{self.net.url('bap')}/api/v1", self.manifest["participants"]["bap"]["api_keys"][role])

    def ledger(self, role: str = "finance") -> Api:
        keys = self.manifest["participants"]["ledger"]["api_keys"]
        return Api(f"{self.net.url('ledger')}/api/v1", keys[role])

    def ledger_as_provider(self, provider_id: str) -> Api:
        keys = self.manifest["participants"]["ledger"]["api_keys"]["providers"]
        return Api(f"{self.net.url('ledger')}/api/v1", keys[provider_id])

    def bpp(self, slug: str) -> Api:
        return Api(f"{self.net.url('bpp')}/{slug}")

    def advance_to(self, when: datetime, *, speed: float | None = None) -> datetime:
        """Move the whole network's market clock forward to `when` (kernel/clock.py SteppedClock), optionally at
        a new speed."""
        started = clock.advance_to(self.clock_file, when, speed)
        time.sleep(clock.SteppedClock.RELOAD_S * 3)  # every process re-reads the file within RELOAD_S
        return started

    def plan_starts(self) -> dict[str, str | None]:
        """Where each hosted provider's current plan starts, as its BPP's admin API states it."""
        admin = Api(f"{self.net.url('bpp')}/admin", self.manifest["participants"]["bpp"]["admin_token"])
        out: dict[str, str | None] = {}
        for platform in self.manifest["participants"]["bpp"]["platforms"]:
            slug = platform["url"].rstrip("/").rsplit("/", 1)[-1]
            out.update({r["provider_id"]: r["plan_start_utc"] for r in admin.get(f"/{slug}/providers")})
        return out

    def freeze_silent_worker(self) -> None:
        _signal_group(self.silent.processes["worker"], signal.SIGSTOP)

    def silence(self) -> None:
        """The silent data centre's BPP stops answering: its web process is stopped for good; its worker thaws
        and sends what it had already accepted (the search), then has nothing more to send."""
        self.silent.processes["bpp"].stop()
        _signal_group(self.silent.processes["worker"], signal.SIGCONT)


def _signal_group(p: Process, sig: signal.Signals) -> None:
    if p.alive() and p.popen is not None:
        os.killpg(p.popen.pid, sig)


@contextmanager
def demo_network(
    home: Path, *, day_start: datetime, n_data_centres: int, seed: int, n_jobs: int, base_port: int | None
) -> Iterator[DemoNetwork]:
    """The network of one demo run, started; stopped (and the silent BPP's database dropped) afterwards."""
    clock_file = home / "clock.json"
    # An hour early and fast while the processes start (the beat's market-time tasks take their cadence from
    # this speed); the drive then moves it to the day's first hour at real-time speed (demo.py).
    clock.write_segment(clock_file, day_start - timedelta(hours=1), speed=CLOCK_SPEED)
    providers_file = home / "providers.json"
    config = network_providers(day_start.replace(hour=0), n_data_centres=n_data_centres, seed=seed, n_jobs=n_jobs)
    providers_file.write_text(json.dumps(config, indent=2))
    for name in ("openleadr", "aiohttp.access"):  # the VTN's chatter would scroll the progress bar away
        logging.getLogger(name).setLevel(logging.WARNING)
    vtn = Vtn(vtn_id="NESO-DFS-VTN")
    env = {**DEMO_ENV, "FLEXMARKET_CLOCK_FILE": str(clock_file), "FLEXMARKET_OPENADR_VTN_URL": vtn.url}
    server = get_settings().database_url
    assert server is not None
    silent_db = db.create_database(server, "fm_demo_silent")
    try:
        with environment(env):
            net = prepare_network(
                home=home,
                base_port=base_port or free_port_range(5),
                providers_file=providers_file,
                worker_concurrency=8,
                onboarding=PlatformsSubscribe(),
            )
            silent = _silent_bpp(net, home / "silent", silent_db, day_start)
            try:
                net.start(timeout=240)
                silent.start(timeout=240)
                yield DemoNetwork(net, silent, vtn, clock_file, silent_db)
            finally:
                if "worker" in silent.processes:
                    _signal_group(silent.processes["worker"], signal.SIGCONT)  # a frozen worker cannot stop
                silent.stop()
                net.stop()
    finally:
        vtn.close()
        db.drop_database(server, silent_db)


def _silent_bpp(net: Network, home: Path, url: str, day_start: datetime) -> Network:
    """The silent data centre's BPP and worker: a database, home and Celery queue of their own."""
    home.mkdir(parents=True, exist_ok=True)
    providers_file = home / "providers.json"
    providers_file.write_text(json.dumps(silent_providers(day_start.replace(hour=0)), indent=2))
    return own_bpp(net, home=home, database_url=url, providers_file=providers_file, name="demo-silent")


def silent_saw_search(net: DemoNetwork, transaction_id: str) -> bool:
    with psycopg.connect(libpq_url(net.silent_db_url)) as conn:
        row = conn.execute(
            "SELECT 1 FROM bpp.inbox WHERE action = 'search' AND transaction_id = %s", (transaction_id,)
        ).fetchone()
    return row is not None


__all__ = ["SILENT", "Api", "DemoError", "DemoNetwork", "demo_network", "silent_saw_search", "wait_for"]
