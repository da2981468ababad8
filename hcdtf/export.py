"""SavedModel export for TF Serving (and a `.keras` copy for Keras users).

``export_run(run, export_dir)`` writes ``<export_dir>/<N>/``, TF Serving's versioned layout. The
SavedModel has two signatures, both computed in float32 whatever precision the run trained in:

* ``serving_default``: ``images`` uint8 ``[None, 96, 96, 3]`` RGB -> ``probability`` and ``logit``
  (float32 ``[None, 1]``);
* ``serving_encoded``: ``image_bytes`` string ``[None]`` (PNG/JPEG/BMP/GIF bytes: what the REST
  API receives as ``{"b64": ...}``) -> the same outputs; decoding and the 96x96x3 size check happen
  inside the graph, so a client needs nothing but an HTTP library.

Preprocessing lives inside the model, so the export takes the same raw patches as training did.
The run's metadata (arch, strategy, data set, validation metrics, hcdtf version) is an asset,
``assets/hcdtf_metadata.json``. A version directory is written under a temporary name and renamed
when complete, so TF Serving, which polls the base path, never loads half an export.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import tempfile
from typing import Callable

from hcdtf import __version__

IMAGE_SIZE = 96
SIGNATURES = ("serving_default", "serving_encoded")


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


def run_metadata(run: pathlib.Path, cfg) -> dict:
    summary_path = run / "train_summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    val = {}
    val_path = run / "val_predictions.csv"
    if val_path.is_file():
        from hcdtf import metrics

        _, y, s = metrics.read_predictions(val_path)
        if len(set(y.tolist())) == 2:
            val = {"auc": metrics.compute_metrics(y, s, n_bootstrap=0)["auc"], "n": int(len(y))}
    return {
        "arch": cfg.model.arch,
        "strategy": cfg.model.strategy,
        "trainable_from": cfg.model.trainable_from,
        "dataset": f"{cfg.data.dataset}/{cfg.data.dataset_config}",
        "trained_precision": summary.get("precision"),
        "export_precision": "float32",
        "validation": val,
        "best_val_auc": summary.get("best_val_auc"),
        "input": {"dtype": "uint8", "shape": [None, IMAGE_SIZE, IMAGE_SIZE, 3], "channels": "RGB"},
        "outputs": {"probability": "P(tumour in the centre 32x32 region)", "logit": "log-odds"},
        "signatures": list(SIGNATURES),
        "hcdtf_version": __version__,
        "run_dir": str(run),
    }


def write_saved_model(model, path: pathlib.Path, metadata: dict) -> None:
    import keras
    import tensorflow as tf

    from hcdtf import models

    logits = models.logits_model(model)

    archive = keras.export.ExportArchive()
    archive.track(logits)

    def outputs(images):
        logit = tf.cast(logits(images, training=False), tf.float32)
        return {"probability": tf.sigmoid(logit), "logit": logit}

    def decode_one(data):
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        shape = tf.shape(image)
        tf.debugging.assert_equal(
            shape[:2], tf.constant([IMAGE_SIZE, IMAGE_SIZE]),
            message=f"each image must be {IMAGE_SIZE}x{IMAGE_SIZE} pixels",
        )
        return tf.ensure_shape(image, (IMAGE_SIZE, IMAGE_SIZE, 3))

    archive.add_endpoint(
        "serving_default",
        outputs,
        input_signature=[tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], tf.uint8, name="images")],
    )
    archive.add_endpoint(
        "serving_encoded",
        lambda image_bytes: outputs(tf.map_fn(decode_one, image_bytes, fn_output_signature=tf.uint8)),
        input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")],
    )
    with tempfile.TemporaryDirectory() as tmp:
        meta_path = pathlib.Path(tmp) / "hcdtf_metadata.json"
        meta_path.write_text(json.dumps(metadata, indent=2, sort_keys=True))
        # Tracked as an asset: copied to <version>/assets/ and listed in the SavedModel.
        archive.hcdtf_metadata = tf.saved_model.Asset(str(meta_path))
        archive.write_out(str(path), verbose=False)


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
        raise ValueError(f"{run}: a logistic-regression baseline run; only CNN runs are exported")
    model, cfg = float32_model(run)
    export_dir.mkdir(parents=True, exist_ok=True)
    version = next_version(export_dir) if version is None else int(version)
    if version < 1:
        raise ValueError(f"--version must be a positive integer, got {version}")
    target = export_dir / str(version)
    if target.exists():
        raise FileExistsError(
            f"{target} already exists; TF Serving versions are immutable. Pass another --version "
            "or leave it out to use the next free number"
        )
    staging = export_dir / f".tmp-{version}"
    shutil.rmtree(staging, ignore_errors=True)
    write_saved_model(model, staging, run_metadata(run, cfg))
    staging.rename(target)
    keras_path = export_dir / f"{version}.keras"
    model.save(str(keras_path))
    log(f"exported {run} as SavedModel {target} (signatures: {', '.join(SIGNATURES)}) and {keras_path}")
    return target
