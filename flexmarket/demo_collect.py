"""The demo's outputs, every figure read from a running participant's API (nothing computed from the drive's own
guesses): the BAP's procurement, market and carbon logs; the BPPs' schedules and decision logs; the ledger's orders,
settlement runs, statements (verified offline with the ledger's public key), token series and chain verification.

`collect` builds `summary.json`'s document (flexmarket/demo_schema.py); `write_outputs` writes it with the report,
the statements and the logs, and prints the summary.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flexmarket.demo_config import BATTERY_SITE, SILENT, DataCentre, fleet, subscriber_id
from flexmarket.demo_schema import validate_summary
from flexmarket.report import write_report
from kernel import clock
from ledger.proofs import verify_statement
from schemas.outcome import ledger_order_id

if TYPE_CHECKING:
    from flexmarket.demo import DemoRun
    from flexmarket.demo_network import DemoNetwork

SCHEMA = "flexmarket-demo-summary/1"
RE_PROCUREMENT_KINDS = ("order_failed", "reprocure")


def _gbp(value: float | None) -> str:
    return f"{value or 0:.2f}"


def collect(net: DemoNetwork, run: DemoRun, out: Path) -> dict[str, Any]:
    view = net.bap("viewer").get(f"/procurements/{run.procurement_id}")
    providers = _providers(net, run)
    settlement = _settlement(net, view, out)
    head = net.ledger("finance").get("/chain/head")
    verify = net.ledger("finance").get("/verify")
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "date": run.options.day.isoformat(),
        "seed": run.options.seed,
        "clock": {**clock.describe(), "start": run.day_start.isoformat()},
        "providers": providers,
        "event": {
            "source": view["source"],
            "event_id": run.event_id,
            "window_start": run.event_start.isoformat(),
            "window_end": run.event_end.isoformat(),
            "opt": net.vtn.opts(run.event_id)[-1],
        },
        "procurement": _procurement(view, net.bap("viewer").get("/carbon-log", procurement_id=run.procurement_id)),
        "load_shift": _load_shift(run),
        "settlement": settlement,
        "tokens": _tokens(net, run),
        "ledger": {
            "height": head["height"],
            "head_hash": head["head_hash"],
            "verified": bool(verify["ok"]),
            "verify_summary": verify["summary"],
        },
        "files": {
            "report": "report.html",
            "statements": sorted(f for p in settlement["providers"] for f in (p["statement_csv"], p["statement_json"])),
            "decisions": "decisions.jsonl",
            "market": "market.jsonl",
            "carbon": "carbon.jsonl",
        },
        "notes": run.notes,
        "timings_s": run.timings_s,
    }
    _write_logs(net, run, out)
    return doc


def _providers(net: DemoNetwork, run: DemoRun) -> list[dict[str, Any]]:
    config = json.loads((Path(net.net.home) / "providers.json").read_text())
    meters = {pr["id"]: pr["sites"][0]["meter_id"] for p in config["platforms"] for pr in p["providers"]}
    meters[SILENT.provider_id] = "MTR-D099"

    def row(dc: DataCentre, kind: str, *, silent: bool = False) -> dict[str, Any]:
        return {
            "provider_id": dc.provider_id,
            "name": dc.name,
            "region": dc.region,
            "resource_type": kind,
            "has_battery": dc.battery or kind == "storage",
            "subscriber_id": subscriber_id(dc.provider_id),
            "meter_id": meters[dc.provider_id],
            "silent": silent,
        }

    return [
        *(row(dc, "compute") for dc in fleet(run.options.providers)),
        row(BATTERY_SITE, "storage"),
        row(SILENT, "compute", silent=True),
    ]


def _procurement(view: dict[str, Any], carbon: list[dict[str, Any]]) -> dict[str, Any]:
    """The procurement as the BAP states it; carbon avoided from its carbon log (expected at order, delivered at
    settlement, per order from the slot's intensity)."""
    log = view["market_log"]
    failed_kw = {o["order_ref"]: o["power_kw"] for o in view["orders"]}
    re_procurements = [
        {
            "at": e["market_at"],
            "reason": e["message"],
            "provider_id": e["provider_id"] or "-",
            "gap_kw": float(e["detail"].get("gap_kw", failed_kw.get(e.get("order_ref") or "", 0.0)) or 0.0),
        }
        for e in log
        if e["kind"] in RE_PROCUREMENT_KINDS and e["provider_id"]
    ]
    delivered_kg = sum(float(e["detail"].get("delivered_avoided_kg", 0)) for e in carbon)
    return {
        "procurement_id": view["procurement_id"],
        "status": view["status"],
        "policy_version": str(view["policy_version"]),
        "shortfall_kw": float(view["shortfall_kw"]),
        "slots": view["slots"],
        "orders": [
            {
                "order_id": o["order_id"] or o["order_ref"],
                "provider_id": o["provider_id"],
                "state": o["state"],
                "power_kw": o["power_kw"],
                "window_start": o["window_start"],
                "window_end": o["window_end"],
                "payment": "CFT" if o["settlement_method"] == "CFT" else "GBP",
                "price_gbp_per_mwh": o["price_gbp_per_mwh"],
                "cancelled_by": o.get("cancelled_by"),
                "reason": o.get("last_error") or o.get("cancellation_reason"),
            }
            for o in sorted(view["orders"], key=lambda o: (o["window_start"], o["provider_id"], -o["power_kw"]))
        ],
        "re_procurements": re_procurements,
        "expected_cost_gbp": _gbp(view["expected_cost_gbp"]),
        "settled_cost_gbp": _gbp(view["settled_cost_gbp"]),
        "expected_carbon_avoided_kg": float(view["expected_carbon_kg"] or 0),
        "delivered_carbon_avoided_kg": round(delivered_kg, 3),
    }


def _series(schedule: dict[str, Any], day_start: datetime) -> dict[str, Any]:
    """A provider's schedule over the replayed day's 24 hours from the morning plan's start."""
    end = day_start + timedelta(days=1)
    slots = [
        {k: s[k] for k in ("start", "baseline_kw", "planned_kw", "price_gbp_per_mwh", "carbon_g_per_kwh")}
        for s in schedule["slots"]
        if day_start <= datetime.fromisoformat(s["start"]) < end
    ]
    hours = schedule["slot_minutes"] / 60
    return {
        "slot_minutes": schedule["slot_minutes"],
        "slots": slots,
        "totals": {
            "baseline_cost_gbp": _gbp(sum(s["baseline_kw"] * hours * s["price_gbp_per_mwh"] / 1000 for s in slots)),
            "planned_cost_gbp": _gbp(sum(s["planned_kw"] * hours * s["price_gbp_per_mwh"] / 1000 for s in slots)),
            "baseline_carbon_kg": round(sum(s["baseline_kw"] * hours * s["carbon_g_per_kwh"] / 1000 for s in slots), 3),
            "planned_carbon_kg": round(sum(s["planned_kw"] * hours * s["carbon_g_per_kwh"] / 1000 for s in slots), 3),
        },
    }


def _load_shift(run: DemoRun) -> dict[str, Any]:
    """The fleet's and each provider's day: the BPPs' schedules summed per slot (the same slots for all)."""
    by_provider = {pid: _series(s, run.day_start) for pid, s in run.schedules_morning.items()}
    first = next(iter(by_provider.values()))
    fleet_slots = []
    for i, slot in enumerate(first["slots"]):
        rows = [p["slots"][i] for p in by_provider.values() if i < len(p["slots"])]
        fleet_slots.append(
            {
                "start": slot["start"],
                "baseline_kw": round(sum(r["baseline_kw"] for r in rows), 3),
                "planned_kw": round(sum(r["planned_kw"] for r in rows), 3),
                "price_gbp_per_mwh": slot["price_gbp_per_mwh"],
                "carbon_g_per_kwh": slot["carbon_g_per_kwh"],
            }
        )
    fleet = {"slot_minutes": first["slot_minutes"], "slots": fleet_slots}
    fleet["totals"] = {
        key: (
            _gbp(sum(float(p["totals"][key]) for p in by_provider.values()))
            if key.endswith("_gbp")
            else round(sum(p["totals"][key] for p in by_provider.values()), 3)
        )
        for key in ("baseline_cost_gbp", "planned_cost_gbp", "baseline_carbon_kg", "planned_carbon_kg")
    }
    return {"fleet": fleet, "by_provider": by_provider}


def _run_figures(run_doc: dict[str, Any]) -> tuple[Fraction, Fraction]:
    """(contracted Wh, delivered Wh) of one settlement run, from its periods, exact (the ledger's fractions)."""
    periods = run_doc["result"]["periods"]
    contracted = sum((Fraction(p["contracted_wh"]) for p in periods), Fraction(0))
    delivered = sum((Fraction(p["delivered_wh"]) for p in periods), Fraction(0))
    return contracted, delivered


def _settlement(net: DemoNetwork, view: dict[str, Any], out: Path) -> dict[str, Any]:
    finance = net.ledger("finance")
    public_key = net.ledger("finance").get("/checkpoints/public-key")["public_key_b64"]
    per_provider: dict[str, dict[str, Any]] = {}
    compensation: dict[str, int] = {}
    window: list[datetime] = []
    for o in view["orders"]:
        if not o["order_id"] or o["state"] in ("CANCELLED", "SELECTING", "QUOTED", "CREATED"):
            continue
        ledger_id = ledger_order_id(o["order_id"], o["settlement_method"])
        summary = finance.get(f"/orders/{ledger_id}")
        if not summary["runs"]:
            continue
        latest = summary["runs"][-1]
        run_doc = finance.get(f"/settlement/{ledger_id}/{latest['run']}")
        contracted, delivered = _run_figures(run_doc)
        lines = {k: int(v) for k, v in latest["lines_pence"].items()}
        row = per_provider.setdefault(
            o["provider_id"],
            {"provider_id": o["provider_id"], "contracted_wh": Fraction(0), "delivered_wh": Fraction(0)}
            | {"utilisation_pence": 0, "shortfall_pence": 0, "net_pence": 0},
        )
        # summed exactly and rounded once below: rounding each order's share made the total depend on the order
        # in which the BAP listed the orders (two runs of one seed differed by a Wh)
        row["contracted_wh"] += contracted
        row["delivered_wh"] += delivered
        row["utilisation_pence"] += lines.get("utilisation", 0) + lines.get("availability", 0)
        row["shortfall_pence"] += lines.get("shortfall", 0)
        row["net_pence"] += lines.get("utilisation", 0) + lines.get("availability", 0) - lines.get("shortfall", 0)
        supplier = summary["supplier_id"]
        compensation[supplier] = compensation.get(supplier, 0) + lines.get("supplier_compensation", 0)
        window += [datetime.fromisoformat(summary["window_start"]), datetime.fromisoformat(summary["window_end"])]
    statements = out / "statements"
    statements.mkdir(parents=True, exist_ok=True)
    day = min(window).replace(hour=0, minute=0, second=0, microsecond=0) if window else clock.now()
    span = {"from": day.isoformat(), "to": (day + timedelta(days=1)).isoformat()}
    for pid, row in per_provider.items():
        row["contracted_kwh"] = round(float(row.pop("contracted_wh") / 1000), 3)
        row["delivered_kwh"] = round(float(row.pop("delivered_wh") / 1000), 3)
        account = f"provider:{pid}:revenue"
        doc = finance.get(f"/statements/{account}", **span, format="json")
        csv_text = finance.get(f"/statements/{account}", **span, format="csv")
        (statements / f"{pid}.json").write_text(json.dumps(doc, indent=2))
        (statements / f"{pid}.csv").write_text(csv_text if isinstance(csv_text, str) else json.dumps(csv_text))
        row["statement_json"] = f"statements/{pid}.json"
        row["statement_csv"] = f"statements/{pid}.csv"
        row["statement_verified"] = bool(verify_statement(doc, public_key).ok)
    return {
        "providers": sorted(per_provider.values(), key=lambda r: r["provider_id"]),
        "supplier_compensation_pence": compensation,
        "supplier_compensation_total_pence": sum(compensation.values()),
        "payments_total_pence": sum(r["net_pence"] for r in per_provider.values()),
    }


def _tokens(net: DemoNetwork, run: DemoRun) -> dict[str, Any]:
    finance = net.ledger("finance")
    bap_id = net.manifest["participants"]["bap"]["subscriber_id"]
    config = json.loads((Path(net.net.home) / "providers.json").read_text())
    declared = {s["id"]: s for p in config["platforms"] for pr in p["providers"] for s in pr.get("cft_series", [])}
    series = []
    bought = redeemed_by_bap = 0
    for sid, spec in sorted(declared.items()):
        info = finance.get(f"/cft/series/{sid}")
        counts = info["provider_invariant"] or {"minted": 0, "outstanding": 0, "redeemed": 0, "expired": 0}
        held = {k: int(v) for k, v in info["holdings"].items()}
        sold = counts["minted"] - held.get(info["provider_id"], 0) - counts["expired"]
        series.append(
            {
                "series_id": sid,
                "provider_id": info["provider_id"],
                "minted": counts["minted"],
                "sold": max(sold, 0),
                "redeemed": counts["redeemed"],
                "expired": counts["expired"],
                "outstanding": counts["outstanding"],
                "price_pence_per_token": round(float(spec["price_gbp_per_token"]) * 100),
            }
        )
        bought += held.get(bap_id, 0) + counts["redeemed"]
        redeemed_by_bap += counts["redeemed"]
    return {"series": series, "bought_by_orchestrator": bought, "redeemed_by_orchestrator": redeemed_by_bap}


def _write_logs(net: DemoNetwork, run: DemoRun, out: Path) -> None:
    bap = net.bap("viewer")
    (out / "market.jsonl").write_text(_jsonl(bap.get("/market-log", format="jsonl", limit=1000)))
    (out / "carbon.jsonl").write_text(_jsonl(bap.get("/carbon-log", format="jsonl", limit=1000)))
    lines = []
    for dc in [*fleet(run.options.providers), BATTERY_SITE]:
        for d in net.bpp(dc.provider_id).get("/decisions", limit=500):
            lines.append(json.dumps(d, sort_keys=True))
    (out / "decisions.jsonl").write_text("\n".join(lines) + ("\n" if lines else ""))


def _jsonl(answer: Any) -> str:
    if isinstance(answer, str):
        return answer if answer.endswith("\n") or not answer else answer + "\n"
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in answer)


def write_outputs(doc: dict[str, Any], out: Path) -> None:
    """summary.json (checked against flexmarket/demo_schema.py first) and report.html."""
    validate_summary(doc)
    (out / "summary.json").write_text(json.dumps(doc, indent=2) + "\n")
    write_report(doc, out)
