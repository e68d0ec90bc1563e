"""Group commit of inbound messages (beckn/pipeline.py BecknPipeline.dispatch and _GroupDispatch) on real
PostgreSQL: a batch records every accepted message once; a refused message leaves no inbox row and no
writes while its neighbours are kept; duplicates — also inside one batch — are recognised; siblings get
one processing task; concurrent submissions really share transactions."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy.orm import Session

from beckn.errors import BecknError, Role
from beckn.identity import Identity
from beckn.keys import KeyPair
from beckn.pipeline import Accepted, BecknPipeline, Inbound, Verified
from kernel.db import raw, session_scope
from schemas.core import Context

SCHEMA = "gateway"
ME = Identity("gw.test", Role.BG, "http://127.0.0.1:1", KeyPair.generate())


def _msg(sender: str, message_id: str = "m-1", action: str = "on_search") -> Inbound:
    ctx = Context(action=action, message_id=message_id, transaction_id="t-1")
    return Inbound(
        action=action,
        raw=f'{{"from": "{sender}"}}'.encode(),
        payload={},
        context=ctx,
        message=None,
        error=None,
        receiver=ME,
        verified=Verified(sender, "k", "http://x"),
        authorization="Signature …",
        gateway_authorization=None,
    )


def _inbox() -> list[tuple[str, str, str]]:
    with session_scope(SCHEMA) as s:
        return [tuple(r) for r in raw(s).execute("SELECT sender_id, message_id, status FROM inbox ORDER BY id")]


def _marks() -> list[str]:
    with session_scope(SCHEMA) as s:
        return [r[0] for r in raw(s).execute("SELECT body FROM outbox ORDER BY id")]


def _pipeline(writes: bool, enqueued: list[tuple[int, str, str]]) -> BecknPipeline:
    def handler(session: Session, msg: Inbound, inbox_id: int) -> Accepted:
        if writes:  # a handler that writes before it refuses: the savepoint must undo it
            raw(session).execute(
                "INSERT INTO outbox (sender_id, receiver_url, action, message_id, transaction_id, body, status, "
                "expires_at) VALUES ('gw', 'u', 'x', %s, 't', %s, 'PENDING', now())",
                (msg.context.message_id, msg.verified.sender_id.encode()),
            )
        if msg.verified.sender_id.startswith("bad"):
            raise BecknError("not_found", f"refusing {msg.verified.sender_id}", http_status=200)
        return Accepted(process_async=msg.verified.sender_id != "sync")

    return BecknPipeline(
        participant="gateway",
        role=Role.BG,
        schema=SCHEMA,
        handlers={"on_search": handler},
        registry=None,  # type: ignore[arg-type]  # dispatch never verifies
        enqueue_processing=lambda schema, inbox_id, mid, action: enqueued.append((inbox_id, mid, action)),
        savepoint_actions=None if writes else (),
    )


@pytest.mark.parametrize("writes", [False, True])
def test_a_batch_keeps_the_good_refuses_the_bad_and_knows_duplicates(isolated_db: str, writes: bool) -> None:
    enqueued: list[Any] = []
    p = _pipeline(writes, enqueued)
    batch = [_msg("bpp-1"), _msg("bad-2"), _msg("bpp-3"), _msg("bpp-1"), _msg("sync"), _msg("bpp-4", "m-2")]
    results = p.dispatch(batch)
    assert results[0] is False and results[2] is False and results[4] is False and results[5] is False
    assert isinstance(results[1], BecknError) and "refusing bad-2" in results[1].message
    assert results[3] is True  # the same message twice in one batch: the second is a duplicate
    assert _inbox() == [
        ("bpp-1", "m-1", "RECEIVED"),
        ("bpp-3", "m-1", "RECEIVED"),
        ("sync", "m-1", "PROCESSED"),
        ("bpp-4", "m-2", "RECEIVED"),
    ]
    if writes:  # the refused handler's write was rolled back with its savepoint
        assert [bytes(b).decode() for b in _marks()] == ["bpp-1", "bpp-3", "sync", "bpp-4"]
    # one task per sibling group (message_id, action), naming the group's first row
    assert [(mid, action) for _, mid, action in enqueued] == [("m-1", "on_search"), ("m-2", "on_search")]
    assert p.dispatch([_msg("bpp-3")]) == [True]  # a later duplicate: ACKed, not processed again
    assert len(_inbox()) == 4


def test_a_refused_lone_message_rolls_back_everything(isolated_db: str) -> None:
    p = _pipeline(True, [])
    with pytest.raises(BecknError):
        p.dispatch([_msg("bad-1")])
    assert _inbox() == [] and _marks() == []


def test_concurrent_requests_share_transactions(isolated_db: str) -> None:
    p = _pipeline(False, [])
    calls: list[int] = []
    inner = p._group.dispatch

    def counting(msgs: list[Inbound]) -> list[bool | BaseException]:
        calls.append(len(msgs))
        return inner(msgs)

    p._group.dispatch = counting

    async def many() -> list[bool | BaseException]:
        return await asyncio.gather(
            *(p._group.submit(_msg(f"bpp-{i}")) for i in range(40)),
            p._group.submit(_msg("bad-x")),
            return_exceptions=True,
        )

    results = asyncio.run(many())
    assert results[:40] == [False] * 40 and isinstance(results[40], BecknError)
    assert sum(calls) == 41 and len(calls) < 41 / 4  # batched: far fewer transactions than messages
    assert len(_inbox()) == 40
