"""``hcdtf slide annotations``: QuPath/ASAP annotation files of slides that ``slide predict``
already scored, from each slide's saved heat map and ``detections.csv``.

Kept apart from :mod:`hcdtf.slide.annotations_out` (the geometry and the two file formats, which
``slide predict`` calls while it writes a slide): this reads finished prediction folders, so it
sits above both the predictor and the evaluation's detection reader (no import cycle).
"""

from __future__ import annotations

import json
import pathlib
from typing import Callable

import numpy as np

from hcdtf.slide import annotations_out, heatmap
from hcdtf.slide.evaluate import read_detections
from hcdtf.slide.inference import SUMMARY


def _finished(pred_dir: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p.parent for p in pred_dir.glob(f"*/{SUMMARY}"))


def from_predictions(pred_dir, formats=annotations_out.FORMATS, threshold: float = annotations_out.REGION_THRESHOLD,
                     output_dir=None, log: Callable[[str], None] = print) -> list[pathlib.Path]:
    """``hcdtf slide annotations``: the annotation files of every finished slide of ``pred_dir``,
    from its saved heat map (smoothed with the slide's own ``--sigma``) and ``detections.csv``;
    into each slide's folder, or ``output_dir/<slide id>.geojson|.xml`` (the names QuPath's
    import and ``slide evaluate --annotations`` pair with a slide). Returns the files written."""
    pred_dir = pathlib.Path(pred_dir)
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"PRED_DIR {str(pred_dir)!r} is not a directory: give a `slide predict --output-dir`")
    folders = _finished(pred_dir)
    if not folders:
        raise FileNotFoundError(f"{pred_dir}: no finished slide predictions (<slide id>/{SUMMARY}); run "
                                "`hcdtf slide predict MODEL SLIDES --output-dir` first")
    out_dir = pathlib.Path(output_dir) if output_dir else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for folder in folders:
        try:
            summary = json.loads((folder / SUMMARY).read_text())
            heat = np.load(folder / summary["heatmap"]["file"])
            detections = read_detections(folder / "detections.csv")
        except (OSError, ValueError, KeyError) as e:
            raise ValueError(f"{folder}: cannot be read ({e}); predict that slide again") from None
        sigma = summary.get("post", {}).get("sigma", heatmap.DEFAULT_SIGMA)
        smoothed = heatmap.smooth(heat, sigma)
        slide = folder.name
        paths = None if out_dir is None else {
            f: out_dir / (f"{slide}.geojson" if f == "geojson" else f"{slide}.xml") for f in formats}
        done = annotations_out.write_slide(folder, slide, smoothed, detections, summary["heatmap"]["cell_level0"],
                           summary["slide_mpp"], threshold, formats, paths)
        log(f"{slide}: " + ", ".join(str(p) for p in done.values()))
        written.extend(done.values())
    return written
