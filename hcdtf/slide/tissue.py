"""Tissue detection: which parts of a slide hold tissue, from a low-resolution thumbnail.

Stained tissue is coloured and glass is grey-white, so the saturation of a thumbnail separates
them: Otsu's threshold on the saturation (never below ``min_saturation``, so that an empty slide
or pure glass stays empty instead of splitting its noise in two), then a small opening and
closing to drop specks and fill pinholes. Background is never sent to the model.
"""

from __future__ import annotations

import numpy as np

DEFAULT_MIN_SATURATION = 0.07  # glass, dust and scanner noise stay below this (0..1)
DEFAULT_MIN_TISSUE = 0.1       # share of a heat-map cell that must be tissue for it to be scored


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation in [0, 1], float32, of a uint8 RGB image."""
    mx = rgb.max(axis=-1).astype(np.float32)
    mn = rgb.min(axis=-1).astype(np.float32)
    return np.divide(mx - mn, mx, out=np.zeros_like(mx), where=mx > 0)


def tissue_mask(thumbnail: np.ndarray, min_saturation: float = DEFAULT_MIN_SATURATION) -> tuple[np.ndarray, float]:
    """(bool mask, threshold used): tissue pixels of a uint8 RGB thumbnail."""
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    if not 0.0 <= min_saturation < 1.0:
        raise ValueError(f"--min-saturation must be in [0, 1), got {min_saturation}")
    sat = saturation(thumbnail)
    threshold = min_saturation
    if sat.max() > sat.min():
        threshold = max(float(threshold_otsu(sat)), min_saturation)
    mask = sat > threshold
    mask = ndimage.binary_opening(mask, iterations=1)
    mask = ndimage.binary_closing(mask, iterations=2, border_value=0) | mask
    return mask, threshold


def cell_fractions(mask: np.ndarray, rows: int, cols: int, per_cell: int) -> np.ndarray:
    """float32 [rows, cols]: share of tissue in each heat-map cell, from a mask with
    ``per_cell`` x ``per_cell`` pixels per cell (cropped or padded with glass to fit)."""
    h, w = rows * per_cell, cols * per_cell
    full = np.zeros((h, w), np.float32)
    full[:min(h, mask.shape[0]), :min(w, mask.shape[1])] = mask[:h, :w]
    return full.reshape(rows, per_cell, cols, per_cell).mean(axis=(1, 3))
