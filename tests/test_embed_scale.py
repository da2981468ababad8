"""Issue 23, item 5 "Scale": `hcdtf embed` under tf.distribute (MirroredStrategy over two
logical CPUs) and as an Apache Beam pipeline (RunInference -> TFRecord shards of (id, feature)
-> the same HDF5 bytes as the in-process pass)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import h5py
import numpy as np
import pytest

from conftest import REPO, cli_fails

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "encoders"


@pytest.fixture(scope="module")
def encoder_and_images(tmp_path_factory):
    """The tiny Hibou-layout encoder, imported, and 7 patches: 96 px ones with a 64 px one
    between them (batches end where the size changes)."""
    from PIL import Image

    from hcdtf.models.encoders import files

    root = tmp_path_factory.mktemp("embed_scale")
    encoder = files.import_checkpoint(FIXTURES / "hf_hibou", "Hibou-B", out=root / "hibou.encoder.h5")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(1)
    for i in range(7):
        size = 64 if i == 2 else 96
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(images / f"p{i:02d}.png")
    return encoder, images


def _features(path):
    with h5py.File(path, "r") as f:
        return f["features"][:], [s.decode() for s in f["ids"][:]]


def test_batch_bounds_cut_runs_of_one_size():
    from hcdtf.inference.embed import batch_bounds

    shapes = [(96, 96, 3)] * 3 + [(64, 64, 3)] * 2 + [(96, 96, 3)] * 5
    assert list(batch_bounds(iter(shapes), 2)) == [(0, 2), (2, 3), (3, 5), (5, 7), (7, 9), (9, 10)]
    assert list(batch_bounds([], 4)) == []


def test_mirrored_embedding_equals_one_device(encoder_and_images, tmp_path):
    """Two logical CPUs, batch 4: the batches (0,2) (2,3) (3,7) (the size changes at p02 and p03)
    are split 1+1, 1+padding (a copy, dropped) and 2+2 across the replicas. Each row is bit-equal
    to one device's at the size of its replica's slice (oneDNN's kernels depend on the batch
    size), so rows 0-2 equal one device at batch 1 and rows 3-6 at batch 2: the split, the
    padding and the order are exact. Against one device at batch 4 the rows are within 1e-6."""
    encoder, images = encoder_and_images
    runs = {"mirrored": ["--batch-size", "4", "--distribution", "mirrored"],
            "one4": ["--batch-size", "4", "--distribution", "one"],
            "one2": ["--batch-size", "2", "--distribution", "one"],
            "one1": ["--batch-size", "1", "--distribution", "one"]}
    calls = [["embed", str(encoder), "--images", str(images), "--out", str(tmp_path / f"{k}.h5"), *v]
             for k, v in runs.items()]
    script = ("import sys, json\nfrom hcdtf.cli import main\n"
              "for args in json.loads(sys.argv[1]):\n    main(args, standalone_mode=False)\n")
    env = {**os.environ, "HCDTF_VIRTUAL_CPUS": "2", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", script, json.dumps(calls)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "distribution: mirrored, 2 replicas" in done.stdout, done.stdout
    assert "patches/s, ETA" in done.stdout
    mirrored, ids = _features(tmp_path / "mirrored.h5")
    one4, ids4 = _features(tmp_path / "one4.h5")
    one2, _ = _features(tmp_path / "one2.h5")
    one1, _ = _features(tmp_path / "one1.h5")
    assert ids == ids4 == [f"p{i:02d}" for i in range(7)]
    assert np.array_equal(mirrored[:3], one1[:3])
    assert np.array_equal(mirrored[3:], one2[3:])
    assert np.abs(mirrored - one4).max() <= 1e-6 * np.abs(one4).max()
    assert not np.allclose(one4[0], one4[1])  # real, distinct rows


def test_beam_shards_and_file_equal_the_in_process_pass(encoder_and_images, tmp_path):
    from click.testing import CliRunner

    from hcdtf.cli import main
    from hcdtf.inference import embed

    encoder, images = encoder_and_images
    args = ["embed", str(encoder), "--images", str(images), "--batch-size", "2"]
    local = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "local.h5")])
    assert local.exit_code == 0, local.output
    out = tmp_path / "beam" / "E.h5"
    beam = CliRunner().invoke(main, [*args, "--out", str(out), "--runner", "DirectRunner", "--num-shards", "3"])
    assert beam.exit_code == 0, beam.output
    assert out.read_bytes() == (tmp_path / "local.h5").read_bytes()

    shards = tmp_path / "beam" / "E.h5.shards"
    assert sorted(p.name for p in shards.iterdir()) == [
        *(f"embeddings-{k:05d}-of-00003.tfrecord" for k in range(3)), "spec.json"]
    spec = json.loads((shards / "spec.json").read_text())
    assert spec["n"] == 7 and spec["format"] == embed.SHARDS_FORMAT
    ids, rows = [], []
    for batch in embed.read_shards(shards, batch_size=3):  # shards hold id ranges, each in id order
        ids += [s.decode() for s in batch["id"].numpy()]
        rows.append(batch["feature"].numpy())
    features, h5_ids = _features(out)
    assert ids == h5_ids
    assert np.array_equal(np.concatenate(rows), features)
    assert spec["dim"] == features.shape[1]

    # a lost shard is found, not written as zeros
    (shards / "embeddings-00001-of-00003.tfrecord").unlink()
    with pytest.raises(ValueError, match="ids have no row"):
        embed.write_from_shards(tmp_path / "again.h5", shards, h5_ids, "m", {}, "x")
    assert not list(tmp_path.glob("*again*"))  # neither the file nor the scratch rows


def test_scale_flags_are_checked(encoder_and_images, tmp_path):
    encoder, images = encoder_and_images
    args = ["embed", str(encoder), "--images", str(images), "--out", str(tmp_path / "e.h5")]
    cli_fails([*args, "--num-shards", "2"], "--runner")
    cli_fails([*args, "--runner", "DirectRunner", "--distribution", "mirrored"], "--distribution mirrored", "Beam")
    cli_fails([*args, "--distribution", "multiworker"], "--distribution")
    # in-process settings are refused with --runner, not silently ignored
    cli_fails([*args, "--runner", "DirectRunner", "--overwrite"], "--overwrite", "--runner")
    cli_fails([*args, "--runner", "DirectRunner", "--checkpoint-seconds", "60"], "--checkpoint-seconds", "--runner")


# The frozen-base feature cache under MirroredStrategy is tested with the other mirrored training
# checks, in one process: tests/test_train.py::test_mirrored_distribution_on_two_logical_cpus.
