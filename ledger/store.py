"""PostgreSQL append path: locks, balances, one chain link per batch, and group commit.

How a batch of requests is appended (../shared/reference/ledger-design.md "Concurrency on PostgreSQL"),
all inside ONE transaction at READ COMMITTED:

1. Read the pending transfers that post/void requests name (immutable rows: no lock needed) to learn
   which accounts they touch.
2. Lock every touched balance row with `SELECT … ORDER BY account FOR UPDATE` — one fixed (sorted)
   order for every writer, so writers can wait for each other but never deadlock.
3. Now, under those locks, read which transfer ids already exist and which pending transfers are
   already resolved (each statement takes a fresh snapshot at READ COMMITTED, so it sees whatever
   committed while we waited for the locks).
4. Apply the pure rules (ledger/transfers.py) request by request in memory; a refused request is
   reported to its caller and leaves no trace; the others go on.
5. Encode the new entries canonically and compute their RFC 6962 Merkle root — before the chain lock.
6. Write the new balances.
7. Take the transaction-scoped advisory lock LAST, so it is held only for the link append and the
   commit; read the chain head in a NEW statement (a snapshot taken after the lock was granted — in the
   same statement as the lock the snapshot would predate it and could fork the chain), assign
   height = head + 1 (never a sequence: sequences leave gaps), insert the link (the exact hashed bytes
   are stored) and the entries, and commit. `links.height` is the primary key, so even a bug here
   could not fork the chain.

Round trips: the statements are pipelined (psycopg pipeline mode), so a batch costs two round trips —
[BEGIN, lock rows, read ids and resolutions] and [update balances, chain lock, append, COMMIT] — plus
one fsync. The server executes a pipeline's statements one after another, each with its own snapshot,
so the ordering guarantees above hold.

The advisory lock is always the last lock a writer takes, and writers holding it wait for nothing,
so it cannot take part in a deadlock either.

Group commit: `GroupCommitter` owns a few connections; concurrent callers (HTTP requests, benchmark
writers) hand it their requests and block; each connection drains every request waiting in the
queue into one transaction and one chain link. A chain therefore costs one fsync per batch, not one per
transfer, and batches grow on their own under load. Retrying a batch is always safe because transfer
ids are idempotent: a batch that did commit before a connection dropped answers "exists" the second time.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from ledger.chain import GENESIS_PREV_HASH
from ledger.merkle import leaf_hash, root_from_leaf_hashes
from ledger.transfers import (
    RESOLUTION_KINDS,
    Account,
    Balance,
    Entry,
    LedgerState,
    Outcome,
    TransferError,
    TransferSpec,
    apply_request,
)

# One key for the ledger's chain ("LEDG" "CHN1"): every writer of ledger.links takes it.
CHAIN_LOCK_KEY = 0x4C454447_43484E31
ENTRY_COLUMNS = (
    "height, idx, id, ledger, debit_account, credit_account, amount, kind, pending_id, timeout_us, "
    "time_us, memo, canonical"
)
_ENTRY_SELECT = (
    "SELECT id, ledger, debit_account, credit_account, amount, kind, pending_id, timeout_us, time_us, memo "
    "FROM ledger.entries "
)
RETRYABLE = (
    pg_errors.UniqueViolation,
    pg_errors.DeadlockDetected,
    pg_errors.SerializationFailure,
    pg_errors.LockNotAvailable,
)


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass
class RequestResult:
    status: str  # created | exists | error
    entries: list[Entry] = field(default_factory=list)
    error: TransferError | None = None
    height: int | None = None

    def raise_for_error(self) -> RequestResult:
        if self.error is not None:
            raise self.error
        return self


class AccountCache:
    """Accounts never change once created (name, ledger, flags, limit), so each process caches them."""

    def __init__(self) -> None:
        self._accounts: dict[str, Account] = {}
        self._lock = threading.Lock()

    def get_many(self, conn: psycopg.Connection, names: set[str]) -> dict[str, Account]:
        with self._lock:
            found = {n: self._accounts[n] for n in names if n in self._accounts}
        missing = [n for n in names if n not in found]
        if missing:
            rows = conn.execute(
                "SELECT name, ledger, flags, max_net_debit FROM ledger.accounts WHERE name = ANY(%s)", (missing,)
            ).fetchall()
            fresh = {r[0]: Account(r[0], r[1], r[2], r[3]) for r in rows}
            with self._lock:
                self._accounts.update(fresh)
            found.update(fresh)
        return found

    def clear(self) -> None:
        with self._lock:
            self._accounts.clear()


_default_cache = AccountCache()


def _entry_from_row(r: Sequence[Any]) -> Entry:
    return Entry(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9])


LOCK_SQL = (
    "SELECT account, debits_posted, credits_posted, debits_pending, credits_pending "
    "FROM ledger.balances WHERE account = ANY(%s) ORDER BY account FOR UPDATE"
)
UPDATE_BALANCES_SQL = (
    "UPDATE ledger.balances AS b SET debits_posted = v.dp, credits_posted = v.cp, debits_pending = v.dpe, "
    "credits_pending = v.cpe FROM unnest(%b::text[], %b::int8[], %b::int8[], %b::int8[], %b::int8[]) "
    "AS v(a, dp, cp, dpe, cpe) WHERE b.account = v.a"
)
# The balance rows are already locked (step 2), so updating them takes no new lock: the update and the
# chain lock can share one statement and the chain lock is still the last lock this transaction takes.
UPDATE_THEN_CHAIN_LOCK_SQL = (
    f"WITH updated AS ({UPDATE_BALANCES_SQL} RETURNING 1) "
    "SELECT pg_advisory_xact_lock(%b), (SELECT count(*) FROM updated)"
)
# Runs as its own statement AFTER pg_advisory_xact_lock returned, so its snapshot includes every link
# committed before the lock was granted. height = head + 1; hashed_bytes = prev ‖ int8send(height)
# (8 bytes, big-endian) ‖ root; link_hash = sha256(hashed_bytes). The entries go in with that height.
APPEND_SQL = f"""
WITH head AS (
    SELECT height, link_hash FROM ledger.links ORDER BY height DESC LIMIT 1
), next AS (
    SELECT coalesce((SELECT height FROM head), 0) + 1 AS height,
           coalesce((SELECT link_hash FROM head), %(genesis)b::bytea) AS prev
), link AS (
    INSERT INTO ledger.links (height, prev_hash, merkle_root, entry_count, hashed_bytes, link_hash)
    SELECT height, prev, %(root)b::bytea, %(n)s, prev || int8send(height) || %(root)b::bytea,
           sha256(prev || int8send(height) || %(root)b::bytea)
    FROM next
    RETURNING height, link_hash
), ins AS (
    INSERT INTO ledger.entries ({ENTRY_COLUMNS})
    SELECT (SELECT height FROM link), u.* FROM unnest(%(idx)b::int4[], %(id)b::text[], %(ledger)b::text[],
        %(debit)b::text[], %(credit)b::text[], %(amount)b::int8[], %(kind)b::text[], %(pending)b::text[],
        %(timeout)b::int8[], %(time)b::int8[], %(memo)b::text[], %(canonical)b::bytea[]) AS u
)
SELECT height, link_hash FROM link
"""


def append(
    conn: psycopg.Connection,
    requests: Sequence[Sequence[TransferSpec]],
    *,
    rule_now_us: int | None = None,
    cache: AccountCache | None = None,
    own_transaction: bool = False,
    optimistic_ids: bool = False,
) -> list[RequestResult]:
    """Append `requests` (each one a linked, all-or-nothing list of transfers).

    By default inside the caller's open transaction (the caller commits); callers that write other rows
    in the same transaction must write them BEFORE calling this, so the chain lock stays the last lock
    taken. With own_transaction=True (the group committer, on an autocommit connection) it BEGINs and
    COMMITs itself. Statements are pipelined: one round trip locks and reads, one writes, locks the
    chain, appends the link and commits.

    optimistic_ids=True skips looking up whether the transfer ids exist: a new id is by far the common
    case, and the unique index on entries.id still refuses a duplicate — the whole transaction then
    fails with UniqueViolation and the caller (the group committer) retries with the lookup, which
    answers "exists" or "id_conflict". Never used inside a caller's transaction, which would be lost.
    """
    if optimistic_ids and not own_transaction:
        raise ValueError("optimistic_ids needs own_transaction (the retry must start a fresh transaction)")
    cache = cache or _default_cache
    stamp = now_us()
    rule_now = stamp if rule_now_us is None else rule_now_us
    all_specs = [s for req in requests for s in req]
    ids = list({s.id for s in all_specs})
    pending_refs = list({s.pending_id for s in all_specs if s.kind in RESOLUTION_KINDS and s.pending_id})

    # 1. pending transfers named by post/void (immutable rows, read without locks) → their accounts
    known: dict[str, Entry] = {}
    if pending_refs:
        for r in conn.execute(_ENTRY_SELECT + "WHERE id = ANY(%s)", (pending_refs,)):
            known[r[0]] = _entry_from_row(r)
    names: set[str] = set()
    for s in all_specs:
        if s.debit_account:
            names.add(s.debit_account)
        if s.credit_account:
            names.add(s.credit_account)
    for e in known.values():
        names.update((e.debit_account, e.credit_account))
    accounts = cache.get_many(conn, names)

    try:
        # 2 + 3. lock balance rows in one global (sorted) order; then, under those locks, read which ids
        # exist (idempotency) and which pending transfers are resolved (at most once)
        with conn.pipeline() as pipe:
            if own_transaction:
                conn.execute("BEGIN")
            lock_cur = conn.cursor()
            if accounts:
                lock_cur.execute(LOCK_SQL, (sorted(accounts),))
            ids_cur = conn.cursor()
            if not optimistic_ids:
                ids_cur.execute(_ENTRY_SELECT + "WHERE id = ANY(%s)", (ids,))
            res_cur = conn.cursor()
            if pending_refs:
                res_cur.execute(
                    "SELECT pending_id, id FROM ledger.entries WHERE pending_id = ANY(%s) "
                    "AND kind IN ('post', 'void', 'expire')",
                    (pending_refs,),
                )
            pipe.sync()
            balances = {r[0]: Balance(r[1], r[2], r[3], r[4]) for r in lock_cur.fetchall()} if accounts else {}
            for r in ids_cur.fetchall() if not optimistic_ids else ():
                known[r[0]] = _entry_from_row(r)
            resolved = {r[0]: r[1] for r in res_cur.fetchall()} if pending_refs else {}
        state = LedgerState(accounts, balances, known, resolved)
        before = {name: b.as_tuple() for name, b in balances.items()}

        # 4. the pure rules, request by request: a refused request leaves no trace, the others go on
        results: list[RequestResult] = []
        new_entries: list[Entry] = []
        for req in requests:
            try:
                outcome: Outcome = apply_request(list(req), state, rule_now, stamp)
            except TransferError as exc:
                results.append(RequestResult("error", error=exc))
                continue
            results.append(RequestResult(outcome.status, outcome.entries))
            if outcome.status == "created":
                new_entries.extend(outcome.entries)
        if not new_entries:
            if own_transaction:
                conn.execute("COMMIT")
            return results

        # 5. canonical bytes and Merkle root, before the chain lock
        canon = [e.canonical() for e in new_entries]
        root = root_from_leaf_hashes([leaf_hash(c) for c in canon])
        changed = [(n, b) for n, b in state.balances.items() if before.get(n) != b.as_tuple()]

        # 6 + 7. balances, then the chain lock LAST, then link + entries in a fresh statement, commit
        with conn.pipeline() as pipe:
            conn.execute(
                UPDATE_THEN_CHAIN_LOCK_SQL,
                (
                    [n for n, _ in changed],
                    [b.debits_posted for _, b in changed],
                    [b.credits_posted for _, b in changed],
                    [b.debits_pending for _, b in changed],
                    [b.credits_pending for _, b in changed],
                    CHAIN_LOCK_KEY,
                ),
            )
            link_cur = conn.cursor()
            link_cur.execute(
                APPEND_SQL,
                {
                    "genesis": GENESIS_PREV_HASH,
                    "root": root,
                    "n": len(new_entries),
                    "idx": list(range(len(new_entries))),
                    "id": [e.id for e in new_entries],
                    "ledger": [e.ledger for e in new_entries],
                    "debit": [e.debit_account for e in new_entries],
                    "credit": [e.credit_account for e in new_entries],
                    "amount": [e.amount for e in new_entries],
                    "kind": [e.kind for e in new_entries],
                    "pending": [e.pending_id for e in new_entries],
                    "timeout": [e.timeout_us for e in new_entries],
                    "time": [e.time_us for e in new_entries],
                    "memo": [e.memo for e in new_entries],
                    "canonical": canon,
                },
            )
            if own_transaction:
                conn.execute("COMMIT")
            pipe.sync()
            height, _ = link_cur.fetchone()
    except BaseException:
        if own_transaction and not conn.closed:
            with contextlib.suppress(psycopg.Error):
                conn.execute("ROLLBACK")
        raise
    for res in results:
        if res.status == "created":
            res.height = height
    return results


def append_one(
    conn: psycopg.Connection,
    specs: Sequence[TransferSpec],
    *,
    rule_now_us: int | None = None,
    cache: AccountCache | None = None,
) -> RequestResult:
    """Append one linked request in the caller's transaction; raises TransferError if refused."""
    return append(conn, [specs], rule_now_us=rule_now_us, cache=cache)[0].raise_for_error()


@dataclass
class _Item:
    specs: list[TransferSpec]
    future: Future = field(default_factory=Future)


class GroupCommitter:
    """Concurrent callers share a few connections; every waiting request joins the next batch."""

    def __init__(self, conninfo: str, *, connections: int = 2, max_batch_transfers: int = 2000) -> None:
        self.conninfo = conninfo
        self.max_batch = max_batch_transfers
        self._queue: queue.Queue[_Item | None] = queue.Queue()
        self._cache = AccountCache()
        self._threads = [
            threading.Thread(target=self._run, name=f"ledger-commit-{i}", daemon=True) for i in range(connections)
        ]
        self._closed = False
        self.batches = 0
        self.transfers = 0
        for t in self._threads:
            t.start()

    def submit(self, specs: Sequence[TransferSpec], timeout: float = 60.0) -> RequestResult:
        if self._closed:
            raise RuntimeError("committer is closed")
        item = _Item(list(specs))
        self._queue.put(item)
        return item.future.result(timeout=timeout)

    def close(self) -> None:
        self._closed = True
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join(timeout=10)

    def _connect(self) -> psycopg.Connection:
        # No auto-prepare: see ledger.service.connect (aborted pipelines and psycopg's prepared cache).
        conn = psycopg.connect(self.conninfo, autocommit=True, prepare_threshold=None)
        # The hot statements take arrays of ids/accounts whose sizes vary a lot from batch to batch; a
        # cached generic plan can pick a scan that suits none of them, so always plan for the values.
        conn.execute("SET plan_cache_mode = force_custom_plan")
        return conn

    def _run(self) -> None:
        conn: psycopg.Connection | None = None
        while True:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            count = len(first.specs)
            stop = False
            while count < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
                count += len(nxt.specs)
            conn = self._commit(conn, batch)
            if stop:
                break
        if conn is not None:
            conn.close()

    def _commit(self, conn: psycopg.Connection | None, batch: list[_Item]) -> psycopg.Connection | None:
        last_exc: BaseException | None = None
        for attempt in range(6):
            try:
                if conn is None or conn.closed:
                    conn = self._connect()
                # first attempt optimistic (no id lookup); any retry looks the ids up
                results = append(
                    conn, [i.specs for i in batch], cache=self._cache, own_transaction=True, optimistic_ids=attempt == 0
                )
                self.batches += 1
                self.transfers += sum(len(r.entries) for r in results if r.status == "created")
                for item, res in zip(batch, results, strict=True):
                    item.future.set_result(res)
                return conn
            except RETRYABLE as exc:  # a concurrent writer got there first: retry, ids make it safe
                last_exc = exc
                time.sleep(0.001 * (attempt + 1))
            except psycopg.OperationalError as exc:  # connection lost: reconnect and retry
                last_exc = exc
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.05 * (attempt + 1))
            except Exception as exc:
                if len(batch) > 1:
                    # Something in one request broke the whole transaction: isolate it.
                    for item in batch:
                        conn = self._commit(conn, [item])
                    return conn
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                return conn
        for item in batch:
            if not item.future.done():
                item.future.set_exception(last_exc or RuntimeError("commit failed"))
        return conn
