"""A custom training loop for MultiWorkerMirroredStrategy.

Keras 3's ``model.fit`` fails under ``MultiWorkerMirroredStrategy`` ("Attempt to convert a value
(PerReplica:{...}) to a Tensor", keras-team/keras#20585), so multi-worker runs use this loop: a
``tf.function`` step that calls ``strategy.run`` over ``experimental_distribute_dataset``, with
the loss averaged over the *global* batch so that gradients summed across replicas equal
one-device training's.

It keeps the run-directory contract of ``train.train``: ``history.csv``, the best checkpoint by
validation AUC and a backup after each epoch from which a killed run resumes. Only the chief
(worker 0) writes; every worker reads the backup on restart (a shared file system, as with
Keras' BackupAndRestore). Every worker computes the same validation AUC on the whole validation
split with identical weights, so all of them take the same early-stopping decision and no worker
waits on a collective that the others skipped.
"""

from __future__ import annotations

import json
import os
import pathlib
import time
from typing import Callable


def is_chief() -> bool:
    """Worker 0 (or the "chief" task, if the cluster names one) writes the run directory."""
    tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task = tf_config.get("task", {})
    if "chief" in tf_config.get("cluster", {}):
        return task.get("type") == "chief"
    return task.get("type", "worker") == "worker" and int(task.get("index", 0)) == 0


def _validation_auc(model, val_ds) -> tuple[float, float]:
    import numpy as np
    from sklearn.metrics import roc_auc_score

    labels, scores = [], []
    for x, y in val_ds:
        scores.append(np.reshape(model(x, training=False).numpy(), -1).astype(np.float64))
        labels.append(y.numpy())
    y, s = np.concatenate(labels), np.concatenate(scores)
    eps = 1e-7
    loss = float(-np.mean(y * np.log(np.clip(s, eps, 1)) + (1 - y) * np.log(np.clip(1 - s, eps, 1))))
    auc = float(roc_auc_score(y, s)) if len(set(y.tolist())) == 2 else float("nan")
    return auc, loss


def fit_multiworker(
    model,
    optimizer,
    strategy,
    train_ds,
    val_ds,
    run: pathlib.Path,
    epochs: int,
    global_batch: int,
    on_epoch_end: Callable[[int, dict], None],
    patience: int = 0,
    log: Callable[[str], None] = print,
) -> int:
    """Trains ``model`` (built and compiled in ``strategy.scope()``, ``optimizer`` being its
    compiled optimizer, so that save/load_weights carry the optimizer state) and returns the
    number of epochs run."""
    import keras
    import tensorflow as tf

    chief = is_chief()
    backup = run / "backup"
    weights_path = backup / "latest.weights.h5"
    meta_path = backup / "training_metadata.json"
    with strategy.scope():
        optimizer.build(model.trainable_variables)  # its slots must exist before a restore
    start = 0
    if meta_path.is_file() and weights_path.is_file():
        model.load_weights(str(weights_path))
        start = int(json.loads(meta_path.read_text())["epoch"])
        log(f"multiworker: resuming after epoch {start}")

    dist_ds = strategy.experimental_distribute_dataset(train_ds)
    scale = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

    def step(x, y):
        with tf.GradientTape() as tape:
            p = tf.cast(tf.reshape(model(x, training=True), [-1]), tf.float32)
            per_example = keras.losses.binary_crossentropy(tf.reshape(y, [-1, 1]), tf.reshape(p, [-1, 1]))
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            scaled = optimizer.scale_loss(loss) if scale else loss
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    @tf.function
    def train_step(x, y):
        per_replica = strategy.run(step, args=(x, y))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    best = float("-inf")
    waited = 0
    ran = 0
    for epoch in range(start, epochs):
        t0 = time.time()
        total, steps = 0.0, 0
        for x, y in dist_ds:
            total += float(train_step(x, y))
            steps += 1
        val_auc, val_loss = _validation_auc(model, val_ds)
        logs = {"loss": total / max(steps, 1), "val_auc": val_auc, "val_loss": val_loss}
        log(f"epoch {epoch + 1}/{epochs}: loss {logs['loss']:.4f} val_auc {val_auc:.4f} ({time.time() - t0:.1f} s)")
        ran += 1
        if chief:
            on_epoch_end(epoch, logs)
            backup.mkdir(parents=True, exist_ok=True)
            model.save_weights(str(weights_path), overwrite=True)
            meta_path.write_text(json.dumps({"epoch": epoch + 1}))
        if val_auc > best:
            best, waited = val_auc, 0
        else:
            waited += 1
            if patience and waited >= patience:
                log(f"early stopping after epoch {epoch + 1}: no validation-AUC gain in {patience} epochs")
                break
    return ran
