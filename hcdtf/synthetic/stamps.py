"""Stamps: pre-rendered nuclei and cell bodies of each kind (banks), and stamping them onto a patch.

A bank holds anti-aliased ellipses with irregular outlines, in fine steps of size with several
shapes and orientations per size, rendered once per process (see :mod:`tables`). A patch
picks stamps by radius and stamps them with one vectorised ``np.maximum.at`` per kind.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

from hcdtf.synthetic.geometry import PAD, PW, TWO_PI, window
from hcdtf.synthetic.tables import TABLE_SEED, lookup_table


@dataclasses.dataclass(frozen=True)
class Bank:
    """Pre-rendered stamps of one kind of nucleus or cell.

    Stamps come in ``n_r`` radius bins ``r0 + step * i`` with ``variants``
    shapes (elongation, orientation, outline) each: stamp ``s = i * variants + v``.
    ``windows[h]`` = (values (S, (2h+1)^2), offsets ((2h+1)^2,)) holds every
    stamp on a (2h+1)^2 window centred on its middle pixel, for each h from
    the smallest to the largest half-width a stamp needs (``need[s]``), so a
    patch whose cells are small only moves small windows; ``extra`` holds an
    optional second channel (on the largest window).
    """

    windows: dict[int, tuple[np.ndarray, np.ndarray]]
    need: np.ndarray  # (S,) half-width of the smallest window holding stamp s
    reach: np.ndarray  # (S,) farthest distance (px) of a pixel with value > 0.5
    r0: float
    step: float
    n_r: int
    variants: int
    extra: np.ndarray | None = None

    def pick(self, r: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Stamp indices for radii `r` and variant choices `u` in [0, 1)."""
        i = np.minimum(np.maximum(((r - self.r0) * (1.0 / self.step) + 0.5).astype(np.intp), 0), self.n_r - 1)
        return i * self.variants + np.minimum((u * self.variants).astype(np.intp), self.variants - 1)


def ellipses(
    half: int,
    ry: np.ndarray,
    rx: np.ndarray,
    theta: np.ndarray,
    irregular: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Anti-aliased coverage and normalised radius (1 on the outline) of S
    ellipses on (2*half+1)^2 windows centred on their middle pixel.

    Axis rx lies along (x, y) = (cos theta, sin theta).  ``irregular`` =
    (a2, p2, a3, p3) modulates the radius by 2nd and 3rd angular harmonics.
    """
    oy, ox = (g.astype(np.float64) for g in window(half))
    c, s = np.cos(theta)[:, None], np.sin(theta)[:, None]
    u = (ox * c + oy * s) / rx[:, None]
    v = (oy * c - ox * s) / ry[:, None]
    rr = np.sqrt(u * u + v * v)
    if irregular is not None:
        a2, p2, a3, p3 = (q[:, None] for q in irregular)
        phi = np.arctan2(v, u)
        rr = rr / (1.0 + a2 * np.cos(2 * phi + p2) + a3 * np.cos(3 * phi + p3))
    cov = np.clip((1.0 - rr) * (0.5 * (rx + ry))[:, None] + 0.5, 0.0, 1.0)
    return cov, rr


def make_bank(
    value: np.ndarray,
    half: int,
    bins: tuple[float, float, int],
    variants: int,
    extra: np.ndarray | None = None,
) -> Bank:
    """A bank from stamps rendered on (2*half+1)^2 windows (which must hold them)."""
    oy, ox = window(half)
    assert value.shape == (bins[2] * variants, len(oy))
    cheb = np.maximum(np.abs(oy), np.abs(ox))
    need = np.where(value != 0, cheb[None, :], 0).max(axis=1)
    if need.max() >= half:  # the window must hold the stamp
        raise AssertionError(f"stamp window {half} does not fit stamps of half-width {need.max()}")
    reach = np.where(value > 0.5, np.hypot(oy, ox)[None, :], 0.0).max(axis=1)
    windows = {}
    for h in range(int(need.min()), int(need.max()) + 1):
        sel = cheb <= h
        windows[h] = (np.ascontiguousarray(value[:, sel], dtype=np.float32), (oy[sel] * PW + ox[sel]).astype(np.intp))

    largest = cheb <= need.max()
    return Bank(
        windows=windows,
        need=need.astype(np.intp),
        reach=reach.astype(np.float32),
        r0=bins[0],
        step=bins[1],
        n_r=bins[2],
        variants=variants,
        extra=None if extra is None else np.ascontiguousarray(extra[:, largest], dtype=np.float32),
    )


def _radii(r0: float, step: float, n: int, v: int) -> np.ndarray:
    return np.repeat(r0 + step * np.arange(n), v)


def _lymphoid(kind: str, rng: np.random.Generator) -> Bank:
    """Round-to-oval dark nuclei of lymphocytes (`large`: germinal-centre cells)."""
    bins, v, half = ((2.0, 0.1, 21), 12, 6) if kind == "lymphocyte" else ((2.6, 0.2, 20), 12, 8)
    r = _radii(*bins, v)
    ry = r * rng.uniform(0.8, 1.0, len(r))
    cov, _ = ellipses(half, ry, r, rng.uniform(0, math.pi, len(r)))
    return make_bank(cov, half, bins, v)


def _histiocyte(kind: str, rng: np.random.Generator) -> Bank:
    """Pale, oval, slightly kidney-shaped nuclei of sinus histiocytes."""
    bins, v, half = (2.6, 0.1, 13), 16, 6
    r = _radii(*bins, v)
    m = len(r)
    irr = (np.full(m, 0.15), rng.uniform(0, TWO_PI, m), np.zeros(m), np.zeros(m))
    cov, _ = ellipses(half, r * rng.uniform(0.55, 0.85, m), r, rng.uniform(0, math.pi, m), irr)
    return make_bank(cov, half, bins, v)


def _spindle(kind: str, rng: np.random.Generator) -> Bank:
    """Thin elongated nuclei (fibroblasts, endothelium): radius bins are the long axis; a
    variant is (short axis 1.1..1.7 px) x (24 orientations)."""
    bins, half = (3.5, 0.5, 8), 9
    n_ry, n_th = 4, 24
    v = n_ry * n_th
    rx = _radii(*bins, v)
    ry = np.tile(np.repeat(1.1 + 0.2 * np.arange(n_ry), n_th), bins[2])
    th = np.tile(math.pi * np.arange(n_th) / n_th, bins[2] * n_ry)
    cov, _ = ellipses(half, ry, rx, th)
    return make_bank(cov, half, bins, v)


def _tumour_cell(kind: str, rng: np.random.Generator) -> Bank:
    """Cell bodies of tumour cells: coverage * (1 + a little more eosin near the outline)."""
    bins, v, half = (6.0, 0.2, 24), 8, 13
    r = _radii(*bins, v)
    m = len(r)
    irr = (np.full(m, 0.072), rng.uniform(0, TWO_PI, m), np.full(m, 0.048), rng.uniform(0, TWO_PI, m))
    cov, rr = ellipses(half, r * rng.uniform(0.9, 1.0, m), r, rng.uniform(0, math.pi, m), irr)
    return make_bank(cov * (1.0 + 0.8 * np.clip(rr - 0.8, 0.0, 0.2)), half, bins, v)


def _tumour_nucleus(kind: str, rng: np.random.Generator) -> Bank:
    """Large, irregular, vesicular nuclei: pale centre, dark rim, coarse chromatin, and 1-2
    prominent nucleoli (dark magenta: `extra` holds their coverage, for the eosin they take up)."""
    bins, v, half = (3.0, 0.2, 21), 12, 10
    r = _radii(*bins, v)
    m = len(r)
    irr = (rng.uniform(0.0, 0.15, m), rng.uniform(0, TWO_PI, m), rng.uniform(0.0, 0.1, m), rng.uniform(0, TWO_PI, m))
    elong = rng.uniform(0.75, 1.0, m)
    cov, rr = ellipses(half, r * elong, r, rng.uniform(0, math.pi, m), irr)
    rim = np.clip((rr - 0.55) / 0.35, 0.0, 1.0)
    chromatin = 1.0 + 0.2 * (rng.random(cov.shape) - 0.5) * math.sqrt(12.0)
    oy, ox = window(half)
    nucleoli = np.zeros_like(cov)
    for j in range(2):
        ang = rng.uniform(0, TWO_PI, m)
        rad = rng.uniform(0.0, 0.4, m) * r * elong
        rn = rng.uniform(1.0, 1.7, m)[:, None]
        dist = np.hypot(oy - (rad * np.sin(ang))[:, None], ox - (rad * np.cos(ang))[:, None])
        one = np.clip(rn - dist + 0.5, 0.0, 1.0)
        if j:  # a second nucleolus in half of the nuclei
            one *= (rng.random(m) < 0.5)[:, None]
        nucleoli = np.maximum(nucleoli, one)
    value = np.maximum(cov * (0.45 + 0.6 * rim) * chromatin, 1.7 * nucleoli)
    return make_bank(value, half, bins, v, extra=nucleoli)


_BUILDERS: dict[str, Callable[[str, np.random.Generator], Bank]] = {
    "lymphocyte": _lymphoid,
    "large": _lymphoid,
    "histiocyte": _histiocyte,
    "spindle": _spindle,
    "tumour_cell": _tumour_cell,
    "tumour_nucleus": _tumour_nucleus,
}
BANKS = tuple(_BUILDERS)  # (the order seeds each bank's table)


@lookup_table
def bank(kind: str) -> Bank:
    """The stamps of one kind of cell (built on first use, from a fixed seed)."""
    rng = np.random.default_rng([TABLE_SEED, 4, BANKS.index(kind)])
    return _BUILDERS[kind](kind, rng)


def stamp(
    canvas: np.ndarray,
    bank: Bank,
    s: np.ndarray,
    iy: np.ndarray,
    ix: np.ndarray,
    amp: np.ndarray | float | None = None,
) -> None:
    """canvas = max(canvas, stamps) for stamps `s` of `bank` centred on pixels
    (iy, ix) of the patch, scaled by `amp`; `canvas` is a padded (PW, PW) canvas.

    Centres must lie at most PAD - half px outside the patch (so that the
    stamps stay inside the canvas)."""
    h = int(bank.need[s].max()) if len(s) else 0
    if not h:
        return
    values, off = bank.windows[h]
    base = iy * PW
    base += ix
    base += PAD * PW + PAD
    v = values[s]
    if isinstance(amp, np.ndarray):
        v *= amp[:, None]
    elif amp is not None:
        v *= amp
    np.maximum.at(canvas.reshape(-1), (base[:, None] + off).reshape(-1), v.reshape(-1))


def spindles(
    canvas: np.ndarray,
    iy: np.ndarray,
    ix: np.ndarray,
    long: np.ndarray,
    short: np.ndarray,
    theta: np.ndarray,
    amp: float,
) -> None:
    """Stamp thin spindle nuclei: long axis 3.5 + 0.5 * `long` px (0..7) along
    angle `theta`, short axis 1.1 + 0.2 * `short` px (0..3)."""
    sb = bank("spindle")
    n_th = sb.variants // 4  # orientations per (long, short) axis pair
    k = ((theta + math.pi) * (n_th / math.pi) + 0.5).astype(np.intp)  # (theta > -pi)
    k %= n_th
    stamp(canvas, sb, (long * 4 + short) * n_th + k, iy, ix, amp)


def warm_up() -> None:
    """Build every bank now rather than on a patch's first use of it."""
    for kind in BANKS:
        bank(kind)
