"""Settlement runs and statements record the clock they were made under (kernel/clock.py `describe()`):
the stored run row, and the statement document in JSON and CSV — which still verifies offline."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from kernel import clock
from ledger import accounts as acct
from ledger.checkpoints import ledger_keypair
from ledger.db import connect, in_transaction
from ledger.proofs import verify_statement
from ledger.settlement_runs import settle_due, stored_run
from ledger.statement_csv import statement_csv, statement_from_csv
from ledger.statements import statement
from tests.ledger.test_settlement_db import END, seeded_order


@pytest.fixture
def conn(ledger_url: str):
    c = connect(ledger_url)
    yield c
    c.close()


def test_run_and_statement_record_the_simulated_clock(conn: psycopg.Connection, ledger_url: str) -> None:
    t = seeded_order(conn, uuid.uuid4().hex[:8])
    # A replay of 2023: entries, the checkpoint a statement signs and the run all read this market clock.
    market_start = datetime(2023, 1, 24, 17, 0, tzinfo=UTC)
    simulated = clock.SimulatedClock(start=market_start, anchor=datetime.now(UTC), speed=60.0)
    clock.set_clock(simulated)
    try:
        recorded = clock.describe()
        assert recorded["kind"] == "simulated" and recorded["speed"] == 60.0
        runs = settle_due(ledger_url, END + timedelta(hours=3), order_ids=[t.order_id])
        assert [o.run for o in runs] == ["II"]
        assert stored_run(conn, t.order_id, "II")["clock"] == recorded

        account = acct.provider_revenue(t.provider_id)
        doc = in_transaction(conn, lambda c: statement(c, account, market_start, market_start + timedelta(hours=1)))
        assert doc["clock"] == recorded and doc["entry_count"] >= 1
    finally:
        clock.set_clock(None)

    public_key = ledger_keypair().signing_public_key_b64
    assert verify_statement(doc, public_key).ok
    text = statement_csv(doc)
    assert text.splitlines()[1].startswith("clock,")
    again = statement_from_csv(text)
    assert again["clock"] == recorded
    assert verify_statement(again, public_key).ok

    # the next run, made on the process's own clock again, records that one
    own = clock.describe()
    assert [o.run for o in settle_due(ledger_url, END + timedelta(hours=3), order_ids=[t.order_id], force=True)] == [
        "SF"
    ]
    assert stored_run(conn, t.order_id, "SF")["clock"] == own
