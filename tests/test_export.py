"""Tests for hcdtf.export: the SavedModel that TF Serving loads, checked from outside.

Two exports are made once per module into one export directory: the shared float32 `trained_run`
(version 1) and a mixed-precision copy of it (version 2). The mixed run is the trained run's
weights in a classifier built under the `mixed_float16` policy and saved as that run's
model.keras (float16 compute, float32 variables: what `hcdtf train` with
`train.precision=mixed_float16` saves), which is what export has to deal with; training one
under mixed precision on this CPU would take ~40 s more for the same test.

The SavedModels are read by `saved_model_cli` and by a fresh Python process that imports only
TensorFlow (importing hcdtf there is blocked), and compared with the Keras models' predictions
on the same patches (a .npy file, and PNG bytes written with Pillow).
"""

from __future__ import annotations

import functools
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import hcdtf  # noqa: E402
from hcdtf import export  # noqa: E402

N_PATCHES = 6
TF_ONLY_CLIENT = r"""
import importlib.abc, json, sys
import numpy as np
import tensorflow as tf

class NoHcdtf(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "hcdtf":
            raise ImportError("hcdtf is not available to a TF Serving client")
sys.meta_path.insert(0, NoHcdtf())

export_dir, patches_dir = sys.argv[1], sys.argv[2]
x = np.load(f"{patches_dir}/patches.npy")
pngs = [open(f"{patches_dir}/{i}.png", "rb").read() for i in range(len(x))]
jpeg = open(f"{patches_dir}/0.jpg", "rb").read()
out = {}

def error(fn):
    try:
        fn()
    except Exception as e:
        return {"type": type(e).__name__, "message": str(e)}
    return None

for version in ("1", "2"):
    m = tf.saved_model.load(f"{export_dir}/{version}")
    default, encoded = m.signatures["serving_default"], m.signatures["serving_encoded"]
    d = default(images=tf.constant(x))
    e = encoded(image_bytes=tf.constant(pngs))
    out[version] = {
        "loaded_type": type(m).__module__ + "." + type(m).__name__,
        "default": {k: v.numpy().tolist() for k, v in d.items()},
        "encoded": {k: v.numpy().tolist() for k, v in e.items()},
        "output_dtypes": sorted({v.dtype.name for v in [*d.values(), *e.values()]}),
        "variable_dtypes": sorted({v.dtype.name for v in m.variables}),
        "n_variables": len(m.variables),
        "metadata": open(m.hcdtf_metadata.asset_path.numpy().decode()).read(),
    }
    if version == "1":
        png64 = tf.io.encode_png(np.zeros((64, 64, 3), np.uint8)).numpy()
        out[version]["jpeg"] = encoded(image_bytes=tf.constant([jpeg]))["probability"].numpy().tolist()
        out[version]["empty_batch"] = list(default(images=tf.zeros([0, 96, 96, 3], tf.uint8))["probability"].shape)
        out[version]["errors"] = {
            "float images": error(lambda: default(images=tf.constant(x.astype(np.float32)))),
            "64x64 images": error(lambda: default(images=tf.zeros([2, 64, 64, 3], tf.uint8))),
            "one image without batch axis": error(lambda: default(images=tf.constant(x[0]))),
            "RGBA images": error(lambda: default(images=tf.zeros([1, 96, 96, 4], tf.uint8))),
            "int bytes": error(lambda: encoded(image_bytes=tf.constant([1, 2]))),
            "2-D bytes": error(lambda: encoded(image_bytes=tf.constant([pngs[:1]]))),
            "not an image": error(lambda: encoded(image_bytes=tf.constant([pngs[0], b"hello, world"]))),
            "truncated PNG": error(lambda: encoded(image_bytes=tf.constant([pngs[0][:100]]))),
            "64x64 PNG": error(lambda: encoded(image_bytes=tf.constant([png64]))),
        }
out["hcdtf_imported"] = sorted(k for k in sys.modules if k.split(".")[0] == "hcdtf")
print(json.dumps(out))
"""


def _patches(n: int) -> np.ndarray:
    """Noise and smooth colour gradients, so the outputs differ from patch to patch."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)
    ramp = np.linspace(0, 255, 96)
    for i in range(0, n, 2):
        c = rng.uniform(0.3, 1.0, 3)
        x[i] = (ramp[None, :, None] * c[None, None, :] * 0.5 + ramp[:, None, None] * 0.5).astype(np.uint8)
    return x


@functools.lru_cache(maxsize=None)
def _load_keras_cached(path: str):
    import hcdtf.models.layers  # noqa: F401  registers the preprocessing layer

    return keras.saving.load_model(path, compile=False)


def _load_keras(path):
    """keras.saving.load_model, once per file (loading a ResNet18 takes seconds here)."""
    return _load_keras_cached(str(path))


def _make_mixed_run(run: pathlib.Path, out: pathlib.Path) -> pathlib.Path:
    from hcdtf import models

    out.mkdir(parents=True)
    for name in ("config.yaml", "train_summary.json", "val_predictions.csv"):
        shutil.copy(run / name, out / name)
    summary = json.loads((out / "train_summary.json").read_text())
    summary["precision"] = "mixed_float16"
    (out / "train_summary.json").write_text(json.dumps(summary))
    trained = _load_keras(run / "model.keras")
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        mixed = models.build_classifier("ResNet18", weights=None, strategy="fine_tune")
    finally:
        keras.mixed_precision.set_global_policy(previous)
    mixed.set_weights(trained.get_weights())
    mixed.save(str(out / "model.keras"))
    return out


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    base = tmp_path_factory.mktemp("export")
    export_dir = base / "models" / "hcd"
    patches_dir = base / "patches"
    patches_dir.mkdir()
    x = _patches(N_PATCHES)
    np.save(patches_dir / "patches.npy", x)
    from PIL import Image

    for i, patch in enumerate(x):
        Image.fromarray(patch).save(patches_dir / f"{i}.png")
    buf = io.BytesIO()
    Image.fromarray(x[0]).save(buf, format="JPEG", quality=90)
    (patches_dir / "0.jpg").write_bytes(buf.getvalue())

    mixed_run = _make_mixed_run(trained_run, base / "mixed_run")
    logs = []
    v1 = export.export_run(trained_run, export_dir, log=logs.append)
    v2 = export.export_run(mixed_run, export_dir, log=logs.append)

    # oneDNN kernels on, as TensorFlow (and TF Serving) default to on AVX-512 servers: they
    # reject a zero-size batch, which the exported signatures must still answer.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", "TF_ENABLE_ONEDNN_OPTS": "1"}
    cli = subprocess.Popen(  # runs while the client below loads TensorFlow
        [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "show", "--all", "--dir", str(v1)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    client = subprocess.run(
        [sys.executable, "-c", TF_ONLY_CLIENT, str(export_dir), str(patches_dir)],
        capture_output=True, text=True, env=env, cwd=base, timeout=300,
    )
    cli_out, cli_err = cli.communicate(timeout=300)
    assert client.returncode == 0, client.stderr[-3000:]
    assert cli.returncode == 0, cli_err[-3000:]
    return {
        "export_dir": export_dir, "v1": v1, "v2": v2, "mixed_run": mixed_run, "x": x,
        "patches_dir": patches_dir, "logs": logs, "cli": cli_out,
        "client": json.loads(client.stdout.strip().splitlines()[-1]),
    }


def _signature_block(cli_out: str, name: str) -> str:
    start = cli_out.index(f"signature_def['{name}']")
    end = cli_out.find("signature_def[", start + 1)
    return cli_out[start: end if end != -1 else len(cli_out)]


def test_saved_model_cli_lists_both_signatures(exported):
    default = _signature_block(exported["cli"], "serving_default")
    assert "inputs['images']" in default
    assert "dtype: DT_UINT8" in default and "shape: (-1, 96, 96, 3)" in default
    encoded = _signature_block(exported["cli"], "serving_encoded")
    assert "inputs['image_bytes']" in encoded
    assert "dtype: DT_STRING" in encoded and "shape: (-1)" in encoded
    for block in (default, encoded):
        assert "outputs['probability']" in block and "outputs['logit']" in block
        assert block.count("dtype: DT_FLOAT") == 2 and block.count("shape: (-1, 1)") == 2
        assert "tensorflow/serving/predict" in block


def test_tf_only_client_matches_keras(exported, trained_run):
    client = exported["client"]
    assert client["hcdtf_imported"] == []
    assert not client["1"]["loaded_type"].startswith("keras")  # a plain restored TF object
    model = _load_keras(trained_run / "model.keras")
    x = exported["x"]
    prob = model.predict(x, verbose=0)
    from hcdtf import models

    logit = models.logits_model(model)(x, training=False).numpy()
    for signature in ("default", "encoded"):
        out = client["1"][signature]
        np.testing.assert_allclose(np.array(out["probability"]), prob, atol=1e-5, rtol=0)
        np.testing.assert_allclose(np.array(out["logit"]), logit, atol=1e-5, rtol=0)
        np.testing.assert_allclose(1 / (1 + np.exp(-np.array(out["logit"]))), out["probability"], atol=1e-6)
    assert np.ptp(prob) > 1e-4, "the patches should not all score the same"
    # JPEG bytes are decoded by the same TF decoder a client-side tf.io.decode_jpeg uses.
    jpeg = tf.io.decode_jpeg((exported["patches_dir"] / "0.jpg").read_bytes()).numpy()[None]
    np.testing.assert_allclose(client["1"]["jpeg"], model.predict(jpeg, verbose=0), atol=1e-5, rtol=0)
    assert client["1"]["empty_batch"] == [0, 1]


@pytest.mark.parametrize("case, expected", [
    ("float images", "expected to be a uint8 tensor"),
    ("int bytes", "expected to be a string tensor"),
    ("64x64 images", "images must be uint8 [batch, 96, 96, 3] RGB; got shape] [2 64 64 3]"),
    ("one image without batch axis", "images must be uint8 [batch, 96, 96, 3] RGB; got shape] [96 96 3]"),
    ("RGBA images", "got shape] [1 96 96 4]"),
    ("2-D bytes", "image_bytes must be a 1-D batch [batch] of encoded images; got shape] [1 1]"),
    ("not an image", "[image_bytes element] [1] [is not a PNG or JPEG image"),
    ("truncated PNG", "Invalid PNG data"),
    ("64x64 PNG", "[image_bytes element] [0] [each image must be 96x96 pixels; got height, width] [64 64]"),
])
def test_bad_inputs_are_rejected_with_a_clear_message(exported, case, expected):
    err = exported["client"]["1"]["errors"][case]
    assert err is not None, f"{case} was accepted"
    assert err["type"] == "InvalidArgumentError"
    assert expected in err["message"]


def test_mixed_precision_run_exports_float32(exported):
    mixed = _load_keras(exported["mixed_run"] / "model.keras")
    convs = {l.compute_dtype for l in mixed._flatten_layers() if isinstance(l, keras.layers.Conv2D)}
    assert convs == {"float16"}  # really a mixed-precision model
    out = exported["client"]["2"]
    assert out["output_dtypes"] == ["float32"]
    # Float variables all float32 (the int64 one is Dropout's seed-generator state).
    assert {d for d in out["variable_dtypes"] if "float" in d} == {"float32"}
    assert out["n_variables"] > 100
    expected = mixed.predict(exported["x"], verbose=0).astype(np.float32)
    for signature in ("default", "encoded"):
        np.testing.assert_allclose(np.array(out[signature]["probability"]), expected, atol=1e-2, rtol=0)
    # No half-precision op or tensor anywhere in the graph or its functions.
    from tensorflow.core.framework import types_pb2
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel.FromString((exported["v2"] / "saved_model.pb").read_bytes())
    graph = sm.meta_graphs[0].graph_def
    nodes = [*graph.node, *(n for f in graph.library.function for n in f.node_def)]
    half = [n.name for n in nodes for a in n.attr.values()
            if a.type == types_pb2.DT_HALF or types_pb2.DT_HALF in a.list.type]
    assert half == []
    meta = json.loads(out["metadata"])
    assert meta["trained_precision"] == "mixed_float16" and meta["export_precision"] == "float32"


def test_two_exports_are_versions_1_and_2(exported):
    export_dir = exported["export_dir"]
    assert sorted(p.name for p in export_dir.iterdir()) == ["1", "1.keras", "2", "2.keras"]
    assert exported["v1"] == export_dir / "1" and exported["v2"] == export_dir / "2"
    assert "SavedModel" in exported["logs"][0] and "serving_encoded" in exported["logs"][0]
    for v in ("1", "2"):
        assert (export_dir / v / "saved_model.pb").is_file()
        assert (export_dir / v / "variables" / "variables.index").is_file()


def test_metadata_asset(exported, trained_run):
    path = exported["v1"] / "assets" / "hcdtf_metadata.json"
    meta = json.loads(path.read_text())
    assert exported["client"]["1"]["metadata"] == path.read_text()  # the tracked asset is this file
    assert meta["arch"] == "ResNet18" and meta["strategy"] == "fine_tune"
    assert meta["dataset"] == "hcd/kaggle"
    assert meta["hcdtf_version"] == hcdtf.__version__
    assert meta["trained_precision"] == "float32" and meta["export_precision"] == "float32"
    summary = json.loads((trained_run / "train_summary.json").read_text())
    assert meta["best_val_auc"] == summary["best_val_auc"]
    val = meta["validation"]
    assert val["n"] == 10 and 0.0 <= val["auc"] <= 1.0 and 0.0 <= val["accuracy"] <= 1.0
    assert set(meta["signatures"]) == {"serving_default", "serving_encoded"}


def test_keras_export_loads_as_float32(exported, trained_run):
    x = exported["x"][:2]
    exported_model = _load_keras(exported["export_dir"] / "1.keras")
    np.testing.assert_allclose(
        exported_model.predict(x, verbose=0), _load_keras(trained_run / "model.keras").predict(x, verbose=0),
        atol=1e-6, rtol=0,
    )
    # The copy of the mixed run is float32 too (read from its config, without building it).
    with zipfile.ZipFile(exported["export_dir"] / "2.keras") as archive:
        config = archive.read("config.json").decode()
    assert "float32" in config and "mixed_float16" not in config and "float16" not in config


def test_version_directory_appears_only_when_complete(trained_run, tmp_path, monkeypatch):
    from hcdtf.evaluate import load_run_config

    seen = []

    def fake_write(model, path, metadata):
        seen.append(path)
        assert path.parent.name.startswith(".tmp-1-") and not (tmp_path / "1").exists()
        path.mkdir()
        (path / "saved_model.pb").write_bytes(b"half written")
        raise OSError("disk full")

    monkeypatch.setattr(export, "float32_model", lambda run: (None, load_run_config(run)))
    monkeypatch.setattr(export, "write_saved_model", fake_write)
    with pytest.raises(OSError, match="disk full"):
        export.export_run(trained_run, tmp_path, log=lambda _: None)
    assert seen and list(tmp_path.iterdir()) == []  # no version, no .keras, no staging left


def test_existing_version_is_refused(trained_run, tmp_path):
    (tmp_path / "3").mkdir()
    with pytest.raises(FileExistsError, match="versions are immutable"):
        export.export_run(trained_run, tmp_path, version=3, log=lambda _: None)
    assert export.next_version(tmp_path) == 4


def test_baseline_run_is_refused(tmp_path):
    (tmp_path / "config.yaml").write_text("seed: 0\n")
    (tmp_path / "model.npz").write_bytes(b"")
    with pytest.raises(export.BaselineRunError, match="logistic-regression baseline"):
        export.export_run(tmp_path, tmp_path / "models", log=lambda _: None)
    assert not (tmp_path / "models").exists()
