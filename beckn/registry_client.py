"""Registry lookups with a time-limited cache (receivers verify every message against it)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from beckn import http
from beckn.keys import KeyError_, public_key_from_b64
from kernel import clock
from kernel.config import get_settings

NEGATIVE_TTL_S = 1.0  # a key registered a moment ago must become visible quickly


@dataclass(frozen=True, kw_only=True)
class KeyRecord:
    subscriber_id: str
    unique_key_id: str
    type: str
    url: str
    public_key: Ed25519PublicKey
    valid_from: datetime | None
    valid_until: datetime | None

    def valid_at(self, now: datetime) -> bool:
        return (self.valid_from is None or self.valid_from <= now) and (
            self.valid_until is None or now <= self.valid_until
        )


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class RegistryError(RuntimeError):
    """The registry could not be reached or answered nonsense (a receiver NACKs, sender retries)."""


class RegistryClient:
    def __init__(self, registry_url: str, ttl_s: float = 60.0) -> None:
        self.url = registry_url.rstrip("/")
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, list[dict[str, Any]]]] = {}
        self._locks: dict[tuple[int, str], asyncio.Lock] = {}
        self._records: dict[str, tuple[list[dict[str, Any]], KeyRecord | None]] = {}

    def _cached(self, key: str) -> list[dict[str, Any]] | None:
        hit = self._cache.get(key)
        if hit and hit[0] > time.monotonic():
            return hit[1]
        return None

    def _store(self, key: str, rows: list[dict[str, Any]]) -> None:
        ttl = self.ttl_s if rows else NEGATIVE_TTL_S
        self._cache[key] = (time.monotonic() + ttl, rows)

    def invalidate(self) -> None:
        self._cache.clear()
        self._records.clear()

    @staticmethod
    def _key(filters: dict[str, Any]) -> tuple[dict[str, Any], str]:
        body = {k: v for k, v in filters.items() if v is not None}
        return body, json.dumps(body, sort_keys=True)

    async def lookup(self, client: http.Client, **filters: Any) -> list[dict[str, Any]]:
        body, key = self._key(filters)
        rows = self._cached(key)
        if rows is not None:
            return rows
        # One request per key even when 50 messages arrive at once. An asyncio lock belongs to one event
        # loop, and worker threads each run their own (beckn/http.py), so there is one lock per loop.
        lock = self._locks.setdefault((id(asyncio.get_running_loop()), key), asyncio.Lock())
        async with lock:
            rows = self._cached(key)
            if rows is not None:
                return rows
            res = await http.post(client, f"{self.url}/lookup", json.dumps(body).encode(), {})
            if res.status != 200:
                raise RegistryError(f"registry lookup failed: {res.status} {res.error or res.body[:200]!r}")
            try:
                rows = res.json()
            except ValueError as exc:
                raise RegistryError("registry answered with invalid JSON") from exc
            if not isinstance(rows, list):
                raise RegistryError("registry lookup must return a list")
            self._store(key, rows)
            return rows

    async def key_for(self, client: http.Client, subscriber_id: str, unique_key_id: str) -> KeyRecord | None:
        rows = await self.lookup(client, subscriber_id=subscriber_id, unique_key_id=unique_key_id, status="SUBSCRIBED")
        key = f"{subscriber_id}|{unique_key_id}"
        cached = self._records.get(key)
        if cached is not None and cached[0] is rows:
            return cached[1]  # the same cached lookup answer: reuse the decoded key
        record = self._record(rows, subscriber_id, unique_key_id)
        self._records[key] = (rows, record)
        return record

    def _record(self, rows: list[dict[str, Any]], subscriber_id: str, unique_key_id: str) -> KeyRecord | None:
        for row in rows:
            key_id = row.get("unique_key_id", row.get("key_id"))
            if row.get("subscriber_id") == subscriber_id and key_id == unique_key_id:
                try:
                    pub = public_key_from_b64(row["signing_public_key"])
                except (KeyError, KeyError_):
                    continue
                return KeyRecord(
                    subscriber_id=subscriber_id,
                    unique_key_id=unique_key_id,
                    type=row.get("type", ""),
                    url=row.get("url", ""),
                    public_key=pub,
                    valid_from=_parse_time(row.get("valid_from")),
                    valid_until=_parse_time(row.get("valid_until")),
                )
        return None

    async def subscribers(
        self,
        client: http.Client,
        *,
        type: str | None = None,
        subscriber_id: str | None = None,
        domain: str | None = None,
        city: str | None = None,
        country: str | None = None,
    ) -> list[dict[str, Any]]:
        """SUBSCRIBED participants matching the filters, one row per subscriber (first valid key)."""
        rows = await self.lookup(
            client,
            type=type,
            subscriber_id=subscriber_id,
            domain=domain,
            city=city,
            country=country,
            status="SUBSCRIBED",
        )
        return self._valid_subscribers(rows)

    def cached_subscribers(self, **filters: Any) -> list[dict[str, Any]] | None:
        """What subscribers(**filters) would answer from the cache alone, or None on a miss — lets
        synchronous callers skip running an event loop when the answer is already known."""
        rows = self._cached(self._key({**filters, "status": "SUBSCRIBED"})[1])
        return None if rows is None else self._valid_subscribers(rows)

    @staticmethod
    def _valid_subscribers(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        now = clock.wall_now()
        seen: dict[str, dict[str, Any]] = {}
        for row in rows:
            sid = row.get("subscriber_id")
            vf, vu = _parse_time(row.get("valid_from")), _parse_time(row.get("valid_until"))
            if sid and sid not in seen and (vf is None or vf <= now) and (vu is None or now <= vu):
                seen[sid] = row
        return list(seen.values())


_sync_client: RegistryClient | None = None


def worker_registry() -> RegistryClient:
    """The registry client of a worker process (settings decide the URL and cache TTL)."""
    global _sync_client
    settings = get_settings()
    if _sync_client is None or _sync_client.url != settings.registry_url.rstrip("/"):
        _sync_client = RegistryClient(settings.registry_url, settings.registry_cache_ttl_s)
    return _sync_client


def subscribers_sync(**filters: Any) -> list[dict[str, Any]]:
    reg = worker_registry()
    hit = reg.cached_subscribers(**filters)
    if hit is not None:
        return hit
    return http.run_with_client(lambda client: reg.subscribers(client, **filters))


def url_of_sync(subscriber_id: str, type: str | None = None) -> str | None:
    rows = subscribers_sync(subscriber_id=subscriber_id, type=type)
    return rows[0]["url"] if rows else None
