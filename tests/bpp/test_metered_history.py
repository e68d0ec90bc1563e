"""A site's metered history from the ledger (bpp/metered_history.py) behind each offer's expected paid reduction:
against the real ledger app in process, a site whose metered history is above its planned import expects to be
paid for all it offers, one below for less, one without readings says null and why; the ledger unreachable, no
key or no ledger gives null with that reason and never fails the catalog; one read per site per build, and a
non-empty history is kept for a while (an empty one is not)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from bpp import agent_service, metered_history
from bpp.catalog import ProviderConfig, parse_config
from bpp.ledger_client import LedgerReader
from kernel.config import reset_settings
from ledger.api import close_runtimes
from ledger.api_keys import create_api_key
from ledger.db import connection
from ledger.main import create_app

PROVIDER = "dc-hist"
BASELINE_KW = 2000.0  # each site's stated baseline: the planned import over a static offer's window
OFFERED_KW = 400.0


def _provider() -> ProviderConfig:
    day = (datetime.now(UTC) + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    sites = [
        {"id": f"{name}-site", "region": "GB-R13", "meter_id": f"MTR-{name}", "baseline_kw": BASELINE_KW}
        for name in ("over", "under", "new")
    ]
    offers = [
        {
            "id": f"{s['id']}-peak",
            "location_id": s["id"],
            "name": "evening peak",
            "window_start": (day + timedelta(hours=16)).isoformat(),
            "window_end": (day + timedelta(hours=18)).isoformat(),
            "available_kw": OFFERED_KW,
            "min_kw": 100,
            "max_kw": OFFERED_KW,
            "price_gbp_per_mwh": 150,
        }
        for s in sites
    ]
    config = {
        "platforms": [
            {
                "subscriber_id": "p.test",
                "slug": "p",
                "providers": [{"id": PROVIDER, "name": "H", "sites": sites, "offers": offers}],
            }
        ]
    }
    provider = parse_config(config)[0].provider(PROVIDER)
    assert provider is not None
    return provider


def _days_of_readings(kw: float, days: int = 30) -> list[dict[str, str]]:
    """Every half hour of the `days` whole UTC days before today, at a constant `kw` (kWh = kW / 2)."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - timedelta(days=days)
    return [
        {"period_start": (start + timedelta(minutes=30) * i).isoformat(), "energy_kwh": f"{kw / 2:.3f}"}
        for i in range(days * 48)
    ]


@pytest.fixture()
def ledger(isolated_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TestClient, str]]:
    """The real ledger app in process on the test's database, and the provider's ledger key."""
    monkeypatch.setenv("FLEXMARKET_HOME", str(tmp_path))
    reset_settings()
    metered_history.forget_kept()
    with connection(isolated_db) as conn, conn.transaction():
        key = create_api_key(conn, "provider", PROVIDER)
    with TestClient(create_app()) as client:
        yield client, key
    close_runtimes()
    metered_history.forget_kept()


def _post(client: TestClient, key: str, meter: str, readings: list[dict[str, str]]) -> None:
    r = client.post(
        "/api/v1/metering", json={"meter_id": meter, "readings": readings}, headers={"Authorization": f"Bearer {key}"}
    )
    assert r.status_code == 201, r.text


def _by_site(offers: list[Any]) -> dict[str, Any]:
    return {o.location_id: o for o in offers}


def test_history_above_the_plan_is_paid_in_full_below_it_less(ledger: tuple[TestClient, str]) -> None:
    client, key = ledger
    _post(client, key, "MTR-over", _days_of_readings(BASELINE_KW + 100))  # the site usually draws more
    _post(client, key, "MTR-under", _days_of_readings(BASELINE_KW - OFFERED_KW / 2))  # and this one less
    provider = _provider()
    history = metered_history.LedgerHistory(provider, LedgerReader(client, "http://testserver"), key, datetime.now(UTC))
    offers = _by_site(agent_service.static_catalog(provider, history))
    over, under, new = offers["over-site"], offers["under-site"], offers["new-site"]
    assert (over.expected_paid_kw, over.expected_paid_reason) == (OFFERED_KW, None)
    # baseline 1800 kW, metered 2000 − 400: paid clip(1800 − 1600, 0, 400) = 200 kW
    assert (under.expected_paid_kw, under.expected_paid_reason) == (OFFERED_KW / 2, None)
    assert new.expected_paid_kw is None
    assert (
        new.expected_paid_reason
        == "no metered history for site new-site: the ledger holds no readings of meter MTR-new yet"
    )


def test_too_little_history_says_so(ledger: tuple[TestClient, str]) -> None:
    client, key = ledger
    _post(client, key, "MTR-over", _days_of_readings(BASELINE_KW, days=3))  # fewer than 5 baseline days
    provider = _provider()
    history = metered_history.LedgerHistory(provider, LedgerReader(client, "http://testserver"), key, datetime.now(UTC))
    over = _by_site(agent_service.static_catalog(provider, history))["over-site"]
    assert over.expected_paid_kw is None and "insufficient metered history" in (over.expected_paid_reason or "")


def test_the_settings_source_reads_with_the_providers_key(
    ledger: tuple[TestClient, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, key = ledger
    _post(client, key, "MTR-over", _days_of_readings(BASELINE_KW + 100))
    provider = _provider()
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"someone-else": key}))
    monkeypatch.setenv("FLEXMARKET_LEDGER_URL", "http://testserver")
    monkeypatch.setenv("FLEXMARKET_LEDGER_PROVIDER_KEYS_FILE", str(keys))
    reset_settings()
    unkeyed = agent_service.static_catalog(provider, metered_history.ledger_history(provider, client=client))
    for o in unkeyed:
        assert o.expected_paid_kw is None
        assert o.expected_paid_reason == (
            f"no metered history for site {o.location_id}: no ledger key for provider {PROVIDER} "
            "(FLEXMARKET_LEDGER_PROVIDER_KEYS_FILE)"
        )
    keys.write_text(json.dumps({PROVIDER: key}))
    keyed = _by_site(agent_service.static_catalog(provider, metered_history.ledger_history(provider, client=client)))
    assert keyed["over-site"].expected_paid_kw == OFFERED_KW
    monkeypatch.delenv("FLEXMARKET_LEDGER_URL")
    reset_settings()
    [o, *_] = agent_service.static_catalog(provider, agent_service.metered_history_of(provider))
    assert o.expected_paid_kw is None and "FLEXMARKET_LEDGER_URL is not set" in (o.expected_paid_reason or "")


class _Ledger:
    """A stand-in ledger answering GET /api/v1/metering/{meter}: counts requests, or is down."""

    def __init__(self, kw_by_meter: dict[str, float], *, down: bool = False) -> None:
        self.kw_by_meter, self.down = kw_by_meter, down
        self.asked: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        meter = request.url.path.rsplit("/", 1)[-1]
        self.asked.append(meter)
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        assert request.headers["Authorization"] == "Bearer flk_test"
        start = datetime.fromisoformat(request.url.params["from"])
        end = datetime.fromisoformat(request.url.params["to"])
        assert end - start == timedelta(days=metered_history.HISTORY_DAYS)
        kw = self.kw_by_meter.get(meter)
        if kw is None:
            return httpx.Response(404, json={"error": {"code": "not_found"}})
        readings = [
            {
                "period_start": (end - timedelta(minutes=30) * (i + 1)).isoformat(),
                "energy_kwh": str(kw / 2),
                "kind": "x",
            }
            for i in range(30 * 48)
        ]
        return httpx.Response(200, json={"meter_id": meter, "provider_id": PROVIDER, "readings": readings})


def _source(fake: _Ledger, keep_s: float = 0.0) -> metered_history.LedgerHistory:
    client = httpx.Client(transport=httpx.MockTransport(fake))
    return metered_history.LedgerHistory(
        _provider(), LedgerReader(client, "http://ledger.test"), "flk_test", datetime.now(UTC), keep_s=keep_s
    )


def test_an_unreachable_ledger_gives_null_with_the_reason_and_is_asked_once() -> None:
    fake = _Ledger({}, down=True)
    offers = agent_service.static_catalog(_provider(), _source(fake))
    assert len(offers) == 3 and fake.asked == ["MTR-over"]  # the build stops asking once the ledger failed
    for o in offers:
        assert o.expected_paid_kw is None
        assert "the ledger could not be read (ledger unreachable: connection refused)" in (o.expected_paid_reason or "")


def test_one_read_per_site_per_build_and_only_a_real_history_is_kept() -> None:
    metered_history.forget_kept()
    try:
        fake = _Ledger({"MTR-over": BASELINE_KW + 100})
        source = _source(fake, keep_s=600)
        provider = _provider()
        twice = provider.offers + provider.offers  # two offers per site: still one read each
        for o in twice:
            source(o.location_id)
        assert sorted(fake.asked) == ["MTR-new", "MTR-over", "MTR-under"]
        again = _Ledger({"MTR-over": BASELINE_KW + 100})
        offers = _by_site(agent_service.static_catalog(provider, _source(again, keep_s=600)))
        assert sorted(again.asked) == ["MTR-new", "MTR-under"]  # the kept history is not asked for again
        assert offers["over-site"].expected_paid_kw == OFFERED_KW
    finally:
        metered_history.forget_kept()


@given(st.lists(st.integers(-2_000_000, 2_000_000), max_size=20))
def test_kwh_per_half_hour_is_twice_that_in_mean_kw(wh: list[int]) -> None:
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    readings = [
        {"period_start": (t0 + timedelta(minutes=30) * i).isoformat(), "energy_kwh": f"{w / 1000:.3f}"}
        for i, w in enumerate(wh)
    ]
    got = metered_history.mean_kw_by_period(readings)
    assert got == {t0 + timedelta(minutes=30) * i: w * 2 / 1000 for i, w in enumerate(wh)}
