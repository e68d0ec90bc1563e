"""Building and serialising Beckn messages (pure).

Bodies are serialised once, compactly, and the exact bytes are what gets stored, signed and sent.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from kernel import clock

PROTOCOL_VERSION = "1.1.0"
DOMAIN = "deg:flexibility"

# The requests a BPP serves; a BAP serves their on_* callbacks.
BPP_ACTIONS = ("search", "select", "init", "confirm", "status", "cancel", "update")


def new_id() -> str:
    return str(uuid.uuid4())


def utc_now() -> datetime:
    return clock.wall_now()


def iso(ts: datetime) -> str:
    """RFC 3339 UTC with millisecond precision and a Z suffix (what Beckn examples use)."""
    ts = ts.astimezone(UTC)
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def context(
    action: str,
    *,
    bap_id: str,
    bap_uri: str,
    transaction_id: str,
    city_code: str,
    country_code: str,
    bpp_id: str | None = None,
    bpp_uri: str | None = None,
    message_id: str | None = None,
    ttl_s: int = 30,
    domain: str = DOMAIN,
    timestamp: datetime | None = None,
) -> dict[str, Any]:
    ctx: dict[str, Any] = {
        "domain": domain,
        # a national search names the country only (no city)
        "location": {"city": {"code": city_code}, "country": {"code": country_code}}
        if city_code
        else {"country": {"code": country_code}},
        "action": action,
        "version": PROTOCOL_VERSION,
        "bap_id": bap_id,
        "bap_uri": bap_uri,
        "transaction_id": transaction_id,
        "message_id": message_id or new_id(),
        "timestamp": iso(timestamp or utc_now()),
        "ttl": f"PT{ttl_s}S",
    }
    if bpp_id:
        ctx["bpp_id"] = bpp_id
    if bpp_uri:
        ctx["bpp_uri"] = bpp_uri
    return ctx


def callback_context(request_ctx: dict[str, Any], action: str, ttl_s: int = 30) -> dict[str, Any]:
    """Context of the on_* answering a request: same transaction and message id, new action/time."""
    ctx = dict(request_ctx)
    ctx["action"] = action
    ctx["timestamp"] = iso(utc_now())
    ctx["ttl"] = f"PT{ttl_s}S"
    return ctx


def dumps(payload: dict[str, Any]) -> bytes:
    """The one serialisation of an outbound body: compact UTF-8 JSON."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
