"""The two ways `ledger verify` checks that stored columns match the hashed bytes agree: re-encoding in
Python (ledger/canonical.py) and the verifier's SQL expression (ledger/verify.py SQL_CANONICAL)."""

from __future__ import annotations

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grid.money import MAX_SAFE_INTEGER
from ledger import accounts as acct
from ledger.accounts_db import ensure_accounts
from ledger.canonical import encode_entry
from ledger.db import connect
from ledger.store import append_one
from ledger.transfers import TransferSpec
from ledger.verify import SQL_CANONICAL, verify_ledger

HARD = [
    'quote " backslash \\ slash /',
    "tab\tnewline\nreturn\r",
    "\x01\x08\x0c\x1f\x7f",
    "é ü ß 漢字 😀",
    "\u2028\u2029\u00ad",
    "",
    " spaces ",
    '{"json": [1]}',
]
pg_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30)
safe_int = st.integers(min_value=-MAX_SAFE_INTEGER, max_value=MAX_SAFE_INTEGER)


@pytest.fixture(scope="module")
def conn(ledger_url: str):
    c = connect(ledger_url)
    yield c
    c.close()


def sql_encode(conn: psycopg.Connection, **f: object) -> bytes:
    query = (
        f"SELECT {SQL_CANONICAL} FROM (SELECT %s::bigint AS amount, %s::text AS credit_account, "
        "%s::text AS debit_account, %s::text AS id, %s::text AS kind, %s::text AS ledger, %s::text AS memo, "
        "%s::text AS pending_id, %s::bigint AS time_us, %s::bigint AS timeout_us) AS e"
    )
    row = conn.execute(
        query,
        (
            f["amount"],
            f["credit"],
            f["debit"],
            f["id"],
            f["kind"],
            f["ledger"],
            f["memo"],
            f["pending_id"],
            f["time_us"],
            f["timeout_us"],
        ),
    ).fetchone()
    return bytes(row[0])


@pytest.mark.parametrize("text", HARD)
def test_sql_encoding_matches_on_hard_strings(conn: psycopg.Connection, text: str) -> None:
    f = dict(
        id="t",
        ledger="GBP",
        debit=text,
        credit="c",
        amount=-5,
        kind="single",
        pending_id=text,
        timeout_us=None,
        time_us=2**52,
        memo=text,
    )
    assert sql_encode(conn, **f) == encode_entry(**f)


@settings(max_examples=60, deadline=None)
@given(
    id=pg_text,
    debit=pg_text,
    credit=pg_text,
    memo=pg_text,
    amount=safe_int,
    time_us=safe_int,
    pending_id=st.none() | pg_text,
    timeout_us=st.none() | safe_int,
)
def test_sql_encoding_matches_python(conn: psycopg.Connection, **f: object) -> None:
    f.update(ledger="GBP", kind="single")
    assert sql_encode(conn, **f) == encode_entry(**f)  # type: ignore[arg-type]


def test_both_modes_verify_a_ledger_with_hard_strings(fresh_db: str) -> None:
    c = connect(fresh_db)
    a, b = acct.bap_cash("x"), acct.provider_revenue("y")
    with c.transaction():
        ensure_accounts(c, [a, b])
    for i, memo in enumerate(HARD):
        with c.transaction():
            append_one(c, [TransferSpec(f"h{i}", "single", "GBP", a, b, i + 1, memo=memo)])
    for local in (False, True):
        for workers in (1, 2):
            report = verify_ledger(c, local_encoding=local, workers=workers)
            assert report.ok, report.summary()
    c.close()
