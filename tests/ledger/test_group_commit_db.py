"""The group committer's fast path on a real server: binary array parameters, entries encoded ahead,
and batches judged on cached balances — which must be judged again whenever another writer changed a
balance row in between (ledger/store.py BalanceCache, BatchPlan)."""

from __future__ import annotations

import threading
import uuid

import psycopg
import pytest

from ledger import accounts as acct
from ledger import group_commit, store
from ledger.accounts_db import account_info, ensure_accounts
from ledger.checkpoints import create_checkpoint
from ledger.db import connect, conninfo
from ledger.entry_encoding import encode_ahead, encode_entries
from ledger.group_commit import GroupCommitter
from ledger.pgarray import ByteaArray, Int8Array, TextArray, bytea_elements, int8_elements, text_elements
from ledger.store import append_one
from ledger.transfers import Account, Balance, LedgerState, TransferSpec, apply_request
from ledger.verify import verify_ledger


@pytest.fixture
def conn(ledger_url: str):
    c = connect(ledger_url)
    yield c
    c.close()


def test_binary_arrays_round_trip(conn: psycopg.Connection) -> None:
    texts = ["a", None, 'quote " backslash \\ newline \n', "é ☃ 𝄞", ""]
    ints = [0, None, -(2**63), 2**63 - 1, 42]
    blobs = [b"", b"\x00\xff", bytes(range(256))]
    row = conn.execute(
        "SELECT %b::text[], %b::int8[], %b::bytea[], %b::text[]",
        (
            TextArray(len(texts), True, text_elements(texts)),
            Int8Array(len(ints), True, int8_elements(ints)),
            ByteaArray(len(blobs), bytea_elements(blobs)),
            TextArray(0, False, b""),
        ),
    ).fetchone()
    assert row == (texts, ints, blobs, [])


def test_encoding_ahead_is_the_encoding_of_what_the_rules_create() -> None:
    cash, rev = "bap:a:cash", "provider:a:revenue"
    accounts = {cash: Account(cash, "GBP"), rev: Account(rev, "GBP", 1)}
    specs = [
        TransferSpec("t1", "single", "GBP", cash, rev, 5, memo="m\n"),
        TransferSpec("t2", "pending", "GBP", cash, rev, 7, timeout_us=2_000_000_000_000_000),
    ]
    ahead = encode_ahead(specs, 1_000)
    state = LedgerState(accounts, {cash: Balance(), rev: Balance()}, {}, {})
    entries = apply_request(specs, state, 1_000, 1_000).entries
    assert ahead is not None and ahead.entries == tuple(entries)
    assert ahead == encode_entries(entries)
    assert [bytes(c) for c in (e.canonical() for e in entries)] == [e.canonical() for e in ahead.entries]
    # another stamp is another entry: the encoding made ahead must not match it
    assert encode_ahead(specs, 1_001).entries != tuple(entries)  # type: ignore[union-attr]
    # a resolution's entry depends on the pending transfer: never encoded ahead
    assert encode_ahead([TransferSpec("t3", "post", pending_id="t2")], 1_000) is None


def _count_planned(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    counts = {"planned": 0, "stale": 0}
    planned = group_commit.append_planned

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        counts["planned"] += 1
        try:
            return planned(*args, **kwargs)
        except psycopg.errors.SerializationFailure:
            counts["stale"] += 1
            raise

    monkeypatch.setattr(group_commit, "append_planned", counting)
    return counts


def test_batches_are_judged_again_when_another_writer_changed_a_balance(
    ledger_url: str, conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = uuid.uuid4().hex[:8]
    cash, rev = acct.bap_cash(f"gc-{tag}"), acct.provider_revenue(f"gc-{tag}")  # revenue: no overdraft
    with conn.transaction():
        ensure_accounts(conn, [cash, rev])
    counts = _count_planned(monkeypatch)
    gc = GroupCommitter(conninfo(ledger_url))
    try:

        def submit(tid: str, debit: str, credit: str, amount: int) -> store.RequestResult:
            return gc.submit([TransferSpec(f"{tid}-{tag}", "single", "GBP", debit, credit, amount)])

        assert submit("a", cash, rev, 100).status == "created"  # reads the rows under lock: now cached
        assert submit("b", cash, rev, 1).status == "created"  # judged on the cache, one round trip
        assert counts == {"planned": 1, "stale": 0}

        # Another writer empties the revenue account: the committer's cache still says 101.
        with conn.transaction():
            append_one(conn, [TransferSpec(f"x-{tag}", "single", "GBP", rev, cash, 101)])
        refused = submit("c", rev, cash, 50)  # fine on the cache; the locked row says otherwise
        assert refused.status == "error" and refused.error is not None
        assert refused.error.code == "exceeds_credits"
        assert counts == {"planned": 2, "stale": 1}

        # Another writer credits it: a refusal judged on the (now stale) cache is judged again under lock.
        with conn.transaction():
            append_one(conn, [TransferSpec(f"y-{tag}", "single", "GBP", cash, rev, 500)])
        assert submit("d", rev, cash, 200).status == "created"

        # two-phase through the committer: the pending goes the fast way, the post reads it under lock
        assert gc.submit([TransferSpec(f"p-{tag}", "pending", "GBP", cash, rev, 30)]).status == "created"
        assert gc.submit([TransferSpec(f"q-{tag}", "post", pending_id=f"p-{tag}", amount=20)]).status == "created"
    finally:
        gc.close()
    info = account_info(conn, rev)
    assert info["balance"] == 100 + 1 - 101 + 500 - 200 + 20
    with conn.transaction():
        create_checkpoint(conn)
    report = verify_ledger(conn)
    assert report.ok, report.summary()


def test_concurrent_external_writer_never_breaks_a_flag(
    ledger_url: str, conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Committer batches (judged on its cache) race a direct writer on the same protected account:
    whatever interleaving happens, the account never goes below zero and every balance equals its
    entries."""
    tag = uuid.uuid4().hex[:8]
    cash, rev = acct.bap_cash(f"race-{tag}"), acct.provider_revenue(f"race-{tag}")
    with conn.transaction():
        ensure_accounts(conn, [cash, rev])
        append_one(conn, [TransferSpec(f"seed-{tag}", "single", "GBP", cash, rev, 200)])
    counts = _count_planned(monkeypatch)
    gc = GroupCommitter(conninfo(ledger_url))
    errors: list[BaseException] = []

    def committer_side() -> None:
        try:
            for i in range(150):
                gc.submit([TransferSpec(f"gc-{tag}-{i}", "single", "GBP", rev, cash, 3)])
                gc.submit([TransferSpec(f"gd-{tag}-{i}", "single", "GBP", cash, rev, 2)])
        except BaseException as exc:
            errors.append(exc)

    def direct_side() -> None:
        c = connect(ledger_url)
        try:
            for i in range(150):
                with c.transaction():
                    store.append(c, [[TransferSpec(f"dx-{tag}-{i}", "single", "GBP", rev, cash, 2)]])
                with c.transaction():
                    store.append(c, [[TransferSpec(f"dy-{tag}-{i}", "single", "GBP", cash, rev, 2)]])
        except BaseException as exc:
            errors.append(exc)
        finally:
            c.close()

    threads = [threading.Thread(target=committer_side), threading.Thread(target=direct_side)]
    [t.start() for t in threads]
    [t.join(timeout=120) for t in threads]
    gc.close()
    assert not errors, errors
    assert counts["planned"] > 0
    assert account_info(conn, rev)["balance"] >= 0
    assert verify_ledger(conn).ok
