"""The Kaggle-layout writer: a sample's .tif files and CSVs, in worker processes, resumable.

Layout (as Kaggle ships the Histopathologic Cancer Detection data)::

    out_dir/train/<id>.tif          96x96 RGB uint8 TIFF, uncompressed, id = 40 lowercase hex
    out_dir/train_labels.csv        id,label
    out_dir/test/<id>.tif           unlabelled
    out_dir/sample_submission.csv   id,label (label 0 for every test id)
    out_dir/centres.csv             id,centre (only with centres=K: every labelled id)

``train_labels.csv`` is written last, atomically: a directory that has it holds a complete
sample. While a sample is being written, ``out_dir`` holds a marker naming its parameters; a
call with the same parameters after a kill finishes it (the files are a function of the
parameters), any other call refuses to touch it. A call with the parameters of a finished
sample finds it complete and writes nothing. Every ``.tif`` is written under a temporary name
(``.<id>.tmp-<pid>``, not a ``.tif``) and renamed, so a kill or a full disk never leaves a
truncated patch under its final name; finishing a sample removes such leftovers. Workers die
with the process that started them (hcdtf.workers).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import io
import json
import multiprocessing
import multiprocessing.context
import os
import pathlib
import sys
import time
from collections.abc import Iterator, Sequence

import numpy as np

from hcdtf import atomic
from hcdtf import workers as workers_lib
from hcdtf.synthetic.centres import CENTRES_CSV, centre_look, centre_of, check_centres
from hcdtf.synthetic.geometry import PATCH_SIZE
from hcdtf.synthetic.patch import generate_patch, warm_up
from hcdtf.synthetic.streams import check_fraction, draw_id_label, one_blas_thread, patch_rng

UNFINISHED = ".hcdtf-sample-unfinished.json"  # the marker of a sample being written


@dataclasses.dataclass
class SampleInfo:
    """What :func:`write_sample` wrote."""

    out_dir: pathlib.Path
    n_train: int
    n_test: int
    n_positive: int  # positives among the n_train training patches
    seed: int
    seconds: float  # wall-clock time of the call
    already_done: bool = False  # the sample was complete before this call: nothing was written
    centres: int | None = None  # K: patches rendered as K centres (centres.csv), None: one look


@functools.cache
def _tif_prefix() -> bytes:
    """The bytes Pillow writes before the pixels of a 96x96 RGB TIFF (uncompressed, one strip):
    the header and the tags, the same for every patch. A file is then this prefix and the pixels
    in one write(), without Pillow's per-file encoding work, which would cost a sizeable
    fraction of drawing the patch. Checked here: two images give the same prefix and end in
    exactly their pixels."""
    from PIL import Image

    n = PATCH_SIZE * PATCH_SIZE * 3
    files = []
    for value in (0, 255):
        buffer = io.BytesIO()
        Image.new("RGB", (PATCH_SIZE, PATCH_SIZE), (value,) * 3).save(buffer, format="TIFF")
        files.append(buffer.getvalue())
    (a, b), prefix = files, files[0][:-n]
    if b[:-n] != prefix or a[-n:] != bytes(n) or b[-n:] != b"\xff" * n:
        raise RuntimeError("this Pillow does not write a 96x96 RGB TIFF as a header followed by its pixels")
    return prefix


def tif_bytes(image: np.ndarray) -> bytes:
    """A (96, 96, 3) uint8 image as the TIFF file Pillow writes for it."""
    return _tif_prefix() + np.ascontiguousarray(image, dtype=np.uint8).tobytes()


def _write_chunk(args: tuple[str, int, str, Sequence[int], float, int | None]) -> list[tuple[str, int]]:
    """Draw and save one chunk of patches (runs in a worker process); returns (id, label)s."""
    folder, seed, split, indices, positive_fraction, centres = args
    out = []
    with one_blas_thread():
        for i in indices:
            rng = patch_rng(seed, split, i)
            pid, label = draw_id_label(rng, positive_fraction)
            look = None if centres is None else centre_look(centre_of(i, centres))
            image, _ = generate_patch(rng, label, look)
            path = os.path.join(folder, pid + ".tif")
            tmp = os.path.join(folder, f".{pid}{atomic.TMP_MARK}{os.getpid()}")  # not a .tif: never read as one
            try:
                with open(tmp, "wb") as fh:
                    fh.write(tif_bytes(image))
                os.replace(tmp, path)
            finally:
                if os.path.lexists(tmp):
                    os.unlink(tmp)
            out.append((pid, label))
    return out


def _expected_rows(params: dict) -> dict[str, list[tuple[str, int]]]:
    """The (id, label)s a sample with ``params`` holds, per split (ids and labels are drawn
    before the pixels, so this costs no patch)."""
    return {
        split: [draw_id_label(patch_rng(params["seed"], split, i), params["positive_fraction"])
                for i in range(count)]
        for split, count in (("train", params["n"]), ("test", params["n_test"]))
    }


def _csv_texts(rows: dict[str, list[tuple[str, int]]], centres: int | None = None) -> dict[str, str]:
    """The CSVs of a sample, in writing order (train_labels.csv last)."""
    texts = {"sample_submission.csv": "id,label\n" + "".join(f"{pid},0\n" for pid, _ in rows["test"])}
    if centres is not None:
        texts[CENTRES_CSV] = "id,centre\n" + "".join(
            f"{pid},{centre_of(i, centres)}\n" for i, (pid, _) in enumerate(rows["train"]))
    texts["train_labels.csv"] = "id,label\n" + "".join(f"{p},{y}\n" for p, y in rows["train"])
    return texts


def _finished(out: pathlib.Path, params: dict) -> bool:
    """True if ``out`` holds the complete sample of ``params``: both CSVs as this call would
    write them and every patch file, of the right size."""
    if not (out / "train_labels.csv").is_file():
        return False
    rows = _expected_rows(params)
    for name, text in _csv_texts(rows, params.get("centres")).items():
        try:
            if (out / name).read_text(encoding="utf-8") != text:
                return False
        except (OSError, UnicodeDecodeError):
            return False
    size = len(_tif_prefix()) + PATCH_SIZE * PATCH_SIZE * 3
    for split, split_rows in rows.items():
        for pid, _ in split_rows:
            try:
                if (out / split / f"{pid}.tif").stat().st_size != size:
                    return False
            except OSError:
                return False
    return True


def _remove_leftovers(out: pathlib.Path) -> None:
    """Temporary patch files of a writer that was killed (``.<id>.tmp-<pid>``)."""
    for split in ("train", "test"):
        d = out / split
        if d.is_dir():
            for p in d.glob(f".*{atomic.TMP_MARK}*"):
                p.unlink(missing_ok=True)


def _claim(out: pathlib.Path, params: dict) -> bool:
    """Refuse to overwrite or mix into a data set the user already has; else mark `out` as
    holding an unfinished sample with these parameters (or find it marked with the same).
    True if `out` already holds the finished sample of these parameters (nothing to do)."""
    if not (out / UNFINISHED).exists() and _finished(out, params):
        return True
    for name in ("train_labels.csv", "sample_submission.csv", CENTRES_CSV):
        if (out / name).exists():
            raise ValueError(f"refusing to write a synthetic sample into {out}: {out / name} already exists "
                             "(and is not a complete sample with these parameters)")
    marker = out / UNFINISHED
    if marker.is_file():
        try:
            previous = json.loads(marker.read_text())
        except (OSError, ValueError):
            previous = None
        if previous != params:
            raise ValueError(
                f"refusing to write a synthetic sample into {out}: it holds an unfinished sample with "
                f"other parameters ({marker}: {previous}); finish it with those, or remove {out}"
            )
        _remove_leftovers(out)
        return False
    for name in ("train", "test"):
        d = out / name
        if d.exists() and (not d.is_dir() or any(d.iterdir())):
            raise ValueError(f"refusing to write a synthetic sample into {out}: {d} is not empty")
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic.write_json(marker, params)
    except OSError as e:  # e.g. a file on the way, no permission, disk full
        raise ValueError(f"cannot write a synthetic sample into {out}: {e.strerror or e}") from None
    return False


def _mp_context() -> multiprocessing.context.BaseContext:
    """ "fork" where it is safe: fast, and the caller's script needs no
    ``if __name__ == "__main__"`` guard.  Once a heavily threaded runtime
    (TensorFlow, PyTorch, JAX) is loaded, forking can deadlock the children,
    so "spawn" is used instead (the caller's main module must then be guarded,
    as in the hcdtf CLI)."""
    threaded = any(name in sys.modules for name in ("tensorflow", "torch", "jax"))
    if not threaded and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _default_workers(total: int) -> int:
    """One process per available core (at most 8) for large samples, else 1: starting a
    worker process costs about as much as drawing hundreds of patches."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 1 if total < 1500 else max(1, min(cores, 8))


def _run(jobs: list, workers: int, progress: bool) -> Iterator[list[tuple[str, int]]]:
    """The results of `_write_chunk` for each job, in job order, on `workers` processes."""
    total, done = sum(len(job[3]) for job in jobs), 0

    def report(part: list[tuple[str, int]]) -> list[tuple[str, int]]:
        nonlocal done
        done += len(part)
        if progress:
            end = "" if done < total else "\n"
            print(f"\rsynthetic sample: {done}/{total} patches", end=end, file=sys.stderr, flush=True)
        return part

    try:
        if workers == 1:
            for job in jobs:
                yield report(_write_chunk(job))
            return
        context = _mp_context()
        if context.get_start_method() == "fork":
            warm_up()  # forked workers inherit the lookup tables instead of each building them
        with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context,
                                                    initializer=workers_lib.die_with_parent,
                                                    initargs=(os.getpid(),)) as pool:
            for part in pool.map(_write_chunk, jobs):  # map keeps the job order
                yield report(part)
    finally:
        if progress and 0 < done < total:  # stopped part-way: end the progress line before any error
            print(file=sys.stderr, flush=True)


def write_sample(
    out_dir: str | os.PathLike[str],
    n: int = 2000,
    n_test: int | None = None,
    seed: int = 0,
    positive_fraction: float = 0.4,
    workers: int | None = None,
    progress: bool = False,
    centres: int | None = None,
) -> SampleInfo:
    """Write a synthetic sample in the Kaggle layout under `out_dir`.

    ``n`` training patches (``train/<id>.tif`` + ``train_labels.csv``) and
    ``n_test`` unlabelled test patches (default ``max(1, n // 10)``;
    ``test/<id>.tif`` + ``sample_submission.csv`` with label 0).  Refuses
    (ValueError) if `out_dir` already holds a sample or other files in
    ``train/`` or ``test/``; finishes an unfinished sample written with the
    same parameters.  Deterministic for a seed whatever ``workers`` is
    (default: one process per available core for large samples, else 1).

    ``centres`` = K renders the sample as K centres (hospitals) with different stain vectors,
    dye amounts and scanner colour responses (:mod:`hcdtf.synthetic.centres`): patch ``i`` of
    each split is centre ``i % K``; ``centres.csv`` (``id,centre``) lists every labelled id's
    centre, and the TFDS builder reads it for leave-one-centre-out splits.
    """
    start = time.perf_counter()
    out = pathlib.Path(out_dir)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    n_test = max(1, n // 10) if n_test is None else int(n_test)
    if n_test < 0:
        raise ValueError(f"n_test must be >= 0, got {n_test}")
    check_fraction(positive_fraction)
    check_centres(centres)
    params = {"n": int(n), "n_test": n_test, "seed": int(seed), "positive_fraction": float(positive_fraction)}
    if centres is not None:  # (absent otherwise: a sample without centres keeps its old marker)
        params["centres"] = int(centres)
    try:
        done = _claim(out, params)
        rows = _expected_rows(params) if done else _write(out, params, workers, progress)
    except OSError as e:  # disk full, read-only, a name too long, ...: one line, resumable
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        raise ValueError(f"cannot write the synthetic sample into {out}: {e.strerror or e}{where}; "
                         "fix that and rerun the same command to finish it") from None
    return SampleInfo(
        out_dir=out,
        n_train=n,
        n_test=n_test,
        n_positive=sum(label for _, label in rows["train"]),
        seed=int(seed),
        seconds=time.perf_counter() - start,
        already_done=done,
        centres=centres,
    )


def _write(out: pathlib.Path, params: dict, workers: int | None, progress: bool) -> dict:
    """Writes the claimed sample's patches, then its CSVs; returns its rows per split."""
    n, n_test, seed, positive_fraction = params["n"], params["n_test"], params["seed"], params["positive_fraction"]
    workers = _default_workers(n + n_test) if workers is None else max(1, int(workers))
    chunk = max(16, min(500, (n + n_test) // (4 * workers) + 1))
    jobs = []
    for split, count in (("train", n), ("test", n_test)):
        (out / split).mkdir(exist_ok=True)
        for i in range(0, count, chunk):
            indices = list(range(i, min(count, i + chunk)))
            jobs.append((str(out / split), int(seed), split, indices, float(positive_fraction), params.get("centres")))
    rows: dict[str, list[tuple[str, int]]] = {"train": [], "test": []}
    for job, part in zip(jobs, _run(jobs, workers, progress)):
        rows[job[2]] += part
    ids = [pid for split in rows.values() for pid, _ in split]
    if len(set(ids)) != len(ids):  # 160-bit ids: a collision means a bug
        raise RuntimeError("duplicate synthetic ids")
    for name, text in _csv_texts(rows, params.get("centres")).items():  # train_labels.csv last: it marks a complete sample
        atomic.write_text(out / name, text)
    (out / UNFINISHED).unlink()
    return rows
