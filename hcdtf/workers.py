"""Worker processes that die with their parent.

A ``ProcessPoolExecutor`` worker waits on a pipe for its next task. If the parent is killed with
SIGKILL, nothing closes that pipe's other end (each forked worker holds a copy), so the workers
wait forever, reparented to init. :func:`die_with_parent`, given as the pool's ``initializer``,
prevents that twice over: on Linux the kernel sends the worker SIGKILL when its parent dies
(``prctl(PR_SET_PDEATHSIG)``), and everywhere a daemon thread checks every half second that the
parent is still the one that started the worker and ends the worker if not.

Caveat of PR_SET_PDEATHSIG: it fires when the *thread* that started the worker exits. Pools here
are created and used within one call on one thread, which outlives its workers.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
POLL_SECONDS = 0.5


def _set_pdeathsig() -> bool:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux); True if it did."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch(parent_pid: int) -> None:
    import time

    while os.getppid() == parent_pid:
        time.sleep(POLL_SECONDS)
    os._exit(1)  # the parent is gone: no cleanup handlers, nothing left to report to


def die_with_parent(parent_pid: int) -> None:
    """Pool ``initializer``: end this worker as soon as ``parent_pid`` (the pool's owner) dies.
    Call with ``initargs=(os.getpid(),)`` from the parent."""
    _set_pdeathsig()
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(1)
    threading.Thread(target=_watch, args=(parent_pid,), name="hcdtf-parent-watch", daemon=True).start()
