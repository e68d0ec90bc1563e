"""Route: create an API key with an admin key (ledger/api_keys.py)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import Field

from ledger.api.deps import Body, LedgerRoute, Runtime, Text, Who, tx
from ledger.api_keys import create_api_key

router = APIRouter(route_class=LedgerRoute)


class ApiKeyIn(Body):
    role: Literal["admin", "finance", "provider", "bap", "supplier", "meter_operator"]
    participant_id: Text | None = None
    label: Annotated[str, Field(max_length=200)] = ""


@router.post("/apikeys")
def post_apikey(body: ApiKeyIn, rt: Runtime, who: Who) -> JSONResponse:
    token = tx(rt, lambda c: create_api_key(c, body.role, body.participant_id, body.label))
    return JSONResponse({"api_key": token, "role": body.role, "participant_id": body.participant_id}, status_code=201)
