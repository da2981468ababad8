"""Training: wires config, data, model and callbacks into a resumable run directory.

A run directory holds everything needed to understand and repeat the run::

    config.yaml            the resolved config (written before training starts)
    history.csv            one row per finished epoch (rewritten, never duplicated, on resume)
    backup/                BackupAndRestore state: a killed run resumes at its last finished epoch
    checkpoints/best.weights.h5   weights of the best epoch by validation AUC
    model.keras            the best model, raw uint8 patches in, probability out
    val_predictions.csv    id,label,score on the validation split
    train_summary.json     epochs, wall time, images/s, precision, strategy, params, FLOPs, ...
    logs/                  TensorBoard
"""

from __future__ import annotations

import csv
import json
import math
import os
import pathlib
import shutil
import sys
import time
from typing import Callable

import numpy as np

from hcdtf import __version__, artifacts, atomic, data, runtime
from hcdtf.config import Config, ConfigError, from_dict, load_yaml


class RunDirError(ValueError):
    """The output directory holds a run that this command must not touch."""


# --------------------------------------------------------------------------- run directory
def _comparable(cfg_dict: dict, kind: str) -> dict:
    """The parts of a config that define a run of ``kind`` (where it is written does not)."""
    d = json.loads(json.dumps(cfg_dict))
    ignored = ("output_dir", "eval", "export") + (("model", "train") if kind == "baseline" else ("baseline",))
    for key in ignored:
        d.pop(key, None)
    return d


def prepare_run_dir(cfg: Config, overwrite: bool, kind: str = "train") -> str:
    """Returns "fresh", "resume" or "complete" for ``cfg.output_dir``.

    A directory with a finished run of the same config is "complete" (nothing to do, which makes
    `hcdtf experiment` resumable); one with a run of another config is refused unless
    ``overwrite``, and then only our own artifacts are removed.
    """
    run = pathlib.Path(cfg.output_dir)
    cfg_path = run / "config.yaml"
    if run.exists() and not run.is_dir():
        raise RunDirError(f"--output-dir {str(run)!r} exists and is not a directory")
    if cfg_path.is_file():
        try:
            old = from_dict(load_yaml(cfg_path), str(cfg_path))
            same = _comparable(old.to_dict(), kind) == _comparable(cfg.to_dict(), kind)
        except ConfigError:
            same = False
        finished = (run / "train_summary.json").is_file()
        if not same:
            if not overwrite:
                state = "a finished" if finished else "an unfinished"
                raise RunDirError(
                    f"--output-dir {str(run)!r} holds {state} run of another config "
                    f"({cfg_path}); choose another --output-dir or pass --overwrite to replace it"
                )
            clear_run_dir(run)
            return "fresh"
        if finished:
            if overwrite:
                clear_run_dir(run)
                return "fresh"
            return "complete"
        return "resume"
    if run.is_dir() and any(run.iterdir()) and not overwrite:
        raise RunDirError(
            f"--output-dir {str(run)!r} is not empty and holds no hcdtf run; choose another "
            "directory (nothing in it is touched)"
        )
    return "fresh"


_RUN_ARTIFACTS = (
    "config.yaml", "history.csv", "backup", "checkpoints", "model.keras", "val_predictions.csv",
    "train_summary.json", "logs", "metrics.json", "predictions.csv", "plots", "model.npz",
)


def clear_run_dir(run: pathlib.Path) -> None:
    """Removes hcdtf's artifacts from ``run`` (and nothing else)."""
    for name in _RUN_ARTIFACTS:
        p = run / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    for p in run.glob("metrics_*.json"):
        p.unlink()


def record_epoch(path: pathlib.Path, epoch: int, logs: dict | None) -> None:
    """Writes epoch ``epoch`` (0-based) into history.csv, keyed by epoch: a resumed epoch
    replaces its row instead of adding one. Written atomically."""
    rows = {}
    if path.is_file():
        with open(path, newline="") as f:
            rows = {int(r["epoch"]): r for r in csv.DictReader(f)}
    row = {"epoch": epoch + 1, "time": f"{time.time():.3f}"}
    row.update({k: f"{float(v):.6g}" for k, v in (logs or {}).items()})
    rows[epoch + 1] = row
    keys = ["epoch", "time"] + sorted({k for r in rows.values() for k in r} - {"epoch", "time"})
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        for e in sorted(rows):
            w.writerow(rows[e])
    os.replace(tmp, path)


def make_history_callback(path: pathlib.Path):
    import keras

    class HistoryCSV(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            record_epoch(path, epoch, logs)

    return HistoryCSV()


def read_history(path: pathlib.Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- model pieces
def build_model(cfg: Config, log: Callable[[str], None] = print):
    """Builds the classifier; without ImageNet weights and ``fallback_to_scratch`` it says so in
    one line and starts from random weights. Returns (model, weights actually used)."""
    from hcdtf import models

    m = cfg.model
    weights = None if (m.weights is None or str(m.weights).lower() == "none") else m.weights
    try:
        model = models.build_classifier(
            m.arch, weights=weights, strategy=m.strategy, trainable_from=m.trainable_from, dropout=m.dropout
        )
        return model, weights or "none"
    except models.WeightsUnavailableError as e:
        if not m.fallback_to_scratch:
            raise
        log(f"ImageNet weights for {m.arch} are not available offline; training from scratch. ({e.hint})"
            if hasattr(e, "hint") else
            f"ImageNet weights for {m.arch} are not available offline; training from scratch.")
        model = models.build_classifier(
            m.arch, weights=None, strategy=m.strategy, trainable_from=m.trainable_from, dropout=m.dropout
        )
        return model, "none (ImageNet weights unavailable)"


def make_optimizer(cfg: Config, steps_per_epoch: int):
    import keras

    t = cfg.train
    total = max(1, t.epochs * steps_per_epoch)
    warmup = int(round(t.warmup_epochs * steps_per_epoch))
    if t.schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup else t.learning_rate,
            decay_steps=max(1, total - warmup),
            warmup_target=t.learning_rate if warmup else None,
            warmup_steps=warmup,
        )
    else:
        lr = t.learning_rate
    if t.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=t.momentum, weight_decay=t.weight_decay or None)
    if t.weight_decay:
        return keras.optimizers.AdamW(lr, weight_decay=t.weight_decay)
    return keras.optimizers.Adam(lr)


def compile_model(model, cfg: Config, steps_per_epoch: int, steps_per_execution: int = 1) -> None:
    import keras

    model.compile(
        steps_per_execution=steps_per_execution,
        optimizer=make_optimizer(cfg, steps_per_epoch),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=[keras.metrics.AUC(name="auc", num_thresholds=1000), keras.metrics.BinaryAccuracy(name="accuracy")],
        jit_compile={"auto": "auto", "True": True, "False": False}[str(cfg.train.jit_compile)],
    )


def class_weights(cfg: Config) -> dict[int, float]:
    """Inverse-frequency class weights from the training labels (images are not decoded)."""
    import tensorflow_datasets as tfds

    builder = data.load_builder(cfg.data)
    ds = builder.as_dataset(
        split=data.split_spec(cfg.data, cfg.data.train_split),
        decoders={"image": tfds.decode.SkipDecoding()},
    )
    labels = np.fromiter((int(e["label"]) for e in ds.as_numpy_iterator()), np.int64)
    counts = np.bincount(labels, minlength=2).astype(float)
    return {c: float(len(labels) / (2 * max(counts[c], 1))) for c in (0, 1)}


def predict_split(model, cfg: Config, split: str, tta: bool = False, batch_size: int = 128):
    """(ids, labels, scores) of ``model`` on ``split``; ``tta`` averages the 8 dihedral views."""
    import tensorflow as tf

    ds = data.make_dataset(cfg.data, split, batch_size, training=False, with_ids=True)
    # One trace for every batch size (the last batch is smaller) and every TTA view.
    # No AutoGraph: there is no Python control flow to convert (and it cannot read a lambda's source).
    def forward(x):
        return model(x, training=False)

    predict = tf.function(forward, input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)],
                          autograph=False)
    ids, labels, scores = [], [], []
    for x, y in ds:
        images = x["image"]
        if tta:
            s = tf.add_n([tf.cast(predict(data.dihedral(images, k)), tf.float32) for k in range(8)]) / 8.0
        else:
            s = tf.cast(predict(images), tf.float32)
        ids.extend(i.decode() for i in x["id"].numpy())
        labels.append(y.numpy())
        scores.append(np.reshape(s.numpy(), -1))
    return np.array(ids), np.concatenate(labels).astype(np.int64), np.concatenate(scores).astype(np.float64)


# --------------------------------------------------------------------------- feature cache
def compute_features(extractor, cfg: Config, split: str, batch_size: int):
    """Pooled base features of a whole split, computed once (the base is frozen). Only used
    without augmentation, so reading the split in its stored order loses nothing."""
    import tensorflow as tf

    def features(x):
        return tf.cast(extractor(x, training=False), tf.float32)

    extract = tf.function(features, autograph=False)
    feats, labels = [], []
    for x, y in data.make_dataset(cfg.data, split, batch_size, training=False):
        feats.append(extract(x).numpy())
        labels.append(y.numpy())
    return np.concatenate(feats), np.concatenate(labels)


def use_feature_cache(cfg: Config, strategy_name: str) -> tuple[bool, str]:
    if cfg.model.strategy != "freeze_base" or cfg.model.trainable_from:
        return False, ""
    if not cfg.train.feature_cache:
        return False, "feature cache off (train.feature_cache=false)"
    if cfg.data.augment:
        return False, (
            "feature cache off: augmentation changes every patch every epoch, so the frozen base "
            "must see each augmented patch (set data.augment=false to train the head on cached features)"
        )
    if strategy_name != "one":
        return False, "feature cache off: it runs on one device only"
    return True, "feature cache on: the frozen base's features are computed once, then only the head trains"


def cached_feature_datasets(model, cfg: Config, steps: int, log: Callable[[str], None]):
    """The frozen-base shortcut: computes the base's pooled features of the training and
    validation splits once, and returns (head model sharing ``model``'s head layers, train and
    validation datasets of features). Training the head on these trains ``model``'s head."""
    import tensorflow as tf

    from hcdtf import models

    bs = cfg.train.batch_size
    extractor = models.feature_extractor(model)
    start = time.time()
    f_train, y_train = compute_features(extractor, cfg, cfg.data.train_split, bs)
    f_val, y_val = compute_features(extractor, cfg, cfg.data.validation_split, bs)
    log(f"cached {len(f_train)} + {len(f_val)} feature vectors of size {f_train.shape[1]} "
        f"in {time.time() - start:.1f} s")
    train_ds = (
        tf.data.Dataset.from_tensor_slices((f_train, y_train))
        .shuffle(len(f_train), seed=cfg.seed, reshuffle_each_iteration=True)
        .batch(bs)
        .take(steps)
    )
    val_ds = tf.data.Dataset.from_tensor_slices((f_val, y_val)).batch(bs)
    head = models.head_model(model)
    # A step of a 513-parameter head is mostly Keras' per-step overhead: running 16 steps per call
    # makes head epochs 2.0-2.2x faster (benchmarks/README.md, feature_cache).
    compile_model(head, cfg, steps, steps_per_execution=max(1, min(16, steps)))
    return head, train_ds, val_ds


def make_callbacks(cfg: Config, run: pathlib.Path, best_path, history_path, best_so_far):
    """Best checkpoint by validation AUC, history.csv, TensorBoard, optional early stopping and
    plateau schedule, and BackupAndRestore (last, so an epoch's other artifacts are written
    before it counts as finished)."""
    import keras

    callbacks = [
        keras.callbacks.ModelCheckpoint(
            str(best_path), monitor="val_auc", mode="max", save_best_only=True, save_weights_only=True,
            # On resume, only an epoch better than every earlier one may replace the checkpoint.
            initial_value_threshold=best_so_far,
        ),
        make_history_callback(history_path),
        keras.callbacks.TensorBoard(str(run / "logs")),
        keras.callbacks.BackupAndRestore(str(run / "backup")),
    ]
    if cfg.train.early_stopping_patience:
        callbacks.insert(0, keras.callbacks.EarlyStopping(
            monitor="val_auc", mode="max", patience=cfg.train.early_stopping_patience))
    if cfg.train.schedule == "plateau":
        callbacks.insert(0, keras.callbacks.ReduceLROnPlateau(monitor="val_auc", mode="max", factor=0.2, patience=2))
    return callbacks


# --------------------------------------------------------------------------- entry point
def train(cfg: Config, overwrite: bool = False, log: Callable[[str], None] = print) -> dict:
    """Trains ``cfg`` into ``cfg.output_dir`` (resuming if a previous run was killed) and
    returns the train summary."""
    from hcdtf.distributed import fit_multiworker, is_chief

    run = pathlib.Path(cfg.output_dir)
    # In a multi-worker cluster only the chief writes the run directory (see distributed.py).
    writer = is_chief() or cfg.train.strategy not in ("auto", "multiworker")
    if writer:
        state = prepare_run_dir(cfg, overwrite)
        if state == "complete":
            log(f"{run}: this run is already complete (train_summary.json); nothing to do")
            return json.loads((run / "train_summary.json").read_text())
    data.load_builder(cfg.data)  # fails early, with how to build, if the data set is missing
    if writer:
        run.mkdir(parents=True, exist_ok=True)
        cfg.dump(run / "config.yaml")
        if state == "resume":
            log(f"{run}: resuming an unfinished run")

    runtime.set_seed(cfg.seed, cfg.deterministic)
    precision = runtime.set_precision(cfg.train.precision)
    strategy, strategy_name = runtime.make_strategy(cfg.train.strategy)
    writer = writer or strategy_name != "multiworker"
    replicas = strategy.num_replicas_in_sync
    if cfg.train.batch_size % replicas:
        raise ConfigError(
            f"train.batch_size={cfg.train.batch_size} is not divisible by the {replicas} replicas of "
            f"the {strategy_name} strategy; use a multiple of {replicas}"
        )
    log(f"precision: {precision} (train.precision={cfg.train.precision}); strategy: {strategy_name} "
        f"({replicas} replica{'s' if replicas > 1 else ''}); oneDNN: {'on' if runtime.onednn_enabled() else 'off'}; "
        f"op determinism: {'on' if cfg.deterministic else 'off'}")

    n_train = data.num_examples(cfg.data, cfg.data.train_split)
    n_val = data.num_examples(cfg.data, cfg.data.validation_split)
    bs = cfg.train.batch_size
    steps = math.ceil(n_train / bs)
    if cfg.train.steps_per_epoch:
        steps = min(steps, cfg.train.steps_per_epoch)
    cached, why = use_feature_cache(cfg, strategy_name)
    if why:
        log(why)

    with strategy.scope():
        model, weights_used = build_model(cfg, log)
        compile_model(model, cfg, steps)
    from hcdtf import models

    params_total, params_trainable = models.count_params(model)

    if writer:
        (run / "checkpoints").mkdir(exist_ok=True)
    best_path = run / "checkpoints" / "best.weights.h5"
    history_path = run / "history.csv"
    previous = read_history(history_path)
    best_so_far = max((float(r["val_auc"]) for r in previous if r.get("val_auc")), default=None)
    callbacks = make_callbacks(cfg, run, best_path, history_path, best_so_far)
    cw = class_weights(cfg) if cfg.train.class_weight else None

    t0 = time.time()
    if cached:
        fit_model, train_ds, val_ds = cached_feature_datasets(model, cfg, steps, log)
    else:
        train_ds = data.make_dataset(cfg.data, cfg.data.train_split, bs, training=True, seed=cfg.seed,
                                     drop_remainder=replicas > 1)
        if cfg.train.steps_per_epoch:
            train_ds = train_ds.take(steps)
        val_ds = data.make_dataset(cfg.data, cfg.data.validation_split, bs, training=False)
        fit_model = model
    if strategy_name == "multiworker":
        if cw or cfg.train.schedule == "plateau":
            log("multiworker: class weights and the plateau schedule are not supported by the custom loop; ignored")
        best = {"auc": best_so_far if best_so_far is not None else float("-inf")}

        def on_epoch_end(epoch, logs):
            record_epoch(history_path, epoch, logs)
            if logs["val_auc"] > best["auc"]:
                best["auc"] = logs["val_auc"]
                model.save_weights(str(best_path), overwrite=True)

        epochs_run = fit_multiworker(
            model, model.optimizer, strategy, train_ds, val_ds, run, cfg.train.epochs, bs,
            on_epoch_end, patience=cfg.train.early_stopping_patience, log=log,
        )
    else:
        hist = fit_model.fit(
            train_ds, validation_data=val_ds, epochs=cfg.train.epochs, callbacks=callbacks,
            class_weight=cw, verbose="auto" if sys.stdout.isatty() else 2,
            shuffle=False,  # the tf.data pipeline shuffles (seeded); Keras cannot shuffle a Dataset
        )
        epochs_run = len(hist.epoch)
    wall = time.time() - t0
    if not writer:
        log(f"multiworker: worker finished {epochs_run} epochs; the chief writes the run directory")
        return {"epochs_this_session": epochs_run, "wall_time_s": round(wall, 3), "replicas": replicas}

    if best_path.is_file():
        fit_model.load_weights(str(best_path))
    model_path = run / "model.keras"
    model.save(str(model_path))
    ids, labels, scores = predict_split(model, cfg, cfg.data.validation_split, batch_size=cfg.eval.batch_size)
    artifacts.write_predictions(run / "val_predictions.csv", ids, labels, scores)

    history = read_history(history_path)
    best = max(history, key=lambda r: float(r.get("val_auc", "nan") or "nan"), default=None) if history else None
    images = epochs_run * min(n_train, steps * bs)
    summary = {
        "arch": cfg.model.arch,
        "depth": int(cfg.model.arch.replace("ResNet", "")),
        "strategy": cfg.model.strategy,
        "trainable_from": cfg.model.trainable_from,
        "weights": weights_used,
        "dataset": f"{cfg.data.dataset}/{cfg.data.dataset_config}",
        "n_train": n_train,
        "n_validation": n_val,
        "epochs_requested": cfg.train.epochs,
        "epochs_completed": len(history),
        "epochs_this_session": epochs_run,
        "best_epoch": int(best["epoch"]) if best else None,
        "best_val_auc": float(best["val_auc"]) if best and best.get("val_auc") else None,
        "wall_time_s": round(wall, 3),
        "images_per_s": round(images / wall, 3) if wall > 0 else None,
        "precision": precision,
        "distribution": strategy_name,
        "replicas": replicas,
        "onednn": runtime.onednn_enabled(),
        "deterministic": cfg.deterministic,
        "feature_cache": cached,
        "params_total": params_total,
        "params_trainable": params_trainable,
        "flops_per_image": models.flops_per_image(cfg.model.arch),
        "hcdtf_version": __version__,
        "model": str(model_path.name),
    }
    atomic.write_json(run / "train_summary.json", summary)
    shutil.rmtree(run / "backup", ignore_errors=True)
    log(f"{run}: trained {cfg.model.arch} ({cfg.model.strategy}) for {len(history)} epochs, "
        f"best val AUC {summary['best_val_auc']}, {summary['images_per_s']} images/s")
    return summary
