"""What every participant's FastAPI app shares: health, Prometheus metrics, logging, error shape."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import import_module
from typing import Any
from urllib.parse import parse_qsl

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from beckn.http import make_client
from beckn.pipeline import FastLane
from kernel.db import UNAVAILABLE
from kernel.logging import configure_logging
from kernel.process import freeze_startup_objects
from schemas import limits

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


# Retry-After on a 503 when the database is unavailable: long enough for a restart or failover to finish.
UNAVAILABLE_RETRY_AFTER_S = 2


def add_unavailable_handlers(app: FastAPI) -> None:
    """A lost or unreachable database (kernel/db.py UNAVAILABLE) answers 503 + Retry-After, not 500: the
    request's transaction was rolled back, nothing half-written remains, and the same request may be sent
    again."""

    async def _unavailable(_: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable", error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return JSONResponse(
            {"error": {"code": "unavailable", "message": "the database is unavailable; retry later"}},
            status_code=503,
            headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)},
        )

    for cls in UNAVAILABLE:
        app.add_exception_handler(cls, _unavailable)


# The error statuses every JSON API answers (OpenAPI `responses=`; the body is {"error": {"code", "message"}}).
_ERROR_BODY = {
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "error": {
                        "type": "object",
                        "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                    }
                },
            }
        }
    }
}
_BECKN_NACK = {
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "message": {"type": "object", "properties": {"ack": {"type": "object"}}},
                    "error": {
                        "type": "object",
                        "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                    },
                },
            }
        }
    }
}
CLIENT_API_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "Malformed input: the message names the field (also JSON nested too deeply)", **_ERROR_BODY},
    401: {"description": "Missing or invalid credentials", **_ERROR_BODY},
    403: {"description": "These credentials may not do this", **_ERROR_BODY},
    404: {"description": "Unknown transaction, order, account or other resource", **_ERROR_BODY},
    409: {"description": "Conflicts with what is already recorded", **_ERROR_BODY},
    413: {"description": f"Body over {limits.MAX_BODY_BYTES} bytes, refused before it is read", **_ERROR_BODY},
    422: {"description": "Well-formed, but refused by a domain rule (the code says which)", **_ERROR_BODY},
    429: {"description": "Too many requests: retry after the Retry-After header's seconds", **_ERROR_BODY},
    503: {"description": "A service this one needs is unavailable; retry later", **_ERROR_BODY},
}
BECKN_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "ACK, or a NACK for a business refusal (error.code says which)", **_BECKN_NACK},
    400: {"description": "NACK: malformed message; error.paths names the field", **_BECKN_NACK},
    401: {"description": "NACK: signature refused (WWW-Authenticate says how to sign)", **_BECKN_NACK},
    404: {"description": "NACK: an action or platform this participant does not serve", **_BECKN_NACK},
    413: {"description": f"NACK: body over {limits.MAX_BODY_BYTES} bytes, refused before it is read", **_BECKN_NACK},
    429: {"description": "NACK: too many messages from this sender; retry after Retry-After", **_BECKN_NACK},
    503: {"description": "NACK: the registry cannot be asked to verify the signature; retry later", **_BECKN_NACK},
}


class BodyGuard:
    """ASGI middleware for the JSON APIs under `prefixes` (schemas/limits.py): a path or query parameter
    holding a NUL or control character gets a 400 naming it (`path`, `query.<name>`); a body over MAX_BODY_BYTES
    is refused with 413 before it is buffered (declared Content-Length, or counted while streamed); a JSON
    body nested deeper than MAX_JSON_DEPTH, or holding a NUL/control character in a string or a number out
    of range, gets a 400 naming where — before any route parses it (no RecursionError, no NUL reaching
    PostgreSQL). The checked body is then replayed to the app."""

    def __init__(self, app: ASGIApp, prefixes: tuple[str, ...]) -> None:
        self.app = app
        self.prefixes = prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefixes):
            await self.app(scope, receive, send)
            return
        problem = _path_or_query_problem(scope)
        if problem is not None:
            await _refuse(send, 400, "invalid_request", problem)
            return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return

        async def body_chunks() -> AsyncIterator[bytes]:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    raise _ClientGone
                yield message.get("body", b"")
                if not message.get("more_body", False):
                    return

        try:
            raw = await limits.read_within_limit(body_chunks(), dict(scope["headers"]).get(b"content-length"))
        except limits.BodyTooLarge as exc:
            await _refuse(send, 413, "body_too_large", str(exc))
            return
        except _ClientGone:
            return
        problem = _json_problem(raw) if raw else None  # whatever the Content-Type says: routes parse JSON
        if problem is not None:
            await _refuse(send, 400, "invalid_request", problem)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class _ClientGone(Exception):
    """The client disconnected before its whole body arrived: nothing to answer."""


def _path_or_query_problem(scope: Scope) -> str | None:
    """`where: why` when the decoded path or a query parameter holds a NUL or control character (an id in
    the path reaches PostgreSQL, which refuses NUL in text)."""
    try:
        limits.check_text(scope["path"], "path", one_line=True)
        for name, value in parse_qsl(scope.get("query_string", b"").decode("utf-8"), keep_blank_values=True):
            limits.check_text(name, "query", one_line=True)
            limits.check_text(value, f"query.{name}", one_line=True)
    except UnicodeDecodeError:
        return "query: not UTF-8"
    except ValueError as exc:
        return str(exc)
    return None


def _json_problem(raw: bytes) -> str | None:
    problem = limits.depth_error(raw)
    if problem is None and limits.maybe_bad(raw):
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError):
            return None  # malformed JSON: the route's own parser says so
        bad = limits.find_bad_value(value, "body")
        if bad is not None:
            problem = f"{bad[0]}: {bad[1]}"
    return problem


async def _refuse(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def add_body_guard(app: FastAPI, *prefixes: str) -> None:
    """Guard the JSON bodies of the routes under these path prefixes (BodyGuard)."""
    app.add_middleware(BodyGuard, prefixes=prefixes)


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
    add_unavailable_handlers(app)

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
