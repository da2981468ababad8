"""The identity of the data a run was trained and evaluated on, and what changed since.

A rebuilt data set can hold other examples under the same name: flipping a few labels in
``train_labels.csv`` and rebuilding with ``--overwrite`` moves ids between the hash-stratified
splits. So a run records which build it was trained on (``run.json``, key ``data``) and an
evaluation which build and which examples it scored (``metrics.json``, key ``data``):

- ``build``: the digest of the build's input fingerprint (``metadata.json`` ``inputs``; the
  TFDS builder's ``inputs.py``): it changes with any input file, label or build option;
- ``source``: the same digest without the build options, so builds of the same files that keep
  the same test split (``kaggle`` and ``kaggle_folds5``) compare as one source;
- ``splits`` / ``examples``: per split, its size, its tumour count and a SHA-256 of its sorted
  ``id<TAB>label`` lines.

Runs of older hcdtf versions record none of this: their data is *unknown*, which the commands say
once and otherwise accept. Reading a split's ids and labels skips image decoding.
"""

from __future__ import annotations

import hashlib
import json
from typing import Iterable

# Fingerprint entries that do not change what a run trains or is evaluated on: Kaggle's
# unlabelled test folder (the kaggle_test split, which no run trains on or evaluates).
_UNUSED_INPUTS = ("test/",)


def split_identity(ids: Iterable, labels: Iterable) -> dict:
    """``{"n", "positives", "sha256"}`` of a split's (id, label) pairs, in any order."""
    pairs = sorted((i.decode() if isinstance(i, bytes) else str(i), int(l)) for i, l in zip(ids, labels))
    digest = hashlib.sha256("".join(f"{i}\t{l}\n" for i, l in pairs).encode()).hexdigest()
    return {"n": len(pairs), "positives": sum(l for _, l in pairs), "sha256": digest}


def _source_digest(inputs: dict) -> str:
    parts = {k: v for k, v in inputs.items() if k not in ("manual_dir", "digest", "options")}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def build_identity(data_cfg) -> dict | None:
    """``{"dataset", "version", "build", "source", "inputs"}`` of the build ``data_cfg`` names
    (one JSON read, no TensorFlow); None if nothing is built there. ``build``/``source`` are
    None for a build that recorded no input fingerprint."""
    from hcdtf.data import pipeline as data

    version_dir = data.built_version_dir(data_cfg.data_dir, data_cfg.dataset_config)
    if version_dir is None:
        return None
    try:
        meta = json.loads((version_dir / "metadata.json").read_text())
    except (OSError, ValueError):
        meta = {}
    inputs = meta.get("inputs") if isinstance(meta, dict) else None
    inputs = inputs if isinstance(inputs, dict) and inputs.get("digest") else None
    return {"dataset": f"{data_cfg.dataset}/{data_cfg.dataset_config}", "version": version_dir.name,
            "build": inputs["digest"] if inputs else None, "source": _source_digest(inputs) if inputs else None,
            "inputs": {k: v for k, v in inputs.items() if k != "manual_dir"} if inputs else None}


def read_split_identity(data_cfg, split: str) -> dict:
    """:func:`split_identity` of what a run reads as ``split`` (folds and example limits applied),
    read from the built records without decoding a single image."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    from hcdtf.data import pipeline as data

    builder = data.load_builder(data_cfg)
    ds = builder.as_dataset(split=data.split_spec(data_cfg, split, builder),
                            decoders={"image": tfds.decode.SkipDecoding()}, shuffle_files=False)
    ds = ds.map(lambda e: (e["id"], e["label"]), num_parallel_calls=tf.data.AUTOTUNE).batch(8192)
    ids, labels = [], []
    for i, l in ds.as_numpy_iterator():
        ids.extend(i)
        labels.extend(l.tolist())
    return split_identity(ids, labels)


def training_record(cfg) -> dict | None:
    """What ``run.json`` records when a run starts: the build and its train/validation splits
    (None if the data set is not built, which the training itself then reports)."""
    build = build_identity(cfg.data)
    if build is None:
        return None
    splits = {s: read_split_identity(cfg.data, s) for s in dict.fromkeys((cfg.data.train_split, cfg.data.validation_split))}
    return {**build, "splits": splits}


def evaluation_record(data_cfg, split: str, ids, labels, trained_on_this_build: bool | None) -> dict:
    """What ``metrics.json`` records: the build scored, the split's examples, and whether the run
    was trained on this build (None: unknown)."""
    build = build_identity(data_cfg) or {}
    return {"dataset": build.get("dataset"), "build": build.get("build"), "source": build.get("source"),
            "split": split, "examples": split_identity(ids, labels), "trained_on_this_build": trained_on_this_build}


def _short(digest: str | None) -> str:
    return (digest or "unknown")[:12]


def _describe_split(split: str, old: dict, new: dict) -> str:
    size = (f"{new['n']} examples, {new['positives']} tumour (was {old['n']}, {old['positives']})"
            if (old["n"], old["positives"]) != (new["n"], new["positives"]) else f"the same {new['n']} examples' count")
    return f"{split} split: {size}, other ids or labels"


def training_changes(recorded: dict | None, cfg) -> list[str] | None:
    """How the data a run was trained on (``recorded``, from run.json) differs from what ``cfg``
    reads now, one short phrase each: [] if the same, None if unknown (nothing recorded, or the
    data set is not built)."""
    from tfds_builder.hcd import inputs as fingerprints

    current = build_identity(cfg.data)
    if not recorded or current is None:
        return None
    if recorded.get("build") and recorded.get("build") == current.get("build"):
        return []
    changes = []
    if recorded.get("inputs") and current.get("inputs"):
        changes = [c for c in fingerprints.differences(recorded["inputs"], current["inputs"])
                   if not c.startswith(_UNUSED_INPUTS)]
        if not changes:  # only inputs no run reads changed (Kaggle's unlabelled test folder)
            return []
    elif recorded.get("dataset") != current.get("dataset"):
        changes.append(f"data set {current.get('dataset')} (was {recorded.get('dataset')})")
    for split, old in (recorded.get("splits") or {}).items():
        try:
            new = read_split_identity(cfg.data, split)
        except ValueError:  # the split is gone (another build's layout)
            changes.append(f"{split} split: no longer in the build")
            continue
        if new["sha256"] != old.get("sha256"):
            changes.append(_describe_split(split, old, new))
    if not changes and recorded.get("build") is None:
        return []  # a build without a fingerprint: the same splits are all we can check
    return changes or [f"build {_short(current.get('build'))} (was {_short(recorded.get('build'))})"]


def evaluation_current(recorded: dict | None, data_cfg, split: str) -> bool | None:
    """Whether an evaluation's recorded data (metrics.json ``data``) is the build ``data_cfg``
    reads now: None when it recorded nothing (older hcdtf) or nothing is built."""
    current = build_identity(data_cfg)
    if not recorded or current is None:
        return None
    if recorded.get("split") != split or recorded.get("dataset") != current.get("dataset"):
        return False
    if recorded.get("build") is None or current.get("build") is None:
        return recorded.get("build") == current.get("build")
    return recorded["build"] == current["build"]


def comparison_key(recorded: dict | None) -> tuple | None:
    """What two evaluations must share to sit in one comparison: the examples scored (ids and
    labels) and the source files they came from. None when not recorded."""
    if not recorded or not recorded.get("examples"):
        return None
    return recorded["examples"].get("sha256"), recorded.get("source")


def describe_test_set(recorded: dict) -> str:
    ex = recorded.get("examples") or {}
    return (f"{recorded.get('dataset')} {recorded.get('split')} split, {ex.get('n')} examples "
            f"({ex.get('positives')} tumour), ids/labels {_short(ex.get('sha256'))}, source {_short(recorded.get('source'))}")


def export_record(recorded: dict | None, cfg, where: str, log) -> dict:
    """What an export records (``hcdtf_metadata.json`` ``data``): the data the model was trained
    on and whether the build ``cfg`` names is still that data. An export is not refused when the
    data set was rebuilt since (the model is what it is), but it says so in one line."""
    changes = training_changes(recorded, cfg)
    if changes is None:
        log(f"note: {where} records no identity of the data it was trained on (an older hcdtf, or the data set "
            "is not built): the export records it as unknown")
    elif changes:
        log(f"note: {where} was trained on an earlier build of {cfg.data.dataset}/{cfg.data.dataset_config} than "
            f"the one built now ({'; '.join(changes)}); the export records the data it was trained on")
    trained_on = {k: v for k, v in (recorded or {}).items() if k != "inputs"} or None
    return {"trained_on": trained_on, "matches_current_build": None if changes is None else not changes,
            "changes": changes or []}
