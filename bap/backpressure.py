"""Backpressure at the BAP's client API: a bounded number of searches in flight.

A search is in flight from the moment the client API accepts it until its fan-out has completed (an
on_search, catalog or error, from every BPP the registry lists for its domain, city and country — the
gateway's own fan-out rule) or its ttl has passed. Beyond FLEXMARKET_BAP_MAX_SEARCHES_IN_FLIGHT the client
API answers 429 with Retry-After instead of queueing searches the network cannot answer in time. A BPP that
let a search time out is not waited for again until it answers something (one dead platform must not hold
every search for its full ttl).

The count lives in the BAP web process's memory: that one process (`flexmarket up` runs one per
participant) accepts the searches and receives their on_search callbacks (bap/service.py on_search). With
several BAP replicas each would hold its own bound.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Collection

RATE_WINDOW_S = 5.0  # completions over this window give the rate Retry-After is estimated from


class SearchesInFlight:
    def __init__(self, limit: int, timeout_s: float, now: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit  # ≤ 0: unbounded
        self.timeout_s = timeout_s
        self.now = now
        self._lock = threading.Lock()
        self._reserved = 0
        self._open: dict[str, tuple[float, set[str]]] = {}  # transaction → (deadline, BPPs yet to answer)
        self._completions: deque[float] = deque(maxlen=4096)  # when fan-outs completed, recent ones
        self._silent: set[str] = set()  # BPPs that let a search time out and have not answered since

    def _expire(self, now: float) -> None:
        for tx in [tx for tx, (deadline, _) in self._open.items() if deadline <= now]:
            self._silent |= self._open.pop(tx)[1]

    def __len__(self) -> int:
        with self._lock:
            self._expire(self.now())
            return len(self._open) + self._reserved

    def reserve(self) -> int | None:
        """Take a slot for a search about to be accepted: None, or the seconds to wait (Retry-After)."""
        now = self.now()
        with self._lock:
            self._expire(now)
            if self.limit <= 0 or len(self._open) + self._reserved < self.limit:
                self._reserved += 1
                return None
            # Come back after about one fan-out's time: what is in flight over the rate fan-outs have been
            # completing at (slots free continuously, so shorter only makes refused clients poll); with none
            # completing lately, when the oldest in flight times out. 1–5 s either way.
            recent = [t for t in self._completions if now - t <= RATE_WINDOW_S]
            if recent:
                wait = len(self._open) / (len(recent) / RATE_WINDOW_S)
            else:
                wait = min((d for d, _ in self._open.values()), default=now + 1) - now
            return max(1, min(5, math.ceil(wait)))

    def release(self) -> None:
        """The reserved search was not accepted after all."""
        with self._lock:
            self._reserved = max(0, self._reserved - 1)

    def opened(self, transaction_id: str, expected: Collection[str]) -> None:
        """The reserved search was accepted; `expected`: the BPPs whose answers complete its fan-out."""
        with self._lock:
            self._reserved = max(0, self._reserved - 1)
            waiting = set(expected) - self._silent
            if waiting:
                self._open[transaction_id] = (self.now() + self.timeout_s, waiting)

    def answered(self, transaction_id: str | None, bpp_id: str | None) -> None:
        """An on_search for the transaction was accepted."""
        if transaction_id is None:
            return
        with self._lock:
            self._silent.discard(bpp_id or "")
            entry = self._open.get(transaction_id)
            if entry is not None and bpp_id is not None:
                entry[1].discard(bpp_id)
                if not entry[1]:
                    del self._open[transaction_id]
                    self._completions.append(self.now())


# The BAP process's one tracker, sized from the settings by bap/main.py create_app.
SEARCHES = SearchesInFlight(limit=0, timeout_s=30.0)
