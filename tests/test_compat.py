"""hcdtf.compat: the names of hcdtf 0.1 still work, and run directories and exports written by
main 2a2beac (the last commit before the packages-by-stage layout) still evaluate, compare, export
and predict with today's code, giving the scores the old code gave."""

from __future__ import annotations

import csv
import importlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import REPO

OLD_COMMIT = "2a2beac"  # main before issue 22's move into packages by stage


# ----------------------------------------------------------------------------- old names
def test_old_module_paths_give_the_moved_object_with_a_deprecation_warning(monkeypatch):
    import hcdtf
    import hcdtf.data
    from hcdtf.data import pipeline
    from hcdtf.evaluation import metrics as moved_metrics

    for old in ("metrics", "predict"):  # as if this process had never imported them
        monkeypatch.delitem(sys.modules, f"hcdtf.{old}", raising=False)
        monkeypatch.delattr(hcdtf, old, raising=False)
    with pytest.warns(DeprecationWarning, match=r"hcdtf\.metrics moved to hcdtf\.evaluation\.metrics"):
        from hcdtf import metrics
    assert metrics is moved_metrics
    with pytest.warns(DeprecationWarning, match=r"hcdtf\.predict moved to hcdtf\.inference\.predict"):
        import hcdtf.predict
    assert hcdtf.predict is importlib.import_module("hcdtf.inference.predict")
    with pytest.warns(DeprecationWarning, match=r"hcdtf\.data\.make_dataset moved to hcdtf\.data\.pipeline"):
        make_dataset = hcdtf.data.make_dataset
    assert make_dataset is pipeline.make_dataset
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("hcdtf.no_such_module")


def test_the_strategy_vocabulary_is_the_one_every_place_uses():
    from hcdtf import compat, config, experiment

    assert config.RENAMED is compat.CONFIG_KEYS and experiment.RENAMED is compat.EXPERIMENT_KEYS
    assert experiment.GRID_KEYS["model.strategy"] == experiment.GRID_KEYS["model.transfer"]
    assert compat.old_flag("train", "--distribution") == compat.old_flag("experiment", "--transfer") == "--strategy"
    raw = {"model": {"strategy": "freeze_base"}, "train": {"distribution": "one", "strategy": "mirrored"}}
    assert compat.config_value(raw, "model.transfer") == "freeze_base"
    assert compat.config_value(raw, "train.distribution") == "one"  # today's name wins
    assert compat.config_value({}, "model.transfer", "x") == "x"
    old_cnn = {"strategy": "freeze_base", "model": "model.keras"}
    assert compat.current_summary(old_cnn, "model.npz") == {**old_cnn, "transfer": "freeze_base", "kind": "cnn"}
    assert compat.current_summary({"strategy": "baseline"}, "model.npz")["kind"] == "baseline"
    assert compat.current_summary({"model": "model.npz"}, "model.npz")["kind"] == "baseline"
    assert "transfer" not in compat.current_summary({"strategy": "baseline"}, "model.npz")


# ----------------------------------------------------------------------------- run dirs of 2a2beac
# One process of the old code (one TensorFlow start): a tiny synthetic sample, its build, one
# training step of ResNet-18, the old evaluation, export and prediction.
_OLD_STEPS = r"""
import sys
from hcdtf.cli import main

w = sys.argv[1]
DATA = "kaggle_val0.1_test0.4"  # a test split with at least 2 examples of each class (for DeLong)
steps = [
    ["sample-data", f"{w}/sample", "--n", "30", "--n-test", "4"],
    ["build-dataset", "--manual-dir", f"{w}/sample", "--data-dir", f"{w}/data", "--dataset-config", DATA],
    ["train", "--config", "configs/testing.yaml", "--set", "train.steps_per_epoch=1", "--set", "train.batch_size=4",
     "--data-dir", f"{w}/data", "--dataset-config", DATA, "--output-dir", f"{w}/run"],
    ["evaluate", f"{w}/run"],
    ["export", f"{w}/run", "--export-dir", f"{w}/export"],
    ["predict", f"{w}/export", "--images", f"{w}/sample/test", "--out", f"{w}/old_submission.csv",
     "--backend", "saved_model"],
]
for args in steps:
    try:
        main(args, standalone_mode=False)
    except SystemExit as e:
        if e.code:
            raise
"""


def _commit_present() -> bool:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{OLD_COMMIT}^{{commit}}"],
                             capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0


@pytest.fixture(scope="module")
def old_outputs(tmp_path_factory):
    """A run directory, its evaluation, an export and a submission, all written by 2a2beac."""
    if not _commit_present():
        pytest.skip(f"commit {OLD_COMMIT} is not in this clone (shallow or without history): nothing old to read")
    root = tmp_path_factory.mktemp("old_hcdtf")
    code, work = root / "code", root / "work"
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", OLD_COMMIT,
                              "hcdtf", "tfds_builder", "configs"], capture_output=True, check=True, timeout=120)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(code, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))  # git's own archive
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HCDTF_", "PYTHON"))}
    env.update(PYTHONPATH=str(code), CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2", HCDTF_PRECISION_PROBE="0")
    out = subprocess.run([sys.executable, "-c", _OLD_STEPS, str(work)], cwd=code, env=env, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, f"the old code failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    # The old evaluation, kept apart before today's code evaluates the run again.
    (work / "old_eval").mkdir()
    for name in ("predictions.csv", "metrics.json"):
        shutil.copy(work / "run" / name, work / "old_eval" / name)
    return work


def _scores(path) -> dict[str, float]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    column = "score" if "score" in rows[0] else "label"  # predictions.csv: score; a submission: label
    return {r["id"]: float(r[column]) for r in rows}


def _same_scores(got: dict[str, float], want: dict[str, float]) -> None:
    assert sorted(got) == sorted(want) and len(want) > 0
    np.testing.assert_allclose([got[i] for i in sorted(want)], [want[i] for i in sorted(want)], rtol=0, atol=1e-6)


def test_a_run_and_an_export_of_2a2beac_still_evaluate_compare_export_and_predict(old_outputs, tmp_path):
    from hcdtf.cli import main

    work, runner = old_outputs, CliRunner()
    run = work / "run"

    result = runner.invoke(main, ["evaluate", str(run)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    _same_scores(_scores(run / "predictions.csv"), _scores(work / "old_eval" / "predictions.csv"))
    assert json.loads((run / "metrics.json").read_text())["auc"] == pytest.approx(
        json.loads((work / "old_eval" / "metrics.json").read_text())["auc"], abs=1e-9)

    result = runner.invoke(main, ["compare", str(run), str(work / "old_eval" / "predictions.csv"), "--names",
                                  "today,old", "--n-bootstrap", "0", "--output-dir", str(tmp_path / "cmp")],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads((tmp_path / "cmp" / "comparison.json").read_text())["models"]}
    assert rows["today"]["auc"] == pytest.approx(rows["old"]["auc"], abs=1e-9)
    assert rows["today"]["arch"] == "ResNet18"  # the old run's summary read with today's names

    old_submission = _scores(work / "old_submission.csv")
    result = runner.invoke(main, ["predict", str(work / "export"), "--images", str(work / "sample" / "test"),
                                  "--out", str(tmp_path / "old_export.csv"), "--backend", "saved_model"],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    _same_scores(_scores(tmp_path / "old_export.csv"), old_submission)

    result = runner.invoke(main, ["export", str(run), "--export-dir", str(tmp_path / "export")],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["predict", str(tmp_path / "export"), "--images", str(work / "sample" / "test"),
                                  "--out", str(tmp_path / "new_export.csv"), "--backend", "saved_model"],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    _same_scores(_scores(tmp_path / "new_export.csv"), old_submission)
