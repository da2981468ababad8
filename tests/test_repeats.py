"""Tests of hcdtf.evaluation.repeats (the paired test over repeats, Holm families, the verdict) and of
hcdtf.evaluation.runinfo (how runs identify themselves).

The false-positive-rate checks simulate whole grids: every run scores the same fixed test set
(examples have a difficulty shared by all runs), and a run's AUC comes from its simulated
predictions, with a seed effect shared by the runs of one repeat and a run effect of its own.
Under the null the models share one distribution of run AUCs. The same simulation makes
single-run DeLong tests reject far above 5 %: it holds real run-to-run variation, which is what
the test over repeats must account for (a simulation without it would prove nothing).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from hcdtf.evaluation import metrics as M
from hcdtf.evaluation import repeats as R
from hcdtf.evaluation import runinfo

N_TEST = 300


def _simulate(rng, n_grids: int, effects, n_repeats: int, sd_seed=0.25, sd_run=0.25):
    """Labels (G, N), scores (G, M, R, N) and run AUCs (G, M, R) of simulated grids."""
    n_models = len(effects)
    y = (rng.uniform(size=(n_grids, N_TEST)) < 0.4).astype(float)
    y[:, :2] = (1, 0)  # both classes in every test set
    difficulty = rng.normal(size=(n_grids, 1, 1, N_TEST))  # the fixed test set's own noise
    quality = (1.5 + np.asarray(effects, dtype=float)[None, :, None, None]
               + rng.normal(0, sd_seed, (n_grids, 1, n_repeats, 1))
               + rng.normal(0, sd_run, (n_grids, n_models, n_repeats, 1)))
    scores = (quality * (y[:, None, None, :] - 0.5) + 0.8 * difficulty
              + rng.normal(size=(n_grids, n_models, n_repeats, N_TEST)))
    ranks = stats.rankdata(scores, axis=-1)
    m = y.sum(axis=1)[:, None, None]
    aucs = ((ranks * y[:, None, None, :]).sum(-1) - m * (m + 1) / 2) / (m * (N_TEST - m))
    return y, scores, aucs


def _models(aucs_g: np.ndarray, depths=None, family="fine_tune, ImageNet weights"):
    """The model dicts that compare_repeats and depth_verdict take, for one simulated grid."""
    depths = depths or [18, 34, 50, 152][: aucs_g.shape[0]]
    out = []
    for k, runs in enumerate(aucs_g):
        s = R.summarize(runs)
        out.append({"name": f"ResNet{depths[k]}", "arch": f"ResNet{depths[k]}", "family": family,
                    "kind": "cnn", "depth": depths[k], "n_repeats": s["n"], "auc_mean": s["mean"],
                    "auc_sd": s["sd"], "wall_time_s_mean": 10.0 * depths[k],
                    "flops_per_image": 1e7 * depths[k], "weights_kind": "imagenet",
                    "aucs": {(seed, None): float(a) for seed, a in enumerate(runs)}})
    return out


# ------------------------------------------------------------------------------------------
# The paired t-test
# ------------------------------------------------------------------------------------------


def test_paired_t_test_matches_scipy_and_the_formula():
    a = np.array([0.91, 0.93, 0.92, 0.95])
    b = np.array([0.90, 0.90, 0.915, 0.93])
    res = R.paired_t_test(a, b)
    ref = stats.ttest_rel(a, b)
    assert res["t"] == pytest.approx(ref.statistic) and res["p_value"] == pytest.approx(ref.pvalue)
    d = a - b
    half = stats.t.ppf(0.975, 3) * d.std(ddof=1) / 2
    assert res["diff_ci"] == pytest.approx([d.mean() - half, d.mean() + half])
    assert res["n"] == 4 and res["df"] == 3 and res["mean_diff"] == pytest.approx(d.mean())
    # One pair: no between-run variance, no test.
    one = R.paired_t_test([0.9], [0.8])
    assert one["p_value"] is None and one["t"] is None and one["mean_diff"] == pytest.approx(0.1)
    # Zero spread of the differences: equal runs -> p = 1; a constant shift (two runs on a small
    # test set give it by chance) -> no test, never "p = 0".
    assert R.paired_t_test([0.9, 0.8], [0.9, 0.8])["p_value"] == 1.0
    shift = R.paired_t_test([0.61, 0.55], [0.56, 0.50])
    assert shift["p_value"] is None and shift["t"] is None and shift["mean_diff"] == pytest.approx(0.05)
    models = [{"name": "a", "family": "f", "aucs": {(0, None): 0.61, (1, None): 0.55}},
              {"name": "b", "family": "f", "aucs": {(0, None): 0.56, (1, None): 0.50}}]
    assert R.compare_repeats(models)[0]["p_value_holm"] is None
    with pytest.raises(ValueError, match="finite"):
        R.paired_t_test([0.9, np.nan], [0.8, 0.8])
    assert R.summarize([0.9]) == {"n": 1, "mean": 0.9, "sd": None, "min": 0.9, "max": 0.9}


@pytest.mark.parametrize("n_repeats", [2, 3, 5])
def test_false_positive_rate_under_the_null(n_repeats):
    rng = np.random.default_rng(100 + n_repeats)
    grids = 1000
    y, scores, aucs = _simulate(rng, grids, [0.0, 0.0], n_repeats)
    p = [R.compare_repeats(_models(aucs[g]))[0]["p_value"] for g in range(grids)]
    rate = np.mean([q is not None and q < 0.05 for q in p])
    assert 0.02 <= rate <= 0.08, rate
    if n_repeats == 3:
        # Not a tautology: these grids hold run-to-run variation that one test set cannot see,
        # and DeLong's single-run test (valid for fixed networks) rejects the null far too often.
        delong = [M.delong_test(y[g], scores[g, 0, 0], scores[g, 1, 0])["p_value"] for g in range(300)]
        assert np.mean(np.array(delong) < 0.05) > 0.2


def test_power_with_a_real_difference():
    rng = np.random.default_rng(7)
    power = {}
    for n_repeats in (2, 5):
        _, _, aucs = _simulate(rng, 400, [0.0, 1.0], n_repeats)
        p = [R.compare_repeats(_models(aucs[g]))[0]["p_value"] for g in range(400)]
        power[n_repeats] = np.mean([q is not None and q < 0.05 for q in p])
    assert power[5] > 0.9 and power[2] < power[5]


def test_verdict_under_the_null_and_with_depth_that_helps():
    rng = np.random.default_rng(11)
    # Four depths, no real difference: the Holm family keeps "not distinguishable" >= ~95 %.
    _, _, aucs = _simulate(rng, 300, [0.0] * 4, 3)
    verdicts = [R.depth_verdict(m := _models(aucs[g]), R.compare_repeats(m)) for g in range(300)]
    assert np.mean(["Not distinguishable" in v for v in verdicts]) >= 0.92
    # Depth that really helps (ResNet18 << the rest), five repeats.
    _, _, aucs = _simulate(rng, 1, [0.0, 2.0, 2.0, 2.0], 5, sd_seed=0.1, sd_run=0.1)
    models = _models(aucs[0])
    verdict = R.depth_verdict(models, R.compare_repeats(models))
    assert "Depth helps beyond run-to-run variation" in verdict
    assert "beats ResNet18" in verdict and "Cost: ResNet152 takes 8.4x the training time" in verdict
    assert "paired t-test over 5 repeats, Holm-adjusted over 6 pairs" in verdict


def test_verdict_is_honest_about_single_runs_and_settings():
    one_run = _models(np.array([[0.95], [0.97]]), depths=[18, 34], family="freeze_base, random init")
    for m in one_run:
        m["weights_kind"] = "none"
    text = R.depth_verdict(one_run, R.compare_repeats(one_run))
    assert "one run each" in text and "cannot be judged" in text
    assert "not ImageNet" in text and "Not distinguishable" not in text
    same_depth = _models(np.array([[0.95, 0.96]]), depths=[18])
    assert "cannot say whether depth" in R.depth_verdict(same_depth, [])


def test_compare_repeats_pairs_by_key_and_holm_within_families():
    models = [
        {"name": "a", "family": "F", "aucs": {(0, None): 0.90, (1, None): 0.91, (2, None): 0.92}},
        {"name": "b", "family": "F", "aucs": {(0, None): 0.80, (1, None): 0.82, (3, None): 0.85}},
        {"name": "c", "family": "G", "aucs": {(0, None): 0.70, (1, None): 0.74, (2, None): 0.71}},
    ]
    pairs = {(p["a"], p["b"]): p for p in R.compare_repeats(models)}
    ab = pairs[("a", "b")]
    assert ab["repeats"] == [(0, None), (1, None)] and ab["n"] == 2
    assert sorted(ab["unpaired"]) == [(2, None), (3, None)]
    assert ab["mean_diff"] == pytest.approx(((0.90 - 0.80) + (0.91 - 0.82)) / 2)
    assert ab["family"] == "F" and ab["p_value_holm"] == ab["p_value"]  # alone in its family
    across = [pairs[("a", "c")], pairs[("b", "c")]]
    assert all(p["family"] == R.ACROSS_SETTINGS for p in across)
    assert [p["p_value_holm"] for p in across] == pytest.approx(M.holm_adjust([p["p_value"] for p in across]))


# ------------------------------------------------------------------------------------------
# How runs identify themselves
# ------------------------------------------------------------------------------------------


def _run(tmp_path: Path, name: str, summary: dict | None, config: str = "") -> Path:
    run = tmp_path / name
    run.mkdir()
    if summary is not None:
        (run / "train_summary.json").write_text(json.dumps(summary))
    if config:
        (run / "config.yaml").write_text(config)
    return run


def test_run_info_old_and_new_names(tmp_path: Path):
    legacy = runinfo.read_run_info(_run(tmp_path, "old", {
        "arch": "ResNet34", "depth": 34, "strategy": "freeze_base", "weights": "none (ImageNet weights unavailable)",
        "wall_time_s": 12.5, "flops_per_image": 3.6e9}, "seed: 3\nmodel:\n  arch: ResNet34\n"))
    assert (legacy.kind, legacy.transfer, legacy.weights_kind, legacy.seed, legacy.fold) == (
        "cnn", "freeze_base", "none", 3, None)
    assert legacy.depth == 34 and legacy.wall_time_s == 12.5
    new = runinfo.read_run_info(_run(tmp_path, "new", {
        "arch": "ResNet50", "kind": "cnn", "transfer": "fine_tune", "weights": "imagenet",
        "seed": 1, "fold": 2}, "seed: 9\ndata:\n  data_dir: /d\n  dataset_config: kaggle\n"))
    assert (new.transfer, new.weights_kind, new.seed, new.fold, new.depth) == ("fine_tune", "imagenet", 1, 2, 50)
    assert (new.data_dir, new.dataset_config) == ("/d", "kaggle")
    assert runinfo.repeat_key(new) == (1, 2)
    base = runinfo.read_run_info(_run(tmp_path, "lr", {
        "arch": "LogisticRegression", "strategy": "baseline", "depth": None, "features": "gray"},
        "seed: 0\nfold: 4\n"))
    assert (base.kind, base.transfer, base.weights_kind, base.features, base.depth, base.fold) == (
        "baseline", None, None, "gray", None, 4)
    from_file = runinfo.read_run_info(_run(tmp_path, "file", {
        "arch": "ResNet18", "strategy": "fine_tune", "weights": "/w/r18.weights.h5"}))
    assert from_file.weights_kind == "file" and from_file.seed is None
    # Model identity: same arch/transfer/weights kind -> one model; repeats differ in seed/fold.
    again = runinfo.read_run_info(_run(tmp_path, "new2", {
        "arch": "ResNet50", "kind": "cnn", "transfer": "fine_tune", "weights": "imagenet", "seed": 2}))
    assert runinfo.model_key(again) == runinfo.model_key(new)
    assert runinfo.model_key(runinfo.read_run_info(None)) is None
    # An arch that names no depth: the kind recorded in run.json says what the run is, and a run
    # without one is a CNN unless its files say baseline (RunDir's rule for older runs).
    custom = _run(tmp_path, "custom", {"arch": "CustomNet", "transfer": "fine_tune", "weights": "imagenet"})
    info = runinfo.read_run_info(custom)
    assert (info.kind, info.transfer, info.depth) == ("cnn", "fine_tune", None)
    (custom / "run.json").write_text('{"kind": "baseline"}')
    assert runinfo.read_run_info(custom).kind == "baseline"


def test_run_info_bad_files(tmp_path: Path):
    bad = _run(tmp_path, "bad", None)
    (bad / "train_summary.json").write_text("{not json")
    with pytest.raises(ValueError, match="train_summary.json: not valid JSON"):
        runinfo.read_run_info(bad)
    worse = _run(tmp_path, "worse", {"arch": "ResNet18"}, "seed: [unclosed\n")
    with pytest.raises(ValueError, match="config.yaml: not valid YAML"):
        runinfo.read_run_info(worse)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        odd = runinfo.read_run_info(_run(tmp_path, "odd", {"arch": "ResNet18", "wall_time_s": "fast", "seed": 1.5}))
    assert odd.wall_time_s is None and odd.seed is None
    assert any("wall_time_s='fast'" in str(w.message) for w in caught)


def test_stain_settings_make_another_model_and_leave_older_keys_alone(tmp_path: Path):
    """Runs of the stain experiment at one seed differ only in data.stain_normalize (and
    data.stain_augment): they are three models, not three runs that cannot be repeats; a run
    without them (default none / 0) keeps the key it had before these fields were read."""
    summary = {"arch": "ResNet18", "kind": "cnn", "transfer": "fine_tune", "weights": "none", "seed": 0}
    infos = {name: runinfo.read_run_info(_run(tmp_path, name, summary, f"seed: 0\ndata:\n{data}"))
             for name, data in (("plain", "  stain_normalize: none\n  stain_augment: 0.0\n"),
                                ("macenko", "  stain_normalize: macenko\n  stain_target: train\n"),
                                ("reinhard", "  stain_normalize: reinhard\n"),
                                ("augmented", "  stain_augment: 0.1\n"),
                                ("older", "  data_dir: /d\n"))}
    keys = {name: runinfo.model_key(info) for name, info in infos.items()}
    assert keys["plain"] == keys["older"] == ("cnn", "ResNet18", "fine_tune", None, "none", None)
    assert len({keys[n] for n in ("plain", "macenko", "reinhard", "augmented")}) == 4, keys
    assert (infos["macenko"].stain_normalize, infos["augmented"].stain_augment) == ("macenko", 0.1)
    assert {runinfo.repeat_key(i) for i in infos.values()} == {(0, None)}
