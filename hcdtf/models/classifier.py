"""Binary tumour/no-tumour classifiers on top of ImageNet-pretrained ResNets.

`build_classifier` gives the model the study trains: raw uint8 RGB patch in,
tumour probability out. Layer layout (names are API: training, feature
caching and export look layers up by name)::

    image       Input (96, 96, 3) uint8
    preprocess  ImagePreprocessing: cast to float32 + the normalisation the
                ImageNet weights expect ("torch" for ResNet18/34, "caffe" for
                ResNet50/101/152)
    base        the ResNet without its top (a nested keras.Model; its layers
                keep keras.applications names, conv1_* .. conv5_*; its
                BatchNormalization layers are FusedBatchNormalization, the
                same layer on TensorFlow's fused kernel)
    head_pool   GlobalAveragePooling2D  -> pooled features (512 or 2048)
    head_dropout Dropout
    head_logit  Dense(1), linear, float32  -> logit
    probability Activation("sigmoid"), float32  -> model output

The logit and the probability are separate layers so that export and
calibration code can take the logit (`logits_model`) without recomputing
`log(p / (1 - p))`, and both are float32 so the output stays well-conditioned
under a `mixed_float16` policy.
"""

import keras

from hcdtf.models import registry
from hcdtf.models import weights as weights_lib
from hcdtf.models import warmstart
from hcdtf.models.layers import ImagePreprocessing
from hcdtf.models.layers import fuse_batch_norm

from hcdtf.models.registry import BASE_NAME  # noqa: F401  (the classifier's layer names: registry.py says why)
from hcdtf.models.registry import HEAD_DROPOUT  # noqa: F401
from hcdtf.models.registry import HEAD_LOGIT  # noqa: F401
from hcdtf.models.registry import HEAD_POOL  # noqa: F401
from hcdtf.models.registry import PROBABILITY  # noqa: F401
from hcdtf.models.registry import STAGES
from hcdtf.models.registry import STAIN  # noqa: F401
from hcdtf.models.registry import TRANSFERS


def _validate_transfer(transfer, trainable_from):
    if transfer not in TRANSFERS:
        raise ValueError(
            f"The `transfer` argument should be one of {TRANSFERS}. "
            f"Received: transfer={transfer!r}"
        )
    if trainable_from is not None:
        if trainable_from not in STAGES:
            raise ValueError(
                f"The `trainable_from` argument should be None or one of "
                f"{STAGES}. Received: trainable_from={trainable_from!r}"
            )
        if transfer != "fine_tune":
            raise ValueError(
                "`trainable_from` selects the part of the base to fine-tune, "
                "so it requires transfer='fine_tune'. Received: "
                f"transfer={transfer!r}, trainable_from={trainable_from!r}"
            )


def set_base_trainable(base, transfer="fine_tune", trainable_from=None):
    """Applies a transfer strategy's trainable flags to a base ResNet.

    - `"freeze_base"`: nothing in the base is trainable.
    - `"fine_tune"`: everything is trainable.
    - `"fine_tune"` with `trainable_from="conv4"` (any of `STAGES`): the
      layers of that stage and the later ones (`conv4_*`, `conv5_*`) are
      trainable, everything before (stem, earlier stages) is frozen.

    In Keras 3 a `BatchNormalization` layer with `trainable=False` runs in
    inference mode (moving statistics, no updates) even when the model is
    called with `training=True`, so frozen parts keep their ImageNet
    statistics while trainable BatchNorm layers update theirs.
    """
    _validate_transfer(transfer, trainable_from)
    fine_tune = transfer == "fine_tune"
    base.trainable = fine_tune
    # A Functional model's `trainable` setter does not reach its layers'
    # own flags, so a layer frozen by an earlier call would stay frozen:
    # set every layer explicitly (this also makes the function idempotent).
    prefixes = ()
    if trainable_from is not None:
        first = STAGES.index(trainable_from)
        prefixes = tuple(f"{stage}_" for stage in STAGES[first:])
    for layer in base.layers:
        layer.trainable = fine_tune and (
            not prefixes or layer.name.startswith(prefixes)
        )


def build_classifier(
    arch,
    weights="imagenet",
    transfer="fine_tune",
    trainable_from=None,
    dropout=0.2,
    input_shape=(96, 96, 3),
    name=None,
    stain=None,
):
    """Builds the binary patch classifier of the study.

    Args:
        arch: One of `registry.ARCHS` (case-insensitive), e.g. `"ResNet34"`.
        weights: Weights of the base: `"imagenet"` (local file from the Keras
            cache, see `hcdtf.models.weights`; never downloaded), `None`
            (random initialisation; the string `"none"` is accepted too, as
            typed on the command line), or the path to a
            weights file for the base architecture (a torchvision conversion
            from `hcdtf weights import` for ResNet18/34, a
            `keras.applications` `.h5` for ResNet50/101/152), or a run's
            `checkpoints/best.weights.h5` of the same architecture (a warm
            start: base and head; see `hcdtf.models.warmstart`). Any other
            file is a one-line `WeightsFileError` (a `ValueError`).
        transfer: `"fine_tune"` (all layers trainable; the base is called in
            the default mode so its BatchNorm layers use batch statistics and
            update their moving averages while training, as in the
            `keras.applications` fine-tuning guides) or `"freeze_base"` (the
            paper's "freeze the pretrained layers, train only the last
            layer": `base.trainable = False` and the base is called with
            `training=False`, so BatchNorm stays in inference mode even if
            the base is later unfrozen).
        trainable_from: With `transfer="fine_tune"`, the first trainable
            stage (`"conv2"` .. `"conv5"`); earlier layers are frozen and
            their BatchNorm layers stay in inference mode.
        dropout: Dropout rate before the logit (a `Dropout` layer is always
            present, so layer names do not depend on the rate).
        input_shape: Shape of one uint8 RGB image, channels last.
        name: Model name. Defaults to e.g. `"resnet34_fine_tune"`.
        stain: Stain normalisation before the preprocessing (a layer named
            `stain`, see `hcdtf.models.stain`): a target (dict or JSON file
            from `hcdtf stain fit`) or a stain layer to copy. None: none.

    Returns:
        A `keras.Model` mapping uint8 `(N, H, W, 3)` images to float32
        `(N, 1)` tumour probabilities.

    Raises:
        ValueError: unknown `arch`, `transfer` or `trainable_from`, or an
            invalid `weights` value.
        hcdtf.models.weights.WeightsUnavailableError: `weights="imagenet"`
            and the weights file is not in the Keras cache.
    """
    if registry.is_encoder(arch):  # a pathology encoder: same layer names, own builder
        from hcdtf.models.encoders.classifier import build_encoder_classifier

        if stain is not None:
            raise ValueError(f"stain normalisation is not available with encoders yet (arch={arch!r})")

        return build_encoder_classifier(arch, weights=weights, transfer=transfer, trainable_from=trainable_from,
                                        dropout=dropout, input_shape=input_shape, name=name)
    spec = registry.get_arch(arch)
    _validate_transfer(transfer, trainable_from)
    if not 0.0 <= dropout < 1.0:
        raise ValueError(
            f"The `dropout` argument should be in [0, 1). Received: "
            f"dropout={dropout}"
        )
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(
            "The `input_shape` argument should be (height, width, 3). "
            f"Received: input_shape={input_shape}"
        )

    if isinstance(weights, str) and weights.lower() == "none":
        weights = None
    base_weights = weights
    if weights == "imagenet" and spec.preprocessing == "caffe":
        # keras.applications would try to download and fail offline with a
        # bare "URL fetch failure"; check the cache ourselves and hand Keras
        # the file, which it then loads exactly as after a download.
        base_weights = str(
            weights_lib.require_keras_weights(spec.name, include_top=False)
        )
    checkpoint = None
    if weights is not None and weights != "imagenet":
        # A run's whole-classifier checkpoint (warm start) is loaded after
        # the model is built; any other file goes to the base's constructor.
        checkpoint = warmstart.classifier_checkpoint(weights, spec.name)
        base_weights = None if checkpoint else str(weights)

    try:
        base = spec.constructor()(
            include_top=False,
            weights=base_weights,
            input_shape=input_shape,
            pooling=None,
            name=BASE_NAME,
        )
    except Exception as e:
        if weights is None or weights == "imagenet" or checkpoint:
            raise
        raise warmstart.base_weights_error(base_weights, spec.name, e) from None
    # Same weights and maths, TensorFlow's fused BatchNorm kernel: one pass
    # instead of Keras' several element-wise ones (figures: benchmarks/README.md).
    base = fuse_batch_norm(base)
    set_base_trainable(base, transfer, trainable_from)

    inputs = keras.Input(shape=input_shape, dtype="uint8", name="image")
    x = inputs
    if stain is not None:  # uint8 in, float32 on [0, 255] out, in every exported format
        from hcdtf.models import stain as stain_lib

        x = stain_lib.stain_layer(stain, name=STAIN)(x)
    x = ImagePreprocessing(spec.preprocessing, name="preprocess")(x)
    if transfer == "freeze_base":
        x = base(x, training=False)
    else:
        x = base(x)
    x = keras.layers.GlobalAveragePooling2D(name=HEAD_POOL)(x)
    x = keras.layers.Dropout(dropout, name=HEAD_DROPOUT)(x)
    x = keras.layers.Dense(1, dtype="float32", name=HEAD_LOGIT)(x)
    outputs = keras.layers.Activation(
        "sigmoid", dtype="float32", name=PROBABILITY
    )(x)

    if name is None:
        suffix = f"from_{trainable_from}" if trainable_from else transfer
        name = f"{spec.name.lower()}_{suffix}"
    model = keras.Model(inputs, outputs, name=name)
    if checkpoint:
        warmstart.load_checkpoint(model, weights, spec.name)
    return model


def feature_extractor(model):
    """The sub-model image -> pooled features (`head_pool` output).

    Shares all weights with `model`. With `transfer="freeze_base"` its output
    does not change during training, so it can be computed once and cached.
    """
    return keras.Model(
        model.input,
        model.get_layer(HEAD_POOL).output,
        name=f"{model.name}_features",
    )


def head_model(model):
    """The sub-model pooled features -> probability (dropout, logit, sigmoid).

    Reuses `model`'s head layers, so training it on cached features trains
    `model`'s head in place.
    """
    pooled = model.get_layer(HEAD_POOL).output
    features = keras.Input(shape=tuple(pooled.shape[1:]), name="features")
    x = model.get_layer(HEAD_DROPOUT)(features)
    x = model.get_layer(HEAD_LOGIT)(x)
    outputs = model.get_layer(PROBABILITY)(x)
    return keras.Model(features, outputs, name=f"{model.name}_head")


def logits_model(model):
    """The sub-model image -> float32 logit (`head_logit` output), for export
    and for losses/calibration that want logits."""
    return keras.Model(
        model.input,
        model.get_layer(HEAD_LOGIT).output,
        name=f"{model.name}_logits",
    )
