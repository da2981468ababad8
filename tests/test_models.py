"""Tests for hcdtf.models: architectures, weight import, classifier, stats.

Models are built with random weights (no downloads). Each classifier is
built once per module; the weights-import test checks our ResNet18 against an
independent NumPy forward pass over torchvision-layout (NCHW/OIHW) weights.
"""

import subprocess
import sys
import urllib.error

import numpy as np
import pytest

keras = pytest.importorskip("keras")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

import hcdtf.models as models  # noqa: E402
from hcdtf.models import classifier  # noqa: E402
from hcdtf.models import convert  # noqa: E402
from hcdtf.models import resnet  # noqa: E402
from hcdtf.models import stats  # noqa: E402
from hcdtf.models import weights as weights_lib  # noqa: E402

# torchvision: sum(p.numel() for p in resnet18().parameters()), etc.
TORCHVISION_PARAMS = {"ResNet18": 11_689_512, "ResNet34": 21_797_672,
                      # torchvision.models.resnet.ResNet(BasicBlock, [1, 1, 1, 1]): stem 9,536,
                      # stages 73,984 + 230,144 + 919,040 + 3,673,088, fc 513,000
                      "ResNet10": 5_418_792}
# keras.applications.<arch>(include_top=False, weights=None).count_params()
# (the documented 25,636,712 / 44,707,176 / 60,419,944 minus the 2,049,000
# parameters of the 1000-class top).
KERAS_NOTOP_PARAMS = {
    "ResNet50": 23_587_712,
    "ResNet101": 42_658_176,
    "ResNet152": 58_370_944,
}
FEATURES = {"ResNet10": 512, "ResNet18": 512, "ResNet34": 512}


@pytest.fixture(scope="module")
def classifiers():
    """One fine-tune classifier per architecture, random weights, 96x96."""
    return {
        arch: models.build_classifier(arch, weights=None)
        for arch in models.ARCHS
    }


@pytest.fixture(autouse=True)
def _isolated_keras_home(tmp_path, monkeypatch):
    # Never find (or write) weights in the real ~/.keras.
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))


def _images(n=2, size=96, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


# --------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------


def test_import_is_lazy():
    # `import hcdtf.models` (e.g. for the CLI's --help) must not pay for
    # TensorFlow; run in a fresh interpreter since this one has Keras loaded.
    code = (
        "import sys, hcdtf.models as m; m.get_arch('ResNet18'); "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_registry():
    assert models.ARCHS == (
        "ResNet10",
        "ResNet18",
        "ResNet34",
        "ResNet50",
        "ResNet101",
        "ResNet152",
    )
    assert [models.get_arch(a).depth for a in models.ARCHS] == [
        10,
        18,
        34,
        50,
        101,
        152,
    ]
    assert models.get_arch("resnet34").name == "ResNet34"
    assert models.get_arch("ResNet18").preprocessing == "torch"
    assert models.get_arch("ResNet152").preprocessing == "caffe"


def test_constructors_reachable():
    assert models.ResNet10 is resnet.ResNet10
    assert models.ResNet18 is resnet.ResNet18
    assert models.ResNet34 is resnet.ResNet34
    assert models.ResNet50 is keras.applications.ResNet50
    assert models.ResNet101 is keras.applications.ResNet101
    assert models.ResNet152 is keras.applications.ResNet152


@pytest.mark.parametrize("bad", ["ResNet200", "VGG16", "", None])
def test_unknown_arch_lists_valid_names(bad):
    with pytest.raises(ValueError) as e:
        models.get_arch(bad)
    for arch in models.ARCHS:
        assert arch in str(e.value)
    with pytest.raises(ValueError, match="ResNet18, ResNet34"):
        models.build_classifier("VGG16", weights=None)


# --------------------------------------------------------------------------
# ResNet18/34 architecture and API
# --------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["ResNet10", "ResNet18", "ResNet34"])
def test_torchvision_parameter_count(arch):
    model = getattr(resnet, arch)(weights=None)
    total, trainable = stats.count_params(model)
    assert trainable == TORCHVISION_PARAMS[arch]
    # Keras also counts BatchNorm moving mean/variance (torchvision buffers).
    bn_channels = sum(
        layer.gamma.shape[0]
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    )
    assert total == trainable + 2 * bn_channels
    assert model.output.shape == (None, 1000)


def test_resnet18_layer_names_and_shapes():
    model = resnet.ResNet18(
        include_top=False, weights=None, input_shape=(96, 96, 3)
    )
    names = {layer.name for layer in model.layers}
    for name in (
        "conv1_conv",
        "conv1_bn",
        "pool1_pool",
        "conv2_block1_1_conv",
        "conv2_block1_1_bn",
        "conv2_block2_out",
        "conv3_block1_0_conv",
        "conv3_block1_0_bn",
        "conv5_block2_out",
    ):
        assert name in names
    # torchvision's layer1 has no downsample: identity shortcut.
    assert "conv2_block1_0_conv" not in names
    assert model.get_layer("conv2_block1_out").output.shape == (
        None,
        24,
        24,
        64,
    )
    assert model.output.shape == (None, 3, 3, 512)
    pooled = resnet.ResNet18(
        include_top=False, weights=None, input_shape=(96, 96, 3), pooling="max"
    )
    assert pooled.output.shape == (None, 512)


def test_resnet_argument_validation(tmp_path):
    with pytest.raises(ValueError, match="weights=not-a-file"):
        resnet.ResNet18(weights="not-a-file")
    with pytest.raises(ValueError, match="classes=10"):
        resnet.ResNet18(weights="imagenet", classes=10)
    with pytest.raises(ValueError, match="pooling=mean"):
        resnet.ResNet18(include_top=False, weights=None, pooling="mean")
    with pytest.raises(ValueError, match=r"input_shape=\(16, 16, 3\)"):
        resnet.ResNet18(include_top=False, weights=None, input_shape=(16, 16, 3))
    with pytest.raises(ValueError, match=r"static.*input_shape=\(None, None, 3\)"):
        resnet.ResNet34(weights=None, input_shape=(None, None, 3))
    with pytest.raises(ValueError, match=r"input_shape=\(96, 96\)"):
        resnet.ResNet18(include_top=False, weights=None, input_shape=(96, 96))
    weights_file = tmp_path / "any.weights.h5"
    weights_file.write_bytes(b"")  # (refused before it is read)
    with pytest.raises(ValueError, match="classifier_activation=relu"):
        resnet.ResNet18(weights=str(weights_file), classifier_activation="relu")
    # the defaults, as keras.applications chooses them
    assert resnet.ResNet18(weights=None).input_shape == (None, 224, 224, 3)
    headless = resnet.ResNet18(include_top=False, weights=None)
    assert headless.input_shape == (None, None, None, 3)


def test_models_use_public_keras_api_only():
    # keras.src is Keras' private tree: it moves between releases
    import ast
    import pathlib

    for path in pathlib.Path(models.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                assert not name.startswith("keras.src"), f"{path.name} imports {name}"


# --------------------------------------------------------------------------
# Weights: torchvision safetensors import, checked against NumPy
# --------------------------------------------------------------------------


def _torchvision_resnet18_state_dict(seed=0):
    """A random state dict with torchvision's resnet18 names and shapes.

    Written out independently of hcdtf.models.convert's mapping table.
    """
    rng = np.random.default_rng(seed)
    sd = {}

    def conv(name, o, i, k):
        std = np.sqrt(2.0 / (i * k * k))
        sd[f"{name}.weight"] = rng.normal(0, std, (o, i, k, k)).astype("f4")

    def bn(name, c):
        sd[f"{name}.weight"] = rng.uniform(0.5, 1.5, c).astype("f4")
        sd[f"{name}.bias"] = rng.normal(0, 0.1, c).astype("f4")
        sd[f"{name}.running_mean"] = rng.normal(0, 0.1, c).astype("f4")
        sd[f"{name}.running_var"] = rng.uniform(0.5, 2.0, c).astype("f4")
        sd[f"{name}.num_batches_tracked"] = np.array(1000, dtype=np.int64)

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    in_c = 64
    for layer, out_c in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            prefix = f"layer{layer}.{block}"
            conv(f"{prefix}.conv1", out_c, in_c if block == 0 else out_c, 3)
            bn(f"{prefix}.bn1", out_c)
            conv(f"{prefix}.conv2", out_c, out_c, 3)
            bn(f"{prefix}.bn2", out_c)
            if block == 0 and layer > 1:
                conv(f"{prefix}.downsample.0", out_c, in_c, 1)
                bn(f"{prefix}.downsample.1", out_c)
        in_c = out_c
    sd["fc.weight"] = rng.normal(0, 0.05, (1000, 512)).astype("f4")
    sd["fc.bias"] = rng.normal(0, 0.05, 1000).astype("f4")
    return sd


def _np_conv(x, w, stride, pad):
    """NCHW input, OIHW weights, explicit symmetric zero padding."""
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    k = w.shape[2]
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))
    windows = windows[:, :, ::stride, ::stride]  # N, C, Ho, Wo, k, k
    out = np.tensordot(windows, w, axes=([1, 4, 5], [1, 2, 3]))  # N,Ho,Wo,O
    return out.transpose(0, 3, 1, 2)


def _np_bn(x, sd, name):
    def p(s):
        return sd[f"{name}.{s}"].astype(np.float64)[None, :, None, None]

    return (x - p("running_mean")) / np.sqrt(p("running_var") + 1e-5) * p(
        "weight"
    ) + p("bias")


def _np_maxpool_3x3_s2_p1(x):
    x = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(2, 3))
    return windows[:, :, ::2, ::2].max(axis=(4, 5))


def _np_resnet18(sd, x_nchw):
    """torchvision resnet18 forward in float64; returns (pooled, logits)."""
    sd = {k: v.astype(np.float64) for k, v in sd.items()}
    relu = lambda t: np.maximum(t, 0)  # noqa: E731
    x = relu(_np_bn(_np_conv(x_nchw, sd["conv1.weight"], 2, 3), sd, "bn1"))
    x = _np_maxpool_3x3_s2_p1(x)
    for layer in range(1, 5):
        for block in range(2):
            p = f"layer{layer}.{block}"
            stride = 2 if (block == 0 and layer > 1) else 1
            out = _np_conv(x, sd[f"{p}.conv1.weight"], stride, 1)
            out = relu(_np_bn(out, sd, f"{p}.bn1"))
            out = _np_bn(
                _np_conv(out, sd[f"{p}.conv2.weight"], 1, 1), sd, f"{p}.bn2"
            )
            if f"{p}.downsample.0.weight" in sd:
                identity = _np_bn(
                    _np_conv(x, sd[f"{p}.downsample.0.weight"], stride, 0),
                    sd,
                    f"{p}.downsample.1",
                )
            else:
                identity = x
            x = relu(out + identity)
    pooled = x.mean(axis=(2, 3))
    logits = pooled @ sd["fc.weight"].T + sd["fc.bias"]
    return pooled, logits


def _rel_err(actual, expected):
    return np.max(np.abs(actual - expected)) / np.max(np.abs(expected))


@pytest.fixture(scope="module")
def torchvision_file(tmp_path_factory):
    sd = _torchvision_resnet18_state_dict()
    path = tmp_path_factory.mktemp("tv") / "model.safetensors"
    safetensors_numpy.save_file(sd, str(path))
    return sd, path


def test_import_matches_numpy_reference(torchvision_file, tmp_path):
    sd, path = torchvision_file
    # Default output: exactly where weights="imagenet" looks.
    out = convert.import_torchvision_safetensors(path, "ResNet18")
    assert out == weights_lib.torchvision_weights_path("ResNet18")
    assert out.name == "hcdtf_resnet18_tv_in1k.weights.h5"
    assert out.is_relative_to(tmp_path)

    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (2, 64, 64, 3)).astype("float32")
    pooled_ref, logits_ref = _np_resnet18(sd, x.transpose(0, 3, 1, 2))

    # Headless model loads the full file, skipping the top.
    headless = resnet.ResNet18(
        include_top=False,
        weights="imagenet",
        input_shape=(64, 64, 3),
        pooling="avg",
    )
    pooled = np.asarray(headless(x, training=False))
    assert _rel_err(pooled, pooled_ref) < 1e-4

    full = resnet.ResNet18(
        weights=str(out), input_shape=(64, 64, 3), classifier_activation=None
    )
    logits = np.asarray(full(x, training=False))
    assert _rel_err(logits, logits_ref) < 1e-4


def test_import_to_explicit_path_and_classifier_uses_it(
    torchvision_file, tmp_path
):
    sd, path = torchvision_file
    out = convert.import_torchvision_safetensors(
        path, "resnet18", out=tmp_path / "r18.weights.h5"
    )
    assert out == tmp_path / "r18.weights.h5" and out.is_file()
    model = models.build_classifier("ResNet18", weights=out)
    kernel = model.get_layer("base").get_layer("conv1_conv").kernel
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(kernel),
        sd["conv1.weight"].transpose(2, 3, 1, 0),
    )
    with pytest.raises(ValueError, match="weights.h5"):
        convert.import_torchvision_safetensors(
            path, "ResNet18", out=tmp_path / "r18.h5"
        )


def _write(tmp_path, sd):
    path = tmp_path / "bad.safetensors"
    safetensors_numpy.save_file(sd, str(path))
    return path


def test_import_rejects_missing_key(torchvision_file, tmp_path):
    sd = dict(torchvision_file[0])
    del sd["layer3.1.bn2.running_var"]
    path = _write(tmp_path, sd)
    with pytest.raises(ValueError) as e:
        convert.import_torchvision_safetensors(path, "ResNet18")
    assert "layer3.1.bn2.running_var" in str(e.value)
    assert str(path) in str(e.value)


def test_import_rejects_wrong_shape(torchvision_file, tmp_path):
    sd = dict(torchvision_file[0])
    sd["fc.weight"] = np.zeros((1000, 256), dtype="f4")
    path = _write(tmp_path, sd)
    with pytest.raises(ValueError) as e:
        convert.import_torchvision_safetensors(path, "ResNet18")
    message = str(e.value)
    assert "fc.weight" in message and "(1000, 256)" in message
    assert "(1000, 512)" in message and str(path) in message


def test_import_rejects_other_architecture(torchvision_file, tmp_path):
    # A ResNet18 file imported as ResNet34 misses blocks; the reverse has
    # extra ones.
    path = _write(tmp_path, dict(torchvision_file[0]))
    with pytest.raises(ValueError, match="layer1.2.conv1.weight"):
        convert.import_torchvision_safetensors(path, "ResNet34")
    sd = dict(torchvision_file[0])
    sd["layer1.2.conv1.weight"] = np.zeros((64, 64, 3, 3), dtype="f4")
    with pytest.raises(ValueError, match="layer1.2.conv1.weight"):
        convert.import_torchvision_safetensors(
            _write(tmp_path, sd), "ResNet18"
        )
    with pytest.raises(FileNotFoundError):
        convert.import_torchvision_safetensors(
            tmp_path / "no.safetensors", "ResNet18"
        )


# --------------------------------------------------------------------------
# Weights: offline errors
# --------------------------------------------------------------------------


def test_offline_imagenet_error_torchvision(tmp_path):
    with pytest.raises(models.WeightsUnavailableError) as e:
        resnet.ResNet34(include_top=False, weights="imagenet")
    message = str(e.value)
    assert str(tmp_path / "keras_home" / "models") in message
    assert "hcdtf_resnet34_tv_in1k.weights.h5" in message
    assert "hcdtf weights import model.safetensors --arch ResNet34" in message
    assert "timm/resnet34.tv_in1k" in message
    assert "--weights none" in message
    assert e.value.path == weights_lib.torchvision_weights_path("ResNet34")
    assert (
        "--weights none" in e.value.hint and str(e.value.path) in e.value.hint
    )
    with pytest.raises(models.WeightsUnavailableError, match="--weights none"):
        models.build_classifier("ResNet18")


def test_resnet10_has_no_imagenet_weights(tmp_path):
    """ResNet10 trains from scratch only: ImageNet weights are refused up front, in the
    constructor (WeightsUnavailableError, so fallback_to_scratch applies) and in the config (exit 2
    before anything is built); with a file of its own it loads like the others."""
    with pytest.raises(models.WeightsUnavailableError, match="no published ImageNet weights") as e:
        resnet.ResNet10(include_top=False, weights="imagenet")
    assert "--weights none" in e.value.hint
    with pytest.raises(models.WeightsUnavailableError, match="--weights none"):
        models.build_classifier("ResNet10")
    from hcdtf.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="ResNet10 has no published ImageNet weights"):
        load_config([], ["model.arch=ResNet10"])
    assert load_config([], ["model.arch=ResNet10", "model.fallback_to_scratch=true"]).model.arch
    model = resnet.ResNet10(weights=None, include_top=False, input_shape=(96, 96, 3), pooling="avg")
    model.save_weights(tmp_path / "r10.weights.h5")
    again = resnet.ResNet10(weights=str(tmp_path / "r10.weights.h5"), include_top=False,
                            input_shape=(96, 96, 3), pooling="avg")
    x = _images().astype("float32")
    np.testing.assert_array_equal(model.predict(x, verbose=0), again.predict(x, verbose=0))
    assert [layer.name for layer in model.layers if layer.name.endswith("_out")] == [
        f"conv{stage}_block1_out" for stage in (2, 3, 4, 5)]


@pytest.mark.parametrize("arch", ["ResNet50", "ResNet152"])
def test_offline_imagenet_error_keras(arch, tmp_path):
    filename = f"{arch.lower()}_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert weights_lib.keras_weights_path(arch) == (
        tmp_path / "keras_home" / "models" / filename
    )
    with pytest.raises(models.WeightsUnavailableError) as e:
        models.build_classifier(arch, weights="imagenet")
    message = str(e.value)
    assert str(weights_lib.keras_weights_path(arch)) in message
    assert (
        "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
        + filename
    ) in message
    assert "--weights none" in message
    assert e.value.path == weights_lib.keras_weights_path(arch)
    assert e.value.url.endswith(filename)


def test_imagenet_keras_weights_from_cache(classifiers):
    # Stand-in for the downloaded keras.applications file: same format
    # (legacy HDF5), same name, in $KERAS_HOME/models.
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    source = classifiers["ResNet50"].get_layer("base")
    path = weights_lib.keras_weights_path("ResNet50")
    path.parent.mkdir(parents=True)
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, source)
    model = models.build_classifier("ResNet50", weights="imagenet")
    for name in ("conv1_conv", "conv5_block3_3_bn"):
        for ours, theirs in zip(
            model.get_layer("base").get_layer(name).weights,
            source.get_layer(name).weights,
        ):
            np.testing.assert_array_equal(
                keras.ops.convert_to_numpy(ours),
                keras.ops.convert_to_numpy(theirs),
            )


def test_fetch_offline_raises_weights_unavailable(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(convert.urllib.request, "urlopen", offline)
    with pytest.raises(models.WeightsUnavailableError) as e:
        convert.fetch("ResNet18")
    message = str(e.value)
    assert "https://huggingface.co/timm/resnet18.tv_in1k" in message
    assert "--weights none" in message
    assert not list(weights_lib.keras_cache_dir().glob("*.part"))


# --------------------------------------------------------------------------
# Classifier
# --------------------------------------------------------------------------


@pytest.mark.parametrize("arch", models.ARCHS)
def test_classifier_output(classifiers, arch):
    model = classifiers[arch]
    assert model.input.dtype == "uint8"
    assert tuple(model.input.shape) == (None, 96, 96, 3)
    y = model(_images(), training=False)
    assert tuple(y.shape) == (2, 1)
    assert keras.backend.standardize_dtype(y.dtype) == "float32"
    y = np.asarray(y)
    # Deep random-init ResNets in inference mode may saturate the sigmoid.
    assert np.all(np.isfinite(y) & (y >= 0) & (y <= 1))
    base = model.get_layer("base")
    assert model.get_layer("head_pool").output.shape == (
        None,
        FEATURES.get(arch, 2048),
    )
    if arch in KERAS_NOTOP_PARAMS:
        assert base.count_params() == KERAS_NOTOP_PARAMS[arch]
    else:
        head = TORCHVISION_PARAMS[arch] - 513_000  # without the 1000-class fc
        assert (
            sum(int(np.prod(w.shape)) for w in base.trainable_weights) == head
        )


def _paths(variables):
    return {v.path for v in variables}


def test_transfer_freeze_base():
    model = models.build_classifier(
        "ResNet18", weights=None, transfer="freeze_base"
    )
    assert _paths(model.trainable_weights) == {
        "head_logit/kernel",
        "head_logit/bias",
    }
    _check_bn_updates(model, frozen_prefixes=("conv",))


def test_transfer_fine_tune():
    model = models.build_classifier("ResNet18", weights=None)
    base = model.get_layer("base")
    assert len(model.trainable_weights) == len(base.trainable_weights) + 2
    assert all(layer.trainable for layer in base.layers)
    moving = [w for w in model.weights if "moving" in w.path]
    assert len(model.trainable_weights) + len(moving) == len(model.weights)
    _check_bn_updates(model, frozen_prefixes=())


def test_transfer_trainable_from_conv5():
    model = models.build_classifier(
        "ResNet18", weights=None, transfer="fine_tune", trainable_from="conv5"
    )
    paths = _paths(model.trainable_weights)
    assert {"head_logit/kernel", "head_logit/bias"} <= paths
    assert all(p.startswith(("conv5_", "head_logit/")) for p in paths)
    base = model.get_layer("base")
    conv5 = [
        w
        for layer in base.layers
        if layer.name.startswith("conv5_")
        for w in layer.weights
        if "moving" not in w.path
    ]
    assert len(conv5) > 0 and paths == _paths(conv5) | {
        "head_logit/kernel",
        "head_logit/bias",
    }
    _check_bn_updates(
        model, frozen_prefixes=("conv1_", "conv2_", "conv3_", "conv4_")
    )


def _check_bn_updates(model, frozen_prefixes):
    """One training-mode call: frozen BatchNorm keeps its moving mean,
    trainable BatchNorm updates it."""
    base = model.get_layer("base")
    bns = [
        layer
        for layer in base.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    before = {
        layer.name: keras.ops.convert_to_numpy(layer.moving_mean).copy()
        for layer in bns
    }
    model(_images(4), training=True)
    for layer in bns:
        changed = not np.array_equal(
            before[layer.name], keras.ops.convert_to_numpy(layer.moving_mean)
        )
        assert changed == (
            not layer.name.startswith(frozen_prefixes)
        ), layer.name


def test_trainable_from_on_keras_arch(classifiers):
    model = classifiers["ResNet50"]
    base = model.get_layer("base")
    try:
        classifier.set_base_trainable(base, "fine_tune", "conv5")
        paths = _paths(model.trainable_weights)
        assert all(p.startswith(("conv5_", "head_logit/")) for p in paths)
        assert any(p.startswith("conv5_block3_3_conv") for p in paths)
        _, trainable = stats.count_params(model)
        assert trainable == 14_978_049
    finally:
        classifier.set_base_trainable(base, "fine_tune")
    assert len(model.trainable_weights) == len(base.trainable_weights) + 2


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"transfer": "linear_probe"}, "transfer='linear_probe'"),
        ({"trainable_from": "conv6"}, "trainable_from='conv6'"),
        ({"transfer": "freeze_base", "trainable_from": "conv5"}, "fine_tune"),
        ({"dropout": 1.5}, "dropout=1.5"),
        ({"input_shape": (96, 96)}, "input_shape"),
    ],
)
def test_classifier_argument_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.build_classifier("ResNet18", weights=None, **kwargs)


def test_feature_extractor_and_head_share_weights(classifiers):
    model = classifiers["ResNet18"]
    features = models.feature_extractor(model)
    head = models.head_model(model)
    x = _images(3, seed=2)
    f = features(x, training=False)
    assert tuple(f.shape) == (3, 512)
    np.testing.assert_allclose(
        np.asarray(head(f, training=False)),
        np.asarray(model(x, training=False)),
        rtol=1e-5,
        atol=1e-6,
    )
    assert head.get_layer("head_logit") is model.get_layer("head_logit")
    logits = np.asarray(models.logits_model(model)(x, training=False))
    np.testing.assert_allclose(
        1 / (1 + np.exp(-logits)),
        np.asarray(model(x, training=False)),
        rtol=1e-5,
    )


def test_mixed_precision_output_stays_float32():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = models.build_classifier("ResNet18", weights=None)
        assert model.get_layer("head_logit").compute_dtype == "float32"
        assert model.get_layer("probability").compute_dtype == "float32"
        assert model.get_layer("preprocess").compute_dtype == "float16"
        assert model.output.dtype == "float32"
    finally:
        keras.config.set_dtype_policy(previous)


@pytest.mark.parametrize("mode", ["torch", "caffe"])
def test_preprocessing_matches_keras(mode):
    x = _images(2, 8)
    ours = models.ImagePreprocessing(mode)(x)
    reference = keras.applications.imagenet_utils.preprocess_input(
        x.astype("float32"), mode=mode
    )
    np.testing.assert_allclose(
        np.asarray(ours), reference, rtol=1e-5, atol=1e-4
    )


def test_classifier_save_and_load(tmp_path):
    model = models.build_classifier(
        "ResNet18", weights=None, input_shape=(64, 64, 3)
    )
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    x = _images(2, 64)
    np.testing.assert_allclose(
        np.asarray(restored(x, training=False)),
        np.asarray(model(x, training=False)),
        rtol=1e-5,
        atol=1e-6,
    )


# --------------------------------------------------------------------------
# Fused BatchNormalization
# --------------------------------------------------------------------------


def _bn_pair(shape, seed=1, **kwargs):
    """A Keras BatchNormalization and our fused one with the same random
    weights (moving variance kept positive)."""
    from hcdtf.models.layers import FusedBatchNormalization

    rng = np.random.default_rng(seed)
    stock = keras.layers.BatchNormalization(**kwargs)
    fused = FusedBatchNormalization(**kwargs)
    stock.build(shape)
    fused.build(shape)
    weights = [rng.normal(size=w.shape).astype("float32")
               for w in stock.get_weights()]
    weights[-1] = np.abs(weights[-1]) + 0.5
    stock.set_weights(weights)
    fused.set_weights(weights)
    return stock, fused, rng


@pytest.mark.parametrize("center,scale", [(True, True), (False, False)])
def test_fused_batch_norm_matches_keras(center, scale):
    import tensorflow as tf

    shape = (8, 6, 5, 16)
    stock, fused, rng = _bn_pair(shape, epsilon=1.001e-5, momentum=0.9,
                                 center=center, scale=scale)
    x = tf.Variable(rng.normal(3.0, 2.0, size=shape).astype("float32"))
    r = tf.constant(rng.normal(size=shape).astype("float32"))
    for training in (False, True):
        np.testing.assert_allclose(fused(x, training=training),
                                   stock(x, training=training),
                                   rtol=1e-5, atol=1e-5)
    # One training call each updated the moving statistics the same way
    # (Keras keeps the biased batch variance; the fused op returns the
    # unbiased one, which the layer rescales).
    for a, b in zip(fused.get_weights(), stock.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    grads = []
    for layer in (stock, fused):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x, training=True) * r)
        grads.append(tape.gradient(loss, [x] + layer.trainable_weights))
    assert len(grads[1]) == 1 + 2 * center
    for a, b in zip(*grads):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)


def test_fused_batch_norm_falls_back_where_the_kernel_does_not_apply():
    # 2-D input and channels-first axis: the Keras computation, same result.
    for shape, axis in (((16, 8), -1), ((4, 8, 3, 3), 1)):
        stock, fused, rng = _bn_pair(shape, axis=axis)
        assert not fused._fusable(keras.KerasTensor(shape), None)
        x = rng.normal(size=shape).astype("float32")
        np.testing.assert_allclose(fused(x, training=True),
                                   stock(x, training=True), rtol=1e-6)


def test_fused_batch_norm_under_mixed_precision():
    from hcdtf.models.layers import FusedBatchNormalization

    layer = FusedBatchNormalization(dtype="mixed_float16")
    x = np.random.default_rng(0).normal(size=(4, 5, 5, 8)).astype("float16")
    y = layer(x, training=True)
    assert y.dtype == "float16"
    assert layer.moving_mean.dtype == "float32"
    expected = (x.astype("float32") - x.mean((0, 1, 2))) / np.sqrt(
        x.astype("float32").var((0, 1, 2)) + layer.epsilon)
    np.testing.assert_allclose(np.asarray(y, "float32"), expected, atol=2e-2)


def test_classifier_base_uses_fused_batch_norm(classifiers):
    from hcdtf.models.layers import FusedBatchNormalization

    for arch in ("ResNet18", "ResNet50"):
        base = classifiers[arch].get_layer("base")
        kinds = {type(layer) for layer in base.layers
                 if isinstance(layer, keras.layers.BatchNormalization)}
        assert kinds == {FusedBatchNormalization}, arch
        assert base.layers[0].name.startswith("input_layer")
    # The swap keeps layer names and weights.
    plain = resnet.ResNet18(include_top=False, weights=None,
                            input_shape=(32, 32, 3))
    fused = models.fuse_batch_norm(plain)
    assert [la.name for la in fused.layers] == [la.name for la in plain.layers]
    for a, b in zip(fused.get_weights(), plain.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(0).normal(size=(8, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(fused(x, training=False),
                               plain(x, training=False), rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------
# Stats
# --------------------------------------------------------------------------


def test_count_params(classifiers):
    model = classifiers["ResNet18"]
    total, trainable = models.count_params(model)
    assert total == model.count_params()
    # fine_tune: everything but the BatchNorm moving statistics.
    assert trainable == TORCHVISION_PARAMS["ResNet18"] - 513_000 + 513


def test_flops(classifiers):
    # torchvision quotes 1.81 GMACs for resnet18 at 224x224; 2 FLOPs per MAC.
    flops_224 = models.flops_per_image("ResNet18", input_shape=(224, 224, 3))
    assert flops_224 == pytest.approx(2 * 1.814e9, rel=2e-3)
    flops = [models.flops_per_image(classifiers[a]) for a in models.ARCHS]
    assert flops == sorted(flops)
    assert flops[models.ARCHS.index("ResNet18")] == pytest.approx(0.666e9, rel=2e-3)


def test_models_table_format():
    rows = models.models_table(archs=("ResNet18",))
    (row,) = rows
    assert row["arch"] == "ResNet18" and row["depth"] == 18
    assert row["params_trainable_freeze_base"] == 513
    assert row["params_trainable_fine_tune"] == 11_177_025
    assert row["params_total"] > row["params_trainable_fine_tune"]
    assert row["params_trainable_conv5"] < row["params_trainable_fine_tune"]
    table = models.format_models_table(rows)
    lines = table.splitlines()
    assert lines[0].startswith("| Arch |") and "GFLOPs / 96x96" in lines[0]
    assert lines[2].startswith("| ResNet18 | 18 | torch | 11,186,625 | 513 |")
