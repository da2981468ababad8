"""Where pretrained ImageNet weights live, and the error that says how to provide a missing file.

Two sources, one cache directory (`$KERAS_HOME/models`, default
`~/.keras/models`, the directory `keras.utils.get_file` uses):

* ResNet18/34: torchvision's ImageNet weights (as republished by timm in
  `timm/resnet{18,34}.tv_in1k/model.safetensors`) converted to Keras by
  `hcdtf.models.convert.import_torchvision_safetensors` into
  `hcdtf_resnet{18,34}_tv_in1k.weights.h5` (`convert.fetch(arch)` downloads
  and converts in one step when the network allows it).
* ResNet50/101/152: the `keras.applications` files
  (`resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5`, ...), downloaded
  once into the cache where the internet is reachable, as Keras does; offline,
  instead of Keras's bare "URL fetch failure", `require_keras_weights` says
  which file to place where.

Every "weights are not there" case raises `WeightsUnavailableError`, whose
message names the expected file, how to create it, and the `--weights none`
alternative. This module imports neither TensorFlow nor Keras at import time,
and nothing else of hcdtf: the model builders and the converter both use it.
"""

import os
import pathlib

TORCHVISION_ARCHS = ("ResNet18", "ResNet34")
KERAS_ARCHS = ("ResNet50", "ResNet101", "ResNet152")

# Hugging Face mirror of torchvision's IMAGENET1K_V1 weights (timm "tv_in1k").
TORCHVISION_WEIGHTS_URL = (
    "https://huggingface.co/timm/{stem}.tv_in1k/resolve/main/model.safetensors"
)
KERAS_WEIGHTS_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
)


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


def canonical_arch(arch, allowed):
    """`arch` spelt as in `allowed` (case-insensitive), or ValueError listing them."""
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
    arch = canonical_arch(arch, TORCHVISION_ARCHS)
    return f"hcdtf_{arch.lower()}_tv_in1k.weights.h5"


def torchvision_weights_path(arch):
    """Where `ResNet18/34(weights="imagenet")` looks for its weights."""
    return keras_cache_dir() / torchvision_weights_filename(arch)


def torchvision_weights_url(arch):
    """URL of timm's copy of torchvision's ImageNet weights for `arch`."""
    arch = canonical_arch(arch, TORCHVISION_ARCHS)
    return TORCHVISION_WEIGHTS_URL.format(stem=arch.lower())


def _torchvision_hint(arch, path):
    return (
        f"download {torchvision_weights_url(arch)} and run `hcdtf weights "
        f"import model.safetensors --arch {arch}` (writes {path}), "
        "or use `--weights none`"
    )


def missing_torchvision_weights_message(arch, path=None):
    arch = canonical_arch(arch, TORCHVISION_ARCHS)
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
    arch = canonical_arch(arch, TORCHVISION_ARCHS)
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
    arch = canonical_arch(arch, KERAS_ARCHS)
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
    arch = canonical_arch(arch, KERAS_ARCHS)
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
