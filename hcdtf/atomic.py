"""Atomic file writing: every file is written under a temporary name and renamed into place.

A process killed at any instant leaves either the old file or the new one, never half of one: the
temporary file lives in the destination's directory, so ``os.replace`` is a rename within one file
system, which is atomic on POSIX and Windows. Used for every file that hcdtf's stages write
(summaries, predictions, metrics, figures, reports).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import shutil
from pathlib import Path
from typing import IO, Any, Iterator, Mapping

import numpy as np

__all__ = ["TMP_MARK", "atomic_open", "atomic_output", "remove_leftovers", "removes_created_dir", "temporary_name",
           "write_json", "write_text"]


#: Marks temporary names (``.<stem>.tmp-<pid>-<random><suffix>``): a run directory's recovery
#: removes files that match ``.*.tmp-*``, which is what a writer killed mid-write leaves.
TMP_MARK = ".tmp-"


def temporary_name(path: str | os.PathLike) -> Path:
    """A hidden name beside ``path``, unique per call, ending in the real suffix (Keras and
    matplotlib look at it)."""
    path = Path(path)
    token = f"{os.getpid()}-{secrets.token_hex(3)}"
    return path.with_name(f".{path.stem}{TMP_MARK}{token}{path.suffix}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. EPERM: it exists, owned by someone else
        return True
    return True


def remove_leftovers(directory: str | os.PathLike) -> list[Path]:
    """Removes the temporary files (see :func:`temporary_name`) that writers killed mid-write left
    in ``directory``; a file whose writer process is still running on this machine is kept (it
    may be in the middle of its write). Returns what was removed."""
    removed = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(directory):
            name = entry.name
            if not name.startswith(".") or TMP_MARK not in name:
                continue
            pid = name.split(TMP_MARK, 1)[1].split("-", 1)[0]
            if not pid.isdigit() or _alive(int(pid)):
                continue
            with contextlib.suppress(FileNotFoundError):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def removes_created_dir(argument: str):
    """Decorator: if the call fails, the directory named by its ``argument`` (and any of its
    parents) that did not exist before the call is removed again, if empty: a failed command
    leaves no empty output directory, and never removes one that existed before."""
    import functools
    import inspect

    def decorate(fn):
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            path = Path(signature.bind(*args, **kwargs).arguments[argument]).absolute()
            missing = []
            while not os.path.lexists(path) and path != path.parent:
                missing.append(path)
                path = path.parent
            try:
                return fn(*args, **kwargs)
            except BaseException:
                for d in missing:  # deepest first; stops at the first one that holds something
                    try:
                        d.rmdir()
                    except OSError:
                        break
                raise

        return wrapper

    return decorate


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; when the block ends without an error,
    flush it to disk and rename it onto ``path``. On an error the temporary file is removed and
    ``path`` is left as it was. For writers that want a path (``np.savez``, Keras)."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        yield tmp
        if fsync and tmp.is_file():
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **open_kwargs: Any) -> Iterator[IO]:
    """Like ``open(path, mode)`` for writing, but the file replaces ``path`` only when the block
    ends without an error (see :func:`atomic_output`). A directory that cannot be written is
    reported as ``cannot write <path>: <reason>``, naming the destination, not the temporary."""
    with atomic_output(path) as tmp:
        try:
            f = open(tmp, mode, **open_kwargs)
        except OSError as e:
            raise type(e)(f"cannot write {path}: {e.strerror or e}") from None
        with f:
            yield f


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically."""
    with atomic_open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    return Path(path)


def _jsonable(obj: Any) -> Any:
    """Plain-Python copy of ``obj`` for strict JSON: NumPy values unwrapped, NaN/inf -> None."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def write_json(path: str | os.PathLike, data: Any, sort_keys: bool = True) -> Path:
    """Write ``data`` as strict JSON (indent 2, trailing newline; NaN and inf become null),
    atomically. Keys are sorted unless ``sort_keys`` is False (then insertion order is kept)."""
    text = json.dumps(_jsonable(data), indent=2, sort_keys=sort_keys, allow_nan=False) + "\n"
    return write_text(path, text)
