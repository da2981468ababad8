"""Conversion of torchvision's ResNet-18/34 ImageNet weights (a safetensors state dict) into
the Keras weights file that `ResNet18/34(weights="imagenet")` loads.

`import_torchvision_safetensors` converts a downloaded `model.safetensors` (no PyTorch needed);
`fetch` downloads timm's copy first. Where the converted file goes, and the error when it is
missing, belong to `hcdtf.models.weights`.
"""

import os
import pathlib
import shutil
import tempfile
import urllib.error
import urllib.request

import numpy as np

from hcdtf.models import resnet
from hcdtf.models.weights import (
    TORCHVISION_ARCHS,
    canonical_arch,
    keras_cache_dir,
    torchvision_weights_path,
    torchvision_weights_unavailable,
    torchvision_weights_url,
)

# Blocks per stage (conv2..conv5) of the basic-block ResNets.
_BASIC_BLOCKS = {"ResNet18": (2, 2, 2, 2), "ResNet34": (3, 4, 6, 3)}
_STAGE_FILTERS = (64, 128, 256, 512)


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
    arch = canonical_arch(arch, TORCHVISION_ARCHS)
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
    arch = canonical_arch(arch, TORCHVISION_ARCHS)
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

    arch = canonical_arch(arch, TORCHVISION_ARCHS)
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
    arch = canonical_arch(arch, TORCHVISION_ARCHS)
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
