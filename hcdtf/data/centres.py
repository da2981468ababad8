"""Centres (hospitals) of a build, leave-one-centre-out reading, and the seen/unseen AUC gap.

A Kaggle-layout build made with a ``centres.csv`` (``id,centre``) beside ``train_labels.csv``
records every example's centre in its metadata (tfds_builder/hcd/centres.py); the records
themselves are unchanged. Two config keys then choose the centres:

* ``data.centres: [a, b, ...]``: the training and validation splits keep only these centres'
  examples (null: every centre but ``data.test_centre``);
* ``data.test_centre: c``: the held-out centre. The test split becomes the test split's
  examples of the seen centres **plus every example of centre c** from all labelled splits (none
  of them was trained or validated on), so one evaluation scores both, and
  :func:`hcdtf.evaluation.centres.centre_gap` splits its AUC into seen and unseen centres.

Filtering is by id, in the graph (a ``tf.lookup.StaticHashTable`` of the kept ids), after TFDS
reads the split: ``data.max_*_examples`` limits apply before it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import tensorflow as tf

    from hcdtf.config import DataConfig


class CentreError(ValueError):
    """The centre options do not fit the build (the message names the key and the choices)."""


def active(cfg: "DataConfig") -> bool:
    return getattr(cfg, "centres", None) is not None or getattr(cfg, "test_centre", None) is not None


def build_record(builder) -> dict | None:
    """The build's centre record (``map``, ``counts``, ``centres``), or None."""
    meta = builder.info.metadata or {}
    record = meta.get("centres")
    return record if isinstance(record, dict) and record.get("map") else None


def seen_centres(cfg: "DataConfig", record: dict) -> list[str]:
    """The centres trained and validated on: ``data.centres``, else all but ``data.test_centre``."""
    if cfg.centres is not None:
        return [str(c) for c in cfg.centres]
    return [c for c in record["centres"] if c != cfg.test_centre]


def check(cfg: "DataConfig", builder) -> dict:
    """The build's centre record; CentreError if the build has none or a named centre is not in it."""
    record = build_record(builder)
    where = f"{cfg.dataset}/{cfg.dataset_config} in {cfg.data_dir}"
    if record is None:
        raise CentreError(
            f"data.centres / data.test_centre need a build with centres: {where} has no centre map. Put "
            "centres.csv (id,centre) beside train_labels.csv (hcdtf sample-data --centres K writes one) and "
            "rebuild (hcdtf build-dataset --overwrite)")
    known = record["centres"]
    for key, values in (("data.centres", cfg.centres or []), ("data.test_centre", [cfg.test_centre] if
                                                               cfg.test_centre is not None else [])):
        for v in values:
            if str(v) not in known:
                raise CentreError(f"{key}: centre {v!r} is not in {where}; its centres: {', '.join(known)}")
    seen = seen_centres(cfg, record)
    if not seen:
        raise CentreError(f"data.centres: no centre left to train on ({where} has {', '.join(known)})")
    if cfg.test_centre is not None and cfg.test_centre in seen:
        raise CentreError(f"data.test_centre {cfg.test_centre!r} is also in data.centres {seen}: a held-out "
                          "centre must not be trained on")
    return record


def _keep(ds, ids: list[str]):
    """``ds`` (examples with an ``id``) filtered to ``ids``, by a static hash table in the graph."""
    import tensorflow as tf

    if not ids:
        return ds.take(0)
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(ids), tf.ones([len(ids)], tf.int32)), default_value=0)
    return ds.filter(lambda example: table.lookup(example["id"]) > 0)


def _ids(record: dict, centres: list[str]) -> list[str]:
    wanted = set(centres)
    return sorted(i for i, c in record["map"].items() if c in wanted)


def labelled_splits(info) -> list[str]:
    return [s for s in info.splits if s != "kaggle_test"]


def read(builder, cfg: "DataConfig", split: str, spec: str, shuffle_files: bool, read_config) -> "tf.data.Dataset":
    """The examples of ``split`` (TFDS spec ``spec``) that leave-one-centre-out keeps (module docstring)."""
    record = check(cfg, builder)
    seen = seen_centres(cfg, record)
    ds = _keep(builder.as_dataset(split=spec, shuffle_files=shuffle_files, read_config=read_config), _ids(record, seen))
    if split == cfg.test_split and cfg.test_centre is not None:
        every = "+".join(labelled_splits(builder.info))
        held = builder.as_dataset(split=every, shuffle_files=False, read_config=read_config)
        ds = ds.concatenate(_keep(held, _ids(record, [cfg.test_centre])))
    return ds


def count(builder, cfg: "DataConfig", split: str, spec_parts: list[str]) -> int:
    """How many examples :func:`read` yields for ``split`` (without example limits)."""
    record = check(cfg, builder)
    seen = set(seen_centres(cfg, record))
    n = sum(k for part in spec_parts for c, k in record["counts"].get(part, {}).items() if c in seen)
    if split == cfg.test_split and cfg.test_centre is not None:
        n += sum(c.get(cfg.test_centre, 0) for c in record["counts"].values())
    return n
