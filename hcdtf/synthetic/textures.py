"""Texture tables and a patch's views into them: smooth fields, pixel noise, chromatin grain,
adipocyte membranes, and the soft regions built from fields.

Every table is PATCH_SIZE columns wide, so that a patch's crop (a band of 96 rows at a random
offset) is a contiguous view: NumPy works much faster on contiguous arrays than on 96x96
views of wider tables.
"""

from __future__ import annotations

import math
import statistics

import numpy as np

from hcdtf.synthetic.draws import Draws
from hcdtf.synthetic.geometry import PATCH_SIZE, hex_grid
from hcdtf.synthetic.tables import TABLE_SEED, lookup_table

FIELD_ROWS = 1024
NOISE_LEN = 1 << 18
FAT_ROWS = 256
FAT_CELLS = (12.0, 16.0, 20.0, 24.0)  # adipocyte sizes (px) of the fat tables
FIELD_SCALES = (4, 5, 6, 8)  # blobs per patch side of the fields the tissue model uses


def _bumps(n: int, k: int, lo: float, hi: float) -> np.ndarray:
    """(n, m) weights of Gaussian bumps spaced (PATCH_SIZE + 15) / (k - 1) px
    apart over [lo, hi], normalised per pixel (a smooth interpolation basis)."""
    step = (PATCH_SIZE + 15.0) / (k - 1)
    nodes = np.arange(lo, hi + 0.5 * step, step)
    a = np.exp(-0.5 * ((np.arange(n, dtype=np.float64)[:, None] - nodes[None, :]) / (0.8 * step)) ** 2)
    return a / a.sum(axis=1, keepdims=True)


@lookup_table
def field_table(k: int) -> np.ndarray:
    """A smooth random field, ~N(0, 1) per pixel, with about k blobs per patch
    side: a grid of Gaussian bumps with random weights, k across the patch
    (nodes from -8 to 103 px) and continued down the table's rows."""
    margin = 3 * (PATCH_SIZE + 15.0) / (k - 1)
    rows = _bumps(FIELD_ROWS, k, -margin, FIELD_ROWS + margin)
    cols = _bumps(PATCH_SIZE, k, -8.0, PATCH_SIZE + 7.0)
    g = np.random.default_rng([TABLE_SEED, 1, k]).standard_normal((rows.shape[1], cols.shape[1]))
    f = rows @ g @ cols.T
    return ((f - f.mean()) / f.std()).astype(np.float32)


def field(d: Draws, k: int) -> np.ndarray:
    """Smooth random field (a contiguous view), ~N(0, 1) per pixel, ~k blobs per side."""
    o = d.index(FIELD_ROWS - PATCH_SIZE + 1)
    return field_table(k)[o : o + PATCH_SIZE]


@lookup_table
def noise_table() -> np.ndarray:
    """Pixel noise: uniform, zero mean, unit variance."""
    u = np.random.default_rng([TABLE_SEED, 2]).random(NOISE_LEN, dtype=np.float32)
    return (u - 0.5) * np.float32(math.sqrt(12.0))


@lookup_table
def grain_table() -> np.ndarray:
    """Chromatin grain of nuclei: 1 + 0.12 * pixel noise."""
    return 1.0 + 0.12 * np.random.default_rng([TABLE_SEED, 8]).permutation(noise_table())


def noise(d: Draws, *shape: int, table: np.ndarray | None = None) -> np.ndarray:
    """White noise (a contiguous view of the table) of the given shape."""
    n = math.prod(shape)
    o = d.index(NOISE_LEN - n + 1)
    return (noise_table() if table is None else table)[o : o + n].reshape(shape)


@lookup_table
def fat_table(i: int) -> np.ndarray:
    """Membranes of adipocytes of size FAT_CELLS[i]: the edges of the Voronoi
    cells of a jittered hexagonal grid, ~1.8 px wide, in [0, 1]."""
    spacing = FAT_CELLS[i] * 1.7
    rows, cols = FAT_ROWS, PATCH_SIZE
    centres = hex_grid(np.random.default_rng([TABLE_SEED, 3, i]), spacing, 0.25, rows, cols)
    out = np.empty((rows, cols), np.float32)
    tile = 32
    ty, tx = (g.ravel()[:, None].astype(np.float64) for g in np.mgrid[0:tile, 0:tile])
    reach = 2.0 * spacing  # the two nearest centres of any pixel of a tile lie this close to it
    for y0 in range(0, rows, tile):
        for x0 in range(0, cols, tile):
            c = centres[
                (centres[:, 0] > y0 - reach)
                & (centres[:, 0] < y0 + tile + reach)
                & (centres[:, 1] > x0 - reach)
                & (centres[:, 1] < x0 + tile + reach)
            ]
            d2 = (ty + y0 - c[:, 0]) ** 2 + (tx + x0 - c[:, 1]) ** 2
            two = np.sqrt(np.partition(d2, 1, axis=1)[:, :2])
            out[y0 : y0 + tile, x0 : x0 + tile] = np.clip(1.8 - (two[:, 1] - two[:, 0]), 0.0, 1.0).reshape(tile, tile)
    return out


def fat(d: Draws, cell: float) -> np.ndarray:
    """Adipocyte membranes (a view) for cells of about `cell` px, maybe upside down."""
    t = fat_table(min(range(len(FAT_CELLS)), key=lambda i: abs(FAT_CELLS[i] - cell)))
    o = d.index(FAT_ROWS - PATCH_SIZE + 1)
    v = t[o : o + PATCH_SIZE]
    return v[::-1] if d.chance(0.5) else v


def region(d: Draws, coverage: float, k: int, sharp: float) -> np.ndarray:
    """Soft map in [0, 1] covering about `coverage` of the patch in a few blobs
    (a smooth field through a clipped linear ramp of slope sharp / 2)."""
    if coverage >= 0.999:
        return np.ones((PATCH_SIZE, PATCH_SIZE), np.float32)
    t = statistics.NormalDist().inv_cdf(1.0 - min(max(coverage, 1e-3), 0.999))
    reg = field(d, k) * (0.5 * sharp)
    reg += 0.5 - 0.5 * sharp * t
    return np.clip(reg, 0.0, 1.0, out=reg)


def warm_up() -> None:
    """Build every texture table now rather than on a patch's first use of it."""
    for k in FIELD_SCALES:
        field_table(k)
    noise_table()
    grain_table()
    for i in range(len(FAT_CELLS)):
        fat_table(i)
