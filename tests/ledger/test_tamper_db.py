"""Tamper evidence on a real database: a superuser disables the append-only triggers, alters the chain,
and `ledger verify` (service and CLI) must catch it and name the first bad link or entry."""

from __future__ import annotations

from collections.abc import Iterator
from hashlib import sha256

import psycopg
import pytest
from typer.testing import CliRunner

from kernel.config import reset_settings
from ledger import accounts as acct
from ledger.accounts_db import ensure_accounts
from ledger.checkpoints import chain_head, create_checkpoint
from ledger.cli import ledger_app
from ledger.db import connect
from ledger.merkle import leaf_hash, root_from_leaf_hashes
from ledger.store import append_one
from ledger.transfers import TransferSpec
from ledger.verify import LedgerReport, verify_ledger

CASH, REV, OTHER = acct.bap_cash("b1"), acct.provider_revenue("p1"), acct.provider_revenue("p2")


@pytest.fixture
def chain(fresh_db: str, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[psycopg.Connection]:
    monkeypatch.setenv("DATABASE_URL", fresh_db)
    monkeypatch.setenv("REDIS_URL", redis_url)
    reset_settings()
    conn = connect(fresh_db)
    with conn.transaction():
        ensure_accounts(conn, [CASH, REV, OTHER])
    for h in range(6):
        with conn.transaction():
            append_one(
                conn,
                [
                    TransferSpec(
                        f"t{h}-{i}", "single", "GBP", CASH, REV if i % 2 else OTHER, 100 + h * 10 + i, memo=f"batch {h}"
                    )
                    for i in range(4)
                ],
            )
        if h == 3:
            with conn.transaction():
                create_checkpoint(conn)
    with conn.transaction():
        append_one(conn, [TransferSpec("pend", "pending", "GBP", CASH, REV, 50)])
    with conn.transaction():
        append_one(conn, [TransferSpec("post", "post", pending_id="pend", amount=20)])
    assert verify_ledger(conn).ok
    superuser = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    if not superuser or not superuser[0]:
        pytest.skip("tamper tests need a superuser to disable the append-only triggers")
    conn.commit()
    yield conn
    conn.close()
    reset_settings()


def tamper(conn: psycopg.Connection, *sqls: str) -> None:
    with conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")  # user triggers off: superuser only
        for sql in sqls:
            conn.execute(sql)


def verify(conn: psycopg.Connection) -> LedgerReport:
    report = verify_ledger(conn)
    assert not report.ok
    # the parallel verifier (worker processes over height ranges, one exported snapshot) and the local
    # re-encoding mode find the same first problem
    for other in (verify_ledger(conn, workers=3), verify_ledger(conn, local_encoding=True)):
        assert not other.ok
        assert (other.chain.problem, other.problems) == (report.chain.problem, report.problems)
    return report


def cli_verify_fails_naming(text: str) -> None:
    result = CliRunner().invoke(ledger_app, ["verify"])
    assert result.exit_code == 1, result.output
    assert text in result.output


def test_intact_chain_cli_exit_0(chain: psycopg.Connection) -> None:
    head = chain_head(chain)
    parallel = verify_ledger(chain, workers=3)
    assert parallel.ok and parallel.chain.entry_count == head["entry_count"]
    result = CliRunner().invoke(ledger_app, ["verify"])
    assert result.exit_code == 0, result.output
    assert f"{head['entry_count']} entries" in result.output and head["head_hash"] in result.output


def test_edited_amount(chain: psycopg.Connection) -> None:
    tamper(chain, "UPDATE ledger.entries SET amount = amount + 1 WHERE id = 't2-1'")
    p = verify(chain).chain.problem
    assert p.kind == "entry_content" and p.entry_id == "t2-1" and p.height == 3
    assert "amount: column=122 hashed=121" in p.message
    cli_verify_fails_naming("entry t2-1 (link 3, leaf 1)")


def test_edited_amount_and_its_hashed_bytes(chain: psycopg.Connection) -> None:
    tamper(
        chain,
        "UPDATE ledger.entries SET amount = 999, canonical = convert_to(replace(convert_from(canonical, "
        "'UTF8'), '\"amount\":121', '\"amount\":999'), 'UTF8') WHERE id = 't2-1'",
    )
    p = verify(chain).chain.problem
    assert p.kind == "merkle_root" and p.height == 3
    cli_verify_fails_naming("link 3")


def test_deleted_row(chain: psycopg.Connection) -> None:
    tamper(chain, "DELETE FROM ledger.entries WHERE id = 't4-1'")
    p = verify(chain).chain.problem
    assert p.kind == "entry_missing" and p.height == 5 and "leaf index 1 is missing" in p.message
    cli_verify_fails_naming("link 5: leaf index 1 is missing")


def test_deleted_last_row_of_a_link(chain: psycopg.Connection) -> None:
    tamper(chain, "DELETE FROM ledger.entries WHERE id = 't1-3'")
    p = verify(chain).chain.problem
    assert p.kind == "entry_count" and p.height == 2


def test_reordered_rows(chain: psycopg.Connection) -> None:
    tamper(
        chain,
        "UPDATE ledger.entries SET idx = 99 WHERE id = 't3-0'",
        "UPDATE ledger.entries SET idx = 0 WHERE id = 't3-2'",
        "UPDATE ledger.entries SET idx = 2 WHERE id = 't3-0'",
    )
    p = verify(chain).chain.problem
    assert p.kind == "merkle_root" and p.height == 4
    cli_verify_fails_naming("link 4: the Merkle root")


def test_forged_link_hash(chain: psycopg.Connection) -> None:
    tamper(chain, f"UPDATE ledger.links SET link_hash = '\\x{sha256(b'forged').hexdigest()}' WHERE height = 2")
    p = verify(chain).chain.problem
    assert p.kind == "link_hash" and p.height == 2
    cli_verify_fails_naming("link 2: stored link hash")


def test_consistently_rehashed_chain_is_caught_by_the_signed_checkpoint(chain: psycopg.Connection) -> None:
    # The strongest attacker: change an entry and recompute every root and link hash after it.
    tamper(
        chain,
        "UPDATE ledger.entries SET amount = 999, canonical = convert_to(replace(convert_from(canonical, "
        "'UTF8'), '\"amount\":121', '\"amount\":999'), 'UTF8') WHERE id = 't2-1'",
    )
    links = chain.execute("SELECT height FROM ledger.links ORDER BY height").fetchall()
    prev = bytes(32)
    updates = []
    for (h,) in links:
        leaves = [
            leaf_hash(bytes(c))
            for (c,) in chain.execute("SELECT canonical FROM ledger.entries WHERE height = %s ORDER BY idx", (h,))
        ]
        root = root_from_leaf_hashes(leaves)
        pre = prev + h.to_bytes(8, "big") + root
        prev = sha256(pre).digest()
        updates.append((root, pre, prev, pre[:32], h))
    chain.rollback()
    with chain.transaction():
        chain.execute("SET LOCAL session_replication_role = replica")
        with chain.cursor() as cur:
            cur.executemany(
                "UPDATE ledger.links SET merkle_root = %s, hashed_bytes = %s, link_hash = %s, "
                "prev_hash = %s WHERE height = %s",
                updates,
            )
    p = verify(chain).chain.problem
    assert p.kind == "checkpoint" and p.height == 4
    cli_verify_fails_naming("signed checkpoint at height 4")


def test_forged_checkpoint_signature(chain: psycopg.Connection) -> None:
    tamper(chain, "UPDATE ledger.checkpoints SET signature = '\\x" + "00" * 64 + "'")
    report = verify(chain)
    assert report.chain.ok and "signature" in report.problems[0]
    cli_verify_fails_naming("checkpoint at height 4")


def test_edited_balance(chain: psycopg.Connection) -> None:
    tamper(chain, f"UPDATE ledger.balances SET credits_posted = credits_posted + 5 WHERE account = '{REV}'")
    report = verify(chain)
    assert report.chain.ok and REV in report.problems[0]
    cli_verify_fails_naming(f"balance of {REV}")
