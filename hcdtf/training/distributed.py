"""One training epoch under MultiWorkerMirroredStrategy, through a custom loop.

Keras 3's ``model.fit`` fails under ``MultiWorkerMirroredStrategy`` ("Attempt to convert a value
(PerReplica:{...}) to a Tensor", keras-team/keras#20585), so multi-worker runs train with this
loop: a ``tf.function`` step that calls ``strategy.run`` over ``experimental_distribute_dataset``,
with the loss averaged over the *global* batch so that gradients summed across replicas equal
one-device training's.

Everything else (the epoch loop, resume state, history, best checkpoint, early stopping) is
``train.py``'s, the same for every distribution. Only the chief (worker 0) writes the run
directory; every worker restores the chief's resume state on restart (a shared file system).
Every worker computes the same validation AUC on the whole validation split with identical
weights, so all of them take the same early-stopping decision and no worker waits on a
collective that the others skipped.
"""

from __future__ import annotations

import json
import os


def is_chief() -> bool:
    """Worker 0 (or the "chief" task, if the cluster names one) writes the run directory."""
    tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task = tf_config.get("task", {})
    if "chief" in tf_config.get("cluster", {}):
        return task.get("type") == "chief"
    return task.get("type", "worker") == "worker" and int(task.get("index", 0)) == 0


def _validation_metrics(model, val_ds) -> tuple[float, float]:
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


class MultiWorkerEpoch:
    """Runs one epoch at a time: ``epoch(train_ds, val_ds) -> logs`` (loss, val_auc, val_loss).
    ``model`` was built and compiled in ``strategy.scope()``; its compiled optimizer trains it."""

    def __init__(self, model, strategy, global_batch: int, mid_epoch=None):
        import keras
        import tensorflow as tf

        self.model, self.strategy = model, strategy
        self.mid_epoch = mid_epoch
        optimizer = model.optimizer
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

        self._train_step = train_step

    def __call__(self, train_ds, val_ds) -> dict:
        total, steps = 0.0, 0
        for x, y in self.strategy.experimental_distribute_dataset(train_ds):
            total += float(self._train_step(x, y))
            steps += 1
            if self.mid_epoch:
                self.mid_epoch()
        val_auc, val_loss = _validation_metrics(self.model, val_ds)
        return {"loss": total / max(steps, 1), "val_auc": val_auc, "val_loss": val_loss}
