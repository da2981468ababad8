"""The PatchCamelyon release's raw files: ``camelyonpatch_level_2_split_{train,valid,test}_{x,y}``
as ``.h5`` or ``.h5.gz``, checked and read in chunks.

A ``.h5.gz`` is decompressed (streamed) into a temporary directory, never into the manual dir;
the images are read 1,024 rows at a time, so the 6 GB train file is never loaded whole, and
encoded as PNG on the thread pool (pool.py).
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator

import numpy as np

from . import images, pool
from .errors import MANUAL_DOWNLOAD_INSTRUCTIONS, BadInputError, no_manual_dir

SPLITS = {"train": "train", "validation": "valid", "test": "test"}  # TFDS split: PCam file name
CHUNK = 1024  # rows read from HDF5 at a time
_LOG = logging.getLogger(__name__)


def check_files(manual_dir: str) -> None:
    """Raises BadInputError naming every missing PCam file (``.h5`` or ``.h5.gz``)."""
    if not os.path.isdir(manual_dir):
        raise no_manual_dir(manual_dir)
    missing = [
        f"camelyonpatch_level_2_split_{name}_{key}.h5(.gz)"
        for name in SPLITS.values()
        for key in ("x", "y")
        if not any(
            os.path.isfile(os.path.join(manual_dir, f"camelyonpatch_level_2_split_{name}_{key}{ext}"))
            for ext in (".h5", ".h5.gz")
        )
    ]
    if missing:
        raise BadInputError(
            f"{manual_dir}: {len(missing)} PatchCamelyon files missing: {', '.join(missing)}. "
            f"{MANUAL_DOWNLOAD_INSTRUCTIONS}"
        )


def examples(manual_dir: str, name: str, level: int) -> Iterator:
    """Yields (id, example, pixel hashes) of PCam split ``name`` (train/valid/test) in row order;
    ids are ``<name>_<row>``. BadInputError names the file for unreadable files, datasets of the
    wrong shape or labels other than 0/1 (all checked before the first example)."""
    import tensorflow_datasets.public_api as tfds

    h5py = tfds.core.lazy_imports.h5py
    with tempfile.TemporaryDirectory(prefix="hcd_pcam_") as tmp:
        # x_path/y_path name the files in the manual dir (errors quote them); *_open may be
        # their decompressed copy in `tmp`.
        x_open, x_path = _file(manual_dir, f"camelyonpatch_level_2_split_{name}_x", tmp)
        y_open, y_path = _file(manual_dir, f"camelyonpatch_level_2_split_{name}_y", tmp)
        with _open_h5(h5py, x_open, x_path) as fx, _open_h5(h5py, y_open, y_path) as fy:
            for path, h5, key in ((x_path, fx, "x"), (y_path, fy, "y")):
                if key not in h5:
                    raise BadInputError(f"{path}: no dataset {key!r} (found {sorted(h5.keys())})")
            xs, ys = fx["x"], fy["y"]
            if xs.shape[1:] != images.IMAGE_SHAPE or xs.dtype != np.uint8:
                raise BadInputError(
                    f"{x_path}: dataset 'x' must be N x 96 x 96 x 3 uint8, got {xs.shape} {xs.dtype}"
                )
            if ys.shape[0] != xs.shape[0] or int(np.prod(ys.shape[1:], dtype=np.int64)) != 1:
                raise BadInputError(
                    f"{y_path}: dataset 'y' must hold one label per image: shape {ys.shape} "
                    f"for {xs.shape[0]} images in {x_path}"
                )

            labels = np.asarray(ys[:]).reshape(-1)  # N bytes: only the images are big
            bad = np.flatnonzero((labels != 0) & (labels != 1))
            if bad.size:
                raise BadInputError(
                    f"{y_path}: row {bad[0]}: label {int(labels[bad[0]])} is not 0 or 1 "
                    f"({bad.size} labels outside {{0, 1}})"
                )

            def rows():  # read lazily, CHUNK rows at a time, by the thread that consumes
                for start in range(0, xs.shape[0], CHUNK):
                    chunk = xs[start : start + CHUNK]
                    for k in range(len(chunk)):
                        yield start + k, chunk[k], int(labels[start + k])

            encode = lambda r: (r[0], images.encode_png(r[1], level), r[2], images.hashes(r[1]))
            for index, png, label, hashes in pool.ordered_map(encode, rows()):
                id_ = f"{name}_{index}"
                yield id_, {"id": id_, "image": png, "label": label}, hashes


def _file(manual_dir: str, stem: str, tmp: str) -> tuple[str, str]:
    """(path to open, path in the manual dir) of ``stem.h5``, or of ``stem.h5.gz`` decompressed
    into ``tmp`` (streamed: never in memory whole, never written to the manual dir)."""
    plain = os.path.join(manual_dir, stem + ".h5")
    if os.path.isfile(plain):
        return plain, plain
    gz = plain + ".gz"
    if os.path.isfile(gz):
        out = os.path.join(tmp, stem + ".h5")
        _LOG.info("hcd: decompressing %s to %s", gz, out)
        try:
            with gzip.open(gz, "rb") as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 16 << 20)
        except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
            raise BadInputError(f"{gz}: not a readable gzip file ({type(e).__name__}: {e})") from None
        return out, gz
    raise BadInputError(
        f"{plain}(.gz) not found in the manual dir. {MANUAL_DOWNLOAD_INSTRUCTIONS}"
    )


def _open_h5(h5py, path: str, shown: str):
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise BadInputError(f"{shown}: not a readable HDF5 file ({e})") from None
