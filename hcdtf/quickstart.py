"""`hcdtf quickstart`: the experiment `configs/experiments/quickstart.yaml`, the whole-slide demo
with the model it exports, and a summary.

Every stage is the real one a user runs on the Kaggle data (the experiment runner does them all:
sample -> TFDS build -> ResNet18 fine-tuned and frozen -> logistic regression -> evaluation ->
comparison -> SavedModel export), then the exported model scores synthetic whole slides, which are
evaluated like Camelyon16's (``hcdtf.slide.demo``); only the data (synthetic) and the sizes
(configs/quickstart.yaml) differ. Rerunning resumes where an interrupted quick start stopped.
"""

from __future__ import annotations

import pathlib
import shutil
import time
from typing import Callable

EXPERIMENT = "quickstart"


def run(
    output_dir: str = "outputs/quickstart",
    n: int = 2000,
    overwrite: bool = False,
    config_files=(),
    overrides=(),
    slides: int = 4,
    slide_size: tuple[int, int] | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Runs (or continues) the quick start in ``output_dir`` with a sample of ``n`` patches and
    ``slides`` demo slides (0: none); returns the summary written to ``quickstart.json``."""
    from hcdtf import atomic, experiment
    from hcdtf.slide import demo as slide_demo
    from hcdtf.slide import evaluate

    out = pathlib.Path(output_dir)
    if overwrite and out.exists():
        if not (out / "quickstart.json").is_file() and not (out / "experiment.yaml").is_file():
            raise FileExistsError(f"{out} does not look like a quick-start directory; not removing it")
        shutil.rmtree(out)
    t0 = time.time()
    result = experiment.run(EXPERIMENT, overrides=overrides, output_dir=str(out), sample_n=n,
                            configs=[str(pathlib.Path(f).resolve()) for f in config_files], log=log)
    summary = {
        "output_dir": str(out),
        "report": result["report"],
        "saved_model": result["saved_model"],
        "test_auc": {r["name"]: r["test_auc"] for r in result["runs"]},
    }
    if slides:
        log(f"whole-slide demo: {slides} synthetic slides scored by {result['saved_model']}")
        found = slide_demo(result["saved_model"], out / "slides", log=log, n=slides,
                          **({"size": tuple(slide_size)} if slide_size else {}))
        summary["slides"] = {"slide_auc": found["slide_auc"]["auc"], "froc": found["froc"]["score"],
                             "report": found["report"], "headline": evaluate.headline(found)}
    summary["total_seconds"] = round(time.time() - t0, 1)
    atomic.write_json(out / "quickstart.json", summary, sort_keys=False)
    log(f"done in {summary['total_seconds']:.0f} s. Test AUC: "
        + ", ".join(f"{k} {v:.3f}" for k, v in summary["test_auc"].items()))
    log(f"report: {summary['report']}\nmodel:  {summary['saved_model']}")
    if slides:
        log(f"slides: {summary['slides']['report']} ({summary['slides']['headline']})")
    return summary
