"""Children of `flexmarket up` (and `demo`, the tests' networks) die with the process that started them.

Each service runs in a session of its own (so a Ctrl-C in the terminal reaches only `up`, which stops them in
order), which also means nothing stops them if `up` itself is killed, even with SIGKILL. Two lines of defence:

- `die_with_parent(parent_pid)`, the `preexec_fn` of every child: Linux `prctl(PR_SET_PDEATHSIG, SIGTERM)`. The
  kernel sends the signal when the *thread* that forked the child exits, so the runner sets it only when it
  forks from the main thread (whose end is the process's end); from another thread it relies on the watcher.
- `watch_parent()`, in the child (`flexmarket serve` / `worker`): a daemon thread that polls `getppid()` against
  `FLEXMARKET_PARENT_PID` (set by the runner) and sends the process SIGTERM when it changes (the parent died
  and the child was re-parented), then SIGKILL if it is still there after a grace period.

Celery's worker pool children, if any, are handled by Celery's own parent.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

PARENT_PID_ENV = "FLEXMARKET_PARENT_PID"
PR_SET_PDEATHSIG = 1


def _libc() -> ctypes.CDLL | None:
    return ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def die_with_parent(parent_pid: int, libc: ctypes.CDLL | None) -> None:
    """For `subprocess.Popen(preexec_fn=…)`: runs in the child between fork and exec (libc is loaded before the
    fork: nothing in the child may take the dynamic loader's lock)."""
    if libc is not None:
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def preexec_for_this_thread() -> Callable[[], None] | None:
    """The preexec_fn for a child forked from the current thread (None off the main thread: see above)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    parent, libc = os.getpid(), _libc()
    return lambda: die_with_parent(parent, libc)


def watch_parent(interval_s: float = 0.5, grace_s: float = 15.0) -> threading.Thread | None:
    """Start the parent watcher if the runner said who the parent is; returns the thread (or None)."""
    text = os.environ.get(PARENT_PID_ENV)
    if not text:
        return None
    parent = int(text)

    def run() -> None:
        while os.getppid() == parent:
            time.sleep(interval_s)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)
        os.kill(os.getpid(), signal.SIGKILL)

    thread = threading.Thread(target=run, name="parent-watcher", daemon=True)
    thread.start()
    return thread
