"""The benchmarks entry point: runs the --quick path on the tiny shared data set, restricted to the
cheap input-pipeline figure, and checks the JSON it writes (every figure: medians with their spread,
load averages, the machine name). No timing is asserted: the machine is shared."""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `benchmarks` is a top-level package of the source tree, not installed

from benchmarks import common  # noqa: E402


def _stats(node, path=""):
    """Every statistic (a dict with a "median") in a figure, with where it is."""
    if isinstance(node, dict):
        if "median" in node:
            yield path, node
        for k, v in node.items():
            if k != "values":
                yield from _stats(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _stats(v, f"{path}[{i}]")


def _check_schema(result: dict, figures: list[str]) -> None:
    assert result["schema_version"] == common.SCHEMA_VERSION
    m = result["machine"]
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", m["name"]), m["name"]
    assert m["cores"] >= 1 and m["cpu_model"]
    assert not result["errors"], result["errors"]
    assert sorted(result["figures"]) == sorted(figures)
    for name, fig in result["figures"].items():
        la = fig["load_avg"]
        assert len(la["start"]) == 3 and len(la["end"]) == 3, name
        assert len(la["per_rep_1min"]) >= 3, name
        stats = list(_stats(fig["results"], name))
        assert stats, f"{name} has no statistics"
        for where, s in stats:
            assert s["n"] >= 3, where
            assert s["min"] <= s["median"] <= s["max"], where
            assert s["q1"] <= s["median"] <= s["q3"], where
            assert len(s["values"]) == s["n"], where
        for key, t in (fig.get("targets") or {}).items():
            assert {"value", "target", "met"} <= set(t), key


@pytest.mark.timeout(300)
def test_quick_pipeline_figure(data_dir, tmp_path, capsys):
    # `python -m benchmarks`' own main, in this process: a subprocess would start TensorFlow once
    # more (~6 CPU-s) for the same figure (conftest sets the same TF_CPP_MIN_LOG_LEVEL and no GPU).
    from benchmarks.__main__ import main as bench_main

    out = tmp_path / "bench.json"
    code = bench_main(["--quick", "--only", "pipeline", "--data-dir", str(data_dir), "--workdir", str(tmp_path / "work"),
                       "--batch-size", "4", "--rep-seconds", "0.2", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    printed = json.loads(captured.out)
    written = json.loads(out.read_text())
    assert printed == written
    _check_schema(written, ["pipeline"])
    fig = written["figures"]["pipeline"]
    assert set(fig["results"]) == {"read", "read_cache", "read_augment", "read_cache_augment", "train_step/ResNet18"}
    assert "read_augment / train_step/ResNet18" in fig["ratios"]
    t = fig["targets"]["pipeline_ge_5x_resnet18_training"]
    assert t["target"] == 5.0 and isinstance(t["met"], bool)
    assert written["mode"] == "quick"


def test_summarize_and_ratios():
    s = common.summarize([3.0, 1.0, 2.0, 10.0])
    assert (s["median"], s["min"], s["max"], s["n"]) == (2.5, 1.0, 10.0, 4)
    assert s["q1"] <= s["median"] <= s["q3"]
    assert common.paired_ratio([2.0, 4.0, 6.0], [1.0, 2.0, 2.0])["median"] == 2.0
    runs = common.interleaved({"a": lambda: 5, "b": lambda: 7}, reps=3)
    assert runs["a"].items == [5, 5, 5] and len(runs["b"].rates) == 3
    assert common.target(6.0, 5.0, "x")["met"] is True
    assert common.target(2100.0, 2048.0, "x", higher_is_better=False)["met"] is False


def test_machine_name_and_peak():
    m = common.machine()
    assert m["name"] == common.slugify(m["name"])
    if not m["gpus"]:
        assert str(m["cores"]) in m["name"]
    if m["ghz"]:
        assert m["peak_gflops_fp32"] == pytest.approx(m["cores"] * m["ghz"] * m["flops_per_cycle_per_core_fp32"], rel=1e-3)
    assert common.slugify("AMD EPYC 7B13 64-Core Processor 2 cores") == "amd-epyc-7b13-64-core-processor-2-cores"
    assert common.last_json('log line\n{"a": 1}\n') == {"a": 1}


def test_unknown_figure_is_refused():
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--only", "nope", "--out", "-"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "unknown figure" in proc.stderr


def test_frameworks_plan_pins_every_tensorflow_setting():
    """Each Keras worker says whether it runs oneDNN or Eigen kernels (TensorFlow's default
    depends on the CPU), and hcdtf's default is compared with Keras' own BatchNorm in one process."""
    from benchmarks import training

    for quick in (True, False):
        plan = training.frameworks_plan("ResNet50", 32, 1.0, quick, cores=2)
        keras_workers = {name: (spec, env) for name, spec, env in plan if spec["framework"] == "keras"}
        for name, (spec, env) in keras_workers.items():
            assert env.get("TF_ENABLE_ONEDNN_OPTS") in ("0", "1"), name
        spec, env = keras_workers["hcdtf"]
        assert env["TF_ENABLE_ONEDNN_OPTS"] == "1"
        assert spec["variants"]["hcdtf_default"] == {"batch": 32}
        assert spec["variants"]["keras_batchnorm"] == {"batch": 32, "fused_bn": False}
        assert keras_workers["eigen"][1]["TF_ENABLE_ONEDNN_OPTS"] == "0"
        assert ("no_determinism" in keras_workers) is not quick


def test_synthetic_benchmark_runs_both_encoders_and_restores_the_writer(tmp_path):
    """benchmarks.synthetic on a tiny sample: every figure is there, both .tif encoders were timed
    side by side, and write_sample's own encoder is back in place afterwards."""
    from benchmarks import synthetic as bench
    from hcdtf.synthetic import kaggle

    encoder = kaggle.tif_bytes
    result = bench.main(["--n", "20", "--patches", "8", "--reps", "1", "--workdir", str(tmp_path)])
    assert kaggle.tif_bytes is encoder
    assert {"seconds", "mb"} <= set(result["tables"])  # (~0 here when an earlier test built them)
    assert result["generate"]["per_cpu_s"]["median"] > 0
    for figure in ("tif_encode", "write_sample"):
        assert {"cached_header", "pillow_save", "ratio"} <= set(result[figure]), figure
    assert result["write_sample"]["cached_header"]["items_per_rep"]["median"] == 22  # 20 + 20 // 10
    assert set(result["choices"]) == {"id_raw_words_vs_generator_bytes", "thin_product_vs_where",
                                      "clip_vs_minimum", "contiguous_crop_vs_strided"}
    assert not list(tmp_path.iterdir())  # each sample is removed after it is timed
