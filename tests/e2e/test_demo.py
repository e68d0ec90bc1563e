"""`flexmarket demo` at reduced size (3 data centres, 40 jobs each), twice with the same seed, on fresh state each.

While each run's network is still up, its invariants are recomputed from the participants' APIs — never read from
summary.json: money conserves per ledger, minted = outstanding + redeemed + expired per token series, every job
ends by its deadline and no critical job moves, every slot is covered or its shortfall reported, the energy paid
for per meter and period is at most what the meter shows was not consumed, and the chain verifies. Then
summary.json and the report's chart data must agree with those figures, the two runs must give the same summary
(ids and timestamps aside), and neither may see the other's orders.
"""

from __future__ import annotations

import io
import json
import re
from collections import defaultdict
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from flexmarket.demo import DemoOptions, DemoRun, run_demo
from flexmarket.demo_config import BATTERY_SITE, fleet
from flexmarket.demo_network import DemoNetwork
from flexmarket.report import chart_data
from kernel.config import environment
from tests.test_demo_report import check_report_in_chromium

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

VOLATILE = {"procurement_id", "order_id", "at", "timings_s", "head_hash", "verify_summary", "clock"}
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _stable(doc: Any) -> Any:
    """The summary without what differs between runs by nature: ids, wall-clock timings, the chain's hashes."""
    if isinstance(doc, dict):
        return {k: _stable(v) for k, v in doc.items() if k not in VOLATILE}
    if isinstance(doc, list):
        return [_stable(v) for v in doc]
    if isinstance(doc, str):
        return UUID.sub("<id>", doc)
    return doc


def _all_accounts(net: DemoNetwork) -> list[dict[str, Any]]:
    finance, after, out = net.ledger("finance"), None, []
    while True:
        page = finance.get("/accounts", limit=1000, **({"after": after} if after else {}))
        out += page["accounts"]
        after = page.get("next_after")
        if not after:
            return out


def _check_ledger(net: DemoNetwork, doc: dict[str, Any]) -> dict[str, Any]:
    """Recompute from the ledger's API; returns the per-provider figures summary.json must show."""
    finance = net.ledger("finance")
    verify = finance.get("/verify")
    assert verify["ok"], verify
    per_ledger: dict[str, int] = defaultdict(int)
    for a in _all_accounts(net):
        per_ledger[a["ledger"]] += int(a["credits_posted"]) - int(a["debits_posted"])
    assert per_ledger and all(v == 0 for v in per_ledger.values()), dict(per_ledger)  # double entry conserves

    for s in doc["tokens"]["series"]:
        inv = finance.get(f"/cft/series/{s['series_id']}")["provider_invariant"]
        assert inv["minted"] == inv["outstanding"] + inv["redeemed"] + inv["expired"], inv
        assert (s["minted"], s["redeemed"], s["outstanding"]) == (inv["minted"], inv["redeemed"], inv["outstanding"])

    figures: dict[str, dict[str, Any]] = {}
    paid_wh: dict[tuple[str, str], Fraction] = defaultdict(Fraction)
    not_consumed_wh: dict[tuple[str, str], Fraction] = {}
    orders = finance.get("/orders", limit=1000)
    for o in orders["orders"] if isinstance(orders, dict) else orders:
        summary = finance.get(f"/orders/{o['order_id']}")
        if not summary["runs"]:
            continue
        run = finance.get(f"/settlement/{o['order_id']}/{summary['runs'][-1]['run']}")
        lines = {k: int(v) for k, v in summary["runs"][-1]["lines_pence"].items()}
        row = figures.setdefault(summary["provider_id"], {"net_pence": 0, "delivered_wh": Fraction(0)})
        row["net_pence"] += lines.get("utilisation", 0) + lines.get("availability", 0) - lines.get("shortfall", 0)
        for p in run["result"]["periods"]:
            key = (summary["meter_id"], p["period"])
            paid_wh[key] += Fraction(p["payable_wh"])
            row["delivered_wh"] += Fraction(p["delivered_wh"])
            if p.get("metered_wh") is not None:
                not_consumed_wh[key] = max(Fraction(p["adjusted_baseline_wh"]) - Fraction(p["metered_wh"]), Fraction(0))
    assert figures, "the ledger settled nothing"
    for key, wh in paid_wh.items():  # Σ paid volume ≤ metered delivery, per meter and period
        assert wh <= not_consumed_wh[key] + Fraction(1, 1000), (key, wh, not_consumed_wh[key])
    return figures


def _check_procurement(net: DemoNetwork, run: DemoRun, doc: dict[str, Any]) -> None:
    view = net.bap("viewer").get(f"/procurements/{run.procurement_id}")
    assert view["status"] == "settled", view["status_reason"]
    assert view["slots"] == doc["procurement"]["slots"]
    for s in view["slots"]:  # covered, or the shortfall is reported
        assert s["covered_kw"] >= s["target_kw"] - 0.1 or view["shortfall_kw"] >= s["target_kw"] - s["covered_kw"] - 0.1
    kinds = [e["kind"] for e in view["market_log"]]
    assert "order_failed" in kinds, "the silent provider was never chosen and replaced"
    silent = [o for o in view["orders"] if o["provider_id"] == "dc-reading"]
    assert silent and all(o["state"] != "ACCEPTED" for o in silent)


def _check_schedules(net: DemoNetwork, run: DemoRun) -> None:
    """Deadlines met and critical jobs never moved, from each BPP's decision log of the plans it made."""
    for dc in [*fleet(run.options.providers), BATTERY_SITE]:
        for d in net.bpp(dc.provider_id).get("/decisions", limit=500):
            if not d.get("job_id"):
                continue
            deadline = d["details"]["deadline_utc"]
            assert datetime.fromisoformat(d["end_utc"]) <= datetime.fromisoformat(deadline), d
            if d["details"]["priority"] == "critical":
                assert d["deferral_min"] == 0 and d["action"] == "run_at_release", d


def _inspect(seen: list[dict[str, Any]]) -> Any:
    def inspect(net: DemoNetwork, run: DemoRun, doc: dict[str, Any]) -> None:
        figures = _check_ledger(net, doc)
        _check_procurement(net, run, doc)
        _check_schedules(net, run)
        summary = {p["provider_id"]: p for p in doc["settlement"]["providers"]}
        assert set(summary) == set(figures)
        for pid, f in figures.items():
            assert summary[pid]["net_pence"] == f["net_pence"], pid
            assert summary[pid]["delivered_kwh"] == pytest.approx(float(f["delivered_wh"] / 1000), abs=0.002)
        assert doc["settlement"]["payments_total_pence"] == sum(f["net_pence"] for f in figures.values())
        ledger_orders = net.ledger("finance").get("/orders", limit=1000)
        seen.append({"orders": {o["order_id"] for o in ledger_orders["orders"]}, "doc": doc})

    return inspect


def test_the_demo_replays_the_day_twice_with_the_same_figures(
    pg_server_url: str, redis_url: str, celery_queue: str, tmp_path: Path
) -> None:
    env = {
        "DATABASE_URL": pg_server_url,
        "REDIS_URL": redis_url,
        "FLEXMARKET_HOME": str(tmp_path / "home"),
        "FLEXMARKET_CELERY_QUEUE": celery_queue,
    }
    seen: list[dict[str, Any]] = []
    with environment(env):
        for n in (1, 2):
            out = tmp_path / f"run{n}"
            console = Console(file=io.StringIO(), width=80)
            options = DemoOptions(providers=3, jobs_per_site=40, seed=11, out=out, inspect=_inspect(seen))
            code = run_demo(console, options)
            text = console.file.getvalue()  # type: ignore[attr-defined]
            assert code == 0, text
            assert all(len(line) <= 80 for line in text.splitlines()), text
            doc = json.loads((out / "summary.json").read_text())
            assert doc == seen[-1]["doc"]
            html = (out / "report.html").read_text()
            embedded = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S)
            assert embedded and json.loads(embedded.group(1)) == json.loads(json.dumps(chart_data(doc)))
            for f in doc["files"]["statements"] + ["market.jsonl", "carbon.jsonl", "decisions.jsonl"]:
                assert (out / f).stat().st_size > 0, f
            if n == 1:  # the real run's report, drawn in headless chromium (skips with a message without it)
                check_report_in_chromium(doc, out / "report.html", "demo-report.png")
    assert not seen[0]["orders"] & seen[1]["orders"]  # fresh state: neither run saw the other's orders
    assert _stable(seen[0]["doc"]) == _stable(seen[1]["doc"])
