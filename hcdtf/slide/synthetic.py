"""Synthetic whole-slide images with known tumour: pyramidal Aperio SVS files, ASAP XML
annotations and a Camelyon16-style ``reference.csv``, for tests, the demo and benchmarks.

A slide is rendered at the model's resolution (0.972 um/px, PCam's level 2) as a grid of 96x96
tiles drawn by the synthetic H&E patch renderer (:func:`hcdtf.synthetic.generate_patch`): tissue
islands with wavy outlines on white glass; inside them, normal lymph-node tissue (tiles without
any tumour cell) and, on tumour slides, metastases of several sizes at known places, made of
tiles filled with tumour cells (the clusters of five tumour patches pasted together). One metastasis per tumour slide is a single tile, smaller than
200 um: an isolated tumour cell cluster (ITC) in Camelyon16's protocol. Level 0 (0.243 um/px,
the 40x of Camelyon16) is the rendering enlarged 4x, so reading level 1 gives back the
rendered pixels exactly; the pyramid has downsamples 1, 4, 16 (and 64 on large slides), in
zlib-compressed 256x256 tiles, streamed to the file so that level 0 is never held in memory.

The annotation of a metastasis outlines its tumour cells as a pathologist would: the union of
its tiles' tumour-cell masks, closed over 48 um gaps, traced as a polygon in level-0 px.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import time
from typing import Callable, Iterator

import numpy as np

LEVEL0_MPP = 0.243
RENDER_DOWNSAMPLE = 4                 # level-0 px per rendered px: 0.972 um/px
PATCH = 96                            # the renderer's tile
TIFF_TILE = 256
LR = 4                                # rendered px per cell of the low-resolution tumour mask
GLASS = np.array([243, 242, 240], np.float32)
DEFAULT_SIZE = (2048, 1536)           # rendered px (width, height): 2.0 x 1.5 mm


@dataclasses.dataclass(frozen=True)
class SlideSpec:
    name: str
    width: int                        # rendered px, multiple of 96
    height: int
    tumour: bool
    islands: tuple                    # (cx, cy, a, b, phase) in rendered px
    lesions: tuple                    # (tile row, tile col, radius in tiles); radius 0: one tile
    seed: int
    index: int = 0


def _islands(rng: np.random.Generator, w: int, h: int) -> tuple:
    k = int(rng.integers(1, 3))
    out = []
    for n in range(k):
        cx = w * ((n + 0.5) / k + rng.uniform(-0.05, 0.05))
        cy = h * rng.uniform(0.42, 0.58)
        out.append((cx, cy, w / k * rng.uniform(0.36, 0.44), h * rng.uniform(0.32, 0.42), rng.uniform(0, 6.3)))
    return tuple(out)


def _tissue(spec: SlideSpec, y0: int, x0: int, n: int = PATCH) -> np.ndarray:
    """bool [n, n]: tissue pixels of the rendered tile whose top-left pixel is (y0, x0)."""
    yy, xx = np.mgrid[y0:y0 + n, x0:x0 + n].astype(np.float32) + 0.5
    inside = np.zeros((n, n), bool)
    for cx, cy, a, b, ph in spec.islands:
        dx, dy = (xx - cx) / a, (yy - cy) / b
        th = np.arctan2(dy, dx)
        edge = 1.0 + 0.07 * np.sin(3 * th + ph) + 0.04 * np.sin(7 * th + 2 * ph)
        inside |= dx * dx + dy * dy < edge * edge
    return inside


def _lesions(rng: np.random.Generator, spec_wo: SlideSpec, metastases: str = "three") -> tuple:
    """Metastases at tiles fully inside tissue, apart from each other. ``three``: large, medium, one
    ITC. ``varied``: 1-3 of sizes drawn per slide, the largest from a single tile (an ITC-only slide)
    to about a quarter of the slide's shorter side, so tumour slides range from easy to hard."""
    rows, cols = spec_wo.height // PATCH, spec_wo.width // PATCH
    inside = [(i, j) for i in range(rows) for j in range(cols)
              if _tissue(spec_wo, i * PATCH, j * PATCH).all()]
    if not inside:  # tiny slides of thin islands: tiles at least half tissue (tumour cells are cut to the tissue)
        inside = [(i, j) for i in range(rows) for j in range(cols)
                  if _tissue(spec_wo, i * PATCH, j * PATCH).mean() >= 0.5]
    if not inside:
        raise ValueError(f"{spec_wo.name}: too little tissue for a metastasis; use a larger --width/--height")
    inside_set = set(inside)
    cap = max(1.0, min(rows, cols) / 5.0)  # small slides get smaller metastases
    if metastases == "varied":
        largest = float(rng.uniform(0.0, max(1.5, min(rows, cols) / 4.0)))
        radii = [largest] + [float(rng.uniform(0.0, largest)) for _ in range(int(rng.integers(0, 3)))]
        radii = [r if r >= 0.75 else 0.0 for r in radii]  # under 0.75 tiles: one tile
    else:
        radii = [min(cap, float(rng.uniform(2.2, 3.2))), min(cap, float(rng.uniform(1.2, 1.8))), 0.0]
    chosen: list = []
    for n, want in enumerate(radii):
        tries = [want, 0.75 * want, 0.5 * want, 1.0] if want else [0.0]
        if metastases == "varied" and n == 0 and want:
            tries.append(None)  # a tumour slide keeps at least one metastasis: one tile if nothing larger fits
        for r in tries:
            place = _place(rng, inside, inside_set, chosen, 0.0 if r is None else max(r, 1.0 if want else 0.0))
            if place is not None:
                chosen.append(place)
                break
    return tuple(chosen)


def _place(rng, inside, inside_set, chosen, r):
    """(row, col, r) of a tile whose disc of radius r is inside tissue and apart from ``chosen``."""
    for _ in range(200):
        i, j = inside[int(rng.integers(len(inside)))]
        apart = all(math.hypot(i - a, j - b) > r + rb + 2.5 for a, b, rb in chosen)
        ends = ((int(round(i + di)), int(round(j + dj))) for di, dj in ((r, 0), (-r, 0), (0, r), (0, -r)))
        if apart and all(e in inside_set for e in ends):
            return i, j, r
    return None


METASTASES = ("three", "varied")      # --metastases: the plan of a tumour slide's metastases
LAYOUTS = ("flat", "camelyon16")       # --layout: where the files go (see write_slides)


def is_tumour(k: int, fraction: float = 0.5) -> bool:
    """Whether slide k (0-based) of a sample with ``fraction`` tumour slides has tumour: the first
    slide of every 1/fraction, so any n slides hold ceil(n * fraction) tumour slides, spread evenly
    (0.5: the even-numbered slides)."""
    return math.ceil(round((k + 1) * fraction, 9)) > math.ceil(round(k * fraction, 9))


def plan_slides(n: int, seed: int = 0, size: tuple[int, int] = DEFAULT_SIZE, tumour_fraction: float = 0.5,
                metastases: str = "three", first: int = 0) -> list[SlideSpec]:
    """Slides ``first`` .. ``first + n - 1``: slide k has tumour by :func:`is_tumour` (counted from
    ``first``), each its own random layout drawn from (seed, k). The defaults give the original
    sample: even-numbered tumour slides with three metastases each."""
    if not 0.0 <= tumour_fraction <= 1.0:
        raise ValueError(f"--tumour-fraction must be in [0, 1], got {tumour_fraction}")
    if metastases not in METASTASES:
        raise ValueError(f"--metastases must be one of {', '.join(METASTASES)}, got {metastases!r}")
    w, h = (max(PATCH * 4, int(s) // PATCH * PATCH) for s in size)
    specs = []
    for k in range(first, first + n):
        rng = np.random.default_rng([seed, k, 0x51DE])
        base = SlideSpec(f"slide_{k:03d}", w, h, is_tumour(k - first, tumour_fraction), _islands(rng, w, h), (),
                         seed, k)
        specs.append(dataclasses.replace(base, lesions=_lesions(rng, base, metastases) if base.tumour else ()))
    return specs


def tumour_tiles(spec: SlideSpec) -> dict[tuple[int, int], int]:
    """(tile row, tile col) -> index of the lesion it belongs to (a tile is one cell of ``slide embed
    --stride 96``'s grid at 0.972 um/px)."""
    out = {}
    for k, (ci, cj, r) in enumerate(spec.lesions):
        span = int(math.ceil(r))
        for i in range(ci - span, ci + span + 1):
            for j in range(cj - span, cj + span + 1):
                if math.hypot(i - ci, j - cj) <= r:
                    out[(i, j)] = k
    return out


def _normal_patch(rng: np.random.Generator) -> np.ndarray:
    from hcdtf.synthetic import generate_patch

    while True:  # the renderer puts tumour cells off-centre in 30% of negatives: none in normal tissue
        image, mask = generate_patch(rng, 0)
        if not mask.any():
            return image


def _tumour_patch(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A tile of a metastasis: a tumour patch with the clusters of four more pasted around its
    centre, so that tumour cells fill most of the tile (a lone patch has one cluster at its centre)."""
    from hcdtf.synthetic import generate_patch

    image, mask = generate_patch(rng, 1)
    image, mask = image.copy(), mask.copy()
    for dy, dx in ((-30, -30), (-30, 30), (30, -30), (30, 30)):
        other, cells = generate_patch(rng, 1)
        other, cells = np.roll(other, (dy, dx), axis=(0, 1)), np.roll(cells, (dy, dx), axis=(0, 1))
        image[cells] = other[cells]
        mask |= cells
    return image, mask


def render(spec: SlideSpec, bank: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [height, width, 3] rendered slide, bool [height / LR, width / LR] tumour cells).
    ``bank``: draw normal tissue from that many rendered tiles, cycled (fast, for huge slides)."""
    rows, cols = spec.height // PATCH, spec.width // PATCH
    canvas = np.empty((spec.height, spec.width, 3), np.uint8)
    tumour = np.zeros((spec.height // LR, spec.width // LR), bool)
    lesion_of = tumour_tiles(spec)
    glass_rng = np.random.default_rng([spec.seed, 7])
    glass = np.clip(GLASS + glass_rng.normal(0, 1.2, (PATCH, PATCH, 3)), 0, 255).astype(np.uint8)
    tiles = [_normal_patch(np.random.default_rng([spec.seed, 99, b])) for b in range(bank or 0)]
    for i in range(rows):
        for j in range(cols):
            y, x = i * PATCH, j * PATCH
            inside = _tissue(spec, y, x)
            if not inside.any():
                canvas[y:y + PATCH, x:x + PATCH] = glass
                continue
            rng = np.random.default_rng([spec.seed, spec.index, i, j])
            if (i, j) in lesion_of:
                image, mask = _tumour_patch(rng)
                m = mask & inside
                tumour[y // LR:(y + PATCH) // LR, x // LR:(x + PATCH) // LR] |= \
                    m.reshape(PATCH // LR, LR, PATCH // LR, LR).any(axis=(1, 3))
            else:
                image = tiles[(i * 7919 + j * 104729) % bank] if bank else _normal_patch(rng)
            canvas[y:y + PATCH, x:x + PATCH] = np.where(inside[..., None], image, glass)
    return canvas, tumour


def lesion_polygons(spec: SlideSpec, tumour: np.ndarray) -> list:
    """One tumour polygon per connected region of each lesion's closed tumour-cell mask (level-0 px)."""
    from scipy import ndimage
    from skimage import measure

    from hcdtf.slide.annotations import Polygon

    r = 12  # LR cells: 48 rendered px, 47 um
    polygons = []
    for ci, cj, rad in spec.lesions:
        span = int(math.ceil(rad)) + 1
        y0, x0 = max(0, (ci - span) * PATCH // LR), max(0, (cj - span) * PATCH // LR)
        y1, x1 = (ci + span + 1) * PATCH // LR, (cj + span + 1) * PATCH // LR
        sub = np.pad(tumour[y0:y1, x0:x1], r + 1)
        # closing by a disk of radius r: dilate, then erode, through distance transforms
        dilated = ndimage.distance_transform_edt(~sub) <= r
        closed = ndimage.binary_fill_holes(ndimage.distance_transform_edt(dilated) > r)
        for contour in measure.find_contours(closed.astype(np.float32), 0.5):
            contour = measure.approximate_polygon(contour, 0.5)
            if len(contour) < 4:
                continue
            ys = (contour[:-1, 0] - (r + 1) + y0 + 0.5) * LR * RENDER_DOWNSAMPLE
            xs = (contour[:-1, 1] - (r + 1) + x0 + 0.5) * LR * RENDER_DOWNSAMPLE
            polygons.append(Polygon("_0", np.stack([xs, ys], axis=1)))
    return polygons


# --------------------------------------------------------------------------- files
def _padded_tiles(image: np.ndarray, repeat: int = 1) -> Iterator[np.ndarray]:
    """256x256 tiles, raster order, of ``image`` enlarged ``repeat`` times (nearest), padded with glass."""
    t = TIFF_TILE // repeat
    h, w = image.shape[:2]
    for y in range(0, h, t):
        for x in range(0, w, t):
            block = image[y:y + t, x:x + t]
            if repeat > 1:
                block = block.repeat(repeat, axis=0).repeat(repeat, axis=1)
            if block.shape[:2] != (TIFF_TILE, TIFF_TILE):
                full = np.empty((TIFF_TILE, TIFF_TILE) + image.shape[2:], image.dtype)
                full[...] = GLASS.astype(image.dtype) if image.ndim == 3 else 0
                full[:block.shape[0], :block.shape[1]] = block
                block = full
            yield block


def _shrink(image: np.ndarray, k: int) -> np.ndarray:
    h, w = image.shape[0] // k * k, image.shape[1] // k * k
    x = image[:h, :w].reshape(h // k, k, w // k, k, -1).astype(np.float32).mean(axis=(1, 3))
    return np.rint(x).astype(np.uint8).reshape((h // k, w // k) + image.shape[2:])


def write_pyramid(path: str | os.PathLike, rendered: np.ndarray, mpp: float | None = LEVEL0_MPP,
                  aperio: bool = True) -> None:
    """Writes ``rendered`` (level 1 = level 0 / 4) as a tiled pyramidal TIFF (atomically): an
    Aperio SVS with ``MPP = mpp`` (``mpp=None``: none recorded), or a generic TIFF (masks)."""
    import tifffile

    path = pathlib.Path(path)
    h0, w0 = rendered.shape[0] * RENDER_DOWNSAMPLE, rendered.shape[1] * RENDER_DOWNSAMPLE
    levels = [(1, None), (RENDER_DOWNSAMPLE, rendered)]
    d, image = RENDER_DOWNSAMPLE, rendered
    while min(image.shape[:2]) >= 4 * TIFF_TILE or len(levels) < 3:
        image, d = _shrink(image, 4), d * 4
        levels.append((d, image))
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        _write_levels(tifffile, tmp, levels, rendered, h0, w0, mpp, aperio)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()  # a full disk or a kill mid-write leaves nothing under either name


def _write_levels(tifffile, tmp: pathlib.Path, levels: list, rendered: np.ndarray, h0: int, w0: int,
                  mpp: float | None, aperio: bool) -> None:
    photometric = "rgb" if rendered.ndim == 3 else "minisblack"
    shape_extra = rendered.shape[2:]
    with tifffile.TiffWriter(tmp, bigtiff=h0 * w0 * 3 > 2**31) as tif:
        for n, (d, image) in enumerate(levels):
            if image is None:
                shape, tiles = (h0, w0) + shape_extra, _padded_tiles(rendered, RENDER_DOWNSAMPLE)
            else:
                shape, tiles = image.shape, _padded_tiles(image)
            desc = None
            if aperio:
                desc = (f"Aperio Image Library v12.0.15 \r\n{w0}x{h0} [0,0 {w0}x{h0}] ({TIFF_TILE}x{TIFF_TILE}) "
                        f"-> {shape[1]}x{shape[0]}|AppMag = 40|hcdtf synthetic slide")
                if n == 0 and mpp is not None:
                    desc += f"|MPP = {mpp}"
            tif.write(tiles, shape=shape, dtype=np.uint8, tile=(TIFF_TILE, TIFF_TILE), photometric=photometric,
                      compression="zlib", compressionargs={"level": 1}, description=desc, metadata=None,
                      subfiletype=0 if n == 0 or aperio else 1)


def write_slide(path: pathlib.Path, spec: SlideSpec, annotations_dir: pathlib.Path | None,
                bank: int | None = None, mpp: float | None = LEVEL0_MPP) -> int:
    """Renders and writes one slide (and its XML if it has tumour); returns its lesion count."""
    from hcdtf.slide.annotations import write_asap

    rendered, tumour = render(spec, bank)
    polygons = lesion_polygons(spec, tumour) if spec.tumour else []
    if annotations_dir is not None and polygons:
        annotations_dir.mkdir(parents=True, exist_ok=True)
        write_asap(annotations_dir / f"{spec.name}.xml", polygons)
    write_pyramid(path, rendered, mpp)
    return len(polygons)


def metastasis_type(spec: SlideSpec) -> str:
    """Camelyon16's reference.csv type of a slide: ``Macro`` (a metastasis over 2 mm), ``Micro``
    (over 0.2 mm), ``ITC`` (smaller), empty for normal slides; from the lesions' tile discs."""
    if not spec.tumour or not spec.lesions:
        return ""
    um = max((2 * r + 1) * PATCH * LEVEL0_MPP * RENDER_DOWNSAMPLE for _, _, r in spec.lesions)
    return "Macro" if um > 2000 else "Micro" if um > 200 else "ITC"


def layout(specs: list[SlideSpec], kind: str = "flat", test_slides: int = 0) -> list[tuple[SlideSpec, str, str]]:
    """(spec, slide path, annotation path) relative to the output folder, renaming the slides as the
    layout names them. ``flat``: ``slide_XXX.svs`` and ``annotations/slide_XXX.xml``. ``camelyon16``
    (Camelyon16 as it ships): the last ``test_slides`` specs are ``testing/images/test_NNN.tif``
    (``testing/lesion_annotations/``), the others ``training/tumor/tumor_NNN.tif`` (with
    ``training/lesion_annotations/``) and ``training/normal/normal_NNN.tif``."""
    if kind not in LAYOUTS:
        raise ValueError(f"--layout must be one of {', '.join(LAYOUTS)}, got {kind!r}")
    if kind == "flat":
        if test_slides:
            raise ValueError("--test-slides needs --layout camelyon16 (a flat sample has no test folder)")
        return [(s, f"{s.name}.svs", f"annotations/{s.name}.xml") for s in specs]
    out, counts = [], {"tumor": 0, "normal": 0, "test": 0}
    for n, s in enumerate(specs):
        group = "test" if n >= len(specs) - test_slides else "tumor" if s.tumour else "normal"
        counts[group] += 1
        name = f"{group}_{counts[group]:03d}"
        folder = "testing/images" if group == "test" else f"training/{group}"
        ann = "testing/lesion_annotations" if group == "test" else "training/lesion_annotations"
        out.append((dataclasses.replace(s, name=name), f"{folder}/{name}.tif", f"{ann}/{name}.xml"))
    return out


def plan_sample(n: int, seed: int = 0, size: tuple[int, int] = DEFAULT_SIZE, tumour_fraction: float = 0.5,
                metastases: str = "three", kind: str = "flat", test_slides: int = 0) -> list[tuple[SlideSpec, str, str]]:
    """What :func:`write_slides` writes: (spec, slide path, annotation path) of every slide (the
    ground truth of a sample: :func:`tumour_tiles` of a spec are its metastases' tiles)."""
    specs = plan_slides(n, seed, size, tumour_fraction, metastases)
    if test_slides:
        specs += plan_slides(test_slides, seed, size, tumour_fraction, metastases, first=n)
    return layout(specs, kind, test_slides)


def write_slides(out_dir: str | os.PathLike, n: int = 4, seed: int = 0, size: tuple[int, int] = DEFAULT_SIZE,
                 log: Callable[[str], None] = print, bank: int | None = None, tumour_fraction: float = 0.5,
                 metastases: str = "three", kind: str = "flat", test_slides: int = 0) -> dict:
    """Writes a sample of ``n`` slides (plus ``test_slides`` more with ``kind="camelyon16"``).

    ``flat`` (the default): ``out_dir/slide_XXX.svs``, ``out_dir/annotations/slide_XXX.xml``
    (tumour slides) and ``out_dir/reference.csv`` (``name,class``). ``camelyon16``: Camelyon16's
    layout (:func:`layout`) with its ``testing/reference.csv`` (``name,class,type,`` rows, no
    header, type Macro/Micro/ITC) and ``training_reference.csv`` (``name,class``: what the docs'
    recipe makes from Camelyon16's file names). Every ``1/tumour_fraction``-th slide has tumour
    (:func:`is_tumour`; training and test slides counted apart), ``metastases`` plans them
    (:func:`_lesions`). Slides already written are kept (same seed, same files), so an interrupted
    run continues; the reference files are written last. A place that cannot be written
    (read-only, full) is a ValueError in one line."""
    if n < 1:
        raise ValueError(f"--slides must be >= 1, got {n}")
    if test_slides < 0:
        raise ValueError(f"--test-slides must be >= 0, got {test_slides}")
    placed = plan_sample(n, seed, size, tumour_fraction, metastases, kind, test_slides)
    out = pathlib.Path(out_dir)
    try:
        return _write_slides(out, placed, kind, log, bank)
    except OSError as e:  # read-only, disk full, a name too long: one line; rerunning continues
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        raise ValueError(f"cannot write synthetic slides into {out}: {e.strerror or e}{where}; fix that and rerun "
                         "the same command (slides already written are kept)") from None


def _write_slides(out: pathlib.Path, placed: list, kind: str, log, bank) -> dict:
    from hcdtf.atomic import write_text

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    written = 0
    for spec, rel, ann in placed:
        path, xml = out / rel, out / ann
        if path.is_file() and (not spec.tumour or xml.is_file()):
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        k = write_slide(path, spec, xml.parent, bank)
        written += 1
        log(f"  {rel}: " + (f"tumour, {k} annotated region(s)" if spec.tumour else "normal"))
    cls = {True: "Tumor", False: "Normal"}
    if kind == "flat":
        write_text(out / "reference.csv", "name,class\n" + "".join(f"{s.name},{cls[s.tumour]}\n" for s, _, _ in placed))
    else:
        write_text(out / "testing" / "reference.csv", "".join(
            f"{s.name},{cls[s.tumour]},{metastasis_type(s)},\n" for s, rel, _ in placed if rel.startswith("testing/")))
        write_text(out / "training_reference.csv", "".join(
            f"{s.name},{cls[s.tumour]}\n" for s, rel, _ in sorted(placed, key=lambda x: x[0].name)
            if rel.startswith("training/")))
    seconds = time.perf_counter() - t0
    specs = [s for s, _, _ in placed]
    log(f"{out}: {len(specs)} slides ({sum(s.tumour for s in specs)} with tumour), {written} written now in "
        f"{seconds:.1f} s")
    return {"out_dir": str(out), "slides": [s.name for s in specs], "tumour": [s.name for s in specs if s.tumour],
            "paths": {s.name: rel for s, rel, _ in placed}, "seconds": round(seconds, 2)}
