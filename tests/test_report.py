"""Tests of hcdtf.report.compare on fake run directories (no TensorFlow, no real data)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from hcdtf import artifacts as A
from hcdtf import metrics as M
from hcdtf.report import PAPER_RESULTS, compare, main

N = 400


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, N)
    ids = np.array([f"{i:040x}" for i in rng.permutation(10 * N)[:N]])  # Kaggle-like hex ids
    return ids, labels, rng


def _scores(labels, rng, separation: float) -> np.ndarray:
    return 1 / (1 + np.exp(-(rng.normal(size=labels.size) + separation * (labels - 0.5))))


def _run_dir(root: Path, name: str, ids, labels, scores, summary: dict | None) -> Path:
    run = root / name
    metrics = M.compute_metrics(labels, scores, n_bootstrap=50)
    metrics["split"] = "test"
    A.write_eval_artifacts(run, ids, labels, scores, metrics)
    if summary is not None:
        (run / "train_summary.json").write_text(json.dumps(summary))
    (run / "config.yaml").write_text("model:\n  arch: x\n")
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory):
    # Module scope: writing the run directories renders 12 PNGs; build them once. Tests only
    # add new directories beside them, never modify these.
    tmp_path = tmp_path_factory.mktemp("report")
    ids, labels, rng = _data()
    scores = {
        "r18": _scores(labels, rng, 3.0),
        "r34": _scores(labels, rng, 4.0),
        "logreg": _scores(labels, rng, 1.0),
    }
    root = tmp_path / "runs"
    dirs = [
        _run_dir(
            root,
            "r18",
            ids,
            labels,
            scores["r18"],
            {
                "arch": "ResNet18",
                "strategy": "fine_tune",
                "depth": 18,
                "params_total": 11_200_000,
                "params_trainable": 11_100_000,
                "wall_time_s": 3600.0,
                "images_per_s": 850.0,
            },
        ),
        _run_dir(
            root,
            "r34",
            ids,
            labels,
            scores["r34"],
            {"arch": "ResNet34", "strategy": "fine_tune", "depth": 34, "wall_time_s": 6000.0},
        ),
        _run_dir(
            root,
            "logreg",
            ids,
            labels,
            scores["logreg"],
            {
                "arch": "LogisticRegression",
                "strategy": "baseline",
                "depth": None,
                "wall_time_s": 120.0,
            },
        ),
    ]
    # A bare predictions.csv (no metadata), identical scores to r34 but rows in another order.
    plain_dir = tmp_path / "plain_model"
    plain_dir.mkdir()
    order = np.random.default_rng(1).permutation(N)
    plain = A.write_predictions(
        plain_dir / "predictions.csv", ids[order], labels[order], scores["r34"][order]
    )
    return {
        "dirs": dirs,
        "plain": plain,
        "ids": ids,
        "labels": labels,
        "scores": scores,
        "tmp": tmp_path,
    }


def test_compare_writes_report_and_matches_sklearn(runs):
    out = runs["tmp"] / "report"
    result = compare([*runs["dirs"], runs["plain"]], out, n_bootstrap=100, seed=0)

    for name in (
        "comparison.json",
        "report.md",
        "roc_overlay.png",
        "auc_vs_depth.png",
        "auc_vs_cost.png",
    ):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert json.loads((out / "comparison.json").read_text())["n_examples"] == N

    rows = {r["name"]: r for r in result["models"]}
    assert list(rows) == ["r18", "r34", "logreg", "plain_model"]
    labels, scores = runs["labels"], runs["scores"]
    for name, key in (("r18", "r18"), ("r34", "r34"), ("logreg", "logreg"), ("plain_model", "r34")):
        assert rows[name]["auc"] == pytest.approx(roc_auc_score(labels, scores[key]), abs=1e-12)
        lo, hi = rows[name]["auc_ci95"]
        assert lo <= rows[name]["auc"] <= hi
        assert rows[name]["accuracy"] == pytest.approx(np.mean((scores[key] >= 0.5) == labels))
    assert rows["r18"]["depth"] == 18 and rows["r18"]["strategy"] == "fine_tune"
    assert rows["logreg"]["depth"] is None
    assert rows["plain_model"]["arch"] is None and rows["plain_model"]["wall_time_s"] is None
    assert rows["r18"]["split"] == "test"

    pairs = {(p["a"], p["b"]): p for p in result["pairwise"]}
    assert len(pairs) == 6
    same = pairs[("r34", "plain_model")]
    assert same["diff"] == 0.0 and same["p_value"] == 1.0 and same["diff_ci95"] == [0.0, 0.0]
    strong_vs_weak = pairs[("r34", "logreg")]
    assert strong_vs_weak["diff"] > 0 and strong_vs_weak["p_value"] < 1e-6
    ref = M.delong_test(labels, scores["r18"], scores["logreg"])
    assert pairs[("r18", "logreg")]["p_value"] == pytest.approx(ref["p_value"])
    assert all(p["p_value_holm"] >= p["p_value"] for p in pairs.values())

    report = (out / "report.md").read_text()
    assert "| r18 | ResNet18 | fine_tune | 18 | 11.20 M |" in report
    assert "Pairwise DeLong" in report and "| r34 | plain_model |" in report
    for ref_row in PAPER_RESULTS.values():
        assert f"| {ref_row['display']} | {ref_row['auc']:.3f} |" in report
    assert "not directly comparable" in report
    assert "![ROC curves](roc_overlay.png)" in report
    assert "–" in report  # missing fields of the plain CSV
    assert (
        "plain_model" in result["not_in_depth_plot"] and "plain_model" in result["not_in_cost_plot"]
    )


def test_compare_names_and_cli(runs, capsys):
    out = runs["tmp"] / "named"
    result = compare(runs["dirs"][:2], out, names=["A", "B"], n_bootstrap=0)
    assert [r["name"] for r in result["models"]] == ["A", "B"]
    assert result["n_bootstrap"] == 0  # DeLong intervals instead of the bootstrap
    with pytest.raises(ValueError, match="2 names for 3 inputs"):
        compare(runs["dirs"], out, names=["A", "B"])
    assert main([str(d) for d in runs["dirs"][:2]] + ["-o", str(out), "--n-bootstrap", "20"]) == 0
    assert "report:" in capsys.readouterr().out


def test_compare_refuses_different_ids(runs):
    ids, labels, scores = runs["ids"], runs["labels"], runs["scores"]["r18"]
    bad = runs["tmp"] / "subset"
    bad.mkdir()
    # Drops 10 examples and adds 2 foreign ones.
    keep = slice(10, None)
    A.write_predictions(
        bad / "predictions.csv",
        np.r_[ids[keep], ["x1", "x2"]],
        np.r_[labels[keep], [0, 1]],
        np.r_[scores[keep], [0.1, 0.9]],
    )
    with pytest.raises(ValueError, match="same example ids") as info:
        compare([runs["dirs"][0], bad], runs["tmp"] / "out", n_bootstrap=10)
    msg = str(info.value)
    assert "'subset'" in msg and "'r18'" in msg
    assert "10 ids missing" in msg and "2 extra ids" in msg and "'x1'" in msg


def test_compare_refuses_disagreeing_labels(runs):
    ids, labels, scores = runs["ids"], runs["labels"], runs["scores"]["r18"]
    flipped = labels.copy()
    flipped[:3] = 1 - flipped[:3]
    bad = runs["tmp"] / "relabelled"
    bad.mkdir()
    A.write_predictions(bad / "predictions.csv", ids, flipped, scores)
    with pytest.raises(ValueError, match="labels disagree .* for 3 of 400 ids"):
        compare([runs["dirs"][0], bad], runs["tmp"] / "out", n_bootstrap=10)


def test_compare_missing_predictions(tmp_path: Path):
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(FileNotFoundError, match="no predictions.csv"):
        compare([tmp_path / "empty_run"], tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="input not found"):
        compare([tmp_path / "nothing_here"], tmp_path / "out")
