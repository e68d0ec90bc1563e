"""Route: `ledger verify` over HTTP (ledger/verify.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ledger.api.deps import LedgerRoute, Runtime, Who
from ledger.verify import verify_ledger

router = APIRouter(route_class=LedgerRoute)


@router.get("/verify")
def get_verify(rt: Runtime, who: Who) -> dict[str, Any]:
    with rt.pool.connection() as conn:
        report = verify_ledger(conn, rt.keypair.signing_public_key_b64)
    chain = report.chain
    return {
        "ok": report.ok,
        "summary": report.summary(),
        "entry_count": chain.entry_count,
        "link_count": chain.link_count,
        "head_hash": chain.head_hash.hex(),
        "problem": None if chain.problem is None else chain.problem.message,
        "problems": report.problems,
        "seconds": round(report.seconds, 3),
    }
