"""What every participant's FastAPI app shares: health, Prometheus metrics, logging, error shape."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import import_module
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from beckn.http import make_client
from beckn.pipeline import FastLane
from kernel.logging import configure_logging
from kernel.process import freeze_startup_objects

log = structlog.get_logger(__name__)


def add_ops_routes(app: FastAPI, participant: str) -> None:
    """/health and /metrics (Prometheus), the same on every participant."""
    app.state.participant = participant

    @app.get("/health", tags=["ops"])
    def health() -> dict[str, str]:
        return {"status": "ok", "participant": participant}

    @app.get("/metrics", tags=["ops"], include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def served_app(factory: str) -> Any:
    """What `flexmarket serve` runs: the participant's app, behind the Beckn fast lane when it serves
    Beckn actions (its factory sets app.state.beckn_route; beckn/pipeline.py FastLane)."""
    module, _, name = factory.partition(":")
    # By design the factory is named by a dotted path (`flexmarket serve` chooses the participant), so
    # its module is imported here, at call time, not by this module.
    app = getattr(import_module(module), name)()
    route = getattr(app.state, "beckn_route", None)
    return FastLane(app, route) if route is not None else app


def create_base_app(
    participant: str,
    title: str,
    description: str,
    on_startup: Callable[[FastAPI], None] | None = None,
    on_shutdown: Callable[[FastAPI], None] | None = None,
) -> FastAPI:
    configure_logging(participant)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One pooled client per process, bound to uvicorn's loop (registry lookups, relays).
        app.state.http = make_client()
        if on_startup:
            on_startup(app)
        freeze_startup_objects()
        log.info("started", participant=participant)
        yield
        if on_shutdown:
            on_shutdown(app)
        await app.state.http.aclose()

    app = FastAPI(title=title, description=description, version="0.1.0", lifespan=lifespan)
    add_ops_routes(app, participant)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Client-API input errors: 400 with a readable message (not FastAPI's default 422 dump).
        errors = [{"loc": ".".join(str(p) for p in e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        first = errors[0] if errors else {"loc": "", "msg": "invalid request"}
        return JSONResponse(
            status_code=400,
            content={
                "error": {"code": "invalid_request", "message": f"{first['loc']}: {first['msg']}", "details": errors}
            },
        )

    return app
