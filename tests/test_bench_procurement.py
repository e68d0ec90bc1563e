"""bench/procurement.py's end-to-end events (the bench itself is not run here: it starts real networks)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from hypothesis import example, given, settings
from hypothesis import strategies as st

from bench.procurement import _slot_capacity_kw, _stats, plan_events
from bpp.catalog import example_config

NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)


def _offers(config: dict) -> list[dict]:
    return [o for p in config["platforms"] for pr in p["providers"] for o in pr["offers"]]


@settings(max_examples=25, deadline=None)
@example(n_providers=10, n_events=20)  # the bench's smallest network with its default events
@example(n_providers=10, n_events=25)
@given(n_providers=st.integers(min_value=10, max_value=60), n_events=st.integers(min_value=1, max_value=25))
def test_events_fit_the_offers_and_need_several_providers(n_providers: int, n_events: int) -> None:
    config = example_config(n_providers, now=NOW, platforms=max(1, n_providers // 10))
    events = plan_events(config, n_events, tag="t")
    offers = _offers(config)
    capacity = _slot_capacity_kw(config)
    assert len({e["event_id"] for e in events}) == n_events
    asked: dict[datetime, float] = {}
    for e in events:
        assert e["kind"] == "DR_EVENT"
        starts = [datetime.fromisoformat(i["start"]) for i in e["intervals"]]
        assert starts == sorted(starts) and all(b - a == timedelta(minutes=30) for a, b in itertools.pairwise(starts))
        for i in e["intervals"]:
            start, end = datetime.fromisoformat(i["start"]), datetime.fromisoformat(i["end"])
            inside = [
                o
                for o in offers
                if datetime.fromisoformat(o["window_start"]) <= start and end <= datetime.fromisoformat(o["window_end"])
            ]
            assert inside, f"{start} is outside every offer's window"
            asked[start] = asked.get(start, 0.0) + i["target_kw"]
        peak = max(i["target_kw"] for i in e["intervals"])
        biggest = max(o["max_kw"] for o in inside)
        assert peak > biggest  # one offer alone cannot cover it: at least two providers
    for start, kw in asked.items():
        assert kw <= 0.6 * capacity[start] + 1e-9


def test_capacity_sums_max_kw_per_slot() -> None:
    config = example_config(10, now=NOW)
    cap = _slot_capacity_kw(config)
    evening = datetime(2026, 12, 3, 16, 0, tzinfo=UTC)
    assert cap[evening] == sum(600 + 200 * (i % 4) for i in range(10))
    assert cap[datetime(2026, 12, 4, 6, 0, tzinfo=UTC)] == sum((600 + 200 * (i % 4)) // 2 for i in range(10))
    assert evening - timedelta(minutes=30) not in cap and evening + timedelta(hours=4) not in cap


def test_stats_p99_is_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 21)]  # 20 values: p99 by nearest rank is the largest
    s = _stats(values)
    assert (s["n"], s["p50"], s["p99"], s["max"]) == (20, 10.5, 20.0, 20.0)
    assert _stats([])["p99"] is None
