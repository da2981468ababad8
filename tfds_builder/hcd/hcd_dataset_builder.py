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

Build with ``tfds build tfds_builder/hcd --manual_dir DIR --data_dir OUT --config kaggle``. Other
options make a custom config named by what differs (names.py holds the grammar), given as JSON:
``--config '{"name": "kaggle_folds5", "source": "kaggle", "folds": 5}'``: other fractions,
slide-grouped k-fold cross-validation (splits ``fold0..fold{K-1}`` + the same ``test``), dropping
exact duplicates across splits, or skipping bad examples.

What a build can be trusted for:

* It only reads the manual dir (a ``.h5.gz`` is decompressed into a temporary directory).
* It records the fingerprint of its inputs (inputs.py) in ``metadata.json``. Building again into
  the same data dir reuses the data set only if the inputs are the same; different inputs are
  refused with what differs, unless the caller asks to overwrite (then the new data set is built
  beside the old one and swapped in once complete).
* It is written by TFDS into an ``incomplete.*`` directory renamed into place at the end, under a
  lock, so a killed build leaves the previous state; the next build removes the leftovers and
  writes the same files as an uninterrupted one.
* Its metadata holds the leak audit of what it wrote (duplicates.py): exact and near-duplicate
  patches within and across splits, and slides in several splits.

Speed (2 cores): before anything is written, every labelled and test image is checked. For
an uncompressed RGB TIFF, which is how Kaggle ships them, only the header and the file size
are read. Then a thread pool reads each TIFF, encodes it as PNG and hashes its pixels (Pillow
releases the GIL), while TFDS serialises and writes on the main thread. benchmarks/build_dataset.py
measures patches per second.

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
import errno
import functools
import gzip
import io
import itertools
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import tempfile
from typing import Iterator

import numpy as np
import tensorflow_datasets.public_api as tfds

from . import bitdepth, duplicates, inputs, names
from .splits import SplitError, assign_folds, assign_splits, check_not_empty, unit_hash  # noqa: F401 (re-exported)

_HOMEPAGE = "https://www.kaggle.com/c/histopathologic-cancer-detection"
IMAGE_SHAPE = (96, 96, 3)
LABEL_NAMES = ("no_tumor", "tumor")
# Kaggle ids are 40-character hex strings. We accept any plain file stem (letters, digits, `_`,
# `-`, `.` not leading) so that renamed data works, but nothing that could leave `train/`.
_ID_RE = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]*$")
SLIDE_MAP_NAMES = ("patch_id_wsi.csv", "patch_id_wsi_full.csv", "patch_to_slide.csv")
PCAM_SPLITS = {"train": "train", "validation": "valid", "test": "test"}
_PCAM_CHUNK = 1024  # rows read from HDF5 at a time: the 6 GB train file is never loaded whole
# zlib level of the stored PNGs (lossless at every level). Level 0 (stored) is the fastest to
# decode, and reading back is what every epoch pays for; HcdConfig.png_compress_level trades that
# speed for disk space (benchmarks/build_dataset.py --png-level measures both).
PNG_COMPRESS_LEVEL = 0
INCOMPLETE_PREFIX = "incomplete."  # TFDS's name for a data set directory being written
LOCK_NAME = ".lock"
# Kill tests set this to "<point>[:<n>]": the process SIGKILLs itself the n-th time it reaches
# <point> (check: an image checked; example: an example yielded; finalize: every split generated,
# before the metadata is written; swap: between the two renames of an overwrite).
FAULT_ENV = "HCDTF_BUILD_FAULT"
_fault_counts: collections.Counter = collections.Counter()
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
    """The raw files in the manual dir, or the build's options or destination, are not usable."""


class InputsChangedError(BadInputError):
    """The data dir holds a build of this config from other inputs."""


class BuildLockedError(BadInputError):
    """Another process is building this config into the same data dir."""


def _fault(point: str) -> None:
    """The kill tests' fault-injection point (see FAULT_ENV); does nothing otherwise."""
    spec = os.environ.get(FAULT_ENV)
    if spec and spec.partition(":")[0] == point:
        _fault_counts[point] += 1
        if _fault_counts[point] == int(spec.partition(":")[2] or 1):
            os.kill(os.getpid(), signal.SIGKILL)


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
      folds: kaggle only: 0, or K >= 2 for K-fold cross-validation: the patches outside `test`
        are split into `fold0`..`fold{K-1}` (by slide with a slide map) instead of train/validation.
      drop_duplicates: kaggle only: leave out copies of a patch whose pixels are already in another
        split (test and validation keep theirs; kaggle_test is never changed).

    A config named by names.py's grammar (kaggle_skip_bad, kaggle_folds5, ...) must hold the
    options its name says, with the default split_seed and PNG level; name others freely.
    """

    source: str = "kaggle"
    validation_fraction: float = names.DEFAULT_VALIDATION_FRACTION
    test_fraction: float = names.DEFAULT_TEST_FRACTION
    split_seed: int = 0
    skip_bad_examples: bool = False
    png_compress_level: int | None = None
    folds: int = 0
    drop_duplicates: bool = False

    def options(self) -> names.BuildOptions:
        return names.BuildOptions(
            source=self.source, validation_fraction=self.validation_fraction, test_fraction=self.test_fraction,
            folds=self.folds, drop_duplicates=self.drop_duplicates, skip_bad_examples=self.skip_bad_examples,
        )  # fmt: skip

    @classmethod
    def from_options(cls, options: names.BuildOptions) -> "HcdConfig":
        description = f"{options.source} build with the options its name says ({names.GRAMMAR})."
        return cls(name=options.name, description=description, **dataclasses.asdict(options))

    def fingerprint_options(self) -> dict:
        """Every field that changes what is built (not the name or description)."""
        base = {f.name for f in dataclasses.fields(tfds.core.BuilderConfig)}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in base}


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

    @property
    def shown_data_dir(self) -> str:
        """The data dir as messages name it (an overwrite builds in a staging dir inside it)."""
        return getattr(self, "_shown_data_dir", None) or os.fspath(self.data_dir_root)

    @shown_data_dir.setter
    def shown_data_dir(self, value: str) -> None:
        self._shown_data_dir = value

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

    # ------------------------------------------------------------------ preparing
    def download_and_prepare(self, *, download_dir=None, download_config=None, **kwargs) -> None:
        """TFDS's download_and_prepare, made safe to repeat: the options are checked and the data
        dir proved writable before anything is written; under a lock, leftovers of a killed build
        are removed; an existing build is reused only if its inputs' fingerprint matches (an
        overwrite builds the new one beside it and swaps it in); a failed build leaves no
        directories behind that it created."""
        download_config = download_config or tfds.download.DownloadConfig()
        self.check_config()
        root, config_dir = os.fspath(self.data_dir_root), os.path.dirname(os.fspath(self.data_path))
        created = _dirs_to_create(root, config_dir)
        if self._reuse_read_only(root, download_dir, download_config):
            return
        _make_writable_dir(root)
        downloads = download_dir or os.path.join(root, "downloads")  # TFDS's defaults
        manual_dir = os.fspath(download_config.manual_dir or os.path.join(downloads, "manual"))
        prepare = functools.partial(super().download_and_prepare, download_dir=download_dir, **kwargs)
        with _build_lock(config_dir):
            try:
                _remove_incomplete(config_dir)
                if not self.is_prepared():
                    prepare(download_config=download_config)
                elif download_config.download_mode.overwrite_dataset:
                    self._rebuild_and_swap(download_dir, download_config, **kwargs)
                else:
                    self.check_same_inputs(manual_dir)
                    prepare(download_config=download_config)  # TFDS logs "Reusing dataset"
            except Exception as e:  # TFDS wraps a full disk as RuntimeError("ResourceExhaustedError: ...")
                reason = _storage_error(e)
                if reason is None:
                    raise
                raise BadInputError(
                    f"data dir {root}: {reason} while writing the data set; free space (or pass another "
                    "--data-dir) and rerun the same command: nothing of this build was kept"
                ) from None
            finally:
                if not self.is_prepared():
                    _prune_created(created, config_dir)

    def _reuse_read_only(self, root: str, download_dir, download_config) -> bool:
        """An existing build in a data dir that cannot be written (e.g. a read-only mount) is
        reused after the inputs check, which only reads; no lock is needed where nothing can
        write. False when there is something to build (then the data dir must be writable)."""
        if download_config.download_mode.overwrite_dataset or not self.is_prepared() or _is_writable(root):
            return False
        downloads = download_dir or os.path.join(root, "downloads")
        self.check_same_inputs(os.fspath(download_config.manual_dir or os.path.join(downloads, "manual")))
        _LOG.info("hcd: %s is read-only; reusing the build there (its inputs are unchanged)", self.data_path)
        return True

    def check_config(self) -> None:
        """BadInputError if the config's options cannot give a usable data set, or contradict its
        name."""
        cfg = self.builder_config
        try:
            options = cfg.options().check()
            named = names.parse(cfg.name) if names.follows_grammar(cfg.name) else None
        except names.BuildOptionsError as e:
            raise BadInputError(str(e)) from None
        if named is not None and (named != options or cfg.split_seed or cfg.png_compress_level is not None):
            raise BadInputError(
                f"config {cfg.name!r}: its name means {named}, with the default split_seed and "
                f"png_compress_level, but it sets {cfg.fingerprint_options()}: give it a name of its own"
            )
        self._png_level()

    def fingerprint(self, manual_dir: str) -> dict:
        """The fingerprint of what this config would read from ``manual_dir`` (inputs.py)."""
        if not os.path.isdir(manual_dir):
            raise BadInputError(f"manual dir {manual_dir!r} does not exist. {_MANUAL_DOWNLOAD_INSTRUCTIONS}")
        cfg = self.builder_config
        slide_map = find_slide_map(manual_dir) if cfg.source == "kaggle" else None
        return inputs.fingerprint(manual_dir, cfg.source, cfg.fingerprint_options(), slide_map)

    def check_same_inputs(self, manual_dir: str) -> None:
        """InputsChangedError unless this prepared build was made from the same inputs."""
        old = (self.info.metadata or {}).get("inputs")
        how = ("rebuild it with --overwrite (hcdtf build-dataset --overwrite; tfds build --overwrite), "
               "or build into another --data-dir")  # fmt: skip
        if not old:
            raise InputsChangedError(
                f"{self.data_path} holds a build that recorded no fingerprint of its inputs (made by an "
                f"older hcdtf), so it cannot be checked against {manual_dir}: {how}, or keep using it as it is"
            )
        diff = inputs.differences(old, self.fingerprint(manual_dir))
        if diff:
            raise InputsChangedError(
                f"{self.data_path} was built from {old.get('manual_dir')}, and the inputs in "
                f"{os.path.abspath(manual_dir)} differ ({'; '.join(diff)}): {how}"
            )

    def _rebuild_and_swap(self, download_dir, download_config, **kwargs) -> None:
        """Builds into a staging directory beside the old build, then swaps the two; a kill at
        any point leaves the old build, or no build (the next one rebuilds), never a mix."""
        config_dir = os.path.dirname(os.fspath(self.data_path))
        token = secrets.token_hex(3)
        staging = os.path.join(config_dir, f"{INCOMPLETE_PREFIX}overwrite_{token}")
        fresh = type(self)(config=self.builder_config, data_dir=staging)
        fresh.shown_data_dir = self.shown_data_dir  # errors name the data dir the user gave
        reuse = tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
        config = dataclasses.replace(download_config, download_mode=reuse)
        fresh.download_and_prepare(download_dir=download_dir, download_config=config, **kwargs)
        old = os.path.join(config_dir, f"{INCOMPLETE_PREFIX}replaced_{token}")
        os.replace(self.data_path, old)
        _fault("swap")
        os.replace(fresh.data_path, self.data_path)
        shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)
        self.info.read_from_directory(self.data_path)

    # ------------------------------------------------------------------ splits
    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        manual_dir = os.fspath(dl_manager.manual_dir)
        cfg = self.builder_config
        self.info.metadata["inputs"] = self.fingerprint(manual_dir)  # before anything is read
        self._records, self._pending, self._slides, self._dropped = duplicates.Records(), set(), None, None
        if cfg.source == "pcam":
            check_pcam_files(manual_dir)  # all six, before the long train split is written
            self.info.metadata["split_by"] = "official"
            self._pending = set(PCAM_SPLITS)
            return {
                split: self._generate_examples("pcam", split=split, manual_dir=manual_dir, name=name)
                for split, name in PCAM_SPLITS.items()
            }
        if cfg.source != "kaggle":
            raise ValueError(f"HcdConfig.source must be 'kaggle' or 'pcam', got {cfg.source!r}")
        return self._kaggle_splits(manual_dir)

    def _kaggle_splits(self, manual_dir: str) -> dict:
        cfg = self.builder_config
        strict, hint = not cfg.skip_bad_examples, self._skip_hint(manual_dir)
        labelled, problems = scan_kaggle(manual_dir, strict=strict, hint=hint)
        self._slides = read_slide_map(manual_dir, [i for i, _ in labelled])
        assignment = self._assign(labelled, self._slides)
        train_dir = os.path.join(manual_dir, "train")
        if cfg.drop_duplicates:
            labelled = self._drop_duplicates(train_dir, labelled, assignment)
        self._check_split_sizes(labelled, assignment)
        self.info.metadata["bad_examples"] = dict(problems)
        self.info.metadata["split_by"] = "slide" if self._slides else "patch"
        splits = {
            name: self._generate_examples(
                "kaggle", split=name, image_dir=train_dir, items=[(i, y) for i, y in labelled if assignment[i] == name]
            )
            for name in cfg.options().split_names()
        }
        test_problems: dict[str, int] = {}
        test_dir = os.path.join(manual_dir, "test")
        if os.path.isdir(test_dir):
            unlabelled, test_problems = scan_unlabelled(test_dir, strict=strict, hint=hint)
            self.info.metadata["bad_examples_kaggle_test"] = dict(test_problems)
            if unlabelled:
                splits["kaggle_test"] = self._generate_examples(
                    "kaggle", split="kaggle_test", image_dir=test_dir, items=[(i, -1) for i in unlabelled]
                )
        if cfg.skip_bad_examples:
            self._record_skipped(problems, test_problems)
        self._pending = set(splits)
        return splits

    def _assign(self, labelled: list[tuple[str, int]], slides: dict[str, str] | None) -> dict[str, str]:
        """{id: split name}: train/validation/test, or fold0..fold{K-1}/test for a fold build
        (its test split is exactly the non-fold build's: it depends only on test_fraction)."""
        cfg = self.builder_config
        val = cfg.validation_fraction if not cfg.folds else names.DEFAULT_VALIDATION_FRACTION
        assignment = assign_splits(labelled, val, cfg.test_fraction, seed=cfg.split_seed, slides=slides)
        if not cfg.folds:
            return assignment
        pool = [(i, l) for i, l in labelled if assignment[i] != "test"]
        try:
            folds = assign_folds(pool, cfg.folds, seed=cfg.split_seed, slides=slides)
        except SplitError as e:
            raise BadInputError(str(e)) from None
        assignment.update({i: f"fold{k}" for i, k in folds.items()})
        self.info.metadata["folds"] = {
            "k": cfg.folds,
            "grouped_by": "slide" if slides else "patch",
            "warning": None if slides else (
                "folds were drawn patch by patch (no patch-to-slide map): patches of one slide can "
                "be in several folds, which inflates cross-validation AUC"),
        }  # fmt: skip
        return assignment

    def _drop_duplicates(self, image_dir: str, labelled, assignment: dict[str, str]):
        """Leaves out copies of pixels that are already in another split (duplicates.py says which
        copy stays); records the counts and a few ids."""
        cfg = self.builder_config
        digests = _pixel_digests(image_dir, [i for i, _ in labelled])
        priority = ["test", "validation", "train"] if not cfg.folds else ["test", *names.fold_names(cfg.folds)]
        drops = duplicates.cross_split_drops(assignment, digests, priority)
        counts = collections.Counter(assignment[i] for i in drops)
        self.info.metadata["dropped_duplicates"] = {
            "counts": dict(sorted(counts.items())),
            "examples": [f"{i} ({assignment[i]}, kept in {keep})" for i, keep in sorted(drops.items())[:5]],
        }
        self._dropped = dict(counts)
        return [(i, l) for i, l in labelled if i not in drops]

    def _check_split_sizes(self, labelled, assignment: dict[str, str]) -> None:
        cfg = self.builder_config
        counts = {name: {0: 0, 1: 0} for name in cfg.options().split_names()}
        for id_, label in labelled:
            counts[assignment[id_]][label] += 1
        unit = "slides" if self._slides else "patches"
        hint = (f"{len(labelled)} labelled patches are too few for these fractions"
                f"{f' and {cfg.folds} folds' if cfg.folds else ''} (split by {unit}): raise the fractions"
                f"{', use fewer folds' if cfg.folds else ''} or add data")  # fmt: skip
        try:
            check_not_empty(counts, hint)
        except SplitError as e:
            raise BadInputError(str(e)) from None

    def _skip_hint(self, manual_dir: str) -> str:
        """How to go on past bad input, in both command lines' syntax."""
        options = dataclasses.replace(self.builder_config.options(), skip_bad_examples=True)
        fields = {"name": options.name, **{k: v for k, v in dataclasses.asdict(options).items()
                                           if v != getattr(names.BuildOptions(), k) or k == "source"}}
        json_config = json.dumps(fields)
        return (
            "Fix or remove these files/rows, or leave them out of the build (skip_bad_examples): "
            f"hcdtf build-dataset --manual-dir {manual_dir} --data-dir {self.shown_data_dir} "
            f"--dataset-config {self.builder_config.name} --skip-bad (with tfds build: --config '{json_config}')"
        )

    def _record_skipped(self, problems, test_problems) -> None:
        """Says what skip mode left out where users read it: the log, the description and the
        metadata (counts per kind in ``bad_examples``, the first files/rows in ``bad_examples_shown``)."""

        def fmt(counts):
            return ", ".join(f"{k}: {v}" for k, v in counts.items()) if counts else "none"

        self.info.metadata["bad_examples_shown"] = {
            "labelled": getattr(problems, "examples", {}),
            "kaggle_test": getattr(test_problems, "examples", {}),
        }
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
            raise BadInputError(f"png_compress_level must be 0..9, got {level}")
        return level

    def _generate_examples(self, source: str, split: str, **kwargs) -> Iterator:
        """Yields (key, example); keys are the patch ids, stable across builds. Every example's
        pixel hashes are recorded; after the last split, the audit summary goes to the metadata."""
        examples = self._generate_pcam(**kwargs) if source == "pcam" else self._generate_kaggle(**kwargs)
        for id_, example, hashes in examples:
            self._records.add(split, id_, example["label"], *hashes)
            _fault("example")
            yield id_, example
        self._pending.discard(split)
        if not self._pending:
            _fault("finalize")
            self.info.metadata["audit"] = duplicates.summarize(
                self._records, slides=self._slides, dropped=self._dropped
            )

    def _generate_kaggle(self, image_dir: str, items: list[tuple[str, int]]) -> Iterator:
        # Reading the TIFF, encoding the PNG and hashing the pixels (the bulk of the work) happen
        # in worker threads (Pillow and hashlib release the GIL); TFDS only serialises and writes
        # the bytes. A sliding window keeps the workers busy while TFDS writes and bounds memory.
        level = self._png_level()
        paths = (os.path.join(image_dir, i + ".tif") for i, _ in items)
        for (id_, label), (png, hashes) in zip(items, _ordered_map(lambda p: _tif_to_png(p, level), paths)):
            yield id_, {"id": id_, "image": png, "label": label}, hashes

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
                encoded = _ordered_map(lambda r: (r[0], encode_png(r[1], level), r[2], _hashes(r[1])), rows())
                for index, png, label, hashes in encoded:
                    id_ = f"{name}_{index}"
                    yield id_, {"id": id_, "image": png, "label": label}, hashes


# ---------------------------------------------------------------------- helpers (also tested)
def read_tif(path: str) -> np.ndarray:
    """Reads a 96x96 RGB uint8 patch. Raises BadInputError naming the file otherwise."""
    return _read_checked(path, lambda im: np.asarray(im))


def check_tif(path: str) -> None:
    """Raises the BadInputError that :func:`read_tif` would, more cheaply: an uncompressed RGB
    TIFF (the Kaggle files) whose header is fine and whose pixel bytes all lie inside the file
    cannot fail to decode, so only its header is read; anything else is decoded."""
    _read_checked(path, lambda im: None if _raw_rgb_complete(path, im) else np.asarray(im))


def _hashes(image: np.ndarray) -> tuple[bytes, int, bool]:
    """(pixel digest, dHash, low detail) of one patch (duplicates.py)."""
    digests, dhash, low = duplicates.image_hashes(image)
    return digests[0], int(dhash[0]), bool(low[0])


def _tif_to_png(path: str, level: int) -> tuple[bytes, tuple[bytes, int, bool]]:
    """read_tif + encode_png (same pixels, one decode), and the pixels' hashes."""
    buffer = io.BytesIO()

    def save(im):
        im.load()
        _check_mode_shape(path, im.mode, (im.size[1], im.size[0], 3), np.uint8)
        im.save(buffer, format="png", compress_level=level)
        return np.asarray(im)

    pixels = _read_checked(path, save, check=False)
    return buffer.getvalue(), _hashes(pixels)


def _read_checked(path: str, fn, check: bool = True):
    from PIL import Image  # lazy: only the kaggle config needs Pillow

    try:
        with Image.open(path) as im:
            mode = im.mode
            wide = mode == "RGB" and bitdepth.not_8bit(im)  # 16-bit RGB opens as "RGB": the header tells
            if wide:
                raise BadInputError(f"{path}: expected 8-bit RGB (uint8), got {wide}")
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
            _fault("check")
            if result:
                bad.append(result)
            if bar is not None and (k + 1) % 256 == 0:
                bar.update(256)
        if bar is not None:
            bar.update(len(ids) % 256)
    return bad


class ProblemCounts(dict):
    """{kind: count} of bad input, with ``examples``: {kind: the first few files/rows}."""

    examples: dict[str, list[str]]


_DEFAULT_SKIP_HINT = (
    "Fix or remove these files/rows, or leave them out of the build (skip_bad_examples): "
    "hcdtf build-dataset ... --skip-bad (with tfds build: --config "
    '\'{"name": "kaggle_skip_bad", "source": "kaggle", "skip_bad_examples": true}\')'
)


def _raise_or_record(problems: dict[str, list[str]], where: str, strict: bool, hint: str | None) -> ProblemCounts:
    counts = ProblemCounts((kind, len(items)) for kind, items in problems.items() if items)
    counts.examples = {kind: items[:3] for kind, items in problems.items() if items}
    if counts and strict:
        lines = [f"{where}: found bad input ({sum(counts.values())} problems):"]
        for kind, items in problems.items():
            if items:
                shown = "; ".join(items[:5]) + (f"; ... ({len(items) - 5} more)" if len(items) > 5 else "")
                lines.append(f"  {kind}: {len(items)}: {shown}")
        lines.append(hint or _DEFAULT_SKIP_HINT)
        raise BadInputError("\n".join(lines))
    return counts


_KAGGLE_PROBLEMS = ("unsafe_id", "bad_label", "duplicate_id", "missing_file", "file_without_id",
                    "corrupt_image", "wrong_shape", "not_uint8_rgb")


def _read_labels(csv_path: str, problems: dict[str, list[str]]) -> tuple[dict[str, int], set[str], set[str]]:
    """The rows of train_labels.csv: ({id: label} of the usable rows, duplicated ids, ids whose
    label is bad). Each bad row is added to ``problems`` under its kind."""
    rows: dict[str, int] = {}
    first_row: dict[str, int] = {}
    duplicated: set[str] = set()
    badly_labelled: set[str] = set()
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
            elif raw not in ("0", "1"):
                problems["bad_label"].append(f"{where}: label {raw!r} for id {id_!r} is not 0 or 1")
                badly_labelled.add(id_)
            elif id_ in rows:
                first = first_row[id_]
                problems["duplicate_id"].append(f"{where}: id {id_!r} appears again (first in row {first})")
                duplicated.add(id_)
            else:
                rows[id_], first_row[id_] = int(raw), line_no
    return rows, duplicated, badly_labelled


def scan_kaggle(
    manual_dir: str, strict: bool = True, hint: str | None = None
) -> tuple[list[tuple[str, int]], ProblemCounts]:
    """Checks a Kaggle-layout manual dir. Returns ([(id, label)] sorted by id, problem counts).

    Every kind of problem is counted over the whole data set before anything is written, so one
    run reports all of them, each problem once: unsafe ids, bad labels, duplicate ids, ids without
    a file, files without an id, unreadable / wrong-shape / non-uint8 images. ``hint``: the last
    line of the error in strict mode (how to go on).
    """
    if not os.path.isdir(manual_dir):
        raise BadInputError(f"manual dir {manual_dir!r} does not exist. {_MANUAL_DOWNLOAD_INSTRUCTIONS}")
    csv_path = os.path.join(manual_dir, "train_labels.csv")
    train_dir = os.path.join(manual_dir, "train")
    if not os.path.isfile(csv_path):
        raise BadInputError(f"{csv_path} not found. {_MANUAL_DOWNLOAD_INSTRUCTIONS}")
    if not os.path.isdir(train_dir):
        raise BadInputError(f"{train_dir} not found (the directory of <id>.tif patches).")

    problems: dict[str, list[str]] = collections.OrderedDict((k, []) for k in _KAGGLE_PROBLEMS)
    rows, duplicated, badly_labelled = _read_labels(csv_path, problems)
    on_disk = {n[:-4] for n in os.listdir(train_dir) if n.endswith(".tif")}
    for id_ in sorted(set(rows) - on_disk):
        problems["missing_file"].append(f"{os.path.join(train_dir, id_ + '.tif')}: listed in the CSV, no file")
    # A file whose row has a bad label is that one problem, not also a file "without an id".
    for id_ in sorted(on_disk - set(rows) - badly_labelled):
        problems["file_without_id"].append(f"{os.path.join(train_dir, id_ + '.tif')}: not in {csv_path}")
    present = sorted(set(rows) & on_disk)
    bad_images = set()
    for id_, kind, message in _check_images(train_dir, present):
        bad_images.add(id_)
        problems[kind].append(message)
    # Duplicate ids are ambiguous (which label?): they are dropped entirely in skip mode.
    counts = _raise_or_record(problems, manual_dir, strict, hint)
    labelled = [(i, rows[i]) for i in present if i not in bad_images and i not in duplicated]
    if not labelled:
        raise BadInputError(f"{csv_path}: no usable labelled patches")
    if len({l for _, l in labelled}) < 2:
        raise BadInputError(f"{csv_path}: all usable patches have the same label; both 0 and 1 are needed")
    return labelled, counts


def scan_unlabelled(test_dir: str, strict: bool = True, hint: str | None = None) -> tuple[list[str], ProblemCounts]:
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
    counts = _raise_or_record(problems, test_dir, strict, hint)
    return [i for i in ids if i not in bad], counts


def find_slide_map(manual_dir: str) -> str | None:
    """The patch-to-slide mapping file of a Kaggle manual dir (first of SLIDE_MAP_NAMES), if any."""
    return next(
        (os.path.join(manual_dir, n) for n in SLIDE_MAP_NAMES if os.path.isfile(os.path.join(manual_dir, n))),
        None,
    )


def read_slide_csv(path: str) -> dict[str, str]:
    """{patch id: slide} from a CSV with the columns id,wsi."""
    mapping: dict[str, str] = {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "id" not in reader.fieldnames or "wsi" not in reader.fieldnames:
                raise BadInputError(f"{path}: needs the columns id,wsi, got {reader.fieldnames!r}")
            for row in reader:
                mapping[(row["id"] or "").strip()] = (row["wsi"] or "").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise BadInputError(f"{path}: cannot read the slide map ({e})") from None
    return mapping


def read_slide_map(manual_dir: str, ids: list[str]) -> dict[str, str] | None:
    """Reads the optional patch-to-slide mapping (``id,wsi``). Every labelled id must be mapped."""
    path = find_slide_map(manual_dir)
    if path is None:
        return None
    mapping = read_slide_csv(path)
    missing = [i for i in ids if i not in mapping]
    if missing:
        raise BadInputError(
            f"{path}: {len(missing)} labelled ids have no slide (e.g. {missing[:3]}); a split by "
            "slide needs every id mapped. Complete the mapping or remove the file to split by patch."
        )
    return {i: mapping[i] for i in ids}


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


def _pixel_digests(image_dir: str, ids: list[str]) -> dict[str, bytes]:
    """{id: pixel digest} of already checked images (threads): what drop_duplicates compares."""
    digest = lambda id_: _hashes(read_tif(os.path.join(image_dir, id_ + ".tif")))[0]  # noqa: E731
    return dict(zip(ids, _ordered_map(digest, ids)))


# ------------------------------------------------------------------ the data dir: lock, leftovers
def _dirs_to_create(root: str, config_dir: str) -> list[str]:
    """The directories a build of ``config_dir`` would create, outermost first (each is removed
    again, if empty, when the build fails)."""
    hcd_dir = os.path.dirname(config_dir)
    candidates = [root, os.path.join(root, "downloads"), hcd_dir, os.path.join(hcd_dir, ".config"), config_dir]
    return [p for p in candidates if not os.path.exists(p)]


def _is_writable(root: str) -> bool:
    """Whether a file can be created in ``root`` (a probe, created and removed)."""
    try:
        fd, probe = tempfile.mkstemp(dir=root, prefix=".hcdtf_write_probe_")
    except OSError:
        return False
    os.close(fd)
    os.unlink(probe)
    return True


def _make_writable_dir(root: str) -> None:
    """Creates the data dir if needed and proves it writable: one clear error naming it otherwise
    (a read-only or full disk, a path through a file, missing permissions)."""
    try:
        os.makedirs(root, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=root, prefix=".hcdtf_write_probe_")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise BadInputError(
            f"data dir {root}: cannot write there ({e.strerror or e}): pass a writable --data-dir"
        ) from None


@contextlib.contextmanager
def _build_lock(config_dir: str):
    """Holds ``config_dir/.lock`` (flock) for a build; another build of the same config into the
    same data dir fails at once, naming the holder. The kernel drops the lock of a killed process,
    so a lock never goes stale."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock
        yield
        return
    os.makedirs(config_dir, exist_ok=True)
    path = os.path.join(config_dir, LOCK_NAME)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise BuildLockedError(
                f"{config_dir}: this data set is being built by {holder}: wait for that build to end"
            ) from None
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        os.close(fd)  # a failed build removed the file after we opened it: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        yield
    finally:
        os.close(fd)


_STORAGE_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "the disk quota ran out",
                   errno.EROFS: "the file system is read-only", errno.EFBIG: "a file grew too large"}


def _storage_error(error: BaseException) -> str | None:
    """What went wrong, if ``error`` (or what it wraps) is the storage refusing a write: TFDS and
    TensorFlow re-raise OSError(ENOSPC) as RuntimeError / ResourceExhaustedError text."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in _STORAGE_ERRNOS:
            return _STORAGE_ERRNOS[error.errno]
        text = str(error)
        for errno_, phrase in ((errno.ENOSPC, "No space left on device"), (errno.EDQUOT, "Disk quota exceeded"),
                               (errno.EROFS, "Read-only file system")):
            if phrase in text:
                return _STORAGE_ERRNOS[errno_]
        error = error.__cause__ or error.__context__
    return None


def _remove_incomplete(config_dir: str) -> None:
    """Removes what killed builds of this config left: TFDS's ``incomplete.*`` directories (and an
    overwrite's staging and replaced directories, named the same way). Called under the lock."""
    leftovers = [e.path for e in os.scandir(config_dir) if e.name.startswith(INCOMPLETE_PREFIX) and e.is_dir()]
    for path in leftovers:
        shutil.rmtree(path)
    if leftovers:
        _LOG.warning("hcd: removed %d leftover directories of an interrupted build in %s",
                     len(leftovers), config_dir)


def _prune_created(created: list[str], config_dir: str) -> None:
    """After a failed build (under its lock): removes the directories it created, if they hold
    nothing else, and its lock file; the data dir is left as it was."""
    with contextlib.suppress(OSError):
        if set(os.listdir(config_dir)) <= {LOCK_NAME}:
            os.unlink(os.path.join(config_dir, LOCK_NAME))
    for path in reversed(created):
        if os.path.basename(path) == ".config":
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(path, "metadata.json"))  # TFDS's default-config note
        for dirpath, _, _ in sorted(os.walk(path, topdown=False), key=lambda w: -len(w[0])):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)  # only empty directories go
