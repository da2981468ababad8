"""The whole-slide demo: synthetic slides, a model run over them, the Camelyon16 figures."""

from __future__ import annotations

import pathlib
import time
from typing import Callable

DEMO_SLIDES = 4
DEMO_SIZE = (2048, 1536)  # rendered px at 0.972 um/px: 2.0 x 1.5 mm, 8064 x 6144 px at level 0


def demo(model_path, out_dir, log: Callable[[str], None] = print, n: int = DEMO_SLIDES, seed: int = 0,
         size: tuple[int, int] = DEMO_SIZE) -> dict:
    """Writes ``out_dir/slides`` (if missing), predicts them into ``out_dir/predictions`` and
    evaluates them there; resumable like its parts. The command-line equivalent::

        hcdtf sample-slides OUT/slides --n 4
        hcdtf slide predict MODEL OUT/slides --output-dir OUT/predictions
        hcdtf slide evaluate OUT/predictions --annotations OUT/slides/annotations \\
            --reference OUT/slides/reference.csv

    Returns the slide metrics with the paths of the report and the folders.
    """
    from hcdtf.slide import evaluate, inference, synthetic

    t0 = time.perf_counter()
    out = pathlib.Path(out_dir)
    slides = out / "slides"
    synthetic.write_slides(slides, n=n, seed=seed, size=size, log=log)
    predicted = inference.predict_slides(model_path, [slides], out / "predictions", log=log)
    if predicted["failed"]:
        raise RuntimeError("demo slides failed: " + "; ".join(predicted["failed"]))
    metrics = evaluate.evaluate_slides(out / "predictions", slides / "annotations", slides / "reference.csv",
                                       log=log)
    return {**metrics, "slides_dir": str(slides), "predictions_dir": str(out / "predictions"),
            "report": str(out / "predictions" / "slide_report.md"),
            "seconds": round(time.perf_counter() - t0, 1)}
