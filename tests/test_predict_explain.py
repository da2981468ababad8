"""`hcdtf predict` (Kaggle submission from a run or a SavedModel) and `hcdtf explain` (Grad-CAM),
on the session's tiny trained ResNet10 run and the synthetic sample's unlabelled test patches."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from hcdtf.inference import explain, predict
from hcdtf.cli import main

from conftest import cli_fails


@pytest.fixture(scope="module")
def patches(sample_dir):
    """The sample's unlabelled test patches (Kaggle's test/ layout: <id>.tif)."""
    d = sample_dir / "test"
    assert len(list(d.glob("*.tif"))) >= 4
    return d


@pytest.fixture(scope="module")
def exported(export_bundle):
    """The export base directory of the shared run and its version 1, a SavedModel (conftest's
    bundle: the same export_run of the same run, made once for the whole suite)."""
    return export_bundle, export_bundle / "1"


def _read_submission(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", "label"]
    return [r[0] for r in rows[1:]], np.array([float(r[1]) for r in rows[1:]])


def _listing(d):
    return sorted((p.name, p.stat().st_mtime_ns) for p in d.iterdir())


def test_predict_run_dir_and_saved_model_agree(trained_run, exported, patches, tmp_path):
    before = _listing(patches)
    base, version_dir = exported
    predict.predict(trained_run, patches, tmp_path / "from_run.csv", batch_size=3, log=lambda *_: None)
    predict.predict(version_dir, patches, tmp_path / "from_savedmodel.csv", batch_size=5, log=lambda *_: None)
    ids_run, p_run = _read_submission(tmp_path / "from_run.csv")
    ids_sm, p_sm = _read_submission(tmp_path / "from_savedmodel.csv")
    assert ids_run == ids_sm == sorted(p.stem for p in patches.glob("*.tif"))
    from hcdtf.inference import loading  # the run's own Keras model, called directly (not predict's scorer)

    x = np.stack([predict.read_patch(patches / f"{i}.tif") for i in ids_run])
    want = np.asarray(loading.load_model(trained_run)(x, training=False), np.float64).reshape(-1)
    np.testing.assert_allclose(p_run, want, rtol=0, atol=1e-6)
    np.testing.assert_allclose(p_run, p_sm, atol=1e-5)

    # The CLI with the export base directory: its latest version, as TF Serving would pick.
    result = CliRunner().invoke(main, ["predict", str(base), "--images", str(patches),
                                       "--out", str(tmp_path / "cli" / "submission.csv")])
    assert result.exit_code == 0, result.output
    assert "latest" in result.output and "wrote" in result.output
    ids_cli, p_cli = _read_submission(tmp_path / "cli" / "submission.csv")
    assert ids_cli == ids_run
    np.testing.assert_allclose(p_cli, p_run, atol=1e-5)
    assert _listing(patches) == before  # read only
    assert not list(tmp_path.rglob("*.tmp"))


def test_predict_rejects_bad_input_naming_it(trained_run, patches, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    good = sorted(patches.glob("*.tif"))[:2]
    for p in good:
        shutil.copy(p, images / p.name)
    Image.new("RGB", (64, 64)).save(images / "small.png")
    out = tmp_path / "sub.csv"
    cli_fails(["predict", str(trained_run), "--images", str(images), "--out", str(out)],
           "small.png", "96x96", "(64, 64, 3)")
    (images / "small.png").unlink()
    Image.new("L", (96, 96)).save(images / "gray.png")
    cli_fails(["predict", str(trained_run), "--images", str(images), "--out", str(out)], "gray.png", "mode L")
    (images / "gray.png").unlink()
    (images / "broken.tif").write_bytes(b"not a tiff")
    cli_fails(["predict", str(trained_run), "--images", str(images), "--out", str(out)], "broken.tif", "cannot be read")
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))

    empty = tmp_path / "empty"
    empty.mkdir()
    cli_fails(["predict", str(trained_run), "--images", str(empty), "--out", str(out)], "no .tif", str(empty))
    cli_fails(["predict", str(tmp_path / "nowhere"), "--images", str(patches), "--out", str(out)],
           "not a model", "saved_model.pb")
    cli_fails(["predict", str(trained_run), "--images", str(patches), "--out", str(patches / "sub.csv")],
           "inside the image directory")
    assert not (patches / "sub.csv").exists()


def test_grad_cam_maps_and_pngs(trained_run, patches, tmp_path):
    out = tmp_path / "gradcam"
    records = explain.explain(trained_run, [patches], out, max_images=3, log=lambda *_: None)
    assert len(records) == 3
    ids = sorted(p.stem for p in patches.glob("*.tif"))[:3]
    assert [r["id"] for r in records] == ids
    score, _ = predict.load_scorer(trained_run)
    expected = score(np.stack([predict.read_patch(patches / f"{i}.tif") for i in ids]))
    for r, p in zip(records, expected):
        heat = r["heat"]
        assert heat.shape == (96, 96)
        assert heat.min() >= 0.0 and heat.max() <= 1.0
        assert r["probability"] == pytest.approx(p, abs=1e-5)  # Grad-CAM's logit is the model's
        with Image.open(r["file"]) as im:
            assert im.format == "PNG" and im.size[0] > 96
    assert sorted(p.name for p in out.glob("*.png")) == [f"{i}_gradcam.png" for i in ids]
    assert (out / "explain.csv").read_text().startswith("id,probability,logit,file\n")


def test_grad_cam_layer_and_cli(trained_run, exported, patches, tmp_path):
    from hcdtf.inference import loading

    model = loading.load_model(trained_run)
    layer = explain.last_conv_layer(model.get_layer("base"))
    assert layer.name.startswith("conv5_block") and layer.name.endswith("_out")

    files = sorted(patches.glob("*.tif"))[:2]
    out = tmp_path / "cli_out"
    # --images takes several paths in a row (a shell glob), as the usage line says.
    result = CliRunner().invoke(main, ["explain", str(trained_run), "--images", *map(str, files), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.glob("*.png")) == [f"{f.stem}_gradcam.png" for f in files]
    cli_fails(["explain", str(trained_run), "--images", str(patches), "--out", str(patches / "maps")],
           "inside the image directory")
    cli_fails(["explain", str(exported[1]), "--images", str(files[0]), "--out", str(out)], "SavedModel", "run directory")
    cli_fails(["explain", str(tmp_path), "--images", str(files[0]), "--out", str(out)], "not an hcdtf run directory")
    cli_fails(["explain", str(trained_run), "--out", str(out)], "--images")


# ----------------------------------------------------------------------------- every backend
def test_backend_is_detected_from_the_path(trained_run, export_bundle):
    from hcdtf.inference import backends

    b = export_bundle
    cases = {trained_run: "run", b / "1": "saved_model", b / "1.keras": "keras", b / "1-onnx": "onnx",
             b / "1-onnx" / "model.onnx": "onnx", b / "1-openvino" / "model.xml": "openvino",
             b / "1-openvino-int8": "openvino-int8", b / "1-litert" / "model.tflite": "litert", b: "saved_model"}
    for path, kind in cases.items():
        assert backends.resolve(path, log=lambda *_: None)[0] == kind, path
    assert backends.resolve(b, "litert", log=lambda *_: None) == ("litert", b / "1-litert")
    meta = backends.model_metadata("saved_model", b / "1")
    assert meta["input_mpp"] == 0.972 and meta["arch"] == "ResNet10"
    assert backends.model_metadata("onnx", b / "1-onnx" / "model.onnx")["format"] == "onnx"


@pytest.fixture(scope="module")
def run_submission(trained_run, patches, tmp_path_factory):
    """The run directory's own submission (ids, probabilities), once for every backend below."""
    out = tmp_path_factory.mktemp("run_submission") / "run.csv"
    predict.predict(trained_run, patches, out, log=lambda *_: None)
    return _read_submission(out)


@pytest.mark.parametrize("backend, atol", [("onnx", 1e-4), ("openvino", 1e-4), ("litert", 1e-4),
                                           ("openvino-int8", 0.1)])
def test_predict_with_every_exported_format(run_submission, export_bundle, patches, tmp_path, backend, atol):
    result = CliRunner().invoke(main, ["predict", str(export_bundle), "--backend", backend, "--images", str(patches),
                                       "--out", str(tmp_path / "sub.csv"), "--batch-size", "3"])
    assert result.exit_code == 0, result.output
    ids_run, p_run = run_submission
    ids, p = _read_submission(tmp_path / "sub.csv")
    assert ids == ids_run
    np.testing.assert_allclose(p, p_run, atol=atol)
    score, description = predict.load_scorer(export_bundle / f"1-{backend}", log=lambda *_: None)
    assert backend.split("-")[0] in description.lower() or "openvino" in description.lower()
    assert score(np.zeros((0, 96, 96, 3), np.uint8)).shape == (0,)  # an empty batch is an empty answer


def test_int8_predict_runs_the_int8_model(export_bundle, patches, tmp_path):
    """--backend openvino-int8 on the export base directory scores with the quantized IR: its
    probabilities are those of 1-openvino-int8/model.xml run here with OpenVINO directly (tight),
    which differ from the float32 IR's (so a float32 model cannot pass), and the log names it."""
    import openvino as ov

    result = CliRunner().invoke(main, ["predict", str(export_bundle), "--backend", "openvino-int8", "--images",
                                       str(patches), "--out", str(tmp_path / "sub.csv")])
    assert result.exit_code == 0, result.output
    assert f"{export_bundle / '1-openvino-int8'} (int8" in result.output
    ids, p = _read_submission(tmp_path / "sub.csv")
    x = np.stack([predict.read_patch(patches / f"{i}.tif") for i in ids])
    core = ov.Core()

    def run(name):
        compiled = core.compile_model(str(export_bundle / name / "model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return compiled(x)[0].reshape(-1)

    int8, fp32 = run("1-openvino-int8"), run("1-openvino")
    ops = {op.get_type_name() for op in core.read_model(str(export_bundle / "1-openvino-int8" / "model.xml")).get_ops()}
    assert "FakeQuantize" in ops  # NNCF's quantized IR
    np.testing.assert_allclose(p, int8, rtol=0, atol=2e-6)
    assert np.abs(int8 - fp32).max() > 2e-4, np.abs(int8 - fp32).max()  # 1.8e-3 on a 1-epoch ResNet18


def test_predict_bad_backend_and_output_are_one_line(export_bundle, patches, tmp_path):
    out = tmp_path / "sub.csv"
    cli_fails(["predict", str(export_bundle / "1"), "--backend", "onnx", "--images", str(patches), "--out", str(out)],
              "--backend onnx", "saved_model")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    cli_fails(["predict", str(export_bundle / "1"), "--images", str(patches), "--out", str(a_file / "sub.csv")],
              str(a_file / "sub.csv"), "cannot create")
    cli_fails(["predict", str(export_bundle / "1"), "--images", str(patches), "--out", str(out),
               "--pipeline-option=--project=p"], "--runner")
    assert not out.exists()


# ----------------------------------------------------------------------------- Apache Beam
def test_beam_direct_runner_gives_the_local_submission(export_bundle, patches, tmp_path):
    from hcdtf.inference import beam as beam_predict

    local, beam = tmp_path / "local.csv", tmp_path / "beam" / "beam.csv"
    # One patch per call on both sides: TensorFlow's CPU kernels may round differently (~1e-7) for
    # another batch composition, and Beam forms its own batches.
    predict.predict(export_bundle / "1", patches, local, batch_size=1, log=lambda *_: None)
    beam_predict.predict_beam(export_bundle / "1", str(patches), str(beam), "DirectRunner", batch_size=1,
                              log=lambda *_: None)
    assert beam.read_text() == local.read_text()  # same ids, order and probabilities, byte for byte
    assert sorted(p.name for p in beam.parent.iterdir()) == ["beam.csv"]  # no temporary left

    result = CliRunner().invoke(main, ["predict", str(export_bundle), "--backend", "onnx", "--images", str(patches),
                                       "--out", str(tmp_path / "cli.csv"), "--runner", "DirectRunner"])
    assert result.exit_code == 0, result.output
    ids, p = _read_submission(tmp_path / "cli.csv")
    ids_local, p_local = _read_submission(local)
    assert ids == ids_local
    np.testing.assert_allclose(p, p_local, atol=1e-4)


def test_beam_runner_that_is_not_installed_is_one_line(export_bundle, patches, tmp_path):
    import importlib.util

    if importlib.util.find_spec("apitools") is not None:
        pytest.skip("apache-beam[gcp] is installed here")
    cli_fails(["predict", str(export_bundle / "1"), "--images", str(patches), "--out", str(tmp_path / "s.csv"),
               "--runner", "DataflowRunner"], "DataflowRunner", "pip install 'apache-beam[gcp]'")
