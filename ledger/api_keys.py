"""API keys of the ledger's HTTP API: roles, the principal a key authenticates as, and keys created
(`flk_<key id>_<secret>`, only the secret's SHA-256 stored), checked and revoked in PostgreSQL.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

import psycopg

from ledger import accounts as acct
from ledger.errors import LedgerError, forbidden

# meter_operator: the host supplier's or an independent meter operator's key, bound to its participant id; it
# registers Ed25519 keys and posts readings signed with them (ledger/meter_data.py, README "Meter data").
ROLES = ("admin", "finance", "provider", "bap", "supplier", "meter_operator")


@dataclass(frozen=True)
class Principal:
    key_id: str
    role: str
    participant_id: str | None

    def require(self, *roles: str) -> None:
        if self.role not in roles:
            raise forbidden(f"this needs a {' or '.join(roles)} key; yours is a {self.role} key")

    def require_participant(self, role: str, participant_id: str) -> None:
        """Admins act for anyone; otherwise the key must be `role` for exactly this participant."""
        if self.role == "admin":
            return
        if self.role != role or self.participant_id != participant_id:
            raise forbidden(f"a {self.role} key for {self.participant_id} cannot act for {role} {participant_id}")


def create_api_key(conn: psycopg.Connection, role: str, participant_id: str | None = None, label: str = "") -> str:
    """A new key `flk_<key id>_<secret>`; only its SHA-256 is stored, so it is shown once."""
    if role not in ROLES:
        raise LedgerError("role_invalid", f"role must be one of {', '.join(ROLES)}")
    if role in ("admin", "finance"):
        if participant_id:
            raise LedgerError("participant_not_allowed", f"a {role} key is not bound to a participant")
        participant_id = None
    else:
        if not participant_id:
            raise LedgerError("participant_required", f"a {role} key needs the participant id it acts for")
        acct.check_id(participant_id, "participant_id")
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(24)
    conn.execute(
        "INSERT INTO ledger.api_keys (key_id, secret_sha256, role, participant_id, label) VALUES (%s, %s, %s, %s, %s)",
        (key_id, hashlib.sha256(secret.encode()).digest(), role, participant_id, label[:200]),
    )
    return f"flk_{key_id}_{secret}"


def authenticate(conn: psycopg.Connection, token: str | None) -> Principal | None:
    if not token or not token.startswith("flk_") or token.count("_") < 2:
        return None
    _, key_id, secret = token.split("_", 2)
    row = conn.execute(
        "SELECT secret_sha256, role, participant_id FROM ledger.api_keys WHERE key_id = %s AND revoked_at IS NULL",
        (key_id,),
    ).fetchone()
    if row is None or not hmac.compare_digest(bytes(row[0]), hashlib.sha256(secret.encode()).digest()):
        return None
    return Principal(key_id, row[1], row[2])


def revoke_api_key(conn: psycopg.Connection, key_id: str) -> bool:
    return (
        conn.execute(
            "UPDATE ledger.api_keys SET revoked_at = now() WHERE key_id = %s AND revoked_at IS NULL", (key_id,)
        ).rowcount
        == 1
    )
