"""The logistic-regression baseline: learns, streams in bounded memory, same artifacts as a CNN
run, deterministic, clear errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from hcdtf.training import baseline
from hcdtf.data import pipeline as data
from hcdtf.evaluation import evaluate
from hcdtf.config import load_config
from hcdtf.models import logistic

from conftest import CONFIGS, REPO, testing_config


@pytest.fixture(scope="module")
def larger_data_dir(tmp_path_factory):
    """600 patches: enough for the baseline to show it learns, and a second size for memory."""
    from hcdtf import synthetic

    root = tmp_path_factory.mktemp("baseline")
    synthetic.write_sample(root / "kaggle", n=600, n_test=0, seed=1)
    data.build_dataset(str(root / "kaggle"), str(root / "tfds"), "kaggle")
    return root / "tfds"


def _cfg(data_dir, out, *overrides):
    return testing_config(data_dir, out, "baseline.batch_size=64", "baseline.epochs=3", *overrides)


def test_learns_above_chance_and_writes_run_artifacts(larger_data_dir, trained_run, tmp_path):
    out = tmp_path / "lr"
    summary = baseline.run(_cfg(larger_data_dir, out), log=lambda *_: None)
    assert not (out / "metrics.json").exists()  # fitting does not evaluate: callers do, as for CNNs
    m = evaluate.evaluate_run(out, log=lambda *_: None)
    assert m["auc"] > 0.6, m["auc"]
    assert summary["arch"] == "LogisticRegression" and summary["params_total"] == 96 * 96 * 3 + 1
    assert summary["kind"] == "baseline" and m["kind"] == "baseline"
    # The same layout as a CNN run, so `evaluate` and `compare` treat both alike (evaluated in a
    # copy: conftest's run is read by other tests, on the other xdist worker too).
    cnn_run = shutil.copytree(trained_run, tmp_path / "cnn")
    evaluate.evaluate_run(cnn_run, log=lambda *_: None)
    for name in ("config.yaml", "train_summary.json", "metrics.json", "predictions.csv", "val_predictions.csv", "roc.png"):
        assert (out / name).is_file() and (cnn_run / name).is_file(), name
    cnn = json.loads((cnn_run / "metrics.json").read_text())
    assert set(m) == set(cnn)


@pytest.mark.parametrize("features, size", [("center32", 32 * 32 * 3), ("gray", 96 * 96)])
def test_feature_options(data_dir, tmp_path, features, size):
    out = tmp_path / features
    summary = baseline.run(_cfg(data_dir, out, f"baseline.features={features}"), log=lambda *_: None)
    assert summary["params_total"] == size + 1
    assert np.load(out / "model.npz")["coef"].shape == (size,)


def test_exact_solver_agrees_with_streamed_on_direction(data_dir, tmp_path):
    sgd = baseline.run(_cfg(data_dir, tmp_path / "sgd"), log=lambda *_: None)
    exact = baseline.run(_cfg(data_dir, tmp_path / "lbfgs", "baseline.solver=lbfgs"), log=lambda *_: None)
    assert exact["solver"] == "lbfgs" and sgd["solver"] == "sgd"
    a = np.load(tmp_path / "sgd" / "model.npz")["coef"]
    b = np.load(tmp_path / "lbfgs" / "model.npz")["coef"]
    assert np.corrcoef(a, b)[0, 1] > 0.3  # both fit the same linear signal


def test_deterministic_for_a_seed(data_dir, tmp_path):
    baseline.run(_cfg(data_dir, tmp_path / "a"), log=lambda *_: None)
    baseline.run(_cfg(data_dir, tmp_path / "b"), log=lambda *_: None)
    a, b = np.load(tmp_path / "a" / "model.npz"), np.load(tmp_path / "b" / "model.npz")
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k])


def test_streamed_standardizer_matches_numpy():
    x = np.random.default_rng(0).normal(3, 2, (1000, 7)).astype(np.float32)
    s = logistic.StreamedStandardizer(7)
    for chunk in np.array_split(x, 9):
        s.update(chunk)
    mean, scale = s.finalize()
    np.testing.assert_allclose(mean, x.mean(0), rtol=1e-5)
    np.testing.assert_allclose(scale, x.std(0), rtol=1e-4)


def _peak_rss(data_dir, out):
    cmd = [sys.executable, "-m", "hcdtf.cli", "baseline", "--config", str(CONFIGS / "testing.yaml"),
           "--data-dir", str(data_dir), "--output-dir", str(out), "--set", "baseline.batch_size=32",
           "--set", "baseline.epochs=1", "--set", "eval.n_bootstrap=10"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads((out / "train_summary.json").read_text())["peak_rss_mb"]


def test_peak_memory_does_not_grow_with_the_data(data_dir, larger_data_dir, tmp_path):
    small = _peak_rss(data_dir, tmp_path / "small")  # 76 training patches
    large = _peak_rss(larger_data_dir, tmp_path / "large")  # 480 training patches
    assert small < 2048 and large < 2048
    assert large - small < 150, (small, large)


def test_scoring_images_matches_the_streamed_features(data_dir, tmp_path):
    """The run's scorer (uint8 patches in) gives the validation predictions the fit wrote."""
    from hcdtf.evaluation import artifacts
    from hcdtf.inference import loading, scoring

    cfg = _cfg(data_dir, tmp_path / "lr", "baseline.features=center32")
    baseline.run(cfg, log=lambda *_: None)
    ids, labels, scores = scoring.score_split(loading.scorer(cfg.output_dir), cfg.data, "validation")
    _, _, written = artifacts.read_predictions(tmp_path / "lr" / "val_predictions.csv")
    np.testing.assert_allclose(scores, written, rtol=1e-6)


def test_missing_data_set_is_a_clear_error(tmp_path):
    cfg = load_config([CONFIGS / "testing.yaml"], [f"data.data_dir={tmp_path}", f"output_dir={tmp_path / 'lr'}"])
    with pytest.raises(data.DatasetNotBuiltError, match="hcdtf build-dataset"):
        baseline.run(cfg, log=lambda *_: None)
