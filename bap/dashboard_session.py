"""The operator dashboard's login sessions and CSRF protection (bap/dashboard.py uses them).

A session is a signed cookie, not a server-side row: `<payload>.<mac>`, both base64url, where the payload is
the JSON {"k": API key id, "r": role, "exp": expiry (Unix seconds, transport time), "n": random nonce} and the
mac is HMAC-SHA256 over the payload bytes. The secret is derived from the BAP's own Ed25519 signing seed (its
identity, `secret_from_seed`), so it is never written in code or config, and a new identity key ends every
session. The API key's secret is never in the cookie: logging in proves it once (bap/auth.py `authenticate`),
and every later request looks the key up by id again (`principal_of`), so revoking the key, or changing its
role, ends its sessions at once. Logging out drops the cookie; a copy taken before then stays valid until it
expires (SESSION_TTL_S) or its key is revoked — the price of keeping no session table.

CSRF: every form and state-changing request carries the session's token (`csrf_token`: HMAC of the nonce,
in the hidden input `csrf_token` or the header X-CSRF-Token), and its Origin (else its Referer) must name this
server's own host (`same_origin`). The cookie is HttpOnly and SameSite=Strict besides.

Only operator and viewer keys may log in (DASHBOARD_ROLES): the dashboard shows the whole market — every
procurement, both logs, the reconciliation alerts — and an aggregator's key may see only its own transactions.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from bap.auth import Principal
from bap.models import ApiKey
from bap.permissions import Role

COOKIE_NAME = "flexmarket_dashboard"
COOKIE_PATH = "/dashboard"
SESSION_TTL_S = 8 * 3600  # one working shift
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
DASHBOARD_ROLES = frozenset({Role.OPERATOR, Role.VIEWER})
MAX_COOKIE_CHARS = 1024
_SECRET_LABEL = b"flexmarket/bap/dashboard-session/v1\x00"


@dataclass(frozen=True)
class DashboardSession:
    """What a valid session cookie says."""

    key_id: str
    role: Role
    expires_at_s: int
    nonce: str


def secret_from_seed(signing_seed_b64: str) -> bytes:
    """The sessions' HMAC key, derived from the BAP's signing seed (a one-way, labelled hash of it)."""
    return hashlib.sha256(_SECRET_LABEL + signing_seed_b64.encode("ascii")).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, payload, hashlib.sha256).digest()


def issue(
    secret: bytes, principal: Principal, *, now_s: float, ttl_s: int = SESSION_TTL_S
) -> tuple[str, DashboardSession]:
    """A new session for `principal` (an operator or viewer key): the cookie value and what it says."""
    if principal.role not in DASHBOARD_ROLES:
        raise ValueError(f"a {principal.role} key cannot log in to the dashboard")
    session = DashboardSession(principal.key_id, principal.role, int(now_s) + ttl_s, secrets.token_urlsafe(16))
    payload = json.dumps(
        {"k": session.key_id, "r": session.role.value, "exp": session.expires_at_s, "n": session.nonce},
        separators=(",", ":"),
        sort_keys=True,
    ).encode()
    return f"{_b64(payload)}.{_b64(_mac(secret, payload))}", session


def read(secret: bytes, value: str | None, *, now_s: float) -> DashboardSession | None:
    """The session a cookie value carries; None when it is missing, malformed, forged or expired."""
    if not value or len(value) > MAX_COOKIE_CHARS or value.count(".") != 1:
        return None
    payload_b64, mac_b64 = value.split(".")
    try:
        payload, mac = _unb64(payload_b64), _unb64(mac_b64)
    except (binascii.Error, ValueError):
        return None
    if _b64(payload) != payload_b64 or _b64(mac) != mac_b64:  # one spelling only: no malleable padding bits
        return None
    if not hmac.compare_digest(mac, _mac(secret, payload)):
        return None
    try:
        fields = json.loads(payload)
        session = DashboardSession(str(fields["k"]), Role(fields["r"]), int(fields["exp"]), str(fields["n"]))
    except (ValueError, KeyError, TypeError):
        return None
    if session.expires_at_s <= now_s or session.role not in DASHBOARD_ROLES:
        return None
    return session


def principal_of(db: Session, session: DashboardSession) -> Principal | None:
    """The key a session was opened with, if it is still active with the same role (None ends the session)."""
    key = db.get(ApiKey, session.key_id)
    if key is None or key.revoked_at is not None or key.role != session.role.value:
        return None
    return Principal(key.key_id, Role(key.role), key.aggregator_id)


def csrf_token(secret: bytes, session: DashboardSession) -> str:
    """The session's CSRF token: bound to its nonce, so it changes at every login."""
    return _b64(_mac(secret, b"csrf\x00" + session.nonce.encode()))


def csrf_ok(secret: bytes, session: DashboardSession, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(str(presented), csrf_token(secret, session))


def same_origin(*, origin: str | None, referer: str | None, host: str | None) -> bool:
    """Whether a state-changing request comes from a page of this server: its Origin header (else its Referer)
    names the host the request was sent to. Neither header present → False (browsers send Origin on every
    POST). The scheme is not compared, so that a TLS-terminating proxy in front does not refuse every form."""
    if not host:
        return False
    source = origin if origin and origin != "null" else referer
    if not source:
        return False
    try:
        netloc = urlsplit(source).netloc
    except ValueError:
        return False
    return bool(netloc) and netloc.lower() == host.lower()
