"""The ledger's typer apps (mounted by flexmarket/cli.py), run with typer's CliRunner."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import typer
from typer.testing import CliRunner

from beckn.keys import KeyPair
from ledger import accounts as acct
from ledger.accounts_db import ensure_accounts
from ledger.api_keys import authenticate
from ledger.cli import ledger_app, metering_app, statement
from ledger.db import connection
from ledger.store import append_one
from ledger.transfers import TransferSpec

runner = CliRunner()


def flexmarket_like_cli() -> typer.Typer:
    """Mounted exactly as flexmarket/cli.py is asked to mount them (see ledger/cli.py)."""
    app = typer.Typer()
    app.add_typer(ledger_app, name="ledger")
    app.add_typer(metering_app, name="metering")
    app.command("statement")(statement)
    return app


def test_statement_export_and_offline_verification(cli_db: str, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    cash, rev = acct.bap_cash(f"b-{tag}"), acct.provider_revenue(f"p-{tag}")
    t0 = datetime.now(UTC) - timedelta(seconds=1)
    with connection(cli_db) as conn:
        with conn.transaction():
            ensure_accounts(conn, [cash, rev])
        for i in range(3):
            with conn.transaction():
                append_one(conn, [TransferSpec(f"cli-{tag}-{i}", "single", "GBP", cash, rev, 10 * (i + 1))])
    t1 = datetime.now(UTC) + timedelta(seconds=1)
    key = runner.invoke(ledger_app, ["public-key"]).output.strip()
    for fmt in ("json", "csv"):
        out = tmp_path / f"st.{fmt}"
        r = runner.invoke(
            flexmarket_like_cli(),
            [
                "statement",
                "--account",
                rev,
                "--from",
                t0.isoformat(),
                "--to",
                t1.isoformat(),
                "--format",
                fmt,
                "--out",
                str(out),
            ],
        )
        assert r.exit_code == 0, r.output
        assert "closing 60" in r.output
        ok = runner.invoke(flexmarket_like_cli(), ["ledger", "verify-statement", str(out), "--public-key", key])
        assert ok.exit_code == 0 and "OK" in ok.output, ok.output
    doc = json.loads((tmp_path / "st.json").read_text())
    assert [e["running_balance"] for e in doc["entries"]] == [10, 30, 60]
    doc["entries"][1]["amount"] = 21
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    bad = runner.invoke(ledger_app, ["verify-statement", str(tmp_path / "bad.json"), "--public-key", key])
    assert bad.exit_code == 1 and "INVALID" in bad.output
    other = KeyPair.generate().signing_public_key_b64  # (ledger_keypair makes no key where checkpoints exist)
    wrong = runner.invoke(ledger_app, ["verify-statement", str(tmp_path / "st.json"), "--public-key", other])
    assert wrong.exit_code == 1 and "signature" in wrong.output
    r = runner.invoke(flexmarket_like_cli(), ["statement", "--account", rev, "--from", "yesterday", "--to", "x"])
    assert r.exit_code != 0


def test_metering_import(cli_db: str, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    start = (datetime.now(UTC) - timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
    rows = ["meter_id,period_start_utc,energy_kwh"] + [
        f"MC-{tag},{(start + timedelta(minutes=30 * i)).isoformat()},{100 + i}.5" for i in range(4)
    ]
    f = tmp_path / "m.csv"
    f.write_text("\n".join(rows) + "\n")
    r = runner.invoke(flexmarket_like_cli(), ["metering", "import", str(f), "--provider", f"dc-{tag}"])
    assert r.exit_code == 0 and "imported 4 readings for 1 meter" in r.output, r.output
    again = runner.invoke(metering_app, ["import", str(f), "--provider", f"dc-{tag}"])
    assert again.exit_code == 1 and "duplicate" in again.output
    bad = tmp_path / "bad.csv"
    bad.write_text(rows[0] + f"\nMC-{tag},{start.isoformat()},abc\nMC-{tag},2030-01-01T00:00:00,1\n")
    r = runner.invoke(metering_app, ["import", str(bad)])
    assert r.exit_code == 1 and "line 2" in r.output and "line 3" in r.output
    with connection(cli_db) as conn:
        assert conn.execute("SELECT count(*) FROM ledger.metering WHERE meter_id = %s", (f"MC-{tag}",)).fetchone() == (
            4,
        )


def test_apikey_checkpoint_and_settle_commands(cli_db: str) -> None:
    r = runner.invoke(ledger_app, ["apikey", "create", "--role", "provider", "--provider", "dc-cli"])
    assert r.exit_code == 0 and r.output.startswith("flk_")
    with connection(cli_db) as conn:
        assert authenticate(conn, r.output.strip()).participant_id == "dc-cli"
    assert runner.invoke(ledger_app, ["apikey", "create", "--role", "provider"]).exit_code == 2
    cp = runner.invoke(ledger_app, ["checkpoint"])
    assert cp.exit_code == 0 and '"height"' in cp.output
    assert runner.invoke(ledger_app, ["settle"]).exit_code == 0
    assert runner.invoke(ledger_app, ["expire"]).exit_code == 0
    v = runner.invoke(flexmarket_like_cli(), ["ledger", "verify"])
    assert v.exit_code == 0 and "ledger intact" in v.output, v.output
