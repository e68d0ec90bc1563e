from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from kernel.config import reset_settings
from kernel.db import libpq_url


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set these environment variables (and reload the settings) for the block, then put back what was there."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    reset_settings()
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        reset_settings()


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


def tomorrow_window(start_h: int = 16, hours: int = 2) -> tuple[datetime, datetime]:
    day = (datetime.now(UTC) + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return day + timedelta(hours=start_h), day + timedelta(hours=start_h + hours)
