"""Resumable batch work: results kept as numbered parts in a folder beside the output, keyed by
what produced them, so a killed embedding pass continues where it stopped and gives the same
bytes as an uninterrupted one.

Layout of the folder::

    part-00000.npy, part-00001.npy, ...   float32 rows, in order, each written atomically
    key.json                              {"key": ..., "batch_size": b, "parts": n}, written after
                                          each part (so it never names a part that is missing)

A folder of another key is refused (or cleared with ``overwrite``); the batch size it was made
with is reused on resume (the batches, and so the arithmetic, are the same as in one pass).
`hcdtf slide embed` (per slide) and `hcdtf embed` (per folder of patches) use it.
"""

from __future__ import annotations

import json
import pathlib
import shutil
from typing import Callable

import numpy as np


class StalePartsError(FileExistsError):
    """The parts folder holds part of a run of another model or other settings."""


def differs(a: dict, b: dict) -> str:
    """The keys whose values differ between two keys (or 'nothing')."""
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return ", ".join(keys) or "nothing"


def load_parts(partial: pathlib.Path, key: dict, overwrite: bool,
               stale: Callable[[dict], Exception] | None = None) -> tuple[list[np.ndarray], int | None]:
    """(parts of a killed run of the same key, the batch size it used); ([], None) when there
    are none. Parts of another key raise ``stale(saved_key)`` (default `StalePartsError`) unless
    ``overwrite``, which removes them."""
    try:
        saved = json.loads((partial / "key.json").read_text())
    except (OSError, ValueError):
        saved = None
    if saved is None or saved.get("key") != key:
        if saved is not None and not overwrite:
            old = saved.get("key") or {}
            raise (stale(old) if stale else StalePartsError(
                f"{partial} holds part of a run of another model or other settings (differs in: "
                f"{differs(old, key)}); rerun with --overwrite, or remove it"))
        shutil.rmtree(partial, ignore_errors=True)
        return [], None
    parts = []
    for n in range(int(saved.get("parts", 0))):
        try:
            parts.append(np.load(partial / f"part-{n:05d}.npy", mmap_mode="r"))  # read when used
        except (OSError, ValueError):
            break  # parts are written in order: keep the readable prefix
    return parts, int(saved["batch_size"])


def save_part(partial: pathlib.Path, key: dict, parts: list[np.ndarray], batch_size: int) -> None:
    """Writes ``parts[-1]`` as the next part, then the key file that counts it."""
    from hcdtf.atomic import atomic_output, write_text
    from hcdtf.rundir import kill_point

    partial.mkdir(parents=True, exist_ok=True)
    n = len(parts) - 1
    with atomic_output(partial / f"part-{n:05d}.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, parts[-1])
    kill_point("embed-part")
    write_text(partial / "key.json", json.dumps({"key": key, "batch_size": batch_size, "parts": n + 1},
                                                sort_keys=True))
