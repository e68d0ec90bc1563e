"""Gateway use cases. Relays forward the exact bytes received with the original sender's
Authorization unchanged and the gateway's own signature in X-Gateway-Authorization (BECKN-006).

When the fan-out of a search to one BPP fails for good (the BPP refused it, or it could not be delivered
within the delivery TTL), the gateway tells the BAP: an on_search of its own, signed by the gateway in
Authorization, carrying an error (code 10004, "Receiver not found") and no catalog, whose context names the
BPP in `bpp_id`/`bpp_uri` (beckn/steps.py `GatewayReport` is the receiving side). Its message id is derived
from the search's and the BPP's ids (uuid5), so two BPPs failing for one search make two reports and a
retried report stays one. A search that no subscribed BPP serves is reported the same way, naming the
gateway itself as `bpp_id` — so an ACKed search is never followed by nothing."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from typing import Any

import structlog
from sqlalchemy.orm import Session

from beckn import envelope, outbox
from beckn.errors import BecknError, Role, code_for
from beckn.pipeline import Accepted, Handler, Inbound
from beckn.registry_client import subscribers_sync

log = structlog.get_logger(__name__)


def accept_search(session: Session, msg: Inbound, inbox_id: int) -> Accepted:
    return Accepted(process_async=True)


def accept_on_search(session: Session, msg: Inbound, inbox_id: int) -> Accepted:
    if msg.verified.sender_id != msg.context.bpp_id:
        raise BecknError("invalid_request", "a gateway's own report goes to the BAP directly, not through a gateway")
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
    if not bpps:  # an ACKed search is never followed by nothing: the BAP hears that nobody serves it
        city, country = (loc.get("city") or {}).get("code"), (loc.get("country") or {}).get("code")
        where = f"{ctx.get('domain')} in {f'city {city}, ' if city else ''}country {country}"
        own = subscribers_sync(type="BG", subscriber_id=row.receiver_id)
        own_url = own[0]["url"] if own else ctx.get("bap_uri", "")
        _report_to_bap(
            session, row.receiver_id, ctx, bpp_id=row.receiver_id, bpp_uri=own_url, error=f"no BPP serves {where}"
        )
        return []
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


def fan_out_failed(session: Session, failed: list[tuple[Any, str]]) -> None:
    """beckn.outbox hook: each search the gateway could not deliver to a BPP for good is reported to the
    BAP that sent it (the module docstring), in the transaction that records the failure; the outbox
    sweep delivers the report."""
    bpps = {outbox.endpoint(b["url"], "search"): b for b in subscribers_sync(type="BPP")}
    for row, error in failed:
        # the row is an outbox row, or a LeasedRow sent straight after writing it (no `action` column): the
        # message's own context says what it was
        ctx = json.loads(bytes(row.body))["context"]
        if ctx.get("action") != "search":
            continue  # a relayed on_search the BAP could not take: there is nobody else to tell
        bpp = bpps.get(row.receiver_url, {"subscriber_id": row.receiver_url, "url": row.receiver_url})
        error = f"search not delivered to {bpp['subscriber_id']}: {error}"
        _report_to_bap(session, row.sender_id, ctx, bpp_id=bpp["subscriber_id"], bpp_uri=bpp["url"], error=error)


def _report_to_bap(
    session: Session, gateway_id: str, search_ctx: dict[str, Any], *, bpp_id: str, bpp_uri: str, error: str
) -> None:
    """Queue the gateway's own on_search report (the module docstring) to the BAP that sent the search."""
    baps = subscribers_sync(type="BAP", subscriber_id=search_ctx.get("bap_id"))
    if not baps:
        return  # the BAP has left the network since: nobody to tell
    report = _fan_out_report(search_ctx, bpp_id=bpp_id, bpp_uri=bpp_uri, error=error)
    to = outbox.endpoint(baps[0]["url"], "on_search")
    outbox.enqueue(session, sender_id=gateway_id, receiver_url=to, action="on_search", payload=report)
    log.warning("search not answered by a BPP; BAP told", transaction_id=search_ctx.get("transaction_id"), bpp=bpp_id)


def _fan_out_report(search_ctx: dict[str, Any], *, bpp_id: str, bpp_uri: str, error: str) -> dict[str, Any]:
    ctx = envelope.callback_context(search_ctx, "on_search")
    ctx.update(
        bpp_id=bpp_id,
        bpp_uri=bpp_uri,
        message_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{search_ctx.get('message_id')}/{bpp_id}")),
    )
    code = code_for(Role.BG, "not_found")
    return {"context": ctx, "error": {"code": code.code, "message": error[:500]}}


def process(session: Session, row: Any) -> list[int]:
    return fan_out(session, row) if row.action == "search" else relay_on_search(session, row)
