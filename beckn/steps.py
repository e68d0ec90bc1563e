"""The per-message steps of the Beckn pipeline, one class each, run in order by BecknPipeline.handle
(beckn/pipeline.py) — the way beckn-onix configures `validateSign → validateSchema → …`:

    action_served → read_body → json_depth → parse_json → verify_sender_signature → sender_rate_limit
    → verify_gateway_signature → clean_values → context_schema → context_action → context_version
    → context_domain → context_required_fields → context_location → not_expired → gateway_report
    → signer_is_sender
    → sender_uri_registered → addressed_to_receiver → error_schema → message_present → window_in_reach
    → message_schema

(`standard_steps` builds that list; a relay leaves out message_schema, the gateway addressed_to_receiver.)
Then the batch stage, dispatch (inbox row + handler, group commit), and the ACK.

A step reads and fills the Draft of one message, or raises BecknError to refuse it. The error's kind,
HTTP status, message and paths are the NACK (beckn/errors.py maps the kind to the receiver role's code);
the pipeline logs the refusing step's `name` with it. Adding a check is adding one class here and one
entry in `standard_steps`.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Callable, Collection
from datetime import UTC, datetime, timedelta
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
from kernel.config import get_settings
from schemas import limits
from schemas.core import Context, Error
from schemas.messages import message_model

VERIFICATIONS = Counter("beckn_signature_verifications_total", "Signature checks", ["participant", "header", "result"])

# Which roles may sign each action (requests come from BAPs, callbacks from BPPs). A gateway also signs
# one kind of on_search of its own: the report that its fan-out of a search to one BPP failed for good
# (gateway/service.py `fan_out_failed`), which carries an error and never a catalog (GatewayReport).
SENDER_ROLES: dict[str, tuple[Role, ...]] = (
    {a: (Role.BAP,) for a in BPP_ACTIONS}
    | {f"on_{a}": (Role.BPP,) for a in BPP_ACTIONS}
    | {"on_search": (Role.BPP, Role.BG)}
)


def is_gateway_report(sender: KeyRecord | None) -> bool:
    """Signed (in Authorization) by a gateway itself: its report of a failed fan-out."""
    return sender is not None and sender.type == Role.BG.value


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
    """The exact bytes received, refused (413, nothing read further) beyond limits.MAX_BODY_BYTES (a Beckn
    message here is a few kB: a catalog of a hundred offers is well under 100 kB)."""

    name = "read_body"

    async def __call__(self, m: Draft) -> None:
        try:
            m.raw = await limits.read_within_limit(m.request.stream(), m.headers.get("content-length"))
        except limits.BodyTooLarge as exc:
            raise BecknError("invalid_request", str(exc), http_status=413) from exc


class JsonDepth(Step):
    """Arrays and objects nested at most MAX_JSON_DEPTH deep, counted on the bytes before parsing (the
    parser recurses: thousands of levels would end in a RecursionError)."""

    name = "json_depth"

    def __call__(self, m: Draft) -> None:
        problem = limits.depth_error(m.raw)
        if problem:
            raise BecknError("invalid_request", problem, paths="body")


class ParseJson(Step):
    name = "parse_json"

    def __call__(self, m: Draft) -> None:
        try:
            payload = json.loads(m.raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
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

    async def verify(self, m: Draft, header: str | None, name: str, roles: tuple[Role, ...]) -> KeyRecord:
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
            raise BecknError(
                "invalid_signature", f"cannot verify {name}: {exc}", http_status=503, retry_after_s=5
            ) from exc
        if record is None:
            raise refuse("unknown_key", f"key {params.unique_key_id} of {params.subscriber_id} is not subscribed")
        if record.type not in {r.value for r in roles}:
            expected = " or ".join(r.value for r in roles)
            raise refuse("wrong_role", f"{params.subscriber_id} is a {record.type}, expected a {expected}")
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
        m.sender = await self.verify(m, m.headers.get("authorization"), "Authorization", SENDER_ROLES[m.action])


class TokenBuckets:
    """One token bucket per key, in this process's memory: `burst` tokens, refilled at `rate_per_s`.
    `take(key)` spends a token and answers 0, or answers the seconds until one is available."""

    def __init__(self, rate_per_s: float, burst: int, now: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate_per_s
        self.burst = float(max(1, burst))
        self.now = now
        self._lock = threading.Lock()
        self._buckets: dict[Any, tuple[float, float]] = {}  # key → (tokens, at)

    def take(self, key: Any) -> float:
        now = self.now()
        with self._lock:
            tokens, at = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate


class SenderRateLimit(Step):
    """At most `rate_per_s` messages per second (bursts of `burst`) from one verified sender to one receiving
    subscriber; beyond it 429 with Retry-After (outboxes retry 429). Keyed by the Authorization signer, so
    only after its signature is verified: an unsigned flood cannot spend a real sender's tokens.

    The buckets live in the receiving process's memory: the limit holds per receiving process (one per
    participant under `flexmarket up`), not across replicas. Sized (FLEXMARKET_RATE_LIMIT_BURST) so that a
    gateway relaying fifty providers' answers to one search is never throttled. Rate ≤ 0 disables it."""

    name = "sender_rate_limit"

    def __init__(self, rate_per_s: float, burst: int, now: Callable[[], float] = time.monotonic) -> None:
        self.buckets = TokenBuckets(rate_per_s, burst, now) if rate_per_s > 0 else None

    def __call__(self, m: Draft) -> None:
        if self.buckets is None:
            return
        wait = self.buckets.take((m.receiver.subscriber_id, m.sender.subscriber_id))
        if wait > 0:
            raise BecknError(
                "throttled",
                f"rate limit: {m.sender.subscriber_id} sends more than {self.buckets.rate:g} messages/s",
                http_status=429,
                retry_after_s=max(1, math.ceil(wait)),
            )


class VerifyGatewaySignature(_HeaderSignature):
    """X-Gateway-Authorization, when present: signed by a subscribed gateway."""

    name = "verify_gateway_signature"

    async def __call__(self, m: Draft) -> None:
        header = m.headers.get("x-gateway-authorization")
        if header is not None:
            m.gateway = await self.verify(m, header, "X-Gateway-Authorization", (Role.BG,))


# -- values --------------------------------------------------------------------------------------
class CleanValues(Step):
    """No string in the message holds NUL or a control character (tab, newline and carriage return
    aside: PostgreSQL refuses NUL in text), and no number is beyond ±2**53 or infinite (schemas/limits.py).
    A fast scan of the bytes decides whether the parsed message needs walking at all."""

    name = "clean_values"

    def __call__(self, m: Draft) -> None:
        if limits.maybe_bad(m.raw):
            bad = limits.find_bad_value(m.payload)
            if bad is not None:
                raise BecknError("invalid_request", f"{bad[0]}: {bad[1]}", paths=bad[0])


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
    """A country always; a city too, except for a national search (country only, as a national system
    operator sends it) and the on_search answers to it."""

    name = "context_location"
    NATIONAL = frozenset({"search", "on_search"})

    def __call__(self, m: Draft) -> None:
        if not m.context.country_code:
            raise BecknError("invalid_request", "context.location.country.code is required", paths="context.location")
        if not m.context.city_code and m.action not in self.NATIONAL:
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
    ttl_s = int(d or 0) * 86400 + int(h or 0) * 3600 + int(mi or 0) * 60 + float(s or 0)
    if ttl_s > limits.MAX_MESSAGE_TTL_S:
        raise BecknError(
            "invalid_request", f"context.ttl {text!r} is longer than {limits.MAX_MESSAGE_TTL_S} s", paths="context.ttl"
        )
    return ttl_s


class NotExpired(Step):
    """context.timestamp + context.ttl (default_ttl_s when absent) + clock skew is not yet past, and the
    timestamp is not ahead of this clock by more than the skew (ttl ≤ limits.MAX_MESSAGE_TTL_S, so the sums
    stay within the calendar)."""

    name = "not_expired"

    def __init__(self, default_ttl_s: float, clock_skew_s: int) -> None:
        self.default_ttl_s = default_ttl_s
        self.clock_skew_s = clock_skew_s

    def __call__(self, m: Draft) -> None:
        ttl = iso_duration_s(m.context.ttl, self.default_ttl_s)
        timestamp = m.context.timestamp
        assert timestamp is not None  # context_required_fields
        ts = timestamp if timestamp.tzinfo else timestamp.replace(tzinfo=UTC)
        now = clock.wall_now()
        if ts > now + timedelta(seconds=self.clock_skew_s):
            raise BecknError(
                "stale", f"context.timestamp {timestamp.isoformat()} is in the future", paths="context.timestamp"
            )
        if ts < now - timedelta(seconds=ttl + self.clock_skew_s):
            raise BecknError("stale", f"message expired: timestamp {timestamp.isoformat()} + ttl {ttl:g} s")


# -- who sent it, to whom ---------------------------------------------------------------------------
class GatewayReport(Step):
    """A gateway signs only reports of its own failed fan-out: an on_search that carries an error (naming,
    in context.bpp_id, the BPP it could not reach) and no catalog, sent directly rather than relayed."""

    name = "gateway_report"

    def __call__(self, m: Draft) -> None:
        if not is_gateway_report(m.sender):
            return
        message = m.payload.get("message")
        if m.payload.get("error") is None or (isinstance(message, dict) and message.get("catalog") is not None):
            raise BecknError(
                "invalid_signature",
                f"{m.sender.subscriber_id} is a gateway: it signs only error reports of its fan-out, not catalogs",
                http_status=401,
            )
        if m.gateway is not None:
            raise BecknError("invalid_request", "a gateway's own report is not relayed by another gateway")


class SignerIsSender(Step):
    """The signer is the participant the context names as sender (bap_id of a request, bpp_id of a callback);
    a gateway's report (GatewayReport) names the BPP it could not reach instead."""

    name = "signer_is_sender"

    def __call__(self, m: Draft) -> None:
        if is_gateway_report(m.sender):
            return
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
        if is_gateway_report(m.sender):
            return  # bpp_uri names the BPP the gateway could not reach; the report goes nowhere else
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


def _window_of(message: dict[str, Any], action: str) -> tuple[str, Any, Any] | None:
    """(path, start, end) of the window a request names, read from the raw message (a relay has no
    validated model), or None when it names none."""
    if action == "search":
        base, holder = "message.intent.fulfillment.stops.0.time.range", message.get("intent")
        for key in ("fulfillment", "stops", 0, "time", "range"):
            holder = _get(holder, key)
    else:
        base, holder = "message.order.fulfillments.0.stops.0.time.range", message.get("order")
        for key in ("fulfillments", 0, "stops", 0, "time", "range"):
            holder = _get(holder, key)
    if not isinstance(holder, dict):
        return None
    return base, holder.get("start"), holder.get("end")


def _get(holder: Any, key: str | int) -> Any:
    if isinstance(key, int):
        return holder[key] if isinstance(holder, list) and len(holder) > key else None
    return holder.get(key) if isinstance(holder, dict) else None


class WindowInReach(Step):
    """The load-reduction window of a search, select, init, confirm or update has not ended and starts at
    most `max_ahead_days` ahead of the market clock (schemas/limits.py check_market_window). Windows that
    are not ISO 8601 instants are left to message_schema and the handlers."""

    name = "window_in_reach"
    ACTIONS = frozenset({"search", "select", "init", "confirm", "update"})

    def __init__(self, max_ahead_days: float) -> None:
        self.max_ahead_days = max_ahead_days

    def __call__(self, m: Draft) -> None:
        message = m.payload.get("message")
        if m.action not in self.ACTIONS or not isinstance(message, dict):
            return
        found = _window_of(message, m.action)
        if found is None:
            return
        path, start, end = found
        try:
            s, e = datetime.fromisoformat(start), datetime.fromisoformat(end)
        except (TypeError, ValueError):
            return
        if s.tzinfo is None or e.tzinfo is None:
            return
        refused = limits.check_market_window(s, e, clock.now(), self.max_ahead_days)
        if refused is not None:
            field = f"{path}.{'end' if refused[0] == 'window_end' else 'start'}"
            raise BecknError("invalid_request", f"{field}: {refused[1]}", paths=field)


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
    rate_limit_per_s: float | None = None,
    rate_limit_burst: int | None = None,
) -> list[Step | AsyncStep]:
    """The pipeline every participant runs, in order (see the module docstring). The rate limit defaults
    to FLEXMARKET_RATE_LIMIT_PER_S / FLEXMARKET_RATE_LIMIT_BURST."""
    signatures = (participant, registry, clock_skew_s)
    settings = get_settings()
    return [
        ActionServed(role, actions),
        ReadBody(),
        JsonDepth(),
        ParseJson(),
        VerifySenderSignature(*signatures),
        SenderRateLimit(
            settings.rate_limit_per_s if rate_limit_per_s is None else rate_limit_per_s,
            settings.rate_limit_burst if rate_limit_burst is None else rate_limit_burst,
        ),
        VerifyGatewaySignature(*signatures),
        CleanValues(),
        ContextSchema(),
        ContextAction(),
        ContextVersion(),
        ContextDomain(),
        ContextRequiredFields(),
        ContextLocation(),
        NotExpired(default_ttl_s, clock_skew_s),
        GatewayReport(),
        SignerIsSender(),
        SenderUriRegistered(),
        *([] if role == Role.BG else [AddressedToReceiver()]),
        ErrorSchema(),
        MessagePresent(),
        WindowInReach(settings.max_window_ahead_days),
        *([] if relay_only else [MessageSchema()]),
    ]
