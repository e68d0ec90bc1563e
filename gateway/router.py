"""Gateway HTTP: /search (from BAPs) and /on_search (from BPPs) through the one Beckn pipeline."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from beckn.webapp import BECKN_RESPONSES

router = APIRouter(tags=["beckn"])


@router.post("/{action}", summary="Beckn action served by the gateway (search, on_search)", responses=BECKN_RESPONSES)
async def beckn_action(action: str, request: Request) -> JSONResponse:
    return await request.app.state.pipeline.handle(request, action, request.app.state.identity)
