"""8 concurrent writers × 500 transfers on real PostgreSQL: the chain stays linear and verifies,
balances equal their entries, nothing deadlocks, nothing is lost or duplicated.

Half the writers append in their own transactions on their own connections (competing for the row
locks and the chain lock directly); the other half go through one shared GroupCommitter. Writers
resubmit some of their own transfers (as a Celery retry or a duplicate callback would) and include
some that must be refused, on a small set of hot accounts so the locks are contended."""

from __future__ import annotations

import random
import threading
from collections import Counter

import psycopg
import pytest

from ledger import accounts as acct
from ledger.accounts_db import ensure_accounts
from ledger.checkpoints import create_checkpoint
from ledger.db import connect, conninfo
from ledger.group_commit import GroupCommitter
from ledger.store import append
from ledger.transfers import TransferSpec
from ledger.verify import verify_ledger

WRITERS, PER_WRITER = 8, 500
CASH = [acct.bap_cash(f"hot{i}") for i in range(3)]
REV = [acct.provider_revenue(f"hot{i}") for i in range(4)]


@pytest.mark.slow
def test_eight_writers_five_hundred_transfers_each(fresh_db: str) -> None:
    conn = connect(fresh_db)
    with conn.transaction():
        ensure_accounts(conn, CASH + REV)
    committer = GroupCommitter(conninfo(fresh_db), connections=2)
    created: Counter[str] = Counter()
    refused: Counter[str] = Counter()
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(WRITERS)

    def plan(k: int) -> list[list[TransferSpec]]:
        rng = random.Random(k)
        reqs, n = [], 0
        while n < PER_WRITER:
            size = min(rng.choice((1, 1, 2, 5)), PER_WRITER - n)
            reqs.append(
                [
                    TransferSpec(
                        f"w{k}-{n + i}", "single", "GBP", rng.choice(CASH), rng.choice(REV), rng.randint(1, 1000)
                    )
                    for i in range(size)
                ]
            )
            n += size
        return reqs

    def record(reqs: list[list[TransferSpec]], results) -> None:
        with lock:
            for req, res in zip(reqs, results, strict=True):
                if res.status == "created":
                    created.update(s.id for s in req)
                elif res.status == "error":
                    refused[res.error.code] += 1

    def writer(k: int) -> None:
        try:
            rng = random.Random(1000 + k)
            reqs = plan(k)
            direct = k % 2 == 0
            c = connect(fresh_db) if direct else None
            start.wait()
            for i, req in enumerate(reqs):
                batch = [req]
                if rng.random() < 0.1 and i:  # a retry of an earlier request: must not duplicate
                    batch.append(reqs[rng.randrange(i)])
                if rng.random() < 0.05:  # must be refused: overdraws a protected revenue account
                    batch.append(
                        [TransferSpec(f"bad-{k}-{i}", "single", "GBP", rng.choice(REV), rng.choice(CASH), 10**12)]
                    )
                if direct:
                    with c.transaction():
                        results = append(c, batch)
                else:
                    results = [committer.submit(r) for r in batch]
                record(batch, results)
            if c is not None:
                c.close()
        except BaseException as exc:  # a deadlock or any DB error fails the test
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(WRITERS)]
    [t.start() for t in threads]
    [t.join(timeout=240) for t in threads]
    committer.close()
    assert not errors, errors
    assert not any(t.is_alive() for t in threads), "a writer hung (deadlock?)"

    # nothing lost, nothing duplicated
    total = WRITERS * PER_WRITER
    assert len(created) == total and max(created.values()) == 1
    assert set(refused) <= {"exceeds_credits"}
    rows = conn.execute("SELECT id FROM ledger.entries").fetchall()
    assert len(rows) == total and {r[0] for r in rows} == set(created)
    # the chain is linear: heights 1..N, each link's prev_hash is its predecessor's hash
    links = conn.execute("SELECT height, prev_hash, link_hash FROM ledger.links ORDER BY height").fetchall()
    assert [h for h, _, _ in links] == list(range(1, len(links) + 1))
    assert all(bytes(links[i][1]) == bytes(links[i - 1][2]) for i in range(1, len(links)))
    assert len(links) < total  # batches shared links
    # verification re-hashes everything and checks every balance against its entries
    with conn.transaction():
        create_checkpoint(conn)
    report = verify_ledger(conn)
    assert report.ok, report.summary()
    assert report.chain.entry_count == total
    sums = conn.execute("SELECT sum(debits_posted), sum(credits_posted) FROM ledger.balances").fetchone()
    assert sums[0] == sums[1] == conn.execute("SELECT sum(amount) FROM ledger.entries").fetchone()[0]
    conn.close()


def test_no_deadlock_when_writers_lock_accounts_in_opposite_orders(fresh_db: str) -> None:
    """Two writers whose transfers touch the same two accounts in opposite directions; sorted locking
    means they queue instead of deadlocking."""
    conn = connect(fresh_db)
    a, b = acct.bap_cash("x"), acct.bap_cash("y")
    with conn.transaction():
        ensure_accounts(conn, [a, b])
    errors: list[BaseException] = []

    def run(k: int) -> None:
        c = connect(fresh_db)
        try:
            for i in range(150):
                d, cr = (a, b) if k == 0 else (b, a)
                with c.transaction():
                    append(c, [[TransferSpec(f"o{k}-{i}", "single", "GBP", d, cr, 1)]])
        except psycopg.Error as exc:
            errors.append(exc)
        finally:
            c.close()

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    assert verify_ledger(conn).ok
    conn.close()
