"""Metastatic tumour: carpets of tumour cells, the cluster a patch keeps (the PCam label rule),
and how the cluster stains.

Tumour cells form a cohesive cluster of large cells with more (pinker) cytoplasm and large,
irregular, pale (vesicular) nuclei with a dark rim of chromatin and one or two prominent
nucleoli. Label rule (PCam): ``label == 1`` iff at least one tumour-cell pixel lies in the
centre 32x32 region. Positives have a cluster over the centre; some negatives have tumour
cells only outside it, at least :data:`NEG_MARGIN` px away. The rule holds exactly on the
tumour mask :func:`place` returns, by construction.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from hcdtf.synthetic.carpets import Table, table_points
from hcdtf.synthetic.draws import Draws
from hcdtf.synthetic.geometry import PATCH_SIZE, TWO_PI, dist_to_centre
from hcdtf.synthetic.optics import Stain, blur_matrix
from hcdtf.synthetic.stamps import bank
from hcdtf.synthetic.tables import TABLE_SEED, lookup_table

# Negatives' tumour cells stay this many px away from the centre region: the
# rule holds for any margin >= 0; a small gap keeps the decision learnable in
# the few epochs of the quick start (real PCam hard cases are rarer than
# "a tumour cell one pixel outside the centre").
NEG_MARGIN = 3.0
P_NEG_WITH_TUMOUR = 0.3
N_TUMOUR_CARPETS = 4  # cell spacings 11 .. 15.5 px
TUMOUR_ROWS = 512


@dataclasses.dataclass(frozen=True)
class TumourCarpet:
    """A PATCH_SIZE-wide band of tumour cells packed on a jittered hexagonal
    grid of one spacing, pre-rendered: per pixel the two largest coverages by
    cell bodies (times 1 + a faint border inside their outline; neighbouring
    bodies overlap) and whose they are, the nuclear haematoxylin, the eosin
    of nucleoli and whose nucleus they are (`none`: no cell); plus the cells,
    sorted by row, with their reach (the distance from the centre of their
    farthest pixel with coverage > 0.5).  A patch keeps a cluster of cells
    and drops the values of the others: coverage > 0.5 only remains within
    the reach of kept cells, which makes the centre rule exact."""

    cov: np.ndarray  # (rows, 96) float32: the largest
    cov2: np.ndarray  # (rows, 96) float32: the second largest (cells overlap)
    owner: np.ndarray  # (rows, 96) uint16: whose is `cov`, `none` for no cell
    owner2: np.ndarray  # (rows, 96) uint16: whose is `cov2`
    nucleus: np.ndarray  # (rows, 96) float32
    nucleolus_e: np.ndarray  # (rows, 96) float32
    nucleus_owner: np.ndarray  # (rows, 96) uint16
    row: np.ndarray  # (n,) centre rows, sorted
    col: np.ndarray  # (n,) centre columns
    reach: np.ndarray  # (n,) float32
    solid: np.ndarray  # (n,) bool: the centre pixel has coverage > 0.5 of the cell's own
    start: np.ndarray  # start[r + ext]: first cell of row >= r, r in -ext .. rows + ext
    ext: int  # cells' pixels lie at most this far (rows) from their centre
    none: int


@lookup_table
def tumour_carpet(i: int) -> TumourCarpet:
    """Tumour carpet i: cell spacing 11 + 4.5 i / (n - 1) px, cell radius
    0.55..0.68 spacing, nucleus radius 0.52..0.66 cell radius, offset by
    ~0.12 cell radius, darkness 1.1..1.6."""
    spacing = 11.0 + 4.5 * i / (N_TUMOUR_CARPETS - 1)
    rng = np.random.default_rng([TABLE_SEED, 9, i])
    cells, nuclei = bank("tumour_cell"), bank("tumour_nucleus")
    ext = max(int(cells.need.max()), int(nuclei.need.max()) + 3)  # (nucleus offset <= 0.21 * 10.6 px)
    pts = table_points(rng, spacing, 0.12, ext, TUMOUR_ROWS)
    n = len(pts)
    u = rng.random((6, n))
    cell_r = spacing * (0.55 + 0.13 * u[0])
    nuc_r = cell_r * (0.52 + 0.14 * u[1])
    off = np.rint((u[2:4] - 0.5) * 0.42 * cell_r).astype(np.intp)  # sd 0.12 cell_r
    ns = nuclei.pick(nuc_r, u[4])
    table = Table(ext, TUMOUR_ROWS)
    size = math.prod(table.shape)
    cov, nucleus, nucleolus = (np.zeros(size, np.float32) for _ in range(3))
    cs = cells.pick(cell_r, u[5])
    cf, cv = table.paint(cov, cells.windows[int(cells.need.max())][0], cs, pts[:, 0], pts[:, 1])
    ny, nx = pts[:, 0] + off[0], pts[:, 1] + off[1]
    amp = rng.uniform(1.1, 1.6, n)
    nf, nv = table.paint(nucleus, nuclei.windows[int(nuclei.need.max())][0], ns, ny, nx, amp)
    assert nuclei.extra is not None
    table.paint(nucleolus, nuclei.extra, ns, ny, nx, np.full(n, 0.5))
    owner = table.owners(cov, cf, cv, n)
    cov2, owner2 = table.runner_up(cf, cv, owner, n)
    nucleus_owner = table.nearest_owners(nucleus, nf, nv, nuc_r, n)
    assert n < 65535
    # (a cell's own coverage at its centre is 1, but in a crowd of very close
    # centres neither of the two kept values of that pixel might be its own)
    at = np.clip(pts[:, 0] + table.pad, 0, table.shape[0] - 1) * table.width + pts[:, 1] + table.pad
    k = np.arange(n)
    solid = ((owner[at] == k) & (cov[at] > 0.5)) | ((owner2[at] == k) & (cov2[at] > 0.5))
    return TumourCarpet(
        cov=table.inner(cov),
        cov2=table.inner(cov2),
        owner=table.inner(owner).astype(np.uint16),
        owner2=table.inner(owner2).astype(np.uint16),
        nucleus=table.inner(nucleus),
        nucleolus_e=table.inner(nucleolus),
        nucleus_owner=table.inner(nucleus_owner).astype(np.uint16),
        row=pts[:, 0].copy(),
        col=pts[:, 1].copy(),
        reach=cells.reach[cs],  # (of each cell's own stamp)
        solid=solid,
        start=np.searchsorted(pts[:, 0], np.arange(-ext, TUMOUR_ROWS + ext + 1)),
        ext=ext,
        none=n,
    )


@lookup_table
def near_matrices() -> tuple[np.ndarray, np.ndarray]:
    """(A, M) with ``M @ (A @ x @ A.T) @ M.T`` = x averaged over 4x4 blocks,
    blurred (sigma 0.8 blocks) and bilinearly upsampled back to 96x96."""
    small = PATCH_SIZE // 4
    a = np.kron(np.eye(small), np.full((1, 4), 0.25))  # (24, 96) block means
    pos = np.clip((np.arange(PATCH_SIZE) + 0.5) / 4 - 0.5, 0, small - 1)
    i0 = pos.astype(np.int64)
    i1 = np.minimum(i0 + 1, small - 1)
    up = np.zeros((PATCH_SIZE, small))
    np.add.at(up, (np.arange(PATCH_SIZE), i0), 1 - (pos - i0))
    np.add.at(up, (np.arange(PATCH_SIZE), i1), pos - i0)
    m = up @ blur_matrix(8, small).astype(np.float64)
    return a.astype(np.float32), m.astype(np.float32)


def _outline(d: Draws, label: int, iy: np.ndarray, ix: np.ndarray) -> np.ndarray:
    """Which cells (centres iy, ix) lie inside a random cluster outline: a wobbly circle,
    centred inside the centre region for label 1, in the outer ring for label 0."""
    if label:
        cy, cx = d.uni(36.0, 60.0), d.uni(36.0, 60.0)
        radius = d.uni(13.0, 50.0)
    else:
        # a centre in the outer ring: pick a side, then a position along it
        radius = d.uni(10.0, 30.0)
        side = d.index(4)
        along = d.uni(-10.0, 105.0)
        across = d.uni(-12.0, 16.0)
        cy, cx = [(across, along), (95 - across, along), (along, across), (along, 95 - across)][side]
    dy, dx = iy - cy, ix - cx
    phi = np.arctan2(dy, dx)
    a2, a3 = d.uni(0.0, 0.3), d.uni(0.0, 0.2)
    p2, p3 = d.uni(0, TWO_PI), d.uni(0, TWO_PI)
    edge = radius * (1 + a2 * np.cos(2 * phi + p2) + a3 * np.cos(3 * phi + p3))
    return np.hypot(dy, dx) < edge


def _cluster(d: Draws, label: int) -> tuple[TumourCarpet, int, np.ndarray] | None:
    """A cohesive cluster of tumour cells: (carpet, first row, which of the
    carpet's cells (+ none) belong to the cluster), or None; the patch shows
    the carpet's rows first row .. first row + 95.

    For label 1 the cluster is centred inside the centre region and a cell is
    centred on a pixel of it; for label 0 it is placed off-centre and every
    cell whose pixels could reach within `NEG_MARGIN` px of the centre region
    is removed.
    """
    c = tumour_carpet(d.index(N_TUMOUR_CARPETS))  # crowded cells: high nuclear/cytoplasm ratio
    o = d.index(TUMOUR_ROWS - PATCH_SIZE + 1)
    i0, i1 = int(c.start[o]), int(c.start[o + PATCH_SIZE + 2 * c.ext])  # cells that reach rows o .. o + 95
    iy, ix = c.row[i0:i1] - o, c.col[i0:i1]
    dist = dist_to_centre(iy, ix)
    if label:
        central = (dist == 0) & c.solid[i0:i1]
    else:  # (+1: the rounding slack the exact reach does without)
        central = dist > c.reach[i0:i1] + (1.0 + NEG_MARGIN)
    for _ in range(20):
        inside = _outline(d, label, iy, ix)
        if label:
            if (inside & central).any():  # a cell sits well inside the centre region
                break
        else:
            inside &= central
            if inside.any():
                break
    else:
        if not label:
            return None
        # practically unreachable: a single cell centred in the centre region
        inside = np.zeros(len(iy), bool)
        inside[np.flatnonzero(central)[:1]] = True
    keep = np.zeros(c.none + 1, bool)
    keep[i0:i1] = inside
    return c, o, keep


@dataclasses.dataclass(frozen=True)
class Tumour:
    """The tumour cells of a patch: the carpet rows it shows and the cells it keeps, their
    coverage (``q``: times 1 + a faint border inside the outline; ``cov``: clipped to 1), the
    tumour mask (coverage > 0.5), and a soft neighbourhood (``near``, ``far = 1 - near``)."""

    carpet: TumourCarpet
    rows: slice
    kept: np.ndarray  # (cells + 1,) bool
    q: np.ndarray
    cov: np.ndarray
    mask: np.ndarray
    near: np.ndarray
    far: np.ndarray


def place(d: Draws, label: int) -> Tumour | None:
    """The tumour cells of a patch with this label (always for 1; for 0 with probability
    P_NEG_WITH_TUMOUR, outside the centre), or None."""
    if not label and not d.chance(P_NEG_WITH_TUMOUR):
        return None
    cluster = _cluster(d, label)
    if cluster is None:
        return None
    carpet, o, kept = cluster
    rows = slice(o, o + PATCH_SIZE)
    q = carpet.cov[rows] * np.take(kept, carpet.owner[rows])
    np.maximum(q, carpet.cov2[rows] * np.take(kept, carpet.owner2[rows]), out=q)
    cov = np.minimum(q, 1.0)
    # Metastases grow in lymphoid tissue: no fat, glass or lumen right next
    # to them (a soft dilation of the tumour, smooth: at quarter resolution).
    a, m = near_matrices()
    near = m @ (a @ cov @ a.T) @ m.T
    near *= 2.0
    np.clip(near, 0.0, 1.0, out=near)
    return Tumour(carpet, rows, kept, q, cov, q > 0.5, near, 1.0 - near)


def paint(d: Draws, stain: Stain, tumour: Tumour, fine: np.ndarray) -> None:
    """Tumour cytoplasm (pink, amphophilic, a faint border) over the stain, and the nuclei
    (offset in the cell, vesicular, with nucleoli that take up a little eosin too)."""
    h_map, e_map = stain.h, stain.e
    cyto_e = d.uni(0.25, 0.65)
    cyto_h = d.uni(0.05, 0.22)  # amphophilic cytoplasm
    # e = e * (1 - cov) + cov * cyto_e * (1 + border + 0.1 fine), 1 + border = max(q, 1)
    t = np.maximum(tumour.q, 1.0)
    t += fine * 0.1
    t *= cyto_e
    t -= e_map
    t *= tumour.cov
    e_map += t
    t = cyto_h - h_map
    t *= tumour.cov
    h_map += t
    carpet, rows = tumour.carpet, tumour.rows
    kept = np.take(tumour.kept, carpet.nucleus_owner[rows])
    h_inner = stain.nuclei_inner()
    np.maximum(h_inner, carpet.nucleus[rows] * kept, out=h_inner)
    e_map += carpet.nucleolus_e[rows] * kept


def warm_up() -> None:
    """Build every tumour table now rather than on a patch's first use of it."""
    for i in range(N_TUMOUR_CARPETS):
        tumour_carpet(i)
    near_matrices()
