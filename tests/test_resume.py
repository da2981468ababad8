"""A killed `hcdtf train` resumes as the same training: SIGKILL at many instants (inside the epoch,
inside and around every end-of-epoch write, during the final writes), rerun the same command each
time, and the result equals an uninterrupted run's bit for bit (op determinism is on)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from hcdtf.evaluation import artifacts
from hcdtf import rundir
from hcdtf.training import train

from conftest import CONFIGS, REPO, testing_config

# Dropout and augmentation on: their random state must survive a kill too.
SETTINGS = ("train.epochs=3", "train.steps_per_epoch=2", "model.dropout=0.5", "data.augment=true")

# Each process of the chain resumes what the previous one left and is killed at the next point
# ("name:n" = the n-th time this process reaches it). Epoch 1 is killed at every step of its
# commit; the resumed run is killed while it repairs what the commit had not written yet. Before
# the process marked DAMAGED starts, the newest state file (epoch 2's) is truncated, as a failing
# disk would leave it: that process says so, falls back to epoch 1's state and trains epoch 2 again.
# Each process costs a TensorFlow start, a model build and a trace (~13 CPU-s), so an instant whose
# resume path another point already takes is not repeated: a kill inside an epoch is tested in
# epoch 3 (DAMAGED; in epoch 1 it resumes as before-state-write:1 does, from no state), a kill inside
# the state write in epoch 1 only, and one kill inside the final writes: a resumed run whose summary
# is missing redoes all of them (model.keras, val_predictions.csv, the summary) whichever were
# written, so a kill before or after model.keras takes the same path as after-val-predictions.
CHAIN = (
    "before-state-write:1",     # epoch 1 trained, nothing committed
    "inside-state-write:1",     # the state file written under its temporary name only
    "after-state-commit:1",     # committed; best checkpoint and history.csv not yet written
    "after-best-write:1",       # the resumed process, repairing epoch 1's files
    "after-history:2",          # epoch 2 committed with all its files
    "mid-epoch:3",              # DAMAGED: epoch 2 again, then killed at epoch 3's first step
    "after-state-commit:1",     # epoch 3 committed; its best checkpoint and history.csv not yet written
    "after-val-predictions",    # the resumed process repairs epoch 3's files, writes model.keras and
                                # val_predictions.csv; killed before the summary
    "after-summary",            # finished (the process above's files rewritten); the backup not removed yet
)
DAMAGED = CHAIN.index("mid-epoch:3")


def _cmd(data_dir, run):
    sets = [a for s in SETTINGS for a in ("--set", s)]
    return [sys.executable, "-m", "hcdtf.cli", "train", "--config", str(CONFIGS / "testing.yaml"),
            "--data-dir", str(data_dir), "--output-dir", str(run), *sets]


def _weights(path):
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def _same_training(a, b):
    assert (a / "history.csv").read_text() == (b / "history.csv").read_text()
    wa, wb = _weights(a / "checkpoints" / "best.weights.h5"), _weights(b / "checkpoints" / "best.weights.h5")
    assert wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)
    _, _, sa = artifacts.read_predictions(a / "val_predictions.csv")
    _, _, sb = artifacts.read_predictions(b / "val_predictions.csv")
    np.testing.assert_array_equal(sa, sb)


@pytest.fixture(scope="module")
def uninterrupted(data_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("uninterrupted") / "run"
    train.train(testing_config(data_dir, run, *SETTINGS), log=lambda *_: None)
    return run


def test_killed_at_every_instant_resumes_to_the_uninterrupted_result(data_dir, uninterrupted, tmp_path):
    run = tmp_path / "run"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    for i, point in enumerate(CHAIN):
        if i == DAMAGED:
            states = sorted((run / "backup").glob("state-*.npz"))
            assert [p.name for p in states] == ["state-0001.npz", "state-0002.npz"]  # the last two kept
            states[-1].write_bytes(states[-1].read_bytes()[:1000])
        done = subprocess.run(_cmd(data_dir, run), env={**env, "HCDTF_KILL_AT": point}, cwd=REPO,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == -9, f"{point}: not killed there\n{done.stdout}{done.stderr[-3000:]}"
        assert not list(run.glob("history.csv.tmp*"))
        if i == DAMAGED:
            assert "state-0002.npz: unreadable resume state" in done.stdout, done.stdout
            assert "resuming after epoch 1" in done.stdout, done.stdout
    done = subprocess.run(_cmd(data_dir, run), env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "already complete" in done.stdout  # the kill came after the summary
    assert not (run / "backup").exists()  # and the stale backup is gone
    assert not [p for p in run.rglob("*") if rundir.TMP_MARK in p.name]  # no temporaries left
    _same_training(run, uninterrupted)
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["epochs_completed"] == 3 and summary["sessions"] > 1
    assert summary["wall_time_s"] >= summary["train_time_s"] > 0  # every session's time counted
