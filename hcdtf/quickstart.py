"""`hcdtf quickstart`: the experiment `configs/experiments/quickstart.yaml`, plus a summary.

Every stage is the real one a user runs on the Kaggle data (the experiment runner does them all:
sample -> TFDS build -> ResNet18 fine-tuned and frozen -> logistic regression -> evaluation ->
comparison -> SavedModel export); only the data (a synthetic sample in the Kaggle layout) and the
sizes (configs/quickstart.yaml) differ. Rerunning resumes where an interrupted quick start stopped.
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
    log: Callable[[str], None] = print,
) -> dict:
    from hcdtf import atomic, experiment

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
        "total_seconds": round(time.time() - t0, 1),
    }
    atomic.write_json(out / "quickstart.json", summary, sort_keys=False)
    log(f"done in {summary['total_seconds']:.0f} s. Test AUC: "
        + ", ".join(f"{k} {v:.3f}" for k, v in summary["test_auc"].items()))
    log(f"report: {summary['report']}\nmodel:  {summary['saved_model']}")
    return summary
