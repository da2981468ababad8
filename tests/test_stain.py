"""Stain normalisation (hcdtf.models.stain, `hcdtf stain`): the layers' parts against NumPy, the
layers against torchstain's NumPy backend, little tissue, mixed precision, saving, the CLI, and
the exported formats.

Agreement with torchstain 1.4.1 (NumPy backend, float64; it truncates its result to uint8, we
keep float32): fitted targets within 1e-4 (relative), and ``floor(ours) == torchstain`` on at least
99.9% (Macenko) / 99% (Reinhard) of the values, never more than one grey level apart. The
differences are float32 rounding on values that lie at an integer boundary.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from conftest import cli_fails

from hcdtf.models import stain
from hcdtf.synthetic.patch import generate_patch


def _tissue_fraction(image):
    """Macenko's tissue criterion (every optical density >= 0.15 at Io 240), computed in NumPy."""
    od = -np.log((image.reshape(-1, 3).astype(float) + 1) / 240)
    return float(np.all(od >= 0.15, axis=1).mean())


@pytest.fixture(scope="module")
def patches():
    """Eight synthetic H&E patches with tissue on at least a quarter of the pixels (negatives and
    positives, different tissue and stain; pale patches are tested apart)."""
    out, seed = [], 100
    while len(out) < 8:
        image = generate_patch(np.random.default_rng(seed), seed % 2)[0]
        if _tissue_fraction(image) >= 0.25:
            out.append(image)
        seed += 1
    return np.stack(out)


# ------------------------------------------------------------------------------------ parts
def test_jacobi_eigen_decomposition_matches_numpy():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(64, 3, 3))
    mats = [m @ m.transpose(0, 2, 1),  # random positive semi-definite
            np.stack([np.diag(rng.normal(size=3)) for _ in range(4)]),  # already diagonal
            np.stack([np.eye(3) * 2.0, np.zeros((3, 3)), np.ones((3, 3)), np.diag([1.0, 1.0, 3.0])]),  # ties
            1e-4 * (m[:8] @ m[:8].transpose(0, 2, 1))]  # optical-density covariance scale
    a = np.concatenate(mats).astype(np.float32)
    values, vectors = (t.numpy() for t in stain.symmetric_eig3(tf.constant(a)))
    expected = np.linalg.eigvalsh(a.astype(np.float64))
    scale = np.abs(a).max(axis=(1, 2), keepdims=True)[:, :, 0] + 1e-12
    assert np.all(np.abs(np.sort(values, axis=1) - expected) <= 1e-5 * scale)
    # A v = lambda v, and V orthonormal
    residual = a @ vectors - vectors * values[:, None, :]
    assert np.abs(residual).max(axis=(1, 2)).max() <= 1e-5 * scale.max()
    assert np.allclose(vectors.transpose(0, 2, 1) @ vectors, np.eye(3), atol=1e-5)


@pytest.mark.parametrize("static", [True, False])
def test_tail_percentiles_match_numpy(static):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 500)).astype(np.float32)
    valid = rng.random((5, 500)) < np.array([1.0, 0.5, 0.02, 0.004, 0.3])[:, None]  # 500, ~250, ~10, 2 values
    valid[3] = False
    valid[3, :2] = True
    n = 500 if static else None
    for p in (99.0, 90.0, 50.0):
        got = stain._upper_percentile(tf.constant(x), p, tf.constant(valid), n).numpy()
        low = stain._lower_percentile(tf.constant(x), 100 - p, tf.constant(valid), n).numpy()
        for b in range(5):
            assert got[b] == pytest.approx(np.percentile(x[b][valid[b]], p), abs=1e-5)
            assert low[b] == pytest.approx(np.percentile(x[b][valid[b]], 100 - p), abs=1e-5)
        unmasked = stain._upper_percentile(tf.constant(x), p, None, n).numpy()
        assert np.allclose(unmasked, np.percentile(x, p, axis=1), atol=1e-5)


def test_grouped_top_values_are_exact():
    """_top_values ranks only the candidates of the groups with the largest maxima: the same values
    as tf.math.top_k, with ties, masked (-1e30) rows and mostly-masked rows."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 9216)).astype(np.float32)
    x[1] = np.round(x[1] * 2)  # many ties
    x[2, rng.random(9216) < 0.97] = -1e30  # few valid values
    x[3] = np.sort(x[3])  # the largest all in the last groups
    for k in (1, 94, 200):
        got = stain._top_values(tf.constant(x), k, 9216).numpy()
        assert np.array_equal(got, tf.math.top_k(tf.constant(x), k).values.numpy()), k
    got = stain._upper_percentile(tf.constant(x[:1]), 99.0, None, 9216).numpy()
    assert got[0] == pytest.approx(np.percentile(x[0], 99.0), abs=1e-5)


def _f_reference(rgb):
    """torchstain's rgb2lab up to f (float64, on [0, 1]), with its masks."""
    v = rgb / 255.0
    lin = np.where(v > 0.04045, ((v + 0.055) / 1.055) ** 2.4, v / 12.92)
    t = lin @ stain._RGB2XYZ.T / np.array(stain._WHITE)
    return np.where(t > 0.008856, np.cbrt(t), 7.787 * t + 16.0 / 116.0)


def _rgb_reference(f):
    """torchstain's lab2rgb from f (float64), times 255, clipped."""
    xyz = np.where(f > 0.2068966, f ** 3, (f - 16.0 / 116.0) / 7.787) * np.array(stain._WHITE)
    lin = xyz @ stain._XYZ2RGB.T
    return 255.0 * np.clip(np.where(lin > 0.0031308, 1.055 * np.abs(lin) ** (1 / 2.4) - 0.055, 12.92 * lin), 0, 1)


def test_colour_transforms_match_numpy_across_the_knees():
    """The sRGB / L*a*b* curves (each written as min-piece + max-piece, no masks) equal torchstain's
    piecewise formulas on both sides of every knee: all 256 levels per channel (the sRGB knee is at
    10.3), dark colours below the cube-root knee, and f values around the inverse knees."""
    rng = np.random.default_rng(4)
    levels = np.arange(256, dtype=np.float32)
    rgb = np.stack([np.stack([levels, levels, levels], 1),  # greys, 0..255
                    np.stack([levels, rng.integers(0, 256, 256), rng.integers(0, 12, 256)], 1).astype(np.float32),
                    rng.integers(0, 30, (256, 3)).astype(np.float32)])  # dark: xyz below 0.008856
    got = stain._lab_f(tf.constant(rgb)).numpy()
    want = _f_reference(rgb.astype(np.float64))
    assert (want < 0.2068966).any() and (want > 0.2068966).any()
    assert np.abs(got - want).max() < 2e-6
    f = np.concatenate([want.reshape(-1, 3), 0.2068966 + rng.uniform(-0.02, 0.02, (512, 3)),
                        rng.uniform(0.05, 1.1, (512, 3))]).astype(np.float32)[None]
    back = stain._rgb_from_f(tf.constant(f)).numpy()
    assert np.abs(back - _rgb_reference(f.astype(np.float64))).max() < 2e-3
    assert np.abs(back[0, :768] - rgb.reshape(-1, 3)).max() < 2e-3  # and the round trip


# ------------------------------------------------------------------------------ torchstain
def _floor_agreement(ours, theirs):
    diff = np.floor(ours).astype(int) - theirs.astype(int)
    return np.abs(diff).max(), float((diff == 0).mean())


def test_macenko_matches_torchstain(patches):
    torchstain = pytest.importorskip("torchstain")
    reference = np.concatenate(patches[:2], axis=0)  # fit on two patches = one image made of them
    ref = torchstain.normalizers.MacenkoNormalizer(backend="numpy")
    ref.fit(reference)
    target = stain.fit_target(list(patches[:2]), "macenko")
    ours_he = np.array(target["params"]["stain_matrix"]).T
    assert np.allclose(ours_he, ref.HERef, rtol=1e-4, atol=1e-5)
    assert np.allclose(target["params"]["max_concentrations"], ref.maxCRef, rtol=1e-4)

    layer = stain.layer_from_target(target, return_fallback=True)
    out, fell_back = (t.numpy() for t in layer(patches[2:]))
    assert not fell_back.any() and out.dtype == np.float32
    for ours, image in zip(out, patches[2:]):
        theirs, _, _ = ref.normalize(image, stains=False)
        worst, equal = _floor_agreement(ours, theirs)
        assert worst <= 1 and equal >= 0.999, (worst, equal)
    # The default target is torchstain's reference.
    default = torchstain.normalizers.MacenkoNormalizer(backend="numpy")
    theirs, _, _ = default.normalize(patches[3], stains=False)
    worst, equal = _floor_agreement(stain.MacenkoNormalization()(patches[3:4]).numpy()[0], theirs)
    assert worst <= 1 and equal >= 0.999


def test_reinhard_matches_torchstain(patches):
    torchstain = pytest.importorskip("torchstain")
    ref = torchstain.normalizers.ReinhardNormalizer(backend="numpy")
    ref.fit(np.concatenate(patches[:2], axis=0))
    target = stain.fit_target(list(patches[:2]), "reinhard")
    assert np.allclose(target["params"]["means"], ref.target_means, rtol=1e-4, atol=1e-3)
    assert np.allclose(target["params"]["stds"], ref.target_stds, rtol=1e-4)
    out = stain.layer_from_target(target)(patches[2:]).numpy()
    for ours, image in zip(out, patches[2:]):
        worst, equal = _floor_agreement(ours, ref.normalize(image))
        assert worst <= 1 and equal >= 0.99, (worst, equal)


# ------------------------------------------------------------------------------ robustness
@pytest.mark.parametrize("method", stain.METHODS)
def test_little_tissue_passes_unchanged_and_is_counted(patches, method):
    target = stain.fit_target(list(patches[:2]), method)
    layer = stain.layer_from_target(target, return_fallback=True)
    blank = np.full((96, 96, 3), 250, np.uint8)
    black = np.zeros((96, 96, 3), np.uint8)  # all "tissue" by optical density, but no spread
    flat = np.full((96, 96, 3), (150, 60, 160), np.uint8)  # tissue-coloured but no spread at all
    speck = blank.copy()
    speck[:3, :3] = (120, 40, 130)  # 9 tissue pixels, < 1%
    noise = np.clip(245 + np.random.default_rng(2).normal(0, 3, (96, 96, 3)), 0, 255).astype(np.uint8)
    batch = np.stack([patches[2], blank, black, flat, speck, noise, patches[3]])
    out, fell_back = (t.numpy() for t in layer(batch))
    assert np.all(np.isfinite(out))
    assert fell_back.tolist() == [False, True, True, True, True, True, False]
    for i in np.flatnonzero(fell_back):
        assert np.array_equal(out[i], batch[i].astype(np.float32))
    # Each image is normalised on its own: neighbours in the batch change nothing.
    alone = layer(batch[[0, 6]])[0].numpy()
    assert np.allclose(out[[0, 6]], alone, atol=1e-3)


def test_pale_patch_where_torchstain_fails_passes_unchanged():
    """Synthetic patch 104 (pale, no pixel with every optical density >= 0.15): torchstain's
    Macenko raises; the layer passes it through and says so."""
    torchstain = pytest.importorskip("torchstain")
    image = generate_patch(np.random.default_rng(104), 0)[0]
    assert _tissue_fraction(image) == 0.0
    reference = torchstain.normalizers.MacenkoNormalizer(backend="numpy")
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning), pytest.raises(np.linalg.LinAlgError):
        reference.normalize(image, stains=False)
    out, fell_back = stain.MacenkoNormalization(return_fallback=True)(image[None])
    assert bool(fell_back.numpy()[0]) and np.array_equal(out.numpy()[0], image.astype(np.float32))


def test_float32_under_mixed_policy(patches):
    target = stain.fit_target(list(patches[:2]), "macenko")
    expected = stain.layer_from_target(target)(patches[2:4]).numpy()
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        layer = stain.layer_from_target(target)
        out = layer(patches[2:4])
        assert layer.compute_dtype == "float32" and out.dtype == tf.float32
        assert np.array_equal(out.numpy(), expected)
    finally:
        keras.config.set_dtype_policy(previous)


def _classifier(patches):
    """A tiny classifier with both layers, in the layout hcdtf's export expects (head_logit,
    probability first), with the normalised images (both layers', / 255) as a second output."""
    inputs = keras.Input((96, 96, 3), dtype="uint8", name="image")
    mac = stain.layer_from_target(stain.fit_target(list(patches[:2]), "macenko"), name="stain_macenko")(inputs)
    rein = stain.layer_from_target(stain.fit_target(list(patches[:2]), "reinhard"), name="stain_reinhard")(inputs)
    images = keras.layers.Rescaling(1 / 255.0, name="normalised")(keras.layers.Concatenate(name="both")([mac, rein]))
    x = keras.layers.Conv2D(4, 8, strides=8, kernel_initializer=keras.initializers.RandomNormal(0, 0.02, seed=1),
                            name="conv")(images)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    logit = keras.layers.Dense(1, kernel_initializer=keras.initializers.RandomNormal(0, 3.0, seed=2),
                               name="head_logit")(x)
    prob = keras.layers.Activation("sigmoid", name="probability")(logit)
    return keras.Model(inputs, [prob, images], name="stain_test")


def test_saved_with_the_model(patches, tmp_path):
    target = stain.fit_target(list(patches[:2]), "macenko")
    inputs = keras.Input((96, 96, 3), dtype="uint8")
    model = keras.Model(inputs, stain.layer_from_target(target)(inputs))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", compile=False)
    layer = loaded.layers[-1]
    assert isinstance(layer, stain.MacenkoNormalization)
    assert layer.stain_matrix == target["params"]["stain_matrix"]
    assert np.array_equal(loaded(patches[2:5]).numpy(), model(patches[2:5]).numpy())


def test_bad_targets_are_refused(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(stain.TargetError, match="bad.json"):
        stain.read_target(bad)
    bad.write_text(json.dumps({"format": stain.TARGET_FORMAT, "version": 1, "method": "macenko",
                               "params": {"stain_matrix": [[1, 0], [0, 1]]}}))
    with pytest.raises(stain.TargetError, match="stain_matrix"):
        stain.read_target(bad)
    with pytest.raises(stain.TargetError, match="too little tissue"):
        stain.fit_target([np.full((50, 50, 3), 250, np.uint8)], "macenko")


# ------------------------------------------------------------------------------ CLI
def _write_pngs(directory, arrays, names):
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    for a, n in zip(arrays, names):
        Image.fromarray(a).save(directory / n)


def test_cli_fit_and_apply(patches, tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from hcdtf.cli import main

    ref, src = tmp_path / "ref", tmp_path / "src"
    _write_pngs(ref, patches[:2], ["a.png", "b.png"])
    names = ["c.png", "d.tif", "blank.png"]
    _write_pngs(src, [patches[2], patches[3], np.full((96, 96, 3), 250, np.uint8)], names)
    wide = np.concatenate([patches[4], patches[5]], axis=1)  # any size is fine
    _write_pngs(src, [wide], ["wide.png"])
    target = tmp_path / "target.json"
    runner = CliRunner()
    result = runner.invoke(main, ["stain", "fit", str(ref), "--method", "macenko", "--out", str(target)])
    assert result.exit_code == 0, result.output
    saved = json.loads(target.read_text())
    assert saved == stain.check_target(saved) and saved["n_images"] == 2
    assert np.allclose(saved["params"]["stain_matrix"],
                       stain.fit_target(list(patches[:2]), "macenko")["params"]["stain_matrix"])
    out = tmp_path / "out"
    result = runner.invoke(main, ["stain", "apply", str(src), "--target", str(target), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "4 image(s)" in result.output and "1 left unchanged" in result.output and "blank.png" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["blank.png", "c.png", "d.png", "wide.png"]
    layer = stain.layer_from_target(saved)
    for name, image in (("c", patches[2]), ("d", patches[3])):
        written = np.asarray(Image.open(out / f"{name}.png"))
        diff = np.abs(written.astype(int) - np.rint(layer(image[None]).numpy()[0]))
        assert diff.max() <= 1 and diff.mean() < 1e-3  # rounding of values at .5, graph vs eager
    assert np.array_equal(np.asarray(Image.open(out / "blank.png")), np.full((96, 96, 3), 250, np.uint8))
    wide_out = np.asarray(Image.open(out / "wide.png"))
    assert wide_out.shape == wide.shape and not np.array_equal(wide_out, wide)


def test_cli_bad_input(patches, tmp_path):
    from PIL import Image

    src = tmp_path / "src"
    _write_pngs(src, [patches[0]], ["a.png"])
    Image.fromarray(patches[0][..., 0]).save(src / "grey.png")
    (tmp_path / "notes.png").write_text("not an image")
    target = tmp_path / "t.json"
    cli_fails(["stain", "fit", str(src / "grey.png"), "--out", str(target)], "grey.png", "8-bit RGB")
    cli_fails(["stain", "fit", str(tmp_path / "notes.png"), "--out", str(target)], "notes.png", "cannot be read")
    cli_fails(["stain", "fit", str(tmp_path / "missing.png"), "--out", str(target)], "missing.png", "does not exist")
    cli_fails(["stain", "fit", str(src / "a.png"), "--method", "vahadane", "--out", str(target)], "--method")
    cli_fails(["stain", "apply", str(src / "a.png"), "--target", str(tmp_path / "none.json"), "--out",
               str(tmp_path / "o")], "none.json", "not found")
    target.write_text("[1, 2]")
    cli_fails(["stain", "apply", str(src / "a.png"), "--target", str(target), "--out", str(tmp_path / "o")],
              "t.json", "not an hcdtf stain target")
    target.write_text(json.dumps(stain.fit_target([patches[0]], "reinhard")))
    cli_fails(["stain", "apply", str(src / "a.png"), "--target", str(target), "--out", str(src)],
              "a.png", "overwritten")
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------ export
def _run_exported(kind, path, x):
    """Both outputs of an exported model, (probability [B, 1], images [B, 96, 96, 6])."""
    if kind == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outputs = session.run(None, {session.get_inputs()[0].name: x})
    elif kind == "openvino":
        import openvino as ov

        # float32: OpenVINO's CPU plugin computes in bfloat16 by default on AVX-512 BF16/AMX CPUs
        compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        outputs = list(compiled.create_infer_request().infer([x]).values())
    else:
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(path))
        index = interpreter.get_input_details()[0]["index"]
        interpreter.resize_tensor_input(index, list(x.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(index, x)
        interpreter.invoke()
        outputs = [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]
    assert len(outputs) == 2, (kind, [np.shape(o) for o in outputs])  # nothing of the layers dangles out
    outputs = sorted((np.asarray(o) for o in outputs), key=lambda o: o.ndim)
    return outputs[0], outputs[1]


def test_exported_formats_normalise_like_keras(patches, tmp_path):
    """SavedModel (hcdtf's serving signature), ONNX, OpenVINO and LiteRT (hcdtf.export's
    writer) all carry both layers: probabilities within 1e-4 of Keras, normalised images within
    half a grey level; an image with little tissue passes unchanged in every runtime."""
    from hcdtf.export import runtimes, signatures

    x = np.concatenate([patches[2:6], np.full((1, 96, 96, 3), 250, np.uint8)])
    model = _classifier(patches)
    prob, images = (np.asarray(o) for o in model.predict(x, verbose=0))
    assert 0.01 < prob.min() and prob.max() < 0.99 and prob.std() > 1e-3  # a probability that can move

    probability_only = keras.Model(model.input, model.get_layer("probability").output, name="stain_test")
    signatures.write_saved_model(probability_only, tmp_path / "saved_model", {"test": True})
    loaded = tf.saved_model.load(str(tmp_path / "saved_model"))
    served = loaded.signatures["serving_default"](images=tf.constant(x))["probability"].numpy()
    assert np.abs(served - prob).max() < 1e-4

    available = [k for k in ("onnx", "openvino", "litert") if runtimes._installed(runtimes.NEEDS[k][-1][0])]
    assert available, "the [export] extra is not installed"
    for kind in available:
        path = runtimes.write_runtime_model(model, kind, tmp_path / kind)
        p, im = _run_exported(kind, path, x)
        assert np.abs(p - prob).max() < 1e-4, kind
        assert np.abs(im - images).max() < 0.5 / 255, kind
        assert np.array_equal(im[-1, ..., :3], images[-1, ..., :3]), kind  # the blank one, unchanged


# ------------------------------------------------------------------------------ training option
def test_config_vocabulary_and_errors(patches, tmp_path):
    from hcdtf import config
    from hcdtf.training import train

    assert config.STAIN_NORMALIZERS == ("none", *stain.METHODS)
    base = [pathlib.Path(__file__).parents[1] / "configs" / "testing.yaml"]
    with pytest.raises(config.ConfigError, match="data.stain_normalize"):
        config.load_config(base, ["data.stain_normalize=vahadane"])
    with pytest.raises(config.ConfigError, match="data.stain_target"):
        config.load_config(base, ["data.stain_normalize=macenko"])
    target = tmp_path / "reinhard.json"
    target.write_text(json.dumps(stain.fit_target(list(patches[:2]), "reinhard")))
    cfg = config.load_config(base, ["data.stain_normalize=macenko", f"data.stain_target={target}"])
    with pytest.raises(config.ConfigError, match="reinhard.json is a reinhard target"):
        train.stain_target(cfg.data)
    cli_fails(["train", "--set", "data.stain_normalize=macenko"], "data.stain_target")


def test_training_option_puts_the_layer_in_the_run_and_its_export(patches, data_dir, tmp_path):
    """`--set data.stain_normalize=macenko --set data.stain_target=T`: the run's model starts with
    the stain layer (T's parameters), and the exported SavedModel normalises as the run's model."""
    from conftest import testing_config

    from hcdtf import models
    from hcdtf.training import train
    from hcdtf.export import fromrun, signatures
    from hcdtf.inference import loading
    from hcdtf.rundir import RunDir

    target = stain.fit_target(list(patches[:2]), "macenko")
    path = tmp_path / "target.json"
    path.write_text(json.dumps(target))
    run = tmp_path / "run"
    train.train(testing_config(data_dir, run, "data.stain_normalize=macenko", f"data.stain_target={path}"),
                log=lambda *_: None)
    path.unlink()  # the target travels inside the model from now on
    model = loading.load_model(run)
    assert [la.name for la in model.layers[:3]] == ["image", "stain", "preprocess"]
    assert model.get_layer("stain").get_config()["stain_matrix"] == target["params"]["stain_matrix"]
    x = patches[2:6]
    expected = model(x, training=False).numpy()
    exported, _ = fromrun.float32_model(RunDir(run))  # what hcdtf export writes every format from
    signatures.write_saved_model(exported, tmp_path / "saved_model", {})
    served = tf.saved_model.load(str(tmp_path / "saved_model")).signatures["serving_default"](images=tf.constant(x))
    assert np.abs(served["probability"].numpy() - expected).max() < 1e-4
    arch = json.loads((run / "train_summary.json").read_text())["arch"]
    plain = models.build_classifier(arch, weights=None)  # same weights, no stain layer
    plain.set_weights(model.get_weights())
    assert np.abs(plain(x, training=False).numpy() - expected).max() > 1e-3


# ------------------------------------------------------------------------------ augmentation
def test_macenko_augmentation_matches_torchstain(patches):
    """torchstain's MacenkoAugmentor draws (scale, shift) for H then E from np.random; the same
    four numbers given to ours give the same image."""
    pytest.importorskip("torchstain")
    from torchstain.numpy.augmentors import NumpyMacenkoAugmentor

    for i, image in enumerate(patches[2:5]):
        np.random.seed(i)
        a_h, b_h, a_e, b_e = (np.random.uniform(0.8, 1.2), np.random.uniform(-0.2, 0.2),
                              np.random.uniform(0.8, 1.2), np.random.uniform(-0.2, 0.2))
        augmentor = NumpyMacenkoAugmentor(sigma1=0.2, sigma2=0.2)
        augmentor.fit(image)
        np.random.seed(i)
        theirs = augmentor.augment()
        ours = stain.macenko_augment_with(image[None], np.array([[a_h, b_h, a_e, b_e]])).numpy()[0]
        worst, equal = _floor_agreement(ours, theirs)
        assert worst <= 1 and equal >= 0.999, (worst, equal)


def test_stain_augmentation_in_the_pipeline(patches):
    from hcdtf.data import pipeline as data
    from hcdtf.config import ConfigError, DataConfig

    seed = tf.constant([3, 4], tf.int64)
    image = tf.constant(patches[2])
    plain = data.augment(image, seed, 0.05, 0.0).numpy()
    once = data.augment(image, seed, 0.05, 0.2).numpy()
    again = data.augment(image, seed, 0.05, 0.2).numpy()
    other = data.augment(image, seed + 10, 0.05, 0.2).numpy()
    assert once.dtype == np.uint8 and np.array_equal(once, again)  # stateless: exact resume holds
    mapped = tf.data.Dataset.from_tensors(image).map(lambda x: data.augment(x, seed, 0.05, 0.2))  # as in training
    graph = next(iter(mapped)).numpy()
    assert np.array_equal(next(iter(mapped)).numpy(), graph)
    assert np.abs(graph.astype(int) - once).max() <= 1  # graph vs eager: float rounding at .5
    assert np.abs(once.astype(int) - plain).mean() > 1 and not np.array_equal(once, other)
    blank = tf.constant(np.full((96, 96, 3), 250, np.uint8))  # no tissue: only the other transforms
    assert np.array_equal(data.augment(blank, seed, 0.0, 0.2).numpy(), data.augment(blank, seed, 0.0, 0.0).numpy())
    out = stain.macenko_augment(np.stack([patches[3], np.zeros((96, 96, 3), np.uint8)]), seed).numpy()
    assert np.all(np.isfinite(out)) and np.array_equal(out[1], np.zeros((96, 96, 3), np.float32))
    with pytest.raises(ConfigError, match="data.stain_augment"):
        DataConfig(stain_augment=0.9).validate()
