"""PostgreSQL append path: locks, balances, one chain link per batch — the append transaction.

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
   encode the entry columns as binary arrays (ledger/entry_encoding.py, ledger/pgarray.py) — before
   the chain lock.
6. Write the new balances.
7. Take the transaction-scoped advisory lock LAST, so it is held only for the link append and the
   commit; read the chain head in a NEW statement (a snapshot taken after the lock was granted — in the
   same statement as the lock the snapshot would predate it and could fork the chain), assign
   height = head + 1 (never a sequence: sequences leave gaps), insert the link (the exact hashed bytes
   are stored) and the entries, and commit. `links.height` is the primary key, so even a bug here
   could not fork the chain.

Whose transaction it is, is the append's mode, a type (`AppendMode`): `InCallerTransaction` (the
default: the use cases write their own rows first and append last, and the caller commits) or
`OwnTransaction` (the group committer, on an autocommit connection: BEGIN … COMMIT here, with the
options only it can use — optimistic ids, encodings made ahead, the balance cache, work done while the
COMMIT is in flight).

Round trips: the statements are pipelined (psycopg pipeline mode), so `append` costs two round trips —
[BEGIN, lock rows, read balances, ids and resolutions] and [update balances + chain lock, append,
COMMIT] — plus one fsync. The server executes a pipeline's statements one after another, each with its
own snapshot, so the ordering guarantees above hold.

The group committer (ledger/group_commit.py) usually needs ONE round trip (`BatchPlan`,
`append_planned`): its connection keeps the balances it last held under lock (`BalanceCache`), and
steps 4 and 5 run as each request joins a batch, on those balances, before the transaction starts. The
transaction is then [BEGIN, lock rows (step 2, same statement, same order), update balances + chain
lock, append, COMMIT], where the balance update FIRST checks, under the row locks, that every locked
row still holds exactly the values the rules judged on, and otherwise raises serialization_failure —
aborting the transaction and the COMMIT queued behind it — so that the batch is retried through
`append`. The rules therefore always judge the balances as they are under the locks, as in step 3; ids
are checked by the unique index on entries.id (a duplicate aborts the batch, and the retry looks the
ids up, as in step 3); a batch with a post, void or expire, an uncached account or balance, or nothing
to write (refusals alone are always judged again under the locks) goes through `append`.

The advisory lock is always the last lock a writer takes, and writers holding it wait for nothing,
so it cannot take part in a deadlock either.
"""

from __future__ import annotations

import contextlib
import selectors
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, assert_never

import psycopg
from psycopg import errors as pg_errors

from kernel import clock
from ledger.chain import GENESIS_PREV_HASH
from ledger.entry_encoding import EncodedEntries, encoding_for, entry_arrays
from ledger.merkle import root_from_leaf_hashes
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
    """The new entries' time stamp: when the ledger wrote them, on the market clock (kernel/clock.py), the
    one clock its checkpoints, pending-transfer timeouts, balances as of an instant and settlement runs read
    (a use case that judges timeouts at another market instant passes it as `rule_now_us`)."""
    return clock.now_us()


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


class BalanceCache:
    """The balances one group-committer connection last held under lock: read, or written by itself.

    With it a batch needs one round trip instead of two (`BatchPlan`): the rules run on the cached values,
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


# --- append modes ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InCallerTransaction:
    """Append inside the caller's open transaction; the caller commits. Callers that write other rows in
    the same transaction must write them BEFORE appending, so the chain lock stays the last lock taken."""


@dataclass(frozen=True, slots=True)
class OwnTransaction:
    """BEGIN and COMMIT here, on an autocommit connection (the group committer).

    optimistic_ids: skip looking up whether the transfer ids exist: a new id is by far the common case,
      and the unique index on entries.id still refuses a duplicate — the whole transaction then fails
      with UniqueViolation and the caller retries with the lookup, which answers "exists" or
      "id_conflict". Only here: inside a caller's transaction the caller's work would be lost.
    stamp_us: the new entries' time (default: now).
    encoded: per request, the encoding made ahead by `encode_ahead` with that stamp, or None.
    balance_cache: refreshed with the balances read under the locks and written (BalanceCache).
    while_committing: called once the COMMIT has been sent and before its result is awaited, so the
      next batch is prepared while the server executes and flushes this one.
    """

    optimistic_ids: bool = False
    stamp_us: int | None = None
    encoded: Sequence[EncodedEntries | None] | None = None
    balance_cache: BalanceCache | None = None
    while_committing: Callable[[], None] | None = None


AppendMode = InCallerTransaction | OwnTransaction
IN_CALLER_TRANSACTION = InCallerTransaction()


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
        {"genesis": GENESIS_PREV_HASH, "root": root_from_leaf_hashes(leaves), "n": len(leaves), **entry_arrays(parts)},
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
    mode: AppendMode = IN_CALLER_TRANSACTION,
) -> list[RequestResult]:
    """Append `requests` (each one a linked, all-or-nothing list of transfers).

    In the caller's open transaction (`InCallerTransaction`, the default; the caller commits) or in its
    own (`OwnTransaction`: the group committer, on an autocommit connection). Statements are pipelined:
    one round trip locks and reads, one writes, locks the chain, appends the link and commits.
    `rule_now_us` is the instant the rules judge timeouts against (default: the entries' time stamp).
    """
    match mode:
        case OwnTransaction():
            own: OwnTransaction | None = mode
            stamp = now_us() if mode.stamp_us is None else mode.stamp_us
            optimistic_ids, encoded, balance_cache = mode.optimistic_ids, mode.encoded, mode.balance_cache
        case InCallerTransaction():
            own = None
            stamp = now_us()
            optimistic_ids, encoded, balance_cache = False, None, None
        case _:
            assert_never(mode)
    own_transaction = own is not None
    cache = cache or _default_cache
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
        parts = [encoding_for(entries, encoded[i] if encoded else None) for i, entries in created]
        changed = [(n, b) for n, b in state.balances.items() if before[n] != b.as_tuple()]
        with conn.pipeline() as pipe:
            link_cur = _send_writes(conn, parts, changed, None)
            if balance_cache is not None:
                balance_cache.update(state.balances)  # see BalanceCache: cleared below if anything fails
            if own is not None:
                _commit_pipelined(conn, own.while_committing)
            pipe.sync()
            height = _link_height(link_cur)
    except BaseException:
        _abort(conn, own_transaction, balance_cache)
        raise
    return _at_height(results, height)


def _link_height(link_cur: psycopg.Cursor[Any]) -> int:
    row = link_cur.fetchone()
    if row is None:  # APPEND_SQL always returns the link it inserted
        raise AssertionError("no link returned")
    height: int = row[0]
    return height


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


# --- one round trip: a batch judged on cached balances ------------------------------------------


class BatchPlan:
    """A batch judged as it fills, on cached balances: steps 4-5 done before its transaction starts.

    Each request is put through the rules as it joins (`add`), on the balances the batches before it
    leave (BalanceCache, which already holds the batch still committing), and encoded; the batch is
    then ONE round trip — BEGIN, the sorted row locks, the balance update that first checks every
    locked row still holds the values judged on, the chain lock, link + entries, COMMIT
    (`append_planned`). A plan gives up (`ok` False, and the batch takes the ordinary path) on
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
            self.parts.append(encoding_for(created[0][1], ahead))

    def usable(self) -> bool:
        """Still valid (nothing it was judged on was dropped) and something to write: refusals alone
        are always judged again on balances read under the locks."""
        return self.ok and self.generation == self._balances.generation and bool(self.parts)


def append_planned(
    conn: psycopg.Connection, plan: BatchPlan, balances: BalanceCache, while_committing: Callable[[], None] | None
) -> list[RequestResult]:
    """Commit a usable plan in one round trip (see BatchPlan); any failure clears the balance cache."""
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
            height = _link_height(link_cur)
    except BaseException:
        _abort(conn, True, balances)
        raise
    return _at_height(plan.results, height)
