"""Precision that is explicit on every CPU: the training choice behind `--precision auto` (a probe
on CPUs with native bfloat16, float32 elsewhere), recorded and reused on resume, and exact resume in
mixed_bfloat16. The runtimes' side (OpenVINO's hint, the bf16 export variant) is in test_export.py.

These tests hold on both CPU kinds this project runs on: where a branch depends on the CPU, the
test asserts that CPU's branch (no skip)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from hcdtf import precision
from hcdtf.training import train

from conftest import CONFIGS, testing_config

FEATURES = precision.cpu_features()


def test_cpu_features_read_the_flags():
    flags = set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    assert FEATURES["native_bf16"] == bool({"avx512_bf16", "amx_bf16"} & flags)
    assert FEATURES["amx"] == ("amx_tile" in flags)
    assert set(FEATURES["features"]) == set(precision.FEATURES) & flags
    assert precision.cpu_kind() in ("amx", "avx512-bf16", "avx512", "avx2", "other")


@pytest.mark.parametrize("speedup, expected", [(0.08, "float32"), (1.0, "float32"), (1.09, "float32"),
                                               (1.1, "mixed_bfloat16"), (1.4, "mixed_bfloat16")])
def test_choice_from_the_probe_figures(speedup, expected):
    assert precision.choose({"bfloat16_vs_float32_per_cpu_s": speedup}) == expected


def test_explicit_precision_always_wins():
    for p in ("float32", "mixed_float16", "mixed_bfloat16"):
        assert precision.resolve_training(p, "ResNet18", 8) == (p, {"rule": "explicit"})


def test_auto_probes_only_where_bfloat16_is_native(monkeypatch):
    """On a BF16 CPU the probe really runs and its figures decide; elsewhere float32 with no probe."""
    monkeypatch.setenv("HCDTF_PRECISION_PROBE", "1")
    lines = []
    policy, figures = precision.resolve_training("auto", "ResNet10", 4, log=lines.append)
    if FEATURES["native_bf16"]:
        assert figures["float32_cpu_s_per_image"] > 0 and figures["bfloat16_cpu_s_per_image"] > 0
        assert policy == precision.choose(figures) and figures["cpu_model"] == FEATURES["cpu_model"]
        assert "probe on" in precision.describe(policy, figures)
    else:
        assert (policy, figures["rule"]) == ("float32", "cpu without native bfloat16")
    import keras

    assert keras.mixed_precision.global_policy().name == "float32"  # the probe restored the policy
    assert precision.resolve_training("auto", "ResNet18", 4, distribution="multiworker")[0] in (
        "float32", "mixed_float16")
    started = time.perf_counter()
    policy, figures = precision.resolve_training("auto", "H-optimus-0", 4)  # a ViT-g: never probed
    assert policy == "float32" and "bfloat16_vs_float32_per_cpu_s" not in figures
    assert time.perf_counter() - started < 5
    monkeypatch.setenv("HCDTF_PRECISION_PROBE", "0")
    assert precision.resolve_training("auto", "ResNet18", 4)[0] == "float32"


def test_openvino_hints_and_metadata_settings():
    assert precision.openvino_config("float32") == {"INFERENCE_PRECISION_HINT": "f32"}
    assert precision.openvino_config("int8")["INFERENCE_PRECISION_HINT"] == "f32"
    assert precision.openvino_config("bfloat16", PERFORMANCE_HINT="LATENCY") == {
        "INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY"}
    with pytest.raises(ValueError, match="float16"):
        precision.openvino_config("float16")
    settings = precision.runtime_settings("openvino", "float32")
    assert settings["openvino_compile_config"] == {"INFERENCE_PRECISION_HINT": "f32"}
    assert "float32" in precision.runtime_settings("onnx", "float32")["default"]


# ----------------------------------------------------------------------------- training
BF16 = ("train.precision=mixed_bfloat16", "train.epochs=2", "train.steps_per_epoch=2", "model.dropout=0.5")


def test_bfloat16_run_resumes_bit_identically(data_dir, tmp_path):
    """mixed_bfloat16, killed right after epoch 1's state commit, then rerun: the same history,
    checkpoint and validation scores as an uninterrupted bfloat16 run."""
    from test_resume import _same_training

    whole = tmp_path / "whole"
    summary = train.train(testing_config(data_dir, whole, *BF16), log=lambda *_: None)
    assert summary["precision"] == "mixed_bfloat16" and summary["precision_choice"]["rule"] == "explicit"
    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "hcdtf.cli", "train", "--config", str(CONFIGS / "testing.yaml"),
           "--data-dir", str(data_dir), "--output-dir", str(run), *[a for s in BF16 for a in ("--set", s)]]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", HCDTF_KILL_AT="after-state-commit:1")
    killed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert json.loads((run / "run.json").read_text())["precision"] == "mixed_bfloat16"
    env.pop("HCDTF_KILL_AT")
    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "precision: mixed_bfloat16" in resumed.stdout + resumed.stderr
    _same_training(whole, run)


def test_auto_precision_is_recorded_and_reused_on_resume(data_dir, tmp_path, monkeypatch):
    """`auto` resolves once, at the run's start; a resumed session reuses what run.json recorded
    (the probe is not repeated: it could choose differently and break the exact resume)."""
    monkeypatch.setenv("HCDTF_PRECISION_PROBE", "0")  # the probe itself is tested above
    cfg = testing_config(data_dir, tmp_path / "run", "train.precision=auto")
    summary = train.train(cfg, log=lambda *_: None)
    recorded = json.loads((tmp_path / "run" / "run.json").read_text())
    assert recorded["precision"] == summary["precision"] == "float32"
    assert summary["precision_choice"]["rule"] in ("cpu without native bfloat16", "probe off (HCDTF_PRECISION_PROBE=0)")
    assert summary["cpu"]["cpu_model"] == FEATURES["cpu_model"]
    # As if the first session had chosen bfloat16: a resumed session must follow the record.
    from hcdtf.rundir import RunDir

    work = RunDir(tmp_path / "run")
    record = dict(recorded, precision="mixed_bfloat16")
    (tmp_path / "run" / "run.json").write_text(json.dumps(record))
    policy, figures = train._recorded_precision(work, cfg)
    assert policy == "mixed_bfloat16" and figures["reused_on_resume"] is True
    assert "as chosen at the run's start" in precision.describe(policy, figures)
    # A run of hcdtf <= 0.2 recorded nothing: its auto meant float32 on a CPU.
    del record["precision"]
    (tmp_path / "run" / "run.json").write_text(json.dumps(record))
    assert train._recorded_precision(work, cfg)[0] == ("mixed_float16" if precision.has_gpu() else "float32")


def test_probe_leaves_layer_names_alone():
    """The resume state is checked by variable paths: a probe in one session and none in the
    next must give the same names."""
    import keras

    from hcdtf import models

    keras.backend.clear_session()  # as a fresh `hcdtf train` process starts
    first = [v.path for v in models.build_classifier("ResNet10", weights=None).variables]
    keras.backend.clear_session()
    precision.probe("ResNet10", 2, steps=1)
    second = [v.path for v in models.build_classifier("ResNet10", weights=None).variables]
    assert first == second
    assert keras.mixed_precision.global_policy().name == "float32"


def test_tensorflow_keeps_float32_on_this_cpu():
    """TensorFlow's oneDNN path could compute float32 matmuls in bfloat16 (fpmath mode BF16) on
    BF16 CPUs; its default is strict float32, which the README promises: a 512x512 product agrees
    with float64 to float32's rounding (bfloat16 would be off by ~1e-2 relative)."""
    if os.environ.get("TF_SET_ONEDNN_FPMATH_MODE"):
        pytest.fail("TF_SET_ONEDNN_FPMATH_MODE is set in the test environment; unset it")
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 512, 512)).astype(np.float32)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    rel = np.abs(tf.matmul(a, b).numpy() - exact).max() / np.abs(exact).max()
    assert rel < 1e-5, rel
