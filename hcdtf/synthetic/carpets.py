"""Carpets: pre-rendered bands of packed small nuclei (lymphocytes, histiocytes) that a patch thins.

A carpet is a PATCH_SIZE-wide band of nuclei on a jittered hexagonal grid, each pixel knowing
the nucleus it belongs to. A patch takes 96 of its rows and keeps a nucleus where its random
key is below the local density: the same as drawing each nucleus with that probability, at the
cost of a few whole-image operations instead of a stamp per nucleus. :class:`Table` is the
canvas these (and the tumour carpets) are rendered on.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from hcdtf.synthetic.geometry import PATCH_SIZE, hex_grid, window
from hcdtf.synthetic.stamps import bank
from hcdtf.synthetic.tables import TABLE_SEED, lookup_table

CARPET_ROWS = 1024
CARPET_PAD = 8  # >= the half-width of a carpet's nuclei (see thin)
N_LYMPH_CARPETS = 6
N_HISTIO_CARPETS = 3


@dataclasses.dataclass(frozen=True)
class Carpet:
    """A PATCH_SIZE-wide band of packed nuclei of one kind (a hexagonal grid
    with jitter), pre-rendered: the nuclear haematoxylin of each pixel, the
    random key in [0, 1) of the nucleus it belongs to (2 on no nucleus) and
    that nucleus' centre (flat index into the table, clamped into it, plus
    CARPET_PAD rows); plus the list of the nuclei centred in the table,
    sorted by row.  Where nuclei overlap, a pixel belongs to the one whose
    centre is nearest."""

    value: np.ndarray  # (rows, 96) float32
    key: np.ndarray  # (rows, 96) float32
    centre: np.ndarray  # (rows, 96) intp
    start: np.ndarray  # (rows + 1,) start[r]: first nucleus of the list in row >= r
    row: np.ndarray  # (n,) centre rows of the nuclei centred in the table, sorted
    col: np.ndarray  # (n,) centre columns
    keys: np.ndarray  # (n,) float32
    large: np.ndarray  # (n,) the nucleus' stamp in the "large" bank, should it be drawn large
    large_amp: np.ndarray  # (n,) float32: and its darkness


class Table:
    """A padded canvas for pre-rendering a band of `rows` x PATCH_SIZE:
    stamps centred up to `reach` px outside the band are painted whole."""

    def __init__(self, reach: int, rows: int = CARPET_ROWS) -> None:
        self.rows = rows
        self.pad = 2 * reach
        self.width = PATCH_SIZE + 2 * self.pad
        self.shape = (rows + 2 * self.pad, self.width)

    def paint(
        self,
        canvas: np.ndarray,
        values: np.ndarray,
        s: np.ndarray,
        iy: np.ndarray,
        ix: np.ndarray,
        amp: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """canvas (flat) = max(canvas, stamps `values[s]` (on the window that
        fits `values`) at (iy, ix)); returns their flat indices and values."""
        h = (math.isqrt(values.shape[1]) - 1) // 2
        oy, ox = window(h)
        flat = ((iy + self.pad) * self.width + ix + self.pad)[:, None] + (oy * self.width + ox)
        v = values[s] if amp is None else values[s] * amp[:, None].astype(np.float32)
        np.maximum.at(canvas, flat.ravel(), v.ravel())
        return flat, v

    def owners(self, canvas: np.ndarray, flat: np.ndarray, v: np.ndarray, none: int) -> np.ndarray:
        """Per pixel of `canvas` the stamp whose value it has (`none` on none)."""
        owner = np.full(canvas.shape, none, np.intp)
        wins = (v > 0) & (v == canvas[flat])
        owner[flat[wins]] = np.broadcast_to(np.arange(len(flat))[:, None], flat.shape)[wins]
        return owner

    def nearest_owners(
        self, canvas: np.ndarray, flat: np.ndarray, v: np.ndarray, radius: np.ndarray, none: int
    ) -> np.ndarray:
        """Per pixel of `canvas` the stamp nearest to it (relative to its radius)
        among those covering it (`none` on none), and set the pixel to that
        stamp's value: where nuclei overlap, dropping one leaves the other
        whole up to the line between them, not bitten by the other's rim."""
        h = (math.isqrt(flat.shape[1]) - 1) // 2
        oy, ox = window(h)
        dist = np.where(v > 0, np.hypot(oy, ox)[None, :] / radius[:, None], np.inf)
        nearest = np.full(canvas.shape, np.inf)
        np.minimum.at(nearest, flat.ravel(), dist.ravel())
        wins = (v > 0) & (dist == nearest[flat])
        owner = np.full(canvas.shape, none, np.intp)
        owner[flat[wins]] = np.broadcast_to(np.arange(len(flat))[:, None], flat.shape)[wins]
        canvas[flat[wins]] = v[wins]
        return owner

    def runner_up(self, flat: np.ndarray, v: np.ndarray, owner: np.ndarray, none: int) -> tuple[np.ndarray, np.ndarray]:
        """(values, owners) of the second-largest stamp value of each pixel."""
        v2 = np.where(owner[flat] == np.arange(len(flat))[:, None], 0.0, v).astype(np.float32)
        canvas = np.zeros(owner.shape, np.float32)
        np.maximum.at(canvas, flat.ravel(), v2.ravel())
        return canvas, self.owners(canvas, flat, v2, none)

    def inner(self, canvas: np.ndarray) -> np.ndarray:
        """The band itself (without the padding), contiguous."""
        p = self.pad
        return np.ascontiguousarray(canvas.reshape(self.shape)[p : p + self.rows, p : p + PATCH_SIZE])


def table_points(
    rng: np.random.Generator, spacing: float, jitter: float, reach: int, rows: int = CARPET_ROWS
) -> np.ndarray:
    """Pixels (m, 2) of a jittered hexagonal grid over a band of `rows` x
    PATCH_SIZE, sorted by row, that lie at most `reach` px outside it."""
    cols = PATCH_SIZE
    pts = np.rint(hex_grid(rng, spacing, jitter, rows, cols)).astype(np.intp)
    pts = pts[(pts[:, 0] >= -reach) & (pts[:, 0] < rows + reach) & (pts[:, 1] >= -reach) & (pts[:, 1] < cols + reach)]
    return pts[np.argsort(pts[:, 0], kind="stable")]


def _make_carpet(kind: str, seed: int, spacing: float, jitter: float, radius: np.ndarray, amp: np.ndarray) -> Carpet:
    """`radius` and `amp` are per-nucleus draws, long enough for the grid."""
    rows, cols = CARPET_ROWS, PATCH_SIZE
    rng = np.random.default_rng([TABLE_SEED, 5, seed])
    nuclei = bank(kind)
    h = int(nuclei.need.max())
    pts = table_points(rng, spacing, jitter, h)
    n = len(pts)
    radius, amp = radius[:n].astype(np.float32), amp[:n].astype(np.float32)
    variant, keys = rng.random(n, dtype=np.float32), rng.random(n, dtype=np.float32)
    table = Table(h)
    canvas = np.zeros(math.prod(table.shape), np.float32)
    flat, v = table.paint(canvas, nuclei.windows[h][0], nuclei.pick(radius, variant), pts[:, 0], pts[:, 1], amp)
    owner = table.inner(table.nearest_owners(canvas, flat, v, radius, -1))
    own = np.maximum(owner, 0)
    # (a nucleus of a pixel lies at most h rows away: clamping the centre to the
    # table's rows only matters at its ends, which patches never reach)
    centre = np.clip(pts[own, 0], 0, rows - 1) * cols + np.clip(pts[own, 1], 0, cols - 1)
    centre = np.where(owner >= 0, centre, np.arange(rows * cols).reshape(rows, cols))  # (no nucleus: itself)
    listed = (pts[:, 0] >= 0) & (pts[:, 0] < rows) & (pts[:, 1] >= 0) & (pts[:, 1] < cols)
    # large oval versions, paler (lymphocyte carpets: germinal-centre cells and histiocytes)
    large = bank("large")
    u = rng.random((3, n))
    return Carpet(
        value=table.inner(canvas),
        key=np.where(owner >= 0, keys[own], 2.0).astype(np.float32),
        centre=(centre + CARPET_PAD * cols).astype(np.intp),  # (in a density map padded by CARPET_PAD rows)
        start=np.searchsorted(pts[listed, 0], np.arange(rows + 1)),
        row=pts[listed, 0],
        col=pts[listed, 1],
        keys=keys[listed],
        large=large.pick(radius * (1.25 + 0.3 * u[0]), u[1])[listed],
        large_amp=(0.8 + 0.4 * u[2][listed]).astype(np.float32),
    )


@lookup_table
def carpet(kind: str, i: int) -> Carpet:
    """Carpet i of lymphocytes (spacing 6.8..9.5 px, nuclear radius
    2.4..3.6 px times a per-carpet scale 0.9..1.1, darkness 1.5..2.3) or of
    sinus histiocytes (spacing 9..12 px, radius 2.6..3.8 px, darkness 0.7..1.2)."""
    m = 20000  # more than any carpet's nuclei
    if kind == "lymphocyte":
        rng = np.random.default_rng([TABLE_SEED, 6, i])
        spacing = 6.8 + 2.7 * (i + 0.5) / N_LYMPH_CARPETS
        radius = rng.uniform(2.4, 3.6, m) * rng.uniform(0.9, 1.1)
        return _make_carpet(kind, i, spacing, 0.18, radius, rng.uniform(1.5, 2.3, m))
    rng = np.random.default_rng([TABLE_SEED, 7, i])
    spacing = 9.0 + 3.0 * (i + 0.5) / N_HISTIO_CARPETS
    return _make_carpet(kind, 100 + i, spacing, 0.2, rng.uniform(2.6, 3.8, m), rng.uniform(0.7, 1.2, m))


def density_map() -> tuple[np.ndarray, np.ndarray]:
    """(padded, inner): a (96 + 2 * CARPET_PAD, 96) map and its inner (96, 96) rows."""
    padded = np.empty((PATCH_SIZE + 2 * CARPET_PAD, PATCH_SIZE), np.float32)
    return padded, padded[CARPET_PAD : CARPET_PAD + PATCH_SIZE]


def thin(c: Carpet, o: int, padded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(keep, density at each pixel's nucleus centre) for rows o..o+95 of a
    carpet, the density given in the inner rows of `padded` (whose pad rows
    this sets: a pixel's nucleus may be centred up to CARPET_PAD rows off)."""
    p = CARPET_PAD
    padded[:p] = padded[p]
    padded[-p:] = padded[-p - 1]
    at_centre = np.take(padded, c.centre[o : o + PATCH_SIZE] - o * PATCH_SIZE)
    return c.key[o : o + PATCH_SIZE] < at_centre, at_centre


def warm_up() -> None:
    """Build every carpet now rather than on a patch's first use of it."""
    for i in range(N_LYMPH_CARPETS):
        carpet("lymphocyte", i)
    for i in range(N_HISTIO_CARPETS):
        carpet("histiocyte", i)
