"""Patch geometry: size, the centre region of the label rule, padded canvases, grids of points."""

from __future__ import annotations

import math

import numpy as np

from hcdtf.synthetic.tables import lookup_table

PATCH_SIZE = 96
CENTRE = slice(32, 64)  # the 32x32 centre region of the PCam label rule

# The few nuclei stamped one by one (large lymphoid nuclei, spindles) go into a canvas padded
# by PAD px on every side, so that a stamp crossing the patch border needs no clipping: they
# are at most 7 px in half-width, and centred at most 8 px outside the patch.
PAD = 16
PW = PATCH_SIZE + 2 * PAD
INNER = slice(PAD, PAD + PATCH_SIZE)  # the patch inside a padded canvas

TWO_PI = 2.0 * math.pi
SQRT3_2 = math.sqrt(3.0) / 2.0


@lookup_table
def axis() -> np.ndarray:
    """Pixel coordinates relative to the patch centre: -47.5 .. 47.5."""
    return np.arange(PATCH_SIZE, dtype=np.float32) - (PATCH_SIZE - 1) / 2


def dist_to_centre(iy: np.ndarray, ix: np.ndarray) -> np.ndarray:
    """Euclidean distance from pixels (iy, ix) to the centre square [32, 63]^2."""
    lo, hi = CENTRE.start, CENTRE.stop - 1
    dy = np.maximum(np.maximum(lo - iy, iy - hi), 0)
    dx = np.maximum(np.maximum(lo - ix, ix - hi), 0)
    return np.hypot(dy, dx)


@lookup_table
def unit_lattice(n: int) -> np.ndarray:
    """(m, 2) points (y, x) of a hexagonal lattice of unit spacing, |i|, |j| <= n."""
    i, j = np.mgrid[-n : n + 1, -n : n + 1].astype(np.float32)
    return np.stack([(j * SQRT3_2).ravel(), (i + 0.5 * (j % 2)).ravel()], axis=1)


def hex_grid(rng: np.random.Generator, spacing: float, jitter: float, height: float, width: float) -> np.ndarray:
    """(m, 2) points (y, x) of a rotated, jittered hexagonal grid covering
    [-2 spacing, height + 2 spacing] x [-2 spacing, width + 2 spacing]."""
    half = max(height, width) / 2 + 3 * spacing
    lattice = unit_lattice(int(math.ceil(half * 1.5 / spacing)) + 2).astype(np.float64)
    ang = rng.uniform(0, math.pi)
    c, s = math.cos(ang), math.sin(ang)
    pts = lattice @ (np.array([[c, s], [-s, c]]) * spacing) + [height / 2, width / 2]
    keep = (pts[:, 0] > -2 * spacing) & (pts[:, 0] < height + 2 * spacing)
    keep &= (pts[:, 1] > -2 * spacing) & (pts[:, 1] < width + 2 * spacing)
    pts = pts[keep]
    return pts + jitter * spacing * rng.standard_normal(pts.shape)


def window(half: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column offsets (flattened) of a (2*half+1)^2 window."""
    oy, ox = np.mgrid[-half : half + 1, -half : half + 1]
    return oy.ravel(), ox.ravel()
