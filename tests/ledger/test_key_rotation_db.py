"""The ledger's signing key: never silently replaced where checkpoints were signed with another; rotated
only by `flexmarket ledger rotate-key`, whose hand-over `ledger verify` and offline statement checks follow."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from beckn.keys import KeyPair
from kernel.config import environment
from ledger import accounts as acct
from ledger.accounts_db import ensure_accounts
from ledger.checkpoints import LedgerKeyError, create_checkpoint, key_path, ledger_keypair, link_hashes
from ledger.cli import ledger_app
from ledger.db import connect, us
from ledger.main import create_app
from ledger.merkle import leaf_hash, root_from_leaf_hashes
from ledger.proofs import checkpoint_message, sign_checkpoint, verify_statement
from ledger.statement_csv import statement_csv, statement_from_csv
from ledger.statements import statement
from ledger.store import append_one
from ledger.tasks import checkpoint as checkpoint_task
from ledger.transfers import TransferSpec
from ledger.verify import verify_ledger

CASH, REV = acct.bap_cash("b-rot"), acct.provider_revenue("p-rot")
runner = CliRunner()


@pytest.fixture
def ledger(fresh_db: str, tmp_path: Path) -> Iterator[psycopg.Connection]:
    """An empty ledger of its own, with FLEXMARKET_HOME (its key) in a folder of its own."""
    with environment({"DATABASE_URL": fresh_db, "FLEXMARKET_HOME": str(tmp_path / "home")}):
        conn = connect(fresh_db)
        with conn.transaction():
            ensure_accounts(conn, [CASH, REV])
        yield conn
        conn.close()


def grow(conn: psycopg.Connection, tag: str, n: int = 2) -> None:
    for i in range(n):
        with conn.transaction():
            append_one(conn, [TransferSpec(f"{tag}-{i}", "single", "GBP", CASH, REV, 10 + i)])


def test_missing_key_with_checkpoints_is_refused_naming_the_file(ledger: psycopg.Connection) -> None:
    grow(ledger, "a")
    with ledger.transaction():
        assert create_checkpoint(ledger) is not None  # the first key is made for a ledger without checkpoints
    path = key_path()
    assert path.is_file()
    path.unlink()
    grow(ledger, "b")
    with pytest.raises(LedgerKeyError, match=str(path)):
        ledger_keypair()
    with pytest.raises(LedgerKeyError, match=str(path)), ledger.transaction():  # the Celery task's use case
        create_checkpoint(ledger)
    with pytest.raises(LedgerKeyError, match=str(path)):
        checkpoint_task()  # the Celery task itself
    r = runner.invoke(ledger_app, ["checkpoint"])
    assert r.exit_code == 1 and str(path) in r.output, r.output
    r = runner.invoke(ledger_app, ["public-key"])
    assert r.exit_code == 1 and str(path) in r.output, r.output
    with pytest.raises(LedgerKeyError, match=str(path)), TestClient(create_app()):  # service start-up
        pass
    assert not path.exists()  # no new key was made anywhere on the way
    assert ledger.execute("SELECT count(*) FROM ledger.checkpoints").fetchone() == (1,)


def _statement(conn: psycopg.Connection) -> dict:
    start, end = datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC) + timedelta(seconds=5)
    with conn.transaction():
        return statement(conn, REV, start, end)


def test_rotate_key_then_verify_and_statements_follow_the_hand_over(ledger: psycopg.Connection) -> None:
    grow(ledger, "a")
    with ledger.transaction():
        create_checkpoint(ledger)
    old = ledger_keypair()
    r = runner.invoke(ledger_app, ["rotate-key"])
    assert r.exit_code == 0 and "handed over" in r.output, r.output
    new = ledger_keypair()
    assert new.signing_public_key_b64 != old.signing_public_key_b64
    assert new.signing_public_key_b64 in r.output
    retired = key_path().with_name(f"ledger-retired-{old.unique_key_id}.json")
    assert json.loads(retired.read_text())["signing_public_key"] == old.signing_public_key_b64
    # right after the rotation a statement's checkpoint is the old key's: the hand-over lets the new key verify it
    before = _statement(ledger)
    assert before["checkpoint"]["public_key_b64"] == old.signing_public_key_b64 and before["key_handovers"]
    for key in (old, new):
        assert verify_statement(before, key.signing_public_key_b64).ok
    # the old key signs nothing more; the new one signs above the hand-over's height
    grow(ledger, "b")
    with pytest.raises(LedgerKeyError), ledger.transaction():
        create_checkpoint(ledger, old)
    assert runner.invoke(ledger_app, ["checkpoint"]).exit_code == 0
    after = _statement(ledger)
    assert after["checkpoint"]["public_key_b64"] == new.signing_public_key_b64
    for key in (old, new):  # either key, JSON and CSV
        assert verify_statement(after, key.signing_public_key_b64).ok
        assert verify_statement(statement_from_csv(statement_csv(after)), key.signing_public_key_b64).ok
    stranger = KeyPair.generate().signing_public_key_b64
    assert not verify_statement(after, stranger).ok
    for key in (None, old.signing_public_key_b64, new.signing_public_key_b64):
        report = verify_ledger(ledger, key)
        assert report.ok, report.summary()
    v = runner.invoke(ledger_app, ["verify"])
    assert v.exit_code == 0 and "ledger intact" in v.output, v.output
    assert not verify_ledger(ledger, stranger).ok
    # a second rotation before the chain grows is refused; after it grows, it chains on
    again = runner.invoke(ledger_app, ["rotate-key"])
    assert again.exit_code == 0, again.output  # the chain grew since the first hand-over
    third = ledger_keypair()
    refused = runner.invoke(ledger_app, ["rotate-key"])
    assert refused.exit_code == 1 and "has not grown" in refused.output
    assert ledger_keypair().signing_public_key_b64 == third.signing_public_key_b64
    grow(ledger, "c")
    assert runner.invoke(ledger_app, ["checkpoint"]).exit_code == 0
    last = _statement(ledger)
    for key in (old, new, third):
        assert verify_statement(last, key.signing_public_key_b64).ok
    assert verify_ledger(ledger, old.signing_public_key_b64).ok


def test_checkpoint_signed_by_an_unannounced_key_is_reported(ledger: psycopg.Connection) -> None:
    grow(ledger, "a")
    with ledger.transaction():
        create_checkpoint(ledger)
    grow(ledger, "b")
    # what a silently regenerated key would have done: sign the next checkpoint without any hand-over
    intruder = KeyPair.generate()
    head = ledger.execute("SELECT height, link_hash FROM ledger.links ORDER BY height DESC LIMIT 1").fetchone()
    assert head is not None
    height = int(head[0])
    message = checkpoint_message(
        height=height,
        head_hash=bytes(head[1]),
        links_root=root_from_leaf_hashes([leaf_hash(h) for h in link_hashes(ledger, height)]),
        entry_count=int(ledger.execute("SELECT sum(entry_count) FROM ledger.links").fetchone()[0]),  # type: ignore[index]
        time_us=us(datetime.now(UTC)),
        key_id=intruder.unique_key_id,
    )
    doc = sign_checkpoint(intruder.signing_private_key, message)
    with ledger.transaction():
        ledger.execute(
            "INSERT INTO ledger.checkpoints (height, head_hash, links_root, entry_count, time_us, key_id, public_key, "
            "message, signature) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                height,
                bytes(head[1]),
                bytes.fromhex(message["links_root"]),
                message["entry_count"],
                message["time_us"],
                intruder.unique_key_id,
                intruder.signing_public_key_b64,
                base64.b64decode(doc["signed_bytes_b64"]),
                base64.b64decode(doc["signature_b64"]),
            ),
        )
    for key in (None, ledger_keypair().signing_public_key_b64, intruder.signing_public_key_b64):
        report = verify_ledger(ledger, key)
        assert not report.ok
        assert f"checkpoint at height {height}" in report.summary() and "no hand-over" in report.summary()
    v = runner.invoke(ledger_app, ["verify"])
    assert v.exit_code == 1 and "no hand-over put in force" in v.output, v.output
    # and the intruder key cannot make itself the ledger's key
    grow(ledger, "c")
    with pytest.raises(LedgerKeyError), ledger.transaction():
        create_checkpoint(ledger, intruder)
