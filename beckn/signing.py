"""BECKN-006 HTTP message signing (pure: no web framework, no database).

    Authorization: Signature keyId="{subscriber_id}|{unique_key_id}|ed25519",algorithm="ed25519",
        created="…",expires="…",headers="(created) (expires) digest",signature="…"

The signing string is three lines with no trailing newline:

    (created): {created}
    (expires): {expires}
    digest: BLAKE-512={base64(BLAKE2b-512(raw body bytes))}

The digest is always computed over the exact raw bytes sent or received — a message is never
re-serialised before hashing (../shared/reference/beckn/test-vectors/beckn-006-signing-vector.json).
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from dataclasses import KW_ONLY, dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALGORITHM = "ed25519"
SIGNED_HEADERS = "(created) (expires) digest"


class SignatureError(ValueError):
    """Why a signature was refused; `reason` is a short machine-readable tag."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def blake2b_512_b64(body: bytes) -> str:
    return base64.b64encode(hashlib.blake2b(body, digest_size=64).digest()).decode("ascii")


def signing_string(created: int, expires: int, body: bytes) -> str:
    return f"(created): {created}\n(expires): {expires}\ndigest: BLAKE-512={blake2b_512_b64(body)}"


def sign(body: bytes, private_key: Ed25519PrivateKey, created: int, expires: int) -> str:
    """Base64 Ed25519 signature of the BECKN-006 signing string for `body`."""
    sig = private_key.sign(signing_string(created, expires, body).encode("utf-8"))
    return base64.b64encode(sig).decode("ascii")


@dataclass(frozen=True)
class SignatureParams:
    subscriber_id: str
    unique_key_id: str
    algorithm: str
    _: KW_ONLY
    created: int
    expires: int
    headers: str
    signature: str

    @property
    def key_id(self) -> str:
        return f"{self.subscriber_id}|{self.unique_key_id}|{self.algorithm}"


def authorization_header(
    body: bytes,
    private_key: Ed25519PrivateKey,
    subscriber_id: str,
    unique_key_id: str,
    *,
    created: int | None = None,
    validity_s: int = 300,
    expires: int | None = None,
) -> str:
    created = int(time.time()) if created is None else created
    expires = created + validity_s if expires is None else expires
    signature = sign(body, private_key, created, expires)
    return (
        f'Signature keyId="{subscriber_id}|{unique_key_id}|{ALGORITHM}",algorithm="{ALGORITHM}",'
        f'created="{created}",expires="{expires}",headers="{SIGNED_HEADERS}",signature="{signature}"'
    )


_PARAM = re.compile(r'\s*([A-Za-z]+)\s*=\s*"([^"]*)"\s*(?:,|$)')


def parse_authorization(header: str | None) -> SignatureParams:
    """Parse a BECKN-006 `Signature …` header; raises SignatureError(reason='malformed')."""
    if not header:
        raise SignatureError("missing", "Authorization header is missing")
    text = header.strip()
    if not text.startswith("Signature "):
        raise SignatureError("malformed", "Authorization header must start with 'Signature '")
    text = text[len("Signature ") :]
    params: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        m = _PARAM.match(text, pos)
        if not m:
            raise SignatureError("malformed", f"cannot parse Authorization parameters at {text[pos : pos + 20]!r}")
        params[m.group(1)] = m.group(2)
        pos = m.end()
    missing = [k for k in ("keyId", "algorithm", "created", "expires", "headers", "signature") if k not in params]
    if missing:
        raise SignatureError("malformed", f"Authorization header lacks {', '.join(missing)}")
    parts = params["keyId"].split("|")
    if len(parts) != 3 or not all(parts):
        raise SignatureError("malformed", "keyId must be 'subscriber_id|unique_key_id|algorithm'")
    if params["algorithm"] != ALGORITHM or parts[2] != ALGORITHM:
        raise SignatureError("algorithm", f"unsupported algorithm {params['algorithm']!r}; only ed25519")
    if params["headers"] != SIGNED_HEADERS:
        raise SignatureError("malformed", f"headers must be {SIGNED_HEADERS!r}")
    try:
        created, expires = int(params["created"]), int(params["expires"])
    except ValueError as exc:
        raise SignatureError("malformed", "created/expires must be integer UNIX times") from exc
    return SignatureParams(
        parts[0],
        parts[1],
        parts[2],
        created=created,
        expires=expires,
        headers=params["headers"],
        signature=params["signature"],
    )


def verify(
    params: SignatureParams,
    body: bytes,
    public_key: Ed25519PublicKey,
    now: float | None = None,
    clock_skew_s: int = 5,
) -> None:
    """Check the time window and the signature over the raw body; raise SignatureError if refused."""
    now = time.time() if now is None else now
    if params.created > now + clock_skew_s:
        raise SignatureError("not_yet_valid", f"signature created {params.created} is in the future (now {int(now)})")
    if params.expires < now - clock_skew_s:
        raise SignatureError("expired", f"signature expired at {params.expires} (now {int(now)})")
    if params.expires < params.created:
        raise SignatureError("malformed", "expires is before created")
    try:
        sig = base64.b64decode(params.signature, validate=True)
    except ValueError as exc:
        raise SignatureError("malformed", "signature is not base64") from exc
    try:
        public_key.verify(sig, signing_string(params.created, params.expires, body).encode("utf-8"))
    except InvalidSignature as exc:
        raise SignatureError("invalid", "signature does not match the body and the registered key") from exc
