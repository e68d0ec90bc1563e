"""API keys of the BAP's client API: created (`fmb_<key id>_<secret>`, only the secret's SHA-256 stored, so
a key is shown once), checked, listed and revoked in table bap.api_keys; and the principal a key
authenticates as. Who may call which endpoint is bap/permissions.py; bap/auth_route.py enforces it."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bap.models import ApiKey, Transaction
from bap.permissions import KEY_ID_HEX_CHARS, Role, format_token, parse_token
from kernel import clock
from schemas import limits

MAX_LABEL_CHARS = 200


class KeyRequestError(ValueError):
    """A key that cannot be created as asked (the message names the field)."""


@dataclass(frozen=True)
class Principal:
    """Who a valid key authenticates as."""

    key_id: str
    role: Role
    aggregator_id: str | None

    def sees(self, owner: str | None) -> bool:
        """Whether this key may see and act on a transaction started by `owner` (None: an operator key)."""
        return self.role is not Role.AGGREGATOR or owner == self.aggregator_id


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def _checked_aggregator(role: Role, aggregator_id: str | None) -> str | None:
    if role is not Role.AGGREGATOR:
        if aggregator_id:
            raise KeyRequestError(f"aggregator: a {role} key is not bound to an aggregator")
        return None
    if not aggregator_id:
        raise KeyRequestError("aggregator: an aggregator key needs the aggregator id it acts for")
    if len(aggregator_id) > limits.MAX_ID_CHARS or aggregator_id != aggregator_id.strip():
        raise KeyRequestError(f"aggregator: 1-{limits.MAX_ID_CHARS} characters, no surrounding spaces")
    _one_line(aggregator_id, "aggregator")
    return aggregator_id


def _one_line(value: str, what: str) -> None:
    try:
        limits.check_text(value, what, one_line=True)
    except ValueError as exc:
        raise KeyRequestError(str(exc)) from exc


def create_api_key(session: Session, role: Role, *, aggregator_id: str | None = None, label: str = "") -> str:
    """A new key; the returned token is the only time its secret exists outside the caller."""
    bound = _checked_aggregator(role, aggregator_id)
    if len(label) > MAX_LABEL_CHARS:
        raise KeyRequestError(f"label: at most {MAX_LABEL_CHARS} characters")
    _one_line(label, "label")
    key_id = secrets.token_hex(KEY_ID_HEX_CHARS // 2)
    secret = secrets.token_urlsafe(24)
    session.add(ApiKey(key_id=key_id, secret_sha256=_digest(secret), role=role.value, aggregator_id=bound, label=label))
    session.flush()
    return format_token(key_id, secret)


def authenticate(session: Session, token: str) -> Principal | None:
    """The principal of an active key; None for a malformed, unknown or revoked one."""
    parts = parse_token(token)
    if parts is None:
        return None
    key = session.get(ApiKey, parts.key_id)
    if key is None or key.revoked_at is not None:
        return None
    if not hmac.compare_digest(bytes(key.secret_sha256), _digest(parts.secret)):
        return None
    return Principal(key.key_id, Role(key.role), key.aggregator_id)


def revoke_api_key(session: Session, key_id: str) -> bool:
    """Revoke an active key (effective on its next request); False when there is no active key of that id."""
    result = session.execute(
        update(ApiKey).where(ApiKey.key_id == key_id, ApiKey.revoked_at.is_(None)).values(revoked_at=clock.wall_now())
    )
    return bool(getattr(result, "rowcount", 0) == 1)


def list_api_keys(session: Session) -> list[dict[str, Any]]:
    """Every key, oldest first, without secrets."""
    return [
        {
            "key_id": k.key_id,
            "role": k.role,
            "aggregator_id": k.aggregator_id,
            "label": k.label,
            "created_at": _iso(k.created_at),
            "revoked_at": _iso(k.revoked_at),
        }
        for k in session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.key_id))
    ]


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None


def may_see(session: Session, principal: Principal, transaction_id: str) -> bool:
    """False only for an aggregator's key on a transaction another key started; True for an unknown
    transaction (its endpoint answers 404, as to anyone)."""
    if principal.role is not Role.AGGREGATOR:
        return True
    row = session.execute(select(Transaction.aggregator_id).where(Transaction.id == transaction_id)).first()
    return row is None or principal.sees(row[0])
