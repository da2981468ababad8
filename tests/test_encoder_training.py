"""Training encoder classifiers: layer-wise learning-rate decay (the rule, that the optimizer
applies it per block, exact resume with it), and where a run's encoder weights come from
(model.encoder_dir; no silent fallback to a random full-size ViT)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from conftest import CONFIGS, REPO, cli_fails
from hcdtf.models.encoders import train_rules

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "encoders"


def test_layer_decay_multipliers_follow_beit():
    # BEiT: layer ids 0 (embeddings), 1..L (blocks), L + 1 (head); scale = d ** (L + 1 - id)
    m = train_rules.layer_decay_multipliers(3, 0.5)
    assert m == {"embed": 0.0625, 0: 0.125, 1: 0.25, 2: 0.5, "head": 1.0}
    assert set(train_rules.layer_decay_multipliers(4, 1.0).values()) == {1.0}  # off
    for bad in ((0, 0.5), (2, 0.0), (2, 1.5)):
        with pytest.raises(ValueError):
            train_rules.layer_decay_multipliers(*bad)
    assert train_rules.variable_group("base_encoder/layers_11/mlp/fc1/kernel") == 11
    assert train_rules.variable_group("base_embeddings/cls_token") == "embed"
    assert train_rules.variable_group("base_layernorm/gamma") == "head"
    assert train_rules.variable_group("head_logit/kernel") == "head"


def _encoder_file(tmp_path, folder="timm_uni", arch="UNI"):
    from hcdtf.models.encoders import convert, files

    config, weights = convert.read_checkpoint(FIXTURES / folder, arch)
    return files.write(tmp_path / files.default_name(arch), config, weights)


def test_the_optimizer_scales_each_blocks_step(tmp_path):
    """One SGD step (no momentum) with decay 0.5 moves every variable by exactly its
    multiplier times the step without decay, from the same start on the same batch."""
    import keras

    from hcdtf.models.encoders.classifier import build_encoder_classifier

    path = _encoder_file(tmp_path)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (4, 96, 96, 3), dtype=np.uint8)
    y = np.array([[0.0], [1.0], [1.0], [0.0]], np.float32)
    deltas = []
    for decay in (1.0, 0.5):
        keras.utils.set_random_seed(0)
        model = build_encoder_classifier("UNI", weights=str(path), transfer="fine_tune", dropout=0.0)
        before = {v.path: np.array(v.numpy()) for v in model.trainable_variables}
        optimizer = keras.optimizers.SGD(0.1)
        if decay != 1.0:
            multipliers = train_rules.variable_multipliers(model, decay)
            train_rules.with_layer_decay(optimizer, multipliers)
        model.compile(optimizer=optimizer, loss="binary_crossentropy")
        model.train_on_batch(x, y)
        deltas.append({v.path: v.numpy() - before[v.path] for v in model.trainable_variables})
    plain, decayed = deltas
    table = train_rules.layer_decay_multipliers(2, 0.5)
    groups = set()
    for name, step in plain.items():
        if np.abs(step).max() < 1e-9 or name.endswith("key/bias"):  # softmax ignores the key bias:
            continue  # its gradient is rounding noise
        expected = table[train_rules.variable_group(name)]
        groups.add(train_rules.variable_group(name))
        # (w + s) - w in float32 rounds tiny steps: compare the steps' sizes and directions
        ratio = np.linalg.norm(decayed[name]) / np.linalg.norm(step)
        cosine = float(np.sum(decayed[name] * step) / (np.linalg.norm(decayed[name]) * np.linalg.norm(step)))
        assert ratio == pytest.approx(expected, rel=1e-3) and cosine > 0.9999, (name, ratio, expected)
    assert groups == {"embed", 0, 1, "head"}


def _train_cmd(data_dir, run, encoder_dir):
    sets = ["train.epochs=2", "train.steps_per_epoch=2", "train.layer_decay=0.75", "model.dropout=0.5",
            f"model.encoder_dir={encoder_dir}", "model.weights=pretrained"]
    return [sys.executable, "-m", "hcdtf.cli", "train", "--config", str(CONFIGS / "testing.yaml"),
            "--data-dir", str(data_dir), "--arch", "UNI", "--fine-tune", "--output-dir", str(run),
            *[a for s in sets for a in ("--set", s)]]


def test_fine_tune_with_layer_decay_resumes_exactly(data_dir, tmp_path):
    """Killed after epoch 1 is committed, the rerun trains epoch 2 to the bytes of an
    uninterrupted run (history, best weights)."""
    import h5py

    _encoder_file(tmp_path)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    from hcdtf.config import load_config
    from hcdtf.training import train

    cmd = _train_cmd(data_dir, straight, tmp_path)
    sets = [cmd[k + 1] for k, a in enumerate(cmd) if a == "--set"]
    train.train(load_config([CONFIGS / "testing.yaml"], [f"data.data_dir={data_dir}", f"output_dir={straight}",
                                                          "model.arch=UNI", "model.transfer=fine_tune", *sets]),
                log=lambda *_: None)
    done = subprocess.run(_train_cmd(data_dir, killed, tmp_path), env={**env, "HCDTF_KILL_AT": "after-history:1"},
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == -9, done.stdout + done.stderr[-3000:]
    done = subprocess.run(_train_cmd(data_dir, killed, tmp_path), env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0 and "resuming after epoch 1" in done.stdout, done.stdout + done.stderr[-3000:]

    assert (killed / "history.csv").read_text() == (straight / "history.csv").read_text()

    def weights(path):
        out = {}
        with h5py.File(path, "r") as f:
            f.visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
        return out

    a, b = (weights(r / "checkpoints" / "best.weights.h5") for r in (straight, killed))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    summary = json.loads((straight / "train_summary.json").read_text())
    assert summary["weights"] == str(tmp_path / "hcdtf_uni.encoder.h5")  # found through model.encoder_dir
    assert summary["flops_per_image"] < 1e8  # the tiny encoder trained, not the published ViT-L


def test_missing_encoder_weights_refuse_even_with_fallback(data_dir, tmp_path):
    """fallback_to_scratch is for ResNets: a missing encoder file is one line saying how to get
    it, not a random full-size ViT trained under an 'ImageNet' log line."""
    cli_fails(["train", "--config", str(CONFIGS / "testing.yaml"), "--data-dir", str(data_dir), "--arch", "UNI",
               "--freeze-base", "--output-dir", str(tmp_path / "run"), "--set", "model.weights=pretrained",
               "--set", "model.fallback_to_scratch=true", "--set", f"model.encoder_dir={tmp_path}"],
              "UNI", "hcdtf weights import", "ResNets only", "model.weights=none")
