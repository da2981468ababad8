"""Statistics of binary classifiers on one test set: AUC with DeLong and bootstrap intervals,
operating points, calibration, the metrics bundle of an evaluation, multiple-comparison adjustment.

Everything here is a pure function of NumPy arrays (labels in {0, 1}, one score per example): no
files, no figures (those are :mod:`hcdtf.evaluation.artifacts` and :mod:`hcdtf.evaluation.plots`), no TensorFlow.
Statistics across repeated training runs are :mod:`hcdtf.evaluation.repeats`.

ROC AUC, its variance and the comparison of two correlated AUCs
    The empirical AUC is the Mann-Whitney U statistic

        A = 1/(m n) * sum_i sum_j psi(X_i, Y_j),  psi(x, y) = 1 if x > y, 1/2 if x == y, 0 if x < y,

    over the m positive scores X and n negative scores Y. DeLong, DeLong & Clarke-Pearson (1988)
    estimate the covariance of several such AUCs computed on the *same* examples from the
    "structural components" V10(X_i) = 1/n sum_j psi(X_i, Y_j) and
    V01(Y_j) = 1/m sum_i psi(X_i, Y_j):

        S = S10 / m + S01 / n,

    where S10 and S01 are the sample covariance matrices (denominator m-1, n-1) of the V10 and V01
    of the different classifiers. Sun & Xu (2014) show that all the V10/V01 follow from midranks,
    which turns the O(m n) double sum into an O(N log N) sort; that is what is implemented here.
    Two AUCs are compared with z = (A_a - A_b) / sqrt(S_aa + S_bb - 2 S_ab) against N(0, 1).

    References:
      - E. R. DeLong, D. M. DeLong, D. L. Clarke-Pearson (1988). Comparing the areas under two or
        more correlated receiver operating characteristic curves: a nonparametric approach.
        Biometrics 44(3):837-845.
      - X. Sun, W. Xu (2014). Fast implementation of DeLong's algorithm for comparing the areas
        under correlated receiver operating characteristic curves. IEEE Signal Processing Letters
        21(11):1389-1393. doi:10.1109/LSP.2014.2337313.

Bootstrap confidence interval of the AUC
    Percentile bootstrap, stratified by class by default (as pROC's ``ci.auc(method="bootstrap")``)
    so that every resample keeps the observed numbers of positives and negatives and therefore has
    a defined AUC. The resamples are evaluated in vectorised batches on pre-computed ranks, with no
    per-resample sort (see :func:`bootstrap_auc_ci`).
    Reference: B. Efron, R. J. Tibshirani (1993). An Introduction to the Bootstrap, ch. 13.

Calibration
    Expected calibration error with equal-width bins weighted by bin counts: C. Guo, G. Pleiss,
    Y. Sun, K. Q. Weinberger (2017). On calibration of modern neural networks. ICML. Brier score:
    G. W. Brier (1950). Monthly Weather Review 78(1):1-3. Negative log-likelihood (log loss) with
    probabilities clipped to [1e-15, 1 - 1e-15], so that one confident mistake costs about 34.5
    instead of infinity. Temperature scaling is :mod:`hcdtf.evaluation.calibration`.

Multiple comparisons
    Holm's step-down adjustment: S. Holm (1979). A simple sequentially rejective multiple test
    procedure. Scandinavian Journal of Statistics 6(2):65-70.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

__all__ = [
    "as_scores",
    "bootstrap_auc_ci",
    "bootstrap_aucs",
    "brier_score",
    "calibration_bins",
    "compute_metrics",
    "delong_auc_ci",
    "delong_covariance",
    "delong_roc_variance",
    "delong_test",
    "expected_calibration_error",
    "holm_adjust",
    "negative_log_likelihood",
    "sensitivity_at_specificity",
    "validate_predictions",
    "youden_threshold",
]


# --------------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------------


def _first(values: np.ndarray, k: int = 5) -> list:
    """A few offending values for an error message (plain Python objects, so they print cleanly)."""
    return values[:k].tolist()


def _as_labels(labels: Any) -> np.ndarray:
    """Labels as an int64 vector of 0/1, or a ValueError that says what is wrong and how often."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"labels must be a 1-D array, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr.astype(np.int64)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"labels must be numeric 0/1, got dtype {arr.dtype}")
    # isin() is False for NaN, so NaN labels are reported as bad entries too.
    bad = ~np.isin(arr, (0, 1))
    if bad.any():
        raise ValueError(
            f"labels must be 0 or 1; {int(bad.sum())} of {arr.size} entries are not "
            f"(first bad values: {_first(arr[bad])}, at indices {_first(np.flatnonzero(bad))})"
        )
    return arr.astype(np.int64)


def as_scores(scores: Any, name: str = "scores", unit_interval: bool = False) -> np.ndarray:
    """Scores as a float64 vector of finite values (optionally in [0, 1]), or a ValueError that
    counts the bad entries and gives their indices."""
    try:
        arr = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(
            f"{name} must be finite; {int(bad.sum())} of {arr.size} entries are NaN or infinite "
            f"(at indices {_first(np.flatnonzero(bad))})"
        )
    if unit_interval:
        out = (arr < 0.0) | (arr > 1.0)
        if out.any():
            raise ValueError(
                f"{name} must be probabilities in [0, 1]; {int(out.sum())} of {arr.size} entries "
                f"lie outside (min {arr.min():.6g}, max {arr.max():.6g}, at indices "
                f"{_first(np.flatnonzero(out))})"
            )
    return arr


def validate_predictions(
    labels: Any,
    *scores: Any,
    unit_interval: bool = False,
    require_both_classes: bool = True,
) -> tuple[np.ndarray, ...]:
    """Check labels and one or more score vectors; return them as (int64 labels, float64 scores...).

    Raises ValueError when the labels are not 0/1, a score is NaN/inf (or outside [0, 1] with
    ``unit_interval``), the lengths differ, there are no examples, or (with
    ``require_both_classes``) only one class is present: the AUC, sensitivity and specificity are
    undefined then, and a silent NaN would only surface later in a report.
    """
    y = _as_labels(labels)
    names = ["scores"] if len(scores) == 1 else [f"scores[{k}]" for k in range(len(scores))]
    arrays = [as_scores(s, name, unit_interval) for s, name in zip(scores, names)]
    for arr, name in zip(arrays, names):
        if arr.size != y.size:
            raise ValueError(f"labels and {name} have different lengths ({y.size} vs {arr.size})")
    if y.size == 0:
        raise ValueError("no examples: labels and scores are empty")
    if require_both_classes:
        n_pos = int(y.sum())
        if n_pos == 0 or n_pos == y.size:
            only = "1 (positive)" if n_pos else "0 (negative)"
            raise ValueError(
                f"only one class present: all {y.size} labels are {only}; the ROC AUC and "
                "sensitivity/specificity need at least one positive and one negative example"
            )
    return (y, *arrays)


# --------------------------------------------------------------------------------------------
# DeLong: AUC variance/covariance and the paired test
# --------------------------------------------------------------------------------------------


def _midranks(x: np.ndarray) -> np.ndarray:
    """1-based midranks along the last axis: tied values share the mean of their ranks.

    Midranks are what makes psi(x, y) = 1/2 for ties come out of the rank formulas exactly.
    """
    from scipy.stats import rankdata

    return rankdata(x, method="average", axis=-1)


def delong_covariance(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of k classifiers scored on the same examples and DeLong's k x k covariance matrix.

    ``scores`` has shape (N,) or (k, N). Returns ``(aucs, cov)`` with shapes (k,) and (k, k).
    Fast algorithm of Sun & Xu (2014): with T^X, T^Y, T^Z the midranks of the positive scores
    among the positives, of the negatives among the negatives and of each score among all N,

        V10_i = (T^Z_i - T^X_i) / n,   V01_j = 1 - (T^Z_{m+j} - T^Y_j) / m,
        AUC = mean(V10) = (sum_i T^Z_i - m (m+1)/2) / (m n).

    Needs at least two positives and two negatives, because S10 and S01 are sample covariances
    with denominators m-1 and n-1.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 1:
        s = s[None, :]
    if s.ndim != 2:
        raise ValueError(f"scores must have shape (N,) or (k, N), got {s.shape}")
    y, *rows = validate_predictions(labels, *s)
    s = np.vstack(rows)
    pos = y == 1
    m, n = int(pos.sum()), int((~pos).sum())
    if m < 2 or n < 2:
        raise ValueError(
            f"DeLong's variance needs at least 2 positive and 2 negative examples "
            f"(got {m} positive, {n} negative)"
        )
    x, yneg = s[:, pos], s[:, ~pos]
    tx = _midranks(x)
    ty = _midranks(yneg)
    tz = _midranks(np.concatenate([x, yneg], axis=1))
    # Rank sums are exact multiples of 1/2, so subtracting before the one division keeps
    # e.g. an all-tied AUC at exactly 0.5.
    aucs = (tz[:, :m].sum(axis=1) - m * (m + 1.0) / 2.0) / (m * n)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    # np.cov of a single row returns a 0-d array; atleast_2d keeps the (k, k) shape for k = 1.
    s10 = np.atleast_2d(np.cov(v10))
    s01 = np.atleast_2d(np.cov(v01))
    return aucs, s10 / m + s01 / n


def delong_roc_variance(labels: Any, scores: Any) -> tuple[float, float]:
    """``(auc, var)``: the empirical ROC AUC and its DeLong variance estimate."""
    aucs, cov = delong_covariance(labels, as_scores(scores))
    return float(aucs[0]), float(cov[0, 0])


def delong_auc_ci(labels: Any, scores: Any, alpha: float = 0.05) -> tuple[float, float]:
    """Normal-approximation (1 - alpha) CI of the AUC from DeLong's variance, clipped to [0, 1].

    The cheap alternative to :func:`bootstrap_auc_ci` (pROC's ``ci.auc(method="delong")``).
    """
    from scipy.stats import norm

    _check_alpha(alpha)
    auc, var = delong_roc_variance(labels, scores)
    half = float(norm.ppf(1.0 - alpha / 2.0)) * math.sqrt(max(var, 0.0))
    return max(0.0, auc - half), min(1.0, auc + half)


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def delong_test(labels: Any, scores_a: Any, scores_b: Any, alpha: float = 0.05) -> dict[str, Any]:
    """DeLong's two-sided test of H0: AUC_a == AUC_b, two classifiers scored on the same examples.

    Returns a dict of plain floats: ``auc_a``, ``auc_b``, ``diff`` (auc_a - auc_b), ``diff_ci95``
    ([lo, hi], the normal (1 - alpha) interval of the difference; 95 % for the default alpha),
    ``z``, ``p_value`` (two-sided, from the standard normal), ``var_a``, ``var_b`` and ``cov``.

    When the variance of the difference is zero (identical score vectors, or both classifiers
    perfect), z is 0 and p is 1 if the AUCs are equal, and z = +-inf, p = 0 otherwise; this avoids
    the 0/0 = NaN that a literal implementation produces for the common "same model twice" case.
    """
    from scipy.stats import norm

    _check_alpha(alpha)
    a = as_scores(scores_a, "scores_a")
    b = as_scores(scores_b, "scores_b")
    if a.size != b.size:
        raise ValueError(f"scores_a and scores_b have different lengths ({a.size} vs {b.size})")
    aucs, cov = delong_covariance(labels, np.vstack([a, b]))
    auc_a, auc_b = float(aucs[0]), float(aucs[1])
    var_a, var_b, cov_ab = float(cov[0, 0]), float(cov[1, 1]), float(cov[0, 1])
    diff = auc_a - auc_b
    var_diff = var_a + var_b - 2.0 * cov_ab
    # Rounding can leave a tiny negative (or positive) residue when the two score vectors are
    # (nearly) identical; treat anything at the level of float noise as exactly zero.
    scale = max(var_a + var_b, np.finfo(float).tiny)
    if var_diff <= 1e-12 * scale:
        var_diff = 0.0
    if var_diff == 0.0:
        if abs(diff) <= 1e-12:
            diff, z, p = 0.0, 0.0, 1.0
        else:
            z, p = math.copysign(math.inf, diff), 0.0
        lo = hi = diff
    else:
        sd = math.sqrt(var_diff)
        z = diff / sd
        p = float(2.0 * norm.sf(abs(z)))
        half = float(norm.ppf(1.0 - alpha / 2.0)) * sd
        lo, hi = diff - half, diff + half
    return {
        "auc_a": auc_a,
        "auc_b": auc_b,
        "diff": diff,
        "diff_ci95": [lo, hi],
        "z": z,
        "p_value": p,
        "var_a": var_a,
        "var_b": var_b,
        "cov": cov_ab,
    }


# --------------------------------------------------------------------------------------------
# Bootstrap CI of the AUC
# --------------------------------------------------------------------------------------------

# Upper bound on the elements of one batch of resamples (index and histogram matrices): 4e6
# int64 values are 32 MB, bounded whatever the data size, and enough to vectorise well.
_BOOTSTRAP_BATCH_ELEMENTS = 4_000_000


def bootstrap_auc_ci(
    labels: Any,
    scores: Any,
    n_bootstrap: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    stratified: bool = True,
) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) confidence interval ``(lo, hi)`` of the ROC AUC.

    Stratified (default): positives and negatives are resampled separately, keeping their counts,
    so that every resample has both classes. Unstratified: whole examples are resampled, and the
    rare resample that lacks a class is dropped.

    Why it is fast: the scores are replaced once by their index among the sorted unique values.
    A resample is then just two histograms over those U bins (positives, negatives), and its AUC is

        sum_u pos[u] * (negatives below u + 1/2 negatives at u) / (m n),

    a cumulative sum away; batches of resamples are processed as (batch, U) matrices with one
    ``bincount``. No per-resample sort, no Python loop over resamples. Deterministic for a given
    ``seed`` and input.
    """
    _check_alpha(alpha)
    aucs = bootstrap_aucs(labels, scores, n_bootstrap=n_bootstrap, seed=seed, stratified=stratified)
    lo, hi = np.quantile(aucs, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(lo), float(hi)


def bootstrap_aucs(
    labels: Any,
    scores: Any,
    n_bootstrap: int = 1000,
    seed: int = 0,
    stratified: bool = True,
) -> np.ndarray:
    """The bootstrap distribution behind :func:`bootstrap_auc_ci`: one AUC per usable resample.

    Draw order (what makes it reproducible): per batch of ``c`` resamples, a (c, m) matrix of
    positive indices, then a (c, n) matrix of negative indices (stratified), or one (c, N)
    matrix of example indices (unstratified), all from ``np.random.default_rng(seed)``.
    """
    if int(n_bootstrap) != n_bootstrap or n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be a positive integer, got {n_bootstrap}")
    n_bootstrap = int(n_bootstrap)
    y, s = validate_predictions(labels, scores)
    _, bins = np.unique(s, return_inverse=True)
    bins = bins.reshape(-1)  # numpy 2.0.x returned the input's shape; be explicit
    n_bins = int(bins.max()) + 1
    rng = np.random.default_rng(seed)
    aucs = np.empty(n_bootstrap, dtype=np.float64)
    valid = np.ones(n_bootstrap, dtype=bool)

    if stratified:
        pos_bins, neg_bins = bins[y == 1], bins[y == 0]
        m, n = pos_bins.size, neg_bins.size
        batch = max(1, _BOOTSTRAP_BATCH_ELEMENTS // max(n_bins, m, n))
        for start in range(0, n_bootstrap, batch):
            c = min(batch, n_bootstrap - start)
            offsets = (np.arange(c, dtype=np.int64) * n_bins)[:, None]
            pb = pos_bins[rng.integers(0, m, size=(c, m))] + offsets
            nb = neg_bins[rng.integers(0, n, size=(c, n))] + offsets
            pos_hist = np.bincount(pb.ravel(), minlength=c * n_bins).reshape(c, n_bins)
            neg_hist = np.bincount(nb.ravel(), minlength=c * n_bins).reshape(c, n_bins)
            # 2 * (cumulative count - half the tie count) keeps everything in exact integers.
            wins2 = 2 * np.cumsum(neg_hist, axis=1) - neg_hist
            aucs[start : start + c] = (pos_hist * wins2).sum(axis=1) / (2.0 * m * n)
    else:
        total = y.size
        batch = max(1, _BOOTSTRAP_BATCH_ELEMENTS // max(n_bins, total))
        for start in range(0, n_bootstrap, batch):
            c = min(batch, n_bootstrap - start)
            offsets = (np.arange(c, dtype=np.int64) * n_bins)[:, None]
            idx = rng.integers(0, total, size=(c, total))
            yb = y[idx].ravel().astype(np.float64)
            flat = (bins[idx] + offsets).ravel()
            pos_hist = np.bincount(flat, weights=yb, minlength=c * n_bins).reshape(c, n_bins)
            neg_hist = np.bincount(flat, weights=1.0 - yb, minlength=c * n_bins).reshape(c, n_bins)
            m_b, n_b = pos_hist.sum(axis=1), neg_hist.sum(axis=1)
            wins2 = 2.0 * np.cumsum(neg_hist, axis=1) - neg_hist
            with np.errstate(invalid="ignore", divide="ignore"):
                aucs[start : start + c] = (pos_hist * wins2).sum(axis=1) / (2.0 * m_b * n_b)
            valid[start : start + c] = (m_b > 0) & (n_b > 0)
        if not valid.any():
            raise ValueError("no bootstrap resample contained both classes; use stratified=True")
    return aucs[valid]


# --------------------------------------------------------------------------------------------
# Operating points and calibration
# --------------------------------------------------------------------------------------------


def youden_threshold(labels: Any, scores: Any) -> float:
    """Threshold maximising Youden's J = sensitivity + specificity - 1 (predict positive if >=).

    Taken from :func:`sklearn.metrics.roc_curve`; its first point (threshold +inf, nothing
    predicted positive) is skipped so that the result is always one of the observed scores. On
    ties in J the highest threshold wins (the first in roc_curve's order).
    """
    from sklearn.metrics import roc_curve

    y, s = validate_predictions(labels, scores)
    fpr, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)
    j = tpr[1:] - fpr[1:]
    return float(thresholds[1 + int(np.argmax(j))])


def sensitivity_at_specificity(labels: Any, scores: Any, specificity: float = 0.95) -> float:
    """Highest sensitivity (TPR) among ROC operating points with specificity >= ``specificity``.

    A clinically motivated summary: how many tumours are found when at most 5 % of normal
    patches may be flagged. Computed on the empirical ROC curve (no interpolation).
    """
    from sklearn.metrics import roc_curve

    if not 0.0 <= specificity <= 1.0:
        raise ValueError(f"specificity must be in [0, 1], got {specificity}")
    y, s = validate_predictions(labels, scores)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    # The tolerance absorbs 1 - 0.95 = 0.05000000000000004-style rounding.
    ok = fpr <= (1.0 - specificity) + 1e-12
    return float(tpr[ok].max())  # the (0, 0) point always qualifies


def calibration_bins(
    labels: Any, scores: Any, n_bins: int = 15
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin over [0, 1]: ``(mean score, fraction positive, count)``.

    Empty bins have NaN means and count 0. Bin k is [k/B, (k+1)/B), the last one closed.
    """
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins}")
    n_bins = int(n_bins)
    y, s = validate_predictions(labels, scores, unit_interval=True, require_both_classes=False)
    idx = np.minimum(np.floor(s * n_bins).astype(np.int64), n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    sum_s = np.bincount(idx, weights=s, minlength=n_bins)
    sum_y = np.bincount(idx, weights=y.astype(np.float64), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sum_s / counts, sum_y / counts, counts


def expected_calibration_error(labels: Any, scores: Any, n_bins: int = 15) -> float:
    """ECE = sum_k (n_k / N) |fraction positive_k - mean score_k| over equal-width bins."""
    mean_s, frac_y, counts = calibration_bins(labels, scores, n_bins)
    nonempty = counts > 0
    gap = np.abs(frac_y[nonempty] - mean_s[nonempty])
    return float(np.sum(gap * counts[nonempty]) / counts.sum())


def brier_score(labels: Any, scores: Any) -> float:
    """Mean squared error of the probabilities (sklearn's ``brier_score_loss``)."""
    from sklearn.metrics import brier_score_loss

    y, s = validate_predictions(labels, scores, unit_interval=True, require_both_classes=False)
    return float(brier_score_loss(y, s))


#: Probabilities are clipped to [NLL_EPS, 1 - NLL_EPS] before taking logs (as scikit-learn's
#: log_loss did by default): a score of exactly 0 or 1 on the wrong example costs
#: -log(1e-15) = 34.5 rather than an infinite mean.
NLL_EPS = 1e-15


def negative_log_likelihood(labels: Any, scores: Any) -> float:
    """Mean negative log-likelihood (log loss, in nats) of the probabilities:
    -mean(y log p + (1 - y) log(1 - p)), with p clipped to [NLL_EPS, 1 - NLL_EPS]."""
    y, s = validate_predictions(labels, scores, unit_interval=True, require_both_classes=False)
    p = np.clip(s, NLL_EPS, 1.0 - NLL_EPS)
    return float(-np.mean(np.where(y == 1, np.log(p), np.log1p(-p))))


# --------------------------------------------------------------------------------------------
# Multiple comparisons
# --------------------------------------------------------------------------------------------


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (step-down, monotone, capped at 1), in the order given.

    Rejecting every hypothesis whose adjusted p is below alpha controls the family-wise error
    rate at alpha, whatever the dependence between the tests.
    """
    k = len(p_values)
    order = sorted(range(k), key=lambda i: p_values[i])
    adjusted = [0.0] * k
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (k - rank) * float(p_values[i])))
        adjusted[i] = running
    return adjusted


# --------------------------------------------------------------------------------------------
# The metrics bundle of an evaluation
# --------------------------------------------------------------------------------------------


def compute_metrics(
    labels: Any,
    scores: Any,
    threshold: float = 0.5,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """All test-set metrics of one model as a JSON-serialisable dict of plain floats/ints.

    Keys: ``n``, ``n_positive``, ``auc``, ``auc_ci95`` ([lo, hi]; stratified percentile bootstrap
    with ``n_bootstrap`` resamples, or DeLong's normal interval when ``n_bootstrap`` is 0),
    ``auc_ci_method``, ``n_bootstrap``, ``threshold``, ``accuracy``, ``sensitivity``,
    ``specificity``, ``balanced_accuracy`` (their mean), ``precision`` (0 when nothing is predicted positive), ``f1``,
    ``confusion_matrix`` ({tn, fp, fn, tp}), ``sensitivity_at_95_specificity``, ``brier``, ``ece``
    (15 equal-width bins), ``nll`` (mean negative log-likelihood, nats).

    An example is predicted positive when ``score >= threshold`` (the convention of
    sklearn's roc_curve, so a threshold from :func:`youden_threshold` reproduces its ROC point).
    Scores must be probabilities in [0, 1] (the Brier score and ECE need them).
    """
    from sklearn.metrics import roc_auc_score

    y, s = validate_predictions(labels, scores, unit_interval=True)
    threshold = float(threshold)
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    if int(n_bootstrap) != n_bootstrap or n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be a non-negative integer, got {n_bootstrap}")
    n_bootstrap = int(n_bootstrap)

    auc = float(roc_auc_score(y, s))
    if n_bootstrap > 0:
        ci = bootstrap_auc_ci(y, s, n_bootstrap=n_bootstrap, seed=seed)
        ci_method = "bootstrap_percentile_stratified"
    elif min(int(y.sum()), int(y.size - y.sum())) >= 2:
        ci = delong_auc_ci(y, s)
        ci_method = "delong"
    else:  # too few examples of one class for any interval
        ci, ci_method = (float("nan"), float("nan")), "none"

    pred = s >= threshold
    pos = y == 1
    tp = int(np.sum(pred & pos))
    fp = int(np.sum(pred & ~pos))
    fn = int(np.sum(~pred & pos))
    tn = int(np.sum(~pred & ~pos))
    n = int(y.size)
    return {
        "n": n,
        "n_positive": int(pos.sum()),
        "auc": auc,
        "auc_ci95": [float(ci[0]), float(ci[1])],
        "auc_ci_method": ci_method,
        "n_bootstrap": n_bootstrap,
        "threshold": threshold,
        "accuracy": (tp + tn) / n,
        "sensitivity": tp / (tp + fn),  # both classes are present, so no zero denominators here
        "specificity": tn / (tn + fp),
        # eva's headline figure for PCam (frozen encoder + linear probe): the mean of the two recalls
        "balanced_accuracy": (tp / (tp + fn) + tn / (tn + fp)) / 2,
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "f1": 2 * tp / (2 * tp + fp + fn),
        "confusion_matrix": {"tn": tn, "fp": fp, "fn": fn, "tp": tp},
        "sensitivity_at_95_specificity": sensitivity_at_specificity(y, s, 0.95),
        "brier": brier_score(y, s),
        "ece": expected_calibration_error(y, s, n_bins=15),
        "nll": negative_log_likelihood(y, s),
    }
