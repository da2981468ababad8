"""TFDS -> tf.data: read the built `hcd` data set, augment, cache, batch, prefetch.

Every pipeline yields raw uint8 RGB patches: the models preprocess inside the graph, so training,
evaluation and every export see the same input. Augmentation works in float and rounds back to
uint8 for that reason.
"""

from __future__ import annotations

import os
import pathlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import tensorflow as tf

    from hcdtf.config import DataConfig

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


def get_builder(data_dir: str, config: str = "kaggle"):
    """Our TFDS builder for a named config (``kaggle``, ``pcam``), or, for a custom config built
    earlier (e.g. ``kaggle_skip_bad``), the builder read back from its directory."""
    import tensorflow_datasets as tfds

    from tfds_builder.hcd import hcd_dataset_builder as mod

    data_dir = os.path.expanduser(data_dir)
    if config in {c.name for c in mod.Builder.BUILDER_CONFIGS}:
        return mod.Builder(config=config, data_dir=data_dir)
    version_dir = pathlib.Path(data_dir) / "hcd" / config / str(mod.Builder.VERSION)
    if (version_dir / "dataset_info.json").is_file():
        return tfds.builder_from_directory(str(version_dir))
    return mod.Builder(config=mod.HcdConfig(name=config), data_dir=data_dir)


def build_dataset(
    manual_dir: str,
    data_dir: str,
    source: str = "kaggle",
    skip_bad_examples: bool = False,
    validation_fraction: float | None = None,
    test_fraction: float | None = None,
):
    """Builds (prepares) the data set from ``manual_dir``: what ``tfds build`` does, in-process.

    Non-default options make a custom config whose name says what differs (``kaggle_skip_bad``,
    ``kaggle_val0.2_test0.1``): train with ``--dataset-config`` set to that name.
    """
    import tensorflow_datasets as tfds

    from tfds_builder.hcd import hcd_dataset_builder as mod

    if not os.path.isdir(manual_dir):
        raise FileNotFoundError(
            f"manual dir {manual_dir!r} does not exist: pass the directory holding the Kaggle "
            "files (train/, train_labels.csv) or the PCam .h5 files"
        )
    name = source
    fields = {"source": source, "skip_bad_examples": skip_bad_examples}
    if validation_fraction is not None or test_fraction is not None:
        fields["validation_fraction"] = 0.1 if validation_fraction is None else validation_fraction
        fields["test_fraction"] = 0.1 if test_fraction is None else test_fraction
        name += f"_val{fields['validation_fraction']:g}_test{fields['test_fraction']:g}"
    if skip_bad_examples:
        name += "_skip_bad"
    config = source if name == source else mod.HcdConfig(name=name, **fields)
    builder = mod.Builder(config=config, data_dir=os.path.expanduser(data_dir))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=os.path.abspath(manual_dir))
    )
    return builder


def load_builder(cfg: "DataConfig"):
    """The prepared builder for ``cfg``; a clear error says how to build it when missing."""
    builder = get_builder(cfg.data_dir, cfg.dataset_config)
    if not builder.is_prepared():
        raise DatasetNotBuiltError(
            f"the {cfg.dataset}/{cfg.dataset_config} data set is not built in {cfg.data_dir!r}. "
            f"Build it with: hcdtf build-dataset --manual-dir DIR --data-dir {cfg.data_dir} "
            f"--dataset-config {cfg.dataset_config} (or: tfds build {builder_dir()} --manual_dir DIR "
            f"--data_dir {cfg.data_dir} --config {cfg.dataset_config}); for a synthetic sample "
            "first run: hcdtf sample-data DIR"
        )
    return builder


def _limit(cfg: "DataConfig", split: str):
    return cfg.max_train_examples if split == cfg.train_split else cfg.max_eval_examples


def split_spec(cfg: "DataConfig", split: str) -> str:
    """The TFDS split string, with the example limit applied (a limit above the split's size
    means the whole split: TFDS itself refuses such a slice)."""
    limit = _limit(cfg, split)
    if not limit:
        return split
    splits = load_builder(cfg).info.splits
    if split in splits and limit >= splits[split].num_examples:
        return split
    return f"{split}[:{limit}]"


def num_examples(cfg: "DataConfig", split: str) -> int:
    builder = load_builder(cfg)
    if split not in builder.info.splits:
        raise ValueError(
            f"split {split!r} not in the built data set; available: {', '.join(builder.info.splits)}"
        )
    n = builder.info.splits[split].num_examples
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


def augment(image: "tf.Tensor", seed: "tf.Tensor", stain_jitter: float = 0.05) -> "tf.Tensor":
    """Random dihedral transform (flips + 90-degree rotations: tissue has no orientation),
    mild brightness/contrast and HED stain jitter. uint8 in, uint8 out; ``seed`` is a stateless
    seed of shape (2,), so the same seed gives the same patch."""
    import tensorflow as tf

    x = tf.image.convert_image_dtype(image, tf.float32)
    k = tf.random.stateless_uniform((), seed, 0, 4, dtype=tf.int32)
    x = tf.image.rot90(x, k)
    x = tf.image.stateless_random_flip_left_right(x, seed + 2)
    if stain_jitter > 0:
        x = _hed_jitter(x, seed + 3, stain_jitter)
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

    Training: shuffle (seeded, reshuffled every epoch), augmentation if ``cfg.augment``. Files
    are read in a fixed order and ``deterministic`` is kept on, so the same seed gives the same
    batches; TFDS decodes the PNGs in parallel.
    """
    import tensorflow as tf
    import tensorflow_datasets as tfds

    builder = load_builder(cfg)
    if split not in builder.info.splits:
        raise ValueError(
            f"split {split!r} not in the built data set; available: {', '.join(builder.info.splits)}"
        )
    read_config = tfds.ReadConfig(shuffle_seed=seed, interleave_cycle_length=4)
    ds = builder.as_dataset(
        split=split_spec(cfg, split),
        shuffle_files=training,
        read_config=read_config,
    )
    if cfg.cache:
        ds = ds.cache()  # decoded uint8 patches: 27.6 kB each
    if training:
        ds = ds.shuffle(cfg.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        if cfg.augment:
            # One stateless seed per example that changes every epoch but is fixed by `seed`.
            noise = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
            ds = tf.data.Dataset.zip(ds, noise.batch(2))
            jitter = cfg.stain_jitter

            def _aug(example, s):
                example = dict(example)
                example["image"] = augment(example["image"], s, jitter)
                return example

            ds = ds.map(_aug, num_parallel_calls=tf.data.AUTOTUNE)

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
