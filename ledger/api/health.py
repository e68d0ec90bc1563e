"""Route: liveness, with the wall time and the market time (kernel/clock.py)."""

from __future__ import annotations

from fastapi import APIRouter

from kernel import clock
from ledger.api.deps import LedgerRoute

router = APIRouter(route_class=LedgerRoute)


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok", "time": clock.wall_now().isoformat(), "market_time": clock.now().isoformat()}
