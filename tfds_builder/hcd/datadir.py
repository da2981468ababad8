"""The data dir around a build: proving it writable, removing what killed builds left, and
leaving it as it was when a build fails.

TFDS writes a data set into an ``incomplete.*`` directory and renames it into place at the end,
so a killed build leaves only such directories (and an overwrite's staging and replaced
directories, named the same way); the next build removes them under the lock (lock.py) and
writes the same files as an uninterrupted one. A build that fails removes the directories it
created, and a full disk or read-only file system becomes one error naming the data dir, however
deep in TFDS or TensorFlow the write failed.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import tempfile

from .errors import BadInputError
from .lock import LOCK_NAME

INCOMPLETE_PREFIX = "incomplete."  # TFDS's name for a data set directory being written
_LOG = logging.getLogger(__name__)
_STORAGE_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "the disk quota ran out",
                   errno.EROFS: "the file system is read-only", errno.EFBIG: "a file grew too large"}


def dirs_to_create(root: str, config_dir: str) -> list[str]:
    """The directories a build of ``config_dir`` would create, outermost first (each is removed
    again, if empty, when the build fails)."""
    hcd_dir = os.path.dirname(config_dir)
    candidates = [root, os.path.join(root, "downloads"), hcd_dir, os.path.join(hcd_dir, ".config"), config_dir]
    return [p for p in candidates if not os.path.exists(p)]


def is_writable(root: str) -> bool:
    """Whether a file can be created in ``root`` (a probe, created and removed)."""
    try:
        fd, probe = tempfile.mkstemp(dir=root, prefix=".hcdtf_write_probe_")
    except OSError:
        return False
    os.close(fd)
    os.unlink(probe)
    return True


def make_writable_dir(root: str) -> None:
    """Creates the data dir if needed and proves it writable: one clear error naming it otherwise
    (a read-only or full disk, a path through a file, missing permissions)."""
    try:
        os.makedirs(root, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=root, prefix=".hcdtf_write_probe_")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise BadInputError(
            f"data dir {root}: cannot write there ({e.strerror or e}): pass a writable --data-dir"
        ) from None


def remove_incomplete(config_dir: str) -> None:
    """Removes what killed builds of this config left: TFDS's ``incomplete.*`` directories (and an
    overwrite's staging and replaced directories, named the same way). Called under the lock."""
    leftovers = [e.path for e in os.scandir(config_dir) if e.name.startswith(INCOMPLETE_PREFIX) and e.is_dir()]
    for path in leftovers:
        shutil.rmtree(path)
    if leftovers:
        _LOG.warning("hcd: removed %d leftover directories of an interrupted build in %s",
                     len(leftovers), config_dir)


@contextlib.contextmanager
def failed_builds_leave_nothing(root: str, config_dir: str, created: list[str], is_prepared):
    """Around a build (under its lock): a storage error becomes one BadInputError naming the data
    dir (TFDS wraps a full disk as RuntimeError("ResourceExhaustedError: ...")), and unless
    ``is_prepared()`` holds at the end, the directories in ``created`` are removed again."""
    try:
        yield
    except Exception as e:
        reason = storage_error(e)
        if reason is None:
            raise
        raise BadInputError(
            f"data dir {root}: {reason} while writing the data set; free space (or pass another "
            "--data-dir) and rerun the same command: nothing of this build was kept"
        ) from None
    finally:
        if not is_prepared():
            _prune_created(created, config_dir)


def storage_error(error: BaseException) -> str | None:
    """What went wrong, if ``error`` (or what it wraps) is the storage refusing a write: TFDS and
    TensorFlow re-raise OSError(ENOSPC) as RuntimeError / ResourceExhaustedError text."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in _STORAGE_ERRNOS:
            return _STORAGE_ERRNOS[error.errno]
        text = str(error)
        for errno_, phrase in ((errno.ENOSPC, "No space left on device"), (errno.EDQUOT, "Disk quota exceeded"),
                               (errno.EROFS, "Read-only file system")):
            if phrase in text:
                return _STORAGE_ERRNOS[errno_]
        error = error.__cause__ or error.__context__
    return None


def _prune_created(created: list[str], config_dir: str) -> None:
    """After a failed build (under its lock): removes the directories it created, if they hold
    nothing else, and its lock file; the data dir is left as it was."""
    with contextlib.suppress(OSError):
        if set(os.listdir(config_dir)) <= {LOCK_NAME}:
            os.unlink(os.path.join(config_dir, LOCK_NAME))
    for path in reversed(created):
        if os.path.basename(path) == ".config":
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(path, "metadata.json"))  # TFDS's default-config note
        for dirpath, _, _ in sorted(os.walk(path, topdown=False), key=lambda w: -len(w[0])):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)  # only empty directories go
