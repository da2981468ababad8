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

This file is the TFDS shape only; each concern lives in its own module beside it:

* raw files: kaggle.py (labels CSV, TIFF scan, slide map), images.py (one patch: read, check,
  PNG, hashes), pcam.py (HDF5); what a kaggle build writes where: plan.py, splits.py, names.py;
* trust in a build: inputs.py (the fingerprint in ``metadata.json``: a build into the same data
  dir is reused only from the same inputs), lock.py (one build at a time), datadir.py (leftovers
  of killed builds removed, a failed build leaves nothing), swap.py (``--overwrite`` builds
  beside the old build and swaps it in once complete), duplicates.py (the leak audit in the
  metadata);
* speed: pool.py (the images are checked, read, encoded and hashed on a thread pool while TFDS
  writes on the main thread; benchmarks/build_dataset.py measures patches per second);
* errors.py (every refusal is one BadInputError naming the file, row or flag), faults.py (the
  kill tests' injection points).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Iterator

import tensorflow_datasets.public_api as tfds

from . import datadir, duplicates, faults, images, inputs, kaggle, lock, names, pcam, plan, pool, swap
from .errors import MANUAL_DOWNLOAD_INSTRUCTIONS, no_manual_dir

# Names other code imports from this module (hcdtf/, tests/, benchmarks/).
from .errors import BadInputError, BuildLockedError, InputsChangedError  # noqa: F401
from .faults import FAULT_ENV  # noqa: F401
from .kaggle import read_slide_csv, read_slide_map, scan_kaggle, scan_unlabelled  # noqa: F401
from .pcam import SPLITS as PCAM_SPLITS  # noqa: F401
from .splits import SplitError, assign_folds, assign_splits  # noqa: F401

_HOMEPAGE = "https://www.kaggle.com/c/histopathologic-cancer-detection"
LABEL_NAMES = ("no_tumor", "tumor")
# zlib level of the stored PNGs (lossless at every level). Level 0 (stored) is the fastest to
# decode, and reading back is what every epoch pays for; HcdConfig.png_compress_level trades that
# speed for disk space (benchmarks/build_dataset.py --png-level measures both).
PNG_COMPRESS_LEVEL = 0
_LOG = logging.getLogger(__name__)


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
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
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
                    "image": tfds.features.Image(shape=images.IMAGE_SHAPE, encoding_format="png"),
                    "label": tfds.features.ClassLabel(names=LABEL_NAMES),
                }
            ),
            supervised_keys=("image", "label"),
            homepage=_HOMEPAGE,
            metadata=tfds.core.MetadataDict(),
        )

    def download_and_prepare(self, *, download_dir=None, download_config=None, **kwargs) -> None:
        """TFDS's download_and_prepare, made safe to repeat: the options are checked and the data
        dir proved writable before anything is written; under a lock, leftovers of a killed build
        are removed; an existing build is reused only if its inputs' fingerprint matches (an
        overwrite builds the new one beside it and swaps it in); a failed build leaves no
        directories behind that it created."""
        download_config = download_config or tfds.download.DownloadConfig()
        overwrite = download_config.download_mode.overwrite_dataset
        self.check_config()
        root, config_dir = os.fspath(self.data_dir_root), os.path.dirname(os.fspath(self.data_path))
        downloads = download_dir or os.path.join(root, "downloads")  # TFDS's defaults
        manual_dir = os.fspath(download_config.manual_dir or os.path.join(downloads, "manual"))
        created = datadir.dirs_to_create(root, config_dir)
        if not overwrite and self.is_prepared() and not datadir.is_writable(root):
            # A read-only data dir (e.g. a mount): the inputs check only reads, and nothing can
            # write there, so no lock is needed.
            self.check_same_inputs(manual_dir)
            _LOG.info("hcd: %s is read-only; reusing the build there (its inputs are unchanged)", self.data_path)
            return
        datadir.make_writable_dir(root)
        prepare = functools.partial(super().download_and_prepare, download_dir=download_dir, **kwargs)
        with lock.build_lock(config_dir), datadir.failed_builds_leave_nothing(
            root, config_dir, created, self.is_prepared
        ):
            datadir.remove_incomplete(config_dir)
            if not self.is_prepared():
                prepare(download_config=download_config)
            elif overwrite:
                swap.rebuild_and_swap(self, download_dir, download_config, **kwargs)
            else:
                self.check_same_inputs(manual_dir)
                prepare(download_config=download_config)  # TFDS logs "Reusing dataset"

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
            raise no_manual_dir(manual_dir)
        cfg = self.builder_config
        slide_map = kaggle.find_slide_map(manual_dir) if cfg.source == "kaggle" else None
        return inputs.fingerprint(manual_dir, cfg.source, cfg.fingerprint_options(), slide_map)

    def check_same_inputs(self, manual_dir: str) -> None:
        """InputsChangedError unless this prepared build was made from the same inputs."""
        recorded = (self.info.metadata or {}).get("inputs")
        inputs.check_unchanged(self.data_path, recorded, manual_dir, lambda: self.fingerprint(manual_dir))

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        manual_dir = os.fspath(dl_manager.manual_dir)
        cfg = self.builder_config
        self.info.metadata["inputs"] = self.fingerprint(manual_dir)  # before anything is read
        self._records, self._slides, self._dropped = duplicates.Records(), None, None
        level = self._png_level()
        if cfg.source == "pcam":
            pcam.check_files(manual_dir)  # all six, before the long train split is written
            self.info.metadata["split_by"] = "official"
            examples = {split: pcam.examples(manual_dir, name, level) for split, name in pcam.SPLITS.items()}
        elif cfg.source == "kaggle":
            kept = plan.plan_kaggle(manual_dir, cfg, hint=plan.skip_hint(cfg, manual_dir, self.shown_data_dir))
            self.info.metadata.update(kept.metadata)
            self._slides, self._dropped = kept.slides, kept.dropped
            if cfg.skip_bad_examples:  # what was left out, where users read it
                self.info.metadata["bad_examples_shown"], note = plan.skipped(kept)
                self.info.as_proto.description = (self.info.description or "") + note
            examples = {split: _kaggle_examples(image_dir, items, level)
                        for split, (image_dir, items) in kept.splits.items()}  # fmt: skip
        else:
            raise ValueError(f"HcdConfig.source must be 'kaggle' or 'pcam', got {cfg.source!r}")
        self._pending = set(examples)
        return {split: self._generate_examples(split, patches) for split, patches in examples.items()}

    def _generate_examples(self, split: str, patches: Iterator) -> Iterator:
        """Yields (key, example); keys are the patch ids, stable across builds. Every example's
        pixel hashes are recorded; after the last split, the audit summary goes to the metadata."""
        for id_, example, hashes in patches:
            self._records.add(split, id_, example["label"], *hashes)
            faults.fault("example")
            yield id_, example
        self._pending.discard(split)
        if not self._pending:
            faults.fault("finalize")
            self.info.metadata["audit"] = duplicates.summarize(
                self._records, slides=self._slides, dropped=self._dropped
            )

    def _png_level(self) -> int:
        level = getattr(self.builder_config, "png_compress_level", None)
        level = PNG_COMPRESS_LEVEL if level is None else int(level)
        if not 0 <= level <= 9:
            raise BadInputError(f"png_compress_level must be 0..9, got {level}")
        return level


def _kaggle_examples(image_dir: str, items: list[tuple[str, int]], level: int) -> Iterator:
    """Yields (id, example, pixel hashes) of the Kaggle patches ``items`` ([(id, label)]), in
    order. Reading the TIFF, encoding the PNG and hashing the pixels (the bulk of the work) run on
    the thread pool; a sliding window keeps the workers busy while TFDS writes and bounds memory."""
    paths = (os.path.join(image_dir, i + ".tif") for i, _ in items)
    for (id_, label), (png, hashes) in zip(items, pool.ordered_map(lambda p: images.tif_to_png(p, level), paths)):
        yield id_, {"id": id_, "image": png, "label": label}, hashes
