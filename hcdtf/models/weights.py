"""Where pretrained ImageNet weights live, and how to get them there offline.

Two sources, one cache directory (`$KERAS_HOME/models`, default
`~/.keras/models`, the directory `keras.utils.get_file` uses):

* ResNet18/34: torchvision's ImageNet weights (as republished by timm in
  `timm/resnet{18,34}.tv_in1k/model.safetensors`) converted to Keras by
  `import_torchvision_safetensors` into
  `hcdtf_resnet{18,34}_tv_in1k.weights.h5`.
  `fetch(arch)` downloads and converts in one step when the network allows it.
* ResNet50/101/152: the `keras.applications` files
  (`resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5`, ...), downloaded
  once into the cache where the internet is reachable, as Keras does; offline,
  instead of Keras's bare "URL fetch failure", `require_keras_weights` says
  which file to place where.

Every "weights are not there" case raises `WeightsUnavailableError`, whose
message names the expected file, how to create it, and the `--weights none`
alternative. This module imports neither TensorFlow nor Keras at import time.
"""

import os
import pathlib
import shutil
import tempfile
import urllib.error
import urllib.request

import numpy as np

TORCHVISION_ARCHS = ("ResNet18", "ResNet34")
KERAS_ARCHS = ("ResNet50", "ResNet101", "ResNet152")

# Hugging Face mirror of torchvision's IMAGENET1K_V1 weights (timm "tv_in1k").
TORCHVISION_WEIGHTS_URL = (
    "https://huggingface.co/timm/{stem}.tv_in1k/resolve/main/model.safetensors"
)
KERAS_WEIGHTS_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
)

# Blocks per stage (conv2..conv5) of the basic-block ResNets.
_BASIC_BLOCKS = {"ResNet18": (2, 2, 2, 2), "ResNet34": (3, 4, 6, 3)}
_STAGE_FILTERS = (64, 128, 256, 512)


class WeightsUnavailableError(Exception):
    """Pretrained weights were requested but are not available locally.

    The message says which file is expected where and how to provide it
    (or to train from random initialisation with `--weights none`).

    Attributes:
        path: The expected weights file (`pathlib.Path`), or `None`.
        url: Where the original weights can be downloaded, or `None`.
        hint: One sentence on how to fix it, for one-line log messages.
    """

    def __init__(self, message, *, path=None, url=None, hint=None):
        super().__init__(message)
        self.path = path
        self.url = url
        self.hint = hint or message


def _canonical_arch(arch, allowed):
    for name in allowed:
        if str(arch).lower() == name.lower():
            return name
    raise ValueError(
        f"Unknown architecture {arch!r}; expected one of {', '.join(allowed)}."
    )


def keras_cache_dir():
    """The directory `keras.utils.get_file(..., cache_subdir="models")` uses.

    Read from the environment at call time (Keras itself reads `KERAS_HOME`
    once, when it is imported) and mirroring Keras' fallback to `/tmp/.keras`
    when the home directory is not writable.
    """
    home = os.environ.get("KERAS_HOME")
    if not home:
        base = os.path.expanduser("~")
        if not os.access(base, os.W_OK):
            base = "/tmp"
        home = os.path.join(base, ".keras")
    return pathlib.Path(os.path.expanduser(home)) / "models"


def torchvision_weights_filename(arch):
    """File name of the converted torchvision weights, e.g.
    `hcdtf_resnet18_tv_in1k.weights.h5` (always with the 1000-class top)."""
    arch = _canonical_arch(arch, TORCHVISION_ARCHS)
    return f"hcdtf_{arch.lower()}_tv_in1k.weights.h5"


def torchvision_weights_path(arch):
    """Where `ResNet18/34(weights="imagenet")` looks for its weights."""
    return keras_cache_dir() / torchvision_weights_filename(arch)


def torchvision_weights_url(arch):
    """URL of timm's copy of torchvision's ImageNet weights for `arch`."""
    arch = _canonical_arch(arch, TORCHVISION_ARCHS)
    return TORCHVISION_WEIGHTS_URL.format(stem=arch.lower())


def _torchvision_hint(arch, path):
    return (
        f"download {torchvision_weights_url(arch)} and run `hcdtf weights "
        f"import model.safetensors --arch {arch}` (writes {path}), "
        "or use `--weights none`"
    )


def missing_torchvision_weights_message(arch, path=None):
    arch = _canonical_arch(arch, TORCHVISION_ARCHS)
    path = pathlib.Path(path) if path else torchvision_weights_path(arch)
    return (
        f"ImageNet weights for {arch} are not available: expected the "
        f"converted file {path} (named {path.name} in $KERAS_HOME/models, "
        "default ~/.keras/models). Nothing is downloaded implicitly. "
        f"To create it, download {torchvision_weights_url(arch)} and run "
        f"`hcdtf weights import model.safetensors --arch {arch}` "
        f"(or `hcdtf weights fetch {arch}` where the network is reachable). "
        "Or train from random initialisation with `--weights none` "
        "(weights=None)."
    )


def torchvision_weights_unavailable(arch, path=None, reason=None):
    """The `WeightsUnavailableError` for missing converted ResNet18/34
    weights (`reason`, e.g. a failed download, is prepended)."""
    arch = _canonical_arch(arch, TORCHVISION_ARCHS)
    path = pathlib.Path(path) if path else torchvision_weights_path(arch)
    message = missing_torchvision_weights_message(arch, path)
    if reason:
        message = f"{reason}. {message}"
    return WeightsUnavailableError(
        message,
        path=path,
        url=torchvision_weights_url(arch),
        hint=_torchvision_hint(arch, path),
    )


def keras_weights_filename(arch, include_top=False):
    """File name `keras.applications` caches for `arch`, e.g.
    `resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5`."""
    arch = _canonical_arch(arch, KERAS_ARCHS)
    suffix = "" if include_top else "_notop"
    return f"{arch.lower()}_weights_tf_dim_ordering_tf_kernels{suffix}.h5"


def keras_weights_path(arch, include_top=False):
    """Where `keras.applications.<arch>(weights="imagenet")` caches its file."""
    return keras_cache_dir() / keras_weights_filename(arch, include_top)


def keras_weights_url(arch, include_top=False):
    return KERAS_WEIGHTS_URL + keras_weights_filename(arch, include_top)


def require_keras_weights(arch, include_top=False, download=True):
    """Returns the cached `keras.applications` weights file for `arch`.

    As `keras.applications` does, a file missing from the Keras cache is
    downloaded once with `keras.utils.get_file` where the internet is
    reachable (`download=True`); later runs use the cached copy offline.

    Raises:
        WeightsUnavailableError: the file is not in the Keras cache and could
            not be downloaded; the message names the file, the directory and
            the URL to fetch it from.
    """
    path = keras_weights_path(arch, include_top)
    if path.is_file():
        return path
    arch = _canonical_arch(arch, KERAS_ARCHS)
    url = keras_weights_url(arch, include_top)
    reason = "downloading was not attempted"
    if download:
        import keras

        try:
            return pathlib.Path(
                keras.utils.get_file(
                    path.name, url, cache_dir=str(path.parent.parent), cache_subdir=path.parent.name
                )
            )
        except Exception as e:  # noqa: BLE001 - any network/file error becomes the message
            reason = f"the download failed ({type(e).__name__}: {str(e)[:160]})"
    raise WeightsUnavailableError(
        f"ImageNet weights for {arch} are not available: expected "
        f"{path} (named {path.name} in $KERAS_HOME/models, default "
        f"~/.keras/models) and {reason}. Download "
        f"{url} and place it there, or train from random "
        "initialisation with `--weights none` (weights=None).",
        path=path,
        url=url,
        hint=f"download {url} to {path}, or use `--weights none`",
    )


def imagenet_weights_path(arch, include_top=False):
    """The local ImageNet weights file for any supported `arch`, or raises
    `WeightsUnavailableError` explaining how to provide it."""
    if str(arch).lower() in {a.lower() for a in TORCHVISION_ARCHS}:
        path = torchvision_weights_path(arch)
        if not path.is_file():
            raise torchvision_weights_unavailable(arch, path)
        return path
    return require_keras_weights(arch, include_top)


# --------------------------------------------------------------------------
# torchvision state dict -> Keras
# --------------------------------------------------------------------------


def _bn_entries(torch_prefix, keras_name, channels):
    # Keras BatchNormalization weight order: gamma, beta, moving mean/var.
    return [
        (f"{torch_prefix}.{suffix}", keras_name, (channels,), None)
        for suffix in ("weight", "bias", "running_mean", "running_var")
    ]


def _conv_entry(torch_prefix, keras_name, out_c, in_c, k):
    return [(f"{torch_prefix}.weight", keras_name, (out_c, in_c, k, k), "conv")]


def torchvision_key_map(arch, include_top=True):
    """The conversion table for a torchvision ResNet-18/34 state dict.

    Returns a list of `(torch_key, keras_layer_name, torch_shape, kind)` in
    Keras weight order per layer; `kind` is `"conv"` (OIHW -> HWIO), `"dense"`
    (`(out, in)` -> `(in, out)`) or `None` (copied as is).
    """
    arch = _canonical_arch(arch, TORCHVISION_ARCHS)
    entries = _conv_entry("conv1", "conv1_conv", 64, 3, 7)
    entries += _bn_entries("bn1", "conv1_bn", 64)
    in_c = 64
    for stage, (blocks, filters) in enumerate(
        zip(_BASIC_BLOCKS[arch], _STAGE_FILTERS)
    ):
        for block in range(blocks):
            t = f"layer{stage + 1}.{block}"
            k = f"conv{stage + 2}_block{block + 1}"
            entries += _conv_entry(
                f"{t}.conv1", f"{k}_1_conv", filters, in_c, 3
            )
            entries += _bn_entries(f"{t}.bn1", f"{k}_1_bn", filters)
            entries += _conv_entry(
                f"{t}.conv2", f"{k}_2_conv", filters, filters, 3
            )
            entries += _bn_entries(f"{t}.bn2", f"{k}_2_bn", filters)
            if block == 0 and (stage > 0 or in_c != filters):
                entries += _conv_entry(
                    f"{t}.downsample.0", f"{k}_0_conv", filters, in_c, 1
                )
                entries += _bn_entries(
                    f"{t}.downsample.1", f"{k}_0_bn", filters
                )
            in_c = filters
    if include_top:
        entries.append(("fc.weight", "predictions", (1000, 512), "dense"))
        entries.append(("fc.bias", "predictions", (1000,), None))
    return entries


def _to_keras(value, kind):
    if kind == "conv":
        return np.transpose(value, (2, 3, 1, 0))  # OIHW -> HWIO
    if kind == "dense":
        return np.transpose(value, (1, 0))  # (out, in) -> (in, out)
    return value


def convert_torchvision_state_dict(state_dict, arch, source="state dict"):
    """Maps a torchvision ResNet-18/34 state dict to Keras weights.

    Returns `{keras_layer_name: [arrays in Keras order]}` (float32).

    Raises:
        ValueError: a key is missing, has the wrong shape, or is not part of
            `arch` (e.g. a ResNet34 file imported as ResNet18). The message
            names the key and `source`.
    """
    arch = _canonical_arch(arch, TORCHVISION_ARCHS)
    table = torchvision_key_map(arch, include_top=True)
    expected = {key for key, *_ in table}

    # In network order, so the first missing key shows where files diverge.
    missing = [key for key, *_ in table if key not in state_dict]
    if missing:
        listed = ", ".join(missing[:8]) + (", ..." if len(missing) > 8 else "")
        raise ValueError(
            f"{source} is not a torchvision {arch} state dict: missing "
            f"{len(missing)} key(s), first {missing[0]!r} (all: {listed})."
        )
    # `num_batches_tracked` is a BatchNorm counter with no Keras equivalent.
    unexpected = sorted(
        key
        for key in state_dict
        if key not in expected and not key.endswith("num_batches_tracked")
    )
    if unexpected:
        raise ValueError(
            f"{source} has key(s) that are not part of torchvision's {arch}, "
            f"first {unexpected[0]!r} (is it the state dict of another "
            "architecture?)."
        )

    converted = {}
    for key, layer_name, shape, kind in table:
        value = np.asarray(state_dict[key])
        if tuple(value.shape) != shape:
            raise ValueError(
                f"{source}: {key!r} has shape {tuple(value.shape)}, expected "
                f"{shape} for torchvision's {arch}."
            )
        converted.setdefault(layer_name, []).append(
            _to_keras(value, kind).astype("float32")
        )
    return converted


def import_torchvision_safetensors(path, arch, out=None):
    """Converts torchvision ResNet-18/34 weights (`model.safetensors`) to Keras.

    Reads `path` with `safetensors.numpy` (no PyTorch needed), checks that
    every tensor of torchvision's `arch` is present with the right shape,
    builds `hcdtf.models.resnet.<arch>(include_top=True, weights=None)`,
    sets the weights and saves them with `save_weights`.

    Args:
        path: A `model.safetensors` with torchvision's parameter names (as in
            `timm/resnet18.tv_in1k`).
        arch: `"ResNet18"` or `"ResNet34"`.
        out: Output `.weights.h5` file. Defaults to the file
            `weights="imagenet"` loads (`torchvision_weights_path(arch)`).

    Returns:
        The `pathlib.Path` written.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: the file does not match torchvision's `arch`.
    """
    from safetensors.numpy import load_file

    arch = _canonical_arch(arch, TORCHVISION_ARCHS)
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No such safetensors file: {path}")
    try:
        state_dict = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types
        raise ValueError(f"Could not read {path} as safetensors: {e}") from e

    converted = convert_torchvision_state_dict(
        state_dict, arch, source=str(path)
    )

    from hcdtf.models import resnet

    model = getattr(resnet, arch)(include_top=True, weights=None)
    for layer_name, values in converted.items():
        model.get_layer(layer_name).set_weights(values)

    out = (
        pathlib.Path(out) if out is not None else torchvision_weights_path(arch)
    )
    if not out.name.endswith(".weights.h5"):
        raise ValueError(
            "Keras weights files must end in '.weights.h5'. "
            f"Received: out={out}"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    # Write next to the target and rename, so an interrupted import never
    # leaves a truncated file where `weights="imagenet"` would find it.
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp.weights.h5")
    try:
        model.save_weights(str(tmp))
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def fetch(arch, out=None, timeout=60):
    """Downloads torchvision's ImageNet weights for ResNet18/34 and converts
    them (see `import_torchvision_safetensors`).

    The safetensors file is kept in the Keras cache as
    `resnet{18,34}.tv_in1k.safetensors`; an existing copy is reused.

    Returns:
        The path of the converted `.weights.h5`.

    Raises:
        WeightsUnavailableError: the download failed (e.g. offline); the
            message says how to provide the file by hand.
    """
    arch = _canonical_arch(arch, TORCHVISION_ARCHS)
    url = torchvision_weights_url(arch)
    cache = keras_cache_dir()
    source = cache / f"{arch.lower()}.tv_in1k.safetensors"
    if not source.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache, suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f, urllib.request.urlopen(
                url, timeout=timeout
            ) as response:
                shutil.copyfileobj(response, f)
            os.replace(tmp, source)
        except (urllib.error.URLError, OSError) as e:
            raise torchvision_weights_unavailable(
                arch, out, reason=f"Could not download {url} ({e})"
            ) from e
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return import_torchvision_safetensors(source, arch, out=out)
