"""The tissue around the tumour, one component at a time: glass edge, fat, stroma, sinus
histiocytes, vessels, lymphoid tissue, and the chromatin of every nucleus.

Which components appear, where, and how much of the patch they cover is drawn per patch,
independently of the label, so background tissue and global colour do not give the label away.

* lymphoid tissue: small (radius ~3 px), round, dark nuclei of lymphocytes, closely packed on
  a faintly stained background, with occasional larger paler nuclei (germinal-centre cells);
* sinus histiocytes: pink cytoplasm with scattered pale, oval, slightly larger nuclei and no
  nucleoli -- the classic mimic of a metastasis, with about the same mean colour;
* fibrous stroma: wavy pink collagen fibres with sparse thin spindle nuclei;
* fat: adipocytes, i.e. large white polygons bounded by thin pink membranes;
* vessels: a white lumen, sometimes filled with red cells, with a pink wall and flat
  endothelial nuclei;
* tissue edges: part of the patch is empty glass (white).

Fat, glass and lumens keep clear of the tumour (metastases grow in lymphoid tissue), and a few
lymphocytes infiltrate it. Each function paints in place and draws from the patch's stream in
a fixed order (see :func:`hcdtf.synthetic.patch.generate_patch`).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from hcdtf.synthetic.carpets import CARPET_ROWS, N_HISTIO_CARPETS, N_LYMPH_CARPETS, carpet, density_map, thin
from hcdtf.synthetic.draws import Draws
from hcdtf.synthetic.geometry import PATCH_SIZE, TWO_PI, axis
from hcdtf.synthetic.optics import Stain
from hcdtf.synthetic.stamps import bank, spindles, stamp
from hcdtf.synthetic.textures import fat as fat_texture
from hcdtf.synthetic.textures import field, grain_table, noise, region
from hcdtf.synthetic.tumour import Tumour


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where the tissue components lie: soft maps in [0, 1] over the patch, None if absent."""

    edge: np.ndarray | None  # 1 on tissue, 0 on empty glass
    fat: np.ndarray | None
    stroma: np.ndarray | None
    histiocytes: np.ndarray | None  # (in lymphoid tissue: not on stroma or fat)


@dataclasses.dataclass(frozen=True)
class Vessel:
    """A vessel's lumen (soft map) and its endothelial nuclei (centres and angle)."""

    lumen: np.ndarray
    iy: np.ndarray
    ix: np.ndarray
    angle: float


def layout(d: Draws, tumour: Tumour | None) -> Layout:
    """Draw which components the patch has and where (most patches have one or two)."""
    edge = glass_edge(d, tumour)
    fat = fat_region(d, tumour)
    stroma = stroma_region(d)
    return Layout(edge, fat, stroma, histiocyte_region(d, stroma, fat))


def glass_edge(d: Draws, tumour: Tumour | None) -> np.ndarray | None:
    """A tissue edge (in 18% of patches): 1 on tissue, 0 on glass, a wavy line between."""
    if not d.chance(0.18):
        return None
    ax = axis()
    ang = d.uni(0, TWO_PI)
    off = d.uni(-40.0, 40.0)
    # clip(signed distance / 2 + 0.5), the edge made wavy by a smooth field
    edge = np.add.outer(ax * (0.5 * math.sin(ang)), ax * (0.5 * math.cos(ang)) + (0.5 - 0.5 * off))
    edge += field(d, 4) * 3.0
    np.clip(edge, 0.0, 1.0, out=edge)
    if tumour is not None:
        np.maximum(edge, tumour.near, out=edge)
    return edge


def fat_region(d: Draws, tumour: Tumour | None) -> np.ndarray | None:
    """Fat (in 22% of patches): all of the patch or 20-70% of it in blobs."""
    if not d.chance(0.22):
        return None
    fat = region(d, 1.0 if d.chance(0.2) else d.uni(0.2, 0.7), k=4, sharp=6.0)
    if tumour is not None:
        fat *= tumour.far
    return fat


def stroma_region(d: Draws) -> np.ndarray | None:
    """Fibrous stroma (in 35% of patches), over 15-80% of the patch."""
    if not d.chance(0.35):
        return None
    return region(d, d.uni(0.15, 0.8), k=5, sharp=3.0)


def histiocyte_region(d: Draws, stroma: np.ndarray | None, fat: np.ndarray | None) -> np.ndarray | None:
    """Sinus histiocytes (in 35% of patches), loosely arranged, in lymphoid tissue only."""
    if not d.chance(0.35):
        return None
    histio = region(d, d.uni(0.2, 1.0), k=4, sharp=3.0)
    if stroma is not None:
        histio *= 1.0 - stroma
    if fat is not None:
        histio *= 1.0 - fat
    return histio


def background(d: Draws, stain: Stain, histiocytes: np.ndarray | None) -> np.ndarray:
    """The stain between the nuclei, with the histiocytes' pink cytoplasm; returns the
    pixel-scale texture (unit variance) that later components reuse."""
    h_map, e_map = stain.h, stain.e
    fine = noise(d, PATCH_SIZE, PATCH_SIZE)
    e0 = d.uni(0.25, 0.55)
    np.multiply(field(d, 6), 0.15 * e0, out=e_map)
    e_map += fine * (0.12 * e0)
    e_map += e0
    h0 = d.uni(0.08, 0.25)
    np.multiply(fine, 0.2 * h0, out=h_map)
    h_map += h0
    if histiocytes is not None:
        c = d.uni(0.35, 0.7)
        t = fine * (0.1 * c)
        t += c
        t -= e_map
        t *= histiocytes
        e_map += t
    return fine


def collagen(d: Draws, stain: Stain, stroma: np.ndarray, fine: np.ndarray, angle: float) -> None:
    """Stroma: wavy pink collagen fibres along (x, y) = (cos angle, sin angle), little H."""
    ax = axis()
    w = TWO_PI / d.uni(3.0, 6.0)
    sa, ca = math.sin(angle) * w, math.cos(angle) * w
    # phase = 2 pi * across / period + 0.5 sin(along / period) + 3 * field,
    # sin(along / period) by the addition formula (outer products of rows and columns)
    ys, xs = ax * (sa / TWO_PI), ax * (ca / TWO_PI)
    phase = np.outer(np.sin(ys), np.cos(xs))
    phase += np.outer(np.cos(ys), np.sin(xs))
    phase *= 0.5
    phase += np.add.outer(ax * ca, ax * -sa)
    phase += field(d, 6) * 3.0
    fibres = np.sin(phase, out=phase)
    a = d.uni(0.5, 0.9)
    e_str = field(d, 8) * (0.4 * 0.12 * a)
    e_str += 0.6 * 0.12 * a
    e_str *= fibres
    e_str += fine * (0.1 * 0.88 * a)
    e_str += 0.88 * a
    e_str -= stain.e
    e_str *= stroma
    stain.e += e_str
    t = 0.05 - stain.h
    t *= stroma
    stain.h += t


def adipocytes(d: Draws, stain: Stain, fat: np.ndarray) -> None:
    """Fat: thin pink membranes between large empty cells."""
    membrane = fat_texture(d, d.uni(12.0, 24.0)) * d.uni(0.5, 0.9)
    t = membrane - stain.e
    t *= fat
    stain.e += t
    membrane *= 0.1
    membrane -= stain.h
    membrane *= fat
    stain.h += membrane


def vessel(d: Draws, stain: Stain, tumour: Tumour | None) -> Vessel | None:
    """A vessel (in 15% of patches): a white lumen (half of them full of red cells) in a pink
    wall, straight across the patch, kept clear of the tumour."""
    if not d.chance(0.15):
        return None
    ax = axis()
    ang = d.uni(0, math.pi)  # along (x, y) = (cos ang, sin ang)
    c0y, c0x = d.uni(10, 86) - 47.5, d.uni(10, 86) - 47.5
    dist = np.add.outer((ax - c0y) * math.cos(ang), (ax - c0x) * -math.sin(ang))
    np.abs(dist, out=dist)
    dist += field(d, 4) * 2.0
    width = d.uni(3.0, 10.0)
    lumen = np.clip(width + 0.5 - dist, 0, 1)
    if tumour is not None:
        lumen *= tumour.far
    dist *= -1.0
    dist += width + d.uni(2.0, 4.0) + 0.5
    wall = np.clip(dist, 0, 1, out=dist)
    wall -= lumen
    rbc = d.chance(0.5)
    rest = 1.0 - lumen
    rest -= wall
    stain.e *= rest
    stain.e += wall * d.uni(0.7, 1.1)
    stain.e += lumen * (d.uni(0.9, 1.4) if rbc else 0.02)
    stain.h *= rest
    stain.h += wall * 0.05
    iy, ix = _endothelial_sites(d, c0y + 47.5, c0x + 47.5, ang, width)
    return Vessel(lumen, iy, ix, ang)


def _endothelial_sites(d: Draws, cy: float, cx: float, ang: float, width: float) -> tuple[np.ndarray, np.ndarray]:
    """Centres of 2-6 flat endothelial nuclei along both walls of a vessel."""
    k = 2 + d.index(5)
    t = np.array([d.uni(-70, 70) for _ in range(k)])
    sgn = np.array([1.0 if d.chance(0.5) else -1.0 for _ in range(k)])
    return (
        np.rint(cy + t * math.sin(ang) + sgn * (width + 1.0) * math.cos(ang)).astype(np.intp),
        np.rint(cx + t * math.cos(ang) - sgn * (width + 1.0) * math.sin(ang)).astype(np.intp),
    )


def clear_glass(stain: Stain, edge: np.ndarray) -> None:
    """No stain at all on the glass beyond a tissue edge."""
    stain.e *= edge
    stain.h *= edge


def room_for_nuclei(vessel: Vessel | None, tumour: Tumour | None) -> np.ndarray | None:
    """Where small nuclei may lie (None: everywhere): not in a lumen, and in the tumour only
    sparsely (0.9 of its coverage excluded lets a few lymphocytes infiltrate it)."""
    lumen = None if vessel is None else vessel.lumen
    cov = None if tumour is None else tumour.cov
    if lumen is None and cov is None:
        return None
    taken = lumen if cov is None else (0.9 * cov if lumen is None else np.maximum(lumen, 0.9 * cov))
    return 1.0 - taken


def _lymphoid_density(d: Draws, where: Layout, free: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(padded, inner) density map of lymphocytes: smooth, lower among histiocytes, none on
    stroma, fat, glass or where `free` excludes them."""
    a = d.uni(0.55, 1.0)
    padded, density = density_map()
    np.multiply(field(d, 4), 0.2 * a, out=density)
    density += a
    np.clip(density, 0.6 * a, 1.3 * a, out=density)
    for other in (where.stroma, where.fat):  # lymphoid tissue only
        if other is not None:
            density *= 1.0 - other
    if where.histiocytes is not None:  # fewer lymphocytes among histiocytes
        density *= 1.0 - 0.75 * where.histiocytes
    for room in (where.edge, free):
        if room is not None:
            density *= room
    return padded, density


def lymphoid(d: Draws, stain: Stain, where: Layout, free: np.ndarray | None) -> None:
    """Lymphocytes (a thinned carpet), a fraction of them drawn instead as larger, paler, oval
    nuclei (germinal-centre cells and histiocytes, not tumour)."""
    size = PATCH_SIZE
    padded, density = _lymphoid_density(d, where, free)
    c = carpet("lymphocyte", d.index(N_LYMPH_CARPETS))
    o = d.index(CARPET_ROWS - size + 1)
    keep, at_centre = thin(c, o, padded)
    # the large ones replace a fraction p_big of the lymphocytes (those with the lowest keys)
    p_big = d.uni(0.03, 0.2) if d.chance(0.4) else 0.02
    at_centre *= p_big
    keep &= c.key[o : o + size] >= at_centre
    i0, i1 = int(c.start[o]), int(c.start[o + size])
    iy, ix = c.row[i0:i1] - o, c.col[i0:i1]
    big = np.flatnonzero(c.keys[i0:i1] < np.take(density, iy * size + ix) * p_big)
    if len(big):
        j = big + i0
        stamp(stain.nuclei, bank("large"), c.large[j], iy[big], ix[big], c.large_amp[j])
    h_inner = stain.nuclei_inner()
    np.maximum(h_inner, c.value[o : o + size] * keep, out=h_inner)  # (a product, not where=keep: faster)


def histiocyte_nuclei(d: Draws, stain: Stain, where: Layout, free: np.ndarray | None) -> None:
    """The histiocytes' nuclei: a thinned carpet of pale oval nuclei."""
    assert where.histiocytes is not None
    padded, density = density_map()
    np.multiply(where.histiocytes, 0.85, out=density)
    for room in (where.edge, free):
        if room is not None:
            density *= room
    c = carpet("histiocyte", d.index(N_HISTIO_CARPETS))
    o = d.index(CARPET_ROWS - PATCH_SIZE + 1)
    keep, _ = thin(c, o, padded)
    h_inner = stain.nuclei_inner()
    np.maximum(h_inner, c.value[o : o + PATCH_SIZE] * keep, out=h_inner)


def fibroblasts(d: Draws, stain: Stain, where: Layout, free: np.ndarray | None, angle: float) -> None:
    """6-21 candidate thin spindle nuclei along the fibres, kept where the stroma is."""
    assert where.stroma is not None
    m = 6 + d.index(16)
    u = d.rng.random((6, m), dtype=np.float32)
    iy, ix = (u[0] * 96).astype(np.intp), (u[1] * 96).astype(np.intp)
    p = where.stroma[iy, ix]
    if free is not None:
        p *= free[iy, ix]
    if where.fat is not None:
        p *= 1.0 - where.fat[iy, ix]
    if where.edge is not None:
        p *= where.edge[iy, ix]
    keep = u[2] < p
    u = u[3:, keep]
    th = angle + 0.15 * math.sqrt(3.0) * (2 * u[2] - 1)  # sd 0.15 around the fibres
    spindles(stain.nuclei, iy[keep], ix[keep], (u[0] * 8).astype(np.intp), (u[1] * 4).astype(np.intp), th, 1.8)


def endothelium(d: Draws, stain: Stain, vessel: Vessel) -> None:
    """Flat endothelial nuclei on the vessel walls (those near enough to show)."""
    near_patch = (vessel.iy >= -8) & (vessel.iy < PATCH_SIZE + 8) & (vessel.ix >= -8) & (vessel.ix < PATCH_SIZE + 8)
    iy, ix = vessel.iy[near_patch], vessel.ix[near_patch]
    m = len(iy)
    long = (d.rng.random(m) * 5).astype(np.intp)  # 3.5 .. 5.5 px
    spindles(stain.nuclei, iy, ix, long, np.ones(m, np.intp), np.full(m, vessel.angle), 1.7)


def chromatin(d: Draws, stain: Stain) -> None:
    """Every nucleus' chromatin grain, then the nuclei over the background stain."""
    t = noise(d, PATCH_SIZE, PATCH_SIZE, table=grain_table()) * stain.nuclei_inner()
    np.maximum(stain.h, t, out=stain.h)
