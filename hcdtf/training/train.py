"""Training: wires config, data, model and the epoch loop into a resumable run directory.

An epoch is committed by one file, ``backup/state-NNNN.npz`` (``hcdtf.rundir``): every variable of
the model and optimizer (including dropout's random state) and the run's bookkeeping (history,
best epoch, time). The history, the best checkpoint and TensorBoard are derived from it. A killed
run restarts its unfinished epoch from the beginning, and the data of epoch k depend only on
(seed, k) (``data.training_epochs``), so a resumed run is the same training as an uninterrupted
one; with op determinism (the default) its weights and history.csv are identical.

Early stopping, the plateau schedule and the best epoch are pure functions of the history, so they
too continue exactly after a resume.
"""

from __future__ import annotations

import csv
import io
import math
import os
import shutil
import sys
import time
from typing import Callable

import numpy as np

from hcdtf import __version__, atomic, runtime
from hcdtf.evaluation import artifacts
from hcdtf.data import pipeline as data
from hcdtf import precision as precision_lib
from hcdtf.atomic import TMP_MARK
from hcdtf.config import Config, ConfigError
from hcdtf.rundir import LOGS, MODEL_FILES, ResumeState, RunDir, RunDirError, kill_point, load_state, save_state


# --------------------------------------------------------------------------- schedule rules
def best_epoch(history: list[dict]) -> int | None:
    """The 1-based epoch with the highest validation AUC (the first one on ties), or None."""
    best, at = float("-inf"), None
    for row in history:
        auc = float(row.get("val_auc", "nan"))
        if auc > best:
            best, at = auc, int(row["epoch"])
    return at


def should_stop(history: list[dict], patience: int) -> bool:
    """Early stopping: ``patience`` epochs in a row without a new best validation AUC."""
    if not patience or not history:
        return False
    at = best_epoch(history)
    return int(history[-1]["epoch"]) - (at or 0) >= patience


def plateau_learning_rate(history: list[dict], initial: float, factor: float = 0.2, patience: int = 2,
                          min_delta: float = 1e-4) -> float:
    """Reduce-on-plateau: the rate is multiplied by ``factor`` whenever ``patience`` epochs
    pass without the validation AUC improving by more than ``min_delta`` (as Keras'
    ReduceLROnPlateau, replayed from the history)."""
    lr, best, wait = initial, float("-inf"), 0
    for row in history:
        auc = float(row.get("val_auc", "nan"))
        if auc > best + min_delta:
            best, wait = auc, 0
            continue
        wait += 1
        if wait >= patience:
            lr, wait = lr * factor, 0
    return lr


# --------------------------------------------------------------------------- history files
HISTORY_KEYS = ("loss", "auc", "accuracy", "val_loss", "val_auc", "val_accuracy", "learning_rate")


def history_csv(history: list[dict]) -> str:
    keys = ["epoch"] + sorted({k for r in history for k in r} - {"epoch"})
    out = io.StringIO()
    w = csv.DictWriter(out, keys, lineterminator="\n")
    w.writeheader()
    w.writerows(history)
    return out.getvalue()


def read_history(path) -> list[dict]:
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except FileNotFoundError:
        return []


def _row(epoch: int, logs: dict, learning_rate: float) -> dict:
    row = {"epoch": epoch}
    row.update({k: f"{float(v):.6g}" for k, v in logs.items() if k in HISTORY_KEYS})
    row["learning_rate"] = f"{learning_rate:.6g}"
    return row


# --------------------------------------------------------------------------- model pieces
def build_model(cfg: Config, log: Callable[[str], None] = print):
    """Builds the classifier; without ImageNet weights and ``fallback_to_scratch`` it says so in
    one line and starts from random weights. Returns (model, weights actually used)."""
    from hcdtf import models

    m = cfg.model
    weights = None if (m.weights is None or str(m.weights).lower() == "none") else m.weights
    kwargs = dict(transfer=m.transfer, trainable_from=m.trainable_from, dropout=m.dropout)
    if cfg.data.stain_normalize != "none":  # the target goes into the model (and every export)
        kwargs["stain"] = stain_target(cfg.data)
    if cfg.train.layer_decay != 1.0 and (models.get_arch(m.arch).block != "transformer" or m.transfer != "fine_tune"):
        log(f"train.layer_decay={cfg.train.layer_decay} applies to fine-tuned pathology encoders only: "
            f"not used by {m.arch} {m.transfer}")  # a grid's one setting for ResNets and encoders alike
    if models.get_arch(m.arch).block == "transformer" and weights is not None:
        # No fallback: a random full-size ViT says nothing about pretraining and takes hours here
        from hcdtf.models.encoders.train_rules import resolve_run_weights

        weights = resolve_run_weights(m.arch, weights, m.encoder_dir, m.fallback_to_scratch)
    try:
        return models.build_classifier(m.arch, weights=weights, **kwargs), weights or "none"
    except models.WeightsUnavailableError as e:
        if not m.fallback_to_scratch:
            raise
        hint = f" ({e.hint})" if getattr(e, "hint", None) else ""
        log(f"ImageNet weights for {m.arch} are not available offline; training from scratch.{hint}")
        return models.build_classifier(m.arch, weights=None, **kwargs), "none (ImageNet weights unavailable)"


def stain_target(data) -> dict:
    """The stain target of ``data.stain_target``, checked against ``data.stain_normalize``."""
    from hcdtf.models import stain
    from hcdtf.stain import targets

    if data.stain_target == targets.TRAIN_TARGET:  # fitted to the run's own training patches
        return targets.fit_training_target(data, data.stain_normalize)
    target = stain.read_target(data.stain_target)
    if target["method"] != data.stain_normalize:
        raise ConfigError(f"data.stain_target {data.stain_target} is a {target['method']} target, but "
                          f"data.stain_normalize={data.stain_normalize}")
    return target


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

    optimizer = make_optimizer(cfg, steps_per_epoch)
    if cfg.train.layer_decay != 1.0 and "base" in [layer.name for layer in model.layers] \
            and hasattr(model.get_layer("base"), "num_layers"):  # an encoder's ViT blocks
        from hcdtf.models.encoders import train_rules

        train_rules.with_layer_decay(optimizer, train_rules.variable_multipliers(model, cfg.train.layer_decay))
    model.compile(
        steps_per_execution=steps_per_execution,
        optimizer=optimizer,
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
    return balanced_class_weights(np.fromiter((int(e["label"]) for e in ds.as_numpy_iterator()), np.int64))


def balanced_class_weights(labels: np.ndarray) -> dict[int, float]:
    """scikit-learn's "balanced" weights of 0/1 labels, n / (2 * count of the class): both classes
    then weigh n / 2 in the loss (a class with no examples gets weight n / 2)."""
    labels = np.asarray(labels, np.int64)
    counts = np.bincount(labels, minlength=2).astype(float)
    return {c: float(len(labels) / (2 * max(counts[c], 1))) for c in (0, 1)}


# --------------------------------------------------------------------------- feature cache
def compute_features(extractor, cfg: Config, split: str, batch_size: int, strategy=None):
    """Pooled base features of a whole split, computed once (the base is frozen). Only used
    without augmentation, so reading the split in its stored order loses nothing. Under a
    several-replica strategy each batch is split across the replicas (`hcdtf embed`'s pass)."""
    import tensorflow as tf

    def features(x):
        return tf.cast(extractor(x, training=False), tf.float32)

    extract = tf.function(features, autograph=False)
    if strategy is not None and strategy.num_replicas_in_sync > 1:
        from hcdtf.inference.embed import distributed_call

        split_call = distributed_call(features, strategy)
        extract = lambda x: split_call(x.numpy())  # noqa: E731
    feats, labels = [], []
    for x, y in data.make_dataset(cfg.data, split, batch_size, training=False):
        feats.append(np.asarray(extract(x)))
        labels.append(y.numpy())
    return np.concatenate(feats), np.concatenate(labels)


def use_feature_cache(cfg: Config, distribution: str) -> tuple[bool, str]:
    if cfg.model.transfer != "freeze_base" or cfg.model.trainable_from:
        return False, ""
    if not cfg.train.feature_cache:
        return False, "feature cache off (train.feature_cache=false)"
    if cfg.data.augment:
        return False, (
            "feature cache off: augmentation changes every patch every epoch, so the frozen base "
            "must see each augmented patch (set data.augment=false to train the head on cached features)"
        )
    if distribution == "multiworker":
        return False, "feature cache off: it runs on one machine (one device, or mirrored), not across workers"
    return True, "feature cache on: the frozen base's features are computed once, then only the head trains"


def cached_feature_epochs(model, cfg: Config, steps: int, log: Callable[[str], None], strategy=None):
    """The frozen-base shortcut: computes the base's pooled features of the training and
    validation splits once and returns (head model sharing ``model``'s head layers, ``epoch ->``
    training dataset of features, validation dataset). Training the head trains ``model``'s."""
    import contextlib

    import tensorflow as tf

    from hcdtf import models

    bs = cfg.train.batch_size
    extractor = models.feature_extractor(model)
    start = time.time()
    f_train, y_train = compute_features(extractor, cfg, cfg.data.train_split, bs, strategy)
    f_val, y_val = compute_features(extractor, cfg, cfg.data.validation_split, bs, strategy)
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    log(f"cached {len(f_train)} + {len(f_val)} feature vectors of size {f_train.shape[1]} "
        f"in {time.time() - start:.1f} s" + (f" (each batch split across {replicas} replicas)" if replicas > 1 else ""))
    source = tf.data.Dataset.from_tensor_slices((f_train, y_train))

    def epoch(k: int):
        return source.shuffle(len(f_train), seed=data.epoch_seed(cfg.seed, k)).batch(bs).take(steps)

    val_ds = tf.data.Dataset.from_tensor_slices((f_val, y_val)).batch(bs)
    # Under a MirroredStrategy (of any replica count: one GPU is one replica) the model's variables
    # are the strategy's, so the head is built and compiled in its scope, and its fit uses the replicas.
    mirrored = isinstance(strategy, tf.distribute.MirroredStrategy)
    with strategy.scope() if mirrored else contextlib.nullcontext():
        head = models.head_model(model)
        # A step of a head this small is mostly Keras' per-step overhead: run up to 16 per call
        # (not under MirroredStrategy: Keras 3.15's multi-step loop fails there, "You must feed a
        # value for placeholder tensor").
        compile_model(head, cfg, steps, steps_per_execution=1 if mirrored else max(1, min(16, steps)))
    return head, epoch, val_ds


# --------------------------------------------------------------------------- one session
class _Session:
    """What one process needs to train a run: the model, its data and the epoch function."""

    def __init__(self, cfg: Config, log: Callable[[str], None], precision: tuple[str, dict] | None = None):
        from hcdtf import models
        from hcdtf.training.distributed import MultiWorkerEpoch

        self.cfg, self.log, self.t0 = cfg, log, time.time()
        # `auto` is resolved before anything else is built (its probe builds and clears models);
        # a resumed run passes the precision its first session chose.
        self.precision, self.precision_figures = precision or precision_lib.resolve_training(
            cfg.train.precision, cfg.model.arch, cfg.train.batch_size, cfg.train.distribution, log)
        runtime.set_seed(cfg.seed, cfg.deterministic)
        runtime.set_precision(self.precision)
        self.strategy, self.distribution = runtime.make_strategy(cfg.train.distribution)
        self.replicas = self.strategy.num_replicas_in_sync
        bs = cfg.train.batch_size
        if bs % self.replicas:
            raise ConfigError(
                f"train.batch_size={bs} is not divisible by the {self.replicas} replicas of the "
                f"{self.distribution} distribution; use a multiple of {self.replicas}"
            )
        log(f"{precision_lib.describe(self.precision, self.precision_figures)}; distribution: "
            f"{self.distribution} ({self.replicas} replica{'s' if self.replicas > 1 else ''}); oneDNN: "
            f"{'on' if runtime.onednn_enabled() else 'off'}; op determinism: {'on' if cfg.deterministic else 'off'}")
        self.n_train = data.num_examples(cfg.data, cfg.data.train_split)
        self.n_val = data.num_examples(cfg.data, cfg.data.validation_split)
        self.steps = math.ceil(self.n_train / bs)
        if cfg.train.steps_per_epoch:
            self.steps = min(self.steps, cfg.train.steps_per_epoch)
        self.cached, why = use_feature_cache(cfg, self.distribution)
        if why:
            log(why)
        with self.strategy.scope():
            self.model, self.weights_used = build_model(cfg, log)
            compile_model(self.model, cfg, self.steps)
        self.params = models.count_params(self.model)
        self.class_weight = class_weights(cfg) if cfg.train.class_weight else None
        self.cache_seconds = None  # the frozen base's one pass over train + validation (embedding time)
        if self.cached:
            start = time.time()
            self.fit_model, self.train_epoch, self.val_ds = cached_feature_epochs(self.model, cfg, self.steps, log,
                                                                                  self.strategy)
            self.cache_seconds = time.time() - start
        else:
            self.fit_model = self.model
            self.train_epoch = data.training_epochs(cfg.data, cfg.data.train_split, bs, cfg.seed, self.steps,
                                                    drop_remainder=self.replicas > 1)
            self.val_ds = data.make_dataset(cfg.data, cfg.data.validation_split, bs, training=False)
        with self.strategy.scope():
            self.fit_model.optimizer.build(self.fit_model.trainable_variables)  # slots exist before a restore
        self.variables = list(self.fit_model.variables) + list(self.fit_model.optimizer.variables)
        self.tb_writer, self.tb_dir = None, None
        self._multiworker = None
        if self.distribution == "multiworker":
            if self.class_weight or cfg.train.schedule == "plateau":
                log("multiworker: class weights and the plateau schedule are not supported by the custom loop; ignored")
            self._multiworker = MultiWorkerEpoch(self.model, self.strategy, bs, _mid_epoch_hook())

    def names(self) -> list[str]:
        return [v.path for v in self.variables]

    def restore(self, state: ResumeState, where) -> None:
        if state.names != self.names():
            raise RunDirError(
                f"the resume state in {where} does not match this model ({len(state.names)} vs "
                f"{len(self.variables)} variables); it was written by another hcdtf version or code. "
                "Pass --overwrite to start the run again"
            )
        with self.strategy.scope():
            for v, value in zip(self.variables, state.values):
                v.assign(value)

    def run_epoch(self, k: int, history: list[dict]) -> dict:
        """Trains epoch ``k`` (0-based) and returns its logs."""
        import keras

        if self.cfg.train.schedule == "plateau":
            self.fit_model.optimizer.learning_rate = plateau_learning_rate(history, self.cfg.train.learning_rate)
        lr = float(keras.ops.convert_to_numpy(self.fit_model.optimizer.learning_rate))
        train_ds = self.train_epoch(k)
        if self._multiworker is not None:
            logs = self._multiworker(train_ds, self.val_ds)
        else:
            hist = self.fit_model.fit(
                train_ds, validation_data=self.val_ds, initial_epoch=k, epochs=k + 1,
                class_weight=self.class_weight, verbose=0, shuffle=False, callbacks=_fit_callbacks(self.steps),
            )
            logs = {key: values[-1] for key, values in hist.history.items()}
        logs["learning_rate"] = lr
        return logs


def _mid_epoch_hook():
    """Calls the ``mid-epoch`` kill point after each step when a test asks for it."""
    return (lambda: kill_point("mid-epoch")) if os.environ.get("HCDTF_KILL_AT") else None


def _fit_callbacks(steps: int) -> list:
    import keras

    callbacks = []
    if sys.stdout.isatty():
        bar = keras.utils.Progbar(steps)
        callbacks.append(keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: bar.update(b + 1)))
    hook = _mid_epoch_hook()
    if hook:
        callbacks.append(keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: hook()))
    return callbacks


# --------------------------------------------------------------------------- committing epochs
def _save_best(model, work: RunDir) -> None:
    path = work.best_weights_path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".best{TMP_MARK}{os.getpid()}.weights.h5")  # Keras wants ".weights.h5"
    model.save_weights(str(tmp))
    os.replace(tmp, path)


def _write_derived(session: _Session, work: RunDir, meta: dict) -> None:
    """Rewrites what an epoch's state implies: the best checkpoint if that epoch is the best,
    and history.csv."""
    history = meta["history"]
    if history and best_epoch(history) == int(history[-1]["epoch"]):
        _save_best(session.model, work)
    kill_point("after-best-write")
    atomic.write_text(work.history_path, history_csv(history))
    kill_point("after-history")


def _tensorboard(session: "_Session", work: RunDir, row: dict) -> None:
    """Epoch scalars for TensorBoard, from the committed row (history.csv is the record; an
    epoch redone after a kill may appear twice here, with the same values)."""
    import tensorflow as tf

    logdir = str(work.path / LOGS / "epochs")
    if session.tb_dir != logdir:  # the first epoch, or a staged run swapped into place
        session.tb_writer = tf.summary.create_file_writer(logdir)
        session.tb_dir = logdir
    with session.tb_writer.as_default():
        for key, value in row.items():
            if key != "epoch":
                tf.summary.scalar(key, float(value), step=int(row["epoch"]))
    session.tb_writer.flush()


def _commit(session: _Session, work: RunDir, epoch: int, logs: dict, meta: dict, seconds: float) -> None:
    row = _row(epoch, logs, logs["learning_rate"])
    meta["history"].append(row)
    meta["epoch_seconds"].append(round(seconds, 3))
    meta["elapsed_s"] = meta["elapsed_before"] + (time.time() - session.t0)
    kill_point("before-state-write")
    save_state(work.backup_dir, ResumeState(epoch, session.names(), [np.asarray(v.numpy()) for v in session.variables],
                                            {k: v for k, v in meta.items() if k != "elapsed_before"}))
    kill_point("after-state-commit")
    _write_derived(session, work, meta)
    _tensorboard(session, work, row)


def _fresh_meta() -> dict:
    return {"history": [], "epoch_seconds": [], "elapsed_s": 0.0, "sessions": 0}


def _resume(session: _Session, work: RunDir, writer: bool, log) -> dict:
    """Restores the newest committed state of ``work`` (if any) and returns the bookkeeping."""
    state = load_state(work.backup_dir, log)
    if state is None:
        if writer and work.has_progress():
            log(f"{work.path}: no usable resume state (an older hcdtf, or unreadable); starting the run again")
            work.clear()
        return _fresh_meta()
    session.restore(state, work.backup_dir)
    meta = state.meta
    log(f"{work.path}: resuming after epoch {state.epoch} (of {session.cfg.train.epochs})")
    if writer:
        _write_derived(session, work, meta)  # the kill may have come before these were written
    return meta


# --------------------------------------------------------------------------- finishing
def _summary(session: _Session, meta: dict, epochs_run: int) -> dict:
    from hcdtf import models

    cfg, history = session.cfg, meta["history"]
    at = best_epoch(history)
    train_seconds = sum(meta["epoch_seconds"])
    images = len(history) * min(session.n_train, session.steps * cfg.train.batch_size)
    return {
        "kind": "cnn",
        "arch": cfg.model.arch,
        "depth": models.get_arch(cfg.model.arch).depth,
        "transfer": cfg.model.transfer,
        "trainable_from": cfg.model.trainable_from,
        "weights": session.weights_used,
        "seed": cfg.seed,
        "fold": cfg.data.fold,
        "dataset": f"{cfg.data.dataset}/{cfg.data.dataset_config}",
        "input_mpp": data.PATCH_MPP,
        "n_train": session.n_train,
        "n_validation": session.n_val,
        "epochs_requested": cfg.train.epochs,
        "epochs_completed": len(history),
        "epochs_this_session": epochs_run,
        "sessions": meta.get("sessions", 1),
        "best_epoch": at,
        "best_val_auc": float(history[at - 1]["val_auc"]) if at else None,
        "wall_time_s": round(meta["elapsed_s"], 3),
        "train_time_s": round(train_seconds, 3),
        "images_per_s": round(images / train_seconds, 3) if train_seconds > 0 else None,
        "precision": session.precision,
        "precision_choice": session.precision_figures,
        "cpu": precision_lib.cpu_features(),
        "distribution": session.distribution,
        "replicas": session.replicas,
        "onednn": runtime.onednn_enabled(),
        "deterministic": cfg.deterministic,
        "feature_cache": session.cached,
        "feature_cache_s": round(session.cache_seconds, 3) if session.cache_seconds is not None else None,
        "params_total": session.params[0],
        "params_trainable": session.params[1],
        "flops_per_image": models.flops_per_image(session.model),  # the model trained (a tiny encoder: its own)
        "hcdtf_version": __version__,
        "model": MODEL_FILES["cnn"],
    }


def _finish(session: _Session, work: RunDir, meta: dict, epochs_run: int) -> dict:
    from hcdtf.inference import scoring

    model = session.model
    if best_epoch(meta["history"]) is not None:
        model.load_weights(str(work.best_weights_path))
    with atomic.atomic_output(work.model_path("cnn")) as tmp:
        model.save(str(tmp))
    ids, labels, scores = scoring.score_split(scoring.keras_scorer(model), session.cfg.data,
                                              session.cfg.data.validation_split, session.cfg.eval.batch_size)
    artifacts.write_predictions(work.val_predictions_path, ids, labels, scores)
    kill_point("after-val-predictions")
    meta["elapsed_s"] = meta["elapsed_before"] + (time.time() - session.t0)
    summary = _summary(session, meta, epochs_run)
    atomic.write_json(work.summary_path, summary)  # last: marks the run finished
    kill_point("after-summary")
    shutil.rmtree(work.backup_dir, ignore_errors=True)
    return summary


# --------------------------------------------------------------------------- entry point
def _epochs(session: _Session, work: RunDir, target: RunDir, meta: dict, writer: bool) -> tuple[RunDir, int]:
    """The epoch loop; swaps a staged run in after its first committed epoch. Returns the run
    directory that now holds the run and the number of epochs trained in this session."""
    cfg, log = session.cfg, session.log
    ran = 0
    for k in range(len(meta["history"]), cfg.train.epochs):
        if should_stop(meta["history"], cfg.train.early_stopping_patience):
            log(f"early stopping after epoch {k}: no validation-AUC gain in "
                f"{cfg.train.early_stopping_patience} epochs")
            break
        t = time.time()
        logs = session.run_epoch(k, meta["history"])
        ran += 1
        log(f"epoch {k + 1}/{cfg.train.epochs}: " + ", ".join(
            f"{key} {float(logs[key]):.4f}" for key in HISTORY_KEYS[:-1] if key in logs) + f" ({time.time() - t:.1f} s)")
        if writer:
            _commit(session, work, k + 1, logs, meta, time.time() - t)
            if work is not target:
                log(f"{target.path}: the new run has a finished epoch; replacing the old run")
                target.swap_in(work)
                work = target
        else:
            meta["history"].append(_row(k + 1, logs, logs["learning_rate"]))
    return work, ran


def _recorded_precision(work: RunDir, cfg: Config) -> tuple[str, dict] | None:
    """The precision a run started in, for its resumed sessions: the probe behind ``auto`` is not
    repeated (it could choose differently), so the resume stays exact. Runs of hcdtf <= 0.2 did
    not record it: their ``auto`` was float32 on a CPU and mixed_float16 on a GPU."""
    if not work.path.exists() or not work.is_run():
        return None
    recorded = work.recorded("precision")
    if recorded:
        return recorded, {**work.recorded("precision_figures", {}), "reused_on_resume": True}
    if cfg.train.precision == "auto":
        return ("mixed_float16" if precision_lib.has_gpu() else "float32"), {"rule": "auto of hcdtf <= 0.2"}
    return None


def _train_into(work: RunDir, target: RunDir, cfg: Config, writer: bool, log) -> dict:
    # the weights/data checks happen here, before anything is recorded
    session = _Session(cfg, log, _recorded_precision(work, cfg))
    meta = _resume(session, work, writer, log) if work.path.exists() else _fresh_meta()
    meta["sessions"] = meta.get("sessions", 0) + 1
    meta["elapsed_before"] = meta.get("elapsed_s", 0.0)
    if writer and not meta["history"]:
        from hcdtf.data import identity as dataid

        work.start(cfg, "cnn", data=dataid.training_record(cfg), precision=session.precision,
                   precision_figures=session.precision_figures)
    work, ran = _epochs(session, work, target, meta, writer)
    if not writer:
        log(f"multiworker: worker finished {ran} epochs; the chief writes the run directory")
        return {"epochs_this_session": ran, "replicas": session.replicas}
    summary = _finish(session, work, meta, ran)
    log(f"{work.path}: trained {cfg.model.arch} ({cfg.model.transfer}) for {summary['epochs_completed']} epochs, "
        f"best val AUC {summary['best_val_auc']}, {summary['images_per_s']} images/s")
    return summary


def _workspace(run: RunDir, cfg: Config, overwrite: bool, log) -> RunDir | dict:
    """Where to train: the run directory itself, or its staging directory when ``overwrite``
    replaces a finished run or a run of another config. A finished run of the same config is
    returned as its summary (nothing to do)."""
    state = run.status(cfg, "cnn")
    if state in ("complete", "resume"):
        from hcdtf.data import identity as dataid

        # A finished run would be reported as done, an unfinished one continued, on a data set
        # rebuilt since (ids and labels may have moved between splits): neither silently.
        changes = dataid.training_changes(run.data_record(), cfg)
        if changes and not overwrite:
            raise RunDirError(
                f"--output-dir {str(run.path)!r} holds a run trained on another build of {cfg.data.dataset}/"
                f"{cfg.data.dataset_config} ({'; '.join(changes)}); pass --overwrite to train it again on the "
                "current data, or choose another --output-dir")
        if changes:
            log(f"{run.path}: the data set was rebuilt since this run started ({'; '.join(changes)}); training again")
            state = "conflict"  # replaced like a run of another config: the old one stays until the new has an epoch
    if state == "foreign":
        raise RunDirError(f"--output-dir {str(run.path)!r} is not empty and holds no hcdtf run; choose another "
                          "directory (nothing in it is touched)")
    if state == "complete" and not overwrite:
        shutil.rmtree(run.backup_dir, ignore_errors=True)  # a kill after the summary was written
        return run.summary()
    if state == "conflict" and not overwrite:
        staged = " (an --overwrite of it was interrupted: rerun that command to continue it)" \
            if run.staging().is_run() else ""
        done = "a finished" if run.finished() else "an unfinished"
        raise RunDirError(f"--output-dir {str(run.path)!r} holds {done} run of another config ({run.config_path})"
                          f"{staged}; choose another --output-dir or pass --overwrite to replace it")
    if state in ("complete", "conflict"):
        staging = run.staging()
        if staging.status(cfg, "cnn") != "resume":
            run.discard_staging()
        log(f"{run.path}: training the replacement in {staging.path}; the old run stays until it has an epoch")
        return staging
    if state == "unstarted":
        log(f"{run.path}: replacing a start that failed before its first epoch")
        run.clear()
    run.discard_staging()
    return run


def train(cfg: Config, overwrite: bool = False, log: Callable[[str], None] = print) -> dict:
    """Trains ``cfg`` into ``cfg.output_dir`` (continuing a killed run exactly) and returns the
    train summary. A finished run of the same config is left as it is; one of another config is
    refused unless ``overwrite``, and then replaced once the new run has a finished epoch."""
    from hcdtf.training.distributed import is_chief

    run = RunDir(cfg.output_dir)
    if cfg.train.distribution in ("auto", "multiworker") and not is_chief():
        # A multi-worker cluster: only the chief writes (and locks) the run directory.
        if run.finished() and run.same_config(cfg, "cnn"):
            return run.summary()
        data.load_builder(cfg.data)
        return _train_into(run, run, cfg, writer=False, log=log)
    with run.locked("train"):
        work = _workspace(run, cfg, overwrite, log)
        if isinstance(work, dict):
            log(f"{run.path}: this run is already complete (train_summary.json); nothing to do")
            return work
        data.load_builder(cfg.data)  # fails early, with how to build, if the data set is missing
        return _train_into(work, run, cfg, writer=True, log=log)
