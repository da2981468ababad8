"""A sample's patches as arrays: per-patch random streams, ids and labels (the single source of
every sample, so that arrays and files always agree)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

from hcdtf.synthetic.centres import centre_look, centre_of, check_centres
from hcdtf.synthetic.geometry import PATCH_SIZE
from hcdtf.synthetic.patch import generate_patch

SPLITS = {"train": 0, "test": 1}


def make_id(rng: np.random.Generator) -> str:
    """A Kaggle-style id: 40 lowercase hex characters (160 random bits)."""
    bits = getattr(rng, "bit_generator", None)
    if bits is None:  # (not a Generator)
        return rng.bytes(20).hex()
    # (raw 64-bit words: Generator.bytes costs far more per call)
    return bits.random_raw(3).astype("<u8", copy=False).tobytes()[:20].hex()


def patch_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The stream of patch `index` of `split`: ``SeedSequence(seed, spawn_key=(split, index))``,
    built directly, so any worker draws any patch without spawning the others."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(SPLITS[split], int(index))))


def draw_id_label(rng: np.random.Generator, positive_fraction: float) -> tuple[str, int]:
    """The first draws of a patch's stream: its id, then its label."""
    pid = make_id(rng)
    return pid, int(rng.random() < positive_fraction)


def draw(seed: int, split: str, index: int, positive_fraction: float,
         centres: int | None = None) -> tuple[str, int, np.ndarray, np.ndarray]:
    """(id, label, image, mask) of patch `index` of `split`; with ``centres`` = K, rendered as its
    centre (``index % K``, :mod:`hcdtf.synthetic.centres`) stains and scans it."""
    rng = patch_rng(seed, split, index)
    pid, label = draw_id_label(rng, positive_fraction)
    look = None if centres is None else centre_look(centre_of(index, centres))
    image, mask = generate_patch(rng, label, look)
    return pid, label, image, mask


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Keep OpenBLAS single-threaded while drawing patches: their matrix products are tiny,
    and threads only add contention."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional (comes with scikit-learn)
        yield
        return
    with threadpool_limits(1, user_api="blas"):
        yield


def check_fraction(positive_fraction: float) -> None:
    if not 0.0 <= positive_fraction <= 1.0:
        raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction}")


def generate_arrays(
    n: int, seed: int = 0, positive_fraction: float = 0.4, split: str = "train", centres: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patches 0..n-1 of a sample as arrays, without files.

    Returns ``(images uint8 [n, 96, 96, 3], labels int64 [n], masks bool [n, 96, 96])``,
    pixel-identical to ``write_sample(..., seed=seed, positive_fraction=...)``'s
    ``train/`` files (in ``train_labels.csv`` order); ``split="test"`` gives the
    (hidden) labels and pixels of its ``test/`` files. ``centres``: as ``write_sample``'s (patch
    ``i`` is centre ``i % centres``).
    """
    check_fraction(positive_fraction)
    check_centres(centres)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    images = np.empty((n, PATCH_SIZE, PATCH_SIZE, 3), np.uint8)
    labels = np.empty(n, np.int64)
    masks = np.empty((n, PATCH_SIZE, PATCH_SIZE), bool)
    with one_blas_thread():
        for i in range(n):
            _, labels[i], images[i], masks[i] = draw(seed, split, i, positive_fraction, centres)
    return images, labels, masks
