"""Tests of hcdtf.evaluation.metrics: DeLong against the definitions, bootstrap CI, metrics bundle, NLL, Holm.

No published DeLong example with obtainable data is used (pROC's aSAH example needs data we do
not have), so the DeLong implementation is checked independently: against a slow O(m n)
computation written straight from DeLong et al. (1988), against a hand-worked example, and by
checking that its p-values are uniform under the null hypothesis.
"""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from hcdtf.evaluation import metrics as M

# ------------------------------------------------------------------------------------------
# Brute force from the definitions (DeLong, DeLong & Clarke-Pearson 1988, section 2)
# ------------------------------------------------------------------------------------------


def _psi(x: float, y: float) -> float:
    """Heaviside kernel of the Mann-Whitney statistic: 1 if x > y, 1/2 on ties, 0 otherwise."""
    return 1.0 if x > y else (0.5 if x == y else 0.0)


def brute_force_delong(labels, score_rows):
    """AUCs and covariance from explicit double loops over (positive, negative) pairs."""
    labels = list(labels)
    pos = [i for i, v in enumerate(labels) if v == 1]
    neg = [j for j, v in enumerate(labels) if v == 0]
    m, n = len(pos), len(neg)
    k = len(score_rows)
    v10 = np.zeros((k, m))
    v01 = np.zeros((k, n))
    aucs = np.zeros(k)
    for r, s in enumerate(score_rows):
        for a, i in enumerate(pos):
            for b, j in enumerate(neg):
                p = _psi(s[i], s[j])
                v10[r, a] += p / n
                v01[r, b] += p / m
                aucs[r] += p / (m * n)
    s10 = np.zeros((k, k))
    s01 = np.zeros((k, k))
    for r in range(k):
        for q in range(k):
            s10[r, q] = sum((v10[r, a] - aucs[r]) * (v10[q, a] - aucs[q]) for a in range(m)) / (
                m - 1
            )
            s01[r, q] = sum((v01[r, b] - aucs[r]) * (v01[q, b] - aucs[q]) for b in range(n)) / (
                n - 1
            )
    return aucs, s10 / m + s01 / n


@pytest.mark.parametrize("seed", range(6))
def test_delong_matches_brute_force_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(8, 40))
    labels = rng.integers(0, 2, n)
    labels[:2], labels[2:4] = 1, 0  # at least two of each class
    # Rounded scores give many ties, within and across classes.
    a = np.round(rng.normal(size=n) + labels, 1)
    b = np.round(0.5 * a + rng.normal(size=n), 1)
    c = rng.integers(0, 3, n).astype(float)  # heavily tied
    aucs, cov = M.delong_covariance(labels, np.vstack([a, b, c]))
    ref_aucs, ref_cov = brute_force_delong(labels, [a, b, c])
    np.testing.assert_allclose(aucs, ref_aucs, rtol=0, atol=1e-12)
    np.testing.assert_allclose(cov, ref_cov, rtol=1e-10, atol=1e-15)
    for s, auc in zip((a, b, c), aucs):
        assert auc == pytest.approx(roc_auc_score(labels, s), abs=1e-12)

    t = M.delong_test(labels, a, b)
    assert t["var_a"] == pytest.approx(ref_cov[0, 0], rel=1e-10)
    assert t["var_b"] == pytest.approx(ref_cov[1, 1], rel=1e-10)
    assert t["cov"] == pytest.approx(ref_cov[0, 1], rel=1e-10, abs=1e-15)
    var_diff = ref_cov[0, 0] + ref_cov[1, 1] - 2 * ref_cov[0, 1]
    z = (ref_aucs[0] - ref_aucs[1]) / np.sqrt(var_diff)
    assert t["z"] == pytest.approx(z, rel=1e-9)
    assert t["p_value"] == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-9)
    lo, hi = t["diff_ci95"]
    assert lo < t["diff"] < hi
    assert (hi - lo) / 2 == pytest.approx(1.959963984540054 * np.sqrt(var_diff), rel=1e-9)


def test_delong_hand_worked_example():
    # Positives X = (0.9, 0.8, 0.4), negatives Y = (0.7, 0.4, 0.1).
    # psi rows: X1 -> (1, 1, 1), X2 -> (1, 1, 1), X3 -> (0, 1/2, 1)
    # V10 = (1, 1, 1/2), V01 = (2/3, 5/6, 1), AUC = 5/6
    # S10 = [(1/6)^2 + (1/6)^2 + (1/3)^2] / 2 = 1/12,  S01 = [(1/6)^2 + 0 + (1/6)^2] / 2 = 1/36
    # Var = S10/3 + S01/3 = 1/36 + 1/108 = 1/27
    labels = [1, 1, 1, 0, 0, 0]
    scores = [0.9, 0.8, 0.4, 0.7, 0.4, 0.1]
    auc, var = M.delong_roc_variance(labels, scores)
    assert auc == pytest.approx(float(Fraction(5, 6)), abs=1e-15)
    assert var == pytest.approx(float(Fraction(1, 27)), abs=1e-15)


def test_delong_pvalues_uniform_under_null():
    """Under H0 (equal AUCs) DeLong's p-values are ~ U(0, 1).

    The two score sets share a common component (correlated, as two CNNs on the same patches
    are): dropping or mis-signing the covariance term would make the p-values far too large.
    """
    rng = np.random.default_rng(12345)
    n, sims = 300, 300
    p_values = []
    for _ in range(sims):
        labels = rng.integers(0, 2, n)
        common = rng.normal(size=n) + 0.8 * labels
        a = common + rng.normal(size=n) + 0.4 * labels
        b = common + rng.normal(size=n) + 0.4 * labels
        p_values.append(M.delong_test(labels, a, b)["p_value"])
    assert stats.kstest(p_values, "uniform").pvalue > 0.001
    # And the test has power when the AUCs differ.
    labels = rng.integers(0, 2, 2000)
    common = rng.normal(size=2000) + labels
    strong = common + rng.normal(size=2000) + labels
    weak = common + rng.normal(size=2000)
    assert M.delong_test(labels, strong, weak)["p_value"] < 1e-6


def test_delong_edge_cases():
    labels = np.array([0, 0, 0, 1, 1, 1])
    perfect = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    assert M.delong_roc_variance(labels, perfect) == (1.0, 0.0)
    auc, var = M.delong_roc_variance(labels, 1 - perfect)
    assert (auc, var) == (0.0, 0.0)
    auc, var = M.delong_roc_variance(labels, np.full(6, 0.5))
    assert auc == 0.5 and var == 0.0

    same = M.delong_test(labels, perfect, perfect)
    assert same["diff"] == 0.0 and same["p_value"] == 1.0 and same["z"] == 0.0
    opposite = M.delong_test(labels, perfect, 1 - perfect)  # zero variance, different AUCs
    assert opposite["diff"] == 1.0 and opposite["p_value"] == 0.0

    with pytest.raises(ValueError, match="only one class"):
        M.delong_roc_variance([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="different lengths"):
        M.delong_roc_variance([0, 1, 0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="different lengths"):
        M.delong_test(labels, perfect, perfect[:5])
    with pytest.raises(ValueError, match="at least 2 positive"):
        M.delong_roc_variance([0, 0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="0 or 1; 1 of 4"):
        M.delong_roc_variance([0, 1, 2, 1], [0.1, 0.2, 0.3, 0.4])
    with pytest.raises(ValueError, match="NaN or infinite"):
        M.delong_roc_variance([0, 1, 0, 1], [0.1, np.nan, 0.3, 0.4])


# ------------------------------------------------------------------------------------------
# Bootstrap
# ------------------------------------------------------------------------------------------


def _synthetic(n: int, seed: int = 0, shift: float = 1.0, ties: bool = False):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    scores = 1 / (1 + np.exp(-(rng.normal(size=n) + shift * (labels - 0.5))))
    return labels, (np.round(scores, 2) if ties else scores)


def _slow_bootstrap_aucs(labels, scores, n_bootstrap, seed):
    """Stratified resamples evaluated with sklearn, one at a time."""
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_bootstrap):
        idx = np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)])
        out.append(roc_auc_score(labels[idx], scores[idx]))
    return np.array(out)


@pytest.mark.parametrize("ties", [False, True])
def test_bootstrap_ci_contains_auc_and_is_deterministic(ties):
    labels, scores = _synthetic(600, ties=ties)
    auc = roc_auc_score(labels, scores)
    ci = M.bootstrap_auc_ci(labels, scores, n_bootstrap=400, seed=3)
    assert ci[0] < auc < ci[1]
    assert ci == M.bootstrap_auc_ci(labels, scores, n_bootstrap=400, seed=3)
    assert ci != M.bootstrap_auc_ci(labels, scores, n_bootstrap=400, seed=4)
    # Same sampling distribution as a slow per-resample sklearn bootstrap (different random
    # draws, so only roughly the same quantiles), and close to DeLong's normal interval.
    slow = np.quantile(_slow_bootstrap_aucs(labels, scores, 250, seed=9), [0.025, 0.975])
    np.testing.assert_allclose(ci, slow, atol=0.015)
    np.testing.assert_allclose(ci, M.delong_auc_ci(labels, scores), atol=0.015)
    unstrat = M.bootstrap_auc_ci(labels, scores, n_bootstrap=400, seed=3, stratified=False)
    assert unstrat[0] < auc < unstrat[1]


@pytest.mark.parametrize("ties", [False, True])
def test_bootstrap_aucs_equal_sklearn_on_the_same_resamples(ties):
    """Each fast histogram AUC equals sklearn's AUC of the same resample, to rounding.

    Reproduces the documented draw order of bootstrap_aucs (one batch at this size: a (B, m)
    matrix of positive indices, then a (B, n) matrix of negative indices).
    """
    labels, scores = _synthetic(120, seed=5, ties=ties)
    fast = M.bootstrap_aucs(labels, scores, n_bootstrap=40, seed=11)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    rng = np.random.default_rng(11)
    pi = pos[rng.integers(0, pos.size, size=(40, pos.size))]
    ni = neg[rng.integers(0, neg.size, size=(40, neg.size))]
    slow = [roc_auc_score(labels[np.r_[p, q]], scores[np.r_[p, q]]) for p, q in zip(pi, ni)]
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-12)

    labels = np.array([1, 1, 1, 0, 0, 0, 0])
    perfect = np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.1, 0.0])
    assert M.bootstrap_auc_ci(labels, perfect, n_bootstrap=50) == (1.0, 1.0)


def test_bootstrap_ci_narrows_with_n():
    widths = []
    for n in (200, 2000, 20000):
        labels, scores = _synthetic(n, seed=1)
        lo, hi = M.bootstrap_auc_ci(labels, scores, n_bootstrap=300, seed=0)
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]
    # Width ~ 1/sqrt(n): a factor 10 in n shrinks it by about sqrt(10) = 3.2.
    assert 2.0 < widths[0] / widths[1] < 5.0


def test_bootstrap_arguments_checked():
    labels, scores = _synthetic(50)
    with pytest.raises(ValueError, match="n_bootstrap"):
        M.bootstrap_auc_ci(labels, scores, n_bootstrap=0)
    with pytest.raises(ValueError, match="alpha"):
        M.bootstrap_auc_ci(labels, scores, alpha=1.5)
    with pytest.raises(ValueError, match="only one class"):
        M.bootstrap_auc_ci(np.ones(5), np.linspace(0, 1, 5))


# ------------------------------------------------------------------------------------------
# Operating points, calibration, the metrics bundle
# ------------------------------------------------------------------------------------------


def test_compute_metrics_tiny_example_by_hand():
    labels = [0, 0, 0, 0, 1, 1, 1, 1, 1, 0]
    scores = [0.1, 0.4, 0.6, 0.2, 0.8, 0.3, 0.9, 0.5, 0.7, 0.05]
    # At threshold 0.5 (score >= 0.5 -> positive):
    #   negatives 0.1 0.4 0.6 0.2 0.05 -> one false positive (0.6), tn = 4
    #   positives 0.8 0.3 0.9 0.5 0.7  -> one false negative (0.3), tp = 4 (0.5 counts as positive)
    m = M.compute_metrics(labels, scores, threshold=0.5, n_bootstrap=200, seed=0)
    assert m["confusion_matrix"] == {"tn": 4, "fp": 1, "fn": 1, "tp": 4}
    assert m["n"] == 10 and m["n_positive"] == 5
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["sensitivity"] == pytest.approx(0.8)
    assert m["specificity"] == pytest.approx(0.8)
    assert m["precision"] == pytest.approx(0.8)
    assert m["f1"] == pytest.approx(0.8)
    # Pairs won by each positive over the 5 negatives: 0.9, 0.8, 0.7 -> 5 each; 0.5 -> 4 (loses
    # to 0.6); 0.3 -> 3 (loses to 0.4 and 0.6). AUC = 22 / 25.
    assert m["auc"] == pytest.approx(22 / 25)
    assert m["auc_ci95"][0] <= m["auc"] <= m["auc_ci95"][1]
    assert m["brier"] == pytest.approx(np.mean((np.array(scores) - np.array(labels)) ** 2))
    # Specificity >= 0.95 allows no false positive: threshold above 0.6 -> 0.9, 0.8, 0.7 -> 3/5.
    assert m["sensitivity_at_95_specificity"] == pytest.approx(0.6)
    assert m["threshold"] == 0.5
    # Plain Python types only, so json.dumps works without a custom encoder.
    json.dumps(m, allow_nan=False)
    assert all(type(v) in (int, float, str, list, dict) for v in m.values())

    m2 = M.compute_metrics(labels, scores, threshold=0.65, n_bootstrap=0)
    assert m2["confusion_matrix"] == {"tn": 5, "fp": 0, "fn": 2, "tp": 3}
    assert m2["auc_ci_method"] == "delong"


def test_compute_metrics_validation_messages():
    with pytest.raises(ValueError, match=r"0 or 1; 2 of 4 entries"):
        M.compute_metrics([0, 1, 2, 3], [0.1, 0.2, 0.3, 0.4], n_bootstrap=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]; 2 of 4 entries lie outside"):
        M.compute_metrics([0, 1, 0, 1], [-0.1, 0.2, 0.3, 1.4], n_bootstrap=0)
    with pytest.raises(ValueError, match=r"finite; 1 of 4"):
        M.compute_metrics([0, 1, 0, 1], [0.1, np.inf, 0.3, 0.4], n_bootstrap=0)
    with pytest.raises(ValueError, match=r"different lengths \(4 vs 3\)"):
        M.compute_metrics([0, 1, 0, 1], [0.1, 0.2, 0.3], n_bootstrap=0)
    with pytest.raises(ValueError, match="only one class present: all 3 labels are 0"):
        M.compute_metrics([0, 0, 0], [0.1, 0.2, 0.3], n_bootstrap=0)
    with pytest.raises(ValueError, match="no examples"):
        M.compute_metrics([], [], n_bootstrap=0)


def test_youden_and_sensitivity_at_specificity():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    # Thresholds: 0.7 -> sens 3/4, spec 1 (J = 0.75); 0.4 -> sens 1, spec 3/4 (J = 0.75);
    # the highest threshold wins the tie.
    assert M.youden_threshold(labels, scores) == pytest.approx(0.7)
    assert M.sensitivity_at_specificity(labels, scores, 0.95) == pytest.approx(0.75)
    assert M.sensitivity_at_specificity(labels, scores, 0.75) == pytest.approx(1.0)
    assert M.sensitivity_at_specificity(labels, scores, 0.0) == pytest.approx(1.0)


def test_ece_calibrated_vs_miscalibrated():
    rng = np.random.default_rng(0)
    p = rng.uniform(size=100_000)
    labels = (rng.uniform(size=p.size) < p).astype(int)
    assert M.expected_calibration_error(labels, p) < 0.01
    # Overconfident: push the probabilities towards 0/1.
    sharp = np.clip(0.5 + 1.8 * (p - 0.5), 0, 1)
    assert M.expected_calibration_error(labels, sharp) > 0.1
    # Hand-computed: two bins (< 0.5 and >= 0.5), one example each with gaps 0.2 and 0.1.
    assert M.expected_calibration_error([0, 1], [0.2, 0.9], n_bins=2) == pytest.approx(0.15)
    assert M.brier_score([0, 1], [0.2, 0.9]) == pytest.approx((0.04 + 0.01) / 2)


def test_negative_log_likelihood():
    labels = np.array([0, 1, 1, 0])
    scores = np.array([0.2, 0.9, 0.6, 0.5])
    by_hand = -np.mean(np.log([0.8, 0.9, 0.6, 0.5]))
    assert M.negative_log_likelihood(labels, scores) == pytest.approx(by_hand, rel=1e-12)
    from sklearn.metrics import log_loss

    assert M.negative_log_likelihood(labels, scores) == pytest.approx(log_loss(labels, scores))
    # A confident mistake is clipped at 1e-15: finite, about 34.5 per such example.
    assert M.negative_log_likelihood([1, 0], [0.0, 0.0]) == pytest.approx(-np.log(1e-15) / 2)
    assert M.negative_log_likelihood([1], [1.0]) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        M.negative_log_likelihood([0, 1], [0.5, 1.5])
    m = M.compute_metrics(labels, scores, n_bootstrap=0)
    assert m["nll"] == pytest.approx(by_hand)


def test_holm_adjust():
    # Sorted p: 0.01 (x3 = 0.03), 0.02 (x2 = 0.04), 0.04 (x1 = 0.04); reported in input order.
    assert M.holm_adjust([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    # Monotone: a later, smaller product is raised to the running maximum; capped at 1.
    assert M.holm_adjust([0.03, 0.02, 0.9]) == pytest.approx([0.06, 0.06, 0.9])
    assert M.holm_adjust([0.5, 0.6]) == [1.0, 1.0]
    assert M.holm_adjust([]) == []
