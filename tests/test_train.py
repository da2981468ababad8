"""Training on the tiny shared data set: run directory, determinism, resume after SIGKILL, the
frozen-base feature cache, tf.distribute strategies and the run-directory guards."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from hcdtf.evaluation import artifacts
from hcdtf.training import train

from conftest import CONFIGS, REPO, testing_config

RUN_FILES = ("config.yaml", "history.csv", "model.keras", "val_predictions.csv", "train_summary.json",
             "checkpoints/best.weights.h5", "logs")


def _history(run):
    with open(run / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_run_directory(trained_run):
    for name in RUN_FILES:
        assert (trained_run / name).exists(), name
    assert not (trained_run / "backup").exists()  # removed once the run has finished
    summary = json.loads((trained_run / "train_summary.json").read_text())
    for key in ("epochs_completed", "wall_time_s", "images_per_s", "precision", "distribution",
                "params_total", "params_trainable", "flops_per_image", "best_val_auc"):
        assert summary[key] is not None, key
    assert summary["arch"] == "ResNet10" and summary["precision"] == "float32"
    assert summary["epochs_completed"] == 1 and len(_history(trained_run)) == 1
    ids, labels, scores = artifacts.read_predictions(trained_run / "val_predictions.csv")
    assert len(ids) == summary["n_validation"] and np.all((scores >= 0) & (scores <= 1))


def test_same_seed_same_validation_predictions(data_dir, trained_run, tmp_path):
    again = tmp_path / "again"
    train.train(testing_config(data_dir, again), log=lambda *_: None)
    _, _, a = artifacts.read_predictions(trained_run / "val_predictions.csv")
    _, _, b = artifacts.read_predictions(again / "val_predictions.csv")
    np.testing.assert_array_equal(a, b)


def test_finished_run_is_skipped_and_another_config_refused(data_dir, trained_run, tmp_path):
    # a copy: training takes the run's lock, and conftest's run is read by tests on the other worker
    run = shutil.copytree(trained_run, tmp_path / "run", ignore=shutil.ignore_patterns(".lock"))
    model = (run / "model.keras").read_bytes()
    logs = []
    summary = train.train(testing_config(data_dir, run), log=logs.append)
    assert "already complete" in logs[0] and summary["epochs_completed"] == 1
    with pytest.raises(train.RunDirError, match="another config.*--overwrite"):
        train.train(testing_config(data_dir, run, "train.learning_rate=0.5"), log=lambda *_: None)
    assert (run / "model.keras").read_bytes() == model  # untouched


def test_non_run_directory_is_refused(data_dir, tmp_path):
    (tmp_path / "mine.txt").write_text("user data")
    with pytest.raises(train.RunDirError, match="not empty"):
        train.train(testing_config(data_dir, tmp_path), log=lambda *_: None)
    assert (tmp_path / "mine.txt").read_text() == "user data"


def _cli(*args):
    return [sys.executable, "-m", "hcdtf.cli", *args]


def test_feature_cache_matches_training_through_the_frozen_base(data_dir, tmp_path):
    """One full batch per epoch and no dropout: both paths see the same examples and compute the
    same gradient, so the trained heads must agree (up to float summation order)."""
    common = ("model.transfer=freeze_base", "model.dropout=0.0", "train.batch_size=128",
              "train.epochs=3", "train.learning_rate=0.01", "train.steps_per_epoch=null")
    logs = []
    cached = train.train(testing_config(data_dir, tmp_path / "cached", *common), log=logs.append)
    direct = train.train(testing_config(data_dir, tmp_path / "direct", *common, "train.feature_cache=false"),
                         log=lambda *_: None)
    assert cached["feature_cache"] and not direct["feature_cache"]
    assert any("feature cache on" in line for line in logs)
    _, _, a = artifacts.read_predictions(tmp_path / "cached" / "val_predictions.csv")
    _, _, b = artifacts.read_predictions(tmp_path / "direct" / "val_predictions.csv")
    np.testing.assert_allclose(a, b, atol=1e-5)
    ha, hb = _history(tmp_path / "cached"), _history(tmp_path / "direct")
    for ra, rb in zip(ha, hb):
        assert float(ra["loss"]) == pytest.approx(float(rb["loss"]), rel=1e-4)


def test_augmentation_turns_the_feature_cache_off(data_dir, tmp_path):
    cfg = testing_config(data_dir, tmp_path, "model.transfer=freeze_base", "data.augment=true")
    used, why = train.use_feature_cache(cfg, "one")
    assert not used and "augmentation" in why


_DISTRIBUTED = textwrap.dedent(
    """
    import json, sys
    from hcdtf.config import ConfigError
    from hcdtf.data import pipeline as data
    from hcdtf.training import train
    sys.path.insert(0, {tests!r})
    from conftest import testing_config
    # One batch holding the whole (even-sized) training split: the first step then sees the same
    # examples whatever order the shuffle gives (experimental_distribute_dataset yields another
    # order than one device with the same seed), on one device and split over two. "mirrored_cache"
    # is the frozen-base feature cache (train.py's own embedding pass, each batch split across the
    # replicas; the head trained under the strategy); "mirrored_cache_steps" a whole epoch of it in
    # batches of 6, the last one partial (one step per call: Keras' multi-step loop fails there).
    # The first 16 training examples are enough for all of it (16 = 6 + 6 + 4): the whole split
    # (76) only made that epoch 13 steps, each a call under the strategy.
    limit = "data.max_train_examples=16"
    n = data.num_examples(testing_config({data!r}, "x", limit).data, "train")
    assert n == 16 and n % 6, n
    common = ("model.transfer=freeze_base", "model.dropout=0.0", "train.learning_rate=0.01", limit)
    full = ("train.steps_per_epoch=1", "train.batch_size=%d" % n)
    out = {{}}
    for name, more in (("one", ("train.feature_cache=false", *full)),
                       ("mirrored", ("train.feature_cache=false", *full)),
                       ("mirrored_cache", ("train.feature_cache=true", *full)),
                       ("mirrored_cache_steps", ("train.feature_cache=true", "train.steps_per_epoch=1000",
                                                 "train.batch_size=6"))):
        lines = []
        cfg = testing_config({data!r}, {tmp!r} + "/" + name, *common, *more,
                             "train.distribution=" + name.split("_")[0])
        s = train.train(cfg, log=lines.append)
        rows = train.read_history(cfg.output_dir + "/history.csv")
        out[name] = {{"replicas": s["replicas"], "cache": s["feature_cache"], "loss": float(rows[0]["loss"]),
                     "val_auc": float(rows[0]["val_auc"]), "log": lines}}
    try:
        train.train(testing_config({data!r}, {tmp!r} + "/odd", *common, *full, "train.feature_cache=false",
                                   "train.distribution=mirrored", "train.batch_size=7"), log=lambda *_: None)
    except ConfigError as e:
        out["odd_batch_error"] = str(e)
    print(json.dumps(out))
    """
)


def test_mirrored_distribution_on_two_logical_cpus(data_dir, tmp_path):
    """MirroredStrategy over two logical CPUs: the global batch is split across the replicas and
    the first-step loss equals one-device training's (frozen base: BatchNorm in inference mode,
    so per-replica batch statistics do not enter), with the frozen-base feature cache too (its
    embedding pass split across the replicas, the head trained under the strategy); a whole epoch
    of cached features in several steps with a partial last batch runs; an odd batch is refused.
    One process for all (each costs a TensorFlow start)."""
    code = _DISTRIBUTED.format(tests=str(REPO / "tests"), data=str(data_dir), tmp=str(tmp_path))
    env = dict(os.environ, HCDTF_VIRTUAL_CPUS="2", TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    one, mirrored, cached, steps = out["one"], out["mirrored"], out["mirrored_cache"], out["mirrored_cache_steps"]
    assert one["replicas"] == 1 and mirrored["replicas"] == 2 and not one["cache"] and not mirrored["cache"]
    assert mirrored["loss"] == pytest.approx(one["loss"], rel=1e-5)
    assert cached["replicas"] == 2 and cached["cache"], cached["log"]
    assert any("each batch split across 2 replicas" in line for line in cached["log"]), cached["log"]
    # the cached features are the frozen base's outputs: the same first step as without the cache
    assert cached["loss"] == pytest.approx(one["loss"], rel=1e-5)
    assert cached["val_auc"] == pytest.approx(one["val_auc"], abs=1e-6)
    assert steps["replicas"] == 2 and steps["cache"] and 0 < steps["loss"] < 5, steps["log"]
    assert "batch_size=7" in out["odd_batch_error"] and "2 replicas" in out["odd_batch_error"]


def test_class_weights_from_training_labels(data_dir, tmp_path):
    cw = train.class_weights(testing_config(data_dir, tmp_path))
    assert cw[1] > cw[0] > 0  # the sample has fewer tumour patches


def _free_ports(n):
    import socket

    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_multiworker_two_processes_on_localhost(data_dir, tmp_path):
    """MultiWorkerMirroredStrategy with two worker processes on 127.0.0.1 (custom loop, since
    Keras 3's fit fails there): both finish, only the chief writes the run directory, and the
    first-step loss equals one-device training's on the same full batch."""
    from hcdtf.data import pipeline as data

    n = data.num_examples(testing_config(data_dir, tmp_path).data, "train")
    assert n % 2 == 0
    common = ["--set", "model.transfer=freeze_base", "--set", "train.feature_cache=false",
              "--set", "model.dropout=0.0", "--set", "train.steps_per_epoch=1",
              "--set", "train.learning_rate=0.01", "--set", f"train.batch_size={n}"]
    one = train.train(testing_config(data_dir, tmp_path / "one", "model.transfer=freeze_base",
                                     "train.feature_cache=false", "model.dropout=0.0", "train.steps_per_epoch=1",
                                     "train.learning_rate=0.01", f"train.batch_size={n}"), log=lambda *_: None)
    assert one["replicas"] == 1
    one_loss = float(_history(tmp_path / "one")[0]["loss"])

    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    run = tmp_path / "mw"
    procs = []
    for index in range(2):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
                   TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        cmd = _cli("train", "--config", str(CONFIGS / "testing.yaml"), "--data-dir", str(data_dir),
                   "--output-dir", str(run), "--distribution", "multiworker", *common)
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=REPO))
    outputs = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=600)
        finally:
            p.kill()
        outputs.append(out.decode())
        assert p.returncode == 0, out.decode()[-3000:]
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["distribution"] == "multiworker" and summary["replicas"] == 2
    assert "the chief writes the run directory" in outputs[1]
    assert float(_history(run)[0]["loss"]) == pytest.approx(one_loss, rel=1e-5)


def test_example_limit_above_the_split_size_means_the_whole_split(data_dir, tmp_path):
    from hcdtf.data import pipeline as data

    cfg = testing_config(data_dir, tmp_path, "data.max_train_examples=100000", "data.max_eval_examples=3")
    n = data.num_examples(cfg.data, "train")
    assert data.split_spec(cfg.data, "train") == "train" and n < 100000
    assert data.split_spec(cfg.data, "validation") == "validation[:3]"
    assert sum(len(y) for _, y in data.make_dataset(cfg.data, "train", 64, training=False)) == n


def test_feature_cache_under_a_one_replica_mirrored_strategy(data_dir, tmp_path):
    """`train.distribution=mirrored` on one device (one GPU; here the one CPU) is a MirroredStrategy
    of one replica: the cached head is built and compiled in its scope too (it failed with "Mixing
    different tf.distribute.Strategy objects" when only several replicas counted)."""
    cfg = testing_config(data_dir, tmp_path / "run", "model.transfer=freeze_base", "train.feature_cache=true",
                         "train.distribution=mirrored", "train.steps_per_epoch=1")
    lines = []
    summary = train.train(cfg, log=lines.append)
    assert summary["replicas"] == 1 and summary["feature_cache"], lines
