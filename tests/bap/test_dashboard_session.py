"""The operator dashboard's login, sessions and CSRF (bap/dashboard.py, bap/dashboard_session.py), in process on
the BAP app of tests/bap/conftest.py:

- a login with a wrong, malformed or revoked key, or an aggregator's key, is refused, and sets no session;
- a forged, tampered or expired session cookie, or one whose key was revoked since, is sent to the login form
  (pages) or answered 401 (fragments);
- a POST without the session's CSRF token, with another one, or from another origin is refused 403 and
  changes nothing; a viewer's POST is refused 403 even with its own valid token;
- an operator's approval and kill switch go through the JSON API's use cases and land in the audit log.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

import bap.orchestrator_router
from bap import auth, dashboard, dashboard_session, governance, market_log
from bap.auth import Principal
from bap.dashboard_session import COOKIE_NAME
from bap.models import AuditEntry, Procurement
from bap.permissions import Role
from kernel import clock
from kernel.db import session_scope
from tests.bap.conftest import Keys, make_key

ORIGIN = {"Origin": "http://testserver"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def kicked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The procurements the dashboard asked a worker to move on (no task reaches Redis)."""
    out: list[str] = []
    monkeypatch.setattr(bap.orchestrator_router, "_kick", out.append)
    return out


@pytest.fixture
def browser(client: TestClient) -> Iterator[TestClient]:
    """The module's app client with a fresh cookie jar."""
    client.cookies.clear()
    yield client
    client.cookies.clear()


def _login(c: TestClient, key: str) -> str:
    """Log in; the CSRF token the page's forms carry."""
    c.cookies.clear()
    r = c.post("/dashboard/login", data={"api_key": key}, headers=ORIGIN, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/dashboard", r.text
    page = c.get("/dashboard")
    assert page.status_code == 200
    match = CSRF_INPUT.search(page.text)
    assert match, "the page carries its session's CSRF token"
    return match.group(1)


def _pending(**extra: Any) -> str:
    """A procurement waiting for approval, its first slot tomorrow (before gate closure)."""
    start = (clock.now() + timedelta(days=1)).replace(hour=12, minute=0, second=0, microsecond=0)
    with session_scope("bap") as s:
        version = governance.active(s).version
        p = Procurement(
            source="api",
            status="pending_approval",
            status_reason="peak 0.1 MW is above the policy's 0.05 MW",
            policy_version=version,
            request={
                "slots": [
                    {"start": start.isoformat(), "end": (start + timedelta(minutes=30)).isoformat(), "target_kw": 100.0}
                ],
                "objective": "cost",
                "price_cap_gbp_per_mwh": 5000.0,
                "expected_bpps": [],
            },
            transaction_ids=[],
            explanation={
                "why": "peak 0.1 MW is above the policy's 0.05 MW",
                "asked_wall": clock.wall_now().isoformat(),
                "offers_considered": 1,
                "choice": [
                    {
                        "provider_id": "dc-07",
                        "item_id": "dc-07-noon",
                        "power_kw": 100.0,
                        "settlement_method": "P415",
                        "start": start.isoformat(),
                        "end": (start + timedelta(minutes=30)).isoformat(),
                    }
                ],
                "expected_cost_gbp": 7.5,
                "expected_carbon_kg": 9.0,
                "if_rejected": "no order is placed",
            },
            created_at=clock.now(),
            created_wall=clock.wall_now(),
            updated_at=clock.now(),
            **extra,
        )
        s.add(p)
        s.flush()
        return p.id


def _status(pid: str) -> str:
    with session_scope("bap") as s:
        p = s.get(Procurement, pid)
        assert p is not None
        return p.status


def _audited(path: str) -> list[AuditEntry]:
    with session_scope("bap") as s:
        rows = list(s.scalars(select(AuditEntry).where(AuditEntry.path == path).order_by(AuditEntry.id)))
        s.expunge_all()
        return rows


# -- login ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["fmb_0123456789abcdef_not-the-secret", "not a key at all", ""])
def test_a_login_with_a_wrong_key_is_refused_and_opens_no_session(browser: TestClient, keys: Keys, key: str) -> None:
    r = browser.post("/dashboard/login", data={"api_key": key}, headers=ORIGIN, follow_redirects=False)
    assert r.status_code == 401 and "api_key" in r.text
    assert COOKIE_NAME not in r.cookies and COOKIE_NAME not in browser.cookies
    assert browser.get("/dashboard", follow_redirects=False).headers["location"] == "/dashboard/login"


def test_a_revoked_key_cannot_log_in_nor_keep_its_session(browser: TestClient) -> None:
    key = make_key(Role.OPERATOR, label="dashboard-revoked")
    _login(browser, key)
    assert browser.get("/dashboard/fragments/governance").status_code == 200
    with session_scope("bap") as s:
        assert auth.revoke_api_key(s, key.split("_")[1])
    assert browser.get("/dashboard/fragments/governance").status_code == 401
    assert browser.get("/dashboard", follow_redirects=False).headers["location"] == "/dashboard/login"
    r = browser.post("/dashboard/login", data={"api_key": key}, headers=ORIGIN, follow_redirects=False)
    assert r.status_code == 401


def test_an_aggregator_key_cannot_log_in(browser: TestClient, keys: Keys) -> None:
    r = browser.post("/dashboard/login", data={"api_key": keys.aggregator}, headers=ORIGIN, follow_redirects=False)
    assert r.status_code == 403 and "operator or viewer" in r.text
    assert COOKIE_NAME not in browser.cookies


def test_a_login_from_another_origin_is_refused(browser: TestClient, keys: Keys) -> None:
    evil = {"Origin": "http://evil.example"}
    r = browser.post("/dashboard/login", data={"api_key": keys.operator}, headers=evil, follow_redirects=False)
    assert r.status_code == 403 and COOKIE_NAME not in browser.cookies


def test_the_session_cookie_is_httponly_and_samesite_strict(browser: TestClient, keys: Keys) -> None:
    r = browser.post("/dashboard/login", data={"api_key": keys.viewer}, headers=ORIGIN, follow_redirects=False)
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/dashboard" in cookie
    assert keys.viewer.split("_", 2)[2] not in r.headers["set-cookie"]  # the key's secret never leaves the login


def test_a_login_is_audited_with_who(browser: TestClient, keys: Keys) -> None:
    before = len(_audited("/dashboard/login"))
    _login(browser, keys.viewer)
    rows = _audited("/dashboard/login")[before:]
    assert [(r.action, r.key_id, r.role, r.status_code) for r in rows] == [
        ("dashboard_login", keys.viewer.split("_")[1], "viewer", 303)
    ]


# -- sessions ------------------------------------------------------------------------------------------------
def _secret(c: TestClient) -> bytes:
    secret: bytes = c.app.state.dashboard_secret  # type: ignore[attr-defined]
    return secret


def _cookie(c: TestClient, value: str) -> None:
    c.cookies.clear()
    c.cookies.set(COOKIE_NAME, value, path="/dashboard")


def test_a_forged_or_expired_cookie_goes_to_the_login(browser: TestClient, keys: Keys) -> None:
    operator = Principal(keys.operator.split("_")[1], Role.OPERATOR, None)
    now = clock.wall_now().timestamp()
    expired, _ = dashboard_session.issue(_secret(browser), operator, now_s=now - 10, ttl_s=5)
    forged, _ = dashboard_session.issue(b"x" * 32, operator, now_s=now)  # another secret
    valid, _ = dashboard_session.issue(_secret(browser), operator, now_s=now)
    payload, mac = valid.split(".")
    tampered = f"{payload[:-2]}{'A' if payload[-2] != 'A' else 'B'}{payload[-1]}.{mac}"
    for value in (expired, forged, tampered, "garbage", valid + "x"):
        _cookie(browser, value)
        assert browser.get("/dashboard", follow_redirects=False).headers["location"] == "/dashboard/login", value
        assert browser.get("/dashboard/fragments/approvals").status_code == 401
    _cookie(browser, valid)  # the control: the same construction, signed right and current, is let in
    assert browser.get("/dashboard", follow_redirects=False).status_code == 200


# -- CSRF and roles on actions -------------------------------------------------------------------------------
def test_a_post_without_or_with_a_wrong_csrf_token_is_refused(
    browser: TestClient, keys: Keys, kicked: list[str]
) -> None:
    pid = _pending()
    csrf = _login(browser, keys.operator)
    url = f"/dashboard/procurements/{pid}/approve"
    for data, headers in [
        ({"reason": "no token"}, ORIGIN),
        ({"reason": "wrong token", "csrf_token": csrf[:-1] + ("A" if csrf[-1] != "A" else "B")}, ORIGIN),
        ({"reason": "right token, other origin", "csrf_token": csrf}, {"Origin": "http://evil.example"}),
        ({"reason": "right token, no origin nor referer", "csrf_token": csrf}, {}),
    ]:
        r = browser.post(url, data=data, headers=headers, follow_redirects=False)
        assert r.status_code == 403, (data, r.text)
        assert _status(pid) == "pending_approval"
    assert kicked == []
    refused = _audited(url)
    assert len(refused) == 4 and {(r.status_code, r.error_code, r.action) for r in refused} == {
        (403, "csrf", "approve_procurement")
    }
    # the same session's token, from the dashboard's page (Referer instead of Origin), is accepted
    r = browser.post(
        url,
        data={"reason": "ok", "csrf_token": csrf},
        headers={"Referer": "http://testserver/dashboard"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and _status(pid) == "ordering" and kicked == [pid]


def test_a_viewer_sees_no_approve_button_and_its_post_is_refused(
    browser: TestClient, keys: Keys, kicked: list[str]
) -> None:
    pid = _pending()
    csrf = _login(browser, keys.viewer)
    page = browser.get(f"/dashboard?procurement={pid}").text
    assert pid in page and "dc-07" in page  # the viewer sees the procurement and its choice
    assert "/approve" not in page and "Approve</button>" not in page and "/halt" not in page
    r = browser.post(
        f"/dashboard/procurements/{pid}/approve",
        data={"reason": "forged", "csrf_token": csrf},
        headers=ORIGIN,
        follow_redirects=False,
    )
    assert r.status_code == 403 and "operator" in r.text
    assert _status(pid) == "pending_approval" and kicked == []
    [row] = _audited(f"/dashboard/procurements/{pid}/approve")
    assert (row.role, row.status_code, row.error_code) == ("viewer", 403, "role_forbidden")
    r = browser.post("/dashboard/halt", data={"reason": "x", "csrf_token": csrf}, headers=ORIGIN)
    assert r.status_code == 403
    with session_scope("bap") as s:
        assert governance.is_halted(s) is False


def test_an_unauthenticated_post_is_refused(browser: TestClient) -> None:
    pid = _pending()
    r = browser.post(f"/dashboard/procurements/{pid}/reject", data={"reason": "x"}, headers=ORIGIN)
    assert r.status_code == 401 and _status(pid) == "pending_approval"


def test_an_operator_approves_and_rejects_through_the_use_case_and_the_audit_log(
    browser: TestClient, keys: Keys, kicked: list[str]
) -> None:
    approve, reject = _pending(), _pending()
    csrf = _login(browser, keys.operator)
    page = browser.get("/dashboard").text
    assert f"/dashboard/procurements/{approve}/approve" in page and "Approve</button>" in page
    r = browser.post(
        f"/dashboard/procurements/{approve}/approve",
        data={"reason": "cheap enough", "csrf_token": csrf},
        headers=ORIGIN,
        follow_redirects=False,
    )
    assert r.status_code == 303 and "notice=approved" in r.headers["location"]
    r = browser.post(
        f"/dashboard/procurements/{reject}/reject",
        data={"reason": "not today", "csrf_token": csrf},
        headers=ORIGIN,
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert (_status(approve), _status(reject)) == ("ordering", "cancelled")
    with session_scope("bap") as s:
        p = s.get(Procurement, approve)
        assert p is not None and p.decided_by == keys.operator.split("_")[1] and p.status_reason == "cheap enough"
    [row] = _audited(f"/dashboard/procurements/{approve}/approve")
    assert (row.action, row.role, row.status_code) == ("approve_procurement", "operator", 303)
    # deciding again is the use case's 409, shown and audited
    r = browser.post(
        f"/dashboard/procurements/{approve}/approve", data={"csrf_token": csrf}, headers=ORIGIN, follow_redirects=False
    )
    assert r.status_code == 409 and "not pending_approval" in r.text
    assert [x.status_code for x in _audited(f"/dashboard/procurements/{approve}/approve")] == [303, 409]
    assert kicked == [approve, reject]


def test_the_kill_switch_needs_a_reason_and_is_recorded_with_who(
    browser: TestClient, keys: Keys, kicked: list[str]
) -> None:
    csrf = _login(browser, keys.operator)
    r = browser.post("/dashboard/halt", data={"csrf_token": csrf, "reason": "  "}, headers=ORIGIN)
    assert r.status_code == 400 and "reason" in r.text
    r = browser.post(
        "/dashboard/halt",
        data={"csrf_token": csrf, "reason": "grid emergency"},
        headers=ORIGIN,
        follow_redirects=False,
    )
    assert r.status_code == 303
    try:
        with session_scope("bap") as s:
            state = governance.halt_state(s)
        assert state["halted"] and state["reason"] == "grid emergency"
        assert state["by_key_id"] == keys.operator.split("_")[1]
        assert "HALTED" in browser.get("/dashboard/fragments/governance").text
    finally:
        r = browser.post(
            "/dashboard/resume", data={"csrf_token": csrf, "reason": "over"}, headers=ORIGIN, follow_redirects=False
        )
        assert r.status_code == 303
    with session_scope("bap") as s:
        assert governance.is_halted(s) is False


def test_logout_needs_the_token_and_ends_the_session_in_the_browser(browser: TestClient, keys: Keys) -> None:
    csrf = _login(browser, keys.viewer)
    assert browser.post("/dashboard/logout", data={}, headers=ORIGIN).status_code == 403
    r = browser.post("/dashboard/logout", data={"csrf_token": csrf}, headers=ORIGIN, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/dashboard/login")
    assert browser.get("/dashboard", follow_redirects=False).headers["location"] == "/dashboard/login"


def test_every_panel_renders_for_both_roles(browser: TestClient, keys: Keys) -> None:
    pid = _pending()
    for key in (keys.viewer, keys.operator):
        _login(browser, key)
        page = browser.get(f"/dashboard?procurement={pid}")
        assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
        for panel in ("governance", "approvals", "procurements", "detail", "market-log", "carbon-log", "alerts"):
            r = browser.get(f"/dashboard/fragments/{panel}", params={"procurement": pid})
            assert r.status_code == 200, (panel, r.text)
        # no ledger and no BPP here: each panel says so rather than failing
        expected = {
            "tokens": ("Token positions unavailable", "holds no Compute Flex Tokens"),
            "ledger": ("Ledger unavailable",),
            "loadshift": ("No provider",),
        }
        for panel, texts in expected.items():
            r = browser.get(f"/dashboard/fragments/{panel}")
            assert r.status_code == 200 and any(t in r.text for t in texts), (panel, r.text)
    assert browser.get("/dashboard/fragments/nonsense").status_code in (400, 422)
    assert browser.get("/dashboard", params={"procurement": "x" * 100}).status_code == 400


def test_the_event_stream_needs_a_session_and_says_when_something_changed(
    browser: TestClient, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert browser.get("/dashboard/events").status_code == 401
    _login(browser, keys.viewer)
    monkeypatch.setattr(dashboard, "EVENTS_POLL_S", 0.2)
    monkeypatch.setattr(dashboard, "EVENTS_STREAM_S", 2.0)

    def change() -> None:
        with session_scope("bap") as s:
            market_log.record(s, "note", "something happened", procurement_id=None)

    threading.Timer(0.6, change).start()
    with browser.stream("GET", "/dashboard/events") as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        text = "".join(r.iter_text())  # the stream ends after EVENTS_STREAM_S; the browser would reconnect
    assert text.startswith("retry: ") and "event: changed" in text


# -- the codec itself ----------------------------------------------------------------------------------------
SECRET = dashboard_session.secret_from_seed("c2VlZA==")
PRINCIPAL = Principal("0123456789abcdef", Role.OPERATOR, None)
NOW_S = datetime(2026, 1, 1, tzinfo=UTC).timestamp()


def test_a_session_reads_back_until_it_expires() -> None:
    value, session = dashboard_session.issue(SECRET, PRINCIPAL, now_s=NOW_S, ttl_s=60)
    assert dashboard_session.read(SECRET, value, now_s=NOW_S + 59) == session
    assert dashboard_session.read(SECRET, value, now_s=NOW_S + 60) is None
    assert dashboard_session.read(dashboard_session.secret_from_seed("b3RoZXI="), value, now_s=NOW_S) is None
    with pytest.raises(ValueError):
        dashboard_session.issue(SECRET, Principal("0123456789abcdef", Role.AGGREGATOR, "agg"), now_s=NOW_S)


@settings(max_examples=200, deadline=None)
@given(position=st.integers(min_value=0), replacement=st.sampled_from("ABCDEFabcdef0123456789-_.=x"))
def test_any_changed_character_breaks_the_session(position: int, replacement: str) -> None:
    value, _ = dashboard_session.issue(SECRET, PRINCIPAL, now_s=NOW_S)
    i = position % len(value)
    changed = value[:i] + replacement + value[i + 1 :]
    read = dashboard_session.read(SECRET, changed, now_s=NOW_S)
    assert (read is not None) == (changed == value)


def test_csrf_tokens_are_per_session() -> None:
    _, a = dashboard_session.issue(SECRET, PRINCIPAL, now_s=NOW_S)
    _, b = dashboard_session.issue(SECRET, PRINCIPAL, now_s=NOW_S)
    token = dashboard_session.csrf_token(SECRET, a)
    assert dashboard_session.csrf_ok(SECRET, a, token)
    assert not dashboard_session.csrf_ok(SECRET, b, token)
    assert not dashboard_session.csrf_ok(SECRET, a, None) and not dashboard_session.csrf_ok(SECRET, a, "")


@pytest.mark.parametrize(
    ("origin", "referer", "host", "ok"),
    [
        ("http://bap.local:8001", None, "bap.local:8001", True),
        ("https://bap.local:8001", None, "bap.local:8001", True),  # TLS ended by a proxy in front
        (None, "http://bap.local:8001/dashboard?x=1", "bap.local:8001", True),
        ("http://evil.example", "http://bap.local:8001/dashboard", "bap.local:8001", False),
        ("null", None, "bap.local:8001", False),
        (None, None, "bap.local:8001", False),
        ("http://bap.local:8001", None, None, False),
        ("http://bap.local:8002", None, "bap.local:8001", False),
    ],
)
def test_same_origin(origin: str | None, referer: str | None, host: str | None, ok: bool) -> None:
    assert dashboard_session.same_origin(origin=origin, referer=referer, host=host) is ok
