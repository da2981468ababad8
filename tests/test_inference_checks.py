"""Test-time augmentation, Grad-CAM and `hcdtf evaluate` checked against computations made here,
independently of the code under test: the 8 dihedral views built with NumPy and scored by the
Keras model itself, Grad-CAM redone with a GradientTape, and every evaluate variant (plain,
--tta, --threshold youden, --calibrate) recomputed from the written predictions.csv with
scikit-learn, scipy and the sample's own .tif files and labels."""

from __future__ import annotations

import csv
import json
import math
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.special import expit, logit
from sklearn.metrics import accuracy_score, confusion_matrix, roc_auc_score, roc_curve

from hcdtf.evaluation import artifacts
from hcdtf.inference import explain, loading, scoring
from hcdtf.cli import main
from hcdtf.inference.predict import read_patch


def _views(x: np.ndarray) -> list[np.ndarray]:
    """The dihedral group D4 of each image of [B, H, W, C]: 4 rotations of it and of its transpose."""
    t = np.swapaxes(x, 1, 2)
    return [np.rot90(x, k, axes=(1, 2)) for k in range(4)] + [np.rot90(t, k, axes=(1, 2)) for k in range(4)]


def _keras_probabilities(model, images: np.ndarray) -> np.ndarray:
    return np.asarray(model(np.ascontiguousarray(images), training=False), np.float64).reshape(-1)


@pytest.fixture(scope="module")
def model(trained_run):
    return loading.load_model(trained_run)


@pytest.fixture(scope="module")
def patches(sample_dir):
    files = sorted((sample_dir / "test").glob("*.tif"))[:6]
    return np.stack([read_patch(f) for f in files])


# ----------------------------------------------------------------------------- TTA
def test_dihedral_gives_the_eight_distinct_symmetries(patches):
    x = patches[:2]
    got = [scoring.dihedral(x, k) for k in range(8)]
    want = _views(x)
    # Each of the 8 symmetries once (in any order), none twice.
    matches = [[np.array_equal(g, w) for w in want] for g in got]
    assert all(sum(row) == 1 for row in matches), matches
    assert sorted(row.index(True) for row in matches) == list(range(8))
    assert np.array_equal(got[0], x)


def test_dihedral_views_match_the_training_pipelines(patches):
    """scoring.dihedral (NumPy, for TTA) and data.dihedral (TensorFlow) are the same views in the same order."""
    from hcdtf.data import pipeline as data

    for k in range(8):
        np.testing.assert_array_equal(scoring.dihedral(patches, k), data.dihedral(patches, k).numpy())


def test_tta_is_the_mean_of_the_eight_views(trained_run, model, patches):
    per_view = np.stack([_keras_probabilities(model, v) for v in _views(patches)])  # [8, B]
    want = per_view.mean(axis=0)
    got = scoring.with_tta(loading.scorer(trained_run))(patches)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
    # The views really score differently, so averaging fewer of them (or none) is seen.
    assert np.abs(per_view[:2].mean(axis=0) - want).max() > 1e-4
    assert np.abs(per_view[0] - want).max() > 1e-4


# ----------------------------------------------------------------------------- Grad-CAM
def _grad_cam_here(model, images: np.ndarray) -> np.ndarray:
    """Grad-CAM of the last conv stage from a GradientTape over the classifier's own layers."""
    import tensorflow as tf

    x = model.get_layer("preprocess")(tf.constant(images))
    features = tf.cast(model.get_layer("base")(x, training=False), tf.float32)  # conv5 block out, 3x3
    with tf.GradientTape() as tape:
        tape.watch(features)
        pooled = model.get_layer("head_pool")(features)
        logits = model.get_layer("head_logit")(pooled)
        total = tf.reduce_sum(logits)
    grads = tape.gradient(total, features).numpy()
    a = features.numpy()
    alpha = grads.mean(axis=(1, 2))                                   # [B, C]
    cam = np.maximum(np.einsum("bhwc,bc->bhw", a, alpha), 0.0)        # ReLU of the weighted sum
    peak = cam.max(axis=(1, 2), keepdims=True)
    cam = np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0)
    return tf.image.resize(cam[..., None], images.shape[1:3], method="bilinear")[..., 0].numpy()


def test_grad_cam_equals_a_gradient_tape_computation(model, patches):
    grad_model, _ = explain.gradcam_model(model)
    heat, logits = explain.grad_cam(grad_model, patches)
    want = _grad_cam_here(model, patches)
    np.testing.assert_allclose(heat, want, atol=1e-4)
    np.testing.assert_allclose(expit(logits), _keras_probabilities(model, patches), atol=1e-5)
    # Not a degenerate case: some maps have a peak of 1 and are not flat.
    assert max(float(h.max()) for h in heat) == pytest.approx(1.0, abs=1e-6)
    assert max(float(np.ptp(h)) for h in heat) > 0.5


# ----------------------------------------------------------------------------- evaluate, end to end
@pytest.fixture(scope="module")
def run_copy(trained_run, tmp_path_factory):
    """A copy of the shared run, so evaluating it here changes nothing other tests read."""
    out = tmp_path_factory.mktemp("evaluate") / "run"
    shutil.copytree(trained_run, out)
    return out


@pytest.fixture(scope="module")
def sample_labels(sample_dir):
    with open(sample_dir / "train_labels.csv", newline="") as f:
        return {r["id"]: int(r["label"]) for r in csv.DictReader(f)}


def _evaluate(run, *flags) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    result = CliRunner().invoke(main, ["evaluate", str(run), *flags])
    assert result.exit_code == 0, result.output
    m = json.loads((run / "metrics.json").read_text())
    ids, y, s = artifacts.read_predictions(run / "predictions.csv")
    return m, ids, y, s


def _check_metrics(m: dict, y: np.ndarray, s: np.ndarray) -> None:
    """metrics.json against scikit-learn on predictions.csv (positive when score >= threshold)."""
    t = m["threshold"]
    pred = (s >= t).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    assert m["n"] == len(y) and m["n_positive"] == int(y.sum())
    assert m["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred), abs=1e-12)
    assert m["confusion_matrix"] == {"tn": tn, "fp": fp, "fn": fn, "tp": tp}
    assert m["sensitivity"] == pytest.approx(tp / (tp + fn)) and m["specificity"] == pytest.approx(tn / (tn + fp))
    lo, hi = m["auc_ci95"]
    assert lo <= m["auc"] <= hi


@pytest.fixture(scope="module")
def plain_evaluation(run_copy):
    return _evaluate(run_copy)


def test_evaluate_metrics_are_those_of_its_predictions(plain_evaluation, sample_dir, sample_labels, model):
    m, ids, y, s = plain_evaluation
    assert m["split"] == "test" and not m["tta"] and m["threshold"] == 0.5
    assert len(ids) == 10 and len(set(ids)) == 10 and 0 < y.sum() < len(y)
    assert [sample_labels[i] for i in ids] == y.tolist()  # the sample's own labels, row by row
    images = np.stack([read_patch(sample_dir / "train" / f"{i}.tif") for i in ids])
    np.testing.assert_allclose(s, _keras_probabilities(model, images), atol=2e-6)
    _check_metrics(m, y, s)


def test_evaluate_tta_scores_the_mean_of_the_eight_views(run_copy, sample_dir, model):
    m, ids, y, s = _evaluate(run_copy, "--tta")
    assert m["tta"] is True
    images = np.stack([read_patch(sample_dir / "train" / f"{i}.tif") for i in ids])
    want = np.mean([_keras_probabilities(model, v) for v in _views(images)], axis=0)
    np.testing.assert_allclose(s, want, atol=2e-6)
    assert np.abs(want - _keras_probabilities(model, images)).max() > 1e-4  # TTA changed the scores
    _check_metrics(m, y, s)


def test_evaluate_youden_threshold_from_the_validation_predictions(run_copy):
    m, _, y, s = _evaluate(run_copy, "--threshold", "youden")
    _, vy, vs = artifacts.read_predictions(run_copy / "val_predictions.csv")
    fpr, tpr, thresholds = roc_curve(vy, vs, drop_intermediate=False)
    j = tpr - fpr
    best = [t for t, v in zip(thresholds, j) if math.isfinite(t) and v == j[np.isfinite(thresholds)].max()]
    assert m["threshold_method"].startswith("youden")
    assert m["threshold"] == max(best)  # on ties in J, the highest threshold
    assert m["threshold"] in set(vs.tolist())
    _check_metrics(m, y, s)


def test_evaluate_calibrate_applies_the_nll_optimal_temperature(run_copy, plain_evaluation):
    plain, _, y, raw = plain_evaluation
    m, _, y2, s = _evaluate(run_copy, "--calibrate")
    assert y2.tolist() == y.tolist()
    temperature = m["calibration"]["temperature"]
    eps = 1e-7
    np.testing.assert_allclose(s, expit(logit(np.clip(raw, eps, 1 - eps)) / temperature), atol=1e-6)
    # The temperature minimises the validation NLL (grid search here over the same log-T range).
    _, vy, vs = artifacts.read_predictions(run_copy / "val_predictions.csv")
    z = logit(np.clip(vs, eps, 1 - eps))

    def nll(t):
        p = np.clip(expit(z / t), 1e-12, 1 - 1e-12)
        return -np.mean(vy * np.log(p) + (1 - vy) * np.log(1 - p))

    grid = np.exp(np.linspace(-5, 5, 4001))
    assert nll(temperature) <= min(nll(t) for t in grid) + 1e-6
    assert m["auc"] == pytest.approx(plain["auc"], abs=1e-12)  # a monotone map keeps the ranking
    assert (run_copy / "reliability_calibrated.png").is_file()
    _check_metrics(m, y2, s)


def _youden(labels, scores) -> float:
    """The Youden-optimal threshold, the highest on ties (as hcdtf.evaluation.metrics picks it)."""
    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    j = tpr - fpr
    finite = np.isfinite(thresholds)
    return max(t for t, v in zip(thresholds, j) if math.isfinite(t) and v == j[finite].max())


def test_evaluate_youden_with_calibrate_chooses_on_calibrated_validation_scores(run_copy):
    """The threshold is chosen on validation scores made like the evaluated ones: with
    --calibrate, on the calibrated validation scores (it used to be taken from the plain ones, and
    so cut calibrated test scores at a threshold chosen on another scale)."""
    m, _, y, s = _evaluate(run_copy, "--calibrate", "--threshold", "youden")
    temperature = m["calibration"]["temperature"]
    _, vy, vs = artifacts.read_predictions(run_copy / "val_predictions.csv")
    eps = 1e-7
    calibrated_val = expit(logit(np.clip(vs, eps, 1 - eps)) / temperature)
    assert m["threshold_method"] == "youden (validation, calibrated)"
    assert m["threshold"] == pytest.approx(_youden(vy, calibrated_val), abs=1e-6)
    plain = _youden(vy, vs)
    if abs(math.log(temperature)) > 0.05 and abs(plain - 0.5) > 0.01:  # a real rescaling moves it
        assert abs(m["threshold"] - plain) > 1e-4
    _check_metrics(m, y, s)
