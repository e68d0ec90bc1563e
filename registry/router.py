"""Registry HTTP API: /subscribe and /lookup as in registry.yaml, plus operator approval."""

from __future__ import annotations

import hmac
import json

from fastapi import APIRouter, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from beckn.webapp import CLIENT_API_RESPONSES
from kernel.db import session_scope
from registry import service
from schemas.registry import LookupRequest, Subscription

router = APIRouter(tags=["registry"], responses={k: CLIENT_API_RESPONSES[k] for k in (400, 401, 404, 413, 503)})


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"code": str(status), "message": message}})


def _field(exc: ValidationError) -> str:
    """`field.path: reason` of the first validation error."""
    first = exc.errors()[0]
    return f"{'.'.join(str(p) for p in first.get('loc', ())) or 'body'}: {first.get('msg', 'invalid')}"


def _is_operator(token: str | None) -> bool:
    if not token:
        return False
    scheme, _, value = token.partition(" ")
    candidate = value if scheme.lower() == "bearer" else token
    return hmac.compare_digest(candidate.encode(), service.operator_token().encode())


async def _json_body(request: Request) -> tuple[bytes, object]:
    raw = await request.body()
    try:
        return raw, json.loads(raw)
    except (ValueError, RecursionError) as exc:  # the body guard refuses deep JSON first (beckn/webapp.py)
        raise service.RegistryRequestError(f"malformed JSON: {exc}") from exc


@router.post("/subscribe")
async def subscribe(
    request: Request,
    authorization: str | None = Header(default=None),
    x_operator_token: str | None = Header(default=None),
) -> JSONResponse:
    """Register or rotate a key. Signed (BECKN-006) with the key being registered, or with a current
    key of the same subscriber (rotation). Answer: {"status": "UNDER_SUBSCRIPTION" | "SUBSCRIBED"}."""
    try:
        raw, data = await _json_body(request)
        body = Subscription.model_validate(data)

        def work() -> str:
            with session_scope("registry") as s:
                return service.subscribe(s, body, raw, authorization, _is_operator(x_operator_token))

        status = await run_in_threadpool(work)
    except ValidationError as exc:
        return _error(400, f"invalid subscription: {_field(exc)}")
    except service.RegistryRequestError as exc:
        return _error(exc.status, str(exc))
    return JSONResponse({"status": status})


@router.post("/lookup")
async def lookup(request: Request) -> JSONResponse:
    """Subscriptions matching the filter (any Subscription fields; also flat `city`/`country`)."""
    try:
        _, data = await _json_body(request)
        req = LookupRequest.model_validate(data)
    except ValidationError as exc:
        return _error(400, f"invalid lookup: {_field(exc)}")
    except service.RegistryRequestError as exc:
        return _error(exc.status, str(exc))

    def work() -> list:
        with session_scope("registry") as s:
            return service.lookup(s, req)

    return JSONResponse(await run_in_threadpool(work))


@router.post("/admin/subscribers/{subscriber_id}/approve")
async def approve(subscriber_id: str, authorization: str | None = Header(default=None)) -> JSONResponse:
    """Operator approval of a pending subscription (Authorization: Bearer <operator token>)."""
    if not _is_operator(authorization):
        return _error(401, "operator token required")

    def work() -> str:
        with session_scope("registry") as s:
            return service.approve(s, subscriber_id).status

    try:
        return JSONResponse({"subscriber_id": subscriber_id, "status": await run_in_threadpool(work)})
    except service.RegistryRequestError as exc:
        return _error(exc.status, str(exc))
