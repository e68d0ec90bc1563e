"""README.md's quick-start runs as written: `flexmarket up` as documented, then every ```sh block whose first line
is `# quickstart …`, in order, in one bash (`set -euo pipefail`), against it. Only the ports change (the
`BAP=`/`LEDGER=` lines and `--base-port` are rewritten to a free range). Afterwards the test checks that each step
did what the README says: the order went through select, init, confirm, status, update and cancel with the offer's
window, nothing failed, the ledger holds the order, and examples/metering.csv was imported.

Needs `curl` and `jq` (as the README does); skipped, saying so, when either is missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from kernel.embedded import free_port_range

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK = re.compile(r"^```sh\n(# quickstart .*?)^```$", re.MULTILINE | re.DOTALL)
UP_LINE = re.compile(r"^\.venv/bin/flexmarket up .*$", re.MULTILINE)

pytestmark = pytest.mark.e2e


def quickstart_blocks(text: str) -> list[str]:
    blocks = BLOCK.findall(text)
    numbers = [int(re.match(r"# quickstart (\d+)", b).group(1)) for b in blocks]  # type: ignore[union-attr]
    assert numbers == list(range(1, len(blocks) + 1)), f"quick-start blocks out of order: {numbers}"
    return blocks


def with_ports(script: str, base: int) -> str:
    """The script with the BAP and ledger addresses of the network started on `base`."""
    for var, port in (("BAP", base + 2), ("LEDGER", base + 4)):
        script, n = re.subn(rf"^{var}=\S+", f"{var}=http://127.0.0.1:{port}", script, flags=re.MULTILINE)
        assert n == 1, f"the quick-start should define {var}= once, at the start of a line (found {n})"
    return script


def test_readme_quickstart_runs(isolated_db: str, redis_url: str, tmp_path: Path) -> None:
    missing = [tool for tool in ("curl", "jq", "bash") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"the README's quick-start needs {', '.join(missing)}, missing on this machine")
    text = README.read_text()
    blocks = quickstart_blocks(text)
    assert len(blocks) >= 6, "quick-start blocks: set-up, search/plan, order, status/update/cancel, ledger, metering"
    up_lines = UP_LINE.findall(text)
    assert up_lines, "the README should show `.venv/bin/flexmarket up …`"
    base = free_port_range(5)
    up_cmd = up_lines[0].replace("--base-port 8000", f"--base-port {base}")
    assert f"--base-port {base}" in up_cmd and "--manifest flexmarket-manifest.json" in up_cmd

    # A folder like the checkout the README is read in: `.venv/bin/flexmarket` and `examples/`.
    work = tmp_path / "work"
    (work / ".venv" / "bin").mkdir(parents=True)
    wrapper = work / ".venv" / "bin" / "flexmarket"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m flexmarket "$@"\n')
    wrapper.chmod(0o755)
    (work / "examples").symlink_to(ROOT / "examples")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": isolated_db,
        "REDIS_URL": redis_url,
        "FLEXMARKET_HOME": str(tmp_path / "home"),
        "FLEXMARKET_CELERY_QUEUE": f"fm-readme-{uuid.uuid4().hex[:8]}",
    }
    up_log = (tmp_path / "up.log").open("wb")
    up = subprocess.Popen(["bash", "-c", f"exec {up_cmd}"], cwd=work, env=env, stdout=up_log, stderr=subprocess.STDOUT)
    manifest = work / "flexmarket-manifest.json"
    t0 = time.monotonic()
    try:
        while not manifest.exists() or not manifest.read_text().strip().endswith("}"):
            assert up.poll() is None, f"flexmarket up exited during start-up:\n{(tmp_path / 'up.log').read_text()}"
            assert time.monotonic() - t0 < 120, "flexmarket up did not come up in 120 s"
            time.sleep(0.2)
        started = time.monotonic()

        # The aggregator's shell: no DATABASE_URL of its own (the metering block reads it from the manifest).
        shell_env = {k: v for k, v in env.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        script = "set -euo pipefail\n" + with_ports("\n".join(blocks), base)
        script += '\necho "QUICKSTART_TX=$TX QUICKSTART_PROVIDER=$PROVIDER QUICKSTART_WINDOW=$WS/$WE"\n'
        run = subprocess.run(
            ["bash", "-c", script], cwd=work, env=shell_env, capture_output=True, text=True, timeout=120
        )
        out = run.stdout
        assert run.returncode == 0, f"quick-start failed (exit {run.returncode}):\n{out}\n{run.stderr}"
        found = re.search(r"QUICKSTART_TX=(\S+) QUICKSTART_PROVIDER=(\S+) QUICKSTART_WINDOW=(\S+)/(\S+)", out)
        assert found, out
        tx, provider, ws, we = found.groups()

        # What the README says each step does.
        bap = f"http://127.0.0.1:{base + 2}/api/v1"
        bap_key = json.loads(manifest.read_text())["participants"]["bap"]["api_keys"]["operator"]
        as_operator = {"Authorization": f"Bearer {bap_key}"}
        view = httpx.get(f"{bap}/transactions/{tx}", headers=as_operator, timeout=10).json()
        searched = (view["request"]["window_start"][:16], view["request"]["window_end"][:16])
        assert searched == (ws[:16], we[:16]), view["request"]  # the window `flexmarket window` printed
        (order,) = [o for o in view["orders"] if o["provider_id"] == provider]
        assert order["state"] == "CANCELLED" and order["power_kw"] == 300 and order["order_id"], order
        offer = next(o for o in view["offers"] if o["provider_id"] == provider and o["item_id"] == order["item_id"])
        # No window was given: the order took the offer's (wider than the searched one).
        assert (order["window_start"], order["window_end"]) == (offer["window_start"], offer["window_end"])
        callbacks = {c["action"] for c in view["callbacks"]}
        assert {"on_search", "on_select", "on_init", "on_confirm", "on_status", "on_update", "on_cancel"} <= callbacks
        assert httpx.get(f"{bap}/failures", params={"transaction_id": tx}, headers=as_operator, timeout=10).json() == []
        # Every state-changing call of the quick-start is in the BAP's audit log, with the aggregator's key.
        audit = httpx.get(f"{bap}/audit", params={"limit": 100}, headers=as_operator, timeout=10).json()["entries"]
        mine = [e["what"]["action"] for e in audit if e["what"]["transaction_id"] == tx][::-1]
        assert mine == ["search", "plan", "select", "init", "confirm", "status", "update", "cancel"], mine
        assert {e["who"]["role"] for e in audit if e["what"]["transaction_id"] == tx} == {"aggregator"}
        assert "imported 6 readings for 2 meter(s)" in out

        keys = json.loads(manifest.read_text())["participants"]["ledger"]["api_keys"]
        ledger = f"http://127.0.0.1:{base + 4}/api/v1"
        deadline = time.monotonic() + 15  # the BAP registers, amends and cancels at the ledger from its worker
        while True:
            held = httpx.get(
                f"{ledger}/orders",
                params={"transaction_id": tx},
                headers={"Authorization": f"Bearer {keys['finance']}"},
                timeout=10,
            ).json()["orders"]
            summary = httpx.get(
                f"{ledger}/orders/{order['order_id']}",
                headers={"Authorization": f"Bearer {keys['finance']}"},
                timeout=10,
            ).json()
            if [o["order_id"] for o in held] == [order["order_id"]] and (
                summary["cancelled_at"] and summary["contracted_w"] == 300_000 and summary["amendments"]
            ):
                break
            assert time.monotonic() < deadline, f"the ledger does not hold the amended, cancelled order: {summary}"
            time.sleep(0.2)
        assert time.monotonic() - started < 60, "the quick-start took over a minute"
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)
            try:
                up.wait(30)
            except subprocess.TimeoutExpired:
                up.kill()
                up.wait(10)
        up_log.close()
