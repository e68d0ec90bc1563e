"""The one clock of a deployment.

Two kinds of time, never mixed:

* **Market time** — :func:`now`. Every time rule of the market reads it: gate closure, order windows and
  state transitions, settlement-run timing, token expiry, signal staleness, the date limits on input.
  By default it is the wall clock. With ``FLEXMARKET_CLOCK_START`` set, the whole network runs on a
  *simulated* clock: it read ``FLEXMARKET_CLOCK_START`` at the wall instant ``FLEXMARKET_CLOCK_ANCHOR``
  and advances ``FLEXMARKET_CLOCK_SPEED`` simulated seconds per real second. Every process of a
  deployment is given the same three values (``flexmarket up`` and the test networks write the anchor
  once for all of them), so every process and worker reads the same simulated instant. With
  ``FLEXMARKET_CLOCK_FILE`` set instead, the simulated clock is *stepped*: its current segment lives in
  that file and one controller (``flexmarket demo``) moves it forward (:class:`SteppedClock`).
* **Transport time** — :func:`wall_now`. Timers that measure real elapsed time between machines read
  the wall clock whatever the market clock says: Beckn signature validity and message TTLs, outbox
  retries and leases, registry cache lifetimes, HTTP timeouts. A message takes the same real
  milliseconds to travel whether the market replays 2023 at 60× or runs live.

Invariant: :func:`now` is timezone-aware UTC and never runs backwards within a process
(speed > 0, anchor fixed at first use).
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from kernel.config import Settings, get_settings


class Clock(Protocol):
    def now(self) -> datetime: ...

    def now_us(self) -> int: ...

    def describe(self) -> dict[str, str | float]: ...


class WallClock:
    """Market time is real time."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def now_us(self) -> int:
        return time.time_ns() // 1000

    def describe(self) -> dict[str, str | float]:
        return {"kind": "wall"}


@dataclass(frozen=True)
class SimulatedClock:
    """Market time that read ``start`` at wall instant ``anchor`` and runs ``speed`` × real time."""

    start: datetime
    anchor: datetime
    speed: float = 1.0

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.anchor.tzinfo is None:
            raise ValueError("simulated clock start and anchor must be timezone-aware")
        if not self.speed > 0:
            raise ValueError("FLEXMARKET_CLOCK_SPEED must be > 0")

    def now(self) -> datetime:
        elapsed_s = (datetime.now(UTC) - self.anchor).total_seconds()
        return (self.start + timedelta(seconds=elapsed_s * self.speed)).astimezone(UTC)

    def now_us(self) -> int:
        elapsed_us = time.time_ns() // 1000 - int(self.anchor.timestamp() * 1_000_000)
        return int(self.start.timestamp() * 1_000_000) + int(elapsed_us * self.speed)

    def describe(self) -> dict[str, str | float]:
        return {
            "kind": "simulated",
            "start": self.start.astimezone(UTC).isoformat(),
            "anchor": self.anchor.astimezone(UTC).isoformat(),
            "speed": self.speed,
        }


class SteppedClock:
    """Market time from a segment file that one controller moves forward: the simulated clock of the segment
    the file holds (``{"start", "anchor", "speed"}``), re-read when the file changes (at most every
    ``RELOAD_S`` of real time). Every process of a deployment reads the same file, so a jump written once is
    seen by all of them within ``RELOAD_S``. ``flexmarket demo`` uses it to skip the hours in which nothing
    happens instead of running a whole day fast.

    Invariant: :meth:`now` never runs backwards, whatever the file says (:func:`advance_to` only writes
    later instants; a reader also keeps the latest value it returned)."""

    RELOAD_S = 0.1

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._segment = read_segment(self.path)
        self._checked = time.monotonic()
        self._mtime_ns = self._stat()
        self._last_us = 0
        self._guard = threading.Lock()

    def _stat(self) -> int:
        try:
            return self.path.stat().st_mtime_ns
        except OSError:
            return -1

    def segment(self) -> SimulatedClock:
        if time.monotonic() - self._checked >= self.RELOAD_S:
            self._checked = time.monotonic()
            mtime = self._stat()
            if mtime != self._mtime_ns and mtime >= 0:
                self._segment, self._mtime_ns = read_segment(self.path), mtime
        return self._segment

    @property
    def speed(self) -> float:
        return self.segment().speed

    def now_us(self) -> int:
        with self._guard:
            self._last_us = max(self._last_us, self.segment().now_us())
            return self._last_us

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.now_us() / 1_000_000, UTC)

    def describe(self) -> dict[str, str | float]:
        return {**self.segment().describe(), "kind": "simulated", "stepped": str(self.path)}


def read_segment(path: Path) -> SimulatedClock:
    """The segment a clock file holds."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    return SimulatedClock(
        start=datetime.fromisoformat(doc["start"]),
        anchor=datetime.fromisoformat(doc["anchor"]),
        speed=float(doc.get("speed", 1.0)),
    )


def write_segment(path: Path, start: datetime, speed: float = 1.0) -> SimulatedClock:
    """Start a clock file (or restart it) at ``start`` now, running ``speed`` × real time. Atomic (rename)."""
    segment = SimulatedClock(start=start, anchor=datetime.now(UTC), speed=speed)
    tmp = Path(path).with_suffix(".tmp")
    doc = {"start": segment.start.isoformat(), "anchor": segment.anchor.isoformat(), "speed": segment.speed}
    tmp.write_text(json.dumps(doc), encoding="utf-8")
    os.replace(tmp, path)
    return segment


def advance_to(path: Path, when: datetime, speed: float | None = None) -> datetime:
    """Move a clock file's market time forward to ``when`` (never back: an earlier ``when`` keeps the current
    instant), optionally at a new speed. Returns the instant the file now starts from."""
    current_segment = read_segment(path)
    start = max(when.astimezone(UTC), current_segment.now())
    write_segment(path, start, current_segment.speed if speed is None else speed)
    return start


_lock = threading.Lock()
_override: Clock | None = None
_built: tuple[Settings, Clock] | None = None


def _from_settings(settings: Settings) -> Clock:
    if settings.clock_file is not None:
        return SteppedClock(settings.clock_file)
    if settings.clock_start is None:
        return WallClock()
    anchor = settings.clock_anchor or datetime.now(UTC)
    return SimulatedClock(start=settings.clock_start, anchor=anchor, speed=settings.clock_speed)


def current() -> Clock:
    """The deployment's clock: the override if one is set, else built from the current settings (and
    rebuilt when the settings are reloaded, e.g. after `reset_settings()`)."""
    global _built
    if _override is not None:
        return _override
    settings = get_settings()
    built = _built
    if built is None or built[0] is not settings:
        with _lock:
            built = _built
            if built is None or built[0] is not settings:
                built = _built = (settings, _from_settings(settings))
    return built[1]


def now() -> datetime:
    """Market time, UTC. See the module docstring for which rules read it."""
    return current().now()


def now_us() -> int:
    """Market time as integer microseconds since the Unix epoch (the ledger's time stamps)."""
    return current().now_us()


def wall_now() -> datetime:
    """Real time, UTC: for transport timers only (signatures, TTLs, retries, caches)."""
    return datetime.now(UTC)


def speed() -> float:
    """Simulated seconds per real second (1 on the wall clock): periodic market work scales by it."""
    clock = current()
    return clock.speed if isinstance(clock, SimulatedClock | SteppedClock) else 1.0


def describe() -> dict[str, str | float]:
    """What runs and statements record about the clock they ran under."""
    return current().describe()


def set_clock(clock: Clock | None) -> None:
    """Override the process's clock (tests); ``None`` returns to the one the settings describe."""
    global _override
    with _lock:
        _override = clock


def pinned_env(env: dict[str, str]) -> dict[str, str]:
    """The clock variables for the processes of one deployment, with the anchor pinned once so that every
    process and worker reads the same simulated instant. ``env`` is the environment they will get; a
    simulated start without an anchor takes this process's anchor (or now). Empty on the wall clock."""
    if env.get("FLEXMARKET_CLOCK_FILE"):
        return {"FLEXMARKET_CLOCK_FILE": env["FLEXMARKET_CLOCK_FILE"]}
    start = env.get("FLEXMARKET_CLOCK_START")
    if not start:
        return {}
    anchor = env.get("FLEXMARKET_CLOCK_ANCHOR")
    if not anchor:
        mine = current()
        same = isinstance(mine, SimulatedClock) and mine.start == datetime.fromisoformat(start.replace("Z", "+00:00"))
        anchor = (mine.anchor if isinstance(mine, SimulatedClock) and same else datetime.now(UTC)).isoformat()
    return {
        "FLEXMARKET_CLOCK_START": start,
        "FLEXMARKET_CLOCK_ANCHOR": anchor,
        "FLEXMARKET_CLOCK_SPEED": env.get("FLEXMARKET_CLOCK_SPEED", "1"),
    }
