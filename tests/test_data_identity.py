"""Issue 21, case 1: nothing stale after the data set changed.

The issue's scenario on copies of the session's sample and data set: a two-run experiment
(ResNet10 on a frozen base, one step, + logistic regression) is trained on build A; 3 labels of
train_labels.csv are flipped and the data set rebuilt with --overwrite (build B, ids move
between splits). Then `experiment` refuses the runs naming what changed and retrains them with
--overwrite; `evaluate` scores build B and says the run was trained on A; `compare` refuses an
evaluation on A beside one on B; `export` records the data the model was trained on. Runs of older
hcdtf versions (no identity recorded) still evaluate, compare, export and pass `experiment`, with
one note.
"""

from __future__ import annotations

import csv
import json
import shutil
import textwrap

import pytest
from click.testing import CliRunner

from hcdtf.data import pipeline as data
from hcdtf.evaluation import evaluate
from hcdtf.cli import main

from conftest import cli_fails

GRID = """
    configs: [testing.yaml]
    archs: [ResNet10]
    transfers: [freeze_base]
    baseline: true
    compare: {n_bootstrap: 20}
"""
RUNS = ("resnet10_freeze_base", "logistic_regression")


def _overrides(tfds):
    return [f"data.data_dir={tfds}", "train.batch_size=4", "train.steps_per_epoch=1", "data.max_train_examples=8",
            "eval.n_bootstrap=20"]


def _args(grid, out, tfds, *more):
    return ["experiment", str(grid), "--output-dir", str(out), *[a for o in _overrides(tfds) for a in ("--set", o)],
            *more]


def _json(path):
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def on_build_a(sample_dir, data_dir, tmp_path_factory):
    """(manual dir, data dir, grid file, experiment dir): copies of the session's sample and its
    build (A), and the experiment trained and evaluated on A."""
    base = tmp_path_factory.mktemp("data_identity")
    sample, tfds = base / "sample", base / "tfds"
    shutil.copytree(sample_dir, sample)
    shutil.copytree(data_dir, tfds)
    grid = base / "grid.yaml"
    grid.write_text(textwrap.dedent(GRID))
    out = base / "exp"
    result = CliRunner().invoke(main, _args(grid, out, tfds))
    assert result.exit_code == 0, result.output
    return sample, tfds, grid, out


def _flip_three_labels_and_rebuild(sample, tfds, ids):
    path = sample / "train_labels.csv"
    rows = list(csv.reader(path.open()))
    for row in rows[1:]:
        if row[0] in ids:
            row[1] = str(1 - int(row[1]))
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    data.build_dataset(str(sample), str(tfds), "kaggle", overwrite=True)


def test_a_rebuilt_data_set_is_never_mistaken_for_the_old_one(on_build_a, tmp_path):
    sample, tfds, grid, out = on_build_a
    runs = out / "runs"
    run_a = {name: _json(runs / name / "run.json")["data"] for name in RUNS}
    metrics_a = {name: _json(runs / name / "metrics.json") for name in RUNS}
    assert metrics_a[RUNS[0]]["data"]["build"] == run_a[RUNS[0]]["build"] is not None
    assert metrics_a[RUNS[0]]["data"]["trained_on_this_build"] is True
    old_baseline = tmp_path / "baseline_on_a"
    shutil.copytree(runs / "logistic_regression", old_baseline)

    test_ids = [row[0] for row in csv.reader((runs / RUNS[0] / "predictions.csv").open())][1:4]
    _flip_three_labels_and_rebuild(sample, tfds, set(test_ids))  # 3 patches of the test split

    # experiment: refused, naming what changed; nothing is touched.
    stamps = {name: (runs / name / "metrics.json").stat().st_mtime_ns for name in RUNS}
    failed = cli_fails(_args(grid, out, tfds), "trained on another build", "train_labels.csv: content differs",
                       "--overwrite")
    assert "up to date" not in failed.output
    assert stamps == {name: (runs / name / "metrics.json").stat().st_mtime_ns for name in RUNS}

    # train: the finished run is not "already complete" on the rebuilt data; refused the same way.
    cnn_run = runs / RUNS[0]
    before = (cnn_run / "train_summary.json").read_bytes()
    cli_fails(["train", "--config", str(cnn_run / "config.yaml"), "--output-dir", str(cnn_run)],
              "trained on another build", "train_labels.csv: content differs", "--overwrite")
    assert (cnn_run / "train_summary.json").read_bytes() == before

    # evaluate: scores build B, says the run was trained on A, records both.
    lines: list[str] = []
    cnn = runs / "resnet10_freeze_base"
    evaluate.evaluate_run(cnn, log=lines.append)
    assert sum("trained on another build" in line and "train_labels.csv" in line for line in lines) == 1, lines
    on_b = _json(cnn / "metrics.json")["data"]
    assert on_b["build"] != run_a[RUNS[0]]["build"] and on_b["trained_on_this_build"] is False
    assert on_b["examples"]["sha256"] != metrics_a[RUNS[0]]["data"]["examples"]["sha256"]  # ids moved

    # compare: an evaluation on A and one on B are not put in one table.
    cli_fails(["compare", str(old_baseline), str(cnn), "--output-dir", str(tmp_path / "cmp"), "--n-bootstrap", "0"],
              "different test sets", "'baseline_on_a'", "'resnet10_freeze_base'")
    assert not (tmp_path / "cmp" / "report.md").exists()

    # export: allowed (the model is what it is), said in one line, recorded in the metadata.
    from hcdtf import export

    lines.clear()
    version = export.export_run(cnn, tmp_path / "models" / "hcd", log=lines.append)
    assert sum("trained on an earlier build" in line for line in lines) == 1, lines
    recorded = _json(version / "assets" / "hcdtf_metadata.json")["data"]
    assert recorded["matches_current_build"] is False
    assert recorded["trained_on"]["build"] == run_a[RUNS[0]]["build"]
    assert any("train_labels.csv" in c for c in recorded["changes"])

    # experiment --overwrite: both runs retrained and evaluated on B; a rerun is then up to date.
    result = CliRunner().invoke(main, _args(grid, out, tfds, "--overwrite"))
    assert result.exit_code == 0, result.output
    assert result.output.count("data changed, retraining") == 2, result.output
    for name in RUNS:
        assert _json(runs / name / "run.json")["data"]["build"] == on_b["build"]
        recorded = _json(runs / name / "metrics.json")["data"]
        assert recorded["build"] == on_b["build"] and recorded["trained_on_this_build"] is True
    result = CliRunner().invoke(main, _args(grid, out, tfds))
    assert result.exit_code == 0 and result.output.count("evaluation up to date") == 2, result.output


def _as_older_hcdtf(run):
    """Strips what this version records about the data from a run (as older versions wrote it)."""
    for name in ("run.json", "metrics.json"):
        d = _json(run / name)
        d.pop("data", None)
        (run / name).write_text(json.dumps(d))


def test_runs_of_older_versions_still_evaluate_compare_export_and_pass_experiment(on_build_a, tmp_path):
    sample, tfds, grid, out = on_build_a
    result = CliRunner().invoke(main, _args(grid, out, tfds))  # whichever build the module left
    assert result.exit_code == 0, result.output
    for name in RUNS:
        _as_older_hcdtf(out / "runs" / name)
    result = CliRunner().invoke(main, _args(grid, out, tfds))
    assert result.exit_code == 0, result.output
    assert result.output.count("record no identity of the data") == 1, result.output  # said once
    assert result.output.count("already complete, skipped; evaluated;") == 2, result.output  # not "up to date"

    older = {}
    for name in RUNS:
        older[name] = tmp_path / name
        shutil.copytree(out / "runs" / name, older[name])
        _as_older_hcdtf(older[name])
    result = CliRunner().invoke(main, ["compare", *map(str, older.values()), "--output-dir", str(tmp_path / "cmp"),
                                       "--n-bootstrap", "0"])
    assert result.exit_code == 0, result.output
    assert result.output.count("test set not recorded") == 1, result.output
    assert "test set not recorded" in (tmp_path / "cmp" / "report.md").read_text()

    lines: list[str] = []
    evaluate.evaluate_run(older[RUNS[1]], log=lines.append)
    assert sum("records no identity" in line for line in lines) == 1, lines
    assert _json(older[RUNS[1]] / "metrics.json")["data"]["trained_on_this_build"] is None
