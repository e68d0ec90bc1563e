"""Routes: publish and read settlement policy versions (ledger/policies.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ledger import policies
from ledger.api.deps import Body, LedgerRoute, Runtime, Text, Who, created, tx

router = APIRouter(route_class=LedgerRoute)


class PolicyIn(Body):
    version: Text
    params: dict[str, Any]


@router.post("/policies")
def post_policy(body: PolicyIn, rt: Runtime, who: Who) -> JSONResponse:
    return created(tx(rt, lambda c: policies.create_policy(c, body.version, body.params)))


@router.get("/policies/{version}")
def get_policy(version: str, rt: Runtime, who: Who) -> dict[str, Any]:
    policy = tx(rt, lambda c: policies.get_policy(c, version))
    return {"version": version, "params": policy.to_json()}
