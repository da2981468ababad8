"""End-to-end smoke test of the quick-start chain on a tiny sample in a temporary directory."""

import json
import math

import tensorflow as tf

from hcdtf import quickstart


def test_quickstart_chain(tmp_path):
    out = tmp_path / "qs"
    lines = []
    summary = quickstart.run(
        str(out), n=80,
        overrides=["train.epochs=1", "train.steps_per_epoch=2", "train.batch_size=8",
                   "baseline.epochs=1", "eval.n_bootstrap=20"],
        log=lines.append,
    )
    for name in ("sample/train_labels.csv", "tensorflow_datasets/hcd/kaggle/1.0.0/dataset_info.json",
                 "runs/resnet18_fine_tune/metrics.json", "runs/resnet18_freeze_base/metrics.json",
                 "runs/logistic_regression/metrics.json", "comparison/report.md", "comparison/comparison.json",
                 "comparison/roc_overlay.png", "models/hcd/1/saved_model.pb", "quickstart.json"):
        assert (out / name).exists(), name
    for auc in summary["test_auc"].values():
        assert 0.0 <= auc <= 1.0 and not math.isnan(auc)
    assert any("not available offline" in line for line in lines)  # says so, in one line
    loaded = tf.saved_model.load(str(out / "models" / "hcd" / "1"))
    assert {"serving_default", "serving_encoded"} <= set(loaded.signatures)
    report = json.loads((out / "comparison" / "comparison.json").read_text())
    assert len(report["models"]) == 3
    # A second run resumes: everything is found complete and nothing is redone.
    again = quickstart.run(str(out), n=80, overrides=["train.epochs=1", "train.steps_per_epoch=2",
                                                      "train.batch_size=8", "baseline.epochs=1",
                                                      "eval.n_bootstrap=20"], log=lines.append)
    assert again["saved_model"] == summary["saved_model"]
    assert sum("already complete" in line for line in lines) == 3
