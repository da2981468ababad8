"""Fault injection for the kill tests: a build SIGKILLs itself at a named point.

Kill tests set ``HCDTF_BUILD_FAULT`` to ``<point>[:<n>]``: the process kills itself the n-th time
it reaches ``<point>`` (check: an image checked; example: an example yielded; finalize: every
split generated, before the metadata is written; swap: between the two renames of an overwrite).
Without the variable, :func:`fault` does nothing.
"""

from __future__ import annotations

import collections
import os
import signal

FAULT_ENV = "HCDTF_BUILD_FAULT"
_counts: collections.Counter = collections.Counter()


def fault(point: str) -> None:
    """Kills this process if FAULT_ENV names ``point`` and this is its n-th visit."""
    spec = os.environ.get(FAULT_ENV)
    if spec and spec.partition(":")[0] == point:
        _counts[point] += 1
        if _counts[point] == int(spec.partition(":")[2] or 1):
            os.kill(os.getpid(), signal.SIGKILL)
