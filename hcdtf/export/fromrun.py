"""What an export takes from a run directory: the float32 model, its metadata and int8 data.

Everything here asks :class:`hcdtf.rundir.RunDir`; the export itself (:mod:`hcdtf.export.bundle`)
works on a Keras model and a metadata dict.
"""

from __future__ import annotations

import math
import pathlib
from typing import Callable

from hcdtf import __version__, atomic
from hcdtf.data import identity as dataid
from hcdtf.data.pipeline import PATCH_MPP as DEFAULT_INPUT_MPP  # for a run that did not record its input_mpp
from hcdtf.export import bundle
from hcdtf.export.int8 import DEFAULT_CALIBRATION_SIZE, DEFAULT_MARGIN
from hcdtf.export.signatures import IMAGE_SIZE, SIGNATURES


class BaselineRunError(ValueError):
    """The run is the logistic-regression baseline, which has no Keras model to export."""


def float32_model(run):
    """The run's final model rebuilt under the float32 policy with the trained weights, and the
    run's config. A mixed_float16 model keeps float32 variables, so copying them into a float32
    build gives a float32 graph with no casts to half precision anywhere."""
    import keras

    from hcdtf import models
    from hcdtf.models.classifier import STAIN

    cfg = run.config()
    from hcdtf.inference import loading

    trained = loading.load_model(run)
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        # The stain layer (if any) is copied from the trained model: its target travels inside it.
        stain = trained.get_layer(STAIN) if STAIN in [la.name for la in trained.layers] else None
        if models.get_arch(cfg.model.arch).block == "transformer":  # the run's encoder shape, not the registry's
            from hcdtf.models.encoders.classifier import rebuild_like

            model = rebuild_like(trained, transfer=cfg.model.transfer, dropout=cfg.model.dropout)
        else:
            model = models.build_classifier(cfg.model.arch, weights=None, transfer=cfg.model.transfer,
                                            trainable_from=cfg.model.trainable_from, dropout=cfg.model.dropout,
                                            stain=stain)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    model.set_weights(trained.get_weights())
    return model, cfg


def _finite_or_none(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def validation_metrics(run) -> dict:
    """Metrics of the run's val_predictions.csv (threshold 0.5), or {} without the file."""
    if not run.val_predictions_path.is_file():
        return {}
    from hcdtf.evaluation import artifacts, metrics

    _, y, s = artifacts.read_predictions(run.val_predictions_path)
    if len(set(y.tolist())) < 2:  # AUC and friends need both classes
        return {"n": int(len(y)), "n_positive": int(y.sum())}
    m = metrics.compute_metrics(y, s, n_bootstrap=0)
    keys = ("n", "n_positive", "auc", "accuracy", "sensitivity", "specificity", "f1", "brier", "threshold")
    return {k: _finite_or_none(m[k]) for k in keys if k in m}


def run_metadata(run, cfg) -> dict:
    summary = run.summary() or {}
    mpp = summary.get("input_mpp")
    return {
        "arch": cfg.model.arch,
        "transfer": cfg.model.transfer,
        "trainable_from": cfg.model.trainable_from,
        "dataset": f"{cfg.data.dataset}/{cfg.data.dataset_config}",
        "trained_precision": summary.get("precision"),
        "export_precision": "float32",
        "input_mpp": float(mpp) if isinstance(mpp, (int, float)) and mpp > 0 else DEFAULT_INPUT_MPP,
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
        "run_dir": str(run.path.resolve()),
    }


def int8_data(cfg, calibration_size: int, margin: float, batch_size: int = 64) -> bundle.Int8Data:
    """The first ``calibration_size`` patches of the validation split, and the test split."""
    import numpy as np

    from hcdtf.data import pipeline as data

    data.load_builder(cfg.data)
    if calibration_size < 1:
        raise ValueError(f"--calibration-size must be >= 1, got {calibration_size}")
    chunks, n = [], 0
    for x, _ in data.make_dataset(cfg.data, cfg.data.validation_split, batch_size, training=False).as_numpy_iterator():
        chunks.append(x[: calibration_size - n])
        n += len(chunks[-1])
        if n >= calibration_size:
            break
    calibration = np.concatenate(chunks) if chunks else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)

    def test_batches():
        return data.make_dataset(cfg.data, cfg.data.test_split, batch_size, training=False).as_numpy_iterator()

    return bundle.Int8Data(calibration, test_batches, margin)


@atomic.removes_created_dir("export_dir")
def export_run(run_dir, export_dir, version: int | None = None, formats=("saved_model",),
               quantize=None, margin: float = DEFAULT_MARGIN,
               calibration_size: int = DEFAULT_CALIBRATION_SIZE, data_dir: str | None = None,
               log: Callable[[str], None] = print, settings: dict | None = None) -> pathlib.Path:
    """Exports the run's final model as a version of ``export_dir``; returns the version directory.
    ``settings`` (the resolved ``export`` config) is recorded in the metadata as ``export_settings``."""
    from hcdtf.rundir import RunDir

    run = RunDir(run_dir)
    if run.kind() == "baseline":
        raise BaselineRunError(
            f"{run.path} is a logistic-regression baseline run (model.npz); only CNN runs (model.keras) "
            "can be exported"
        )
    if version is not None and int(version) < 1:
        raise ValueError(f"--version must be a positive integer, got {version}")
    # Before the slow part: a missing extra, a taken version or an unwritable directory fails now.
    kinds = bundle.runtimes.check_formats(formats, quantize)
    if "openvino-bf16" in kinds:
        bundle.int8_lib.require_native_bf16()
    export_dir = bundle.writable_dir(pathlib.Path(export_dir))
    if version is not None:
        bundle.check_free(export_dir, int(version), kinds)
    model, cfg = float32_model(run)
    if data_dir:
        cfg.data.data_dir = data_dir
    int8 = int8_data(cfg, calibration_size, margin) if bundle.runtimes.quantizations(quantize) else None
    meta = run_metadata(run, cfg)
    if settings is not None:
        meta["export_settings"] = settings
    meta["data"] = dataid.export_record(run.data_record(), cfg, str(run.path), log)  # recorded, not refused
    target = bundle.export_model(model, meta, export_dir, version, formats, quantize, int8, log)
    names = ", ".join(sorted(p.name for p in target.parent.glob(f"{target.name}[.-]*")))
    log(f"exported {run.path} as SavedModel {target} (signatures: {', '.join(SIGNATURES)}) and {names}")
    return target
