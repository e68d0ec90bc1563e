"""The Beckn request pipeline, written once for every participant:

    parse → verify signature → validate → dispatch → ACK

Each step either returns what the next needs or raises BecknError, which becomes a NACK carrying the
receiver role's Beckn error code (beckn/errors.py): 400 for malformed input, 401 +
WWW-Authenticate for signature failures, 200 + NACK for business refusals. Dispatch records the
message in the inbox and runs the participant's handler in ONE database transaction, so a refused
message leaves no row behind; work that produces a callback runs later in a Celery task
(beckn/tasks.py), never in the request.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, timedelta
from typing import Any

import structlog
from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session

from beckn import http, signing
from beckn.envelope import BPP_ACTIONS, DOMAIN, PROTOCOL_VERSION
from beckn.errors import BecknError, Role, code_for
from beckn.identity import Identity
from beckn.registry_client import KeyRecord, RegistryClient, RegistryError
from kernel import clock
from kernel.db import pool_size, raw, session_scope
from schemas.core import AckResponse, Context, Error
from schemas.messages import message_model

log = structlog.get_logger(__name__)

INBOUND = Counter("beckn_inbound_total", "Beckn messages received", ["participant", "action", "result"])
VERIFICATIONS = Counter("beckn_signature_verifications_total", "Signature checks", ["participant", "header", "result"])
LATENCY = Histogram(
    "beckn_inbound_seconds",
    "Time to ACK/NACK",
    ["participant", "action"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)

# Which role may send each action (requests come from BAPs, callbacks from BPPs).
SENDER_ROLE = {a: Role.BAP for a in BPP_ACTIONS} | {f"on_{a}": Role.BPP for a in BPP_ACTIONS}


@dataclass(frozen=True)
class Verified:
    """Who signed: always the original sender; plus the gateway when the message was relayed."""

    sender_id: str
    sender_key_id: str
    sender_url: str
    gateway_id: str | None = None
    gateway_key_id: str | None = None


@dataclass
class Inbound:
    action: str
    raw: bytes
    payload: dict[str, Any]
    context: Context
    message: BaseModel | None
    error: Error | None
    receiver: Identity
    verified: Verified
    authorization: str
    gateway_authorization: str | None

    @property
    def ctx(self) -> dict[str, Any]:
        return self.payload["context"]


@dataclass(frozen=True)
class Accepted:
    """A handler's verdict: whether a Celery task must still process the message."""

    process_async: bool


Handler = Callable[[Session, Inbound, int], Accepted]


# (action, receiving identity) for a request path this process serves Beckn actions at, else None.
BecknRoute = Callable[[str], "tuple[str, Identity] | None"]


def prefixed_route(prefix: str, receiver: Identity, actions: Collection[str]) -> BecknRoute:
    """The BecknRoute of a participant that serves `actions` at `<prefix><action>` as one subscriber."""

    def route(path: str) -> tuple[str, Identity] | None:
        action = path.removeprefix(prefix)
        return (action, receiver) if action != path and action in actions else None

    return route


class FastLane:
    """ASGI front of a participant's FastAPI app: POSTs to its Beckn action paths go straight to the
    pipeline; everything else (client API, ops, docs, unknown paths) to the app.

    Why: a Beckn message's own work is a few hundred microseconds, and FastAPI's middleware stack, routing
    and dependency solving were about 40 % of a receiving process's CPU in the 50-provider search fan-out.
    The FastAPI routes for the same paths stay (documented, and they answer anything the lane does not
    take); both end in the same BecknPipeline.handle, so behaviour is identical."""

    def __init__(self, app: Any, route: BecknRoute) -> None:
        self.app = app
        self.route = route

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            hit = self.route(scope["path"])
            if hit is not None:
                scope["app"] = self.app  # what request.app means inside the pipeline
                response = await self.app.state.pipeline.handle(Request(scope, receive), *hit)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


# A Beckn message here is a few kB (a catalog of a hundred offers is well under 100 kB); anything far
# larger is refused before it is buffered.
MAX_BODY_BYTES = 1 << 20
GROUP_LANES = 2  # transactions in flight per receiving process; the rest of the messages wait and join a batch
GROUP_MAX = 64


class _GroupDispatch:
    """Group commit for inbound messages. Requests that arrive while a batch is being written join the
    next one: one thread hop, one INSERT, one commit and one task per sibling group for the lot. Fifty
    on_search answers arriving at once cost a handful of transactions instead of fifty, which was most of a
    receiving process's CPU (session, commit, Redis claim, thread hop per message)."""

    def __init__(self, dispatch: Callable[[list[Inbound]], list[bool | BaseException]], lanes: int) -> None:
        self.dispatch = dispatch
        self.lanes = lanes
        self.active = 0
        self.pending: list[tuple[Inbound, asyncio.Future[bool]]] = []

    async def submit(self, msg: Inbound) -> bool:
        """True for a duplicate; raises the handler's BecknError for a refused message."""
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.pending.append((msg, fut))
        if self.active < self.lanes:
            self.active += 1
            asyncio.get_running_loop().create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        try:
            while self.pending:
                batch = self.pending[:GROUP_MAX]
                del self.pending[:GROUP_MAX]
                try:
                    results = await run_in_threadpool(self.dispatch, [m for m, _ in batch])
                except Exception as exc:  # e.g. the database is unreachable: every waiter hears it
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                for (_, fut), r in zip(batch, results, strict=True):
                    if fut.done():  # the client went away; the message was still recorded
                        continue
                    if isinstance(r, BaseException):
                        fut.set_exception(r)
                    else:
                        fut.set_result(r)
        finally:
            self.active -= 1


def _iso_duration_s(text: str | None, default: float) -> float:
    """The ttl of a context: ISO 8601 durations like PT30S, PT5M, P1D."""
    if not text:
        return default
    m = re.fullmatch(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?", text)
    if not m or not any(m.groups()):
        raise BecknError("invalid_request", f"context.ttl {text!r} is not an ISO 8601 duration", paths="context.ttl")
    d, h, mi, s = m.groups()
    return int(d or 0) * 86400 + int(h or 0) * 3600 + int(mi or 0) * 60 + float(s or 0)


class BecknPipeline:
    def __init__(
        self,
        *,
        participant: str,
        role: Role,
        schema: str,
        handlers: dict[str, Handler],
        registry: RegistryClient,
        clock_skew_s: int = 5,
        default_ttl_s: float = 30.0,
        enqueue_processing: Callable[[str, int, str, str], None] | None = None,
        relay_only: bool = False,
        savepoint_actions: Collection[str] | None = None,
    ) -> None:
        # A relay (the gateway) checks the envelope — JSON, signatures, context — and forwards the message
        # untouched; its final receiver validates the message body against the schema.
        self.relay_only = relay_only
        # Handlers that may write before they refuse run under a savepoint when they share a transaction
        # with other messages (None: all of them). Read-only checks and handlers that refuse only before
        # their first write need none: undoing their inbox row is enough.
        self.savepoint_actions = frozenset(handlers) if savepoint_actions is None else frozenset(savepoint_actions)
        self._group = _GroupDispatch(self.dispatch, lanes=max(1, min(GROUP_LANES, pool_size())))
        self.participant = participant
        self.role = role
        self.schema = schema
        self.handlers = handlers
        self.registry = registry
        self.clock_skew_s = clock_skew_s
        self.default_ttl_s = default_ttl_s
        self.enqueue_processing = enqueue_processing

    # -- the pipeline ---------------------------------------------------------------------------
    async def handle(self, request: Request, action: str, receiver: Identity) -> JSONResponse:
        t0 = time.perf_counter()
        result = "ack"
        try:
            if action not in self.handlers:
                raise BecknError(
                    "action_not_applicable",
                    f"unknown action {action!r}: this {self.role.value} serves {', '.join(sorted(self.handlers))}",
                    http_status=404,
                )
            raw = await self.read_body(request)
            payload = self.parse(raw)
            verified = await self.verify(request.app.state.http, request.headers, raw, action)
            msg = self.validate(action, raw, payload, receiver, verified, request.headers)
            duplicate = await self._group.submit(msg)
            if duplicate:
                result = "duplicate"
            return JSONResponse(AckResponse.ack().dump())
        except BecknError as exc:
            result = exc.kind
            return self.nack(exc)
        finally:
            label = action if action in self.handlers else "unknown"  # bounded label set for Prometheus
            INBOUND.labels(self.participant, label, result).inc()
            LATENCY.labels(self.participant, label).observe(time.perf_counter() - t0)

    async def read_body(self, request: Request) -> bytes:
        """The exact bytes received, refused (413, nothing read further) beyond MAX_BODY_BYTES."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise BecknError("invalid_request", f"body of {declared} bytes exceeds {MAX_BODY_BYTES}", http_status=413)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise BecknError("invalid_request", f"body exceeds {MAX_BODY_BYTES} bytes", http_status=413)
            chunks.append(chunk)
        return b"".join(chunks)

    def parse(self, raw: bytes) -> dict[str, Any]:
        try:
            payload = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BecknError("invalid_request", f"malformed JSON: {exc}") from exc
        if not isinstance(payload, dict) or not isinstance(payload.get("context"), dict):
            raise BecknError("invalid_request", "body must be a JSON object with a context object", paths="context")
        return payload

    async def verify(self, client: http.Client, headers: Any, raw: bytes, action: str) -> Verified:
        sender = await self._verify_header(
            client, headers.get("authorization"), raw, "Authorization", SENDER_ROLE[action]
        )
        gateway = None
        if headers.get("x-gateway-authorization") is not None:
            gateway = await self._verify_header(
                client, headers.get("x-gateway-authorization"), raw, "X-Gateway-Authorization", Role.BG
            )
        return Verified(
            sender.subscriber_id,
            sender.unique_key_id,
            sender.url,
            gateway.subscriber_id if gateway else None,
            gateway.unique_key_id if gateway else None,
        )

    async def _verify_header(
        self, client: http.Client, header: str | None, raw: bytes, name: str, role: Role
    ) -> KeyRecord:
        def refuse(reason: str, message: str) -> BecknError:
            VERIFICATIONS.labels(self.participant, name, reason).inc()
            return BecknError("invalid_signature", f"{name}: {message}", http_status=401)

        try:
            params = signing.parse_authorization(header)
        except signing.SignatureError as exc:
            raise refuse(exc.reason, str(exc)) from exc
        try:
            record = await self.registry.key_for(client, params.subscriber_id, params.unique_key_id)
        except RegistryError as exc:
            VERIFICATIONS.labels(self.participant, name, "registry_unavailable").inc()
            raise BecknError("invalid_signature", f"cannot verify {name}: {exc}", http_status=503) from exc
        if record is None:
            raise refuse("unknown_key", f"key {params.unique_key_id} of {params.subscriber_id} is not subscribed")
        if record.type != role.value:
            raise refuse("wrong_role", f"{params.subscriber_id} is a {record.type}, expected a {role.value}")
        if not record.valid_at(clock.wall_now()):
            raise refuse("key_not_valid", f"key {params.unique_key_id} is outside its validity window")
        try:
            signing.verify(params, raw, record.public_key, clock_skew_s=self.clock_skew_s)
        except signing.SignatureError as exc:
            raise refuse(exc.reason, str(exc)) from exc
        VERIFICATIONS.labels(self.participant, name, "ok").inc()
        return record

    def validate(
        self, action: str, raw: bytes, payload: dict[str, Any], receiver: Identity, verified: Verified, headers: Any
    ) -> Inbound:
        try:
            context = Context.model_validate(payload["context"])
        except ValidationError as exc:
            raise _schema_error(exc, "context") from exc
        if context.action != action:
            raise BecknError(
                "invalid_request", f"context.action {context.action!r} does not match /{action}", paths="context.action"
            )
        if context.version != PROTOCOL_VERSION:
            raise BecknError(
                "invalid_request",
                f"context.version must be {PROTOCOL_VERSION!r}, got {context.version!r}",
                paths="context.version",
            )
        if context.domain != DOMAIN:
            raise BecknError(
                "invalid_request",
                f"unsupported domain {context.domain!r}; this network serves {DOMAIN}",
                paths="context.domain",
            )
        is_callback = action.startswith("on_")
        required = ["bap_id", "bap_uri", "transaction_id", "message_id", "timestamp"]
        if is_callback or action != "search":
            required += ["bpp_id", "bpp_uri"]
        missing = [f for f in required if getattr(context, f) in (None, "")]
        if missing:
            raise BecknError("invalid_request", f"context lacks {', '.join(missing)}", paths="context")
        if not context.city_code or not context.country_code:
            raise BecknError(
                "invalid_request", "context.location.city.code and country.code are required", paths="context.location"
            )
        ttl = _iso_duration_s(context.ttl, self.default_ttl_s)
        assert context.timestamp is not None
        ts = context.timestamp if context.timestamp.tzinfo else context.timestamp.replace(tzinfo=UTC)
        if ts + timedelta(seconds=ttl + self.clock_skew_s) < clock.wall_now():
            raise BecknError("stale", f"message expired: timestamp {context.timestamp.isoformat()} + ttl {ttl:g} s")
        # The signer must be the participant the context names as sender.
        claimed = context.bpp_id if is_callback else context.bap_id
        if verified.sender_id != claimed:
            raise BecknError(
                "invalid_signature",
                f"signed by {verified.sender_id} but context names {claimed} as sender",
                http_status=401,
            )
        # Callbacks go to the URL the registry holds for the sender, never to an unchecked one.
        claimed_uri = context.bpp_uri if is_callback else context.bap_uri
        if claimed_uri is not None and claimed_uri.rstrip("/") != verified.sender_url.rstrip("/"):
            raise BecknError(
                "invalid_request",
                f"{'bpp_uri' if is_callback else 'bap_uri'} {claimed_uri} is not the URL registered for {claimed}",
                paths="context",
            )
        addressed = context.bap_id if is_callback else context.bpp_id
        if self.role != Role.BG and addressed is not None and addressed != receiver.subscriber_id:
            raise BecknError(
                "invalid_request", f"message is addressed to {addressed}, not {receiver.subscriber_id}", paths="context"
            )
        error = None
        if payload.get("error") is not None:
            try:
                error = Error.model_validate(payload["error"])
            except ValidationError as exc:
                raise _schema_error(exc, "error") from exc
        message = None
        if payload.get("message") is not None or not (is_callback and error is not None):
            if not isinstance(payload.get("message"), dict):
                raise BecknError("invalid_request", "message object is required", paths="message")
            if not self.relay_only:
                try:
                    message = message_model(action).model_validate(payload["message"])
                except ValidationError as exc:
                    raise _schema_error(exc, "message") from exc
        return Inbound(
            action=action,
            raw=raw,
            payload=payload,
            context=context,
            message=message,
            error=error,
            receiver=receiver,
            verified=verified,
            authorization=headers.get("authorization"),
            gateway_authorization=headers.get("x-gateway-authorization"),
        )

    def dispatch(self, msgs: list[Inbound]) -> list[bool | BaseException]:
        """Inbox rows + handlers for a batch of messages in ONE transaction (beckn.pipeline._GroupDispatch
        gathers requests that arrive together). Per message: False (accepted), True (a duplicate: ACKed,
        not processed again), or the BecknError its handler raised — its inbox row and any writes are
        undone before the commit, so a refused message leaves nothing behind.

        Handlers that may write before refusing (savepoint_actions) run under a savepoint each when the
        batch holds several messages; the others (acceptance checks) need none. A batch that fails for any other
        reason is retried one message per transaction, so one bad message never takes its neighbours down."""
        results: list[bool | BaseException]
        try:
            results, accepted = self._dispatch_batch(msgs)
        except Exception:
            if len(msgs) == 1:
                raise
            results, accepted = [], []
            for m in msgs:
                try:
                    r, a = self._dispatch_batch([m])
                except Exception as exc:  # BecknError → NACK; anything else fails this message alone
                    r, a = [exc], []
                results += r
                accepted += a
        self._enqueue(accepted)
        return results

    def _dispatch_batch(self, msgs: list[Inbound]) -> tuple[list[bool | BaseException], list[tuple[Inbound, int]]]:
        results: list[bool | BaseException] = [True] * len(msgs)
        later: list[tuple[Inbound, int]] = []
        with session_scope(self.schema) as s:
            conn = raw(s)
            cols: list[list[Any]] = [[] for _ in range(11)]
            for m in msgs:
                v = m.verified
                for col, value in zip(
                    cols,
                    (
                        m.receiver.subscriber_id,
                        v.sender_id,
                        v.sender_key_id,
                        v.gateway_id,
                        v.gateway_key_id,
                        m.action,
                        m.context.message_id,
                        m.context.transaction_id,
                        m.raw,
                        m.authorization,
                        m.gateway_authorization,
                    ),
                    strict=True,
                ):
                    col.append(value)
            new_ids = {(r[1], r[2], r[3], r[4]): r[0] for r in conn.execute(_INBOX_SQL, cols).fetchall()}
            done: list[int] = []
            for i, m in enumerate(msgs):
                inbox_id = new_ids.pop(
                    (m.receiver.subscriber_id, m.verified.sender_id, m.context.message_id, m.action), None
                )
                if inbox_id is None:  # a duplicate (also of an earlier message in this batch)
                    log.info(
                        "duplicate message ignored",
                        action=m.action,
                        message_id=m.context.message_id,
                        sender=m.verified.sender_id,
                    )
                    continue
                handler = self.handlers[m.action]
                try:
                    if len(msgs) > 1 and m.action in self.savepoint_actions:
                        with s.begin_nested():
                            verdict = handler(s, m, inbox_id)
                    else:
                        verdict = handler(s, m, inbox_id)
                except BecknError as exc:
                    if len(msgs) == 1:
                        raise  # the whole transaction rolls back
                    conn.execute("DELETE FROM inbox WHERE id = %s", (inbox_id,))
                    results[i] = exc
                    continue
                results[i] = False
                if verdict.process_async:
                    later.append((m, inbox_id))
                else:
                    done.append(inbox_id)
            if done:
                conn.execute("UPDATE inbox SET status = 'PROCESSED', processed_at = now() WHERE id = ANY(%s)", (done,))
        return results, later

    def _enqueue(self, accepted: list[tuple[Inbound, int]]) -> None:
        """After commit: one processing task per sibling group (same message_id and action)."""
        if not self.enqueue_processing:
            return
        first: dict[tuple[str, str], int] = {}
        for m, inbox_id in accepted:
            first.setdefault((str(m.context.message_id), m.action), inbox_id)
        for (message_id, action), inbox_id in first.items():
            try:
                self.enqueue_processing(self.schema, inbox_id, message_id, action)
            except Exception:  # the row is committed: the sweep will enqueue it again
                log.exception("could not enqueue processing; the sweep will retry", inbox_id=inbox_id)

    def nack(self, exc: BecknError) -> JSONResponse:
        code = code_for(self.role, exc.kind)
        body = AckResponse.nack(code.code, exc.message, exc.paths).dump()
        headers = {}
        if exc.http_status == 401:
            headers["WWW-Authenticate"] = 'Signature realm="flexmarket",headers="(created) (expires) digest"'
        log.info("nack", participant=self.participant, code=code.code, reason=exc.message)
        return JSONResponse(body, status_code=exc.http_status, headers=headers)


# The inbox_dedup constraint makes a duplicate (same receiver, sender, message_id, action) a no-op.
_INBOX_SQL = (
    "INSERT INTO inbox (receiver_id, sender_id, sender_key_id, gateway_id, gateway_key_id, signature_verified, "
    'action, message_id, transaction_id, body, "authorization", gateway_authorization, status) '
    "SELECT r, s, sk, g, gk, true, a, m, t, b, au, ga, 'RECEIVED' FROM unnest(%s::text[], %s::text[], %s::text[], "
    "%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::bytea[], %s::text[], %s::text[]) "
    "AS v(r, s, sk, g, gk, a, m, t, b, au, ga) "
    "ON CONFLICT ON CONSTRAINT inbox_dedup DO NOTHING RETURNING id, receiver_id, sender_id, message_id, action"
)


def _schema_error(exc: ValidationError, root: str) -> BecknError:
    first = exc.errors()[0]
    path = ".".join([root, *(str(p) for p in first.get("loc", ()))])
    return BecknError("invalid_request", f"{path}: {first.get('msg')}", paths=path)
