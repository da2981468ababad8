"""`hcdtf experiment`: the experiment-file schema, and the smoke grid end to end.

The end-to-end test runs configs/experiments/paper_smoke.yaml on the session's tiny data set with
the grid narrowed to ResNet18 (both strategies) + logistic regression, one training step each:
ResNet34/50/152 would only repeat the same code path at several times the CPU cost (ResNet152
trains at ~3 images/s here). The full smoke grid is `hcdtf experiment paper_smoke` (minutes).
"""

from __future__ import annotations

import json
import textwrap

import pytest
from click.testing import CliRunner

from hcdtf import experiment
from hcdtf.cli import main
from hcdtf.config import ConfigError

from conftest import CONFIGS, cli_fails


def _write(tmp_path, text, name="grid.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize(
    "text, words",
    [
        ("archs: [ResNet18]\nepochs: 3\n", ["unknown config key 'epochs'", "archs", "per_transfer"]),
        ("archs: [ResNet18, ResNet19]\n", ["archs", "ResNet19", "ResNet152"]),
        ("transfers: [fine_tune, linear_probe]\n", ["transfers", "linear_probe", "freeze_base"]),
        ("strategies: [fine_tune, linear_probe]\n", ["transfers", "linear_probe", "freeze_base"]),  # old name
        ("per_transfer:\n  partial: {set: []}\n", ["per_transfer", "partial", "fine_tune"]),
        ("per_transfer:\n  fine_tune: {sets: []}\n", ["per_transfer.fine_tune", "sets", "configs"]),
        ("set: [train.epoch=3]\n", ["set[0]", "train.epoch", "epochs"]),
        ("set: [train.epochs=three]\n", ["set[0]", "train.epochs", "int"]),
        ("set: [model.arch=ResNet50]\n", ["set[0]", "model.arch", "archs:"]),
        ("set: [seed=3]\n", ["set[0]", "seed", "seeds:"]),
        ("set: train.epochs=3\n", ["set must be a list"]),
        ("baseline: maybe\n", ["baseline", "bool"]),
        ("compare: {n_bootstrap: 10, alpha: 0.05}\n", ["compare.", "alpha", "n_bootstrap"]),
        ("sample: {n: 10}\n", ["sample.n", ">= 40"]),
        ("seeds: [0, 1, 0]\n", ["seeds", "twice"]),
        ("seeds: [-1]\n", ["seeds", ">= 0"]),
        ("seeds: 3\n", ["seeds", "must be a list"]),
        ("- ResNet18\n", ["top level must be a mapping"]),
        ("archs: [ResNet18\n", ["not valid YAML"]),
    ],
)
def test_invalid_experiment_files_name_the_file_and_key(tmp_path, text, words):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        experiment.load_experiment(path)
    message = str(info.value)
    assert str(path) in message, message
    for w in words:
        assert w in message, message


def test_missing_config_file_and_grid_keys_on_the_command_line(tmp_path):
    path = _write(tmp_path, "archs: [ResNet18]\nconfigs: [no_such.yaml]\n")
    with pytest.raises(ConfigError, match=r"no_such\.yaml.*not found") as info:
        experiment.plan(experiment.load_experiment(path))
    assert str(path) in str(info.value)
    ok = experiment.load_experiment(_write(tmp_path, "archs: [ResNet18]\n", "ok.yaml"))
    with pytest.raises(ConfigError, match="--arch"):
        experiment.plan(ok, overrides=["model.arch=ResNet50"])
    with pytest.raises(ConfigError, match=r"--set 'train\.epoch=2'.*epochs"):
        experiment.plan(ok, overrides=["train.epoch=2"])
    with pytest.raises(ConfigError, match="ResNet19"):
        experiment.narrow(ok, archs=["ResNet19"])
    with pytest.raises(ConfigError, match="--seeds"):
        experiment.plan(ok, overrides=["seed=1"])


def test_cli_reports_a_bad_experiment_in_one_line(tmp_path):
    path = _write(tmp_path, "arch: [ResNet18]\n")
    result = CliRunner().invoke(main, ["experiment", str(path)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert str(path) in result.output and "unknown config key 'arch'" in result.output
    result = CliRunner().invoke(main, ["experiment", str(tmp_path / "none.yaml")])
    assert result.exit_code == 2 and "does not exist" in result.output and "paper_smoke" in result.output


def test_shipped_experiments_plan_the_papers_grid():
    paper = experiment.load_experiment(CONFIGS / "experiments" / "paper.yaml")
    runs = experiment.plan(paper)
    assert [r.name for r in runs] == [
        f"{a}_{s}" for a in ("resnet18", "resnet34", "resnet50", "resnet152") for s in ("freeze_base", "fine_tune")
    ] + ["logistic_regression"]
    by_name = {r.name: r.cfg for r in runs}
    assert by_name["resnet34_freeze_base"].train.learning_rate == pytest.approx(1e-3)  # freeze_base.yaml
    assert by_name["resnet34_fine_tune"].train.learning_rate == pytest.approx(1e-4)
    assert by_name["resnet152_fine_tune"].model.weights == "imagenet"
    assert all(str(r.run_dir).startswith("outputs/paper/runs/") for r in runs)

    smoke = experiment.load_experiment("paper_smoke")  # a shipped experiment by name
    experiment.narrow(smoke, archs=["ResNet34"], baseline=False)
    runs = experiment.plan(smoke, overrides=["train.epochs=2"])
    assert [r.name for r in runs] == ["resnet34_freeze_base", "resnet34_fine_tune"]
    cfg = runs[0].cfg
    assert cfg.data.data_dir == "outputs/paper_smoke/tensorflow_datasets"  # {output_dir} substituted
    assert cfg.train.epochs == 2 and cfg.model.fallback_to_scratch and not cfg.data.augment
    assert runs[1].cfg.data.augment


def test_smoke_experiment_end_to_end_and_resume(data_dir, tmp_path):
    out = tmp_path / "exp"
    overrides = [f"data.data_dir={data_dir}", "model.weights=none", "train.batch_size=4",
                 "train.steps_per_epoch=1", "data.max_train_examples=8", "eval.n_bootstrap=20"]
    lines: list[str] = []
    summary = experiment.run(CONFIGS / "experiments" / "paper_smoke.yaml", overrides=overrides,
                             output_dir=str(out), archs=["ResNet18"], log=lines.append)
    names = ["resnet18_freeze_base", "resnet18_fine_tune", "logistic_regression"]
    assert [r["name"] for r in summary["runs"]] == names
    assert [r["status"] for r in summary["runs"]] == ["done"] * 3
    for i, name in enumerate(names, 1):
        assert any(line.startswith(f"[{i}/3] {name}: done") for line in lines), lines
        assert (out / "runs" / name / "metrics.json").is_file()
    assert not (out / "sample").exists()  # the data set was built already: no sample written
    report = (out / "comparison" / "report.md").read_text()
    assert all(f"| {n} |" in report for n in names), report
    assert "0.992" in report  # the paper's ResNet-34 figure beside ours
    comparison = json.loads((out / "comparison" / "comparison.json").read_text())
    assert [m["name"] for m in comparison["models"]] == names
    assert (out / "experiment.json").is_file() and (out / "experiment.yaml").is_file()
    stamp = (out / "runs" / "resnet18_fine_tune" / "metrics.json").stat().st_mtime

    # The same command again: nothing is trained or evaluated again.
    args = ["experiment", str(CONFIGS / "experiments" / "paper_smoke.yaml"), "--output-dir", str(out),
            "--arch", "ResNet18", *[a for o in overrides for a in ("--set", o)]]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert result.output.count("already complete, skipped; evaluation up to date") == 3, result.output
    assert "report: " + str(out / "comparison" / "report.md") in result.output
    assert (out / "runs" / "resnet18_fine_tune" / "metrics.json").stat().st_mtime == stamp
    again = json.loads((out / "experiment.json").read_text())
    assert [r["status"] for r in again["runs"]] == ["skipped"] * 3

    # A changed config is refused (never silently mixed into the report) unless --overwrite.
    result = CliRunner().invoke(main, [*args, "--set", "train.learning_rate=0.01", "--no-baseline"])
    assert result.exit_code == 2 and "another config" in result.output, result.output


def test_repeats_over_seeds_name_their_runs_and_are_compared_across_repeats(data_dir, tmp_path):
    path = _write(tmp_path, """
        archs: [ResNet10]
        transfers: [freeze_base]
        per_transfer: {freeze_base: {set: [data.augment=false]}}
        baseline: false
        compare: {n_bootstrap: 20}
    """)
    overrides = [f"data.data_dir={data_dir}", "model.weights=none", "train.batch_size=8", "train.epochs=1",
                 "train.steps_per_epoch=1", "eval.n_bootstrap=20"]
    exp = experiment.load_experiment(path)
    experiment.narrow(exp, seeds=[0, 1])
    runs = experiment.plan(exp, overrides)
    assert [(r.name, r.cfg.seed) for r in runs] == [("resnet10_freeze_base_seed0", 0), ("resnet10_freeze_base_seed1", 1)]
    result = CliRunner().invoke(main, ["experiment", str(path), "--output-dir", str(tmp_path / "out"),
                                       "--seeds", "0,1", *[a for o in overrides for a in ("--set", o)]])
    assert result.exit_code == 0, result.output
    comparison = json.loads((tmp_path / "out" / "comparison" / "comparison.json").read_text())
    assert sorted((m["name"], m["seed"]) for m in comparison["models"]) == [
        ("resnet10_freeze_base_seed0", 0), ("resnet10_freeze_base_seed1", 1)]
    # The two seeds are repeats of one model (not two models of one run each).
    (model,) = comparison["across_repeats"]["models"]
    assert model["n_repeats"] == 2 and sorted(r[0] for r in model["repeats"]) == [0, 1]
    assert comparison["across_repeats"]["has_repeats"] is True
    cli_fails(["experiment", str(path), "--seeds", "0,0"], "twice")
    cli_fails(["experiment", str(path), "--seeds", "a"], "integers")


def test_an_experiment_killed_between_runs_and_inside_one_ends_as_an_uninterrupted_one(data_dir, tmp_path):
    import os
    import subprocess
    import sys

    from conftest import REPO

    path = _write(tmp_path, """
        archs: [ResNet10]
        transfers: [fine_tune, freeze_base]
        per_transfer: {fine_tune: {set: [train.epochs=1]}, freeze_base: {set: [data.augment=false, train.epochs=2]}}
        baseline: false
        compare: {n_bootstrap: 20}
    """)
    # Run 1 is only killed after (then skipped): one epoch is enough (a second one was trained in
    # two processes for nothing); run 2 has the kill inside its second epoch.
    overrides = [f"data.data_dir={data_dir}", "model.weights=none", "train.batch_size=8",
                 "train.steps_per_epoch=2", "eval.n_bootstrap=20", "train.early_stopping_patience=0"]
    reference = experiment.run(path, overrides=overrides, output_dir=str(tmp_path / "ref"), log=lambda *_: None)
    cmd = [sys.executable, "-m", "hcdtf.cli", "experiment", str(path), "--output-dir", str(tmp_path / "out"),
           *[a for o in overrides for a in ("--set", o)]]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    # After run 1; then inside run 2's second epoch, before it is committed. Run 2 trains a head on
    # cached features, which runs an epoch's 2 steps in one call: the batch hook fires once per epoch.
    for point in ("experiment-between-runs:1", "mid-epoch:2"):
        killed = subprocess.run(cmd, env={**env, "HCDTF_KILL_AT": point}, cwd=REPO, capture_output=True,
                                text=True, timeout=900)
        assert killed.returncode == -9, f"{point}: {killed.stdout}{killed.stderr[-2000:]}"
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert "already complete, skipped" in done.stdout and "resuming after epoch 1" in done.stdout
    for r in reference["runs"]:
        a, b = tmp_path / "ref" / "runs" / r["name"], tmp_path / "out" / "runs" / r["name"]
        for name in ("history.csv", "val_predictions.csv", "predictions.csv"):
            assert (a / name).read_text() == (b / name).read_text(), f"{r['name']}/{name}"
    ref = json.loads((tmp_path / "ref" / "comparison" / "comparison.json").read_text())
    out = json.loads((tmp_path / "out" / "comparison" / "comparison.json").read_text())
    assert [(m["name"], m["auc"]) for m in ref["models"]] == [(m["name"], m["auc"]) for m in out["models"]]


def test_fold_repeats_need_a_fold_build_and_name_their_runs():
    exp = experiment.load_experiment("paper_smoke")
    experiment.narrow(exp, archs=["ResNet18"], transfers=["fine_tune"], folds=[0, 1])
    with pytest.raises(ConfigError, match="need a fold build.*kaggle_folds5"):
        experiment.plan(exp)
    runs = experiment.plan(exp, ["data.dataset_config=kaggle_folds3"])
    assert [(r.name, r.cfg.data.fold) for r in runs] == [
        ("resnet18_fine_tune_fold0", 0), ("logistic_regression_fold0", 0),
        ("resnet18_fine_tune_fold1", 1), ("logistic_regression_fold1", 1)]
    with pytest.raises(ConfigError, match="--folds"):
        experiment.plan(exp, ["data.dataset_config=kaggle_folds3", "data.fold=1"])
    experiment.narrow(exp, folds=[0, 1, 2], seeds=[3, 4])
    with pytest.raises(ConfigError, match="folds 0..1"):
        experiment.plan(exp, ["data.dataset_config=kaggle_folds2"])
    runs = experiment.plan(exp, ["data.dataset_config=kaggle_folds3"])
    assert len(runs) == 12 and runs[0].name == "resnet18_fine_tune_seed3_fold0" and runs[0].cfg.seed == 3
