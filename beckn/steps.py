"""The per-message steps of the Beckn pipeline, one class each, run in order by BecknPipeline.handle
(beckn/pipeline.py) — the way beckn-onix configures `validateSign → validateSchema → …`:

    action_served → read_body → parse_json → verify_sender_signature → verify_gateway_signature
    → context_schema → context_action → context_version → context_domain → context_required_fields
    → context_location → not_expired → signer_is_sender → sender_uri_registered → addressed_to_receiver
    → error_schema → message_present → message_schema

(`standard_steps` builds that list; a relay leaves out message_schema, the gateway addressed_to_receiver.)
Then the batch stage, dispatch (inbox row + handler, group commit), and the ACK.

A step reads and fills the Draft of one message, or raises BecknError to refuse it. The error's kind,
HTTP status, message and paths are the NACK (beckn/errors.py maps the kind to the receiver role's code);
the pipeline logs the refusing step's `name` with it. Adding a check is adding one class here and one
entry in `standard_steps`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from datetime import UTC, timedelta
from typing import Any, ClassVar

from fastapi import Request
from prometheus_client import Counter
from pydantic import BaseModel, ValidationError

from beckn import http, signing
from beckn.envelope import BPP_ACTIONS, DOMAIN, PROTOCOL_VERSION
from beckn.errors import BecknError, Role
from beckn.identity import Identity
from beckn.inbound import Inbound, Verified
from beckn.registry_client import KeyRecord, RegistryClient, RegistryError
from kernel import clock
from schemas.core import Context, Error
from schemas.messages import message_model

VERIFICATIONS = Counter("beckn_signature_verifications_total", "Signature checks", ["participant", "header", "result"])

# Which role may send each action (requests come from BAPs, callbacks from BPPs).
SENDER_ROLE = {a: Role.BAP for a in BPP_ACTIONS} | {f"on_{a}": Role.BPP for a in BPP_ACTIONS}

# A Beckn message here is a few kB (a catalog of a hundred offers is well under 100 kB); anything far
# larger is refused before it is buffered.
MAX_BODY_BYTES = 1 << 20


class Draft:
    """One inbound message while the steps work on it; attributes are set by the step that establishes
    them (read_body: raw, parse_json: payload, …) and read by the steps after it."""

    __slots__ = (
        "action",
        "context",
        "error",
        "gateway",
        "headers",
        "is_callback",
        "message",
        "payload",
        "raw",
        "receiver",
        "request",
        "sender",
    )

    request: Request
    headers: Any  # the request's (case-insensitive) headers
    action: str
    receiver: Identity
    is_callback: bool
    raw: bytes
    payload: dict[str, Any]
    sender: KeyRecord  # the verified Authorization signer
    gateway: KeyRecord | None  # the verified X-Gateway-Authorization signer
    context: Context
    error: Error | None
    message: BaseModel | None

    def __init__(self, request: Request, action: str, receiver: Identity) -> None:
        self.request = request
        self.headers = request.headers
        self.action = action
        self.receiver = receiver
        self.is_callback = action.startswith("on_")
        self.gateway = None
        self.error = None
        self.message = None

    def inbound(self) -> Inbound:
        """The message as handlers see it, once every step has passed."""
        s, g = self.sender, self.gateway
        return Inbound(
            action=self.action,
            raw=self.raw,
            payload=self.payload,
            context=self.context,
            message=self.message,
            error=self.error,
            receiver=self.receiver,
            verified=Verified(
                s.subscriber_id, s.unique_key_id, s.url, g.subscriber_id if g else None, g.unique_key_id if g else None
            ),
            authorization=self.headers.get("authorization"),
            gateway_authorization=self.headers.get("x-gateway-authorization"),
        )


class Step:
    """A synchronous step: `step(draft)` fills the draft or raises BecknError."""

    name: ClassVar[str]

    def __call__(self, m: Draft) -> None:
        raise NotImplementedError


class AsyncStep:
    """A step that waits for I/O (the request body, a registry lookup): `await step(draft)`."""

    name: ClassVar[str]

    async def __call__(self, m: Draft) -> None:
        raise NotImplementedError


def schema_error(exc: ValidationError, root: str) -> BecknError:
    """The first validation error, named by its path in the message (`message.order.items.0.…`)."""
    first = exc.errors()[0]
    path = ".".join([root, *(str(p) for p in first.get("loc", ()))])
    return BecknError("invalid_request", f"{path}: {first.get('msg')}", paths=path)


# -- transport ------------------------------------------------------------------------------------
class ActionServed(Step):
    """The path names an action this participant has a handler for (404 otherwise, nothing read)."""

    name = "action_served"

    def __init__(self, role: Role, actions: Collection[str]) -> None:
        self.role = role
        self.actions = frozenset(actions)

    def __call__(self, m: Draft) -> None:
        if m.action not in self.actions:
            raise BecknError(
                "action_not_applicable",
                f"unknown action {m.action!r}: this {self.role.value} serves {', '.join(sorted(self.actions))}",
                http_status=404,
            )


class ReadBody(AsyncStep):
    """The exact bytes received, refused (413, nothing read further) beyond MAX_BODY_BYTES."""

    name = "read_body"

    async def __call__(self, m: Draft) -> None:
        declared = m.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise BecknError("invalid_request", f"body of {declared} bytes exceeds {MAX_BODY_BYTES}", http_status=413)
        chunks, size = [], 0
        async for chunk in m.request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise BecknError("invalid_request", f"body exceeds {MAX_BODY_BYTES} bytes", http_status=413)
            chunks.append(chunk)
        m.raw = b"".join(chunks)


class ParseJson(Step):
    name = "parse_json"

    def __call__(self, m: Draft) -> None:
        try:
            payload = json.loads(m.raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BecknError("invalid_request", f"malformed JSON: {exc}") from exc
        if not isinstance(payload, dict) or not isinstance(payload.get("context"), dict):
            raise BecknError("invalid_request", "body must be a JSON object with a context object", paths="context")
        m.payload = payload


# -- signatures (BECKN-006) -----------------------------------------------------------------------
class _HeaderSignature(AsyncStep):
    """Verify one signature header against the key the registry holds for its keyId (401 when refused,
    503 when the registry cannot be asked)."""

    def __init__(self, participant: str, registry: RegistryClient, clock_skew_s: int) -> None:
        self.participant = participant
        self.registry = registry
        self.clock_skew_s = clock_skew_s

    async def verify(self, m: Draft, header: str | None, name: str, role: Role) -> KeyRecord:
        client: http.Client = m.request.app.state.http

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
            signing.verify(params, m.raw, record.public_key, clock_skew_s=self.clock_skew_s)
        except signing.SignatureError as exc:
            raise refuse(exc.reason, str(exc)) from exc
        VERIFICATIONS.labels(self.participant, name, "ok").inc()
        return record


class VerifySenderSignature(_HeaderSignature):
    """Authorization: signed by a subscribed key of the role that may send this action."""

    name = "verify_sender_signature"

    async def __call__(self, m: Draft) -> None:
        m.sender = await self.verify(m, m.headers.get("authorization"), "Authorization", SENDER_ROLE[m.action])


class VerifyGatewaySignature(_HeaderSignature):
    """X-Gateway-Authorization, when present: signed by a subscribed gateway."""

    name = "verify_gateway_signature"

    async def __call__(self, m: Draft) -> None:
        header = m.headers.get("x-gateway-authorization")
        if header is not None:
            m.gateway = await self.verify(m, header, "X-Gateway-Authorization", Role.BG)


# -- context ------------------------------------------------------------------------------------
class ContextSchema(Step):
    name = "context_schema"

    def __call__(self, m: Draft) -> None:
        try:
            m.context = Context.model_validate(m.payload["context"])
        except ValidationError as exc:
            raise schema_error(exc, "context") from exc


class ContextAction(Step):
    """context.action is the action of the path it was posted to."""

    name = "context_action"

    def __call__(self, m: Draft) -> None:
        if m.context.action != m.action:
            raise BecknError(
                "invalid_request",
                f"context.action {m.context.action!r} does not match /{m.action}",
                paths="context.action",
            )


class ContextVersion(Step):
    name = "context_version"

    def __call__(self, m: Draft) -> None:
        if m.context.version != PROTOCOL_VERSION:
            raise BecknError(
                "invalid_request",
                f"context.version must be {PROTOCOL_VERSION!r}, got {m.context.version!r}",
                paths="context.version",
            )


class ContextDomain(Step):
    name = "context_domain"

    def __call__(self, m: Draft) -> None:
        if m.context.domain != DOMAIN:
            raise BecknError(
                "invalid_request",
                f"unsupported domain {m.context.domain!r}; this network serves {DOMAIN}",
                paths="context.domain",
            )


class ContextRequiredFields(Step):
    """The context fields every message needs; all but a search also name the BPP."""

    name = "context_required_fields"
    ALWAYS = ("bap_id", "bap_uri", "transaction_id", "message_id", "timestamp")
    ADDRESSED = (*ALWAYS, "bpp_id", "bpp_uri")

    def __call__(self, m: Draft) -> None:
        required = self.ADDRESSED if m.is_callback or m.action != "search" else self.ALWAYS
        missing = [f for f in required if getattr(m.context, f) in (None, "")]
        if missing:
            raise BecknError("invalid_request", f"context lacks {', '.join(missing)}", paths="context")


class ContextLocation(Step):
    name = "context_location"

    def __call__(self, m: Draft) -> None:
        if not m.context.city_code or not m.context.country_code:
            raise BecknError(
                "invalid_request", "context.location.city.code and country.code are required", paths="context.location"
            )


_DURATION = re.compile(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?")


def iso_duration_s(text: str | None, default: float) -> float:
    """The ttl of a context: ISO 8601 durations like PT30S, PT5M, P1D."""
    if not text:
        return default
    m = _DURATION.fullmatch(text)
    if not m or not any(m.groups()):
        raise BecknError("invalid_request", f"context.ttl {text!r} is not an ISO 8601 duration", paths="context.ttl")
    d, h, mi, s = m.groups()
    return int(d or 0) * 86400 + int(h or 0) * 3600 + int(mi or 0) * 60 + float(s or 0)


class NotExpired(Step):
    """context.timestamp + context.ttl (default_ttl_s when absent) + clock skew is not yet past."""

    name = "not_expired"

    def __init__(self, default_ttl_s: float, clock_skew_s: int) -> None:
        self.default_ttl_s = default_ttl_s
        self.clock_skew_s = clock_skew_s

    def __call__(self, m: Draft) -> None:
        ttl = iso_duration_s(m.context.ttl, self.default_ttl_s)
        timestamp = m.context.timestamp
        assert timestamp is not None  # context_required_fields
        ts = timestamp if timestamp.tzinfo else timestamp.replace(tzinfo=UTC)
        if ts + timedelta(seconds=ttl + self.clock_skew_s) < clock.wall_now():
            raise BecknError("stale", f"message expired: timestamp {timestamp.isoformat()} + ttl {ttl:g} s")


# -- who sent it, to whom ---------------------------------------------------------------------------
class SignerIsSender(Step):
    """The signer is the participant the context names as sender (bap_id of a request, bpp_id of a callback)."""

    name = "signer_is_sender"

    def __call__(self, m: Draft) -> None:
        claimed = m.context.bpp_id if m.is_callback else m.context.bap_id
        if m.sender.subscriber_id != claimed:
            raise BecknError(
                "invalid_signature",
                f"signed by {m.sender.subscriber_id} but context names {claimed} as sender",
                http_status=401,
            )


class SenderUriRegistered(Step):
    """Callbacks go to the URL the registry holds for the sender, never to an unchecked one."""

    name = "sender_uri_registered"

    def __call__(self, m: Draft) -> None:
        ctx = m.context
        claimed_uri = ctx.bpp_uri if m.is_callback else ctx.bap_uri
        if claimed_uri is not None and claimed_uri.rstrip("/") != m.sender.url.rstrip("/"):
            claimed = ctx.bpp_id if m.is_callback else ctx.bap_id
            raise BecknError(
                "invalid_request",
                f"{'bpp_uri' if m.is_callback else 'bap_uri'} {claimed_uri} is not the URL registered for {claimed}",
                paths="context",
            )


class AddressedToReceiver(Step):
    """The context names this receiver (bpp_id of a request, bap_id of a callback) when it names one.
    Not a gateway's step: it relays messages addressed to others."""

    name = "addressed_to_receiver"

    def __call__(self, m: Draft) -> None:
        addressed = m.context.bap_id if m.is_callback else m.context.bpp_id
        if addressed is not None and addressed != m.receiver.subscriber_id:
            raise BecknError(
                "invalid_request",
                f"message is addressed to {addressed}, not {m.receiver.subscriber_id}",
                paths="context",
            )


# -- body ---------------------------------------------------------------------------------------------
class ErrorSchema(Step):
    name = "error_schema"

    def __call__(self, m: Draft) -> None:
        if m.payload.get("error") is not None:
            try:
                m.error = Error.model_validate(m.payload["error"])
            except ValidationError as exc:
                raise schema_error(exc, "error") from exc


class MessagePresent(Step):
    """A message object, except in a callback that carries an error instead."""

    name = "message_present"

    def __call__(self, m: Draft) -> None:
        message = m.payload.get("message")
        if (message is not None or not (m.is_callback and m.error is not None)) and not isinstance(message, dict):
            raise BecknError("invalid_request", "message object is required", paths="message")


class MessageSchema(Step):
    """The message against the action's schema. Not a relay's step: a relay forwards the message untouched
    and its final receiver validates it."""

    name = "message_schema"

    def __call__(self, m: Draft) -> None:
        message = m.payload.get("message")
        if message is not None:  # a dict: message_present
            try:
                m.message = message_model(m.action).model_validate(message)
            except ValidationError as exc:
                raise schema_error(exc, "message") from exc


def standard_steps(
    *,
    participant: str,
    role: Role,
    actions: Collection[str],
    registry: RegistryClient,
    clock_skew_s: int,
    default_ttl_s: float,
    relay_only: bool,
) -> list[Step | AsyncStep]:
    """The pipeline every participant runs, in order (see the module docstring)."""
    signatures = (participant, registry, clock_skew_s)
    return [
        ActionServed(role, actions),
        ReadBody(),
        ParseJson(),
        VerifySenderSignature(*signatures),
        VerifyGatewaySignature(*signatures),
        ContextSchema(),
        ContextAction(),
        ContextVersion(),
        ContextDomain(),
        ContextRequiredFields(),
        ContextLocation(),
        NotExpired(default_ttl_s, clock_skew_s),
        SignerIsSender(),
        SenderUriRegistered(),
        *([] if role == Role.BG else [AddressedToReceiver()]),
        ErrorSchema(),
        MessagePresent(),
        *([] if relay_only else [MessageSchema()]),
    ]
