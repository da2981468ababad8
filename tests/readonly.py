"""A directory that cannot be written, even by root (CI runs the suite as root, and root ignores
the mode bits): a read-only tmpfs mounted on it when running as root, mode 0o555 otherwise.
A helper for tests, so a "not writable" case is tested, never skipped, whoever runs the suite."""

from __future__ import annotations

import contextlib
import os
import pathlib
import subprocess
from typing import Iterator


@contextlib.contextmanager
def read_only_dir(path: pathlib.Path) -> Iterator[pathlib.Path]:
    """Creates ``path`` and makes it unwritable for the block (writes fail with EROFS as root,
    EACCES otherwise; ``os.access(path, os.W_OK)`` is False either way)."""
    path.mkdir(parents=True)
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k,mode=0755", "hcdtf-test-ro", str(path)],
                          capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"as root, the tests make an unwritable directory by mounting a read-only tmpfs on "
                           f"{path}, which failed (the container needs CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        assert not os.access(path, os.W_OK), f"{path} is still writable after a read-only mount"
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)
