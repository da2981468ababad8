"""Temperature scaling of a binary classifier's probabilities, fitted on validation predictions.

A network's sigmoid outputs are often over-confident (Guo et al. 2017). Temperature scaling
divides every logit by one number T > 0 fitted on held-out (validation) predictions:

    p' = sigmoid(logit(p) / T),   T = argmin_T  NLL(validation labels, p'(T)).

T > 1 softens over-confident scores, T < 1 sharpens under-confident ones. The map is strictly
increasing, so the ranking of the examples, hence the ROC curve and the AUC, do not change; and
logit 0 stays 0, so the decision at threshold 0.5 does not change either. Only the probabilities
(NLL, Brier score, ECE, the reliability diagram) move. One parameter, fitted by a bounded
one-dimensional search over log T: the NLL is convex in 1/T (a one-variable logistic regression
without intercept), so the minimum found is the global one within the bounds.

Reference: C. Guo, G. Pleiss, Y. Sun, K. Q. Weinberger (2017). On calibration of modern neural
networks. ICML. (Platt scaling, J. Platt 1999, would also fit an intercept and move the 0.5
threshold; temperature scaling is the variant that leaves every decision as it was.)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hcdtf.evaluation.metrics import (
    as_scores,
    brier_score,
    expected_calibration_error,
    negative_log_likelihood,
    validate_predictions,
)

__all__ = ["LOG_T_BOUNDS", "apply_temperature", "calibrate", "fit_temperature"]

#: Search interval of log T: T in [e^-5, e^5] = [0.0067, 148]. A fit that ends on a bound means
#: the validation scores are separated perfectly (T -> 0) or carry no information (T -> inf).
LOG_T_BOUNDS = (-5.0, 5.0)


def _logits(scores: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)) in float64; exactly 0 and 1 give -inf and +inf (kept: order matters)."""
    with np.errstate(divide="ignore"):
        return np.log(scores) - np.log1p(-scores)


def apply_temperature(scores: Any, temperature: float) -> np.ndarray:
    """``sigmoid(logit(scores) / temperature)``: probabilities in, probabilities out, same order."""
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive finite number, got {temperature}")
    from scipy.special import expit

    s = as_scores(scores, unit_interval=True)
    return expit(_logits(s) / temperature)


def fit_temperature(labels: Any, scores: Any) -> tuple[float, bool]:
    """The temperature that minimises the NLL of ``scores`` on ``labels``, and whether the search
    stopped on a bound of :data:`LOG_T_BOUNDS` (then the fit says little; see there).

    Needs both classes (with one, the NLL falls without limit as T shrinks or grows).
    """
    from scipy.optimize import minimize_scalar

    y, s = validate_predictions(labels, scores, unit_interval=True)

    def nll(log_t: float) -> float:
        return negative_log_likelihood(y, apply_temperature(s, math.exp(log_t)))

    lo, hi = LOG_T_BOUNDS
    res = minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    log_t = float(res.x)
    # The bounded search never evaluates the bounds themselves; compare with them explicitly.
    best = min((nll(log_t), log_t), (nll(lo), lo), (nll(hi), hi))
    log_t = best[1]
    at_bound = min(log_t - lo, hi - log_t) < 1e-3
    return math.exp(log_t), at_bound


def _scores_summary(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    return {
        "nll": negative_log_likelihood(labels, scores),
        "brier": brier_score(labels, scores),
        "ece": expected_calibration_error(labels, scores),
    }


def calibrate(
    val_labels: Any, val_scores: Any, labels: Any | None, scores: Any
) -> tuple[np.ndarray, dict[str, Any]]:
    """Fit a temperature on the validation predictions and apply it to ``scores``.

    Returns ``(calibrated_scores, info)``. ``info``: ``method`` ("temperature"), ``temperature``,
    ``at_bound`` (see :func:`fit_temperature`), ``n_fit`` (validation examples), ``validation``
    and, when ``labels`` are given (None for an unlabelled split), ``evaluated``: each
    ``{"before": {nll, brier, ece}, "after": {...}}``. The AUC is unchanged by construction.
    """
    vy, vs = validate_predictions(val_labels, val_scores, unit_interval=True)
    temperature, at_bound = fit_temperature(vy, vs)
    s = as_scores(scores, unit_interval=True)
    calibrated = apply_temperature(s, temperature)
    info: dict[str, Any] = {
        "method": "temperature",
        "temperature": temperature,
        "at_bound": at_bound,
        "n_fit": int(vy.size),
        "validation": {
            "before": _scores_summary(vy, vs),
            "after": _scores_summary(vy, apply_temperature(vs, temperature)),
        },
    }
    if labels is not None:
        y, s = validate_predictions(labels, s, unit_interval=True, require_both_classes=False)
        info["evaluated"] = {
            "before": _scores_summary(y, s),
            "after": _scores_summary(y, calibrated),
        }
    return calibrated, info
