"""The operator dashboard at /dashboard: server-rendered pages (Jinja2, bap/templates/dashboard/), a few lines of
JavaScript that refresh each panel (bap/static/dashboard.js) and the vendored Chart.js; no build step, no CDN.

Who: a login with a BAP API key (bap/auth.py), kept as a signed session cookie (bap/dashboard_session.py).
Operator and viewer keys may log in; a viewer sees every panel and no action, and the server refuses its POSTs
(403) whatever the page shows. An unauthenticated page request is sent to the login form; a fragment request
gets 401, and the page's script then goes to the login form.

Guard: these routes are not in the JSON API's permission table (bap/permissions.py): they are HTML, they
authenticate by session cookie rather than by key, and the matrix test walks /api/v1 only. Each action instead
names the JSON API route whose use case it runs (ACTIONS), and the role check is that route's entry in the one
table — so approving here needs exactly what approving through the API needs. Every action runs the same use
case with the same audit row (bap/auth_route.py `run_audited`: who, what, when; the reason typed in the form is
the use case's reason); refused POSTs (401, 403) and logins are audited too, as the JSON API does.

CSRF: every POST carries the session's token and a same-host Origin (else Referer), or it is refused 403
before anything else is read (bap/dashboard_session.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, urlencode

import jinja2
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.orm import Session

from bap import (
    audit,
    auth,
    dashboard_data,
    dashboard_session,
    governance,
    orchestrator_router,
    procurement,
    procurement_engine,
)
from bap.auth import Principal
from bap.auth_route import run_audited
from bap.dashboard_session import COOKIE_NAME, COOKIE_PATH, CSRF_FIELD, CSRF_HEADER, DASHBOARD_ROLES
from bap.permissions import PERMISSIONS, Role, check, refusal_message
from bap.router import run_in_session
from bap.service import ClientError
from kernel import clock
from schemas import limits

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates" / "dashboard"
STATIC = HERE / "static"
MAX_FORM_BYTES = 16 * 1024

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

# Each action: the JSON API route whose permission entry and use case it shares.
ACTIONS: dict[str, tuple[str, str]] = {
    "approve": ("POST", "/api/v1/procurements/{procurement_id}/approve"),
    "reject": ("POST", "/api/v1/procurements/{procurement_id}/reject"),
    "halt": ("POST", "/api/v1/halt"),
    "resume": ("POST", "/api/v1/resume"),
}
NOTICES = {
    "approved": "Procurement approved: it is ordering now.",
    "rejected": "Procurement rejected: no order is placed.",
    "halted": "Kill switch on: no new orders; orders not yet started are being cancelled.",
    "resumed": "Kill switch lifted.",
    "logged_out": "Logged out.",
}
Notice = Literal["approved", "rejected", "halted", "resumed"]

dashboard = APIRouter(prefix="/dashboard", include_in_schema=False)


def mount(app: FastAPI) -> None:
    """Serve the dashboard and its static files on the BAP's app (its identity must be set: the session
    secret is derived from it)."""
    app.state.dashboard_secret = dashboard_session.secret_from_seed(app.state.identity.keys.signing_seed_b64)
    app.mount("/dashboard/static", StaticFiles(directory=STATIC), name="dashboard-static")
    app.include_router(dashboard)


# -- who is looking --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Viewer:
    """The logged-in key, its session and the session's CSRF token (for the templates' forms)."""

    principal: Principal
    session: dashboard_session.DashboardSession
    csrf: str

    @property
    def role(self) -> str:
        return self.principal.role.value

    @property
    def can_act(self) -> bool:
        return self.principal.role is Role.OPERATOR


def _secret(request: Request) -> bytes:
    secret: bytes = request.app.state.dashboard_secret
    return secret


async def _viewer(request: Request) -> Viewer | None:
    secret = _secret(request)
    session = dashboard_session.read(secret, request.cookies.get(COOKIE_NAME), now_s=clock.wall_now().timestamp())
    if session is None:
        return None
    principal = await run_in_session(lambda s: dashboard_session.principal_of(s, session))
    if principal is None:
        return None
    return Viewer(principal, session, dashboard_session.csrf_token(secret, session))


# -- answers ---------------------------------------------------------------------------------------------------
def _render(template: str, **context: Any) -> str:
    return _env.get_template(template).render(**context)


def _html(template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("viewer", None)
    return HTMLResponse(_render(template, **context), status_code=status_code, headers=SECURITY_HEADERS)


def _message(viewer: Viewer | None, status_code: int, title: str, message: str) -> HTMLResponse:
    return _html("message.html", status_code, viewer=viewer, title=title, message=message, status=status_code)


def _to_login() -> RedirectResponse:
    return RedirectResponse("/dashboard/login", status_code=303, headers=SECURITY_HEADERS)


def _fragment_refused() -> Response:
    return Response(
        "your dashboard session has ended: log in again at /dashboard/login",
        status_code=401,
        media_type="text/plain",
        headers={**SECURITY_HEADERS, "X-Dashboard-Login": "/dashboard/login"},
    )


def _call(request: Request, action: str) -> audit.Call:
    return audit.Call(
        method=request.method,
        path=request.url.path,
        action=action,
        market_at=clock.now(),
        wall_at=clock.wall_now(),
        client_address=request.client.host if request.client else None,
        subject=audit.Subject(),
    )


async def _audited_refusal(call: audit.Call, viewer: Viewer | None, status: int, code: str, message: str) -> Response:
    """A refused or failed call: its audit row (written alone, it changed nothing), then the message page."""
    try:
        await run_in_threadpool(lambda: audit.record_alone(call, status_code=status, error=(code, message)))
    except audit.AuditUnavailable:
        return _message(viewer, 503, "Audit log unavailable", "the audit log cannot be written; nothing changed")
    return _message(viewer, status, "Refused" if status in (401, 403) else "Not done", message)


class FormError(ValueError):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form body (at most MAX_FORM_BYTES): each field's first value; none for an empty body."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise FormError(f"the form is larger than {MAX_FORM_BYTES} bytes", 413)
    if not body:
        return {}
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise FormError("content-type: send the form as application/x-www-form-urlencoded", 415)
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20, strict_parsing=False)
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormError(f"the form cannot be read: {exc}") from exc
    return {k: v[0] for k, v in fields.items()}


def _origin_ok(request: Request) -> bool:
    return dashboard_session.same_origin(
        origin=request.headers.get("origin"), referer=request.headers.get("referer"), host=request.headers.get("host")
    )


# -- login and logout ------------------------------------------------------------------------------------------
@dashboard.get("/login")
async def login_form(request: Request) -> Response:
    if await _viewer(request) is not None:
        return RedirectResponse("/dashboard", status_code=303)
    notice = NOTICES.get(request.query_params.get("notice", ""))
    return _html("login.html", error=None, notice=notice)


async def _login_refused(call: audit.Call, status: int, code: str, message: str) -> Response:
    try:
        await run_in_threadpool(lambda: audit.record_alone(call, status_code=status, error=(code, message)))
    except audit.AuditUnavailable:
        return _html("login.html", 503, error="the audit log cannot be written; try again later", notice=None)
    return _html("login.html", status, error=message, notice=None)


@dashboard.post("/login")
async def login(request: Request) -> Response:
    call = _call(request, "dashboard_login")
    if not _origin_ok(request):
        return await _login_refused(call, 403, "csrf", "the login form must be sent from this dashboard's own page")
    try:
        form = await _form(request)
    except FormError as exc:
        return _html("login.html", exc.status, error=str(exc), notice=None)
    token = form.get("api_key", "").strip()
    principal = await run_in_session(lambda s: auth.authenticate(s, token)) if token else None
    if principal is None:
        return await _login_refused(call, 401, "invalid_api_key", "api_key: unknown, malformed or revoked")
    call.principal = principal
    if principal.role not in DASHBOARD_ROLES:
        names = " or ".join(sorted(r.value for r in DASHBOARD_ROLES))
        why = f"api_key: the dashboard is for {names} keys; yours is an {principal.role} key"
        return await _login_refused(call, 403, "role_forbidden", why)
    value, _ = dashboard_session.issue(_secret(request), principal, now_s=clock.wall_now().timestamp())
    try:
        await run_in_threadpool(lambda: audit.record_alone(call, status_code=303))
    except audit.AuditUnavailable:
        return _html("login.html", 503, error="the audit log cannot be written; try again later", notice=None)
    response = RedirectResponse("/dashboard", status_code=303, headers=SECURITY_HEADERS)
    response.set_cookie(
        COOKIE_NAME,
        value,
        max_age=dashboard_session.SESSION_TTL_S,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@dashboard.post("/logout")
async def logout(request: Request) -> Response:
    viewer = await _viewer(request)
    if viewer is None:
        return _to_login()
    call = _call(request, "dashboard_logout")
    call.principal = viewer.principal
    refused = await _csrf_refusal(request, viewer, call)
    if refused is not None:
        return refused
    try:
        await run_in_threadpool(lambda: audit.record_alone(call, status_code=303))
    except audit.AuditUnavailable:
        return _message(viewer, 503, "Audit log unavailable", "the audit log cannot be written; nothing changed")
    response = RedirectResponse("/dashboard/login?notice=logged_out", status_code=303, headers=SECURITY_HEADERS)
    response.delete_cookie(COOKIE_NAME, path=COOKIE_PATH, httponly=True, samesite="strict")
    return response


async def _csrf_refusal(
    request: Request, viewer: Viewer, call: audit.Call, form: dict[str, str] | None = None
) -> Response | None:
    """403 (audited) unless the request comes from this server's page and carries the session's CSRF token."""
    if not _origin_ok(request):
        return await _audited_refusal(call, viewer, 403, "csrf", "the request's Origin is not this dashboard")
    if form is None:
        try:
            form = await _form(request)
        except FormError as exc:
            return await _audited_refusal(call, viewer, exc.status, "invalid_request", str(exc))
    presented = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
    if not dashboard_session.csrf_ok(_secret(request), viewer.session, presented):
        return await _audited_refusal(call, viewer, 403, "csrf", f"{CSRF_FIELD}: missing or not this session's")
    return None


# -- the page and its panels -----------------------------------------------------------------------------------
ProcurementParam = Annotated[limits.Identifier | None, Query(description="the procurement to show")]
ProviderParam = Annotated[limits.Name | None, Query(description="the provider whose load shift to show")]


@dataclass(frozen=True)
class Selection:
    """What the page shows in detail: a procurement (None: the newest) and a provider (None: one of its)."""

    procurement_id: str | None
    provider_id: str | None

    def query(self) -> str:
        pairs = {"procurement": self.procurement_id, "provider": self.provider_id}
        return urlencode({k: v for k, v in pairs.items() if v})


def _procurements(s: Session, sel: Selection) -> dict[str, Any]:
    return {"procurements": dashboard_data.procurements(s), "selected": sel.procurement_id}


def _detail(s: Session, sel: Selection) -> dict[str, Any]:
    pid = sel.procurement_id or dashboard_data.newest_procurement_id(s)
    return {"detail": dashboard_data.procurement_detail(s, pid) if pid else None, "asked": sel.procurement_id}


def _approvals(s: Session, sel: Selection) -> dict[str, Any]:
    return {"approvals": dashboard_data.pending_approvals(s)}


def _governance(s: Session, sel: Selection) -> dict[str, Any]:
    return {"gov": dashboard_data.governance_state(s), "market_now": clock.now()}


def _log(name: str) -> Callable[[Session, Selection], dict[str, Any]]:
    def read(s: Session, sel: Selection) -> dict[str, Any]:
        lines = dashboard_data.latest_log(s, name, procurement_id=sel.procurement_id)
        return {"log_name": name, "lines": lines, "filtered_by": sel.procurement_id}

    return read


def _alerts(s: Session, sel: Selection) -> dict[str, Any]:
    return {"alerts": dashboard_data.open_alerts(s)}


def _tokens(s: Session, sel: Selection) -> dict[str, Any]:
    return {"positions": dashboard_data.token_positions(s)}


def _ledger(s: Session, sel: Selection) -> dict[str, Any]:
    first, last = dashboard_data.statement_period(clock.now())
    try:
        accounts = dashboard_data.statement_accounts(s)
    except RuntimeError:  # no ledger holder id configured for this BAP
        accounts = []
    return {"ledger": dashboard_data.ledger_head(), "accounts": accounts, "first_day": first, "last_day": last}


def _loadshift(s: Session, sel: Selection) -> dict[str, Any]:
    known = dashboard_data.providers(s)
    provider = sel.provider_id
    if provider is None:
        pid = sel.procurement_id or dashboard_data.newest_procurement_id(s)
        detail = dashboard_data.procurement_detail(s, pid) if pid else None
        ordered = [o["provider_id"] for o in (detail or {}).get("orders", [])]
        provider = ordered[0] if ordered else (known[0] if known else None)
    schedule = dashboard_data.provider_schedule(s, provider) if provider else None
    return {"providers": known, "provider": provider, "schedule": schedule}


@dataclass(frozen=True)
class Panel:
    title: str
    read: Callable[[Session, Selection], dict[str, Any]]
    refresh_s: int
    lazy: bool = False  # asks another participant over HTTP: loaded by the page's script, not in the page


PANELS: dict[str, Panel] = {
    "governance": Panel("Kill switch and policy", _governance, 5),
    "approvals": Panel("Pending approvals", _approvals, 5),
    "procurements": Panel("Procurements", _procurements, 5),
    "detail": Panel("Procurement", _detail, 5),
    "loadshift": Panel("Provider load shift", _loadshift, 60, lazy=True),
    "market-log": Panel("Market log", _log("market"), 5),
    "carbon-log": Panel("Carbon log", _log("carbon"), 10),
    "tokens": Panel("Token positions", _tokens, 30, lazy=True),
    "ledger": Panel("Ledger", _ledger, 15, lazy=True),
    "alerts": Panel("Reconciliation alerts", _alerts, 15),
}


def _panel_html(name: str, viewer: Viewer, sel: Selection, data: dict[str, Any]) -> str:
    return _render(f"panel_{name.replace('-', '_')}.html", viewer=viewer, selection=sel, **data)


@dashboard.get("")
async def page(
    request: Request,
    procurement: ProcurementParam = None,
    provider: ProviderParam = None,
    notice: Annotated[Notice | None, Query()] = None,
) -> Response:
    viewer = await _viewer(request)
    if viewer is None:
        return _to_login()
    sel = Selection(procurement, provider)

    def read(s: Session) -> dict[str, str]:
        return {n: _panel_html(n, viewer, sel, p.read(s, sel)) for n, p in PANELS.items() if not p.lazy}

    bodies = await run_in_session(read)
    return _html(
        "page.html",
        viewer=viewer,
        panels=PANELS,
        bodies=bodies,
        query=sel.query(),
        notice=NOTICES.get(notice or ""),
        market_now=clock.now(),
    )


@dashboard.get("/fragments/{panel}")
async def fragment(
    request: Request,
    panel: Literal[
        "governance",
        "approvals",
        "procurements",
        "detail",
        "loadshift",
        "market-log",
        "carbon-log",
        "tokens",
        "ledger",
        "alerts",
    ],
    procurement: ProcurementParam = None,
    provider: ProviderParam = None,
) -> Response:
    viewer = await _viewer(request)
    if viewer is None:
        return _fragment_refused()
    sel = Selection(procurement, provider)
    body = await run_in_session(lambda s: _panel_html(panel, viewer, sel, PANELS[panel].read(s, sel)))
    return HTMLResponse(body, headers=SECURITY_HEADERS)


EVENTS_POLL_S = 1.0  # how often the event stream looks for a change
EVENTS_KEEPALIVE_S = 15.0  # a comment line this often keeps proxies from closing a quiet stream
EVENTS_STREAM_S = 300.0  # a stream ends after this; the browser's EventSource reconnects (session re-checked)


@dashboard.get("/events")
async def events(request: Request) -> Response:
    """Server-sent events: `changed` whenever what the panels show may have changed (dashboard_data.version), and
    the page then re-fetches its panels without a reload. The session is checked when the stream opens; a stream
    lasts EVENTS_STREAM_S and the browser reconnects, so a revoked key loses its stream within that time."""
    viewer = await _viewer(request)
    if viewer is None:
        return _fragment_refused()

    async def stream() -> AsyncIterator[str]:
        yield f"retry: {int(EVENTS_POLL_S * 3000)}\n\n"
        last = await run_in_session(dashboard_data.version)
        quiet_s = elapsed_s = 0.0
        while elapsed_s < EVENTS_STREAM_S and not await request.is_disconnected():
            await asyncio.sleep(EVENTS_POLL_S)
            elapsed_s += EVENTS_POLL_S
            now = await run_in_session(dashboard_data.version)
            if now != last:
                last, quiet_s = now, 0.0
                yield "event: changed\ndata: {}\n\n"
            else:
                quiet_s += EVENTS_POLL_S
                if quiet_s >= EVENTS_KEEPALIVE_S:
                    quiet_s = 0.0
                    yield ": keep-alive\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream", headers=SECURITY_HEADERS)


@dashboard.get("/ledger/verify")
async def verify(request: Request) -> Response:
    viewer = await _viewer(request)
    if viewer is None:
        return _fragment_refused()
    result = await run_in_threadpool(dashboard_data.ledger_verify)
    return HTMLResponse(_render("panel_verify.html", result=result), headers=SECURITY_HEADERS)


@dashboard.get("/statements")
async def statement(
    request: Request,
    account: Annotated[limits.Name, Query()],
    from_: Annotated[date, Query(alias="from", description="first day (UTC), inclusive")],
    to: Annotated[date, Query(description="last day (UTC), inclusive")],
    format: Annotated[Literal["csv", "json"], Query()] = "csv",
) -> Response:
    """A ledger statement of one of this BAP's accounts, fetched with the BAP's ledger key and handed on."""
    viewer = await _viewer(request)
    if viewer is None:
        return _to_login()
    accounts = await run_in_session(dashboard_data.statement_accounts)
    if account not in accounts:
        return _message(viewer, 400, "Not done", f"account: not one of this BAP's accounts ({', '.join(accounts)})")
    if to < from_ or (to - from_).days >= dashboard_data.MAX_STATEMENT_DAYS:
        return _message(
            viewer, 400, "Not done", f"to: on or after from, at most {dashboard_data.MAX_STATEMENT_DAYS} days"
        )
    answer = await run_in_threadpool(lambda: dashboard_data.statement(account, from_, to, format))
    if not answer.ok:
        return _message(viewer, 502, "The ledger did not answer", answer.refusal())
    name = f"statement-{account.replace(':', '_')}-{from_.isoformat()}-{to.isoformat()}.{format}"
    return Response(
        answer.body,
        media_type=answer.content_type or ("text/csv" if format == "csv" else "application/json"),
        headers={**SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="{name}"'},
    )


# -- actions ---------------------------------------------------------------------------------------------------
_REASON = TypeAdapter(limits.FreeText)


def _reason(form: dict[str, str], *, required: bool) -> str:
    try:
        reason = _REASON.validate_python(form.get("reason", "").strip())
    except ValidationError as exc:
        raise FormError(f"reason: {exc.errors()[0]['msg']}") from exc
    if required and not reason:
        raise FormError("reason: say why (it is kept in the audit and market logs)")
    return reason


async def _act(
    request: Request,
    name: str,
    work: Callable[[Session, Principal, str], Any],
    *,
    reason_required: bool,
) -> tuple[Viewer | None, Response | None]:
    """Session, CSRF, the JSON API's permission entry for `name`, then `work` with its audit row in one
    transaction. (viewer, None) when it was done; otherwise the refusal to answer."""
    method, template = ACTIONS[name]
    call = _call(request, PERMISSIONS[(method, template)].action)
    viewer = await _viewer(request)
    if viewer is None:
        return None, await _audited_refusal(call, None, 401, "not_logged_in", "log in first at /dashboard/login")
    call.principal = viewer.principal
    try:
        form = await _form(request)
    except FormError as exc:
        return viewer, await _audited_refusal(call, viewer, exc.status, "invalid_request", str(exc))
    refused = await _csrf_refusal(request, viewer, call, form)
    if refused is not None:
        return viewer, refused
    refusal = check(method, template, viewer.principal.role)
    if refusal is not None:
        message = refusal_message(refusal, role=viewer.principal.role, allowed=PERMISSIONS[(method, template)].roles)
        return viewer, await _audited_refusal(call, viewer, refusal.status, refusal.value, message)
    try:
        reason = _reason(form, required=reason_required)
    except FormError as exc:
        return viewer, await _audited_refusal(call, viewer, exc.status, "invalid_request", str(exc))
    request.state.audit_call = call
    try:
        await run_audited(request, lambda s: work(s, viewer.principal, reason), status_code=303)
    except ClientError as exc:
        return viewer, await _audited_refusal(call, viewer, exc.status, "invalid_request", str(exc))
    except audit.AuditUnavailable:
        return viewer, _message(
            viewer, 503, "Audit log unavailable", "the audit log cannot be written; nothing changed"
        )
    return viewer, None


def _done(notice: str, procurement_id: str | None = None) -> RedirectResponse:
    query = urlencode({"notice": notice, **({"procurement": procurement_id} if procurement_id else {})})
    return RedirectResponse(f"/dashboard?{query}", status_code=303, headers=SECURITY_HEADERS)


def _decision(approve: bool) -> Callable[..., Any]:
    async def endpoint(procurement_id: limits.Identifier, request: Request) -> Response:
        def work(s: Session, who: Principal, reason: str) -> str:
            return procurement.decide(s, procurement_id, approve=approve, key_id=who.key_id, reason=reason).status

        _, refused = await _act(request, "approve" if approve else "reject", work, reason_required=False)
        if refused is not None:
            return refused
        orchestrator_router._kick(procurement_id)
        return _done("approved" if approve else "rejected", procurement_id)

    return endpoint


dashboard.post("/procurements/{procurement_id}/approve")(_decision(True))
dashboard.post("/procurements/{procurement_id}/reject")(_decision(False))


def _switch(halted: bool) -> Callable[..., Any]:
    async def endpoint(request: Request) -> Response:
        def work(s: Session, who: Principal, reason: str) -> dict[str, Any]:
            return governance.set_halt(s, halted=halted, key_id=who.key_id, reason=reason)

        _, refused = await _act(request, "halt" if halted else "resume", work, reason_required=True)
        if refused is not None:
            return refused
        if halted:  # as POST /api/v1/halt: every procurement still moving halts now
            for pid in await run_in_session(procurement_engine.open_ids):
                orchestrator_router._kick(pid)
        return _done("halted" if halted else "resumed")

    return endpoint


dashboard.post("/halt")(_switch(True))
dashboard.post("/resume")(_switch(False))


def iso_minute(t: str | datetime | None) -> str:
    """A time stamp as the tables show it: YYYY-MM-DD HH:MM UTC."""
    if t is None:
        return "–"
    value = datetime.fromisoformat(t) if isinstance(t, str) else t
    return value.strftime("%Y-%m-%d %H:%M")


_env.filters["minute"] = iso_minute
