"""The runner restarts a Celery worker that exits without being stopped (Celery's consumer can die of an
unrecoverable error when Redis goes away mid-task), and leaves alone one stopped on purpose."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from flexmarket.runner import WORKER_RESTART_CHECK_S, Network, Process
from tests.e2e.helpers import eventually


def _crashing_worker(tmp_path: Path) -> Process:
    # says it is ready, as a Celery worker does, then dies as a crashed one would
    code = "import time; print('worker@test ready.', flush=True); time.sleep(1.5); raise SystemExit(1)"
    return Process("worker", [sys.executable, "-c", code], {}, tmp_path / "worker.log", None)


def test_a_crashed_worker_is_restarted_and_a_stopped_one_is_not(tmp_path: Path) -> None:
    worker = _crashing_worker(tmp_path)
    net = Network(home=tmp_path, manifest={}, processes={"worker": worker})
    net.start(timeout=20)
    try:
        first = worker.popen.pid if worker.popen else None
        eventually(lambda: worker.popen is not None and worker.popen.pid != first, timeout=10, interval=0.2)
        worker.stop()
        time.sleep(3 * WORKER_RESTART_CHECK_S)
        assert not worker.alive() and worker.halted
    finally:
        net.stop()
