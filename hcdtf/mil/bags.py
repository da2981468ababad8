"""Bags of embeddings on disk: which slides, their labels, their folds.

A bag is one ``<slide id>.h5`` written by ``hcdtf slide embed`` (or by CLAM / TRIDENT: ``features``
[n, d] or [1, n, d], ``coords``). Labels come from a Camelyon16-style ``reference.csv``
(``name,class``, class Tumor or Normal). Folds are drawn over slides, stratified by label, from a
seed: a slide is in exactly one fold, so validation slides are never seen in training.
"""

from __future__ import annotations

import hashlib
import os
import pathlib

import numpy as np


class BagError(ValueError):
    """Bags or labels that cannot be used; the message names the file or flag."""


def list_bags(paths) -> dict[str, pathlib.Path]:
    """slide id -> bag file, from ``.h5`` files and directories of them (sorted, unique ids)."""
    out: dict[str, pathlib.Path] = {}
    for p in map(pathlib.Path, [paths] if isinstance(paths, (str, os.PathLike)) else paths):
        if p.is_dir():
            files = sorted(f for f in p.glob("*.h5") if not f.name.startswith("."))
        elif p.is_file():
            files = [p]
        else:
            raise BagError(f"BAGS {str(p)!r} does not exist")
        for f in files:
            if f.stem in out and out[f.stem] != f:
                raise BagError(f"two bags for slide {f.stem!r}: {out[f.stem]} and {f}")
            out[f.stem] = f
    if not out:
        raise BagError(f"BAGS {', '.join(map(str, [paths] if isinstance(paths, (str, os.PathLike)) else paths))}: "
                       "no .h5 bag files found (write them with `hcdtf slide embed`)")
    return dict(sorted(out.items()))


def read_labels(path, bags: dict[str, pathlib.Path]) -> dict[str, int]:
    """slide id -> 0/1 for every bag, from ``--labels`` (every bag must have a label)."""
    from hcdtf.slide.evaluate import EvaluationError, read_reference

    try:
        reference = read_reference(path)
    except EvaluationError as e:
        raise BagError(str(e).replace("--reference", "--labels")) from None
    missing = [s for s in bags if s not in reference]
    if missing:
        raise BagError(f"--labels {path}: no class for {len(missing)} bag(s), e.g. {', '.join(missing[:3])}")
    labels = {s: reference[s] for s in bags}
    if len(set(labels.values())) < 2:
        raise BagError(f"--labels {path}: the bags are all of one class; MIL needs Tumor and Normal slides")
    return labels


def fingerprint(bags: dict[str, pathlib.Path]) -> str:
    """SHA-256 of the bags' names, sizes and contents' first and last MiB (cheap, catches re-embedding)."""
    h = hashlib.sha256()
    for slide, f in bags.items():
        size = f.stat().st_size
        h.update(f"{slide}\0{size}\0".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(1 << 20))
            if size > 2 << 20:
                fh.seek(-(1 << 20), os.SEEK_END)
                h.update(fh.read())
    return h.hexdigest()


def folds(labels: dict[str, int], k: int, seed: int) -> dict[str, int]:
    """slide id -> fold in 0..k-1, stratified by label (each class dealt round-robin after a shuffle)."""
    if k < 2:
        raise BagError(f"--folds must be >= 2, got {k}")
    rng = np.random.default_rng([seed, 0xF01D])
    out = {}
    for cls in (0, 1):
        slides = sorted(s for s, y in labels.items() if y == cls)
        for n, i in enumerate(rng.permutation(len(slides))):
            out[slides[i]] = n % k
    if any(sum(1 for s in out if out[s] == f and labels[s] == c) == 0 for f in range(k) for c in (0, 1)):
        raise BagError(f"--folds {k}: some fold would lack a Tumor or a Normal slide "
                       f"({sum(labels.values())} Tumor, {len(labels) - sum(labels.values())} Normal); use fewer folds")
    return dict(sorted(out.items()))


def load_features(path: pathlib.Path) -> np.ndarray:
    from hcdtf.slide.embed import read_bag

    return read_bag(path)["features"]
