"""Outbox delivery against a real HTTP receiver and real PostgreSQL: ACK → DELIVERED, NACK → FAILED
with the receiver's error, an absent receiver → retried with backoff, then FAILED after the TTL."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from beckn import outbox, signing
from beckn.errors import Role
from beckn.identity import load_or_create_identity
from beckn.keys import public_key_from_b64
from kernel.config import reset_settings
from kernel.db import session_scope
from kernel.embedded import free_port
from tests.e2e.helpers import rows


class Receiver(BaseHTTPRequestHandler):
    answers: ClassVar[list[tuple[int, dict]]] = []
    received: ClassVar[list[tuple[bytes, dict[str, str]]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.received.append((body, {k.lower(): v for k, v in self.headers.items()}))
        status, answer = Receiver.answers.pop(0) if Receiver.answers else (200, {"message": {"ack": {"status": "ACK"}}})
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def receiver() -> Iterator[str]:
    Receiver.answers, Receiver.received = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture()
def sender(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_db: str):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("FLEXMARKET_HOME", str(tmp_path))
    reset_settings()
    return load_or_create_identity(tmp_path, "bpp.outbox-test", Role.BPP, "http://127.0.0.1:1/x")


def _enqueue(url: str, sender_id: str, ttl_s: int = 60) -> int:
    payload = {"context": {"action": "on_status", "message_id": "m-1", "transaction_id": "t-1"}, "message": {}}
    with session_scope("bpp") as s:
        return outbox.enqueue(
            s, sender_id=sender_id, receiver_url=url, action="on_status", payload=payload, ttl_s=ttl_s
        )


def test_ack_marks_delivered_and_signs_exact_bytes(receiver: str, sender, isolated_db: str) -> None:  # type: ignore[no-untyped-def]
    oid = _enqueue(receiver + "/on_status", sender.subscriber_id)
    [outcome] = outbox.deliver("bpp", [oid])
    assert outcome.status == "DELIVERED"
    body, headers = Receiver.received[0]
    stored = bytes(rows(isolated_db, "select body from bpp.outbox where id = %s", oid)[0][0])
    assert body == stored
    params = signing.parse_authorization(headers["authorization"])
    signing.verify(params, body, public_key_from_b64(sender.keys.signing_public_key_b64))
    assert rows(isolated_db, "select status, attempts from bpp.outbox where id = %s", oid) == [("DELIVERED", 1)]
    assert outbox.deliver("bpp", [oid]) == []  # delivered rows are never sent again
    assert len(Receiver.received) == 1


def test_nack_is_final_and_recorded(receiver: str, sender, isolated_db: str) -> None:  # type: ignore[no-untyped-def]
    Receiver.answers = [(400, {"message": {"ack": {"status": "NACK"}}, "error": {"code": "20000", "message": "no"}})]
    oid = _enqueue(receiver + "/on_status", sender.subscriber_id)
    [outcome] = outbox.deliver("bpp", [oid])
    assert outcome.status == "FAILED"
    status, err = rows(isolated_db, "select status, last_error from bpp.outbox where id = %s", oid)[0]
    assert status == "FAILED" and "20000: no" in err


def test_server_error_is_retried_then_delivered(receiver: str, sender, isolated_db: str) -> None:  # type: ignore[no-untyped-def]
    Receiver.answers = [(503, {"error": "busy"})]
    oid = _enqueue(receiver + "/on_status", sender.subscriber_id)
    [first] = outbox.deliver("bpp", [oid])
    assert first.status == "PENDING" and first.retry_in_s is not None and first.retry_in_s > 0
    [second] = outbox.deliver("bpp", [oid])
    assert second.status == "DELIVERED"
    assert rows(isolated_db, "select attempts from bpp.outbox where id = %s", oid) == [(2,)]


def test_unreachable_receiver_fails_visibly_after_ttl(sender, isolated_db: str) -> None:  # type: ignore[no-untyped-def]
    url = f"http://127.0.0.1:{free_port()}/on_status"  # nothing listens here
    oid = _enqueue(url, sender.subscriber_id, ttl_s=2)
    outcomes = []
    for _ in range(20):
        [o] = outbox.deliver("bpp", [oid]) or [None]
        if o is None:
            break
        outcomes.append(o.status)
        if o.status == "FAILED":
            break
    assert outcomes[0] == "PENDING" and outcomes[-1] == "FAILED"
    status, err, attempts = rows(isolated_db, "select status, last_error, attempts from bpp.outbox where id = %s", oid)[
        0
    ]
    assert status == "FAILED" and "TTL expired" in err and "Connect" in err and attempts >= 1


def test_backoff_grows_and_is_capped() -> None:
    delays = [outbox.backoff_s(n) for n in range(1, 12)]
    assert delays[0] <= 0.6 and delays[3] > delays[0]
    assert max(delays) <= 36.0


def test_leased_rows_are_sent_by_their_writer_alone(receiver: str, sender, isolated_db: str) -> None:  # type: ignore[no-untyped-def]
    """enqueue_leased: the writer delivers without a claim; until the lease ends nobody else sends them."""
    payload = {"context": {"action": "on_search", "message_id": "m-2", "transaction_id": "t-2"}, "message": {}}
    with session_scope("bpp") as s:
        [row] = outbox.enqueue_leased(
            s, [outbox.outbound(sender.subscriber_id, receiver + "/on_search", "on_search", payload)]
        )
    assert rows(
        isolated_db, "select lease_until > now() + interval '30 seconds' from bpp.outbox where id = %s", row.id
    ) == [(True,)]
    assert outbox.deliver("bpp", [row.id]) == []  # another worker (the sweep, a retry) cannot claim it
    with session_scope("bpp") as s:  # nor does the beat sweep see it as overdue while it is leased
        assert row.id not in outbox.due_ids(s, older_than_s=-3600)
    [outcome] = outbox.deliver("bpp", [], [row])
    assert outcome.status == "DELIVERED" and len(Receiver.received) == 1
    assert Receiver.received[0][0] == row.body
    assert rows(isolated_db, "select status, attempts, lease_until from bpp.outbox where id = %s", row.id) == [
        ("DELIVERED", 1, None)
    ]
