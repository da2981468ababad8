"""The lookup-table cache: tables built once per process, from a fixed seed, read-only.

Textures, stamps and carpets are pre-rendered on first use and shared by every patch a process
draws. They come from :data:`TABLE_SEED`, so every process has the same tables and a patch
stays a function of its own random stream only; their arrays are made read-only, so that a
patch writing into one fails instead of silently changing later patches.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import TypeVar

import numpy as np

TABLE_SEED = 0x5EED_4E

_T = TypeVar("_T")


def frozen(x: object) -> object:
    """Make the arrays in x read-only (recursively through tuples, lists, dicts, dataclasses)."""
    if isinstance(x, np.ndarray):
        x.flags.writeable = False
    elif isinstance(x, (tuple, list)):
        for v in x:
            frozen(v)
    elif isinstance(x, dict):
        for v in x.values():
            frozen(v)
    elif dataclasses.is_dataclass(x):
        for f in dataclasses.fields(x):
            frozen(getattr(x, f.name))
    return x


def lookup_table(fn: Callable[..., _T]) -> Callable[..., _T]:
    """functools.cache, with the result's arrays made read-only (see :func:`frozen`)."""

    @functools.cache
    @functools.wraps(fn)
    def table(*args: object) -> _T:
        result = fn(*args)
        frozen(result)
        return result

    return table
