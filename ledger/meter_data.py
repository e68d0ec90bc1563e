"""Meter operators' Ed25519 keys and their signed readings (README "Ledger" → "Meter data").

A `meter_operator` API key (ledger/api_keys.py) is bound to a participant — the host supplier or an independent
meter operator. That participant registers one or more Ed25519 public keys here (`ledger.meter_data_keys`,
append-only) and posts readings signed with one of them: the signature covers the RFC 8785 canonical bytes
(ledger/canonical.py) of the readings payload, exactly as sent:

    {"format": "flexmarket.meter-readings.v1", "meter_id": "…", "correction": false,
     "readings": [{"period_start": "2026-01-05T17:00:00Z", "energy_kwh": "12.5"}, …]}

The `format` member separates these signatures from any other use of the key. Rotation is registering a new
key and revoking the old (`ledger.meter_data_key_revocations`); readings already accepted under a revoked key
stay valid — they were verified when they arrived.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from beckn.keys import KeyError_, public_key_b64, public_key_from_b64
from ledger.canonical import CanonicalError, canonical_json
from ledger.db import iso
from ledger.errors import LedgerError, forbidden, not_found

READINGS_FORMAT = "flexmarket.meter-readings.v1"
SIGNATURE_BYTES = 64


@dataclass(frozen=True)
class MeterDataKey:
    key_id: str
    participant_id: str
    public_key_b64: str
    created_at: datetime
    revoked_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "participant_id": self.participant_id,
            "public_key": self.public_key_b64,
            "created_at": iso(self.created_at),
            "revoked_at": None if self.revoked_at is None else iso(self.revoked_at),
        }


@dataclass(frozen=True)
class VerifiedSignature:
    """What a stored meter-operator reading records about its signature."""

    key_id: str
    signature: bytes


def readings_signing_bytes(payload: Mapping[str, Any]) -> bytes:
    """The bytes a meter operator signs: RFC 8785 canonical JSON of the payload as sent."""
    try:
        return canonical_json(dict(payload))
    except CanonicalError as exc:
        raise LedgerError("payload_invalid", f"payload: not representable as canonical JSON ({exc})") from exc


def sign_readings(payload: Mapping[str, Any], private_key: Ed25519PrivateKey) -> str:
    """Base64 Ed25519 signature of `payload` (what a meter operator's system does before posting)."""
    return base64.b64encode(private_key.sign(readings_signing_bytes(payload))).decode("ascii")


def register_key(conn: psycopg.Connection, participant_id: str, public_key: str, *, now: datetime) -> MeterDataKey:
    """Register a meter operator's Ed25519 public key (base64, 32 bytes); a key is registered only once."""
    try:
        public_key_from_b64(public_key)
    except KeyError_ as exc:
        raise LedgerError("public_key_invalid", f"public_key: {exc}") from exc
    key_id = f"mdk-{secrets.token_hex(8)}"
    inserted = conn.execute(
        "INSERT INTO ledger.meter_data_keys (key_id, participant_id, public_key, created_at) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (public_key) DO NOTHING",
        (key_id, participant_id, public_key, now),
    ).rowcount
    if inserted != 1:
        raise LedgerError("public_key_registered", "public_key: this key is already registered", status=409)
    return MeterDataKey(key_id, participant_id, public_key, now, None)


def register_keypair(
    conn: psycopg.Connection, participant_id: str, private_key: Ed25519PrivateKey, *, now: datetime
) -> MeterDataKey:
    """Register the public half of `private_key` (`flexmarket up`, tests)."""
    return register_key(conn, participant_id, public_key_b64(private_key), now=now)


def get_key(conn: psycopg.Connection, key_id: str) -> MeterDataKey | None:
    row = conn.execute(
        "SELECT k.key_id, k.participant_id, k.public_key, k.created_at, r.revoked_at FROM ledger.meter_data_keys k "
        "LEFT JOIN ledger.meter_data_key_revocations r USING (key_id) WHERE k.key_id = %s",
        (key_id,),
    ).fetchone()
    return None if row is None else MeterDataKey(*row)


def list_keys(conn: psycopg.Connection, participant_id: str | None) -> list[MeterDataKey]:
    """Every key of `participant_id` (None: of every meter operator), oldest first."""
    rows = conn.execute(
        "SELECT k.key_id, k.participant_id, k.public_key, k.created_at, r.revoked_at FROM ledger.meter_data_keys k "
        "LEFT JOIN ledger.meter_data_key_revocations r USING (key_id) "
        "WHERE %(p)s::text IS NULL OR k.participant_id = %(p)s ORDER BY k.created_at, k.key_id",
        {"p": participant_id},
    ).fetchall()
    return [MeterDataKey(*r) for r in rows]


def revoke_key(conn: psycopg.Connection, key_id: str, participant_id: str | None, *, now: datetime) -> MeterDataKey:
    """Revoke a key (`participant_id` None: an admin, any key). Later signatures by it are refused."""
    key = get_key(conn, key_id)
    if key is None:
        raise not_found(f"meter-data key {key_id}")
    if participant_id is not None and key.participant_id != participant_id:
        raise forbidden(f"meter-data key {key_id} belongs to another meter operator")
    if key.revoked_at is not None:
        raise LedgerError("key_revoked", f"key_id: {key_id} was revoked at {iso(key.revoked_at)}", status=409)
    conn.execute("INSERT INTO ledger.meter_data_key_revocations (key_id, revoked_at) VALUES (%s, %s)", (key_id, now))
    return MeterDataKey(key.key_id, key.participant_id, key.public_key_b64, key.created_at, now)


def verify_readings_signature(
    conn: psycopg.Connection,
    payload: Mapping[str, Any],
    *,
    key_id: str,
    signature_b64: str,
    participant_id: str | None,
) -> VerifiedSignature:
    """Check `signature_b64` over `payload` with the registered, unrevoked key `key_id` — which must belong to
    `participant_id` (None: an admin relaying a meter operator's signed file). Refuses with a 4xx naming the
    field otherwise; nothing is stored here."""
    if payload.get("format") != READINGS_FORMAT:
        raise LedgerError("payload_invalid", f"payload.format: must be {READINGS_FORMAT!r}")
    key = get_key(conn, key_id)
    if key is None:
        raise LedgerError("key_unknown", f"key_id: {key_id} is not a registered meter-data key", status=403)
    if participant_id is not None and key.participant_id != participant_id:
        raise forbidden(f"key_id: {key_id} is not one of your meter-data keys")
    if key.revoked_at is not None:
        raise LedgerError("key_revoked", f"key_id: {key_id} was revoked at {iso(key.revoked_at)}", status=403)
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise LedgerError("signature_invalid", f"signature: not valid base64 ({exc})") from exc
    if len(signature) != SIGNATURE_BYTES:
        raise LedgerError("signature_invalid", f"signature: an Ed25519 signature is {SIGNATURE_BYTES} bytes")
    try:
        public_key_from_b64(key.public_key_b64).verify(signature, readings_signing_bytes(payload))
    except InvalidSignature as exc:
        raise LedgerError(
            "signature_invalid", f"signature: does not verify over the payload with key {key_id}", status=403
        ) from exc
    return VerifiedSignature(key_id, signature)
