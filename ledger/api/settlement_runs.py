"""Routes: run what settlement is due, read a stored run (ledger/settlement_runs.py)."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from fastapi import APIRouter
from pydantic import AwareDatetime

from kernel import clock
from ledger import settlement_runs
from ledger.api.deps import Body, LedgerRoute, Runtime, Text, Who, read, require_order_reader
from ledger.db import CLOCK_SKEW, iso
from ledger.errors import LedgerError
from ledger.orders import load_order

router = APIRouter(route_class=LedgerRoute)


class SettlementRunIn(Body):
    order_id: Text | None = None
    as_of: AwareDatetime | None = None
    force: bool = False


@router.post("/settlement/run")
def post_settlement_run(body: SettlementRunIn, rt: Runtime, who: Who) -> dict[str, Any]:
    """Run every settlement run due now (or at `as_of`, which may not be in the future)."""
    now = clock.now()
    as_of = now if body.as_of is None else body.as_of.astimezone(UTC)
    if as_of > now + CLOCK_SKEW:
        raise LedgerError("as_of_in_future", "settlement cannot be run as of a future instant")
    if body.order_id is not None:
        read(rt, lambda c: load_order(c, body.order_id or ""))
    outcomes = settlement_runs.settle_due(
        rt.url, as_of, order_ids=None if body.order_id is None else [body.order_id], force=body.force
    )
    return {"as_of": iso(as_of), "runs": [o.as_json() for o in outcomes]}


@router.get("/settlement/{order_id}/{run}")
def get_settlement_run(order_id: str, run: str, rt: Runtime, who: Who) -> dict[str, Any]:
    terms, _ = read(rt, lambda c: load_order(c, order_id))
    require_order_reader(who, terms)
    out = read(rt, lambda c: settlement_runs.stored_run(c, order_id, run))
    out["as_of"] = iso(out["as_of"])
    return out
