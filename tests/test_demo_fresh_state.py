"""Each `flexmarket demo` runs on fresh state of its own: two in a row both settle every order they confirmed."""

from __future__ import annotations

import io
import json
from decimal import Decimal
from pathlib import Path

from rich.console import Console

from flexmarket.demo import run_demo
from kernel.config import environment


def test_two_demos_in_a_row_each_settle_only_their_own_orders(
    pg_server_url: str, redis_url: str, celery_queue: str, tmp_path: Path
) -> None:
    env = {
        "DATABASE_URL": pg_server_url,
        "REDIS_URL": redis_url,
        "FLEXMARKET_HOME": str(tmp_path / "home"),
        "FLEXMARKET_CELERY_QUEUE": celery_queue,
    }
    seen: list[set[str]] = []
    with environment(env):
        for n in (1, 2):
            out = tmp_path / f"run{n}"
            console = Console(file=io.StringIO(), width=200)
            code = run_demo(console, providers=3, target_kw=1500.0, base_port=None, out=out)
            text = console.file.getvalue()  # type: ignore[attr-defined]
            assert code == 0, text
            view = json.loads((out / "transaction.json").read_text())
            summary = json.loads((out / "settlement.json").read_text())
            accepted = {o["order_id"] for o in view["orders"] if o["state"] == "ACCEPTED"}
            assert accepted, text
            # the ledger holds exactly this demo's orders, and settled each provider's with energy delivered
            assert set(summary["ledger_orders"]) == accepted, (n, summary["ledger_orders"], accepted)
            providers = {o["provider_id"] for o in view["orders"] if o["state"] == "ACCEPTED"}
            assert {p["provider_id"] for p in summary["providers"]} == providers
            for p in summary["providers"]:
                assert Decimal(p["delivered_kwh"]) > 0, (n, p)
                assert p["statement_verified"], (n, p)
            assert summary["verify_ok"]
            seen.append(accepted)
    assert not seen[0] & seen[1]
