"""Grid signals the orchestrator hears: carbon intensity (NESO Carbon Intensity API format) and system prices
(Elexon's format), parsed by grid/feeds.py and kept per half-hour in `bap.grid_signals`.

A source (`FLEXMARKET_GRID_SIGNAL_SOURCE`) is polled by the beat task `bap.poll_signals`:
- `replay`: the documents the APIs would have answered at market time, from the recorded GB files
  (grid/feeds.py `ReplaySource`), so everything runs offline and on a simulated clock;
- `http`: the live APIs (`FLEXMARKET_CARBON_FEED_URL`, `FLEXMARKET_PRICE_FEED_URL`);
- `none` (default): no signal is heard, and staleness blocks nothing.

Signals older than the active policy's `signal_staleness_limit_s` block new procurements (existing orders are
untouched), and say so in `GET /api/v1/signals`, the logs and /metrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import httpx
import structlog
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from bap import governance
from bap.models import GridSignal
from grid import feeds
from kernel import clock
from kernel.config import get_settings

log = structlog.get_logger(__name__)

LOOK_BACK = timedelta(days=1)
LOOK_AHEAD = timedelta(days=2)  # NESO publishes forecasts about 48 h ahead


class Source(Protocol):
    def documents(self, now: datetime) -> tuple[Mapping[str, object], list[Mapping[str, object]]]:
        """The carbon document and the price documents (one per settlement date) as the APIs answer at `now`."""
        ...


@dataclass(frozen=True)
class Replay:
    source: feeds.ReplaySource

    def documents(self, now: datetime) -> tuple[Mapping[str, object], list[Mapping[str, object]]]:
        start, end = _window(now)
        return self.source.national_carbon(start, end, now=now), [self.source.system_prices(start, end, now=now)]


@dataclass(frozen=True)
class Http:
    carbon_url: str
    price_url: str
    timeout_s: float = 10.0

    def documents(self, now: datetime) -> tuple[Mapping[str, object], list[Mapping[str, object]]]:
        start, end = _window(now)
        iso = "%Y-%m-%dT%H:%MZ"
        carbon_url = self.carbon_url.replace("{from}", start.strftime(iso)).replace("{to}", end.strftime(iso))
        with httpx.Client(timeout=self.timeout_s) as client:
            carbon = client.get(carbon_url).raise_for_status().json()
            days = sorted({(now - timedelta(days=1)).date(), now.date()})
            prices = [
                client.get(self.price_url.replace("{date}", d.isoformat())).raise_for_status().json() for d in days
            ]
        return carbon, prices


def _window(now: datetime) -> tuple[datetime, datetime]:
    base = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return base - LOOK_BACK, base + LOOK_AHEAD


def configured_source() -> Source | None:
    settings = get_settings()
    if settings.grid_signal_source == "replay":
        return Replay(feeds.ReplaySource())
    if settings.grid_signal_source == "http":
        return Http(settings.carbon_feed_url, settings.price_feed_url)
    return None


def store(session: Session, carbon: feeds.CarbonReadings, prices: list[feeds.PriceReadings]) -> int:
    """Upsert every half-hour heard; an actual replaces a forecast, never the other way round."""
    now = clock.now()
    rows: list[dict[str, Any]] = []
    for c in carbon.readings:
        observed = c.published_utc or (c.end_utc if c.kind is feeds.Kind.ACTUAL else now)
        rows.append(
            {
                "kind": "carbon",
                "period_start": c.start_utc,
                "value": c.carbon_g_per_kwh,
                "value_kind": c.kind.value,
                "observed_at": min(observed, now),
                "received_at": now,
            }
        )
    for pr in prices:
        for p in pr.readings:
            observed = p.published_utc or p.end_utc
            rows.append(
                {
                    "kind": "price",
                    "period_start": p.start_utc,
                    "value": p.price_gbp_per_mwh,
                    "value_kind": "settled",
                    "observed_at": min(observed, now),
                    "received_at": now,
                }
            )
    # one row per (kind, period): the actual wins over the forecast of the same document
    unique: dict[tuple[str, datetime], dict[str, Any]] = {}
    for r in rows:
        key = (r["kind"], r["period_start"])
        if key not in unique or r["value_kind"] != "forecast":
            unique[key] = r
    if not unique:
        return 0
    stmt = insert(GridSignal).values(list(unique.values()))
    stmt = stmt.on_conflict_do_update(
        index_elements=["kind", "period_start"],
        set_={c: stmt.excluded[c] for c in ("value", "value_kind", "observed_at", "received_at")},
        where=(GridSignal.value_kind == "forecast") | (stmt.excluded.value_kind != "forecast"),
    )
    session.execute(stmt)
    return len(unique)


def poll(session: Session, source: Source) -> int:
    carbon_doc, price_docs = source.documents(clock.now())
    carbon = feeds.parse_neso_carbon(carbon_doc)
    prices = [feeds.parse_elexon_system_prices(d) for d in price_docs]
    n = store(session, carbon, prices)
    log.info("grid signals polled", periods=n, source=type(source).__name__)
    return n


@dataclass(frozen=True)
class Freshness:
    kind: str
    latest: datetime | None
    state: feeds.Staleness

    @property
    def stale(self) -> bool:
        return isinstance(self.state, feeds.Stale)

    def as_json(self) -> dict[str, Any]:
        age = self.state.age
        return {
            "latest_observed": self.latest.isoformat() if self.latest else None,
            "age_s": age.total_seconds() if age is not None else None,
            "stale": self.stale,
        }


def freshness(session: Session, limit: timedelta) -> list[Freshness]:
    """How old each signal is: the latest observation (an actual, a settled price, a publication)."""
    now = clock.now()
    out = []
    for kind in ("carbon", "price"):
        latest = session.scalar(
            select(func.max(GridSignal.observed_at)).where(GridSignal.kind == kind, GridSignal.value_kind != "forecast")
        )
        out.append(Freshness(kind, latest, feeds.staleness(min(latest, now) if latest else None, now, limit)))
    return out


def blocking_reason(session: Session) -> str | None:
    """Why a new procurement is refused for stale signals (None: signals are fresh, or none is configured)."""
    if get_settings().grid_signal_source == "none":
        return None
    limit = timedelta(seconds=governance.active(session).body.signal_staleness_limit_s)
    stale = [f for f in freshness(session, limit) if f.stale]
    if not stale:
        return None
    parts = [f"{f.kind} last observed {f.latest.isoformat() if f.latest else 'never'}" for f in stale]
    return f"grid signals are stale ({'; '.join(parts)}; the policy allows {limit.total_seconds():g} s)"


def status(session: Session) -> dict[str, Any]:
    limit = timedelta(seconds=governance.active(session).body.signal_staleness_limit_s)
    source = get_settings().grid_signal_source
    fresh = freshness(session, limit) if source != "none" else []
    return {
        "source": source,
        "staleness_limit_s": limit.total_seconds(),
        "blocking_new_procurements": any(f.stale for f in fresh),
        "signals": {f.kind: f.as_json() for f in fresh},
    }


def intensity(session: Session, start: datetime, end: datetime) -> dict[datetime, float]:
    """Carbon intensity (g/kWh) per half-hour heard in [start, end)."""
    rows = session.execute(
        select(GridSignal.period_start, GridSignal.value).where(
            GridSignal.kind == "carbon", GridSignal.period_start >= start, GridSignal.period_start < end
        )
    ).all()
    return {r[0]: float(r[1]) for r in rows}
