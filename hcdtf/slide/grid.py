"""The heat-map grid: which patch scores which cell, and how patches are cut from slide tiles.

A PCam label describes the centre 32x32 px of a 96x96 patch, so by default the grid's cells are
32x32 px at the model's resolution and each cell is scored by the patch centred on it: the map
is dense, every cell is scored once, and no two patches claim the same cell. Patches are cut
from larger tiles of ``tile_cells`` x ``tile_cells`` cells (one read per tile, not per patch);
the order of patches (tiles in raster order, cells in raster order inside a tile) is fixed, which
is what makes a resumed run score exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

PATCH = 96
DEFAULT_STRIDE = 32
DEFAULT_TILE_CELLS = 16


@dataclasses.dataclass(frozen=True)
class Grid:
    """Cells of ``stride`` model px over a slide; a cell's patch starts ``offset`` px before it."""

    stride: int        # model px per cell
    factor: float      # level-0 px per model px
    rows: int
    cols: int
    tile_cells: int = DEFAULT_TILE_CELLS
    patch: int = PATCH  # model px per patch side (a pathology encoder's input: 224)

    @classmethod
    def for_slide(cls, width0: int, height0: int, factor: float, stride: int = DEFAULT_STRIDE,
                  tile_cells: int = DEFAULT_TILE_CELLS, patch: int = PATCH) -> "Grid":
        if stride < 1:
            raise ValueError(f"--stride must be >= 1 px, got {stride}")
        cell0 = stride * factor
        return cls(stride, factor, math.ceil(height0 / cell0), math.ceil(width0 / cell0), tile_cells, patch)

    @property
    def offset(self) -> int:
        """Model px from a cell's top-left corner back to its patch's (the patch is centred on it)."""
        return (self.patch - self.stride) // 2

    @property
    def cell_level0(self) -> float:
        """Cell size in level-0 px."""
        return self.stride * self.factor

    def centres_level0(self, i: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Level-0 (x, y) of the centres of cells (i, j), rounded to whole pixels."""
        c = self.cell_level0
        return np.floor((j + 0.5) * c).astype(np.int64), np.floor((i + 0.5) * c).astype(np.int64)

    def order(self, scored: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(i, j) of the True cells of ``scored`` [rows, cols], in patch order."""
        i, j = np.nonzero(scored)
        t = self.tile_cells
        key = np.lexsort((j, i, j // t, i // t))
        return i[key].astype(np.int64), j[key].astype(np.int64)

    def tile_region(self, ti: int, tj: int) -> tuple[int, int, int, int]:
        """(x, y, width, height) in model px of the region holding every patch of tile (ti, tj)."""
        t, s = self.tile_cells, self.stride
        n_rows = min(t, self.rows - ti * t)
        n_cols = min(t, self.cols - tj * t)
        x = tj * t * s - self.offset
        y = ti * t * s - self.offset
        return x, y, (n_cols - 1) * s + self.patch, (n_rows - 1) * s + self.patch

    def cut(self, region: np.ndarray, ti: int, tj: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """uint8 [n, patch, patch, 3]: the patches of cells (i, j) (all in tile (ti, tj)) from its region."""
        t, s, p = self.tile_cells, self.stride, self.patch
        ys, xs = (i - ti * t) * s, (j - tj * t) * s
        out = np.empty((len(i), p, p, 3), np.uint8)
        for k, (y, x) in enumerate(zip(ys.tolist(), xs.tolist())):
            out[k] = region[y:y + p, x:x + p]
        return out
