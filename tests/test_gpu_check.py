"""benchmarks/gpu_check.py runs on a CPU with --tiny, so a broken script is found before a GPU
machine is spent on it (its real figures need a GPU: `make gpu-check`)."""

from __future__ import annotations

import pytest

pytest.importorskip("tensorflow")


def test_gpu_check_tiny_runs_and_reports_everything(capsys):
    from benchmarks import gpu_check

    # Both precisions and both BatchNorm layers, in two of the four variants (each costs a trace);
    # one timed step after the untimed one (a mixed_float16 step is seconds on a CPU), of the smallest
    # ResNet (the script's code path is the same for every one).
    result = gpu_check.main(["--tiny", "--steps", "1", "--arch", "ResNet10",
                             "--variants", "float32/fused_bn,mixed_float16/keras_bn"])
    assert result["ok"] is True and result["arch"] == "ResNet10"  # --arch wins over --tiny's
    assert (result["steps"], result["batch"], result["image_size"]) == (1, 2, 32)  # so does --steps
    assert set(result["training"]) == {"float32/fused_bn", "mixed_float16/keras_bn"}
    for variant in result["training"].values():
        assert variant["images_per_s"] > 0 and variant["losses_finite"]
    assert set(result["serving"]) == {"batch1", "batch4"} and result["export_s"] > 0
    assert '"benchmark": "gpu_check"' in capsys.readouterr().out  # the JSON a GPU run prints
    import keras

    assert keras.mixed_precision.global_policy().name == "float32"  # left as it found it
