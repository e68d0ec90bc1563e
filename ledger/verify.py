"""`ledger verify` over PostgreSQL: re-hash every entry, Merkle root and link (ledger/chain.py), check
every signed checkpoint, every balance against its entries, Σ debits = Σ credits per ledger and the CFT
invariant — on one consistent snapshot, split by height across worker processes for large ledgers.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from multiprocessing import get_context
from typing import Any

import psycopg

from ledger.chain import CheckpointRef, EntryRoots, VerifyResult, describe_mismatch, entry_roots, verify_links
from ledger.checkpoints import checkpoint_doc, key_handovers
from ledger.proofs import verify_checkpoint_chain
from ledger.tokens import provider_tokens


@dataclass
class LedgerReport:
    chain: VerifyResult
    problems: list[str]
    seconds: float
    chain_seconds: float = 0.0  # the re-hashing part alone

    @property
    def ok(self) -> bool:
        return self.chain.ok and not self.problems

    def summary(self) -> str:
        if self.ok:
            return (
                self.chain.summary()
                + f"; balances match entries; Σ debits = Σ credits per ledger ({self.seconds:.2f} s)"
            )
        first = self.chain.summary() if not self.chain.ok else self.problems[0]
        return first if first.startswith("TAMPERED") else f"TAMPERED: {first}"


ENTRY_VERIFY_SQL = (
    "SELECT height, idx, id, ledger, debit_account, credit_account, amount, kind, pending_id, "
    "timeout_us, time_us, memo, canonical FROM ledger.entries"
)
# The canonical entry form (ledger/canonical.py) written as a SQL expression over the columns:
# PostgreSQL's JSON string escaping (to_json) is RFC 8785's — \" \\ \b \f \n \r \t, other C0
# controls as lower-case \u00xx, everything else verbatim — and the keys are in canonical order.
# tests/ledger/test_verify_modes_db.py checks it byte for byte against encode_entry on hard strings.
SQL_CANONICAL = (
    "convert_to('{\"amount\":' || amount || ',\"credit\":' || to_json(credit_account)::text"
    " || ',\"debit\":' || to_json(debit_account)::text || ',\"id\":' || to_json(id)::text"
    " || ',\"kind\":' || to_json(kind)::text || ',\"ledger\":' || to_json(ledger)::text"
    " || ',\"memo\":' || to_json(memo)::text || ',\"pending_id\":' || coalesce(to_json(pending_id)::text, 'null')"
    " || ',\"time_us\":' || time_us || ',\"timeout_us\":' || coalesce(timeout_us::text, 'null')"
    " || ',\"v\":1}', 'UTF8')"
)
ENTRY_VERIFY_SQL_CHECKED = f"SELECT height, idx, id, canonical, {SQL_CANONICAL} = canonical FROM ledger.entries"
PARALLEL_VERIFY_MIN_ENTRIES = 150_000


def _conn_dsn(conn: psycopg.Connection) -> str:
    password = conn.info.password
    return psycopg.conninfo.make_conninfo(conn.info.dsn, **({"password": password} if password else {}))


def verify_entry_range(
    dsn: str,
    snapshot: str,
    lo: int | None,
    hi: int | None,
    *,
    fetch_rows: int = 20_000,
    local_encoding: bool = False,
) -> EntryRoots:
    """The entry pass over heights lo..hi, reading the very snapshot the coordinating transaction exported
    (pg_export_snapshot), so every worker process sees the same ledger."""
    with psycopg.connect(dsn) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        conn.execute(psycopg.sql.SQL("SET TRANSACTION SNAPSHOT {}").format(psycopg.sql.Literal(snapshot)))
        return _entry_pass(conn, lo, hi, fetch_rows=fetch_rows, local_encoding=local_encoding)


def _entry_pass(
    conn: psycopg.Connection, lo: int | None, hi: int | None, *, fetch_rows: int, local_encoding: bool
) -> EntryRoots:
    bounds = (-(2**63) if lo is None else lo, 2**63 - 1 if hi is None else hi)
    where = " WHERE height >= %s AND height <= %s ORDER BY height, idx"
    with conn.cursor(name="verify_range", binary=True) as cur:
        cur.execute((ENTRY_VERIFY_SQL if local_encoding else ENTRY_VERIFY_SQL_CHECKED) + where, bounds)
        part = entry_roots(_stream(cur, fetch_rows), sql_checked=not local_encoding)
    p = part.problem
    if p is not None and p.kind == "entry_content" and not local_encoding:
        row = conn.execute(
            ENTRY_VERIFY_SQL + " WHERE height = %s AND idx = %s", (p.height, p.idx), binary=True
        ).fetchone()
        if row is not None:
            part.problem = replace(p, message=f"{p.message} ({describe_mismatch(row)})")
    return part


def _split_heights(links: list[tuple[int, int]], workers: int) -> list[tuple[int | None, int | None]]:
    """Height ranges holding about the same number of entries each (the first and last are open-ended,
    so entries without a link are still read)."""
    total = sum(n for _, n in links)
    bounds: list[tuple[int | None, int | None]] = []
    lo: int | None = None
    acc = 0
    for height, n in links:
        acc += n
        if len(bounds) < workers - 1 and acc >= total * (len(bounds) + 1) / workers:
            bounds.append((lo, height))
            lo = height + 1
    bounds.append((lo, None))
    return bounds


def verify_ledger(
    conn: psycopg.Connection,
    public_key_b64: str | None = None,
    *,
    fetch_rows: int = 20_000,
    workers: int | None = None,
    local_encoding: bool = False,
) -> LedgerReport:
    """`ledger verify`: re-hash everything (ledger/chain.py), check every checkpoint's signature and
    claims, every balance against its entries, Σ debits = Σ credits per ledger, and the CFT invariant.
    Reads one consistent snapshot (REPEATABLE READ), so concurrent appends do not disturb it. Large
    ledgers are split by height across worker processes that import the same snapshot
    (pg_export_snapshot); the link pass and every comparison with signed checkpoints stay here."""
    t0 = time.perf_counter()
    problems: list[str] = []
    chain_seconds = 0.0
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.commit()
    old_iso, old_ro = conn.isolation_level, conn.read_only
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    try:
        with conn.transaction():
            exported = conn.execute("SELECT pg_export_snapshot()").fetchone()
            assert exported is not None
            snapshot: str = exported[0]
            cps: dict[int, CheckpointRef] = {}
            docs = []
            for height, head, root, count, message, signature, stored_key in conn.execute(
                "SELECT height, head_hash, links_root, entry_count, message, signature, public_key "
                "FROM ledger.checkpoints ORDER BY height"
            ):
                doc = checkpoint_doc(bytes(message), bytes(signature), stored_key)
                docs.append(doc)
                m = doc["message"]
                if (m["height"], m["head_hash"], m["links_root"], m["entry_count"]) != (
                    height,
                    bytes(head).hex(),
                    bytes(root).hex(),
                    count,
                ):
                    problems.append(f"checkpoint at height {height}: columns differ from the signed message")
                cps[height] = CheckpointRef(
                    m["height"], bytes.fromhex(m["head_hash"]), bytes.fromhex(m["links_root"]), m["entry_count"]
                )
            # each signed by the key in force at its height (the first checkpoint's key, then the hand-overs')
            problems.extend(verify_checkpoint_chain(docs, key_handovers(conn), public_key_b64))
            t_chain = time.perf_counter()
            with conn.cursor(name="verify_links", binary=True) as lc:
                lc.execute(
                    "SELECT height, prev_hash, merkle_root, entry_count, hashed_bytes, link_hash "
                    "FROM ledger.links ORDER BY height"
                )
                links = list(_stream(lc, 50_000))
            approx = sum(link[3] for link in links)
            n_workers = (
                workers
                if workers is not None
                else (min(4, os.cpu_count() or 1) if approx >= PARALLEL_VERIFY_MIN_ENTRIES else 1)
            )
            if n_workers > 1:
                bounds = _split_heights([(link[0], link[3]) for link in links], n_workers)
                # fork is cheap, and safe when this process runs no other threads (the CLI, the benchmark);
                # a threaded server (uvicorn, the group committer) spawns fresh interpreters instead.
                ctx = get_context("fork" if threading.active_count() == 1 else "spawn")
                with ProcessPoolExecutor(len(bounds), mp_context=ctx) as pool:
                    entry_pass = partial(
                        verify_entry_range,
                        _conn_dsn(conn),
                        snapshot,
                        fetch_rows=fetch_rows,
                        local_encoding=local_encoding,
                    )
                    parts = list(pool.map(entry_pass, [b[0] for b in bounds], [b[1] for b in bounds]))
            else:
                parts = [_entry_pass(conn, None, None, fetch_rows=fetch_rows, local_encoding=local_encoding)]
            chain = verify_links(links, parts, cps)
            chain_seconds = time.perf_counter() - t_chain
            if chain.ok:
                problems += _check_balances(conn)
    finally:
        conn.isolation_level, conn.read_only = old_iso, old_ro
    return LedgerReport(chain, problems, time.perf_counter() - t0, chain_seconds)


def _stream(cur: psycopg.Cursor, size: int) -> Iterator[Any]:
    """Rows of a server-side cursor in large chunks (much faster than row-by-row iteration)."""
    while True:
        rows = cur.fetchmany(size)
        if not rows:
            return
        yield from rows


def _check_balances(conn: psycopg.Connection) -> list[str]:
    problems = []
    for row in conn.execute(
        """
        WITH legs AS (
            SELECT e.debit_account AS account,
                   CASE WHEN e.kind IN ('single','post') THEN e.amount ELSE 0 END AS dp, 0::bigint AS cp,
                   CASE WHEN e.kind = 'pending' THEN e.amount WHEN e.kind IN ('post','void','expire') THEN -p.amount
                        ELSE 0 END AS dpe, 0::bigint AS cpe
            FROM ledger.entries e LEFT JOIN ledger.entries p ON p.id = e.pending_id
            UNION ALL
            SELECT e.credit_account, 0, CASE WHEN e.kind IN ('single','post') THEN e.amount ELSE 0 END, 0,
                   CASE WHEN e.kind = 'pending' THEN e.amount WHEN e.kind IN ('post','void','expire') THEN -p.amount
                        ELSE 0 END
            FROM ledger.entries e LEFT JOIN ledger.entries p ON p.id = e.pending_id
        ), sums AS (
            SELECT account, sum(dp) dp, sum(cp) cp, sum(dpe) dpe, sum(cpe) cpe FROM legs GROUP BY account
        )
        SELECT coalesce(b.account, s.account), b.debits_posted, b.credits_posted, b.debits_pending, b.credits_pending,
               s.dp, s.cp, s.dpe, s.cpe
        FROM ledger.balances b FULL JOIN sums s ON s.account = b.account
        WHERE (coalesce(b.debits_posted, 0), coalesce(b.credits_posted, 0), coalesce(b.debits_pending, 0),
               coalesce(b.credits_pending, 0))
           IS DISTINCT FROM (coalesce(s.dp, 0), coalesce(s.cp, 0), coalesce(s.dpe, 0), coalesce(s.cpe, 0))
        ORDER BY 1 LIMIT 5
        """
    ):
        problems.append(
            f"balance of {row[0]} (debits/credits posted {row[1]}/{row[2]}, pending {row[3]}/{row[4]}) "
            f"does not equal the sum of its entries ({row[5]}/{row[6]}, pending {row[7]}/{row[8]})"
        )
    for ledger, dp, cp, dpe, cpe in conn.execute(
        "SELECT a.ledger, sum(b.debits_posted), sum(b.credits_posted), sum(b.debits_pending), sum(b.credits_pending) "
        "FROM ledger.balances b JOIN ledger.accounts a ON a.name = b.account GROUP BY a.ledger ORDER BY 1"
    ):
        if dp != cp or dpe != cpe:
            problems.append(f"ledger {ledger}: Σ debits {dp} ≠ Σ credits {cp} (pending {dpe} / {cpe})")
    for provider, t in provider_tokens(conn).items():
        if not t.holds:
            problems.append(
                f"CFT invariant broken for {provider}: minted {t.minted} ≠ outstanding {t.outstanding} "
                f"+ redeemed {t.redeemed} + expired {t.expired}"
            )
    return problems
