"""Tests of hcdtf.evaluation.report.compare and `hcdtf compare` on fake run directories (no TensorFlow)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from hcdtf.evaluation import artifacts as A
from hcdtf.evaluation import metrics as M
from hcdtf.evaluation.report import PAPER_RESULTS, compare

from conftest import cli_fails

N = 400


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, N)
    ids = np.array([f"{i:040x}" for i in rng.permutation(10 * N)[:N]])  # Kaggle-like hex ids
    return ids, labels, rng


def _scores(labels, rng, separation: float) -> np.ndarray:
    return 1 / (1 + np.exp(-(rng.normal(size=labels.size) + separation * (labels - 0.5))))


def _run_dir(root: Path, name: str, ids, labels, scores, summary: dict | None,
             config: str = "model:\n  arch: x\n", plots: bool = True) -> Path:
    run = root / name
    metrics = M.compute_metrics(labels, scores, n_bootstrap=50)
    metrics["split"] = "test"
    if plots:
        A.write_eval_artifacts(run, ids, labels, scores, metrics)
    else:  # what compare reads, without rendering four PNGs per run
        run.mkdir(parents=True)
        A.write_predictions(run / "predictions.csv", ids, labels, scores)
        (run / "metrics.json").write_text(json.dumps(metrics))
    if summary is not None:
        (run / "train_summary.json").write_text(json.dumps(summary))
    (run / "config.yaml").write_text(config)
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
        _run_dir(root, "r18", ids, labels, scores["r18"], {
            "arch": "ResNet18", "strategy": "fine_tune", "depth": 18, "params_total": 11_200_000,
            "params_trainable": 11_100_000, "wall_time_s": 3600.0, "images_per_s": 850.0}),
        _run_dir(root, "r34", ids, labels, scores["r34"],
                 {"arch": "ResNet34", "strategy": "fine_tune", "depth": 34, "wall_time_s": 6000.0}),
        _run_dir(root, "logreg", ids, labels, scores["logreg"], {
            "arch": "LogisticRegression", "strategy": "baseline", "depth": None, "wall_time_s": 120.0}),
    ]
    # A bare predictions.csv (no metadata), identical scores to r34 but rows in another order.
    plain_dir = tmp_path / "plain_model"
    plain_dir.mkdir()
    order = np.random.default_rng(1).permutation(N)
    plain = A.write_predictions(
        plain_dir / "predictions.csv", ids[order], labels[order], scores["r34"][order]
    )
    return {"dirs": dirs, "plain": plain, "ids": ids, "labels": labels, "scores": scores,
            "tmp": tmp_path}


def test_compare_writes_report_and_matches_sklearn(runs):
    out = runs["tmp"] / "report"
    result = compare([*runs["dirs"], runs["plain"]], out, n_bootstrap=100, seed=0)

    for name in ("comparison.json", "report.md", "roc_overlay.png", "auc_vs_depth.png",
                 "auc_vs_cost.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no temporaries
    assert json.loads((out / "comparison.json").read_text())["n_examples"] == N

    rows = {r["name"]: r for r in result["models"]}
    assert list(rows) == ["r18", "r34", "logreg", "plain_model"]
    labels, scores = runs["labels"], runs["scores"]
    for name, key in (("r18", "r18"), ("r34", "r34"), ("logreg", "logreg"), ("plain_model", "r34")):
        assert rows[name]["auc"] == pytest.approx(roc_auc_score(labels, scores[key]), abs=1e-12)
        lo, hi = rows[name]["auc_ci95"]
        assert lo <= rows[name]["auc"] <= hi
        assert rows[name]["accuracy"] == pytest.approx(np.mean((scores[key] >= 0.5) == labels))
    # Old summaries ("strategy") read through runinfo: transfer and kind come out normalised.
    assert rows["r18"]["depth"] == 18 and rows["r18"]["transfer"] == "fine_tune"
    assert rows["r18"]["kind"] == "cnn" and rows["logreg"]["kind"] == "baseline"
    assert rows["logreg"]["depth"] is None and rows["logreg"]["transfer"] is None
    assert rows["plain_model"]["arch"] is None and rows["plain_model"]["wall_time_s"] is None
    assert rows["r18"]["split"] == "test"

    pairs = {(p["a"], p["b"]): p for p in result["pairwise"]}
    assert len(pairs) == 6  # one run per model: every pair of runs
    same = pairs[("r34", "plain_model")]
    assert same["diff"] == 0.0 and same["p_value"] == 1.0 and same["diff_ci95"] == [0.0, 0.0]
    strong_vs_weak = pairs[("r34", "logreg")]
    assert strong_vs_weak["diff"] > 0 and strong_vs_weak["p_value"] < 1e-6
    ref = M.delong_test(labels, scores["r18"], scores["logreg"])
    assert pairs[("r18", "logreg")]["p_value"] == pytest.approx(ref["p_value"])
    assert all(p["p_value_holm"] >= p["p_value"] for p in pairs.values())

    # One run per model: no across-repeat test, and the verdict says so.
    assert not result["across_repeats"]["has_repeats"]
    assert "one run each" in result["verdict"] and "cannot be judged" in result["verdict"]
    report = (out / "report.md").read_text()
    assert "| r18 | ResNet18 | fine_tune | – | – | 18 | 11.20 M | 11.10 M | 60.0 min | 850 |" in report
    assert "Every model was trained once" in report
    assert "r18: initial weights not recorded." in report  # flagged against the paper's setting
    assert "Pairwise DeLong" in report and "| r34 | plain_model |" in report
    for ref_row in PAPER_RESULTS.values():
        assert f"| {ref_row['display']} | {ref_row['auc']:.3f} |" in report
    assert "not directly comparable" in report
    assert "![ROC curves](roc_overlay.png)" in report
    assert "no audit" in report
    assert "plain_model" in result["not_in_depth_plot"] and "plain_model" in result["not_in_cost_plot"]


def test_compare_command_names_seed_and_errors(runs):
    d1, d2 = (str(d) for d in runs["dirs"][:2])
    out = runs["tmp"] / "named"
    from click.testing import CliRunner

    from hcdtf.cli import main

    res = CliRunner().invoke(main, ["compare", d1, d2, "--names", "A, B", "--output-dir", str(out),
                                    "--n-bootstrap", "20", "--seed", "3"])
    assert res.exit_code == 0, res.output
    assert "one run each" in res.output and f"wrote {out / 'report.md'}" in res.output
    result = json.loads((out / "comparison.json").read_text())
    assert [r["name"] for r in result["models"]] == ["A", "B"] and result["seed"] == 3
    cli_fails(["compare", d1, d2, "--names", "A", "--output-dir", str(out)], "--names gives 1 names for 2 inputs")
    cli_fails(["compare", d1, "--output-dir", str(out)], "at least two")
    cli_fails(["compare", d1, d2, "--output-dir", str(runs["plain"])], "exists and is not a directory")
    with pytest.raises(ValueError, match="2 names for 3 inputs"):
        compare(runs["dirs"], out, names=["A", "B"])
    assert compare(runs["dirs"][:2], out, n_bootstrap=0)["n_bootstrap"] == 0  # DeLong intervals


@pytest.mark.parametrize("bad, message", [
    ("1.7", r"line 4: score 1.7 is outside \[0, 1\]"),  # a logit or a percentage, not a probability
    ("-0.2", r"line 4: score -0.2 is outside \[0, 1\]"),
    ("nan", "line 4: score nan is not finite"),  # the same rule set, the same kind of message
])
def test_compare_refuses_scores_that_are_not_probabilities(runs, bad, message):
    ids, labels = runs["ids"][:5], runs["labels"][:5]
    path = runs["tmp"] / f"bad_{bad}" / "predictions.csv"
    path.parent.mkdir()
    lines = ["id,label,score"] + [f"{i},{y},0.5" for i, y in zip(ids, labels)]
    lines[3] = f"{ids[2]},{labels[2]},{bad}"
    path.write_text("\n".join(lines) + "\n")
    res = cli_fails(["compare", str(runs["dirs"][0]), str(path), "--output-dir", str(runs["tmp"] / "o")])
    import re

    assert re.search(message, res.output) and str(path) in res.output.replace("\n", "")


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


# ------------------------------------------------------------------------------------------
# A grid repeated over seeds
# ------------------------------------------------------------------------------------------


def _grid_summary(arch: str, transfer: str, weights: str, seed: int, legacy: bool) -> dict:
    depth = int(arch.removeprefix("ResNet"))
    s = {"arch": arch, "depth": depth, "weights": weights, "wall_time_s": 10.0 * depth,
         "flops_per_image": 1e8 * depth}
    # Older runs say "strategy" and keep the seed only in config.yaml; newer ones say it all.
    return {**s, "strategy": transfer} if legacy else {**s, "kind": "cnn", "transfer": transfer, "seed": seed}


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory):
    """ResNet18 and ResNet50 fine-tuned from ImageNet (ResNet50 clearly better) and ResNet18 on a
    frozen random base, each over seeds 0, 1, 2, and one logistic regression (seed 0)."""
    root = tmp_path_factory.mktemp("grid")
    ids, labels, rng = _data(5)
    difficulty = rng.normal(size=N)  # the same hard examples for every run
    dirs = []
    for arch, transfer, weights, sep in (("ResNet18", "fine_tune", "imagenet", 2.0),
                                         ("ResNet50", "fine_tune", "imagenet", 3.5),
                                         ("ResNet18", "freeze_base", "none", 1.0)):
        for seed in range(3):
            s = 1 / (1 + np.exp(-((sep + rng.normal(0, 0.1)) * (labels - 0.5) + 0.5 * difficulty
                                  + rng.normal(size=N))))
            name = f"{arch.lower()}_{transfer}_s{seed}"
            config = f"seed: {seed}\ndata:\n  data_dir: {root / 'no_data_here'}\n  dataset_config: kaggle\n"
            dirs.append(_run_dir(root / "runs", name, ids, labels, s,
                                 _grid_summary(arch, transfer, weights, seed, legacy=seed == 0),
                                 config, plots=False))
    dirs.append(_run_dir(root / "runs", "logistic_regression", ids, labels, _scores(labels, rng, 1.0),
                         {"arch": "LogisticRegression", "strategy": "baseline", "depth": None,
                          "features": "pixels", "wall_time_s": 5.0}, "seed: 0\n", plots=False))
    return {"root": root, "dirs": dirs, "labels": labels}


def test_compare_grid_statistics_across_repeats(grid):
    out = grid["root"] / "comparison"
    result = compare(grid["dirs"], out, n_bootstrap=0)
    rows = {r["name"]: r for r in result["models"]}
    across = result["across_repeats"]
    assert across["has_repeats"]
    models = {m["name"]: m for m in across["models"]}
    r18, r50 = "ResNet18 fine_tune (ImageNet weights)", "ResNet50 fine_tune (ImageNet weights)"
    frozen = "ResNet18 freeze_base (random init)"
    assert list(models) == [r18, r50, frozen, "LogisticRegression"]
    aucs = {name: [rows[f"resnet{n}_{t}_s{s}"]["auc"] for s in range(3)]
            for name, n, t in ((r18, 18, "fine_tune"), (r50, 50, "fine_tune"))}
    for name in (r18, r50):
        m = models[name]
        assert m["n_repeats"] == 3 and m["repeats"] == [[0, None], [1, None], [2, None]]
        assert m["auc_mean"] == pytest.approx(np.mean(aucs[name]))
        assert m["auc_sd"] == pytest.approx(np.std(aucs[name], ddof=1))
        assert m["auc_min"] == min(aucs[name]) and m["auc_max"] == max(aucs[name])
        assert m["family"] == "fine_tune, ImageNet weights"
    assert models["LogisticRegression"]["n_repeats"] == 1 and models["LogisticRegression"]["family"] == "baseline"

    pair = next(p for p in across["pairs"] if (p["a"], p["b"]) == (r18, r50))
    ref = stats.ttest_rel(aucs[r18], aucs[r50])
    assert pair["p_value"] == pytest.approx(ref.pvalue) and pair["n"] == 3 and pair["df"] == 2
    assert pair["family"] == "fine_tune, ImageNet weights" and pair["p_value_holm"] == pair["p_value"]
    cross = next(p for p in across["pairs"] if (p["a"], p["b"]) == (r18, frozen))
    assert cross["family"] == "across settings"
    # The baseline ran once: its pairs share one repeat, so they are not tested.
    assert all(p["p_value"] is None for p in across["pairs"] if "LogisticRegression" in (p["a"], p["b"]))

    # DeLong per repeat: only runs of the same seed are paired (seed 0: 4 runs, seeds 1-2: 3 each).
    assert len(result["pairwise"]) == 6 + 3 + 3
    for p in result["pairwise"]:
        assert rows[p["a"]]["seed"] == rows[p["b"]]["seed"] == p["repeat"][0]

    verdict = result["verdict"]
    assert verdict.startswith("**fine_tune, ImageNet weights** (mean ± sd over 3 runs)")
    assert "Depth helps beyond run-to-run variation" in verdict and "ResNet50 beats ResNet18" in verdict
    assert "Cost: ResNet50 takes 2.8x the training time and 2.8x the FLOPs per image of ResNet18." in verdict

    report = (out / "report.md").read_text()
    assert f"| {r50} | fine_tune, ImageNet weights | 3 |" in report
    assert "| resnet18_freeze_base_s1 | ResNet18 | freeze_base | none | seed 1 |" in report
    assert "resnet18_freeze_base_s1: frozen *random* base: says nothing about the paper's frozen-ImageNet" in report
    assert "| seed 0 | resnet18_fine_tune_s0 | resnet50_fine_tune_s0 |" in report  # DeLong, per repeat
    assert f"({'kaggle'}): no audit" in report  # the data set the runs name was never built
    assert "ResNet-34 | 0.992 | – |" in report
    for name in ("auc_vs_depth.png", "auc_vs_cost.png", "roc_overlay.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"


def test_runs_that_cannot_be_repeats_stay_separate_models(grid, tmp_path):
    # Two runs of the same model with the same seed (e.g. another learning rate): not repeats.
    twin = tmp_path / "twin"
    twin.mkdir()
    src = grid["dirs"][1]  # resnet18_fine_tune_s1
    for f in ("predictions.csv", "train_summary.json", "config.yaml"):
        (twin / f).write_bytes((src / f).read_bytes())
    result = compare([src, twin], tmp_path / "out", n_bootstrap=0)
    assert [m["name"] for m in result["across_repeats"]["models"]] == ["resnet18_fine_tune_s1", "twin"]
    assert "not distinct seeds/folds" in result["notes"][0]
    assert "## Notes" in (tmp_path / "out" / "report.md").read_text()


def test_compare_states_the_leak_audit_of_the_data(data_dir, tmp_path, runs):
    """Runs that name a built data set get the audit its build recorded (the real builder), read
    here from the build's metadata.json, not through hcdtf.data.audit."""
    (metadata,) = (data_dir / "hcd" / "kaggle").glob("*/metadata.json")
    summary = json.loads(metadata.read_text())["audit"]
    assert summary["headline"].startswith("exact duplicates: ")
    ids, labels = runs["ids"], runs["labels"]
    cfg = f"seed: 0\ndata:\n  data_dir: {data_dir}\n  dataset_config: kaggle\n"
    dirs = [_run_dir(tmp_path, n, ids, labels, runs["scores"][n], {"arch": "ResNet18", "strategy": "fine_tune"},
                     cfg, plots=False) for n in ("r18", "r34")]
    result = compare(dirs, tmp_path / "out", n_bootstrap=0)
    (entry,) = result["audit"]
    assert entry["data_dir"] == str(data_dir) and entry["summary"] == summary
    report = (tmp_path / "out" / "report.md").read_text()
    assert entry["text"] == summary["headline"]
    assert f"- `{data_dir}` (kaggle): {summary['headline']}\n" in report
    assert "no audit" not in report


def test_report_says_why_a_pair_with_equal_differences_is_not_tested():
    """sd 0 over two shared repeats (0.61 - 0.56 and 0.55 - 0.50) leaves the t-test undefined: the
    report says so, not that the pair shares fewer than two repeats (which is said of the pair
    with the one-run model)."""
    from hcdtf.evaluation import repeats, report_markdown

    models = [{"name": "A", "family": "f", "aucs": {(0, None): 0.61, (1, None): 0.55}},
              {"name": "B", "family": "f", "aucs": {(0, None): 0.56, (1, None): 0.50}},
              {"name": "C", "family": "f", "aucs": {(0, None): 0.70}}]
    pairs = repeats.compare_repeats(models)
    assert [p["p_value"] for p in pairs] == [None] * 3
    models = [{**m, "n_repeats": len(m["aucs"]), "auc_mean": 0.6, "auc_sd": None, "auc_min": 0.5,
               "auc_max": 0.7, "wall_time_s_mean": None, "flops_per_image": None} for m in models]
    text = "\n".join(report_markdown._md_repeats(
        {"across_repeats": {"has_repeats": True, "models": models, "pairs": pairs, "test": "t-test"}}))
    assert "2 pairs of models share fewer than two repeats: not tested." in text, text
    assert "Not tested: A vs B (ΔAUC +0.0500 in each of 2 repeats). The difference is the same" in text, text


def test_compare_groups_runs_by_stain_normaliser(runs, tmp_path):
    """The stain experiment's runs (one arch, seeds 0-1, with and without a normaliser) are two
    models of two repeats each, named by their normaliser, not four runs that cannot be repeats."""
    ids, labels, scores = runs["ids"], runs["labels"], runs["scores"]
    summary = {"arch": "ResNet18", "kind": "cnn", "transfer": "fine_tune", "weights": "none"}
    dirs = [_run_dir(tmp_path, f"{stain}_s{seed}", ids, labels, scores["r18" if seed else "r34"], summary,
                     f"seed: {seed}\ndata:\n  stain_normalize: {stain}\n", plots=False)
            for stain in ("none", "macenko") for seed in (0, 1)]
    result = compare(dirs, tmp_path / "out", n_bootstrap=0)
    models = {m["name"]: m for m in result["across_repeats"]["models"]}
    assert list(models) == ["ResNet18 fine_tune", "ResNet18 fine_tune, stain macenko"], list(models)
    assert [m["n_repeats"] for m in models.values()] == [2, 2]
    assert not any("not distinct seeds" in n for n in result["notes"]), result["notes"]
    assert models["ResNet18 fine_tune, stain macenko"]["family"] == "fine_tune, random init, stain macenko"
    (pair,) = result["across_repeats"]["pairs"]
    assert pair["n"] == 2 and pair["family"] == "across settings"


def test_depth_verdict_says_why_paired_repeats_with_equal_differences_are_not_judged():
    """The verdict's sentence for untested pairs: "one run per model" only when the runs are not
    paired; with two paired repeats and the same difference in each (sd 0) it says that instead."""
    from hcdtf.evaluation import repeats

    def member(name, arch, aucs):
        return {"name": name, "arch": arch, "family": "f", "aucs": aucs, "n_repeats": len(aucs),
                "auc_mean": sum(aucs.values()) / len(aucs), "auc_sd": 0.0 if len(aucs) > 1 else None,
                "auc_min": min(aucs.values()), "auc_max": max(aucs.values()), "wall_time_s_mean": None,
                "flops_per_image": None, "weights_kind": "imagenet"}

    paired = [member("A", "ResNet18", {(0, None): 0.61, (1, None): 0.55}),
              member("B", "ResNet34", {(0, None): 0.56, (1, None): 0.50})]
    text = repeats._family_verdict("f", paired, repeats.compare_repeats(paired), 0.05)
    assert "same in every repeat it shares (sd 0)" in text and "one run per model" not in text, text
    single = [member("A", "ResNet18", {(0, None): 0.61}), member("B", "ResNet34", {(0, None): 0.56})]
    text = repeats._family_verdict("f", single, repeats.compare_repeats(single), 0.05)
    assert "With one run per model" in text and "sd 0" not in text, text
