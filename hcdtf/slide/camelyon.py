"""The Camelyon16 evaluation protocol: evaluation masks, isolated tumour cells, lesion FROC, slide AUC.

Lesions are found on the evaluation mask, made at level 5 (32 level-0 px per px) from the tumour
mask: pixels closer than ``75 / (2 x pixel size)`` px to tumour (75 um, the size of about five
tumour cells, as a diameter), holes filled, 8-connected components = lesions. A lesion whose major
axis is under 275 um (200 um before the dilation) is an isolated tumour cell cluster (ITC):
neither counted as a lesion to find nor as a false positive when a detection hits it.

A detection (probability, x, y in level-0 px) on a tumour slide hits the lesion whose label is at
(y // 32, x // 32); the highest probability among a lesion's hits is that lesion's; a detection
outside every lesion is a false positive, and so is every detection on a normal slide. The FROC
curve is traced over every distinct probability as threshold t (detections with p >= t kept):
average false positives per slide against the share of lesions found. Its score is the mean
sensitivity at 1/4, 1/2, 1, 2, 4 and 8 average false positives per slide, read on the curve
drawn through its points in order of decreasing threshold from (0, 0): linear between points,
the highest sensitivity where several points share a false-positive rate, and flat beyond the
last point. (Camelyon16's reference script differs in small ways: it drops the lowest threshold
and interpolates with ``np.interp`` over repeated x.)
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

EVAL_DOWNSAMPLE = 32               # level 5 of a pyramid with 2x steps
DILATION_UM = 75.0
ITC_AXIS_UM = 275.0                # major axis after dilation (200 um + 75 um)
FP_RATES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def evaluation_mask(tumour: np.ndarray, pixel_um: float) -> tuple[np.ndarray, set[int]]:
    """(int32 labels of the lesions, the labels that are ITCs) from a bool tumour mask whose
    pixels measure ``pixel_um`` um (``mpp x 32`` at level 5)."""
    from scipy import ndimage
    from skimage import measure

    if not tumour.any():
        return np.zeros(tumour.shape, np.int32), set()
    distance = ndimage.distance_transform_edt(~tumour)
    dilated = ndimage.binary_fill_holes(distance < DILATION_UM / (2.0 * pixel_um))
    labels = measure.label(dilated, connectivity=2).astype(np.int32)
    itcs = {p.label for p in measure.regionprops(labels) if p.axis_major_length < ITC_AXIS_UM / pixel_um}
    return labels, itcs


@dataclasses.dataclass
class SlideHits:
    """One slide's detections against its lesions."""

    fp: np.ndarray         # probabilities of false-positive detections
    lesion: np.ndarray     # per countable lesion: highest probability of a hit, -inf if none
    itc_hits: int = 0


def match(labels: np.ndarray | None, itcs: set[int], probs: np.ndarray, xs: np.ndarray, ys: np.ndarray,
          downsample: float = EVAL_DOWNSAMPLE) -> SlideHits:
    """Detections of one slide against its evaluation mask (``labels=None``: a normal slide)."""
    probs = np.asarray(probs, np.float64)
    if labels is None:
        return SlideHits(probs.copy(), np.zeros(0))
    countable = [k for k in range(1, int(labels.max()) + 1) if k not in itcs]
    best = {k: -math.inf for k in countable}
    fp, itc_hits = [], 0
    for p, x, y in zip(probs.tolist(), np.asarray(xs).tolist(), np.asarray(ys).tolist()):
        r, c = int(y // downsample), int(x // downsample)
        hit = int(labels[r, c]) if 0 <= r < labels.shape[0] and 0 <= c < labels.shape[1] else 0
        if hit == 0:
            fp.append(p)
        elif hit in itcs:
            itc_hits += 1
        else:
            best[hit] = max(best[hit], p)
    return SlideHits(np.array(fp, np.float64), np.array([best[k] for k in countable], np.float64), itc_hits)


def froc_curve(hits: list[SlideHits]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(average FPs per slide, sensitivity, threshold) from (0, 0) at t = inf down to the lowest t."""
    fp = np.sort(np.concatenate([h.fp for h in hits] + [np.zeros(0)]))
    lesion = np.concatenate([h.lesion for h in hits] + [np.zeros(0)])
    found = np.sort(lesion[np.isfinite(lesion)])
    n_lesions = len(lesion)
    thresholds = np.unique(np.concatenate([fp, found]))[::-1]
    n_fp = len(fp) - np.searchsorted(fp, thresholds, side="left")        # p >= t
    n_tp = len(found) - np.searchsorted(found, thresholds, side="left")
    avg_fp = np.concatenate([[0.0], n_fp / max(len(hits), 1)])
    sens = np.concatenate([[0.0], n_tp / n_lesions]) if n_lesions else np.full(len(thresholds) + 1, np.nan)
    return avg_fp, sens, np.concatenate([[np.inf], thresholds])


def sensitivity_at(avg_fp: np.ndarray, sens: np.ndarray, rate: float) -> float:
    """Sensitivity at ``rate`` average FPs per slide on the curve (see the module docstring)."""
    at_or_below = np.flatnonzero(avg_fp <= rate)
    k = int(at_or_below[-1])                 # the last point (highest sensitivity) with fp <= rate
    if k + 1 >= len(avg_fp):
        return float(sens[k])
    f0, s0, f1, s1 = avg_fp[k], sens[k], avg_fp[k + 1], sens[k + 1]
    return float(s0 + (s1 - s0) * (rate - f0) / (f1 - f0))


def froc_score(avg_fp: np.ndarray, sens: np.ndarray) -> tuple[float, dict[float, float]]:
    """(mean sensitivity at :data:`FP_RATES`, the sensitivity at each)."""
    at = {r: sensitivity_at(avg_fp, sens, r) for r in FP_RATES}
    return float(np.mean(list(at.values()))), at


def slide_auc(labels: np.ndarray, scores: np.ndarray, n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """ROC AUC of the slide scores (tumour = 1) with hcdtf.evaluation.metrics' bootstrap 95% CI."""
    from sklearn.metrics import roc_auc_score

    from hcdtf.evaluation.metrics import bootstrap_auc_ci

    labels, scores = np.asarray(labels, int), np.asarray(scores, float)
    n_pos, n_neg = int(labels.sum()), int((1 - labels).sum())
    if n_pos == 0 or n_neg == 0:
        return {"auc": None, "ci95": None, "n_tumour": n_pos, "n_normal": n_neg,
                "note": "slide AUC needs tumour and normal slides"}
    ci = bootstrap_auc_ci(labels, scores, n_bootstrap=n_bootstrap, seed=seed) if n_bootstrap else None
    return {"auc": float(roc_auc_score(labels, scores)), "ci95": None if ci is None else list(ci),
            "n_tumour": n_pos, "n_normal": n_neg, "n_bootstrap": n_bootstrap}
