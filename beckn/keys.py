"""Ed25519 signing keys (and X25519 encryption keys) for participants and the ledger.

Keys are stored under $FLEXMARKET_HOME/keys/<name>.json as base64, generated on first use
(../shared/DESIGN.md "Keys and identity"). Private keys are accepted both as a 32-byte seed and in
libsodium's 64-byte form (seed ‖ public key), as BECKN-006 test vectors use the latter.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

_RAW = serialization.Encoding.Raw
_RAW_PUB = serialization.PublicFormat.Raw
_RAW_PRIV = serialization.PrivateFormat.Raw
_NOENC = serialization.NoEncryption()


class KeyError_(ValueError):
    """A key that cannot be decoded (wrong length, not base64, mismatched libsodium halves)."""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, TypeError) as exc:
        raise KeyError_(f"not valid base64: {exc}") from exc


def private_key_from_b64(text: str) -> Ed25519PrivateKey:
    """A 32-byte seed or a 64-byte libsodium secret key (seed ‖ public key), base64-encoded."""
    raw = unb64(text)
    if len(raw) == 64:
        seed, public = raw[:32], raw[32:]
        key = Ed25519PrivateKey.from_private_bytes(seed)
        if key.public_key().public_bytes(_RAW, _RAW_PUB) != public:
            raise KeyError_("64-byte private key: the public half does not match the seed")
        return key
    if len(raw) == 32:
        return Ed25519PrivateKey.from_private_bytes(raw)
    raise KeyError_(f"Ed25519 private key must be 32 or 64 bytes, got {len(raw)}")


def public_key_from_b64(text: str) -> Ed25519PublicKey:
    raw = unb64(text)
    if len(raw) != 32:
        raise KeyError_(f"Ed25519 public key must be 32 bytes, got {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def public_key_b64(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return b64(pub.public_bytes(_RAW, _RAW_PUB))


@dataclass(frozen=True)
class KeyPair:
    """A participant's identity material: one signing key with its registry key id."""

    unique_key_id: str
    signing_private_key: Ed25519PrivateKey
    encryption_private_key: X25519PrivateKey

    @property
    def signing_public_key_b64(self) -> str:
        return public_key_b64(self.signing_private_key)

    @property
    def signing_seed_b64(self) -> str:
        return b64(self.signing_private_key.private_bytes(_RAW, _RAW_PRIV, _NOENC))

    @property
    def encryption_public_key_b64(self) -> str:
        return b64(self.encryption_private_key.public_key().public_bytes(_RAW, _RAW_PUB))

    @classmethod
    def generate(cls) -> KeyPair:
        return cls(str(uuid.uuid4()), Ed25519PrivateKey.generate(), X25519PrivateKey.generate())

    def to_json(self) -> dict[str, str]:
        return {
            "unique_key_id": self.unique_key_id,
            "signing_private_key": self.signing_seed_b64,
            "signing_public_key": self.signing_public_key_b64,
            "encryption_private_key": b64(self.encryption_private_key.private_bytes(_RAW, _RAW_PRIV, _NOENC)),
            "encryption_public_key": self.encryption_public_key_b64,
        }

    @classmethod
    def from_json(cls, data: dict[str, str]) -> KeyPair:
        return cls(
            unique_key_id=data["unique_key_id"],
            signing_private_key=private_key_from_b64(data["signing_private_key"]),
            encryption_private_key=X25519PrivateKey.from_private_bytes(unb64(data["encryption_private_key"])),
        )


def load_or_create_keypair(path: Path) -> KeyPair:
    """Read the key file at `path`, or generate and write one (mode 0600) if it does not exist."""
    if path.exists():
        return KeyPair.from_json(json.loads(path.read_text()))
    path.parent.mkdir(parents=True, exist_ok=True)
    pair = KeyPair.generate()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(pair.to_json(), fh, indent=2)
    try:
        os.link(tmp, path)  # fails if another process created the key first: then use theirs
    except FileExistsError:
        return KeyPair.from_json(json.loads(path.read_text()))
    finally:
        tmp.unlink(missing_ok=True)
    return pair
