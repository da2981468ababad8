"""`hcdtf slide predict`: a patch classifier run over whole slides, resumable, one folder per slide.

For each slide: the tissue mask from a thumbnail, the grid of cells over the tissue (see
:mod:`hcdtf.slide.grid`), the patches read tile by tile in reader threads while the model scores
the previous batch, then the heat map and what follows from it (:mod:`hcdtf.slide.heatmap`).
Everything is written to ``<output-dir>/<slide id>/``; nothing is written beside the slides.

Resuming: the scores are checkpointed (``progress.npz``, atomically, every
``checkpoint_seconds``) with the key of what produced them (model files' hash, slide, resolution,
grid and tissue settings, TTA). Batches are fixed slices of a fixed patch order, and a resumed
slide keeps the batch size it started with, so a killed and resumed run writes the same bytes as
an uninterrupted one. ``slide_summary.json`` is written last: with a matching key, the slide is
finished and skipped. Results of another model or other settings are never reused or silently
replaced: the command stops unless ``--overwrite``.
"""

from __future__ import annotations

import collections
import concurrent.futures
import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import pathlib
import time
from typing import Callable, Iterator

import numpy as np

from hcdtf.slide import grid as grid_lib
from hcdtf.slide import heatmap as heatmap_lib
from hcdtf.slide import reader, tissue

THUMB_PER_CELL = 4         # thumbnail px per heat-map cell a side (tissue mask, overlay)
SUMMARY = "slide_summary.json"
PROGRESS = "progress.npz"
OUTPUTS = ("heatmap.npy", "tissue_mask.png", "overlay.png", "detections.csv", SUMMARY)


class StaleOutputError(FileExistsError):
    """An output folder holds results of another model or other settings."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """What shapes a slide's results; ``scoring`` keys the heat map, ``post`` what follows from it."""

    stride: int = grid_lib.DEFAULT_STRIDE
    mpp: float | None = None                   # level-0 um/px override (slides without MPP)
    min_tissue: float = tissue.DEFAULT_MIN_TISSUE
    min_saturation: float = tissue.DEFAULT_MIN_SATURATION
    tta: bool = False
    batch_size: int = 128
    sigma: float = heatmap_lib.DEFAULT_SIGMA
    radius: int = heatmap_lib.DEFAULT_RADIUS
    min_probability: float = heatmap_lib.DEFAULT_MIN_PROBABILITY
    score: str = "max"

    def validate(self) -> "Settings":
        checks = [(self.stride >= 1, "--stride must be >= 1"), (self.batch_size >= 1, "--batch-size must be >= 1"),
                  (0.0 <= self.min_tissue <= 1.0, "--min-tissue must be in [0, 1]"),
                  (self.sigma >= 0, "--sigma must be >= 0"), (self.radius >= 1, "--radius must be >= 1"),
                  (self.score in heatmap_lib.SLIDE_SCORES, f"--score must be one of {heatmap_lib.SLIDE_SCORES}")]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        return self

    def post(self) -> dict:
        return {"sigma": self.sigma, "radius": self.radius, "min_probability": self.min_probability,
                "score": self.score}


# --------------------------------------------------------------------------- the model
def model_input_mpp(model_path: str | os.PathLike, backend: str | None = None) -> tuple[float, str]:
    """(um/px of the model's patches, where it was read): ``input_mpp`` of a run's
    ``train_summary.json`` (also for the ``model.keras`` inside a run) or of an export's
    ``hcdtf_metadata.json``; PCam's 0.972 (Camelyon16 level 2) when neither records it."""
    from hcdtf.inference import backends
    from hcdtf.export import DEFAULT_INPUT_MPP
    from hcdtf.rundir import RunDir

    kind, p = backends.resolve(model_path, backend, log=lambda *_: None)
    run = p if kind == "run" else p.parent if kind == "keras" and RunDir(p.parent).is_run() else None
    if run is not None:
        found, source = RunDir(run).summary() or {}, str(RunDir(run).summary_path)
    else:
        found, source = backends.model_metadata(kind, p), f"{p} metadata"
    value = found.get("input_mpp")
    if isinstance(value, (int, float)) and value > 0:
        return float(value), source
    return DEFAULT_INPUT_MPP, "default: PCam level 2"


def model_fingerprint(model_path: str | os.PathLike) -> str:
    """SHA-256 of the model's files (a run's model.keras, else every file of the path)."""
    from hcdtf.rundir import RunDir

    p = pathlib.Path(model_path)
    if p.is_file():
        files = [p]
    elif RunDir(p).model_path("cnn").is_file():
        files = [RunDir(p).model_path("cnn")]
    else:
        files = sorted(f for f in p.rglob("*") if f.is_file() and ".tmp" not in f.name)
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.relative_to(p) if f != p else f.name}\0{f.stat().st_size}\0".encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- patches
def _tiles(ci: np.ndarray, cj: np.ndarray, tile_cells: int) -> list[tuple[int, int, int, int]]:
    """(first patch, end, tile row, tile col) of each run of patches from one tile."""
    ti, tj = ci // tile_cells, cj // tile_cells
    change = np.flatnonzero((np.diff(ti) != 0) | (np.diff(tj) != 0)) + 1
    starts = np.concatenate([[0], change]).astype(int)
    ends = np.concatenate([change, [len(ci)]]).astype(int)
    return [(int(a), int(b), int(ti[a]), int(tj[a])) for a, b in zip(starts, ends)]


def patch_batches(slide, plan, grid, ci, cj, start: int, batch_size: int,
                  threads: int = 2) -> Iterator[np.ndarray]:
    """uint8 [B, 96, 96, 3] batches of patches ``start``, ``start + B``, ... in patch order; tiles are
    read by ``threads`` reader threads, at most ``2 threads`` tiles ahead (bounded memory)."""
    runs = [r for r in _tiles(ci, cj, grid.tile_cells) if r[1] > start]

    def read(run):
        a, b, ti, tj = run
        a = max(a, start)
        x, y, w, h = grid.tile_region(ti, tj)
        region = reader.read_resampled(slide, plan, x, y, w, h)
        return grid.cut(region, ti, tj, ci[a:b], cj[a:b])

    pending: collections.deque = collections.deque()
    buffer, held = [], 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
        queue = iter(runs)
        for run in queue:
            pending.append(pool.submit(read, run))
            if len(pending) >= 2 * threads:
                break
        while pending:
            patches = pending.popleft().result()
            nxt = next(queue, None)
            if nxt is not None:
                pending.append(pool.submit(read, nxt))
            buffer.append(patches)
            held += len(patches)
            while held >= batch_size:
                joined = np.concatenate(buffer) if len(buffer) > 1 else buffer[0]
                yield joined[:batch_size]
                buffer, held = [joined[batch_size:]], held - batch_size
        if held:
            yield np.concatenate(buffer)


# --------------------------------------------------------------------------- one slide
@dataclasses.dataclass
class Model:
    """The scorer and what identifies it, loaded once for all slides."""

    score: Callable
    description: str
    fingerprint: str
    input_mpp: float
    input_mpp_source: str


@dataclasses.dataclass
class _Layout:
    """A slide opened and measured: resolution plan, grid, thumbnail, tissue."""

    slide: object
    plan: reader.LevelPlan
    grid: grid_lib.Grid
    thumbnail: np.ndarray
    mask: np.ndarray
    threshold: float
    scored: np.ndarray
    mpp_source: str


def _layout(path: pathlib.Path, model: Model, settings: Settings) -> _Layout:
    slide = reader.open_slide(path)
    try:
        mpp = reader.slide_mpp(slide, path, settings.mpp)
        width0, height0 = slide.dimensions
        plan = reader.plan_level(slide, mpp, model.input_mpp)
        grid = grid_lib.Grid.for_slide(width0, height0, plan.factor, settings.stride,
                                       patch=getattr(model, "patch", grid_lib.PATCH))
        thumb_plan = reader.plan_level(slide, mpp, model.input_mpp * settings.stride / THUMB_PER_CELL)
        thumbnail = reader.read_downsampled(slide, thumb_plan, grid.cols * THUMB_PER_CELL,
                                            grid.rows * THUMB_PER_CELL)
        mask, threshold = tissue.tissue_mask(thumbnail, settings.min_saturation)
    except Exception:
        slide.close()
        raise
    fractions = tissue.cell_fractions(mask, grid.rows, grid.cols, THUMB_PER_CELL)
    scored = (fractions >= settings.min_tissue) & (fractions > 0)
    if not scored.any():
        slide.close()
        raise reader.SlideError(
            f"{path}: no tissue found (the tissue mask is empty at saturation > {threshold:.3f} with "
            f"--min-tissue {settings.min_tissue}); if the slide has tissue, lower --min-saturation or --min-tissue")
    source = "--mpp" if settings.mpp is not None else "openslide.mpp-x"
    return _Layout(slide, plan, grid, thumbnail, mask, threshold, scored, source)


def scoring_key(path: pathlib.Path, slide, model: Model, settings: Settings, plan) -> dict:
    """What the heat map depends on (not the batch size: a resumed slide keeps its own)."""
    return {
        "slide": {"name": path.name, "bytes": path.stat().st_size,
                  "quickhash": slide.properties.get("openslide.quickhash-1")},
        "model_sha256": model.fingerprint, "model_mpp": model.input_mpp, "slide_mpp": plan.slide_mpp,
        "stride": settings.stride, "min_tissue": settings.min_tissue,
        "min_saturation": settings.min_saturation, "tta": settings.tta,
    }


def _differs(a: dict, b: dict) -> str:
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return ", ".join(keys) or "nothing"


def _load_progress(folder: pathlib.Path, key: dict, overwrite: bool) -> tuple[np.ndarray, int | None]:
    """(scores so far, batch size they were made with) of a killed run of the same key."""
    p = folder / PROGRESS
    if not p.is_file():
        return np.zeros(0, np.float32), None
    try:
        with np.load(p) as z:
            old, scores, batch = json.loads(str(z["key"])), z["scores"].astype(np.float32), int(z["batch_size"])
    except (OSError, ValueError, KeyError):
        old, scores, batch = None, np.zeros(0, np.float32), None
    if old != key:
        if old is not None and not overwrite:
            raise StaleOutputError(
                f"{folder} holds a partial run of another model or other settings (differs in: "
                f"{_differs(old, key)}); rerun with --overwrite to start this slide again, or use another --output-dir")
        return np.zeros(0, np.float32), None
    return scores, batch


def _save_progress(folder: pathlib.Path, key: dict, scores: np.ndarray, batch_size: int) -> None:
    from hcdtf.atomic import atomic_output

    with atomic_output(folder / PROGRESS) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, key=np.array(json.dumps(key, sort_keys=True)), scores=scores,
                     batch_size=np.array(batch_size))


def _bar(done: int, total: int, rate: float) -> str:
    filled = int(20 * done / max(total, 1))
    eta = (total - done) / rate if rate > 0 else math.inf
    eta_text = time.strftime("%H:%M:%S", time.gmtime(eta)) if math.isfinite(eta) else "--:--:--"
    return f"[{'#' * filled}{'.' * (20 - filled)}] {done}/{total} patches, {rate:.0f} patches/s, ETA {eta_text}"


def score_patches(layout: _Layout, model: Model, settings: Settings, folder: pathlib.Path, key: dict,
                  overwrite: bool, log: Callable, threads: int, checkpoint_seconds: float,
                  progress_seconds: float = 10.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """(scores in patch order, cell rows, cell cols, timing) for the tissue cells, resuming."""
    ci, cj = layout.grid.order(layout.scored)
    scores, batch_size = _load_progress(folder, key, overwrite)
    batch_size = batch_size or settings.batch_size
    total, start = len(ci), len(scores)
    if start:
        log(f"  resuming at patch {start}/{total} (batch size {batch_size}, as when it started)")
    parts, t0, t_saved, t_said = [scores], time.perf_counter(), time.perf_counter(), time.perf_counter()
    score = model.score
    if settings.tta:
        from hcdtf.inference.scoring import with_tta

        score = with_tta(score)
    done, busy = start, 0.0
    for batch in patch_batches(layout.slide, layout.plan, layout.grid, ci, cj, start, batch_size, threads):
        t = time.perf_counter()
        n = len(batch)
        if n < batch_size:  # the last batch, padded: one traced shape for the whole run
            batch = np.concatenate([batch, np.zeros((batch_size - n,) + batch.shape[1:], batch.dtype)])
        parts.append(np.asarray(score(batch), np.float32).reshape(-1)[:n])
        busy += time.perf_counter() - t
        done += n
        now = time.perf_counter()
        if now - t_saved >= checkpoint_seconds and done < total:
            _save_progress(folder, key, np.concatenate(parts), batch_size)
            t_saved = now
        if now - t_said >= progress_seconds:
            log("  " + _bar(done, total, (done - start) / (now - t0)))
            t_said = now
    scores = np.concatenate(parts)
    _save_progress(folder, key, scores, batch_size)
    seconds = time.perf_counter() - t0
    timing = {"patches_scored_now": done - start, "resumed_from_patch": start, "scoring_seconds": round(seconds, 3),
              "model_seconds": round(busy, 3), "batch_size": batch_size,
              "patches_per_s": round((done - start) / seconds, 2) if seconds > 0 and done > start else None}
    return scores, ci, cj, timing


# --------------------------------------------------------------------------- outputs
def _write_png(path: pathlib.Path, image: np.ndarray) -> None:
    from PIL import Image

    from hcdtf.atomic import atomic_output

    with atomic_output(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


def _write_npy(path: pathlib.Path, array: np.ndarray) -> None:
    from hcdtf.atomic import atomic_output

    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)


def write_findings(folder: pathlib.Path, name: str, heat: np.ndarray, grid: grid_lib.Grid,
                   thumbnail: np.ndarray, settings: Settings, slide_mpp: float) -> dict:
    """detections.csv, overlay.png, the annotation files and the slide score from the heat map;
    returns the figures."""
    from hcdtf.atomic import write_text

    smoothed = heatmap_lib.smooth(heat, settings.sigma)
    i, j = heatmap_lib.local_maxima(smoothed, settings.radius, settings.min_probability)
    x, y = grid.centres_level0(i, j)
    rows = "".join(f"{p:.6f},{a},{b}\n" for p, a, b in zip(smoothed[i, j].tolist(), x.tolist(), y.tolist()))
    write_text(folder / "detections.csv", rows)  # Camelyon16 layout: probability,x,y, no header
    cell_mm2 = (grid.cell_level0 * slide_mpp / 1000.0) ** 2
    value = heatmap_lib.slide_score(smoothed, settings.score, cell_mm2)
    heatmap_lib.write_overlay(folder / "overlay.png", thumbnail, heat, THUMB_PER_CELL,
                              f"{name}: {settings.score} {value:.3f}, {len(i)} detections", (i, j))
    from hcdtf.slide import annotations_out  # annotations.geojson (QuPath) and annotations.xml (ASAP)

    annotations_out.write_slide(folder, name, smoothed, (smoothed[i, j].astype(np.float64), x, y),
                                grid.cell_level0, slide_mpp)
    return {"score": value, "n_detections": int(len(i)),
            "top_detection": None if not len(i) else {"probability": float(smoothed[i[0], j[0]]),
                                                      "x": int(x[0]), "y": int(y[0])}}


def _summary(path, layout: _Layout, model: Model, settings: Settings, key: dict, found: dict, timing: dict) -> dict:
    g, plan, slide = layout.grid, layout.plan, layout.slide
    n_cells = g.rows * g.cols
    n_tissue = int(layout.scored.sum())
    return {
        "slide": path.stem, "path": str(path), "format": slide.properties.get("openslide.vendor"),
        "level0_size": list(slide.dimensions), "slide_mpp": plan.slide_mpp, "slide_mpp_source": layout.mpp_source,
        "levels": [list(d) for d in slide.level_dimensions],
        "model": model.description, "model_mpp": model.input_mpp, "model_mpp_source": model.input_mpp_source,
        "read": {"level": plan.level, "level_downsample": plan.downsample, "resize": plan.scale},
        "heatmap": {"file": "heatmap.npy", "origin_level0": [0, 0], "cell_level0": g.cell_level0,
                    "stride_model_px": g.stride, "patch_model_px": grid_lib.PATCH, "rows": g.rows, "cols": g.cols,
                    "layout": "heatmap[i, j] scores the cell whose level-0 top-left corner is "
                              "(j * cell_level0, i * cell_level0); NaN: no tissue, not scored"},
        "tissue": {"saturation_threshold": layout.threshold, "cells_scored": n_tissue, "cells": n_cells,
                   "skipped_fraction": 1.0 - n_tissue / n_cells, "mask_file": "tissue_mask.png",
                   "mask_px_per_cell": THUMB_PER_CELL},
        "score_method": settings.score, **found, "settings": dataclasses.asdict(settings),
        "timing": timing, "key": key, "post": settings.post(),
    }


def finish_slide(path, folder: pathlib.Path, layout: _Layout, model: Model, settings: Settings, key: dict,
                 scores: np.ndarray, ci: np.ndarray, cj: np.ndarray, timing: dict) -> dict:
    """Writes every output of a scored slide; slide_summary.json last (the mark of a finished slide)."""
    from hcdtf.atomic import write_json

    heat = np.full((layout.grid.rows, layout.grid.cols), np.nan, np.float32)
    heat[ci, cj] = scores
    _write_npy(folder / "heatmap.npy", heat)
    _write_png(folder / "tissue_mask.png", (layout.mask * 255).astype(np.uint8))
    t = time.perf_counter()
    found = write_findings(folder, path.stem, heat, layout.grid, layout.thumbnail, settings, layout.plan.slide_mpp)
    timing = {**timing, "postprocess_seconds": round(time.perf_counter() - t, 3)}
    summary = _summary(path, layout, model, settings, key, found, timing)
    write_json(folder / SUMMARY, summary)
    (folder / PROGRESS).unlink(missing_ok=True)
    return summary


# --------------------------------------------------------------------------- slides
def _read_summary(folder: pathlib.Path) -> dict | None:
    try:
        summary = json.loads((folder / SUMMARY).read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def _clear(folder: pathlib.Path) -> None:
    for name in (SUMMARY, PROGRESS, *OUTPUTS):  # the summary first: never a finished mark over old files
        (folder / name).unlink(missing_ok=True)


def _refresh(path, folder, layout, model, settings, summary) -> dict:
    """Only the post-processing settings changed: findings again from the saved heat map."""
    from hcdtf.atomic import write_json

    heat = np.load(folder / "heatmap.npy")
    found = write_findings(folder, path.stem, heat, layout.grid, layout.thumbnail, settings, layout.plan.slide_mpp)
    summary = {**summary, **found, "score_method": settings.score, "settings": dataclasses.asdict(settings),
               "post": settings.post()}
    write_json(folder / SUMMARY, summary)
    return summary


def predict_slide(path: pathlib.Path, out_root: pathlib.Path, model: Model, settings: Settings,
                  overwrite: bool = False, log: Callable = print, threads: int = 2,
                  checkpoint_seconds: float = 30.0) -> tuple[str, dict]:
    """(status, slide summary): ``done`` (scored now), ``skipped`` (finished before) or ``updated``
    (finished before; detections and score redone for new post-processing settings)."""
    from hcdtf.atomic import remove_leftovers

    layout = _layout(path, model, settings)
    try:
        folder = out_root / path.stem
        remove_leftovers(folder)  # temporary files of a run killed mid-write
        key = scoring_key(path, layout.slide, model, settings, layout.plan)
        old = _read_summary(folder)
        if old is not None and old.get("key") == key:
            if not all((folder / f).is_file() for f in OUTPUTS):
                log("  finished before, but some outputs are missing: scoring it again")
                _clear(folder)
            elif old.get("post") == settings.post():
                log(f"  already done ({folder / SUMMARY}); skipped")
                return "skipped", old
            else:
                log("  heat map already done; detections and score again for the new settings")
                return "updated", _refresh(path, folder, layout, model, settings, old)
        elif old is not None:
            if not overwrite:
                raise StaleOutputError(
                    f"{folder} holds results of another model or other settings (differs in: "
                    f"{_differs(old.get('key') or {}, key)}); rerun with --overwrite to replace them, or use "
                    "another --output-dir")
            _clear(folder)
        folder.mkdir(parents=True, exist_ok=True)
        g = layout.grid
        log(f"  level {layout.plan.level} (downsample {layout.plan.downsample:g}, resize x{1 / layout.plan.scale:.3g}) "
            f"for {model.input_mpp:g} um/px; {int(layout.scored.sum())} of {g.rows * g.cols} cells hold tissue")
        scores, ci, cj, timing = score_patches(layout, model, settings, folder, key, overwrite, log, threads,
                                               checkpoint_seconds)
        return "done", finish_slide(path, folder, layout, model, settings, key, scores, ci, cj, timing)
    finally:
        layout.slide.close()


def load_model(model_path: str | os.PathLike, log: Callable = print, backend: str | None = None) -> Model:
    """The scorer (``hcdtf.inference.predict.load_scorer``), its files' hash and its input resolution."""
    from hcdtf.inference.predict import load_scorer

    score, description = load_scorer(model_path, log, backend=backend)
    mpp, source = model_input_mpp(model_path, backend)
    return Model(score, description, model_fingerprint(model_path), mpp, source)


def check_output_dir(out: pathlib.Path, slides: list[pathlib.Path]) -> None:
    """``out`` is writable and outside every slide's folder, or one clear error."""
    from hcdtf.inference.predict import is_inside

    for s in slides:
        if is_inside(out, s.parent):
            raise ValueError(f"--output-dir {str(out)!r} is inside the folder of the slide {s}; nothing is "
                             "written beside the slides: choose a directory outside it")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise ValueError(f"--output-dir {str(out)!r} cannot be written: {e.strerror or e}") from None


SUMMARY_FIELDS = ("slide", "status", "score", "score_method", "patches", "detections", "seconds", "path", "error")


def slide_row(path, status, summary=None, seconds=None, error=None) -> dict:
    """One row of ``slides.csv``."""
    s = summary or {}
    return {"slide": path.stem, "status": status, "score": s.get("score"), "score_method": s.get("score_method"),
            "patches": s.get("tissue", {}).get("cells_scored"), "detections": s.get("n_detections"),
            "seconds": None if seconds is None else round(seconds, 2), "path": str(path), "error": error}


def write_slide_rows(path: pathlib.Path, rows: list[dict]) -> None:
    from hcdtf.atomic import write_text

    buf = io.StringIO()
    w = csv.DictWriter(buf, SUMMARY_FIELDS, lineterminator="\n")
    w.writeheader()
    w.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
    write_text(path, buf.getvalue())


def read_slide_rows(path: pathlib.Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: (v if v != "" else None) for k, v in row.items()} for row in csv.DictReader(f)]


def _predict_local(slides, out, model, settings, overwrite, log, threads, checkpoint_seconds) -> list[dict]:
    import openslide

    rows = []
    for n, path in enumerate(slides, 1):
        log(f"[{n}/{len(slides)}] {path.name}")
        t = time.perf_counter()
        try:
            status, summary = predict_slide(path, out, model, settings, overwrite, log, threads, checkpoint_seconds)
        except (reader.SlideError, openslide.OpenSlideError) as e:
            message = str(e) if str(path) in str(e) else f"{path}: {e}"
            log(f"  FAILED {message}")
            rows.append(slide_row(path, "failed", seconds=time.perf_counter() - t, error=message))
            continue
        rows.append(slide_row(path, status, summary, time.perf_counter() - t))
        if status == "done":
            log(f"  {summary['score_method']} score {summary['score']:.4f}, {summary['n_detections']} detections, "
                f"{time.perf_counter() - t:.1f} s -> {out / path.stem}")
    write_slide_rows(out / "slides.csv", rows)
    return rows


def predict_slides(model_path, inputs, output_dir, settings: Settings | None = None, overwrite: bool = False,
                   log: Callable = print, threads: int = 2, checkpoint_seconds: float = 30.0,
                   model: Model | None = None, backend: str | None = None) -> dict:
    """Scores every slide of ``inputs`` (files or directories) into ``output_dir/<slide id>/`` and
    writes ``output_dir/slides.csv``. A slide that cannot be read is reported by name and the
    others still run: the result's ``failed`` lists them. (On Apache Beam: hcdtf.slide.beam.)"""
    settings = (settings or Settings()).validate()
    slides = reader.list_slides(inputs)
    out = pathlib.Path(output_dir)
    check_output_dir(out, slides)
    t_all = time.perf_counter()
    model = model or load_model(model_path, log, backend)
    log(f"{len(slides)} slide(s); model {model.description} at {model.input_mpp:g} um/px "
        f"({model.input_mpp_source}); outputs in {out}")
    rows = _predict_local(slides, out, model, settings, overwrite, log, threads, checkpoint_seconds)
    return result_of(rows, out, time.perf_counter() - t_all, log)


def result_of(rows: list[dict], out: pathlib.Path, seconds: float, log: Callable = print) -> dict:
    """What a slide command returns: counts, the failures' messages, the summary CSV."""
    failed = [r for r in rows if r["status"] == "failed"]
    result = {"output_dir": str(out), "slides": len(rows), "failed": [r["error"] for r in failed],
              "done": sum(r["status"] == "done" for r in rows), "skipped": sum(r["status"] == "skipped" for r in rows),
              "seconds": round(seconds, 2), "summary_csv": str(out / "slides.csv")}
    log(f"{result['done']} scored, {result['skipped']} already done, {len(failed)} failed; {out / 'slides.csv'}")
    return result
