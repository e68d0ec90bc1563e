"""`flexmarket up` killed with SIGKILL takes its services with it (flexmarket/lifeline.py)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from kernel.embedded import free_port_range

ROOT = Path(__file__).resolve().parent.parent


def _children(pid: int) -> set[int]:
    """Every live descendant of `pid` (from /proc)."""
    parents: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            parents[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {c for c, p in parents.items() if p in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _port_free(port: int) -> bool:
    """Nothing holds the port: a new server could listen on it. SO_REUSEADDR, as every server sets it (uvicorn
    does), so that connections the killed services left in TIME_WAIT do not count as a holder."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _check_manifest_keys(manifest: Path) -> None:
    """`up` writes a ledger API key per role into its manifest (readable by its user only), and they work."""
    assert manifest.stat().st_mode & 0o077 == 0
    m = json.loads(manifest.read_text())
    ledger = m["participants"]["ledger"]
    keys = ledger["api_keys"]
    providers = [p for platform in m["participants"]["bpp"]["platforms"] for p in platform["providers"]]
    assert set(keys) == {"admin", "finance", "bap", "supplier", "providers", "meter_operator"}
    assert set(keys["providers"]) == set(providers)
    operator = keys["meter_operator"]  # the host supplier reads the meters, signing with the key in `key_file`
    signing = json.loads(Path(operator["key_file"]).read_text())["signing_public_key"]

    def get(path: str, key: str) -> httpx.Response:
        return httpx.get(f"{ledger['api']}{path}", headers={"Authorization": f"Bearer {key}"}, timeout=10)

    for role in ("admin", "finance"):
        assert get("/orders", keys[role]).status_code == 200
        assert get("/accounts", keys[role]).status_code == 200
    assert get("/orders", keys["bap"]).status_code == 200
    assert get("/orders", keys["providers"][providers[0]]).status_code == 200
    assert get("/orders", "flk_nope_nope").status_code == 401
    registered = get("/meter-data-keys", operator["api_key"]).json()["keys"]
    assert [(k["key_id"], k["public_key"]) for k in registered] == [(operator["signing_key_id"], signing)]


def test_sigkilled_up_takes_its_services_with_it(isolated_db: str, redis_url: str, tmp_path: Path) -> None:
    base = free_port_range(5)
    manifest = tmp_path / "manifest.json"
    env = {
        **os.environ,
        "DATABASE_URL": isolated_db,
        "REDIS_URL": redis_url,
        "FLEXMARKET_HOME": str(tmp_path / "home"),
        "FLEXMARKET_CELERY_QUEUE": f"fm-up-{uuid.uuid4().hex[:8]}",
    }
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flexmarket",
            "up",
            "--providers",
            "1",
            "--base-port",
            str(base),
            "--manifest",
            str(manifest),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    services: set[int] = set()
    try:
        deadline = time.monotonic() + 180
        while not manifest.exists():
            assert up.poll() is None, "flexmarket up exited during start-up"
            assert time.monotonic() < deadline, "flexmarket up did not come up"
            time.sleep(0.2)
        services = _children(up.pid)
        _check_manifest_keys(manifest)
        assert len(services) >= 6  # registry, gateway, BAP, BPP, ledger, worker
        assert not any(_port_free(base + i) for i in range(5))
        up.send_signal(signal.SIGKILL)
        up.wait(10)
        deadline = time.monotonic() + 20
        while any(_alive(p) for p in services) or not all(_port_free(base + i) for i in range(5)):
            if time.monotonic() > deadline:
                left = sorted(p for p in services if _alive(p))
                raise AssertionError(f"services outlived the killed `up`: {left}")
            time.sleep(0.2)
    finally:
        for p in services:
            if _alive(p):
                os.kill(p, signal.SIGKILL)
        if up.poll() is None:
            up.kill()
            up.wait(10)
