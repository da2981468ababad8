"""Tests of hcdtf.evaluation.calibration (temperature scaling) and its before/after reliability plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.special import expit, logit
from sklearn.metrics import roc_auc_score

from hcdtf.evaluation import calibration as C
from hcdtf.evaluation import metrics as M
from hcdtf.evaluation import plots


def _calibrated(n: int, seed: int):
    """Labels drawn from known probabilities: the probabilities are calibrated by construction."""
    rng = np.random.default_rng(seed)
    p = expit(rng.normal(0.0, 1.5, n))
    return (rng.uniform(size=n) < p).astype(int), p


@pytest.mark.parametrize("true_t", [3.0, 0.5])
def test_temperature_scaling_undoes_miscalibration(true_t):
    # Over-confident (logits x3) or under-confident (logits / 2) versions of calibrated scores.
    val_y, val_p = _calibrated(4000, seed=1)
    y, p = _calibrated(4000, seed=2)
    val_s, s = expit(logit(val_p) * true_t), expit(logit(p) * true_t)

    calibrated, info = C.calibrate(val_y, val_s, y, s)
    assert info["temperature"] == pytest.approx(true_t, rel=0.15) and not info["at_bound"]
    assert info["n_fit"] == 4000
    val = info["validation"]
    assert val["after"]["nll"] < val["before"]["nll"] - 0.01  # lowers validation NLL
    ev = info["evaluated"]  # and it carries over to other examples of the same kind
    assert ev["after"]["nll"] < ev["before"]["nll"] and ev["after"]["ece"] < ev["before"]["ece"]
    assert ev["after"]["ece"] < 0.03
    assert ev["after"]["nll"] == pytest.approx(M.negative_log_likelihood(y, calibrated))
    # The ranking, so the AUC, is untouched; so is every decision at threshold 0.5.
    assert roc_auc_score(y, calibrated) == roc_auc_score(y, s)
    np.testing.assert_array_equal(np.argsort(calibrated, kind="stable"), np.argsort(s, kind="stable"))
    np.testing.assert_array_equal(calibrated >= 0.5, s >= 0.5)


def test_calibrated_scores_get_temperature_one():
    y, p = _calibrated(20000, seed=3)
    t, at_bound = C.fit_temperature(y, p)
    assert t == pytest.approx(1.0, abs=0.08) and not at_bound


def test_temperature_edges():
    # Exactly 0 and 1 stay 0 and 1 (logit +-inf), others move; the order never changes.
    s = np.array([0.0, 1e-12, 0.3, 0.5, 0.9, 1.0])
    out = C.apply_temperature(s, 2.0)
    assert out[0] == 0.0 and out[-1] == 1.0 and out[3] == 0.5
    assert np.all(np.diff(out) > 0)
    # Perfectly separated validation scores: the NLL keeps falling as T shrinks -> on the bound.
    t, at_bound = C.fit_temperature([0, 0, 1, 1], [0.2, 0.3, 0.7, 0.8])
    assert at_bound and t == pytest.approx(np.exp(C.LOG_T_BOUNDS[0]), rel=1e-2)
    with pytest.raises(ValueError, match="only one class"):
        C.fit_temperature([1, 1, 1], [0.2, 0.3, 0.7])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        C.calibrate([0, 1], [0.2, 0.7], [0, 1], [0.1, 3.0])
    with pytest.raises(ValueError, match="positive"):
        C.apply_temperature([0.5], 0.0)
    # Unlabelled split (e.g. kaggle_test): scores are calibrated, only validation is reported.
    _, info = C.calibrate([0, 1, 0, 1], [0.1, 0.6, 0.4, 0.95], None, [0.2, 0.8])
    assert "evaluated" not in info and info["method"] == "temperature"


def test_reliability_before_after_plot(tmp_path: Path):
    y, p = _calibrated(500, seed=4)
    s = expit(logit(p) * 3)
    after, info = C.calibrate(y, s, y, s)
    path = plots.plot_reliability_before_after(tmp_path / "reliability_calibrated.png", y, s, after,
                                               temperature=info["temperature"])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["reliability_calibrated.png"]
