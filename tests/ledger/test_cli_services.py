"""Commands that need only PostgreSQL (`db upgrade`, `ledger …`, `registry …`) start no embedded Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "argv", [["ledger", "head"], ["db", "upgrade"], ["registry", "list"], ["ledger", "verify"]], ids=" ".join
)
def test_postgres_only_commands_start_no_redis(ledger_url: str, tmp_path: Path, argv: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(DATABASE_URL=ledger_url, FLEXMARKET_HOME=str(tmp_path / "home"), FLEXMARKET_LOG_JSON="false")
    t0 = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "flexmarket", *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    took = time.monotonic() - t0
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "redis" not in out.lower(), out
    assert "embedded" not in out, out  # nothing embedded was started: DATABASE_URL is set
    home = tmp_path / "home"
    assert not list(home.rglob("redis*")) if home.exists() else True
    assert took < 30, took
