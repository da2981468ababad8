"""Scorers: uint8 patches in, tumour probabilities out, for every kind of model; and split scoring.

A :class:`Scorer` is what evaluation, prediction and whole-slide inference call, whatever the model
is: ``scorer(images uint8 [B, 96, 96, 3]) -> float64 [B]``. This module makes them for in-memory
Keras models and logistic-regression baselines (a run directory's, through
:func:`hcdtf.inference.loading.scorer`), averages the 8 dihedral views for test-time augmentation, and scores a whole
split of the built data set.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

IMAGE_SIZE = 96


@dataclasses.dataclass
class Scorer:
    """A model as a function of uint8 patches; ``keepalive`` holds what the function needs."""

    fn: Callable[[np.ndarray], np.ndarray]
    description: str
    kind: str = "cnn"
    keepalive: Any = None

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self.fn(images), np.float64).reshape(-1)


def keras_scorer(model, description: str = "Keras model") -> Scorer:
    """A scorer for a Keras classifier (one trace for every batch size)."""
    import tensorflow as tf

    def forward(x):
        return tf.cast(model(x, training=False), tf.float32)

    # No AutoGraph: there is no Python control flow to convert.
    fn = tf.function(forward, input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)], autograph=False)
    return Scorer(lambda images: fn(tf.constant(images)).numpy(), description, "cnn", model)


def baseline_scorer(model: dict, description: str = "logistic regression") -> Scorer:
    """A scorer for a fitted logistic-regression baseline (``hcdtf.models.logistic``)."""
    from hcdtf.models import logistic

    def fn(images):
        return logistic.predict_proba(model, np.asarray(logistic.image_features(images, model["features"])))

    return Scorer(fn, description, "baseline", model)


def dihedral(images: np.ndarray, k: int) -> np.ndarray:
    """The k-th (0..7) of the 8 dihedral transforms of a batch [B, H, W, C]: rotations by
    k x 90 degrees, mirrored left-right for k >= 4 (the same views as ``data.dihedral``)."""
    x = np.rot90(images, k % 4, axes=(1, 2))
    return np.ascontiguousarray(x[:, :, ::-1] if k >= 4 else x)


def with_tta(scorer: Scorer) -> Scorer:
    """The mean over the 8 dihedral views of each patch (tissue has no orientation)."""
    return Scorer(lambda images: sum(scorer(dihedral(images, k)) for k in range(8)) / 8.0,
                  scorer.description + " (TTA x8)", scorer.kind, scorer)


def score_split(scorer: Scorer, data_cfg, split: str, batch_size: int = 128):
    """(ids, labels, scores) of ``scorer`` over a split of the built data set, in stored order."""
    from hcdtf.data import pipeline as data

    ds = data.make_dataset(data_cfg, split, batch_size, training=False, with_ids=True)
    ids, labels, scores = [], [], []
    for x, y in ds.as_numpy_iterator():
        ids.extend(i.decode() for i in x["id"])
        labels.append(y)
        scores.append(scorer(x["image"]))
    if not ids:
        return np.array([], str), np.array([], np.int64), np.array([], np.float64)
    return np.array(ids), np.concatenate(labels).astype(np.int64), np.concatenate(scores)
