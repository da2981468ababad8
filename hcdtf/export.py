"""SavedModel export for TF Serving (and a `.keras` copy for Keras users).

``export_run(run, export_dir)`` writes ``<export_dir>/<N>/``, TF Serving's versioned layout. The
SavedModel has two signatures, both computed in float32 whatever precision the run trained in:

* ``serving_default``: ``images`` uint8 ``[None, 96, 96, 3]`` RGB -> ``probability`` and ``logit``
  (float32 ``[None, 1]``);
* ``serving_encoded``: ``image_bytes`` string ``[None]`` (PNG or JPEG bytes; BMP and GIF are
  accepted too: what the REST API receives as ``{"b64": ...}``) -> the same outputs; decoding and
  the 96x96 size check happen inside the graph, so a client needs nothing but an HTTP library.

Both signatures check their input inside the graph and fail with ``InvalidArgumentError`` and a
message that says what was expected: a wrong dtype is refused at the signature boundary, a wrong
shape by ``serving_default`` ("images must be uint8 [batch, 96, 96, 3] RGB"), bytes that are not
an image or an image that is not 96x96 by ``serving_encoded``.

Preprocessing lives inside the model, so the export takes the same raw patches as training did.
The run's metadata (arch, strategy, data set, validation metrics, hcdtf version) is an asset,
``assets/hcdtf_metadata.json`` (``tf.saved_model.load(path).hcdtf_metadata.asset_path`` names
it). A version directory is written under a temporary name and renamed when complete, so TF
Serving, which polls the base path and ignores names that are not numbers, never loads half an
export.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import shutil
import tempfile
from typing import Callable

from hcdtf import __version__

IMAGE_SIZE = 96
SIGNATURES = ("serving_default", "serving_encoded")
METADATA_ASSET = "hcdtf_metadata.json"
SHAPE_MESSAGE = f"images must be uint8 [batch, {IMAGE_SIZE}, {IMAGE_SIZE}, 3] RGB; got shape"
FORMAT_MESSAGE = "is not a PNG or JPEG image (BMP and GIF are accepted too)"
SIZE_MESSAGE = f"each image must be {IMAGE_SIZE}x{IMAGE_SIZE} pixels; got height, width"
# Leading bytes of the formats tf.io.decode_image reads that we accept.
_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM")


class BaselineRunError(ValueError):
    """The run is the logistic-regression baseline, which has no Keras model to export."""


def next_version(export_dir: pathlib.Path) -> int:
    versions = [int(p.name) for p in export_dir.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def float32_model(run: pathlib.Path):
    """The run's best model rebuilt under the float32 policy with the trained weights.

    A model trained with mixed_float16 keeps float32 variables, so copying them into a float32
    build gives a float32 graph with no casts to half precision anywhere."""
    import keras

    from hcdtf import models
    from hcdtf.evaluate import load_keras_model, load_run_config

    cfg = load_run_config(run)
    trained = load_keras_model(run)
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        model = models.build_classifier(
            cfg.model.arch, weights=None, strategy=cfg.model.strategy,
            trainable_from=cfg.model.trainable_from, dropout=cfg.model.dropout,
        )
    finally:
        keras.mixed_precision.set_global_policy(previous)
    model.set_weights(trained.get_weights())
    return model, cfg


def _finite_or_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def validation_metrics(run: pathlib.Path) -> dict:
    """Metrics of the run's val_predictions.csv (threshold 0.5), or {} without the file."""
    val_path = run / "val_predictions.csv"
    if not val_path.is_file():
        return {}
    from hcdtf import artifacts, metrics

    _, y, s = artifacts.read_predictions(val_path)
    if len(set(y.tolist())) < 2:  # AUC and friends need both classes
        return {"n": int(len(y)), "n_positive": int(y.sum())}
    m = metrics.compute_metrics(y, s, n_bootstrap=0)
    keys = ("n", "n_positive", "auc", "accuracy", "sensitivity", "specificity", "f1", "brier", "threshold")
    return {k: _finite_or_none(m[k]) for k in keys if k in m}


def run_metadata(run: pathlib.Path, cfg) -> dict:
    summary_path = run / "train_summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    return {
        "arch": cfg.model.arch,
        "strategy": cfg.model.strategy,
        "trainable_from": cfg.model.trainable_from,
        "dataset": f"{cfg.data.dataset}/{cfg.data.dataset_config}",
        "trained_precision": summary.get("precision"),
        "export_precision": "float32",
        "validation": validation_metrics(run),
        "best_val_auc": _finite_or_none(summary.get("best_val_auc")),
        "best_epoch": summary.get("best_epoch"),
        "input": {"dtype": "uint8", "shape": [None, IMAGE_SIZE, IMAGE_SIZE, 3], "channels": "RGB"},
        "outputs": {"probability": "P(tumour in the centre 32x32 region)", "logit": "log-odds"},
        "signatures": {
            "serving_default": {"inputs": {"images": "uint8 [-1, 96, 96, 3]"}},
            "serving_encoded": {"inputs": {"image_bytes": "string [-1] (PNG or JPEG)"}},
        },
        "hcdtf_version": __version__,
        "run_dir": str(run.resolve()),
    }


def write_saved_model(model, path: pathlib.Path, metadata: dict) -> None:
    import keras
    import tensorflow as tf

    from hcdtf import models

    logits = models.logits_model(model)

    archive = keras.export.ExportArchive()
    root = getattr(archive, "_tf_trackable", None)  # the object tf.saved_model.save writes
    if root is not None:
        # What archive.track(logits) does for the variables (so the loaded SavedModel has
        # `.variables`), without its walk over every Keras layer looking for lookup tables,
        # which this model has none of and which took most of the export's time.
        root.variables += logits.variables
        root.trainable_variables += logits.trainable_variables
        root.non_trainable_variables += logits.non_trainable_variables
    else:
        archive.track(logits)

    # One trace of the network, called by both signatures (and stored once).
    @tf.function(
        input_signature=[tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], tf.uint8)], autograph=False
    )
    def outputs(images):
        # An empty batch skips the network: oneDNN's convolutions (TensorFlow's default on
        # AVX-512 servers, and hcdtf's on every x86-64 CPU) fail on a zero-size batch with
        # "input depth must be evenly divisible by filter depth", and a server may send one.
        logit = tf.cond(
            tf.shape(images)[0] > 0,
            lambda: tf.cast(logits(images, training=False), tf.float32),
            lambda: tf.zeros([0, 1], tf.float32),
        )
        return {"probability": tf.sigmoid(logit), "logit": logit}

    def runtime_shape(x):
        # The signature fixes the dtype, but a concrete function runs on a tensor of any shape of
        # that dtype (the ResNet itself would take 64x64 patches), so shapes are checked in the
        # graph. Grappler folds tf.rank(x) to the signature's rank, whatever was fed; the shape
        # vector sent through serialize/parse has a rank it cannot know in advance.
        shape = tf.shape(x)
        return tf.io.parse_tensor(tf.io.serialize_tensor(shape), shape.dtype)

    def checked(images):
        shape = runtime_shape(images)
        padded = tf.concat([shape, tf.zeros([4], tf.int32)], 0)[:4]
        ok = tf.logical_and(
            tf.equal(tf.size(shape), 4),
            tf.reduce_all(tf.equal(padded[1:], tf.constant([IMAGE_SIZE, IMAGE_SIZE, 3]))),
        )
        with tf.control_dependencies([tf.debugging.Assert(ok, [SHAPE_MESSAGE, shape], summarize=8)]):
            return tf.identity(images)

    def decode_one(args):
        index, data = args
        known = tf.reduce_any(
            tf.stack([tf.equal(tf.strings.substr(data, 0, len(m)), m) for m in _MAGIC])
        )
        with tf.control_dependencies(
            [tf.debugging.Assert(known, ["image_bytes element", index, FORMAT_MESSAGE], summarize=8)]
        ):
            image = tf.io.decode_image(data, channels=3, expand_animations=False)
        size = tf.shape(image)[:2]
        with tf.control_dependencies([
            tf.debugging.Assert(
                tf.reduce_all(tf.equal(size, tf.constant([IMAGE_SIZE, IMAGE_SIZE]))),
                ["image_bytes element", index, SIZE_MESSAGE, size], summarize=8,
            )
        ]):
            image = tf.identity(image)
        # Static shape only: the Assert above is the runtime check. (tf.ensure_shape here would
        # run before the Assert inside map_fn's loop and fail first, with an unreadable message.)
        image.set_shape((IMAGE_SIZE, IMAGE_SIZE, 3))
        return image

    def default(images):
        return outputs(checked(images))

    def encoded(image_bytes):
        shape = runtime_shape(image_bytes)
        rank_ok = tf.debugging.Assert(
            tf.equal(tf.size(shape), 1),
            ["image_bytes must be a 1-D batch [batch] of encoded images; got shape", shape],
            summarize=8,
        )
        with tf.control_dependencies([rank_ok]):
            image_bytes = tf.identity(image_bytes)
        index = tf.range(tf.size(image_bytes))
        images = tf.map_fn(decode_one, (index, image_bytes), fn_output_signature=tf.uint8)
        return outputs(images)

    archive.add_endpoint(
        "serving_default",
        default,
        input_signature=[tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], tf.uint8, name="images")],
    )
    archive.add_endpoint(
        "serving_encoded",
        encoded,
        input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")],
    )
    with tempfile.TemporaryDirectory() as tmp:
        meta_path = pathlib.Path(tmp) / METADATA_ASSET
        meta_path.write_text(json.dumps(metadata, indent=2, sort_keys=True, allow_nan=False) + "\n")
        # Tracked as an asset of the saved object (not of the ExportArchive wrapper, whose own
        # attributes are not saved): copied to <version>/assets/ and reachable after loading as
        # `loaded.hcdtf_metadata.asset_path`.
        if root is not None:
            root.hcdtf_metadata = tf.saved_model.Asset(str(meta_path))
        archive.write_out(str(path), verbose=False)
        asset = path / "assets" / METADATA_ASSET
        if not asset.is_file():  # a Keras without `_tf_trackable`: still ship the file
            asset.parent.mkdir(exist_ok=True)
            shutil.copyfile(meta_path, asset)


def export_run(
    run_dir,
    export_dir: str | pathlib.Path,
    version: int | None = None,
    log: Callable[[str], None] = print,
) -> pathlib.Path:
    """Exports the run's best model to ``<export_dir>/<version>/`` (+ ``<version>.keras``)."""
    run = pathlib.Path(run_dir)
    export_dir = pathlib.Path(export_dir)
    if (run / "model.npz").is_file():
        raise BaselineRunError(
            f"{run} is a logistic-regression baseline run (model.npz); only CNN runs (model.keras) "
            "can be exported as a SavedModel"
        )
    if version is not None:
        version = int(version)
        if version < 1:
            raise ValueError(f"--version must be a positive integer, got {version}")
        _check_free(export_dir, version)
    model, cfg = float32_model(run)
    export_dir.mkdir(parents=True, exist_ok=True)
    if version is None:
        version = next_version(export_dir)
    _check_free(export_dir, version)
    target = export_dir / str(version)
    keras_path = export_dir / f"{version}.keras"
    # Not a number, so TF Serving ignores it while it is being written; unique, so two exports
    # at once cannot write into each other's staging directory.
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=export_dir))
    keras_tmp = staging.with_name(staging.name + ".keras")
    keras_done = False
    try:
        write_saved_model(model, staging / "saved_model", run_metadata(run, cfg))
        model.save(str(keras_tmp))
        _check_free(export_dir, version)  # another export may have taken it meanwhile
        os.replace(keras_tmp, keras_path)
        keras_done = True
        # The SavedModel directory appears last, in one rename: the moment TF Serving can see it.
        # (Renaming onto an existing empty directory would succeed; _check_free ruled that out.)
        os.rename(staging / "saved_model", target)
    except BaseException:
        keras_tmp.unlink(missing_ok=True)
        if keras_done and not target.exists():
            keras_path.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"exported {run} as SavedModel {target} (signatures: {', '.join(SIGNATURES)}) and {keras_path}")
    return target


def _check_free(export_dir: pathlib.Path, version: int) -> None:
    target = export_dir / str(version)
    if target.exists() or (export_dir / f"{version}.keras").exists():
        raise FileExistsError(
            f"{target} already exists; TF Serving versions are immutable. Pass another --version "
            "or leave it out to use the next free number"
        )
