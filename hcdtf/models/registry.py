"""The ResNets of the study, by name, with what each one needs to be used.

`ARCHS` lists the ResNets: the five depths compared in "ResNet for
Histopathologic Cancer Detection, the Deeper, the Better?" (ResNet18 to
ResNet152) and ResNet10, a shallower one without ImageNet weights (random
initialisation only; the test suite's model for the training machinery).
`get_arch(name)` returns an `ArchSpec` (depth, block type, the preprocessing
the ImageNet weights expect, where the weights come from) and
`ArchSpec.constructor()` the `keras.applications`-style constructor:

- ResNet10/18/34: `hcdtf.models.resnet` (torchvision layout; torchvision's
  weights for 18 and 34).
- ResNet50/101/152: `keras.applications` (re-exported here as `ResNet50`,
  `ResNet101`, `ResNet152`; Keras' original ResNet v1 with Keras' weights).

Importing this module does not import TensorFlow: constructors are resolved
on first use.
"""

import dataclasses
import importlib

ARCHS = ("ResNet10", "ResNet18", "ResNet34", "ResNet50", "ResNet101", "ResNet152")
# The pathology encoders by their published names (H-optimus-0, UNI, Virchow2, ...): their
# entries (licence, access, input, mean/std, embedding rule) are `hcdtf.models.encoders.specs`.
from hcdtf.models.encoders.specs import ENCODERS, get_encoder, is_encoder  # noqa: E402,F401
# How much of an ImageNet base trains: every layer (the paper's fine-tuning) or only the head
# on a frozen base (the paper's "train only the last layer").
TRANSFERS = ("fine_tune", "freeze_base")
# The residual stages, for fine-tuning only from one of them on (`trainable_from`).
STAGES = ("conv2", "conv3", "conv4", "conv5")

# The classifier's layer names (hcdtf.models.classifier builds with them). Defined here, below the
# model code, because readers of checkpoints (hcdtf.models.warmstart) and Grad-CAM need them
# without importing the classifier (no import cycle, no Keras to read a name).
BASE_NAME = "base"
STAIN = "stain"
HEAD_POOL = "head_pool"
HEAD_DROPOUT = "head_dropout"
HEAD_LOGIT = "head_logit"
PROBABILITY = "probability"


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    """What distinguishes one architecture of the study from another.

    Attributes:
        name: Canonical name, e.g. `"ResNet34"`.
        depth: Number of weighted layers (18, 34, 50, 101, 152).
        block: `"basic"` (two 3x3 convs) or `"bottleneck"` (1x1-3x3-1x1).
        preprocessing: Input normalisation the ImageNet weights expect,
            a `keras.applications.imagenet_utils.preprocess_input` mode:
            `"torch"` (RGB on [0, 1], ImageNet mean/std) or `"caffe"` (BGR,
            ImageNet mean subtracted on [0, 255]).
        features: Width of the globally pooled feature vector.
        weights_source: Where `weights="imagenet"` comes from.
        pretrained: Whether such weights exist (False: random initialisation
            only, as for ResNet10).
    """

    name: str
    depth: int
    block: str
    preprocessing: str
    features: int
    weights_source: str
    _module: str
    _attr: str
    pretrained: bool = True

    def constructor(self):
        """The `keras.applications`-style constructor (imports Keras)."""
        return getattr(importlib.import_module(self._module), self._attr)


def _torchvision_spec(name, depth, weights_source=None, pretrained=True):
    return ArchSpec(
        name=name,
        depth=depth,
        block="basic",
        preprocessing="torch",
        features=512,
        weights_source=weights_source or (
            f"torchvision IMAGENET1K_V1 (timm/{name.lower()}.tv_in1k), "
            "converted by `hcdtf weights import`"
        ),
        _module="hcdtf.models.resnet",
        _attr=name,
        pretrained=pretrained,
    )


def _keras_spec(name, depth):
    return ArchSpec(
        name=name,
        depth=depth,
        block="bottleneck",
        preprocessing="caffe",
        features=2048,
        weights_source="keras.applications",
        _module="keras.applications",
        _attr=name,
    )


_SPECS = {
    spec.name: spec
    for spec in (
        _torchvision_spec("ResNet10", 10, "none published: random initialisation only (`--weights none`)",
                          pretrained=False),
        _torchvision_spec("ResNet18", 18),
        _torchvision_spec("ResNet34", 34),
        _keras_spec("ResNet50", 50),
        _keras_spec("ResNet101", 101),
        _keras_spec("ResNet152", 152),
    )
}


def canonical_name(name):
    """`"resnet34"`, `"ResNet34"` -> `"ResNet34"` (case-insensitive, so CLI
    users can type either); raises `ValueError` listing `ARCHS` otherwise."""
    if isinstance(name, str):
        for arch in ARCHS:
            if name.lower() == arch.lower():
                return arch
    raise ValueError(
        f"Unknown architecture {name!r}. Valid names are: {', '.join(ARCHS)} "
        "(case-insensitive)."
    )


def get_arch(name):
    """Returns the `ArchSpec` for `name` (case-insensitive): a ResNet of `ARCHS`, or a
    pathology encoder of `ENCODERS` (then `depth` counts its transformer blocks, `block` is
    `"transformer"` and `preprocessing` `"encoder"`: its own mean/std and resize, inside the
    model; the full entry is `get_encoder(name)`).

    Raises:
        ValueError: `name` is not one of `ARCHS`; the message lists them.
    """
    if is_encoder(name):
        enc = get_encoder(name)
        return ArchSpec(name=enc.name, depth=enc.depth, block="transformer", preprocessing="encoder",
                        features=enc.features, weights_source=f"{enc.hub_id}, converted by `hcdtf weights import`",
                        _module="hcdtf.models.encoders.classifier", _attr="build_encoder_classifier")
    return _SPECS[canonical_name(name)]


def depth(name):
    return get_arch(name).depth


def preprocessing(name):
    return get_arch(name).preprocessing


def __getattr__(name):
    # ResNet10 ... ResNet152 as module attributes, imported on first access.
    if name in _SPECS:
        return _SPECS[name].constructor()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
