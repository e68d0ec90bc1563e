from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from bap.client import BapClient
from flexmarket.runner import Network, prepare_network
from kernel import db
from kernel.config import environment
from kernel.db import libpq_url
from kernel.embedded import free_port_range


def rows(db_url: str, sql: str, *params: Any) -> list[tuple]:
    with psycopg.connect(libpq_url(db_url)) as conn:
        return list(conn.execute(sql, params).fetchall())


def scalar(db_url: str, sql: str, *params: Any) -> Any:
    return rows(db_url, sql, *params)[0][0]


def eventually(check: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout:g} s (last: {result!r})")
        time.sleep(interval)


def bap_key(net: Network, role: str = "aggregator") -> str:
    """The BAP client API key `flexmarket up` wrote into the manifest for `role` (operator, aggregator, viewer)."""
    return str(net.manifest["participants"]["bap"]["api_keys"][role])


def bap_headers(net: Network, role: str = "aggregator") -> dict[str, str]:
    return {"Authorization": f"Bearer {bap_key(net, role)}"}


def bap_client(net: Network, role: str = "aggregator") -> BapClient:
    return BapClient(net.url("bap"), bap_key(net, role))


def tomorrow_window(start_h: int = 16, hours: int = 2) -> tuple[datetime, datetime]:
    day = (datetime.now(UTC) + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return day + timedelta(hours=start_h), day + timedelta(hours=start_h + hours)


@contextmanager
def own_network(
    pg_server_url: str,
    redis_url: str,
    home: Path,
    *,
    prefix: str,
    providers_config: dict[str, Any],
    env: Mapping[str, str] | None = None,
    extra_env: dict[str, str] | None = None,
) -> Iterator[Network]:
    """A started network of its own — a new database on the server (dropped afterwards), its own Celery queue
    and home — for tests that stop its processes or run it on other settings than the shared one."""
    url = db.create_database(pg_server_url, prefix)
    providers_file = home / "providers.json"
    providers_file.write_text(json.dumps(providers_config))
    values = {
        "DATABASE_URL": url,
        "REDIS_URL": redis_url,
        "FLEXMARKET_CELERY_QUEUE": f"{prefix}-{uuid.uuid4().hex[:8]}",
        "FLEXMARKET_HOME": str(home),
        **(env or {}),
    }
    db.dispose_engines()
    try:
        with environment(values):
            net = prepare_network(
                home=home,
                base_port=free_port_range(5),
                providers_file=providers_file,
                worker_concurrency=4,
                extra_env={"FLEXMARKET_SWEEP_INTERVAL_S": "1", "FLEXMARKET_LOG_LEVEL": "INFO", **(extra_env or {})},
            )
            try:
                net.start(timeout=90)
                yield net
            finally:
                net.stop()
    finally:
        db.dispose_engines()
        db.drop_database(pg_server_url, url)
