"""The build lock: one build of a config into a data dir at a time.

``<data_dir>/hcd/<config>/.lock`` is held with flock(2) for the whole build; a second build of
the same config into the same data dir fails at once, naming the holder (pid and host, written
into the file). The kernel drops the lock of a killed process, so a lock never goes stale.
"""

from __future__ import annotations

import contextlib
import os
import socket

from .errors import BuildLockedError

LOCK_NAME = ".lock"


@contextlib.contextmanager
def build_lock(config_dir: str):
    """Holds ``config_dir/.lock`` (flock) for a build; another build of the same config into the
    same data dir fails at once, naming the holder. The kernel drops the lock of a killed process,
    so a lock never goes stale."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock
        yield
        return
    os.makedirs(config_dir, exist_ok=True)
    path = os.path.join(config_dir, LOCK_NAME)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise BuildLockedError(
                f"{config_dir}: this data set is being built by {holder}: wait for that build to end"
            ) from None
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        os.close(fd)  # a failed build removed the file after we opened it: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        yield
    finally:
        os.close(fd)
