"""Inbox processing in sibling batches (beckn/processing.py) on real PostgreSQL: every sibling is processed
once in one transaction; a row whose processor raises is isolated (left RECEIVED with its error, FAILED
after MAX_ATTEMPTS) while its siblings are processed and their outbox rows survive."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.orm import Session

from beckn import outbox, processing
from kernel.db import raw, session_scope

SCHEMA = "gateway"  # any Beckn schema: the test registers its own processor for it


def _insert_siblings(n: int, message_id: str = "m-1", action: str = "on_search") -> list[int]:
    with session_scope(SCHEMA) as s:
        return [
            raw(s)
            .execute(
                "INSERT INTO inbox (receiver_id, sender_id, sender_key_id, signature_verified, action, message_id, "
                "transaction_id, body, status) "
                "VALUES ('gw', %s, 'k', true, %s, %s, 't-1', %s, 'RECEIVED') RETURNING id",
                (f"bpp-{i}", action, message_id, f'{{"n": {i}}}'.encode()),
            )
            .fetchone()[0]
            for i in range(n)
        ]


def _rows() -> dict[int, tuple[str, int, str | None]]:
    with session_scope(SCHEMA) as s:
        return {r[0]: (r[1], r[2], r[3]) for r in raw(s).execute("SELECT id, status, attempts, error FROM inbox")}


def _outbox_count() -> int:
    with session_scope(SCHEMA) as s:
        return raw(s).execute("SELECT count(*) FROM outbox").fetchone()[0]


@pytest.fixture(params=["enqueue", "defer"])
def processor(request: pytest.FixtureRequest, isolated_db: str) -> Iterator[dict[str, Any]]:
    """A processor that writes one outbox row per inbox row — at once, or deferred to the batch
    (outbox.defer) — and raises for the senders in `fail`."""
    state: dict[str, Any] = {"fail": set(), "calls": 0}

    def proc(session: Session, row: Any) -> list[int]:
        state["calls"] += 1
        msg = outbox.outbound("gw", "http://127.0.0.1:1/on_search", "on_search", bytes(row.body))
        if request.param == "defer":
            outbox.defer(session, msg)
            ids = []
        else:
            ids = outbox.enqueue_many(session, [msg])
        if row.sender_id in state["fail"]:
            raise RuntimeError(f"boom for {row.sender_id}")
        return ids

    old = processing.PROCESSORS.get(SCHEMA)
    processing.register(SCHEMA, proc)
    yield state
    if old is not None:
        processing.register(SCHEMA, old)


def test_siblings_processed_together_once(processor: dict[str, Any]) -> None:
    ids = _insert_siblings(5)
    _insert_siblings(1, message_id="other")  # not a sibling: different message_id
    batch = processing.process(SCHEMA, ids[2])
    assert batch.attempted == 5 and len(batch.outbox_ids) + len(batch.leased) == 5
    rows = _rows()
    assert all(rows[i][:2] == ("PROCESSED", 1) for i in ids)
    assert sum(1 for st, _, _ in rows.values() if st == "RECEIVED") == 1
    assert processing.process(SCHEMA, ids[0]) == processing.Batch(0, [])  # nothing left: never twice
    assert _outbox_count() == 5


def test_a_failing_row_is_isolated(processor: dict[str, Any]) -> None:
    ids = _insert_siblings(4)
    processor["fail"] = {"bpp-1"}
    batch = processing.process(SCHEMA, ids[0])
    assert batch.attempted == 4 and len(batch.outbox_ids) + len(batch.leased) == 3
    rows = _rows()
    assert rows[ids[1]][0] == "RECEIVED" and rows[ids[1]][1] == 1 and "boom for bpp-1" in (rows[ids[1]][2] or "")
    assert all(rows[i][0] == "PROCESSED" for i in ids if i != ids[1])
    assert _outbox_count() == 3  # the failing row's outbox row was rolled back with it
    for _ in range(processing.MAX_ATTEMPTS - 1):
        processing.process(SCHEMA, ids[1])
    assert _rows()[ids[1]][:2] == ("FAILED", processing.MAX_ATTEMPTS)
    processor["fail"] = set()
    assert processing.process(SCHEMA, ids[1]).attempted == 0  # FAILED rows stay visible, not retried


def test_a_row_that_fails_for_good_is_reported_once(processor: dict[str, Any]) -> None:
    """The failure handler runs once, when the row becomes FAILED, and what it queues is delivered."""
    reports: list[tuple[int, str]] = []

    def on_failure(session: Session, row: Any, reason: str) -> list[int]:
        reports.append((row.id, reason))
        outbox.defer(session, outbox.outbound("gw", "http://127.0.0.1:1/on_search", "on_search", b'{"error": 1}'))
        return []

    processing.ON_FAILURE[SCHEMA] = on_failure
    try:
        (row_id,) = _insert_siblings(1)
        processor["fail"] = {"bpp-0"}
        for attempt in range(1, processing.MAX_ATTEMPTS + 1):
            batch = processing.process(SCHEMA, row_id)
            assert len(reports) == (1 if attempt == processing.MAX_ATTEMPTS else 0)
        assert reports[0][0] == row_id and "boom for bpp-0" in reports[0][1]
        assert len(batch.leased) == 1  # the report's answer goes out with the batch
        assert _rows()[row_id][0] == "FAILED" and _outbox_count() == 1
        assert processing.process(SCHEMA, row_id).attempted == 0 and len(reports) == 1
    finally:
        processing.ON_FAILURE.pop(SCHEMA, None)
