"""Encoder classifiers everywhere a ResNet goes: a run of a tiny encoder (its own shape, not the
registry's published ViT-L) exports to every format, and each runtime agrees with Keras within
the ResNets' tolerances (tests/test_export.py); `hcdtf predict` scores with the run and the export
alike."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from conftest import testing_config

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "encoders"


@pytest.fixture(scope="module")
def encoder_run(data_dir, tmp_path_factory):
    from hcdtf.models.encoders import files
    from hcdtf.training import train

    base = tmp_path_factory.mktemp("encoder_run")
    (base / "enc").mkdir()
    files.import_checkpoint(FIXTURES / "timm_virchow2", "Virchow2", out=base / "enc")  # SwiGLU, registers, cls+mean
    cfg = testing_config(data_dir, base / "run", "model.arch=Virchow2", "model.weights=pretrained",
                         f"model.encoder_dir={base / 'enc'}", "model.transfer=fine_tune")
    train.train(cfg, log=lambda *_: None)
    return base / "run"


@pytest.fixture(scope="module")
def encoder_export(encoder_run, tmp_path_factory):
    """The encoder run exported once in every format with its int8 (and, on a bfloat16 CPU, bf16)
    variant (a generous margin: a 2-block random ViT on 10 test patches says nothing about
    accuracy); the SavedModel's path. Read-only."""
    from hcdtf import export, precision

    bf16 = precision.cpu_features()["native_bf16"]  # elsewhere the bf16 variant is refused up front
    return export.export_run(encoder_run, tmp_path_factory.mktemp("encoder_export") / "models" / "hcd",
                             formats=("saved_model", "onnx", "openvino", "litert"),
                             quantize=("int8", "bf16") if bf16 else ("int8",), margin=1.0, calibration_size=10,
                             log=lambda *_: None)


def _patches(n=6):
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)


def test_every_format_agrees_with_keras(encoder_run, encoder_export):
    from hcdtf.inference import loading
    from test_export import _runtime_probabilities

    out = encoder_export
    x = _patches()
    expected = loading.load_model(encoder_run).predict(x, verbose=0)
    assert np.ptp(expected) > 1e-5  # the patches do not all score the same
    import tensorflow as tf

    served = tf.saved_model.load(str(out)).signatures["serving_default"](images=tf.constant(x))
    np.testing.assert_allclose(served["probability"].numpy(), expected, atol=1e-5, rtol=0)
    for kind in ("onnx", "openvino", "litert"):
        got = _runtime_probabilities(kind, out.parent / f"{out.name}-{kind}", x)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0, err_msg=kind)
    meta = json.loads((out.parent / f"{out.name}-onnx" / "hcdtf_metadata.json").read_text())
    assert meta["arch"] == "Virchow2" and meta["input_mpp"] == 0.972  # trained on PCam-scale patches


def test_predict_with_run_and_export(encoder_run, tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from hcdtf.cli import main

    images = tmp_path / "images"
    images.mkdir()
    x = _patches(4)
    for i, patch in enumerate(x):
        Image.fromarray(patch).save(images / f"p{i}.png")
    result = CliRunner().invoke(main, ["predict", str(encoder_run), "--images", str(images),
                                       "--out", str(tmp_path / "run.csv")])
    assert result.exit_code == 0, result.output
    from hcdtf.inference import loading

    expected = loading.load_model(encoder_run).predict(x, verbose=0)[:, 0]
    text = (tmp_path / "run.csv").read_text().splitlines()
    got = {line.split(",")[0]: float(line.split(",")[1]) for line in text[1:]}
    np.testing.assert_allclose([got[f"p{i}"] for i in range(4)], expected, atol=1e-5)


def test_slide_predict_reads_at_the_runs_input_resolution(encoder_run, tmp_path):
    """An encoder classifier trained here saw PCam-scale patches (96 px at 0.972 um/px, resized
    to the encoder's input inside the model): the slide reader reads at that resolution."""
    from click.testing import CliRunner

    from hcdtf.cli import main
    from hcdtf.slide import synthetic

    slides = tmp_path / "slides"
    synthetic.write_slides(slides, n=1, seed=0, size=(384, 288), log=lambda *_: None)
    slide = next(slides.glob("*.svs"))
    result = CliRunner().invoke(main, ["slide", "predict", str(encoder_run), str(slide),
                                       "--output-dir", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    summary = json.loads(next((tmp_path / "out").rglob("slide_summary.json")).read_text())
    assert summary["model_mpp"] == 0.972
    heat = np.load(next((tmp_path / "out").rglob("heatmap.npy")))
    assert heat.size and np.isfinite(heat[~np.isnan(heat)]).all()


def test_int8_variant_is_quantized_and_guarded(encoder_export):
    """The int8 (and, on a bfloat16 CPU, the bf16) guard scores an encoder run's int8 model on the test split like a ResNet's (a
    generous margin here: a 2-block random ViT on 10 test patches says nothing about accuracy)."""
    from hcdtf import precision

    out = encoder_export
    if precision.cpu_features()["native_bf16"]:
        meta = json.loads((out.parent / f"{out.name}-openvino-bf16" / "hcdtf_metadata.json").read_text())
        assert meta["precision"] == "bfloat16" and meta["bf16_guard"]["n_test"] == 10
    path = out.parent / f"{out.name}-openvino-int8"
    meta = json.loads((path / "hcdtf_metadata.json").read_text())
    guard = meta["int8_guard"]
    assert meta["precision"] == "int8" and guard["n_test"] == 10 and guard["margin"] == 1.0
    assert 0 <= guard["auc_int8"] <= 1 and 0 <= guard["delong_p"] <= 1
    import openvino as ov

    ops = {op.get_type_name() for op in ov.Core().read_model(str(path / "model.xml")).get_ops()}
    assert "FakeQuantize" in ops  # the ViT's matmuls quantised, not a float32 copy under an int8 name


def test_beam_direct_runner_scores_an_encoder_run_as_predict(encoder_run, tmp_path):
    from PIL import Image

    from hcdtf.inference import beam as beam_predict
    from hcdtf.inference import predict

    images = tmp_path / "images"
    images.mkdir()
    for i, patch in enumerate(_patches(3)):
        Image.fromarray(patch).save(images / f"p{i}.png")
    local, beam = tmp_path / "local.csv", tmp_path / "beam" / "beam.csv"
    predict.predict(encoder_run, images, local, batch_size=1, log=lambda *_: None)  # one patch per call
    beam_predict.predict_beam(encoder_run, str(images), str(beam), "DirectRunner", batch_size=1, log=lambda *_: None)
    assert beam.read_text() == local.read_text()
    assert len(local.read_text().splitlines()) == 4
