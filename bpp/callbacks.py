"""The BPP's Beckn callbacks (on_search, on_select, …, on_cancel): the callback context under the platform's own
identity, the error encoding, and the outbox message that carries them (signed and delivered by beckn/outbox.py
once the caller's transaction commits)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from beckn import envelope, outbox
from beckn.errors import BecknError, Role, code_for
from beckn.identity import load_identity
from kernel.config import get_settings


def callback(
    session: Session,
    bpp_id: str,
    req_ctx: dict[str, Any],
    action: str,
    *,
    message: dict[str, Any] | None = None,
    error: BecknError | None = None,
    to_url: str | None = None,
) -> int:
    """Record the callback in the outbox (in the caller's transaction); its outbox id."""
    return outbox.enqueue_many(
        session, [callback_message(bpp_id, req_ctx, action, message=message, error=error, to_url=to_url)]
    )[0]


def callback_message(
    bpp_id: str,
    req_ctx: dict[str, Any],
    action: str,
    *,
    message: dict[str, Any] | None = None,
    error: BecknError | None = None,
    to_url: str | None = None,
) -> outbox.Outbound:
    """The callback answering the request whose context is `req_ctx`, to the buyer's URI unless `to_url` says."""
    ident = load_identity(get_settings().home, bpp_id)
    ctx = envelope.callback_context(req_ctx, action)
    ctx["bpp_id"], ctx["bpp_uri"] = ident.subscriber_id, ident.url
    payload: dict[str, Any] = {"context": ctx}
    if message is not None:
        payload["message"] = message
    if error is not None:
        code = code_for(Role.BPP, error.kind)
        payload["error"] = {"code": code.code, "message": error.message}
    return outbox.outbound(bpp_id, outbox.endpoint(to_url or ctx["bap_uri"], action), action, payload)
