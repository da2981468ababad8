"""The quick start end to end (`quickstart_dir` in conftest.py: the chain on a 1,000-patch sample
with the whole-slide demo): every artifact is there and not empty, the fine-tuned ResNet beats the
logistic-regression baseline, the export serves, and a second run redoes nothing."""

import json

import tensorflow as tf

from hcdtf import quickstart

from conftest import QUICKSTART


def test_every_artifact_is_written_and_not_empty(quickstart_dir):
    for name in ("sample/train_labels.csv", "tensorflow_datasets/hcd/kaggle/1.0.0/dataset_info.json",
                 "runs/resnet18_fine_tune/metrics.json", "runs/resnet18_fine_tune/model.keras",
                 "runs/resnet18_fine_tune/roc.png", "runs/resnet18_freeze_base/metrics.json",
                 "runs/logistic_regression/metrics.json", "runs/logistic_regression/model.npz",
                 "comparison/report.md", "comparison/comparison.json", "comparison/roc_overlay.png",
                 "models/hcd/1/saved_model.pb", "experiment.yaml", "experiment.json", "quickstart.json",
                 "slides/predictions/slide_metrics.json", "slides/predictions/slide_report.md"):
        path = quickstart_dir / name
        assert path.is_file() and path.stat().st_size > 0, name
    heatmaps = sorted((quickstart_dir / "slides" / "predictions").glob("*/heatmap.npy"))
    assert len(heatmaps) == QUICKSTART["slides"]
    report = json.loads((quickstart_dir / "comparison" / "comparison.json").read_text())
    assert [m["name"] for m in report["models"]] == ["resnet18_fine_tune", "resnet18_freeze_base",
                                                     "logistic_regression"]


def test_the_fine_tuned_resnet_beats_the_pixel_baseline(quickstart_dir):
    auc = json.loads((quickstart_dir / "quickstart.json").read_text())["test_auc"]
    assert auc["resnet18_fine_tune"] > auc["logistic_regression"] > 0.5, auc


def test_the_export_serves_and_the_slide_demo_is_evaluated(quickstart_dir):
    """The exported model scored the demo slides; their figures are computed (whether such a model
    finds the metastases is tests/test_slide_model.py's question: 4 slides cannot say)."""
    loaded = tf.saved_model.load(str(quickstart_dir / "models" / "hcd" / "1"))
    assert {"serving_default", "serving_encoded"} <= set(loaded.signatures)
    slides = json.loads((quickstart_dir / "quickstart.json").read_text())["slides"]
    metrics = json.loads((quickstart_dir / "slides" / "predictions" / "slide_metrics.json").read_text())
    assert slides["slide_auc"] == metrics["slide_auc"]["auc"] and slides["froc"] == metrics["froc"]["score"]
    assert metrics["froc"]["n_lesions"] >= 4 and 0 < slides["froc"] <= 1, slides
    assert "models/hcd/1" in json.dumps(json.loads(next(
        (quickstart_dir / "slides" / "predictions").glob("*/slide_summary.json")).read_text()))


def test_a_second_run_finds_everything_complete(quickstart_dir):
    lines = []
    again = quickstart.run(str(quickstart_dir), log=lines.append, **QUICKSTART)
    assert sum("already complete, skipped; evaluation up to date" in line for line in lines) == 3, lines
    assert any("already exported" in line for line in lines)
    assert not any(line.startswith("epoch ") for line in lines)
    first = json.loads((quickstart_dir / "quickstart.json").read_text())
    assert again["test_auc"] == first["test_auc"] and again["saved_model"] == first["saved_model"]
