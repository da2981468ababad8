"""Logistic regression on raw pixels, the paper's classical baseline: features, fit, predict, file.

The full Kaggle set as float features is 220,025 x 27,648 = 24 GB (49 GB once scikit-learn's lbfgs
copies it to float64), so the default solver streams: one pass over the batches accumulates the
per-feature mean and standard deviation, then ``SGDClassifier(loss="log_loss").partial_fit``
sees standardised batches for ``epochs`` passes. Peak memory depends on the batch size and the
feature count, not on the number of examples. ``lbfgs`` fits scikit-learn's exact
``LogisticRegression`` on everything in memory, for data that fits.

A fitted model is plain arrays (``model.npz``: mean, scale, coef, intercept, features), so scoring
needs no pickle and is the same formula everywhere. Importing this module imports neither
TensorFlow nor scikit-learn.
"""

from __future__ import annotations

import pathlib
from typing import Callable, Iterable

import numpy as np

# Feature sets and their sizes: all 96x96x3 pixels, the centre 32x32x3 crop that the label
# describes, or 96x96 grey levels.
FEATURES = {"pixels": 96 * 96 * 3, "center32": 32 * 32 * 3, "gray": 96 * 96}
# Streamed averaged SGD (any data size) or the exact lbfgs solver (data must fit in memory).
SOLVERS = ("sgd", "lbfgs")

Batches = Callable[[bool, int], Iterable[tuple[np.ndarray, np.ndarray]]]


def image_features(images, kind: str):
    """float32 ``[B, FEATURES[kind]]`` features of uint8 ``[B, 96, 96, 3]`` images (a TF op, so
    that the tf.data pipeline and scoring compute exactly the same numbers)."""
    import tensorflow as tf

    img = tf.cast(images, tf.float32) / 255.0
    if kind == "center32":
        img = img[:, 32:64, 32:64, :]
    elif kind == "gray":
        img = tf.image.rgb_to_grayscale(img)
    return tf.reshape(img, (tf.shape(img)[0], -1))


class StreamedStandardizer:
    """Per-feature mean and standard deviation accumulated batch by batch (float64 sums)."""

    def __init__(self, n_features: int):
        self.n = 0
        self.sum = np.zeros(n_features)
        self.sumsq = np.zeros(n_features)

    def update(self, x: np.ndarray) -> None:
        x64 = x.astype(np.float64)
        self.n += len(x)
        self.sum += x64.sum(0)
        self.sumsq += np.square(x64).sum(0)

    def finalize(self) -> tuple[np.ndarray, np.ndarray]:
        mean = self.sum / max(self.n, 1)
        var = np.maximum(self.sumsq / max(self.n, 1) - mean**2, 0.0)
        scale = np.sqrt(var)
        scale[scale < 1e-8] = 1.0  # constant features: leave them unscaled
        return mean.astype(np.float32), scale.astype(np.float32)


def _fit_lbfgs(batches: Batches, C: float, seed: int):
    from sklearn.linear_model import LogisticRegression

    xs, ys = zip(*batches(False, 0))
    x, y = np.concatenate(xs), np.concatenate(ys)
    mean, scale = x.mean(0), x.std(0)
    scale[scale < 1e-8] = 1.0
    clf = LogisticRegression(C=C, max_iter=500, random_state=seed).fit((x - mean) / scale, y)
    return clf, mean, scale, len(y)


def _fit_sgd(batches: Batches, n_features: int, alpha: float, epochs: int, seed: int, log):
    from sklearn.linear_model import SGDClassifier

    stats = StreamedStandardizer(n_features)
    for x, _ in batches(False, 0):
        stats.update(x)
    mean, scale = stats.finalize()
    # Averaged SGD: on pixel features plain SGD's last iterate stays noisy, while the average
    # matches the exact lbfgs fit.
    clf = SGDClassifier(loss="log_loss", alpha=alpha, average=True, learning_rate="optimal", random_state=seed)
    seen = 0
    for epoch in range(epochs):
        for x, y in batches(True, epoch):
            clf.partial_fit((x - mean) / scale, y, classes=np.array([0, 1]))
            seen += len(y)
        log(f"baseline epoch {epoch + 1}/{epochs}")
    return clf, mean, scale, seen


def fit(batches: Batches, features: str, solver: str = "sgd", alpha: float = 1e-2, C: float = 1e-3,
        epochs: int = 5, seed: int = 0, log: Callable[[str], None] = print) -> tuple[dict, int]:
    """Fits the model on ``batches(shuffle, epoch)`` -> iterable of (features float32, labels);
    returns (the arrays of ``model.npz``, the number of examples seen)."""
    if solver == "lbfgs":
        clf, mean, scale, seen = _fit_lbfgs(batches, C, seed)
    else:
        clf, mean, scale, seen = _fit_sgd(batches, FEATURES[features], alpha, epochs, seed, log)
    model = {
        "mean": np.asarray(mean, np.float32),
        "scale": np.asarray(scale, np.float32),
        "coef": clf.coef_.reshape(-1).astype(np.float32),
        "intercept": np.float32(clf.intercept_[0]),
        "features": np.asarray(features),
    }
    return model, seen


def predict_proba(model: dict, x: np.ndarray) -> np.ndarray:
    """P(tumour) float64 [B] for features ``x`` [B, F]."""
    w = model["coef"] / model["scale"]  # the standardisation folded into the weights
    b0 = float(model["intercept"]) - float(np.dot(model["mean"], w))
    z = x @ w + b0
    return (1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))).astype(np.float64)


def save(path: str | pathlib.Path, model: dict) -> None:
    with open(path, "wb") as f:
        np.savez(f, **model)


def load(path: str | pathlib.Path, features: str | None = None) -> dict:
    """A saved model; ``features`` names the feature set of files written before it was stored
    in the file (hcdtf 0.1)."""
    with np.load(path, allow_pickle=False) as z:
        model = {k: z[k] for k in z.files}
    model["features"] = str(model["features"]) if "features" in model else (features or "pixels")
    return model
