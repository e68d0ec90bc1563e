"""The grid orchestrator on /metrics, read from its tables at each scrape (so every process's work counts):
procurements by status, bid acceptance rate, cost per MWh, covered fraction, time from signal to all orders
confirmed, and the age of the grid signals."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import structlog
from prometheus_client.core import REGISTRY, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from bap import governance, procurement, signals
from bap.models import BapOrder, Procurement
from kernel.config import get_settings
from kernel.db import session_scope

log = structlog.get_logger(__name__)
RECENT = 500  # final procurements the ratios are computed over


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class OrchestratorMetrics(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            with session_scope("bap") as s:
                by_status = dict(s.execute(select(Procurement.status, func.count()).group_by(Procurement.status)).all())
                placed = s.execute(
                    select(BapOrder.state, func.count())
                    .where(BapOrder.procurement_id.is_not(None))
                    .group_by(BapOrder.state)
                ).all()
                recent = s.scalars(
                    select(Procurement)
                    .where(Procurement.status.in_(("covered", "partially_covered", "failed", "delivering", "settled")))
                    .order_by(Procurement.created_at.desc())
                    .limit(RECENT)
                ).all()
                views = [procurement.view(s, p) for p in recent]
                limit = timedelta(seconds=governance.active(s).body.signal_staleness_limit_s)
                fresh = signals.freshness(s, limit) if get_settings().grid_signal_source != "none" else []
        except Exception as exc:  # a scrape never fails because the database is away
            log.warning("orchestrator metrics unavailable", error=str(exc))
            return
        count = GaugeMetricFamily("flexmarket_procurements", "Procurements by status", labels=["status"])
        for status, n in sorted(by_status.items()):
            count.add_metric([status], int(n))
        yield count
        states = {str(k): int(v) for k, v in placed}
        total = sum(states.values())
        accepted = sum(states.get(k, 0) for k in ("ACCEPTED", "IN-PROGRESS", "COMPLETED"))
        yield GaugeMetricFamily(
            "flexmarket_procurement_bid_acceptance_ratio",
            "Orders the orchestrator placed that providers accepted, over all it placed",
            value=accepted / total if total else float("nan"),
        )
        mwh = sum(sum(sl["covered_kw"] for sl in v["slots"]) * 0.5 / 1000 for v in views)
        cost = sum(v["expected_cost_gbp"] or 0.0 for v in views)
        yield GaugeMetricFamily(
            "flexmarket_procurement_cost_gbp_per_mwh",
            f"Expected cost per MWh contracted, over the last {RECENT} final procurements",
            value=cost / mwh if mwh else float("nan"),
        )
        fractions = [v["covered_fraction"] for v in views]
        yield GaugeMetricFamily(
            "flexmarket_procurement_covered_fraction",
            f"Mean covered fraction of the target, over the last {RECENT} final procurements",
            value=sum(fractions) / len(fractions) if fractions else float("nan"),
        )
        seconds = [v["seconds_to_all_confirmed"] for v in views if v["seconds_to_all_confirmed"] is not None]
        latency = GaugeMetricFamily(
            "flexmarket_procurement_seconds_to_all_confirmed",
            "Time from a procurement's signal to all its orders confirmed",
            labels=["quantile"],
        )
        for q in (0.5, 0.99):
            latency.add_metric([str(q)], _quantile(seconds, q))
        yield latency
        age = GaugeMetricFamily(
            "flexmarket_grid_signal_age_seconds", "Age of the latest observation of each grid signal", labels=["kind"]
        )
        stale = GaugeMetricFamily(
            "flexmarket_grid_signal_stale", "1 when a grid signal is older than the policy allows", labels=["kind"]
        )
        for f in fresh:
            age.add_metric([f.kind], f.state.age.total_seconds() if f.state.age is not None else float("inf"))
            stale.add_metric([f.kind], 1.0 if f.stale else 0.0)
        yield age
        yield stale


_registered = False


def register_metrics() -> None:
    global _registered
    if not _registered:
        REGISTRY.register(OrchestratorMetrics())
        _registered = True
