"""PostgreSQL append path: locks, balances, one chain link per batch, and group commit.

How a batch of requests is appended (../shared/reference/ledger-design.md "Concurrency on PostgreSQL"),
all inside ONE transaction at READ COMMITTED — `append`:

1. Read the pending transfers that post/void requests name (immutable rows: no lock needed) to learn
   which accounts they touch.
2. Lock every touched balance row with `SELECT … ORDER BY account FOR UPDATE` — one fixed (sorted)
   order for every writer, so writers can wait for each other but never deadlock.
3. Now, under those locks, read the balances, which transfer ids already exist and which pending
   transfers are already resolved (each statement takes a fresh snapshot at READ COMMITTED, so it sees
   whatever committed while we waited for the locks).
4. Apply the pure rules (ledger/transfers.py) request by request in memory; a refused request is
   reported to its caller and leaves no trace; the others go on.
5. Encode the new entries canonically (RFC 8785), hash them into their RFC 6962 Merkle root and
   encode the entry columns as binary arrays (ledger/pgarray.py) — before the chain lock.
6. Write the new balances.
7. Take the transaction-scoped advisory lock LAST, so it is held only for the link append and the
   commit; read the chain head in a NEW statement (a snapshot taken after the lock was granted — in the
   same statement as the lock the snapshot would predate it and could fork the chain), assign
   height = head + 1 (never a sequence: sequences leave gaps), insert the link (the exact hashed bytes
   are stored) and the entries, and commit. `links.height` is the primary key, so even a bug here
   could not fork the chain.

Round trips: the statements are pipelined (psycopg pipeline mode), so `append` costs two round trips —
[BEGIN, lock rows, read balances, ids and resolutions] and [update balances + chain lock, append,
COMMIT] — plus one fsync. The server executes a pipeline's statements one after another, each with its
own snapshot, so the ordering guarantees above hold.

The group committer usually needs ONE round trip (`_Plan`, `_append_planned`): its connection keeps
the balances it last held under lock (`BalanceCache`), and steps 4 and 5 run as each request joins a
batch, on those balances, before the transaction starts. The transaction is then [BEGIN, lock rows
(step 2, same statement, same order), update balances + chain lock, append, COMMIT], where the balance
update FIRST checks, under the row locks, that every locked row still holds exactly the values the
rules judged on, and otherwise raises serialization_failure — aborting the transaction and the COMMIT
queued behind it — so that the batch is retried through `append`. The rules therefore always judge
the balances as they are under the locks, as in step 3; ids are checked by the unique index on
entries.id (a duplicate aborts the batch, and the retry looks the ids up, as in step 3); a batch with
a post, void or expire, an uncached account or balance, or nothing to write (refusals alone are
always judged again under the locks) goes through `append`.

The advisory lock is always the last lock a writer takes, and writers holding it wait for nothing,
so it cannot take part in a deadlock either.

Group commit: `GroupCommitter` owns one connection (by default; see its docstring for why);
concurrent callers (HTTP requests, benchmark writers) hand it their requests and block; the connection
drains every request waiting in the queue into one transaction and one chain link. A chain therefore
costs one fsync per batch, not one per transfer, and batches grow on their own under load. While a
batch's COMMIT is in flight, the committer already takes the requests that arrived meanwhile into the
next batch, encodes their entries and judges them (on the balances the batch in flight leaves: a
failure of that batch clears the cache and so invalidates the judgement). Retrying a batch is always
safe because transfer ids are idempotent: a batch that did commit before a connection dropped answers
"exists" the second time.
"""

from __future__ import annotations

import contextlib
import queue
import selectors
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from ledger.canonical import CanonicalError
from ledger.chain import GENESIS_PREV_HASH
from ledger.merkle import leaf_hash, root_from_leaf_hashes
from ledger.pgarray import BinaryArray, ByteaArray, Int8Array, TextArray, bytea_elements, int8_elements, text_elements
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

    def cached(self, names: Iterable[str]) -> dict[str, Account] | None:
        """The cached accounts for every name, without touching the database; None if one is missing."""
        with self._lock:
            accounts = self._accounts
            out = {}
            for n in names:
                acc = accounts.get(n)
                if acc is None:
                    return None
                out[n] = acc
            return out

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
# (8 bytes, big-endian) ‖ root; link_hash = sha256(hashed_bytes). The entries go in with that height, and
# idx = their position in the arrays (WITH ORDINALITY counts from 1), i.e. their leaf index.
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
    SELECT (SELECT height FROM link), u.n - 1, u.id, u.ledger, u.debit, u.credit, u.amount, u.kind, u.pending,
           u.timeout, u.time, u.memo, u.canonical
    FROM unnest(%(id)b::text[], %(ledger)b::text[], %(debit)b::text[], %(credit)b::text[], %(amount)b::int8[],
                %(kind)b::text[], %(pending)b::text[], %(timeout)b::int8[], %(time)b::int8[], %(memo)b::text[],
                %(canonical)b::bytea[])
         WITH ORDINALITY AS u(id, ledger, debit, credit, amount, kind, pending, timeout, time, memo, canonical, n)
)
SELECT height, link_hash FROM link
"""


# The one-round-trip form of steps 2-7 (see BalanceCache): the rules were applied to cached balances,
# so the write statement first checks that every locked row still holds exactly those values. Its
# snapshot is taken after the preceding LOCK_SQL statement acquired the row locks, so it sees the rows'
# current values, which nobody else can change any more. If one differs (or a row is missing),
# ledger_expect_unchanged raises serialization_failure: the transaction, and the COMMIT queued behind it
# in the same pipeline, are aborted, and the batch is retried with the balances read under the locks.
UPDATE_IF_UNCHANGED_THEN_CHAIN_LOCK_SQL = (
    "WITH expected AS (SELECT * FROM unnest(%b::text[], %b::int8[], %b::int8[], %b::int8[], %b::int8[]) "
    "AS e(a, dp, cp, dpe, cpe)), "
    "unchanged AS (SELECT count(*) AS n FROM ledger.balances AS b JOIN expected AS e ON b.account = e.a "
    "AND b.debits_posted = e.dp AND b.credits_posted = e.cp AND b.debits_pending = e.dpe "
    "AND b.credits_pending = e.cpe), "
    f"updated AS ({UPDATE_BALANCES_SQL} RETURNING 1) "
    "SELECT pg_temp.ledger_expect_unchanged((SELECT n FROM unchanged) = %b), pg_advisory_xact_lock(%b), "
    "(SELECT count(*) FROM updated)"
)
# Created once per group-committer connection (a temporary function: it needs no migration and no
# privileges beyond the connection's own).
CREATE_EXPECT_UNCHANGED_SQL = """
CREATE FUNCTION pg_temp.ledger_expect_unchanged(ok boolean) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF ok IS NOT TRUE THEN
        RAISE EXCEPTION 'ledger: locked balance rows differ from the cached balances the rules used'
            USING ERRCODE = 'serialization_failure';
    END IF;
    RETURN true;
END
$$
"""


@dataclass(frozen=True, slots=True)
class EncodedEntries:
    """One request's entries encoded once, for everything the append sends or hashes.

    `leaves` are the RFC 6962 leaf hashes of the canonical bytes; `columns` the binary array elements
    (ledger/pgarray.py) of APPEND_SQL's arrays in its order: id, ledger, debit, credit, amount, kind,
    pending, timeout, time, memo, canonical. `nulls` says whether the pending and timeout elements
    include a NULL (no other column can).
    """

    entries: tuple[Entry, ...]
    leaves: tuple[bytes, ...]
    columns: tuple[bytes, ...]
    nulls: tuple[bool, bool]


def encode_entries(entries: Sequence[Entry]) -> EncodedEntries:
    canon = [e.canonical() for e in entries]
    return EncodedEntries(
        tuple(entries),
        tuple(leaf_hash(c) for c in canon),
        (
            text_elements([e.id for e in entries]),
            text_elements([e.ledger for e in entries]),
            text_elements([e.debit_account for e in entries]),
            text_elements([e.credit_account for e in entries]),
            int8_elements([e.amount for e in entries]),
            text_elements([e.kind for e in entries]),
            text_elements([e.pending_id for e in entries]),
            int8_elements([e.timeout_us for e in entries]),
            int8_elements([e.time_us for e in entries]),
            text_elements([e.memo for e in entries]),
            bytea_elements(canon),
        ),
        (any(e.pending_id is None for e in entries), any(e.timeout_us is None for e in entries)),
    )


def encode_ahead(specs: Sequence[TransferSpec], stamp_us: int) -> EncodedEntries | None:
    """Encode the entries that a request would create if the rules accept it, or None.

    A single or pending transfer's entry is fixed by its spec and the batch's time stamp (the rules only
    judge it against the accounts and balances), so everything sent or hashed for it can be computed
    before the balance rows are locked — the group committer does it while the previous batch's COMMIT
    is in flight. This is only a cache: `append` uses it only if the request was accepted and the rules
    created entries EQUAL (every field) to these, so what is stored and hashed is always the accepted
    entries' own encoding. Requests with post, void or expire transfers (their entries depend on the
    pending transfer) or with values the rules will refuse are encoded after the rules, if at all.
    """
    entries = []
    for s in specs:
        if not (
            (s.kind == "single" or s.kind == "pending")
            and type(s.id) is str
            and type(s.ledger) is str
            and type(s.debit_account) is str
            and type(s.credit_account) is str
            and type(s.amount) is int
            and type(s.memo) is str
        ):
            return None
        entries.append(
            Entry(
                s.id,
                s.ledger,
                s.debit_account,
                s.credit_account,
                s.amount,
                s.kind,
                None,
                s.timeout_us,
                stamp_us,
                s.memo,
            )
        )
    try:
        return encode_entries(entries)
    except (CanonicalError, UnicodeEncodeError, struct.error, TypeError):
        return None  # the rules refuse such a request (or encoding it there raises the same error)


def _entry_arrays(parts: Sequence[EncodedEntries]) -> dict[str, BinaryArray]:
    """APPEND_SQL's array parameters for the concatenation of `parts`, in order."""
    n = sum(len(p.entries) for p in parts)

    def col(j: int) -> bytes:
        return b"".join([p.columns[j] for p in parts])

    return {
        "id": TextArray(n, False, col(0)),
        "ledger": TextArray(n, False, col(1)),
        "debit": TextArray(n, False, col(2)),
        "credit": TextArray(n, False, col(3)),
        "amount": Int8Array(n, False, col(4)),
        "kind": TextArray(n, False, col(5)),
        "pending": TextArray(n, any(p.nulls[0] for p in parts), col(6)),
        "timeout": Int8Array(n, any(p.nulls[1] for p in parts), col(7)),
        "time": Int8Array(n, False, col(8)),
        "memo": TextArray(n, False, col(9)),
        "canonical": ByteaArray(n, col(10)),
    }


class BalanceCache:
    """The balances one group-committer connection last held under lock: read, or written by itself.

    With it a batch needs one round trip instead of two (`_Plan`): the rules run on the cached values,
    and the write statement checks, under the row locks, that every locked row still holds them
    (UPDATE_IF_UNCHANGED_THEN_CHAIN_LOCK_SQL) — so the rules always judge the balances as they are under
    the locks, exactly as when the rows are read first. When the committer is the only writer of its
    accounts (the usual case) the check passes; when another writer changed a row, the batch is aborted
    and retried the two-round-trip way, which refreshes the cache.

    A batch's new balances are entered when its writes are sent, before its COMMIT is confirmed, so the
    next batch can be judged while this one commits; ANY failure clears the cache and bumps
    `generation`, which invalidates every judgement made on what it held. Used by one thread.
    """

    def __init__(self) -> None:
        self._values: dict[str, tuple[int, int, int, int]] = {}
        self.generation = 0

    def get_all(self, names: Iterable[str]) -> dict[str, Balance] | None:
        """Fresh Balance objects for every name, or None if any is not cached."""
        out: dict[str, Balance] = {}
        values = self._values
        for n in names:
            v = values.get(n)
            if v is None:
                return None
            out[n] = Balance(*v)
        return out

    def update(self, balances: Mapping[str, Balance]) -> None:
        for n, b in balances.items():
            self._values[n] = b.as_tuple()

    def clear(self) -> None:
        self._values.clear()
        self.generation += 1


def _apply_rules(
    requests: Sequence[Sequence[TransferSpec]], state: LedgerState, rule_now: int, stamp: int
) -> tuple[list[RequestResult], list[tuple[int, list[Entry]]]]:
    """Step 4: the pure rules, request by request; a refused request leaves no trace, the others go on.
    Returns every request's result and (request index, entries) of those that create entries."""
    results: list[RequestResult] = []
    created: list[tuple[int, list[Entry]]] = []
    for i, req in enumerate(requests):
        try:
            outcome: Outcome = apply_request(list(req), state, rule_now, stamp)
        except TransferError as exc:
            results.append(RequestResult("error", error=exc))
            continue
        results.append(RequestResult(outcome.status, outcome.entries))
        if outcome.status == "created":
            created.append((i, outcome.entries))
    return results, created


def _encoding(entries: list[Entry], ahead: EncodedEntries | None) -> EncodedEntries:
    """Step 5 for one created request: the encoding made ahead if it encodes exactly these entries."""
    if ahead is not None and ahead.entries == tuple(entries):
        return ahead
    return encode_entries(entries)


def _send_writes(
    conn: psycopg.Connection,
    parts: Sequence[EncodedEntries],
    changed: list[tuple[str, Balance]],
    expected: Mapping[str, tuple[int, int, int, int]] | None,
) -> psycopg.Cursor:
    """Steps 6 + 7 into the open pipeline: balances, then the chain lock LAST, then link + entries in
    a fresh statement. With `expected` (the values the rules used for every locked row) the balance
    update first checks them — the one-round-trip form. Returns the cursor of (height, link_hash)."""
    new_values = (
        [n for n, _ in changed],
        [b.debits_posted for _, b in changed],
        [b.credits_posted for _, b in changed],
        [b.debits_pending for _, b in changed],
        [b.credits_pending for _, b in changed],
    )
    if expected is None:
        conn.execute(UPDATE_THEN_CHAIN_LOCK_SQL, (*new_values, CHAIN_LOCK_KEY))
    else:
        locked = list(expected)
        conn.execute(
            UPDATE_IF_UNCHANGED_THEN_CHAIN_LOCK_SQL,
            (
                locked,
                [expected[n][0] for n in locked],
                [expected[n][1] for n in locked],
                [expected[n][2] for n in locked],
                [expected[n][3] for n in locked],
                *new_values,
                len(locked),
                CHAIN_LOCK_KEY,
            ),
        )
    leaves = [leaf for p in parts for leaf in p.leaves]
    link_cur = conn.cursor()
    link_cur.execute(
        APPEND_SQL,
        {"genesis": GENESIS_PREV_HASH, "root": root_from_leaf_hashes(leaves), "n": len(leaves), **_entry_arrays(parts)},
    )
    return link_cur


def _commit_pipelined(conn: psycopg.Connection, while_committing: Callable[[], None] | None) -> None:
    """Queue COMMIT behind the writes and, if asked, do other work while the server executes them and
    flushes the commit to disk; the caller's pipe.sync() then collects the results."""
    conn.execute("COMMIT")
    if while_committing is not None:
        _flush(conn)  # the server must have the whole COMMIT before we turn to other work
        while_committing()


def append(
    conn: psycopg.Connection,
    requests: Sequence[Sequence[TransferSpec]],
    *,
    rule_now_us: int | None = None,
    cache: AccountCache | None = None,
    own_transaction: bool = False,
    optimistic_ids: bool = False,
    stamp_us: int | None = None,
    encoded: Sequence[EncodedEntries | None] | None = None,
    balance_cache: BalanceCache | None = None,
    while_committing: Callable[[], None] | None = None,
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

    The group committer (own_transaction only) also passes `stamp_us`, the new entries' time (default
    now); `encoded`, per request the encoding made ahead by `encode_ahead` with that stamp, or None;
    `balance_cache`, refreshed with the balances read under the locks and written (BalanceCache); and
    `while_committing`, called once the COMMIT has been sent and before its result is awaited, so the
    next batch is prepared while the server executes and flushes this one.
    """
    if optimistic_ids and not own_transaction:
        raise ValueError("optimistic_ids needs own_transaction (the retry must start a fresh transaction)")
    if (while_committing is not None or balance_cache is not None) and not own_transaction:
        raise ValueError("while_committing and balance_cache need own_transaction")
    cache = cache or _default_cache
    stamp = now_us() if stamp_us is None else stamp_us
    rule_now = stamp if rule_now_us is None else rule_now_us
    all_specs = [s for req in requests for s in req]
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
                ids_cur.execute(_ENTRY_SELECT + "WHERE id = ANY(%s)", (list({s.id for s in all_specs}),))
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

        # 4. the pure rules
        results, created = _apply_rules(requests, state, rule_now, stamp)
        if not created:
            if own_transaction:
                conn.execute("COMMIT")
            if balance_cache is not None:
                balance_cache.update(state.balances)
            return results

        # 5. canonical bytes, leaf hashes and array elements (reusing encodings made ahead), before the
        # chain lock; 6 + 7. balances, chain lock LAST, link + entries, commit
        parts = [_encoding(entries, encoded[i] if encoded else None) for i, entries in created]
        changed = [(n, b) for n, b in state.balances.items() if before[n] != b.as_tuple()]
        with conn.pipeline() as pipe:
            link_cur = _send_writes(conn, parts, changed, None)
            if balance_cache is not None:
                balance_cache.update(state.balances)  # see BalanceCache: cleared below if anything fails
            if own_transaction:
                _commit_pipelined(conn, while_committing)
            pipe.sync()
            height = link_cur.fetchone()[0]
    except BaseException:
        _abort(conn, own_transaction, balance_cache)
        raise
    return _at_height(results, height)


def _at_height(results: list[RequestResult], height: int) -> list[RequestResult]:
    """The created requests' entries went into the link at `height`."""
    for res in results:
        if res.status == "created":
            res.height = height
    return results


def _abort(conn: psycopg.Connection, own_transaction: bool, balance_cache: BalanceCache | None) -> None:
    if balance_cache is not None:
        balance_cache.clear()  # it may be what went wrong, or hold a batch that did not commit
    if own_transaction and not conn.closed:
        with contextlib.suppress(psycopg.Error):
            conn.execute("ROLLBACK")


def _flush(conn: psycopg.Connection) -> None:
    """Send everything libpq still buffers for this connection.

    In pipeline mode psycopg writes without blocking and may leave the tail of a large statement (a
    batch's arrays) in libpq's output buffer until it next waits for results; the server would then
    start the COMMIT only after `while_committing` returned, and nothing would overlap. This is libpq's
    documented PQflush loop for non-blocking connections: wait until the socket is writable (reading
    any input meanwhile, so neither side can stall on a full buffer) and flush again.
    """
    pgconn = conn.pgconn
    if pgconn.flush() == 0:  # the usual case: everything already went out
        return
    with selectors.DefaultSelector() as sel:
        sel.register(pgconn.socket, selectors.EVENT_READ | selectors.EVENT_WRITE)
        while True:
            for _, events in sel.select():
                if events & selectors.EVENT_READ:
                    pgconn.consume_input()
            if pgconn.flush() == 0:
                return


def append_one(
    conn: psycopg.Connection,
    specs: Sequence[TransferSpec],
    *,
    rule_now_us: int | None = None,
    cache: AccountCache | None = None,
) -> RequestResult:
    """Append one linked request in the caller's transaction; raises TransferError if refused."""
    return append(conn, [specs], rule_now_us=rule_now_us, cache=cache)[0].raise_for_error()


# --- group commit ------------------------------------------------------------------------------


class _Plan:
    """A batch judged as it fills, on cached balances: steps 4-5 done before its transaction starts.

    Each request is put through the rules as it joins (`add`), on the balances the batches before it
    leave (BalanceCache, which already holds the batch still committing), and encoded; the batch is
    then ONE round trip — BEGIN, the sorted row locks, the balance update that first checks every
    locked row still holds the values judged on, the chain lock, link + entries, COMMIT
    (`_append_planned`). A plan gives up (`ok` False, and the batch takes the ordinary path) on
    anything it cannot judge without the database: an account or balance not cached, a post/void/
    expire (the pending transfer must be read), or an unexpected error.
    """

    def __init__(self, accounts: AccountCache, balances: BalanceCache, stamp: int) -> None:
        self._accounts = accounts
        self._balances = balances
        self.generation = balances.generation
        self.stamp = stamp
        self.accounts: dict[str, Account] = {}
        self.expected: dict[str, tuple[int, int, int, int]] = {}  # every locked row, as judged on
        self.state = LedgerState(self.accounts, {}, {}, {})
        self.results: list[RequestResult] = []
        self.parts: list[EncodedEntries] = []
        self.ok = True

    def add(self, specs: list[TransferSpec], ahead: EncodedEntries | None) -> None:
        if not self.ok:
            return
        try:
            self._add(specs, ahead)
        except Exception:  # judged again, the ordinary way, when the batch is committed
            self.ok = False

    def _add(self, specs: list[TransferSpec], ahead: EncodedEntries | None) -> None:
        accounts = self.accounts
        new: set[str] = set()
        for s in specs:
            if s.kind in RESOLUTION_KINDS:
                self.ok = False
                return
            for name in (s.debit_account, s.credit_account):
                if name and name not in accounts:
                    new.add(name)
        if new:
            found = self._accounts.cached(new)
            values = self._balances.get_all(new) if found is not None else None
            if found is None or values is None:
                self.ok = False
                return
            accounts.update(found)
            self.state.balances.update(values)
            self.expected.update((n, b.as_tuple()) for n, b in values.items())
        results, created = _apply_rules([specs], self.state, self.stamp, self.stamp)
        self.results.append(results[0])
        if created:
            self.parts.append(_encoding(created[0][1], ahead))

    def usable(self) -> bool:
        """Still valid (nothing it was judged on was dropped) and something to write: refusals alone
        are always judged again on balances read under the locks."""
        return self.ok and self.generation == self._balances.generation and bool(self.parts)


def _append_planned(
    conn: psycopg.Connection, plan: _Plan, balances: BalanceCache, while_committing: Callable[[], None] | None
) -> list[RequestResult]:
    """Commit a usable plan in one round trip (see _Plan); any failure clears the balance cache."""
    state = plan.state
    changed = [(n, b) for n, b in state.balances.items() if plan.expected[n] != b.as_tuple()]
    try:
        with conn.pipeline() as pipe:
            conn.execute("BEGIN")
            conn.execute(LOCK_SQL, (sorted(plan.accounts),))  # step 2: the row locks, in the global order
            link_cur = _send_writes(conn, plan.parts, changed, plan.expected)
            balances.update(state.balances)  # see BalanceCache: cleared below if anything fails
            _commit_pipelined(conn, while_committing)
            pipe.sync()
            height = link_cur.fetchone()[0]
    except BaseException:
        _abort(conn, True, balances)
        raise
    return _at_height(plan.results, height)


@dataclass
class _Item:
    specs: list[TransferSpec]
    future: Future = field(default_factory=Future)
    ahead: EncodedEntries | None = None  # encode_ahead with the stamp of the batch it joined


@dataclass
class _Batch:
    """Requests that will share one transaction and one chain link, encoded (and judged) as they join."""

    accounts: AccountCache
    balances: BalanceCache | None  # None: no plan (a sub-batch isolating one request)
    items: list[_Item] = field(default_factory=list)
    transfers: int = 0
    stamp_us: int = 0  # the new entries' time: when the batch's first request was taken
    plan: _Plan | None = None

    def add(self, item: _Item) -> None:
        if not self.items:
            self.stamp_us = now_us()
            if self.balances is not None:
                self.plan = _Plan(self.accounts, self.balances, self.stamp_us)
        self.items.append(item)
        self.transfers += len(item.specs)
        item.ahead = encode_ahead(item.specs, self.stamp_us)
        if self.plan is not None:
            self.plan.add(item.specs, item.ahead)

    def part(self, items: list[_Item]) -> _Batch:
        """A sub-batch with the same stamp (so the encodings made ahead still apply), without a plan."""
        return _Batch(self.accounts, None, items, sum(len(i.specs) for i in items), self.stamp_us)


class GroupCommitter:
    """Concurrent callers share one connection (by default); every waiting request joins the next batch.

    One connection, not several: every batch locks the same hot balance rows and appends to the one
    chain, and a transaction holds its row locks until its commit is flushed, so a second connection's
    batch only waits for the first one's — while splitting the queue into smaller batches, adding a
    thread that competes for the GIL with the first one's critical section, and (now) defeating each
    connection's balance cache with the other's writes. Measured with bench/ledger.py at 8 writers:
    before the changes below, one connection already beat two (13.4k vs 10.0k transfers/s for
    10-transfer requests, 37.7k vs 31.7k for 100-transfer requests); with them, one connection reaches
    16-19k and 49-65k, two stay at 8-12k and 19-33k (load average 1-3). What a second connection could
    overlap, the single one overlaps itself, in one thread:

    - while a batch's COMMIT is in flight (executed and flushed to disk by the server), the thread takes
      the requests that arrived meanwhile into the next batch, encodes their entries ahead
      (`encode_ahead`: canonical bytes, leaf hashes, array elements) and judges them (`_Plan`, on the
      balances the batch in flight leaves), so Python and PostgreSQL work at the same time;
    - the balances it last held under lock are cached (`BalanceCache`), so a batch is one round trip,
      not two; the cached values are checked under the row locks before anything is written.

    Batches grow on their own under load. When a batch is small (fewer than `small_batch` transfers),
    the thread gives the callers it has just answered up to `callers_wait_s` to send their next request
    before starting it: a batch's fixed cost (round trips, statements, one fsync) is then shared by
    twice as many requests, where callers that each wait for their answer would otherwise fall into two
    alternating half-size batches (at 8 writers × 10 transfers: 80 transfers per link instead of 40).
    The wait ends as soon as that many requests have arrived, costs nothing when the queue is empty
    (the thread would idle anyway), and is skipped for large batches, whose fixed cost is already
    shared and which gain more from preparing the next batch during this one's commit. More
    connections are still allowed; each then keeps its own balance cache and they mostly invalidate
    each other's (correct, only slower).
    """

    def __init__(
        self,
        conninfo: str,
        *,
        connections: int = 1,
        max_batch_transfers: int = 2000,
        small_batch: int = 256,
        callers_wait_s: float = 0.001,
    ) -> None:
        self.conninfo = conninfo
        self.max_batch = max_batch_transfers
        self.small_batch = small_batch
        self.callers_wait_s = callers_wait_s
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
        conn.execute(CREATE_EXPECT_UNCHANGED_SQL)
        return conn

    def _drain(self, batch: _Batch) -> bool:
        """Move waiting requests into `batch` without blocking, up to max_batch; True if told to stop."""
        while batch.transfers < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return False
            if item is None:
                return True
            batch.add(item)
        return False

    def _await_callers(self, batch: _Batch, answered: int) -> bool:
        """Give the `answered` callers a moment to send their next request into a small `batch`."""
        deadline = time.perf_counter() + self.callers_wait_s
        arrived = 0
        while arrived < answered and batch.transfers < self.small_batch:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            try:
                item = self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            if item is None:
                return True
            batch.add(item)
            arrived += 1
        return False

    def _run(self) -> None:
        conn: psycopg.Connection | None = None
        balances = BalanceCache()
        batch = _Batch(self._cache, balances)
        stop = False
        while True:
            if not batch.items:
                if stop:
                    break
                first = self._queue.get()
                if first is None:
                    break
                batch.add(first)
            stop = self._drain(batch) or stop
            upcoming = _Batch(self._cache, balances)

            def prepare_next(upcoming: _Batch = upcoming) -> None:
                # Runs while this batch's COMMIT is in flight: requests that arrived meanwhile are taken
                # and encoded now; whatever arrives later still joins before the next batch starts.
                nonlocal stop
                stop = self._drain(upcoming) or stop

            answered = len(batch.items)
            conn = self._commit(conn, batch, balances, prepare_next)
            batch = upcoming
            if not stop:
                stop = self._await_callers(batch, answered)
        if conn is not None:
            conn.close()

    def _commit(
        self,
        conn: psycopg.Connection | None,
        batch: _Batch,
        balances: BalanceCache,
        while_committing: Callable[[], None] | None = None,
    ) -> psycopg.Connection | None:
        last_exc: BaseException | None = None
        items = batch.items
        for attempt in range(6):
            try:
                if conn is None or conn.closed:
                    conn = self._connect()
                # The first attempt is optimistic (no id lookup; judged on cached balances if the batch
                # has a usable plan); any retry looks the ids up and reads the balances under the locks.
                if attempt == 0 and batch.plan is not None and batch.plan.usable():
                    results = _append_planned(conn, batch.plan, balances, while_committing)
                else:
                    results = append(
                        conn,
                        [i.specs for i in items],
                        cache=self._cache,
                        own_transaction=True,
                        optimistic_ids=attempt == 0,
                        stamp_us=batch.stamp_us,
                        encoded=[i.ahead for i in items],
                        balance_cache=balances,
                        while_committing=while_committing,
                    )
                self.batches += 1
                self.transfers += sum(len(r.entries) for r in results if r.status == "created")
                for item, res in zip(items, results, strict=True):
                    item.future.set_result(res)
                return conn
            except RETRYABLE as exc:  # a concurrent writer got there first: retry, ids make it safe
                last_exc = exc
                if attempt:  # the first retry is immediate: it is usually a stale cache or a resubmitted id
                    time.sleep(0.001 * attempt)
            except psycopg.OperationalError as exc:  # connection lost: reconnect and retry
                last_exc = exc
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.05 * (attempt + 1))
            except Exception as exc:
                if len(items) > 1:
                    # Something in one request broke the whole transaction: isolate it.
                    for item in items:
                        conn = self._commit(conn, batch.part([item]), balances)
                    return conn
                for item in items:
                    if not item.future.done():
                        item.future.set_exception(exc)
                return conn
        for item in items:
            if not item.future.done():
                item.future.set_exception(last_exc or RuntimeError("commit failed"))
        return conn
