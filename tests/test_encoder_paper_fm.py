"""The paper_fm smoke experiment: ResNets and a tiny random encoder in one grid, one report whose
verdict answers both questions (depth; broader pretraining vs depth) from the runs' own numbers.

Narrowed to the frozen base of ResNet-18/34 and UNI, one seed, to stay near a minute and a half
(the whole smoke grid is 16 runs); the pretraining verdict's repeat path is tested directly."""

from __future__ import annotations

import csv
import pathlib

import numpy as np
import pytest

from conftest import CONFIGS
from hcdtf.evaluation import pretraining

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "encoders"


@pytest.fixture(scope="module")
def fm_smoke(data_dir, tmp_path_factory):
    from hcdtf import experiment
    from hcdtf.models.encoders import files

    out = tmp_path_factory.mktemp("paper_fm_smoke")
    (out / "encoders").mkdir()
    files.import_checkpoint(FIXTURES / "timm_uni", "UNI", out=out / "encoders")  # as the file documents
    summary = experiment.run(CONFIGS / "experiments" / "paper_fm_smoke.yaml",
                             overrides=[f"data.data_dir={data_dir}"], output_dir=str(out),
                             archs=["ResNet18", "ResNet34", "UNI"], transfers=["freeze_base"], seeds=[0],
                             log=lambda *_: None)
    return out, summary


def _set_scores(run_dir, fn):
    """Rewrites a run's predictions.csv with scores = fn(labels) (same ids, same labels)."""
    path = run_dir / "predictions.csv"
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    fields = list(rows[0])
    score_key = next(k for k in fields if k not in ("id", "label"))
    labels = np.array([int(r["label"]) for r in rows])
    for r, s in zip(rows, fn(labels)):
        r[score_key] = f"{s:.6f}"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def test_smoke_report_answers_depth_and_pretraining(fm_smoke):
    import warnings

    from hcdtf.evaluation import report

    out, summary = fm_smoke
    assert [r["name"] for r in summary["runs"]] == ["resnet18_freeze_base", "resnet34_freeze_base", "uni_freeze_base"]
    text = (out / "comparison" / "report.md").read_text()
    assert "## Pretraining vs depth" in text and "## Verdict" in text
    verdict = text.split("## Verdict", 1)[1].split("\n## ", 1)[0]
    assert "depth" in verdict and "best pathology encoder UNI" in verdict and "best ResNet ResNet" in verdict
    assert "ResNet18" in verdict and "ResNet34" in verdict  # the depth question's two depths
    uni = next(r for r in summary["runs"] if r["arch"] == "UNI")
    assert f"{uni['test_auc']:.4f}" in verdict  # the encoder's own test AUC
    assert "eva PCam bal. acc. (published)" in text and "0.937" in text  # UNI's leaderboard figure

    # the numbers come from the runs: the encoder made perfect, then perfectly wrong
    runs = [out / "runs" / r["name"] for r in summary["runs"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # metrics.json no longer matches the predictions
        _set_scores(runs[2], lambda y: 0.2 + 0.6 * y)
        best = report.compare(runs, out / "perfect", n_bootstrap=0)
        _set_scores(runs[2], lambda y: 0.8 - 0.6 * y)
        worst = report.compare(runs, out / "useless", n_bootstrap=0)
    # (one run each: DeLong on the few test patches of the session sample decides)
    assert "UNI (test AUC 1.0000" in best["verdict"] and "difference +" in best["verdict"]
    assert "UNI (test AUC 0.0000" in worst["verdict"] and "difference -" in worst["verdict"]
    assert "Broader pretraining beats depth" not in worst["verdict"]
    entry = next(e for e in best["pretraining"]["table"] if e["arch"] == "UNI")
    assert entry["balanced_accuracy"] == 1.0 and entry["eva_pcam"] == 0.937
    assert entry["embed_per_s"] > 0 and 0 < entry["flops_per_image"] < 1e8  # the tiny encoder's own cost


def _model(name, arch, aucs, val):
    return {"name": name, "arch": arch, "kind": "cnn", "transfer": "freeze_base", "family": "x",
            "aucs": {(s, None): a for s, a in enumerate(aucs)}, "n_repeats": len(aucs),
            "auc_mean": float(np.mean(aucs)), "auc_sd": float(np.std(aucs, ddof=1)), "flops_per_image": 1e9,
            "_val": val}


def test_pretraining_verdict_with_repeats(tmp_path):
    """Three seeds: the paired t-test over repeats decides; the contenders are picked by
    validation AUC, not by the test AUC that judges them."""
    import json

    labels = np.array([0, 1] * 10)
    models = [_model("ResNet18 freeze_base", "ResNet18", [0.80, 0.82, 0.81], 0.90),
              _model("ResNet34 freeze_base", "ResNet34", [0.83, 0.86, 0.84], 0.70),  # best test, worse val
              _model("UNI freeze_base", "UNI", [0.90, 0.93, 0.91], 0.95)]
    rows, runs = [], []
    for m in models:
        for seed in range(3):
            d = tmp_path / f"{m['arch']}{seed}"
            d.mkdir()
            (d / "train_summary.json").write_text(json.dumps({"best_val_auc": m["_val"]}))
            rows.append({"name": d.name, "model": m["name"], "input": str(d), "images_per_s": 10.0})
            runs.append({"scores": labels * 0.5 + 0.25})
    v = pretraining.pretraining_verdict(models, rows, runs, labels)
    s = v["strategies"][0]
    assert s["encoder"] == "UNI freeze_base" and s["resnet"] == "ResNet18 freeze_base"  # by validation AUC
    assert s["test"].startswith("paired t-test over 3 repeats") and s["mean_diff"] == pytest.approx(0.1033, abs=1e-4)
    assert "Broader pretraining beats depth" in v["text"] and s["p_value_holm"] < 0.05
    models[2]["aucs"] = {(0, None): 0.78, (1, None): 0.86, (2, None): 0.83}  # no longer consistently better
    models[2]["auc_mean"] = float(np.mean([0.78, 0.86, 0.83]))
    assert "Not distinguishable" in pretraining.pretraining_verdict(models, rows, runs, labels)["text"]
