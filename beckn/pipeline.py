"""The Beckn request pipeline, written once for every participant:

    steps (beckn/steps.py: read and parse the body, verify signatures, check context and message) →
    dispatch (a batch stage: inbox row + handler, group commit) → ACK

Each step either fills in what the next needs or raises BecknError, which becomes a NACK carrying the
receiver role's Beckn error code (beckn/errors.py): 400 for malformed input, 401 +
WWW-Authenticate for signature failures, 200 + NACK for business refusals; the refusing step's name is
logged with it. Dispatch records the message in the inbox and runs the participant's handler in ONE
database transaction, so a refused message leaves no row behind; work that produces a callback runs
later in a Celery task (beckn/tasks.py), never in the request.

Both ways in — the fast lane (FastLane, below) and the participants' FastAPI routes — call
BecknPipeline.handle, so both run the one step list of the pipeline (BecknPipeline.steps).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Sequence
from operator import attrgetter
from typing import Any

import structlog
from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import Counter, Histogram

from beckn.errors import BecknError, Role, code_for
from beckn.identity import Identity
from beckn.inbound import Accepted, Handler, Inbound, Verified
from beckn.models import inbox, unnest_insert
from beckn.registry_client import RegistryClient
from beckn.steps import AsyncStep, Draft, Step, standard_steps
from kernel.db import pool_size, raw, session_scope, unavailable
from schemas.core import AckResponse

# The types a participant's handlers use, from where they are defined (beckn/inbound.py).
__all__ = [
    "Accepted",
    "BecknPipeline",
    "BecknRoute",
    "FastLane",
    "Handler",
    "Inbound",
    "Verified",
    "prefixed_route",
]

log = structlog.get_logger(__name__)

INBOUND = Counter("beckn_inbound_total", "Beckn messages received", ["participant", "action", "result"])
LATENCY = Histogram(
    "beckn_inbound_seconds",
    "Time to ACK/NACK",
    ["participant", "action"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)

DISPATCH = "dispatch"  # the name of the batch stage, for logs (handlers' refusals)


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
    take); both call the same BecknPipeline.handle, which runs the pipeline's one step list, so behaviour
    is identical."""

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
        steps: Sequence[Step | AsyncStep] | None = None,
    ) -> None:
        """`steps` replaces the standard list (beckn/steps.py standard_steps), which is built from
        the other arguments. A relay (the gateway, `relay_only`) checks the envelope — JSON, signatures,
        context — and forwards the message untouched; its final receiver validates the message body."""
        self.participant = participant
        self.role = role
        self.schema = schema
        self.handlers = handlers
        self.enqueue_processing = enqueue_processing
        self.steps = (
            standard_steps(
                participant=participant,
                role=role,
                actions=handlers,
                registry=registry,
                clock_skew_s=clock_skew_s,
                default_ttl_s=default_ttl_s,
                relay_only=relay_only,
            )
            if steps is None
            else steps
        )
        # Handlers that may write before they refuse run under a savepoint when they share a transaction
        # with other messages (None: all of them). Read-only checks and handlers that refuse only before
        # their first write need none: undoing their inbox row is enough.
        self.savepoint_actions = frozenset(handlers) if savepoint_actions is None else frozenset(savepoint_actions)
        self._group = _GroupDispatch(self.dispatch, lanes=max(1, min(GROUP_LANES, pool_size())))

    @property
    def steps(self) -> tuple[Step | AsyncStep, ...]:
        """The per-message steps, in order: what every Beckn request to this participant goes through."""
        return self._steps

    @steps.setter
    def steps(self, steps: Sequence[Step | AsyncStep]) -> None:
        self._steps = tuple(steps)
        # (name, bound call, awaited?) per step, resolved once: the per-message loop looks nothing up.
        self._plan: tuple[tuple[str, Callable[[Draft], Any], bool], ...] = tuple(
            (step.name, step.__call__, isinstance(step, AsyncStep)) for step in self._steps
        )

    # -- the pipeline ---------------------------------------------------------------------------
    async def handle(self, request: Request, action: str, receiver: Identity) -> JSONResponse:
        """Run the steps on one message, then dispatch it with its batch; the ACK or the NACK."""
        t0 = time.perf_counter()
        result = "ack"
        stage = DISPATCH
        try:
            m = Draft(request, action, receiver)
            for name, run, is_async in self._plan:
                stage = name  # the step that refused, if it does
                if is_async:
                    await run(m)
                else:
                    run(m)
            stage = DISPATCH
            if await self._group.submit(m.inbound()):
                result = "duplicate"
            return JSONResponse(AckResponse.ack().dump())
        except BecknError as exc:
            result = exc.kind
            return self.nack(exc, stage)
        except Exception as exc:
            if not unavailable(exc):
                raise
            # The database is down or dropped the connection: nothing was recorded (the batch's transaction
            # rolled back); the sender's outbox retries a 503.
            result = "unavailable"
            return self.nack(
                BecknError("unavailable", "the database is unavailable; retry later", 503, retry_after_s=2), stage
            )
        finally:
            label = action if action in self.handlers else "unknown"  # bounded label set for Prometheus
            INBOUND.labels(self.participant, label, result).inc()
            LATENCY.labels(self.participant, label).observe(time.perf_counter() - t0)

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
            cols = [[value(m) for m in msgs] for value in _INBOX_VALUES.values()]
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

    def nack(self, exc: BecknError, step: str | None = None) -> JSONResponse:
        """The NACK for a refusal; `step` names the pipeline step (or stage) that refused, for the log."""
        code = code_for(self.role, exc.kind)
        body = AckResponse.nack(code.code, exc.message, exc.paths).dump()
        headers = {}
        if exc.http_status == 401:
            headers["WWW-Authenticate"] = 'Signature realm="flexmarket",headers="(created) (expires) digest"'
        if exc.retry_after_s is not None:
            headers["Retry-After"] = str(exc.retry_after_s)
        log.info("nack", participant=self.participant, step=step, code=code.code, reason=exc.message)
        return JSONResponse(body, status_code=exc.http_status, headers=headers)


# Each inbox column the dispatch stage writes, and where an accepted message's value comes from; the
# statement names the same columns (beckn/models.py unnest_insert). The inbox_dedup constraint makes a
# duplicate (same receiver, sender, message_id, action) a no-op.
_INBOX_VALUES: dict[str, Callable[[Inbound], Any]] = {
    "receiver_id": attrgetter("receiver.subscriber_id"),
    "sender_id": attrgetter("verified.sender_id"),
    "sender_key_id": attrgetter("verified.sender_key_id"),
    "gateway_id": attrgetter("verified.gateway_id"),
    "gateway_key_id": attrgetter("verified.gateway_key_id"),
    "action": attrgetter("action"),
    "message_id": attrgetter("context.message_id"),
    "transaction_id": attrgetter("context.transaction_id"),
    "body": attrgetter("raw"),
    "authorization": attrgetter("authorization"),
    "gateway_authorization": attrgetter("gateway_authorization"),
}
_INBOX_SQL = unnest_insert(
    inbox,
    _INBOX_VALUES,
    constants={"signature_verified": "true", "status": "'RECEIVED'"},
    tail="ON CONFLICT ON CONSTRAINT inbox_dedup DO NOTHING RETURNING id, receiver_id, sender_id, message_id, action",
)
