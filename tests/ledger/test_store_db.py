"""The PostgreSQL append path on a real server: idempotency, linked batches, two-phase transfers,
append-only triggers, CHECK constraints and group commit."""

from __future__ import annotations

import threading
import uuid

import psycopg
import pytest

from ledger import accounts as acct
from ledger.accounts_db import account_info, ensure_accounts
from ledger.checkpoints import create_checkpoint
from ledger.db import connect, conninfo
from ledger.group_commit import GroupCommitter
from ledger.store import append, append_one
from ledger.transfers import TransferError, TransferSpec
from tests.ledger.helpers import snapshot


@pytest.fixture
def conn(ledger_url: str):
    c = connect(ledger_url)
    yield c
    c.close()


def names(tag: str) -> tuple[str, str, str]:
    cash, rev, pen = acct.bap_cash(f"b-{tag}"), acct.provider_revenue(f"p-{tag}"), acct.provider_penalties(f"p-{tag}")
    return cash, rev, pen


def setup_accounts(conn: psycopg.Connection, tag: str) -> tuple[str, str, str]:
    n = names(tag)
    with conn.transaction():
        ensure_accounts(conn, n)
    return n


def tx(conn: psycopg.Connection, specs: list[TransferSpec]):
    with conn.transaction():
        return append_one(conn, specs)


def test_idempotent_ids(conn: psycopg.Connection) -> None:
    tag = uuid.uuid4().hex[:8]
    cash, rev, _ = setup_accounts(conn, tag)
    spec = TransferSpec(f"t-{tag}", "single", "GBP", cash, rev, 250, memo="x")
    first = tx(conn, [spec])
    before = snapshot(conn)
    again = tx(conn, [spec])
    assert (first.status, again.status) == ("created", "exists")
    assert again.entries == first.entries and snapshot(conn) == before
    with pytest.raises(TransferError) as err:
        tx(conn, [TransferSpec(f"t-{tag}", "single", "GBP", cash, rev, 251, memo="x")])
    assert err.value.status == 409 and snapshot(conn) == before


def test_linked_batch_fails_as_a_whole(conn: psycopg.Connection) -> None:
    tag = uuid.uuid4().hex[:8]
    cash, rev, _ = setup_accounts(conn, tag)
    before = snapshot(conn)
    with pytest.raises(TransferError) as err:
        tx(
            conn,
            [
                TransferSpec(f"a-{tag}", "single", "GBP", cash, rev, 100),
                TransferSpec(f"b-{tag}", "single", "GBP", rev, cash, 101),
            ],
        )  # would overdraw revenue
    assert err.value.code == "exceeds_credits"
    assert snapshot(conn) == before


def test_two_phase_and_at_most_once(conn: psycopg.Connection) -> None:
    tag = uuid.uuid4().hex[:8]
    cash, rev, _ = setup_accounts(conn, tag)
    tx(conn, [TransferSpec(f"p-{tag}", "pending", "GBP", cash, rev, 1000)])
    tx(conn, [TransferSpec(f"c-{tag}", "post", pending_id=f"p-{tag}", amount=400)])
    info = account_info(conn, rev)
    assert (info["credits_posted"], info["credits_pending"]) == (400, 0)
    with pytest.raises(TransferError) as err:
        tx(conn, [TransferSpec(f"v-{tag}", "void", pending_id=f"p-{tag}")])
    assert err.value.code == "pending_already_resolved"
    # the unique index refuses a second resolution even if the application did not
    with pytest.raises(psycopg.errors.UniqueViolation), conn.transaction():
        conn.execute(
            "INSERT INTO ledger.entries (height, idx, id, ledger, debit_account, credit_account, amount, "
            "kind, pending_id, time_us, canonical) VALUES (999999, 0, %s, 'GBP', %s, %s, 1, 'void', %s, "
            "0, '')",
            (f"sneaky-{tag}", cash, rev, f"p-{tag}"),
        )
    conn.rollback()


def test_concurrent_resolution_of_one_pending(ledger_url: str, conn: psycopg.Connection) -> None:
    tag = uuid.uuid4().hex[:8]
    cash, rev, _ = setup_accounts(conn, tag)
    tx(conn, [TransferSpec(f"p-{tag}", "pending", "GBP", cash, rev, 1000)])
    results: list[str] = []
    barrier = threading.Barrier(6)

    def resolve(i: int) -> None:
        c = connect(ledger_url)
        try:
            barrier.wait()
            kind = "post" if i % 2 else "void"
            try:
                with c.transaction():
                    append_one(c, [TransferSpec(f"r{i}-{tag}", kind, pending_id=f"p-{tag}")])
                results.append("ok")
            except TransferError as exc:
                results.append(exc.code)
            except psycopg.errors.UniqueViolation:
                results.append("unique")
        finally:
            c.close()

    threads = [threading.Thread(target=resolve, args=(i,)) for i in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert results.count("ok") == 1, results
    assert conn.execute("SELECT count(*) FROM ledger.entries WHERE pending_id = %s", (f"p-{tag}",)).fetchone() == (1,)


@pytest.mark.parametrize(
    ("table", "assignment"),
    [
        ("entries", "amount = amount + 1"),
        ("links", "entry_count = entry_count"),
        ("checkpoints", "height = height"),
    ],
)
def test_append_only_tables_reject_update_delete_truncate(
    conn: psycopg.Connection, table: str, assignment: str
) -> None:
    tag = uuid.uuid4().hex[:8]
    cash, rev, _ = setup_accounts(conn, tag)
    tx(conn, [TransferSpec(f"t-{tag}", "single", "GBP", cash, rev, 5)])
    with conn.transaction():
        create_checkpoint(conn)
    assert_append_only(conn, table, assignment)


def assert_append_only(conn: psycopg.Connection, table: str, assignment: str) -> None:
    assert conn.execute(f"SELECT count(*) FROM ledger.{table}").fetchone()[0] > 0
    conn.rollback()
    for sql in (
        f"UPDATE ledger.{table} SET {assignment}",
        f"DELETE FROM ledger.{table}",
        f"TRUNCATE ledger.{table} CASCADE",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"), conn.transaction():
            conn.execute(sql)


def test_balance_check_constraints_guard_flags(conn: psycopg.Connection) -> None:
    tag = uuid.uuid4().hex[:8]
    _, rev, _ = setup_accounts(conn, tag)
    with pytest.raises(psycopg.errors.CheckViolation), conn.transaction():
        conn.execute("UPDATE ledger.balances SET debits_posted = 1 WHERE account = %s", (rev,))


def test_group_committer_batches_and_isolates_refusals(ledger_url: str, conn: psycopg.Connection) -> None:
    tag = uuid.uuid4().hex[:8]
    cash, rev, _ = setup_accounts(conn, tag)
    gc = GroupCommitter(conninfo(ledger_url), connections=2)
    results: list[str] = []
    lock = threading.Lock()

    def writer(k: int) -> None:
        for j in range(25):
            bad = j == 7  # overdraws revenue: refused, others unaffected
            spec = (
                TransferSpec(f"g-{tag}-{k}-{j}", "single", "GBP", rev, cash, 10**9)
                if bad
                else TransferSpec(f"g-{tag}-{k}-{j}", "single", "GBP", cash, rev, 3)
            )
            r = gc.submit([spec])
            with lock:
                results.append(r.status if r.error is None else r.error.code)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    gc.close()
    assert results.count("created") == 6 * 24 and results.count("exceeds_credits") == 6
    assert gc.batches < 6 * 25  # concurrent requests shared commits
    assert account_info(conn, rev)["balance"] == 6 * 24 * 3


def test_unknown_account_and_ledger_mismatch_write_nothing(conn: psycopg.Connection) -> None:
    tag = uuid.uuid4().hex[:8]
    cash, rev, _ = setup_accounts(conn, tag)
    before = snapshot(conn)
    for spec, code in (
        (TransferSpec(f"u-{tag}", "single", "GBP", cash, "bap:ghost:cash", 5), "unknown_account"),
        (TransferSpec(f"m-{tag}", "single", "CFT:x", cash, rev, 5), "ledger_mismatch"),
        (TransferSpec(f"z-{tag}", "single", "GBP", cash, rev, 0), "amount_not_positive"),
    ):
        with pytest.raises(TransferError) as err:
            tx(conn, [spec])
        assert err.value.code == code
    assert snapshot(conn) == before


def test_append_returns_per_request_results(conn: psycopg.Connection) -> None:
    tag = uuid.uuid4().hex[:8]
    cash, rev, _ = setup_accounts(conn, tag)
    with conn.transaction():
        res = append(
            conn,
            [
                [TransferSpec(f"x1-{tag}", "single", "GBP", cash, rev, 5)],
                [TransferSpec(f"x2-{tag}", "single", "GBP", rev, cash, 50)],
                [TransferSpec(f"x3-{tag}", "single", "GBP", cash, rev, 6)],
            ],
        )
    assert [r.status for r in res] == ["created", "error", "created"]
    assert res[0].height == res[2].height  # one chain link for the batch
