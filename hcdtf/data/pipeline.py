"""TFDS -> tf.data: build and find the `hcd` data set (configs, folds), read, augment, cache,
batch, prefetch.

Every pipeline yields raw uint8 RGB patches: the models preprocess inside the graph, so training,
evaluation and every export see the same input. Augmentation works in float and rounds back to
uint8 for that reason.
"""

from __future__ import annotations

import os
import pathlib
import re
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # pragma: no cover
    import tensorflow as tf

    from hcdtf.config import DataConfig

# The resolution of Kaggle/PCam patches, and so of every model trained on them: level 2 of
# Camelyon16's 40x slides (0.243 um/px at level 0), in um per pixel.
PATCH_MPP = 0.972

# Macenko/Ruifrok H&E-DAB stain vectors (rows: haematoxylin, eosin, DAB) in optical density.
_RGB_FROM_HED = (
    (0.65, 0.70, 0.29),
    (0.07, 0.99, 0.11),
    (0.27, 0.57, 0.78),
)


class DatasetNotBuiltError(FileNotFoundError):
    """The TFDS data set has not been built in ``data_dir``."""


def replace_data(cfg: "DataConfig", **changes) -> "DataConfig":
    """A copy of ``cfg`` with some fields changed (the caller's config is left alone)."""
    import dataclasses

    return dataclasses.replace(cfg, **changes)


def builder_dir() -> pathlib.Path:
    """The `tfds build` directory of our builder (tfds_builder/hcd)."""
    import tfds_builder.hcd

    return pathlib.Path(tfds_builder.hcd.__file__).parent


def built_configs(data_dir: str) -> list[str]:
    """Names of the `hcd` configs built in ``data_dir`` (a directory listing: no TensorFlow)."""
    root = pathlib.Path(os.path.expanduser(data_dir)) / "hcd"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and built_version_dir(data_dir, p.name))


def built_version_dir(data_dir: str, config: str) -> pathlib.Path | None:
    """``data_dir/hcd/<config>/<version>`` of a finished build (the highest version), or None."""
    config_dir = pathlib.Path(os.path.expanduser(data_dir)) / "hcd" / config
    if not config_dir.is_dir():
        return None
    versions = [p for p in config_dir.iterdir() if re.fullmatch(r"\d+\.\d+\.\d+", p.name)
                and (p / "dataset_info.json").is_file()]  # fmt: skip
    return max(versions, key=lambda p: tuple(int(x) for x in p.name.split(".")), default=None)


def _not_built(data_dir: str, config: str) -> str:
    from tfds_builder.hcd import names

    built = built_configs(data_dir)
    there = f"built there: {', '.join(built)}" if built else "nothing is built there yet"
    if not names.follows_grammar(config):
        return (f"--dataset-config {config!r} (data.dataset_config) is neither built in {data_dir!r} ({there}) "
                f"nor a config hcdtf can build ({names.GRAMMAR}, e.g. {', '.join(names.EXAMPLES)})")
    return (
        f"the hcd/{config} data set is not built in {data_dir!r} ({there}). Build it with: hcdtf build-dataset "
        f"--manual-dir DIR --data-dir {data_dir} --dataset-config {config} (or: tfds build {builder_dir()} "
        f"--manual_dir DIR --data_dir {data_dir} --config {config}); for a synthetic sample first run: "
        "hcdtf sample-data DIR"
    )


def get_builder(data_dir: str, config: str = "kaggle"):
    """Our TFDS builder for ``config``: a named config (``kaggle``, ``pcam``), any name of the
    builder's grammar (``kaggle_skip_bad``, ``kaggle_folds5``, ...; built or not), or another
    custom config built earlier (e.g. by ``tfds build --config '{...}'``), read back from its
    directory. DatasetNotBuiltError for anything else, listing what is built in ``data_dir``."""
    import tensorflow_datasets as tfds

    from tfds_builder.hcd import hcd_dataset_builder as mod
    from tfds_builder.hcd import names

    data_dir = os.path.expanduser(data_dir)
    if config in {c.name for c in mod.Builder.BUILDER_CONFIGS}:
        return mod.Builder(config=config, data_dir=data_dir)
    if names.follows_grammar(config):
        return mod.Builder(config=mod.HcdConfig.from_options(names.parse(config)), data_dir=data_dir)
    version_dir = built_version_dir(data_dir, config)
    if version_dir is not None:
        return tfds.builder_from_directory(str(version_dir))
    raise DatasetNotBuiltError(_not_built(data_dir, config))


def build_dataset(
    manual_dir: str,
    data_dir: str,
    config: str = "kaggle",
    skip_bad_examples: bool = False,
    validation_fraction: float | None = None,
    test_fraction: float | None = None,
    *,
    folds: int | None = None,
    drop_duplicates: bool = False,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
):
    """Builds (prepares) the data set from ``manual_dir``: what ``tfds build`` does, in-process.

    ``config`` is a config name (``kaggle``, ``pcam``, or one of the builder's grammar such as
    ``kaggle_folds5``); the other options are applied on top of it and make a custom config whose
    name says what differs (``kaggle_skip_bad``, ``kaggle_val0.2_test0.1``, ``kaggle_folds5_dedup``):
    train with ``--dataset-config`` set to that name. Options that would leave a split empty fail
    before anything is written. An existing build is reused only if it was made from the same
    inputs (else InputsChangedError says what differs); ``overwrite`` rebuilds it, swapping the
    new build in only once it is complete. ``log`` gets what the user should read: reuse, what
    skip mode left out, dropped duplicates, the leak audit.
    """
    import tensorflow_datasets as tfds

    from tfds_builder.hcd import names

    options = names.resolve(config, validation_fraction=validation_fraction, test_fraction=test_fraction,
                            folds=folds, drop_duplicates=drop_duplicates, skip_bad_examples=skip_bad_examples)
    if not os.path.isdir(manual_dir):
        raise FileNotFoundError(
            f"manual dir {manual_dir!r} does not exist: pass the directory holding the Kaggle "
            "files (train/, train_labels.csv) or the PCam .h5 files"
        )
    data_dir = os.path.expanduser(data_dir)
    builder = get_builder(data_dir, options.name)
    reused = builder.is_prepared() and not overwrite
    mode = tfds.download.GenerateMode
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=os.path.abspath(manual_dir),
        download_mode=mode.REUSE_CACHE_IF_EXISTS if overwrite else mode.REUSE_DATASET_IF_EXISTS,
    ))  # fmt: skip
    for line in describe_build(builder, reused=reused):
        (log or (lambda _: None))(line)
    return builder


def describe_build(builder, reused: bool = False) -> list[str]:
    """What a user should read about a build, one line each (from its metadata)."""
    meta = builder.info.metadata or {}
    lines = []
    if reused:
        recorded = (meta.get("inputs") or {}).get("manual_dir")
        lines.append(f"already built from identical inputs ({recorded}), reusing {builder.data_dir}")
    shown = meta.get("bad_examples_shown")
    if shown is not None:
        for where, key in (("labelled", "bad_examples"), ("kaggle_test", "bad_examples_kaggle_test")):
            counts = meta.get(key) or {}
            kinds = "; ".join(f"{k}: {n} (e.g. {' | '.join(shown.get(where, {}).get(k, [])[:2])})"
                              for k, n in counts.items())  # fmt: skip
            lines.append(f"--skip-bad left out of the {where} patches: {kinds or 'nothing'}")
    dropped = meta.get("dropped_duplicates")
    if dropped:
        counts = ", ".join(f"{k}: {v}" for k, v in dropped["counts"].items()) or "none"
        lines.append(f"--drop-duplicates left out copies of patches already in another split: {counts}")
    folds = meta.get("folds")
    if folds and folds.get("warning"):
        lines.append(f"warning: {folds['warning']}")
    if meta.get("audit"):
        lines.append(f"leak audit: {meta['audit']['headline']}")
    return lines


def load_builder(cfg: "DataConfig"):
    """The prepared builder for ``cfg``; a clear error says how to build it when missing, and
    which configs are built in the data dir."""
    builder = get_builder(cfg.data_dir, cfg.dataset_config)
    if not builder.is_prepared():
        raise DatasetNotBuiltError(_not_built(cfg.data_dir, cfg.dataset_config))
    return builder


# ---------------------------------------------------------------------------- splits and folds
def fold_splits(k: int, folds: int) -> tuple[str, str]:
    """(train, validation) TFDS split specs of fold ``k`` of a ``folds``-fold build: fold k
    validates, the other folds train. ``fold_splits(1, 4) == ("fold0+fold2+fold3", "fold1")``."""
    if not 0 <= k < folds:
        raise ValueError(f"data.fold must be in 0..{folds - 1} for a {folds}-fold build, got {k}")
    return "+".join(f"fold{j}" for j in range(folds) if j != k), f"fold{k}"


def num_folds(info) -> int:
    """K of a K-fold build (its splits fold0..fold{K-1}); 0 for any other build."""
    return sum(1 for s in info.splits if re.fullmatch(r"fold\d+", s))


def resolve_split(cfg: "DataConfig", split: str, info) -> str:
    """The TFDS split spec behind a split name of ``cfg``. In a fold build, ``cfg.train_split``
    and ``cfg.validation_split`` (train/validation) mean the folds of ``cfg.fold``; every other
    name (test, kaggle_test, fold2, fold0+fold1) is taken as it is."""
    folds = num_folds(info)
    logical = split in (cfg.train_split, cfg.validation_split) and split not in info.splits
    if folds and logical:
        if cfg.fold is None:
            raise ValueError(
                f"{cfg.dataset}/{cfg.dataset_config} is a {folds}-fold build (splits fold0..fold{folds - 1}, "
                f"test): choose the validation fold with --set data.fold=K (K in 0..{folds - 1})"
            )
        train, validation = fold_splits(cfg.fold, folds)
        return train if split == cfg.train_split else validation
    if cfg.fold is not None and not folds:
        raise ValueError(
            f"data.fold={cfg.fold} needs a fold build (e.g. --dataset-config kaggle_folds5); "
            f"{cfg.dataset}/{cfg.dataset_config} has no folds"
        )
    for part in split.split("+"):
        if part not in info.splits:
            raise ValueError(f"split {part!r} not in the built data set; available: {', '.join(info.splits)}")
    return split


def _limit(cfg: "DataConfig", split: str):
    return cfg.max_train_examples if split == cfg.train_split else cfg.max_eval_examples


def split_spec(cfg: "DataConfig", split: str, builder=None) -> str:
    """The TFDS split string of a split name (folds resolved), with the example limit applied:
    a limit above the split's size means the whole split (TFDS itself refuses such a slice); a
    limit on several folds takes from each in proportion to its size."""
    info = (builder or load_builder(cfg)).info
    spec = resolve_split(cfg, split, info)
    limit = _limit(cfg, split)
    parts = spec.split("+")
    sizes = [info.splits[p].num_examples for p in parts]
    if not limit or limit >= sum(sizes):
        return spec
    shares = [limit * n // sum(sizes) for n in sizes]
    for k in range(limit - sum(shares)):  # the remainder, one each, to the first parts
        shares[k] += 1
    return "+".join(f"{p}[:{n}]" for p, n in zip(parts, shares) if n)


def num_examples(cfg: "DataConfig", split: str) -> int:
    builder = load_builder(cfg)
    info = builder.info
    n = sum(info.splits[p].num_examples for p in resolve_split(cfg, split, info).split("+"))
    if cfg.centres is not None or cfg.test_centre is not None:  # leave-one-centre-out (data/centres.py)
        from hcdtf.data import centres

        n = centres.count(builder, cfg, split, resolve_split(cfg, split, info).split("+"))
    limit = _limit(cfg, split)
    return min(n, limit) if limit else n


# ---------------------------------------------------------------------------- augmentation
def _hed_jitter(image: "tf.Tensor", seed: "tf.Tensor", sigma: float) -> "tf.Tensor":
    """Stain augmentation in HED space (Tellez et al. 2018): scale and shift each stain's optical
    density, then convert back to RGB. ``image`` is float32 RGB in [0, 1]."""
    import tensorflow as tf

    rgb_from_hed = tf.constant(_RGB_FROM_HED, tf.float32)
    rgb_from_hed = rgb_from_hed / tf.norm(rgb_from_hed, axis=1, keepdims=True)
    hed_from_rgb = tf.linalg.inv(rgb_from_hed)
    od = -tf.math.log(tf.clip_by_value(image, 1e-6, 1.0))
    hed = tf.reshape(od, (-1, 3)) @ hed_from_rgb
    alpha = tf.random.stateless_uniform((1, 3), seed, 1.0 - sigma, 1.0 + sigma)
    beta = tf.random.stateless_uniform((1, 3), seed + 1, -sigma, sigma)
    od = (hed * alpha + beta) @ rgb_from_hed
    return tf.reshape(tf.exp(-od), tf.shape(image))


def augment(image: "tf.Tensor", seed: "tf.Tensor", stain_jitter: float = 0.05,
            stain_augment: float = 0.0) -> "tf.Tensor":
    """Random dihedral transform (flips + 90-degree rotations: tissue has no orientation),
    mild brightness/contrast, HED stain jitter and (``stain_augment`` > 0) Macenko stain
    augmentation (:func:`hcdtf.models.stain.macenko_augment`). uint8 in, uint8 out; ``seed`` is a
    stateless seed of shape (2,), so the same seed gives the same patch."""
    import tensorflow as tf

    x = tf.image.convert_image_dtype(image, tf.float32)
    k = tf.random.stateless_uniform((), seed, 0, 4, dtype=tf.int32)
    x = tf.image.rot90(x, k)
    x = tf.image.stateless_random_flip_left_right(x, seed + 2)
    if stain_jitter > 0:
        x = _hed_jitter(x, seed + 3, stain_jitter)
    if stain_augment > 0:
        from hcdtf.models import stain

        x = stain.macenko_augment(tf.expand_dims(x * 255.0, 0), seed + 7, stain_augment)[0] / 255.0
    x = tf.image.stateless_random_brightness(x, 0.05, seed + 5)
    x = tf.image.stateless_random_contrast(x, 0.9, 1.1, seed + 6)
    x = tf.clip_by_value(x, 0.0, 1.0)
    return tf.cast(tf.round(x * 255.0), tf.uint8)


def dihedral(images: "tf.Tensor", k: int) -> "tf.Tensor":
    """The k-th (0..7) of the 8 dihedral transforms of a batch of images (for TTA)."""
    import tensorflow as tf

    x = tf.image.rot90(images, k % 4)
    return tf.image.flip_left_right(x) if k >= 4 else x


# ---------------------------------------------------------------------------- pipelines
def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch`` of a run seeded with ``seed``: the data order and the
    augmentation of an epoch depend on (seed, epoch) only, so a resumed run sees the same epochs
    as an uninterrupted one. Stable across machines and Python versions."""
    import numpy as np

    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1, np.uint32)[0])


def _read(cfg: "DataConfig", split: str, shuffle_files: bool, seed: int) -> "tf.data.Dataset":
    import tensorflow_datasets as tfds

    builder = load_builder(cfg)
    read_config = tfds.ReadConfig(shuffle_seed=seed, interleave_cycle_length=4)
    spec = split_spec(cfg, split, builder)  # folds resolved; an unknown split names the available ones
    if cfg.centres is not None or cfg.test_centre is not None:  # leave-one-centre-out (data/centres.py)
        from hcdtf.data import centres

        return centres.read(builder, cfg, split, spec, shuffle_files, read_config)
    return builder.as_dataset(split=spec, shuffle_files=shuffle_files, read_config=read_config)


def _shuffle_and_augment(ds, cfg: "DataConfig", seed: int, reshuffle: bool):
    import tensorflow as tf

    ds = ds.shuffle(cfg.shuffle_buffer, seed=seed, reshuffle_each_iteration=reshuffle)
    if cfg.augment:
        # One stateless seed per example, fixed by `seed` (and new every iteration if reshuffling).
        noise = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=reshuffle)
        ds = tf.data.Dataset.zip(ds, noise.batch(2))
        jitter, macenko = cfg.stain_jitter, cfg.stain_augment

        def _aug(example, s):
            example = dict(example)
            example["image"] = augment(example["image"], s, jitter, macenko)
            return example

        ds = ds.map(_aug, num_parallel_calls=tf.data.AUTOTUNE)
    return ds


def _batch(ds, batch_size: int, with_ids: bool, drop_remainder: bool):
    import tensorflow as tf

    def _to_pair(example):
        label = tf.cast(example["label"], tf.float32)
        if with_ids:
            return {"id": example["id"], "image": example["image"]}, label
        return example["image"], label

    ds = ds.map(_to_pair, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def make_dataset(
    cfg: "DataConfig",
    split: str,
    batch_size: int,
    training: bool,
    seed: int = 0,
    with_ids: bool = False,
    drop_remainder: bool = False,
) -> "tf.data.Dataset":
    """Batches of ``(image uint8 [B,96,96,3], label float32 [B])`` from the built data set, or
    ``({"id", "image"}, label)`` with ``with_ids``.

    Training: shuffle (seeded, reshuffled every time the dataset is iterated), augmentation if
    ``cfg.augment``. Files are read in a fixed order and ``deterministic`` is kept on, so the same
    seed gives the same batches; TFDS decodes the PNGs in parallel. (Training runs use
    :func:`training_epochs`, whose epochs depend on their number, not on what ran before.)
    """
    ds = _read(cfg, split, shuffle_files=training, seed=seed)
    if cfg.cache:
        ds = ds.cache()  # decoded uint8 patches: 27.6 kB each
    if training:
        ds = _shuffle_and_augment(ds, cfg, seed, reshuffle=True)
    return _batch(ds, batch_size, with_ids, drop_remainder)


def training_epochs(
    cfg: "DataConfig",
    split: str,
    batch_size: int,
    seed: int,
    steps: int | None = None,
    drop_remainder: bool = False,
):
    """A function ``epoch -> tf.data.Dataset`` of one training epoch, whose order and
    augmentation depend only on (``seed``, epoch). With ``cfg.cache`` every epoch shares one
    in-memory cache of the decoded patches (read in stored order, then shuffled)."""
    cached = _read(cfg, split, shuffle_files=False, seed=seed).cache() if cfg.cache else None

    def epoch(k: int):
        s = epoch_seed(seed, k)
        ds = cached if cached is not None else _read(cfg, split, shuffle_files=True, seed=s)
        ds = _batch(_shuffle_and_augment(ds, cfg, s, reshuffle=False), batch_size, False, drop_remainder)
        return ds.take(steps) if steps else ds

    return epoch


def load_arrays(cfg: "DataConfig", split: str):
    """All of a split as NumPy arrays ``(ids, images uint8, labels)``: for small data only
    (tests, the quick start, the exact logistic-regression solver)."""
    import numpy as np

    ids, images, labels = [], [], []
    for x, y in make_dataset(cfg, split, 512, training=False, with_ids=True).as_numpy_iterator():
        ids.extend(i.decode() for i in x["id"])
        images.append(x["image"])
        labels.append(y)
    return np.array(ids), np.concatenate(images), np.concatenate(labels).astype(np.int64)
