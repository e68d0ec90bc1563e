"""A site's metered history, read from the ledger: what an offer's expected paid reduction is reckoned against
(bpp/paid_reduction.py, the settlement baseline's 10-of-10 on the site's meter).

`ledger_history(provider, now=…)` is the `MeteredHistory` (bpp/agent_service.py) of one provider's catalog build:
site id → mean kW per half hour by period start (UTC). It reads the site's meter with the provider's own ledger
key (bpp/ledger_client.py) from `GET /api/v1/metering/{meter_id}` — the reading settlement would use for each
half hour — over the HISTORY_DAYS days before the current market time (the 60-day look-back of any window from
today on, and 2 days of slack), and converts kWh per half hour to mean kW (× 2).

Each site's meter is asked at most once per build, whatever the number of offers. A non-empty history is kept
in this process for FLEXMARKET_REPLAN_INTERVAL_S of wall time (and never past the half hour it was read up to),
so re-plans of many providers in a row, or a signal update soon after a re-plan, do not ask again; an empty
history or a failure is not kept, so a site's first readings count from the next build.

Never fails a catalog: without a ledger, without a key for the provider, or with the ledger unreachable (or
refusing), every offer of the site states a null expected paid reduction with that reason (`NoHistory`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from urllib.parse import quote

import httpx
import structlog

from bpp.catalog import ProviderConfig
from bpp.ledger_client import LedgerReader, LedgerReadError, load_provider_keys
from grid.periods import period_of
from kernel import clock
from kernel.config import get_settings

log = structlog.get_logger(__name__)

HISTORY_DAYS = 62  # the baseline looks back 60 days from the window's day; windows reach 2 days ahead
HALF_HOURS_PER_HOUR = 2  # mean kW over a half hour = its kWh × 2
TIMEOUT_S = 5.0  # a catalog build waits at most this long per site for the ledger


@dataclass(frozen=True)
class NoHistory(Mapping[datetime, float]):
    """An empty history that says why there is none (the offer's expected paid reason carries it)."""

    reason: str

    def __getitem__(self, key: datetime) -> float:
        raise KeyError(key)

    def __iter__(self) -> Iterator[datetime]:
        return iter(())

    def __len__(self) -> int:
        return 0


@dataclass(frozen=True)
class Unavailable:
    """A history source for a provider whose meters cannot be read at all: every site says why."""

    reason: str

    def __call__(self, site_id: str) -> Mapping[datetime, float]:
        return NoHistory(self.reason)


@dataclass
class _Kept:
    history_kw: Mapping[datetime, float]
    until_wall: datetime


_kept: dict[tuple[str, str, str, datetime], _Kept] = {}
_kept_lock = threading.Lock()


def forget_kept() -> None:
    """Drop every history kept in this process (tests; a provider whose readings were corrected)."""
    with _kept_lock:
        _kept.clear()


@dataclass
class LedgerHistory:
    """The metered history of one provider's sites, read with its ledger key up to `now` (market time)."""

    provider: ProviderConfig
    reader: LedgerReader
    key: str
    now: datetime
    keep_s: float = 0.0  # how long a non-empty history is kept in this process (wall seconds)
    _read: dict[str, Mapping[datetime, float]] = field(default_factory=dict)
    _down: str | None = None  # the ledger failed once in this build: the other sites are not asked again

    def __call__(self, site_id: str) -> Mapping[datetime, float]:
        site = self.provider.site(site_id)
        if site is None:
            return NoHistory(f"site {site_id} is not one of provider {self.provider.id}'s")
        meter = site.meter_id.removeprefix("der://")
        if meter not in self._read:
            self._read[meter] = self._history(meter)
        return self._read[meter]

    def _history(self, meter: str) -> Mapping[datetime, float]:
        if self._down is not None:
            return NoHistory(self._down)
        end = period_of(self.now.astimezone(UTC)).start_utc
        start = end - timedelta(days=HISTORY_DAYS)
        slot = (self.reader.api, self.provider.id, meter, end)
        with _kept_lock:
            kept = _kept.get(slot)
        if kept is not None and kept.until_wall > clock.wall_now():
            return kept.history_kw
        try:
            body = self.reader.get(
                f"/metering/{quote(meter, safe='')}", self.key, {"from": start.isoformat(), "to": end.isoformat()}
            )
        except LedgerReadError as exc:
            self._down = f"the ledger could not be read ({exc})"
            log.warning("metered history not read", provider=self.provider.id, meter=meter, error=str(exc))
            return NoHistory(self._down)
        if body is None:
            return NoHistory(f"the ledger holds no readings of meter {meter} yet")
        try:
            history_kw = mean_kw_by_period(body.get("readings"))
        except (TypeError, ValueError, KeyError, InvalidOperation) as exc:
            return NoHistory(f"the ledger's readings of meter {meter} could not be read ({exc!r})")
        if not history_kw:
            return NoHistory(f"the ledger holds no readings of meter {meter} in the {HISTORY_DAYS} days to now")
        if self.keep_s > 0:
            with _kept_lock:
                _kept[slot] = _Kept(history_kw, clock.wall_now() + timedelta(seconds=self.keep_s))
        return history_kw


def mean_kw_by_period(readings: object) -> dict[datetime, float]:
    """The ledger's readings (`[{"period_start", "energy_kwh", …}]`) as mean kW per half hour by period start."""
    if not isinstance(readings, list):
        raise TypeError("readings must be a list")
    out: dict[datetime, float] = {}
    for r in readings:
        stated = datetime.fromisoformat(r["period_start"])
        if stated.tzinfo is None:
            raise ValueError(f"{r['period_start']} has no time zone")
        start = stated.astimezone(UTC)
        if start != period_of(start).start_utc:
            raise ValueError(f"{r['period_start']} is not the start of a half hour")
        out[start] = float(Decimal(str(r["energy_kwh"]))) * HALF_HOURS_PER_HOUR
    return out


_client: httpx.Client | None = None
_client_lock = threading.Lock()


def _shared_client() -> httpx.Client:
    """One pooled HTTP client for this process's reads of metered history."""
    global _client
    with _client_lock:
        if _client is None:
            _client = httpx.Client(timeout=TIMEOUT_S)
        return _client


def ledger_history(
    provider: ProviderConfig, *, now: datetime | None = None, client: httpx.Client | None = None
) -> LedgerHistory | Unavailable:
    """The metered-history source of one catalog build of `provider` (settings: FLEXMARKET_LEDGER_URL and
    FLEXMARKET_LEDGER_PROVIDER_KEYS_FILE), or why there is none."""
    settings = get_settings()
    if not settings.ledger_url:
        return Unavailable("no ledger to read it from (FLEXMARKET_LEDGER_URL is not set)")
    try:
        keys = load_provider_keys(settings.ledger_provider_keys_file)
    except LedgerReadError as exc:
        return Unavailable(str(exc))
    key = keys.get(provider.id)
    if key is None:
        return Unavailable(f"no ledger key for provider {provider.id} (FLEXMARKET_LEDGER_PROVIDER_KEYS_FILE)")
    return LedgerHistory(
        provider,
        LedgerReader(client or _shared_client(), settings.ledger_url),
        key,
        now or clock.now(),
        keep_s=settings.replan_interval_s,
    )
