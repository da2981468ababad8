"""Slide reading: opening slides through OpenSlide and reading them at a chosen resolution.

Every pixel hcdtf takes from a whole-slide image comes through :func:`read_resampled`: the
region of an output grid of ``out_mpp`` um/px is read from the pyramid level whose resolution is
the closest one at least as fine (``plan_level``), and only the remainder is resized. Regions
outside the slide or transparent in it read as white glass, as a scanner shows them.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
from typing import Iterable

import numpy as np

# What OpenSlide 4 reads (Aperio, Hamamatsu, Leica, MIRAX, Philips, Sakura, Trestle, Ventana,
# Zeiss, DICOM and generic tiled TIFF); a directory is searched for these suffixes only.
SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide",
                  ".bif", ".czi", ".dcm")
LEVEL_TOLERANCE = 1e-3  # a level within 0.1% of the wanted resolution is read without resizing


class SlideError(ValueError):
    """A slide cannot be opened or read, or lacks what inference needs; the message names it."""


def list_slides(paths: Iterable[str | os.PathLike]) -> list[pathlib.Path]:
    """The slide files named by ``paths``: files as given, directories searched (not recursively)
    for :data:`SLIDE_SUFFIXES`; an error for a missing path, an empty directory or a repeated id."""
    found: list[pathlib.Path] = []
    for item in paths:
        p = pathlib.Path(item)
        if p.is_dir():
            here = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in SLIDE_SUFFIXES)
            if not here:
                raise SlideError(f"{p}: no slide files ({', '.join(SLIDE_SUFFIXES)}) in this directory")
            found.extend(here)
        elif p.is_file():
            found.append(p)
        else:
            raise SlideError(f"{p} does not exist")
    if not found:
        raise SlideError("no slides given")
    seen: dict[str, pathlib.Path] = {}
    for f in found:
        if f.stem in seen and seen[f.stem].resolve() != f.resolve():
            raise SlideError(f"two slides have the id {f.stem!r}: {seen[f.stem]} and {f}; slide ids "
                             "(file names without suffix) must be unique")
        seen[f.stem] = f
    return list(dict.fromkeys(found))


def open_slide(path: str | os.PathLike):
    """An ``openslide.OpenSlide``; a :class:`SlideError` naming the file if OpenSlide cannot open it."""
    import openslide

    try:
        return openslide.OpenSlide(str(path))
    except openslide.OpenSlideUnsupportedFormatError:
        raise SlideError(f"{path}: not a slide that OpenSlide can read (unknown format or not an image)") from None
    except (openslide.OpenSlideError, OSError, ValueError) as e:
        raise SlideError(f"{path}: OpenSlide cannot read it ({e}); the file may be truncated or corrupt") from None


def slide_mpp(slide, path: str | os.PathLike, override: float | None = None) -> float:
    """Level-0 resolution in um/px: ``override`` if given, else the slide's ``openslide.mpp-x``."""
    if override is not None:
        if not override > 0:
            raise SlideError(f"--mpp must be > 0 um/px, got {override}")
        return float(override)
    value = slide.properties.get("openslide.mpp-x")
    try:
        mpp = float(value) if value is not None else math.nan
    except ValueError:
        mpp = math.nan
    if not (math.isfinite(mpp) and mpp > 0):
        raise SlideError(f"{path}: the slide does not record its resolution (openslide.mpp-x is "
                         f"{value!r}); give level 0's um/px with --mpp, e.g. --mpp 0.243 for a 40x scan")
    return mpp


@dataclasses.dataclass(frozen=True)
class LevelPlan:
    """How to read a slide at ``out_mpp`` um/px: from pyramid ``level``, shrunk by ``scale``."""

    level: int
    downsample: float  # level-0 px per px of ``level``
    scale: float       # px of ``level`` per output px (1: read as is; > 1 shrink; < 1 enlarge)
    slide_mpp: float   # level 0
    out_mpp: float

    @property
    def factor(self) -> float:
        """Level-0 px per output px."""
        return self.out_mpp / self.slide_mpp


def plan_level(slide, slide_mpp_: float, out_mpp: float) -> LevelPlan:
    """The coarsest level at least as fine as ``out_mpp`` (within 0.1%), and the resize left over."""
    factor = out_mpp / slide_mpp_
    downsamples = [float(d) for d in slide.level_downsamples]
    finer = [i for i, d in enumerate(downsamples) if d <= factor * (1 + LEVEL_TOLERANCE)]
    level = max(finer, key=lambda i: downsamples[i]) if finer else 0
    scale = factor / downsamples[level]
    if abs(scale - 1.0) <= LEVEL_TOLERANCE:
        scale = 1.0
    return LevelPlan(level, downsamples[level], scale, slide_mpp_, out_mpp)


def _on_white(rgba: np.ndarray, background: int = 255) -> np.ndarray:
    """RGB of an RGBA region (OpenSlide's, not premultiplied) over ``background`` (white glass)."""
    alpha = rgba[..., 3]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgba[..., :3])
    a = alpha[..., None].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32) * a + float(background) * (1.0 - a)
    return np.rint(rgb).astype(np.uint8)


def read_resampled(slide, plan: LevelPlan, x: int, y: int, width: int, height: int,
                   background: int = 255) -> np.ndarray:
    """uint8 [height, width, 3]: the output-resolution region whose top-left output pixel is
    (x, y), i.e. level-0 position (x, y) * ``plan.factor``; past the slide's edge it is
    ``background`` (white glass; 0 for masks)."""
    from PIL import Image

    s = plan.scale
    box = (x * s, y * s, (x + width) * s, (y + height) * s)  # in px of the level
    lx, ly = math.floor(box[0] + 1e-9), math.floor(box[1] + 1e-9)
    lw, lh = math.ceil(box[2] - 1e-9) - lx, math.ceil(box[3] - 1e-9) - ly
    d = plan.downsample
    region = slide.read_region((int(round(lx * d)), int(round(ly * d))), plan.level, (lw, lh))
    rgb = _on_white(np.asarray(region), background)
    if s == 1.0:
        return rgb
    resample = Image.Resampling.BOX if s > 1 else Image.Resampling.BILINEAR
    rel = (box[0] - lx, box[1] - ly, box[2] - lx, box[3] - ly)
    return np.asarray(Image.fromarray(rgb).resize((width, height), resample, box=rel))


def read_downsampled(slide, plan: LevelPlan, width: int, height: int, tile_level_px: int = 4096,
                     background: int = 255) -> np.ndarray:
    """uint8 [height, width, 3] from output px (0, 0), read in tiles of at most ``tile_level_px``
    px of the level a side, so that memory stays bounded by the output, not by the level read."""
    out = np.empty((height, width, 3), np.uint8)
    t = max(1, int(tile_level_px / max(plan.scale, 1e-9)))
    for y in range(0, height, t):
        for x in range(0, width, t):
            h, w = min(t, height - y), min(t, width - x)
            out[y:y + h, x:x + w] = read_resampled(slide, plan, x, y, w, h, background)
    return out
