"""Ledger benchmark: strict-chain transfer throughput vs raw INSERT, and full verification rate.

    .venv/bin/python bench/ledger.py [--work 1:8000,10:40000,100:120000] [--writers 1,4,8]
                                     [--verify-entries 1000000]

Everything runs in one process against one PostgreSQL server (DATABASE_URL, default
postgresql://postgres@127.0.0.1:5432/postgres) in a dedicated database that is created fresh and
dropped at the end. Prints JSON and writes bench/results/ledger.json.

What is measured (all in the same run, on the same server):
- strict chain: W writer threads (W = 1, 4, 8) each submit requests of k transfers (k = 1, 10, 100; a
  request is what one client call carries, e.g. POST /api/v1/transfers/batch) and wait for each answer,
  a fixed total of transfers per configuration, generated before the clock starts; through
  ledger.group_commit.GroupCommitter (one connection unless --connections says otherwise) — i.e. the full
  path: idempotency by transfer id (unique index; looked up on retry), balance rows locked FOR UPDATE
  in sorted order, flag checks on the balances as they are under those locks, canonical RFC 8785
  encoding, RFC 6962 Merkle root, advisory chain lock, one link per batch, synchronous commit.
- raw insert (the limit): the same W writers insert the same entry rows (same columns, canonical bytes
  and indexes, into a copy of ledger.entries without triggers), one INSERT + COMMIT per request, with no
  locks, no balance checks and no hashing. Also reported: raw_grouped, the same rows through the same
  group-commit batching (one transaction per batch) — what batching alone buys without the ledger's work.
- verification: `ledger verify` (ledger.verify.verify_ledger) over a chain of ≥ 1M entries: every
  entry re-encoded and compared with its hashed bytes, every leaf, Merkle root and link re-hashed,
  checkpoints checked, then every balance compared with the sum of its entries in SQL.
The machine's 2 cores are shared with other work; the load average is recorded with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import random
import sys
import threading
import time
import uuid
from hashlib import sha256
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kernel import clock, db  # noqa: E402
from ledger import accounts as acct  # noqa: E402
from ledger.accounts_db import ensure_accounts  # noqa: E402
from ledger.chain import GENESIS_PREV_HASH  # noqa: E402
from ledger.checkpoints import create_checkpoint, ledger_keypair  # noqa: E402
from ledger.db import iso  # noqa: E402
from ledger.group_commit import GroupCommitter  # noqa: E402
from ledger.merkle import leaf_hash, root_from_leaf_hashes  # noqa: E402
from ledger.transfers import Entry, TransferSpec  # noqa: E402
from ledger.verify import verify_ledger  # noqa: E402

N_ACCOUNTS = 64
NOTES = (
    "Load averages include this benchmark's own process and PostgreSQL backends (2 cores). "
    "raw_insert = the same entry rows (same columns, canonical bytes, indexes) inserted by the same writers, "
    "one INSERT+COMMIT per request, no locks/balances/hashing; raw_grouped = the same rows through the same "
    "group-commit batching. Strict chain = full append path (row locks in sorted order, flag checks, RFC 8785 "
    "encoding, RFC 6962 root, advisory chain lock last, one link per batch, synchronous commit)."
)
RAW_COLUMNS = (
    "height, idx, id, ledger, debit_account, credit_account, amount, kind, pending_id, timeout_us, "
    "time_us, memo, canonical"
)


def make_db(server: str) -> str:
    name = f"fm_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    info = psycopg.conninfo.conninfo_to_dict(server)
    info["dbname"] = name
    return psycopg.conninfo.make_conninfo(**info)


def drop_db(server: str, conninfo: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(conninfo)["dbname"]
    db.dispose_engines()
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def url_of(conninfo: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(conninfo)
    host = info.get("host", "127.0.0.1")
    return f"postgresql://{info.get('user', 'postgres')}@{host}:{info.get('port', 5432)}/{info['dbname']}"


CASH = [acct.bap_cash(f"bench{i}") for i in range(N_ACCOUNTS)]
REV = [acct.provider_revenue(f"bench{i}") for i in range(N_ACCOUNTS)]


def requests_for(writer: int, k: int, run: str):  # -> Iterator[list[TransferSpec]]
    rng = random.Random(hash((writer, k, run)))
    n = 0
    while True:
        yield [
            TransferSpec(
                f"{run}-w{writer}-{n + i}",
                "single",
                "GBP",
                rng.choice(CASH),
                rng.choice(REV),
                rng.randint(1, 10_000),
                memo="bench",
            )
            for i in range(k)
        ]
        n += k


def plan_work(writers: int, k: int, total: int, run: str) -> list[list[list[TransferSpec]]]:
    """Each writer's requests, generated before the clock starts (client-side work is not measured)."""
    per_writer = max(1, total // (writers * k))
    out = []
    for w in range(writers):
        gen = requests_for(w, k, run)
        out.append([next(gen) for _ in range(per_writer)])
    return out


def run_writers(work: list, submit) -> tuple[int, float]:  # submit(writer, request) in each writer's thread
    """Fixed work: every writer submits its requests one at a time, waiting for each answer; the clock
    runs from a common start until the last writer is done."""
    writers = len(work)
    errors: list[BaseException] = []
    barrier = threading.Barrier(writers + 1)

    def body(w: int) -> None:
        try:
            barrier.wait()
            for req in work[w]:
                submit(w, req)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(w,)) for w in range(writers)]
    [t.start() for t in threads]
    barrier.wait()
    t0 = time.perf_counter()
    [t.join() for t in threads]
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return sum(len(r) for reqs in work for r in reqs), elapsed


def bench_chain(conninfo: str, work: list, connections: int | None) -> dict:
    committer = GroupCommitter(conninfo) if connections is None else GroupCommitter(conninfo, connections=connections)

    def submit(w: int, req: list[TransferSpec]) -> None:
        res = committer.submit(req)
        if res.status != "created":
            raise RuntimeError(f"unexpected {res.status}: {res.error}")

    n, elapsed = run_writers(work, submit)
    committer.close()
    return {
        "transfers": n,
        "seconds": round(elapsed, 3),
        "transfers_per_s": round(n / elapsed),
        "links": committer.batches,
        "transfers_per_link": round(committer.transfers / max(committer.batches, 1), 2),
    }


def raw_rows(req: list[TransferSpec]) -> list[tuple]:
    now = time.time_ns() // 1000
    rows = []
    for i, s in enumerate(req):
        e = Entry(
            s.id, "GBP", s.debit_account or "", s.credit_account or "", s.amount or 0, "single", None, None, now, s.memo
        )
        rows.append(
            (
                0,
                i,
                e.id,
                e.ledger,
                e.debit_account,
                e.credit_account,
                e.amount,
                e.kind,
                None,
                None,
                now,
                e.memo,
                e.canonical(),
            )
        )
    return rows


def insert_raw(conn: psycopg.Connection, rows: list[tuple]) -> None:
    cols = list(zip(*rows, strict=True))
    conn.execute(
        f"INSERT INTO ledger.bench_raw ({RAW_COLUMNS}) SELECT * FROM unnest(%b::int8[], %b::int4[], %b::text[], "
        "%b::text[], %b::text[], %b::text[], %b::int8[], %b::text[], %b::text[], %b::int8[], %b::int8[], "
        "%b::text[], %b::bytea[])",
        [list(c) for c in cols],
    )


def bench_raw(conninfo: str, work: list) -> dict:
    """Each writer: INSERT its request's rows and COMMIT, on its own connection (no ledger logic)."""
    rows = [[raw_rows(req) for req in reqs] for reqs in work]  # same rows, encoded before the clock starts
    conns = [psycopg.connect(conninfo, autocommit=True) for _ in work]
    position = [0] * len(work)

    def submit(w: int, req: list[TransferSpec]) -> None:
        with conns[w].transaction():
            insert_raw(conns[w], rows[w][position[w]])
        position[w] += 1

    n, elapsed = run_writers(work, submit)
    for c in conns:
        c.close()
    return {"transfers": n, "seconds": round(elapsed, 3), "transfers_per_s": round(n / elapsed)}


def bench_raw_grouped(conninfo: str, work: list, connections: int) -> dict:
    """The same rows through the same kind of group commit (one transaction per batch), no ledger logic."""
    rows = [[raw_rows(req) for req in reqs] for reqs in work]
    position = [0] * len(work)
    q: queue.Queue = queue.Queue()
    halt = threading.Event()

    def committer() -> None:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            while not halt.is_set():
                try:
                    first = q.get(timeout=0.05)
                except queue.Empty:
                    continue
                batch = [first]
                while True:
                    try:
                        batch.append(q.get_nowait())
                    except queue.Empty:
                        break
                with conn.transaction():
                    insert_raw(conn, [r for _, rs in batch for r in rs])
                for ev, _ in batch:
                    ev.set()

    threads = [threading.Thread(target=committer, daemon=True) for _ in range(connections)]
    [t.start() for t in threads]

    def submit(w: int, req: list[TransferSpec]) -> None:
        ev = threading.Event()
        q.put((ev, rows[w][position[w]]))
        position[w] += 1
        ev.wait()

    n, elapsed = run_writers(work, submit)
    halt.set()
    [t.join() for t in threads]
    return {"transfers": n, "seconds": round(elapsed, 3), "transfers_per_s": round(n / elapsed)}


def bulk_chain(conninfo: str, n_entries: int, batch: int = 100) -> float:
    """Append a valid chain of n_entries quickly (bulk COPY of entries and links computed here with the
    same canonical encoding, Merkle roots and link hashes), then set balances to match. Used only to
    give the verifier ≥ 1M entries to check; the throughput runs above use the real append path."""
    t0 = time.perf_counter()
    rng = random.Random(7)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        head = conn.execute("SELECT height, link_hash FROM ledger.links ORDER BY height DESC LIMIT 1").fetchone()
        height = 0 if head is None else head[0]
        prev = GENESIS_PREV_HASH if head is None else bytes(head[1])
        now = time.time_ns() // 1000
        made = 0
        with conn.transaction():
            cur = conn.cursor()
            with cur.copy(f"COPY ledger.entries ({RAW_COLUMNS}) FROM STDIN") as ecopy:
                links = []
                while made < n_entries:
                    height += 1
                    size = min(batch, n_entries - made)
                    leaves = []
                    for i in range(size):
                        e = Entry(
                            f"bulk-{height}-{i}",
                            "GBP",
                            rng.choice(CASH),
                            rng.choice(REV),
                            rng.randint(1, 10_000),
                            "single",
                            None,
                            None,
                            now + made,
                            "bulk",
                        )
                        c = e.canonical()
                        leaves.append(leaf_hash(c))
                        ecopy.write_row(
                            (
                                height,
                                i,
                                e.id,
                                e.ledger,
                                e.debit_account,
                                e.credit_account,
                                e.amount,
                                e.kind,
                                None,
                                None,
                                e.time_us,
                                e.memo,
                                c,
                            )
                        )
                        made += 1
                    root = root_from_leaf_hashes(leaves)
                    pre = prev + height.to_bytes(8, "big") + root
                    prev = sha256(pre).digest()
                    links.append((height, pre[:32], root, size, pre, prev))
            with cur.copy(
                "COPY ledger.links (height, prev_hash, merkle_root, entry_count, hashed_bytes, link_hash) FROM STDIN"
            ) as lcopy:
                for row in links:
                    lcopy.write_row(row)
            conn.execute("""
                UPDATE ledger.balances b SET debits_posted = coalesce(d.s, 0), credits_posted = coalesce(c.s, 0)
                FROM ledger.accounts a
                LEFT JOIN (SELECT debit_account AS acc, sum(amount) s FROM ledger.entries GROUP BY 1) d
                       ON d.acc = a.name
                LEFT JOIN (SELECT credit_account AS acc, sum(amount) s FROM ledger.entries GROUP BY 1) c
                       ON c.acc = a.name
                WHERE b.account = a.name""")
        conn.execute("VACUUM ANALYZE ledger.entries")
        conn.execute("VACUUM ANALYZE ledger.links")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", default=os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    ap.add_argument(
        "--work",
        default="1:8000,10:40000,100:120000",
        help="request size:total transfers per configuration (split evenly across writers)",
    )
    ap.add_argument("--writers", default="1,4,8")
    ap.add_argument(
        "--connections", type=int, default=None, help="group-commit connections (default: GroupCommitter's, 1)"
    )
    ap.add_argument("--verify-entries", type=int, default=1_000_000)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "ledger.json"))
    args = ap.parse_args()

    server = db.libpq_url(args.server)
    conninfo = make_db(server)
    os.environ["FLEXMARKET_HOME"] = os.environ.get("FLEXMARKET_HOME") or str(Path("/tmp") / f"fm-bench-{os.getpid()}")
    load_before = os.getloadavg()
    results: dict = {
        "started_at": iso(clock.now()),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in load_before],
    }
    try:
        url = url_of(conninfo)
        db.upgrade(url)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            with conn.transaction():
                ensure_accounts(conn, CASH + REV)
            conn.execute(
                "CREATE TABLE ledger.bench_raw (LIKE ledger.entries INCLUDING DEFAULTS INCLUDING CONSTRAINTS "
                "INCLUDING INDEXES)"
            )
            conn.execute("ALTER TABLE ledger.bench_raw DROP CONSTRAINT bench_raw_pkey")  # height is 0 for raw rows
            server_settings = {
                k: conn.execute(f"SHOW {k}").fetchone()[0]
                for k in ("synchronous_commit", "fsync", "wal_sync_method", "shared_buffers", "server_version")
            }
        results["postgres"] = server_settings
        results["group_commit_connections"] = args.connections or 1
        writers = [int(w) for w in args.writers.split(",")]
        sizes = [tuple(int(x) for x in part.split(":")) for part in args.work.split(",")]
        rows = []
        for k, total in sizes:
            for w in writers:
                chain = bench_chain(conninfo, plan_work(w, k, total, f"c{w}k{k}"), args.connections)
                raw = bench_raw(conninfo, plan_work(w, k, total, f"r{w}k{k}"))
                grouped = bench_raw_grouped(conninfo, plan_work(w, k, total, f"g{w}k{k}"), args.connections or 1)
                row = {
                    "writers": w,
                    "request_size": k,
                    "strict_chain_transfers_per_s": chain["transfers_per_s"],
                    "raw_insert_transfers_per_s": raw["transfers_per_s"],
                    "ratio_chain_to_raw": round(chain["transfers_per_s"] / raw["transfers_per_s"], 3),
                    "raw_grouped_transfers_per_s": grouped["transfers_per_s"],
                    "ratio_chain_to_raw_grouped": round(chain["transfers_per_s"] / grouped["transfers_per_s"], 3),
                    "chain_transfers_per_link": chain["transfers_per_link"],
                    "loadavg_1m": round(os.getloadavg()[0], 2),
                }
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
        results["throughput"] = rows

        # verification of ≥ 1M entries
        with psycopg.connect(conninfo, autocommit=True) as conn:
            existing = conn.execute("SELECT count(*) FROM ledger.entries").fetchone()[0]
        need = max(0, args.verify_entries - existing)
        gen_s = bulk_chain(conninfo, need) if need else 0.0
        with psycopg.connect(conninfo, autocommit=True) as conn:
            with conn.transaction():
                create_checkpoint(conn, ledger_keypair())
            t0 = time.perf_counter()
            report = verify_ledger(conn)
            total_s = time.perf_counter() - t0
            local = verify_ledger(conn, local_encoding=True)
        if not (report.ok and local.ok):
            raise SystemExit(f"verification failed: {report.summary()} / {local.summary()}")
        chain_s = report.chain_seconds
        results["verify"] = {
            "mode": "columns re-encoded by the verifier's SQL expression; every leaf, root, link re-hashed here",
            "workers": min(4, os.cpu_count() or 1),
            "local_encoding_chain_entries_per_s": round(local.chain.entry_count / local.chain_seconds),
            "entries": report.chain.entry_count,
            "links": report.chain.link_count,
            "chain_rehash_seconds": round(chain_s, 3),
            "chain_entries_per_s": round(report.chain.entry_count / chain_s),
            "total_seconds_incl_balance_check": round(total_s, 3),
            "entries_per_s_incl_balance_check": round(report.chain.entry_count / total_s),
            "bulk_generation_seconds": round(gen_s, 1),
            "loadavg_1m": round(os.getloadavg()[0], 2),
        }
        print(json.dumps(results["verify"]), file=sys.stderr, flush=True)
    finally:
        drop_db(server, conninfo)
    results["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["notes"] = NOTES
    # The acceptance point: at 8 writers, BOTH targets in the same row (one configuration).
    # Reported for every request size measured, including those that miss (at 1-transfer requests even
    # raw INSERT stays below 5,000/s on this machine: every request is a commit).
    eight = [r for r in results["throughput"] if r["writers"] == 8]
    fast = {str(r["request_size"]): r["strict_chain_transfers_per_s"] >= 5000 for r in eight}
    near_raw = {str(r["request_size"]): r["ratio_chain_to_raw"] >= 0.5 for r in eight}
    results["targets"] = {
        "transfers_per_s_at_8_writers_ge_5000": fast,
        "ratio_to_raw_at_8_writers_ge_0_5": near_raw,
        "both_in_one_row_at_8_writers": {k: fast[k] and near_raw[k] for k in fast},
        "request_sizes_meeting_both_at_8_writers": [int(k) for k in fast if fast[k] and near_raw[k]],
        "verify_entries_per_s_ge_200000": results["verify"]["chain_entries_per_s"] >= 200_000,
    }
    text = json.dumps(results, indent=2)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
