"""From a heat map to findings: smoothing, detections (local maxima), the slide score, the overlay.

The heat map holds one tumour probability per grid cell (NaN where there is no tissue, which is
never scored). Smoothing with a Gaussian of ``sigma`` cells over the tissue turns the patch-wise
scores into a map of regions; each of its local maxima over a window of
``2 radius + 1`` cells, at or above ``min_probability``, is one detection, reported as the
Camelyon16 CSV row ``probability,x,y`` (level-0 px of the cell's centre). A plateau gives one
detection (its first cell in raster order).
"""

from __future__ import annotations

import numpy as np

SLIDE_SCORES = ("max", "p99", "tumour_area")  # --score choices; max is Camelyon16's usual choice
DEFAULT_SIGMA = 2.0  # cells (62 um): a lone high patch fades, a 200 um metastasis (6+ cells) keeps its peak
DEFAULT_RADIUS = 2
DEFAULT_MIN_PROBABILITY = 0.05


def smooth(heatmap: np.ndarray, sigma: float = DEFAULT_SIGMA) -> np.ndarray:
    """The heat map smoothed by a Gaussian of ``sigma`` cells over tissue only (normalised
    convolution: glass neither lowers nor raises tissue near it, so a constant map stays constant
    and tumour at a tissue edge is not dimmed), rounded to the 6 decimals detections are written
    with; NaN (no tissue) stays NaN."""
    from scipy import ndimage

    tissue = np.isfinite(heatmap)
    values = np.where(tissue, heatmap, 0.0).astype(np.float64)
    if sigma > 0:
        weight = ndimage.gaussian_filter(tissue.astype(np.float64), sigma, mode="constant", cval=0.0)
        values = ndimage.gaussian_filter(values, sigma, mode="constant", cval=0.0)
        values = np.divide(values, weight, out=np.zeros_like(values), where=weight > 0)
    return np.where(tissue, np.round(values, 6), np.nan).astype(np.float32)


def local_maxima(smoothed: np.ndarray, radius: int = DEFAULT_RADIUS,
                 min_probability: float = DEFAULT_MIN_PROBABILITY) -> tuple[np.ndarray, np.ndarray]:
    """(i, j) of the local maxima of ``smoothed``, one per plateau, highest first (ties: raster order)."""
    from scipy import ndimage

    m = np.where(np.isfinite(smoothed), smoothed, -np.inf)
    peak = (m == ndimage.maximum_filter(m, size=2 * radius + 1, mode="constant", cval=-np.inf))
    peak &= m >= min_probability
    labels, n = ndimage.label(peak, structure=np.ones((3, 3), bool))
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    flat = labels.ravel()
    first = np.unique(flat, return_index=True)[1][1:]  # first cell (raster order) of labels 1..n
    i, j = np.unravel_index(first, m.shape)
    key = np.lexsort((j, i, -m[i, j]))
    return i[key].astype(np.int64), j[key].astype(np.int64)


def slide_score(smoothed: np.ndarray, method: str, cell_area_mm2: float) -> float:
    """One number per slide from the smoothed map: ``max``, ``p99`` (99th percentile over tissue)
    or ``tumour_area`` (mm^2 of tissue at probability >= 0.5)."""
    values = smoothed[np.isfinite(smoothed)]
    if method not in SLIDE_SCORES:
        raise ValueError(f"--score must be one of {', '.join(SLIDE_SCORES)}, got {method!r}")
    if values.size == 0:
        return 0.0
    if method == "max":
        return float(values.max())
    if method == "p99":
        return float(np.percentile(values, 99))
    return float((values >= 0.5).sum() * cell_area_mm2)


def write_overlay(path, thumbnail: np.ndarray, heatmap: np.ndarray, per_cell: int, title: str,
                  detections: tuple[np.ndarray, np.ndarray] | None = None, top: int = 5) -> None:
    """PNG (atomic) of the heat map over the thumbnail (``per_cell`` thumbnail px per cell), with
    a colour bar and the ``top`` detections ringed."""
    from matplotlib.figure import Figure

    from hcdtf.evaluation.plots import save_figure

    h, w = thumbnail.shape[:2]
    rows, cols = heatmap.shape
    fig = Figure(figsize=(min(12.0, 2.0 + 6.0 * w / max(h, 1)), 6.0), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(thumbnail, extent=(0, w, h, 0), interpolation="antialiased")
    im = ax.imshow(np.ma.masked_invalid(heatmap), extent=(0, cols * per_cell, rows * per_cell, 0),
                   cmap="jet", vmin=0.0, vmax=1.0, alpha=0.45, interpolation="nearest")
    if detections is not None and len(detections[0]):
        i, j = detections[0][:top], detections[1][:top]
        ax.scatter((j + 0.5) * per_cell, (i + 0.5) * per_cell, s=160, facecolors="none",
                   edgecolors="white", linewidths=1.5)
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.035, pad=0.02, label="P(tumour in the centre 32x32 px)")
    save_figure(fig, path)
