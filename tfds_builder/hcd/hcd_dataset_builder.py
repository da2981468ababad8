"""`hcd`: Histopathologic Cancer Detection patches (Kaggle) and PatchCamelyon, for TFDS.

Two builder configs read the raw files from the manual dir (nothing is downloaded):

* ``kaggle``: the Kaggle competition layout, ``train/<id>.tif`` + ``train_labels.csv``
  (``id,label``) and, when present, the unlabelled ``test/<id>.tif``. The labelled set is carved
  into ``train``/``validation``/``test`` deterministically (a hash of each id, so every machine
  gets the same split), stratified by label, or by slide when a patch-to-slide mapping
  (``patch_id_wsi.csv``: ``id,wsi``) lies beside the CSV. ``test/*.tif`` becomes ``kaggle_test``
  with label -1, for submissions.
* ``pcam``: the official PatchCamelyon HDF5 files
  ``camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5`` (or ``.h5.gz``), read in chunks.

Build with ``tfds build tfds_builder/hcd --manual_dir DIR --data_dir OUT --config kaggle``.
Custom fractions or the skip-bad-examples mode through a JSON config, e.g.
``--config '{"name": "kaggle_80_10_10", "source": "kaggle", "validation_fraction": 0.1}'``.

The builder only reads the manual dir: it never writes there (a ``.h5.gz`` is decompressed into
a temporary directory).

Speed (2 cores): before anything is written, every labelled and test image is checked. For
an uncompressed RGB TIFF, which is how Kaggle ships them, only the header and the file size
are read. Then a thread pool reads each TIFF and encodes it as PNG (Pillow releases the GIL),
while TFDS serialises and writes on the main thread. A progress bar shows while the images are
checked, and TFDS shows one while each split is written. benchmarks/build_dataset.py (20,000
patches) measured about 400 patches/s on a shared machine (550 per CPU-second), which puts the
full Kaggle set at about 9 minutes.

No Apache Beam path: the thread pool already uses the local cores. Beam's DirectRunner would
add per-example pickling between stages. A distributed runner would need the 220k small files
on shared storage, read through tf.io.gfile instead of local paths.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import csv
import dataclasses
import gzip
import hashlib
import io
import itertools
import logging
import os
import re
import shutil
import tempfile
from typing import Iterator

import numpy as np
import tensorflow_datasets.public_api as tfds

_HOMEPAGE = "https://www.kaggle.com/c/histopathologic-cancer-detection"
IMAGE_SHAPE = (96, 96, 3)
LABEL_NAMES = ("no_tumor", "tumor")
# Kaggle ids are 40-character hex strings. We accept any plain file stem (letters, digits, `_`,
# `-`, `.` not leading) so that renamed data works, but nothing that could leave `train/`.
_ID_RE = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]*$")
SLIDE_MAP_NAMES = ("patch_id_wsi.csv", "patch_id_wsi_full.csv", "patch_to_slide.csv")
PCAM_SPLITS = {"train": "train", "validation": "valid", "test": "test"}
_PCAM_CHUNK = 1024  # rows read from HDF5 at a time: the 6 GB train file is never loaded whole
# zlib level of the stored PNGs (lossless at every level). Measured on 96x96 patches here:
# level 0 (stored) decodes in ~0.19 ms of CPU and encodes in ~1.2 ms, levels 1-6 need ~0.4 ms
# and ~2-3 ms for files ~20-25% smaller. Reading back is what every epoch pays for, so the
# default is 0; HcdConfig.png_compress_level trades that speed for disk space.
PNG_COMPRESS_LEVEL = 0
_LOG = logging.getLogger(__name__)

_MANUAL_DOWNLOAD_INSTRUCTIONS = """\
kaggle config: download the competition data from
https://www.kaggle.com/c/histopathologic-cancer-detection/data (e.g. `kaggle competitions download
-c histopathologic-cancer-detection`), unzip it and pass that directory as --manual_dir. It must
contain `train_labels.csv` (columns id,label) and `train/<id>.tif` (96x96 RGB); `test/<id>.tif` is
optional. To split by slide, also put the public patch-to-slide mapping there as
`patch_id_wsi.csv` (columns id,wsi). `hcdtf sample-data DIR` writes a synthetic sample in the same
layout.

pcam config: download the six files camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5.gz from
https://zenodo.org/record/2546921 (or https://github.com/basveeling/pcam) into --manual_dir;
`.h5.gz` or decompressed `.h5` both work.
"""


class BadInputError(ValueError):
    """The raw files in the manual dir are not usable as they are."""


@dataclasses.dataclass
class HcdConfig(tfds.core.BuilderConfig):
    """Which raw source to read and how to split it.

    Attributes:
      source: "kaggle" or "pcam".
      validation_fraction: kaggle only: share of labelled patches (or slides) for `validation`.
      test_fraction: kaggle only: share of labelled patches (or slides) for `test`.
      split_seed: kaggle only: salt of the id hash; change it for another random split.
      skip_bad_examples: False: any bad file/row fails the build (the error names each kind and
        count); True: they are left out and their counts recorded in the dataset metadata.
      png_compress_level: zlib level (0-9) of the stored PNGs; None: PNG_COMPRESS_LEVEL (0:
        fastest to build and read, largest). The pixels are the same at every level.
    """

    source: str = "kaggle"
    validation_fraction: float = 0.1
    test_fraction: float = 0.1
    split_seed: int = 0
    skip_bad_examples: bool = False
    png_compress_level: int | None = None


class Builder(tfds.core.GeneratorBasedBuilder):
    """Histopathologic Cancer Detection (Kaggle) and PatchCamelyon 96x96 patches."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: kaggle and pcam configs."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL_DOWNLOAD_INSTRUCTIONS
    BUILDER_CONFIGS = [
        HcdConfig(
            name="kaggle",
            source="kaggle",
            description="Kaggle HCD labelled patches, split 80/10/10 stratified (by slide if mapped).",
        ),
        HcdConfig(
            name="pcam",
            source="pcam",
            description="PatchCamelyon official train/validation/test splits from the HDF5 files.",
        ),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "id": tfds.features.Text(),
                    "image": tfds.features.Image(shape=IMAGE_SHAPE, encoding_format="png"),
                    "label": tfds.features.ClassLabel(names=LABEL_NAMES),
                }
            ),
            supervised_keys=("image", "label"),
            homepage=_HOMEPAGE,
            metadata=tfds.core.MetadataDict(),
        )

    # ------------------------------------------------------------------ splits
    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        manual_dir = os.fspath(dl_manager.manual_dir)
        cfg = self.builder_config
        if cfg.source == "pcam":
            check_pcam_files(manual_dir)  # all six, before the long train split is written
            self.info.metadata["split_by"] = "official"
            return {
                split: self._generate_examples("pcam", manual_dir=manual_dir, name=name)
                for split, name in PCAM_SPLITS.items()
            }
        if cfg.source != "kaggle":
            raise ValueError(f"HcdConfig.source must be 'kaggle' or 'pcam', got {cfg.source!r}")
        labelled, problems = scan_kaggle(manual_dir, strict=not cfg.skip_bad_examples)
        slides = read_slide_map(manual_dir, [i for i, _ in labelled])
        assignment = assign_splits(
            labelled,
            validation_fraction=cfg.validation_fraction,
            test_fraction=cfg.test_fraction,
            seed=cfg.split_seed,
            slides=slides,
        )
        self.info.metadata["bad_examples"] = dict(problems)
        self.info.metadata["split_by"] = "slide" if slides else "patch"
        train_dir = os.path.join(manual_dir, "train")
        splits = {
            name: self._generate_examples(
                "kaggle", image_dir=train_dir, items=[(i, l) for i, l in labelled if assignment[i] == name]
            )
            for name in ("train", "validation", "test")
        }
        test_problems: dict[str, int] = {}
        test_dir = os.path.join(manual_dir, "test")
        if os.path.isdir(test_dir):
            unlabelled, test_problems = scan_unlabelled(test_dir, strict=not cfg.skip_bad_examples)
            self.info.metadata["bad_examples_kaggle_test"] = dict(test_problems)
            if unlabelled:
                splits["kaggle_test"] = self._generate_examples(
                    "kaggle", image_dir=test_dir, items=[(i, -1) for i in unlabelled]
                )
        if cfg.skip_bad_examples:
            self._record_skipped(problems, test_problems)
        return splits

    def _record_skipped(self, problems: dict[str, int], test_problems: dict[str, int]) -> None:
        """Says what skip mode left out where users read it: the log and the description (the
        counts themselves are in ``info.metadata``, saved as metadata.json)."""

        def fmt(counts):
            return ", ".join(f"{k}: {v}" for k, v in counts.items()) if counts else "none"

        note = (
            "\n\nBad examples left out of this build (skip_bad_examples=True; counts also in "
            f"`info.metadata['bad_examples']`): labelled set: {fmt(problems)}; "
            f"unlabelled test/: {fmt(test_problems)}."
        )
        self.info.as_proto.description = (self.info.description or "") + note
        if problems or test_problems:
            _LOG.warning("hcd: skipping bad input: labelled: %s; test/: %s", fmt(problems), fmt(test_problems))

    # ------------------------------------------------------------- generators
    def _png_level(self) -> int:
        level = getattr(self.builder_config, "png_compress_level", None)
        level = PNG_COMPRESS_LEVEL if level is None else int(level)
        if not 0 <= level <= 9:
            raise ValueError(f"png_compress_level must be 0..9, got {level}")
        return level

    def _generate_examples(self, source: str, **kwargs) -> Iterator:
        """Yields (key, example); keys are the patch ids, stable across builds."""
        if source == "pcam":
            return self._generate_pcam(**kwargs)
        return self._generate_kaggle(**kwargs)

    def _generate_kaggle(self, image_dir: str, items: list[tuple[str, int]]) -> Iterator:
        # Reading the TIFF and encoding the PNG (the bulk of the work) happen in worker threads
        # (Pillow releases the GIL while it decodes/compresses); TFDS only serialises and writes
        # the bytes. A sliding window keeps the workers busy while TFDS writes and bounds memory.
        level = self._png_level()
        paths = (os.path.join(image_dir, i + ".tif") for i, _ in items)
        for (id_, label), png in zip(items, _ordered_map(lambda p: _tif_to_png(p, level), paths)):
            yield id_, {"id": id_, "image": png, "label": label}

    def _generate_pcam(self, manual_dir: str, name: str) -> Iterator:
        h5py = tfds.core.lazy_imports.h5py
        with tempfile.TemporaryDirectory(prefix="hcd_pcam_") as tmp:
            # x_path/y_path name the files in the manual dir (errors quote them); *_open may be
            # their decompressed copy in `tmp`.
            x_open, x_path = _pcam_file(manual_dir, f"camelyonpatch_level_2_split_{name}_x", tmp)
            y_open, y_path = _pcam_file(manual_dir, f"camelyonpatch_level_2_split_{name}_y", tmp)
            with _open_h5(h5py, x_open, x_path) as fx, _open_h5(h5py, y_open, y_path) as fy:
                for path, h5, key in ((x_path, fx, "x"), (y_path, fy, "y")):
                    if key not in h5:
                        raise BadInputError(f"{path}: no dataset {key!r} (found {sorted(h5.keys())})")
                xs, ys = fx["x"], fy["y"]
                if xs.shape[1:] != IMAGE_SHAPE or xs.dtype != np.uint8:
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

                def rows():  # read lazily, 1024 rows at a time, by the thread that consumes
                    for start in range(0, xs.shape[0], _PCAM_CHUNK):
                        images = xs[start : start + _PCAM_CHUNK]
                        for k in range(len(images)):
                            yield start + k, images[k], int(labels[start + k])

                level = self._png_level()
                encoded = _ordered_map(lambda r: (r[0], encode_png(r[1], level), r[2]), rows())
                for index, png, label in encoded:
                    id_ = f"{name}_{index}"
                    yield id_, {"id": id_, "image": png, "label": label}


# ---------------------------------------------------------------------- helpers (also tested)
def read_tif(path: str) -> np.ndarray:
    """Reads a 96x96 RGB uint8 patch. Raises BadInputError naming the file otherwise."""
    return _read_checked(path, lambda im: np.asarray(im))


def check_tif(path: str) -> None:
    """Raises the BadInputError that :func:`read_tif` would, more cheaply: an uncompressed RGB
    TIFF (the Kaggle files) whose header is fine and whose pixel bytes all lie inside the file
    cannot fail to decode, so only its header is read; anything else is decoded."""
    _read_checked(path, lambda im: None if _raw_rgb_complete(path, im) else np.asarray(im))


def _tif_to_png(path: str, level: int) -> bytes:
    """read_tif + encode_png without the two array copies in between (same pixels)."""
    buffer = io.BytesIO()

    def save(im):
        im.load()
        _check_mode_shape(path, im.mode, (im.size[1], im.size[0], 3), np.uint8)
        im.save(buffer, format="png", compress_level=level)

    _read_checked(path, save, check=False)
    return buffer.getvalue()


def _read_checked(path: str, fn, check: bool = True):
    from PIL import Image  # lazy: only the kaggle config needs Pillow

    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode != "RGB":  # e.g. L, I;16, F, RGBA: decoded only to say what it is
                array = np.asarray(im)
                _check_mode_shape(path, mode, array.shape, array.dtype)
            result = fn(im)
    except BadInputError:
        raise
    except FileNotFoundError:
        raise BadInputError(f"{path}: file not found") from None
    except Exception as e:  # Pillow raises many types for corrupt files
        raise BadInputError(f"{path}: not a readable TIFF image ({type(e).__name__}: {e})") from None
    if check:
        shape = result.shape if isinstance(result, np.ndarray) else (im.size[1], im.size[0], 3)
        _check_mode_shape(path, mode, shape, result.dtype if isinstance(result, np.ndarray) else np.uint8)
    return result


def _check_mode_shape(path: str, mode: str, shape: tuple, dtype) -> None:
    if np.dtype(dtype) != np.uint8 or mode != "RGB":
        raise BadInputError(f"{path}: expected 8-bit RGB (uint8), got mode {mode!r} dtype {np.dtype(dtype)}")
    if tuple(shape) != IMAGE_SHAPE:
        raise BadInputError(f"{path}: expected a 96x96x3 image, got shape {tuple(shape)}")


def _raw_rgb_complete(path: str, im) -> bool:
    """True if ``im`` is an uncompressed 8-bit RGB TIFF whose strips all lie inside the file."""
    if im.format != "TIFF" or im.mode != "RGB" or not im.tile:
        return False
    file_size = os.path.getsize(path)
    for tile in im.tile:
        codec, (x0, y0, x1, y1), offset, args = tuple(tile)[:4]
        if codec != "raw" or not args or args[0] != "RGB":
            return False
        stride = abs(args[1]) if len(args) > 1 and args[1] else (x1 - x0) * 3
        if offset + stride * (y1 - y0) > file_size:
            return False  # truncated: decoding says so
    return True


def encode_png(image: np.ndarray, level: int | None = None) -> bytes:
    """Losslessly encodes a uint8 RGB patch as PNG (what the `image` feature stores)."""
    from PIL import Image

    buffer = io.BytesIO()
    level = PNG_COMPRESS_LEVEL if level is None else level
    Image.fromarray(image).save(buffer, format="png", compress_level=level)
    return buffer.getvalue()


def _workers() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(2, min(8, cores * 2))


def _ordered_map(fn, items, window: int | None = None, workers: int | None = None) -> Iterator:
    """``map(fn, items)`` on a thread pool, in order, with at most ``window`` items in flight
    (``items`` may be a lazy iterator: it is consumed as the results are)."""
    workers = workers or _workers()
    window = window or workers * 64
    items = iter(items)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        pending = collections.deque(pool.submit(fn, x) for x in itertools.islice(items, window))
        try:
            while pending:
                result = pending.popleft().result()
                for x in itertools.islice(items, 1):
                    pending.append(pool.submit(fn, x))
                yield result
        finally:  # an error or an abandoned generator: do not wait for queued work
            for future in pending:
                future.cancel()


def _progress(total: int, desc: str):
    """A TFDS-style progress bar (honours ``tfds.disable_progress_bar()``)."""
    try:
        from tensorflow_datasets.core.utils import tqdm_utils

        return tqdm_utils.tqdm(total=total, desc=desc, unit=" images", leave=False)
    except Exception:  # pragma: no cover - progress is optional
        return contextlib.nullcontext(None)


def _problem_kind(error: BadInputError) -> str:
    text = str(error)
    if "not a readable" in text:
        return "corrupt_image"
    if "expected 8-bit" in text:
        return "not_uint8_rgb"
    return "wrong_shape"


def _check_images(image_dir: str, ids: list[str]) -> list[tuple[str, str, str]]:
    """Checks every image (threads; see check_tif); returns (id, problem kind, message) for the
    bad ones."""

    def check(id_: str):
        try:
            check_tif(os.path.join(image_dir, id_ + ".tif"))
            return None
        except BadInputError as e:
            return id_, _problem_kind(e), str(e)

    bad = []
    with _progress(len(ids), f"Checking {image_dir}") as bar:
        for k, result in enumerate(_ordered_map(check, ids)):
            if result:
                bad.append(result)
            if bar is not None and (k + 1) % 256 == 0:
                bar.update(256)
        if bar is not None:
            bar.update(len(ids) % 256)
    return bad


def _raise_or_record(problems: dict[str, list[str]], where: str, strict: bool) -> dict[str, int]:
    counts = {kind: len(items) for kind, items in problems.items() if items}
    if counts and strict:
        lines = [f"{where}: found bad input ({sum(counts.values())} problems):"]
        for kind, items in problems.items():
            if items:
                shown = "; ".join(items[:5]) + (f"; ... ({len(items) - 5} more)" if len(items) > 5 else "")
                lines.append(f"  {kind}: {len(items)}: {shown}")
        lines.append(
            "Fix or remove these files/rows, or build with skip_bad_examples=True, e.g. "
            "--config '{\"name\": \"kaggle_skip\", \"source\": \"kaggle\", \"skip_bad_examples\": true}'"
        )
        raise BadInputError("\n".join(lines))
    return counts


def scan_kaggle(manual_dir: str, strict: bool = True) -> tuple[list[tuple[str, int]], dict[str, int]]:
    """Checks a Kaggle-layout manual dir. Returns ([(id, label)] sorted by id, problem counts).

    Every kind of problem is counted over the whole data set before anything is written, so one
    run reports all of them: unsafe ids, bad labels, duplicate ids, ids without a file, files
    without an id, unreadable / wrong-shape / non-uint8 images.
    """
    if not os.path.isdir(manual_dir):
        raise BadInputError(
            f"manual dir {manual_dir!r} does not exist. {_MANUAL_DOWNLOAD_INSTRUCTIONS}"
        )
    csv_path = os.path.join(manual_dir, "train_labels.csv")
    train_dir = os.path.join(manual_dir, "train")
    if not os.path.isfile(csv_path):
        raise BadInputError(f"{csv_path} not found. {_MANUAL_DOWNLOAD_INSTRUCTIONS}")
    if not os.path.isdir(train_dir):
        raise BadInputError(f"{train_dir} not found (the directory of <id>.tif patches).")

    problems: dict[str, list[str]] = collections.OrderedDict(
        (k, [])
        for k in (
            "unsafe_id",
            "bad_label",
            "duplicate_id",
            "missing_file",
            "file_without_id",
            "corrupt_image",
            "wrong_shape",
            "not_uint8_rgb",
        )
    )
    rows: dict[str, int] = {}
    first_row: dict[str, int] = {}
    duplicates: set[str] = set()
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["id", "label"]:
            raise BadInputError(f"{csv_path}: the first line must be the header 'id,label', got {header!r}")
        for line_no, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            where = f"{csv_path} row {line_no}"
            if len(row) < 2:
                problems["bad_label"].append(f"{where}: expected 'id,label', got {row!r}")
                continue
            id_, raw = row[0].strip(), row[1].strip()
            if not _ID_RE.match(id_) or ".." in id_:
                problems["unsafe_id"].append(f"{where}: id {id_!r} is not a plain file name")
                continue
            if raw not in ("0", "1"):
                problems["bad_label"].append(f"{where}: label {raw!r} for id {id_!r} is not 0 or 1")
                continue
            if id_ in rows:
                problems["duplicate_id"].append(f"{where}: id {id_!r} appears again (first in row {first_row[id_]})")
                duplicates.add(id_)
                continue
            rows[id_] = int(raw)
            first_row[id_] = line_no

    on_disk = {n[:-4] for n in os.listdir(train_dir) if n.endswith(".tif")}
    for id_ in sorted(set(rows) - on_disk):
        problems["missing_file"].append(f"{os.path.join(train_dir, id_ + '.tif')}: listed in the CSV, no file")
    for id_ in sorted(on_disk - set(rows)):
        problems["file_without_id"].append(f"{os.path.join(train_dir, id_ + '.tif')}: not in {csv_path}")
    present = sorted(set(rows) & on_disk)
    bad_images = set()
    for id_, kind, message in _check_images(train_dir, present):
        bad_images.add(id_)
        problems[kind].append(message)
    # Duplicate ids are ambiguous (which label?): they are dropped entirely in skip mode.
    counts = _raise_or_record(problems, manual_dir, strict)
    labelled = [(i, rows[i]) for i in present if i not in bad_images and i not in duplicates]
    if not labelled:
        raise BadInputError(f"{csv_path}: no usable labelled patches")
    if len({l for _, l in labelled}) < 2:
        raise BadInputError(f"{csv_path}: all usable patches have the same label; both 0 and 1 are needed")
    return labelled, counts


def scan_unlabelled(test_dir: str, strict: bool = True) -> tuple[list[str], dict[str, int]]:
    """Checks the unlabelled `test/` patches; returns (sorted ids, problem counts)."""
    problems: dict[str, list[str]] = collections.OrderedDict(
        (k, []) for k in ("unsafe_id", "corrupt_image", "wrong_shape", "not_uint8_rgb")
    )
    ids = []
    for name in sorted(os.listdir(test_dir)):
        if not name.endswith(".tif"):
            continue
        id_ = name[:-4]
        if not _ID_RE.match(id_):
            problems["unsafe_id"].append(f"{os.path.join(test_dir, name)}: not a plain id")
            continue
        ids.append(id_)
    bad = set()
    for id_, kind, message in _check_images(test_dir, ids):
        bad.add(id_)
        problems[kind].append(message)
    counts = _raise_or_record(problems, test_dir, strict)
    return [i for i in ids if i not in bad], counts


def read_slide_map(manual_dir: str, ids: list[str]) -> dict[str, str] | None:
    """Reads the optional patch-to-slide mapping (``id,wsi``). Every labelled id must be mapped."""
    path = next(
        (os.path.join(manual_dir, n) for n in SLIDE_MAP_NAMES if os.path.isfile(os.path.join(manual_dir, n))),
        None,
    )
    if path is None:
        return None
    mapping: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "id" not in reader.fieldnames or "wsi" not in reader.fieldnames:
            raise BadInputError(f"{path}: needs the columns id,wsi, got {reader.fieldnames!r}")
        for row in reader:
            mapping[row["id"].strip()] = row["wsi"].strip()
    missing = [i for i in ids if i not in mapping]
    if missing:
        raise BadInputError(
            f"{path}: {len(missing)} labelled ids have no slide (e.g. {missing[:3]}); a split by "
            "slide needs every id mapped. Complete the mapping or remove the file to split by patch."
        )
    return {i: mapping[i] for i in ids}


def _unit_hash(text: str, seed: int) -> float:
    """A uniform number in [0, 1) from a stable hash: the same on every machine and Python."""
    digest = hashlib.sha256(f"{seed}:{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_splits(
    labelled: list[tuple[str, int]],
    validation_fraction: float,
    test_fraction: float,
    seed: int = 0,
    slides: dict[str, str] | None = None,
) -> dict[str, str]:
    """Maps each id to "train", "validation" or "test", deterministically and stratified.

    Without slides: within each label, ids ordered by hash; the first round(n*test_fraction) go
    to test, the next round(n*validation_fraction) to validation. With slides: whole slides are
    assigned the same way, stratified by whether the slide holds any tumour patch, filling each
    split up to its share of the patches, so no slide crosses splits.
    """
    for name, frac in (("validation_fraction", validation_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= frac < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {frac!r}")
    if validation_fraction + test_fraction >= 1.0:
        raise ValueError("validation_fraction + test_fraction must be < 1")
    groups: dict[str, list[str]] = collections.defaultdict(list)
    group_label: dict[str, int] = {}
    for id_, label in labelled:
        g = slides[id_] if slides else id_
        groups[g].append(id_)
        group_label[g] = max(group_label.get(g, 0), label)
    assignment: dict[str, str] = {}
    for stratum in (0, 1):
        members = sorted((g for g in groups if group_label[g] == stratum), key=lambda g: (_unit_hash(g, seed), g))
        total = sum(len(groups[g]) for g in members)
        targets = (("test", round(total * test_fraction)), ("validation", round(total * validation_fraction)))
        filled = {"test": 0, "validation": 0}
        k = 0
        for split, target in targets:
            while k < len(members) and filled[split] < target:
                # For slides, stop before a slide that would overshoot more than it fills.
                size = len(groups[members[k]])
                if slides and filled[split] > 0 and filled[split] + size - target > target - filled[split]:
                    break
                for id_ in groups[members[k]]:
                    assignment[id_] = split
                filled[split] += size
                k += 1
        for g in members[k:]:
            for id_ in groups[g]:
                assignment[id_] = "train"
    return assignment


def check_pcam_files(manual_dir: str) -> None:
    """Raises BadInputError naming every missing PCam file (``.h5`` or ``.h5.gz``)."""
    if not os.path.isdir(manual_dir):
        raise BadInputError(f"manual dir {manual_dir!r} does not exist. {_MANUAL_DOWNLOAD_INSTRUCTIONS}")
    missing = [
        f"camelyonpatch_level_2_split_{name}_{key}.h5(.gz)"
        for name in PCAM_SPLITS.values()
        for key in ("x", "y")
        if not any(
            os.path.isfile(os.path.join(manual_dir, f"camelyonpatch_level_2_split_{name}_{key}{ext}"))
            for ext in (".h5", ".h5.gz")
        )
    ]
    if missing:
        raise BadInputError(
            f"{manual_dir}: {len(missing)} PatchCamelyon files missing: {', '.join(missing)}. "
            f"{_MANUAL_DOWNLOAD_INSTRUCTIONS}"
        )


def _pcam_file(manual_dir: str, stem: str, tmp: str) -> tuple[str, str]:
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
        f"{plain}(.gz) not found in the manual dir. {_MANUAL_DOWNLOAD_INSTRUCTIONS}"
    )


def _open_h5(h5py, path: str, shown: str):
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise BadInputError(f"{shown}: not a readable HDF5 file ({e})") from None
