"""Gateway use cases. Relays forward the exact bytes received with the original sender's
Authorization unchanged and the gateway's own signature in X-Gateway-Authorization (BECKN-006)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import structlog
from sqlalchemy.orm import Session

from beckn import outbox
from beckn.errors import BecknError
from beckn.pipeline import Accepted, Handler, Inbound
from beckn.registry_client import subscribers_sync

log = structlog.get_logger(__name__)


def accept_search(session: Session, msg: Inbound, inbox_id: int) -> Accepted:
    return Accepted(process_async=True)


def accept_on_search(session: Session, msg: Inbound, inbox_id: int) -> Accepted:
    if msg.verified.gateway_id is not None:
        raise BecknError("invalid_request", "on_search already relayed by a gateway; refusing a second hop")
    if not subscribers_sync(type="BAP", subscriber_id=msg.context.bap_id):
        raise BecknError(
            "not_found",
            f"BAP {msg.context.bap_id!r} is not subscribed to this network",
            http_status=200,
            paths="context.bap_id",
        )
    return Accepted(process_async=True)


HANDLERS: dict[str, Handler] = {"search": accept_search, "on_search": accept_on_search}


def fan_out(session: Session, row: Any) -> list[int]:
    """One outbox row per SUBSCRIBED BPP serving the search's domain, city and country — a national
    search (country only, no city) reaches every BPP subscribed in the country. The gateway signs as
    the subscriber that received the message (row.receiver_id), so any worker can relay."""
    ctx = json.loads(row.body)["context"]
    loc = ctx.get("location") or {}
    bpps = subscribers_sync(
        type="BPP",
        domain=ctx.get("domain"),
        city=(loc.get("city") or {}).get("code") or None,
        country=(loc.get("country") or {}).get("code"),
    )
    if ctx.get("bpp_id"):  # a search addressed to one BPP goes only there
        bpps = [b for b in bpps if b["subscriber_id"] == ctx["bpp_id"]]
    log.info("fan-out", transaction_id=ctx.get("transaction_id"), bpps=len(bpps))
    msg = outbox.outbound(row.receiver_id, "", "search", row.body, row.authorization)
    for b in bpps:  # deferred: written in one statement with the batch, sent by this worker (beckn/processing.py)
        outbox.defer(session, replace(msg, receiver_url=outbox.endpoint(b["url"], "search")))
    return []


def relay_on_search(session: Session, row: Any) -> list[int]:
    ctx = json.loads(row.body)["context"]
    baps = subscribers_sync(type="BAP", subscriber_id=ctx.get("bap_id"))
    if not baps:
        # Checked at acceptance; it can only vanish if the BAP unsubscribed since — retried, then FAILED.
        raise LookupError(f"BAP {ctx.get('bap_id')!r} is not subscribed")
    to = outbox.endpoint(baps[0]["url"], "on_search")
    # Deferred: the batch of sibling answers is written in one statement (beckn/processing.py).
    outbox.defer(session, outbox.outbound(row.receiver_id, to, "on_search", row.body, row.authorization))
    return []


def process(session: Session, row: Any) -> list[int]:
    return fan_out(session, row) if row.action == "search" else relay_on_search(session, row)
