"""The route class of the BAP client API (/api/v1): every request is authenticated by its API key, checked
against the permission table (bap/permissions.py) and audited (bap/audit.py) before and after its endpoint
runs.

Order of checks: key missing or bad → 401; the route has no table entry, or the key's role is not in it →
403; only then is the body validated and the endpoint run (so nobody learns anything about the API without
a key). Each answer is a JSON body {"error": {"code", "message"}} naming why. (The JSON body is read
before, but only to note in the audit log which transaction and order a call names.)

Endpoints that change state write their audit row in their own transaction through `run_audited`, so
the row commits with the change; everything else audited is written here once the answer is known.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import structlog
from fastapi import Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy.orm import Session

from bap import audit, auth
from bap.permissions import PERMISSIONS, Refusal, Role, changes_state, check, presented_token, refusal_message
from kernel import clock
from kernel.config import get_settings
from kernel.db import UNAVAILABLE, session_scope
from schemas import limits

log = structlog.get_logger(__name__)
T = TypeVar("T")
UNLISTED_ACTION = "unlisted"
AUDIT_RETRY_AFTER_S = 5


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def audit_unavailable() -> JSONResponse:
    return _error(
        503,
        "audit_unavailable",
        "the audit log cannot be written, so the request was refused and changed nothing; retry later",
        {"Retry-After": str(AUDIT_RETRY_AFTER_S)},
    )


def _short(value: Any) -> str | None:
    return value[: limits.MAX_NAME_CHARS] if isinstance(value, str) else None


async def _subject(request: Request) -> audit.Subject:
    """The transaction (and order) a call names: path, query or JSON body. Best effort: never refuses."""
    tx = request.path_params.get("transaction_id") or request.query_params.get("transaction_id")
    body: Any = None
    if changes_state(request.method) and "json" in request.headers.get("content-type", ""):
        try:
            body = await request.json()  # cached on the request: the endpoint reads the same bytes
        except ValueError:
            body = None
    if isinstance(body, dict):
        tx = tx or body.get("transaction_id")
        return audit.Subject(_short(tx), _short(body.get("bpp_id")), _short(body.get("provider_id")))
    return audit.Subject(_short(tx))


def _authenticate(token: str) -> auth.Principal | None:
    with session_scope("bap") as s:
        return auth.authenticate(s, token)


# Grid operators without API keys may sign the webhook's body instead (HMAC-SHA256 with the shared secret
# FLEXMARKET_GRID_WEBHOOK_SECRET): `X-Flexmarket-Signature: sha256=<hex>`. Only on these routes.
HMAC_ROUTES = frozenset({("POST", "/api/v1/grid-events")})
HMAC_HEADER = "x-flexmarket-signature"
HMAC_KEY_ID = "webhook-hmac"


async def _hmac_principal(request: Request, method: str, template: str) -> auth.Principal | None:
    secret = get_settings().grid_webhook_secret
    signature = request.headers.get(HMAC_HEADER)
    if not secret or signature is None or (method, template) not in HMAC_ROUTES:
        return None
    expected = "sha256=" + hmac.new(secret.encode(), await request.body(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(signature.strip(), expected):
        return None
    return auth.Principal(key_id=HMAC_KEY_ID, role=Role.OPERATOR, aggregator_id=None)


async def _authorize(request: Request, method: str, template: str) -> tuple[auth.Principal | None, Refusal | None]:
    token = presented_token(request.headers.get("authorization"), request.headers.get("x-api-key"))
    if token is None and request.headers.get(HMAC_HEADER) is not None:
        signed = await _hmac_principal(request, method, template)
        return (signed, None) if signed is not None else (None, Refusal.INVALID_KEY)
    if token is None:
        return None, Refusal.MISSING_KEY
    principal = await run_in_threadpool(_authenticate, token)
    if principal is None:
        return None, Refusal.INVALID_KEY
    return principal, check(method, template, principal.role)


def _refused(refusal: Refusal, principal: auth.Principal | None, method: str, template: str) -> JSONResponse:
    permission = PERMISSIONS.get((method, template))
    message = refusal_message(
        refusal,
        role=principal.role if principal else None,
        allowed=permission.roles if permission else frozenset(),
    )
    headers = {"WWW-Authenticate": 'Bearer realm="flexmarket-bap"'} if refusal.status == 401 else None
    return _error(refusal.status, refusal.value, message, headers)


def _must_record(call: audit.Call, status_code: int) -> bool:
    return not call.recorded and (changes_state(call.method) or status_code in (401, 403))


async def _finish(call: audit.Call, response: Response) -> Response:
    """The answer, once its audit row (if it needs one) is written; 503 if that row cannot be written."""
    if not _must_record(call, response.status_code):
        return response
    if response.status_code < 400 and changes_state(call.method):
        # Allowed, but not written in the endpoint's own transaction (`run_audited`): a change is already
        # committed, so a failure below would refuse it after the fact.
        log.warning("state change audited after its commit: use run_audited", action=call.action)
    body = response.body if isinstance(response, JSONResponse) else b""
    error = audit.error_of(bytes(body)) if response.status_code >= 400 else None
    try:
        await run_in_threadpool(lambda: audit.record_alone(call, status_code=response.status_code, error=error))
    except audit.AuditUnavailable:
        return audit_unavailable()
    return response


async def _record_raised(call: audit.Call, status_code: int, error: tuple[str, str]) -> bool:
    """The row of a call whose endpoint raised (the app's handlers shape the answer); False if it could not
    be written (logged)."""
    if not _must_record(call, status_code):
        return True
    try:
        await run_in_threadpool(lambda: audit.record_alone(call, status_code=status_code, error=error))
    except audit.AuditUnavailable:
        return False
    return True


def _validation_error(exc: RequestValidationError) -> tuple[str, str]:
    first = exc.errors()[0] if exc.errors() else {}
    loc = ".".join(str(p) for p in first.get("loc", ()))
    return "invalid_request", f"{loc}: {first.get('msg', 'invalid request')}"


class GuardedRoute(APIRoute):
    """An /api/v1 route: key, permission table, audit (see the module docstring)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        template = self.path_format

        async def route(request: Request) -> Response:
            method = request.method
            permission = PERMISSIONS.get((method, template))
            call = audit.Call(
                method=method,
                path=request.url.path,
                action=permission.action if permission else UNLISTED_ACTION,
                market_at=clock.now(),
                wall_at=clock.wall_now(),
                client_address=request.client.host if request.client else None,
                subject=await _subject(request),
            )
            principal, refusal = await _authorize(request, method, template)
            call.principal = principal
            if refusal is not None:
                return await _finish(call, _refused(refusal, principal, method, template))
            request.state.principal = principal
            request.state.audit_call = call
            try:
                response = await handler(request)
            except audit.AuditUnavailable:
                return audit_unavailable()
            except RequestValidationError as exc:
                if not await _record_raised(call, 400, _validation_error(exc)):
                    return audit_unavailable()
                raise
            except Exception as exc:  # the app's handlers answer: 503 for a lost database, else 500
                status = 503 if isinstance(exc, UNAVAILABLE) else 500
                await _record_raised(call, status, ("internal_error", type(exc).__name__))
                raise
            return await _finish(call, response)

        return route


def principal_of(request: Request) -> auth.Principal:
    """The principal GuardedRoute authenticated (only reachable behind it)."""
    principal: auth.Principal = request.state.principal
    return principal


async def run_audited(
    request: Request,
    fn: Callable[[Session], T],
    *,
    status_code: int,
    transaction_of: Callable[[T], str | None] = lambda _: None,
) -> T:
    """`fn(session)` and the call's audit row in one transaction: the row commits with the change or neither
    does (AuditUnavailable → 503). `transaction_of` names the transaction from `fn`'s result (a search's new
    one); otherwise the one the request named is recorded."""
    call: audit.Call = request.state.audit_call

    def work() -> T:
        with session_scope("bap") as s:
            result = fn(s)
            audit.record(s, call, status_code=status_code, transaction_id=transaction_of(result))
            return result

    return await run_in_threadpool(work)
