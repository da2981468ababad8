"""A killed `hcdtf build-dataset` leaves a state from which the same command writes exactly the
data set an uninterrupted build writes: SIGKILL at five points (while an overwrite's staged build
checks images and writes a split, between the two renames that swap it in, while a build writes a
split, right before its metadata is written), each followed by the same command.

The files are compared byte for byte, except the TFRecord shards, whose records are compared one
by one, in order, each re-serialised deterministically: protobuf (upb) writes the entries of each
tf.train.Example's feature map in an order that differs from process to process (its hash seed
is not PYTHONHASHSEED), so two processes writing the same records give different shard bytes."""

from __future__ import annotations

import hashlib
import os
import pathlib
import subprocess
import sys

from click.testing import CliRunner

from hcdtf.cli import main
from tfds_builder.hcd.hcd_dataset_builder import FAULT_ENV

from test_tfds_builder import make_kaggle


def _files(version_dir: pathlib.Path) -> dict[str, object]:
    """Every file of a built data set: the SHA-256 of dataset_info.json, features.json and
    metadata.json (with the fingerprint and the audit; none holds a timestamp), and for each
    TFRecord shard the SHA-256 of every record, in order, re-serialised deterministically."""
    import tensorflow as tf

    out: dict[str, object] = {}
    for p in sorted(version_dir.iterdir()):
        if ".tfrecord-" in p.name:
            records = (tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(str(p)))
            out[p.name] = [hashlib.sha256(e.SerializeToString(deterministic=True)).hexdigest() for e in records]
        else:
            out[p.name] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _hcdtf() -> list[str]:
    exe = pathlib.Path(sys.executable).with_name("hcdtf")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "hcdtf.cli"]


def _run(args: list[str], fault: str | None) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    env.pop(FAULT_ENV, None)
    if fault:
        env[FAULT_ENV] = fault
    return subprocess.run(_hcdtf() + args, env=env, capture_output=True, text=True, timeout=600)


def test_killed_builds_resume_to_the_same_files(tmp_path):
    manual, out = tmp_path / "raw", tmp_path / "tfds"
    make_kaggle(manual, n=40, n_test=4)  # splits: train 32, validation 4, test 4, kaggle_test 4
    command = ["build-dataset", "--manual-dir", str(manual), "--data-dir", str(out), "--overwrite"]
    # The uninterrupted build: the same command in this process (a subprocess only paid another
    # TensorFlow start); each kill below is a fresh process, as is the build that resumes them.
    done = CliRunner().invoke(main, command)
    assert done.exit_code == 0, done.output[-3000:]
    version_dir = out / "hcd" / "kaggle" / "1.0.0"
    reference = _files(version_dir)
    assert {"metadata.json", "dataset_info.json", "hcd-train.tfrecord-00000-of-00001"} <= set(reference)

    kills = [
        ("check:3", "an overwrite, while the staged build checks images"),
        ("example:20", "an overwrite, while the staged build writes train"),
        ("swap", "an overwrite, between the two renames"),
        ("example:35", "a build, while it writes validation (train is written)"),
        ("finalize", "a build, right before its metadata is written"),
    ]
    for fault, when in kills:
        proc = _run(command, fault)
        assert proc.returncode == -9, f"{fault} ({when}) was not reached: rc {proc.returncode}\n{proc.stderr[-3000:]}"
        if fault in ("check:3", "example:20"):
            assert _files(version_dir) == reference  # the old build stays whole until the swap
        leftovers = [p.name for p in (out / "hcd" / "kaggle").iterdir() if p.name.startswith("incomplete.")]
        assert leftovers, f"nothing was left to clean up after {when}"
    assert not version_dir.exists()  # the swap was cut, and no build finished since

    proc = _run(command, None)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _files(version_dir) == reference
    assert sorted(p.name for p in (out / "hcd" / "kaggle").iterdir()) == [".lock", "1.0.0"]  # no leftovers
