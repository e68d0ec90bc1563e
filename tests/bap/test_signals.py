"""Grid signals the orchestrator hears (bap/signals.py): the recorded GB files replayed at market time through
the real NESO and Elexon parsers; stale signals block new procurements (409, naming why), show in
`GET /api/v1/signals` and on /metrics, and fresh ones lift the block. An actual never gives way to a forecast."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

import bap.orchestrator_router
from bap import signals
from bap.models import GridSignal
from grid import feeds
from kernel import clock
from kernel.config import reset_settings
from kernel.db import session_scope
from tests.bap.conftest import Keys, bearer

DAY = datetime(2023, 1, 24, 12, tzinfo=UTC)  # a Demand Flexibility Service day in the recorded data


@pytest.fixture
def replay(bap_db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    monkeypatch.setenv("FLEXMARKET_GRID_SIGNAL_SOURCE", "replay")
    reset_settings()
    kicked: list[str] = []
    monkeypatch.setattr(bap.orchestrator_router, "_kick", kicked.append)  # no task reaches Redis
    with session_scope("bap") as s:
        s.query(GridSignal).delete()
    try:
        yield kicked
    finally:
        clock.set_clock(None)
        monkeypatch.delenv("FLEXMARKET_GRID_SIGNAL_SOURCE")
        reset_settings()


def _at(instant: datetime) -> None:
    clock.set_clock(clock.SimulatedClock(start=instant, anchor=datetime.now(UTC), speed=1.0))


def _poll() -> int:
    source = signals.configured_source()
    assert source is not None
    with session_scope("bap") as s:
        return signals.poll(s, source)


def _procure(client: TestClient, keys: Keys, start: datetime) -> tuple[int, dict]:
    body = {"window_start": start.isoformat(), "window_end": (start + timedelta(hours=1)).isoformat(), "power_kw": 500}
    r = client.post("/api/v1/procurements", json=body, headers=bearer(keys.operator))
    return r.status_code, r.json()


def test_stale_signals_block_new_procurements_until_fresh_ones_arrive(
    client: TestClient, keys: Keys, replay: list[str]
) -> None:
    _at(DAY)
    assert _poll() > 90  # a day back and two ahead, half-hourly
    status = client.get("/api/v1/signals", headers=bearer(keys.viewer)).json()
    assert status["source"] == "replay" and status["blocking_new_procurements"] is False
    assert status["signals"]["carbon"]["age_s"] <= 3600  # the last ended half-hour has its actual
    code, answer = _procure(client, keys, DAY + timedelta(hours=5))
    assert code == 202, answer
    assert replay == [answer["procurement_id"]]

    _at(DAY + timedelta(days=1))  # a day passes and nothing is heard: older than the 6 h the policy allows
    code, answer = _procure(client, keys, DAY + timedelta(days=1, hours=5))
    assert code == 409 and "stale" in answer["error"]["message"] and "carbon" in answer["error"]["message"]
    status = client.get("/api/v1/signals", headers=bearer(keys.viewer)).json()
    assert status["blocking_new_procurements"] is True and status["signals"]["carbon"]["stale"] is True
    metrics = client.get("/metrics").text
    assert 'flexmarket_grid_signal_stale{kind="carbon"} 1.0' in metrics

    _poll()
    code, answer = _procure(client, keys, DAY + timedelta(days=1, hours=5))
    assert code == 202, answer
    assert 'flexmarket_grid_signal_stale{kind="carbon"} 0.0' in client.get("/metrics").text


def test_an_actual_is_never_replaced_by_a_forecast(bap_db: str, replay: list[str]) -> None:
    start = DAY - timedelta(hours=2)
    actual = feeds.CarbonReadings(feeds.National(), (feeds.CarbonReading(start, 200.0, feeds.Kind.ACTUAL, "high"),))
    forecast = feeds.CarbonReadings(feeds.National(), (feeds.CarbonReading(start, 150.0, feeds.Kind.FORECAST, "high"),))
    _at(DAY)
    with session_scope("bap") as s:
        signals.store(s, forecast, [])
        signals.store(s, actual, [])
        signals.store(s, forecast, [])
    with session_scope("bap") as s:
        row = s.get(GridSignal, ("carbon", start))
        assert row is not None and (row.value, row.value_kind) == (200.0, "actual")


def test_no_source_configured_blocks_nothing(
    client: TestClient, keys: Keys, bap_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bap.orchestrator_router, "_kick", lambda _pid: None)
    status = client.get("/api/v1/signals", headers=bearer(keys.viewer)).json()
    assert status == {**status, "source": "none", "blocking_new_procurements": False, "signals": {}}
