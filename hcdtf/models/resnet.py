"""ResNet-10/18/34 (torchvision layout) in the style of `keras.applications`.

`keras.applications` ships ResNet50/101/152 but no basic-block ResNets, so this
module adds them with the same API (`include_top`, `weights`, `input_tensor`,
`input_shape`, `pooling`, `classes`, `classifier_activation`, `name`) and the
same layer naming scheme (`conv1_conv`, `conv2_block1_1_conv`,
`conv2_block1_0_conv` for a projection shortcut, `conv2_block1_out`, `avg_pool`,
`predictions`).

The architecture is torchvision's `resnet18`/`resnet34` layer for layer
(bias-free convolutions, BatchNorm epsilon 1e-5, stride on the first 3x3
convolution of a block, projection shortcut only where the shape changes,
explicit symmetric padding), so torchvision's ImageNet weights convert
one-to-one; see `hcdtf.models.convert.import_torchvision_safetensors`. With
the 1000-class top the trainable parameter counts equal torchvision's
(11,689,512 and 21,797,672); Keras additionally counts the BatchNorm moving
statistics as non-trainable weights (torchvision keeps them as buffers).

`weights="imagenet"` never downloads: it loads the converted file from the Keras
cache (`$KERAS_HOME/models/hcdtf_resnet{18,34}_tv_in1k.weights.h5`, see
`hcdtf.models.weights.torchvision_weights_path`) and raises
`WeightsUnavailableError` explaining how to create it when it is missing.

`ResNet10` is the same network with one basic block per stage (1-1-1-1, the
smallest of the family): nobody publishes ImageNet weights in this layout, so
it trains from random initialisation only (`weights=None` or a file of its
own). It is the test suite's model for the training machinery (half of
ResNet18's FLOPs, and a quarter less time to build and trace) and a
shallower from-scratch point for the depth question.
"""

import os

import keras
from keras import backend
from keras import layers

from hcdtf.models import registry
from hcdtf.models import weights as weights_lib

# torchvision's BatchNorm2d default; keras.applications uses 1.001e-5, which
# would shift every normalised activation slightly after weight conversion.
BN_EPSILON = 1e-5
BN_AXIS = 3  # channels last
DEFAULT_SIZE = 224  # the ImageNet input size of the weights
MIN_SIZE = 32  # five stride-2 stages: 32 px is the smallest input with a 1x1 output


def _input_shape(input_shape, include_top, weights):
    """The input shape (channels last), decided as `keras.applications` does.

    Without `input_shape`: (224, 224, 3) with the top, (None, None, 3)
    without. ImageNet weights need 3 channels, and (224, 224, 3) with the top;
    the top needs a static shape; each side must be at least 32 px.
    """
    default_shape = (DEFAULT_SIZE, DEFAULT_SIZE, 3)
    if not input_shape:
        return default_shape if include_top else (None, None, 3)
    input_shape = tuple(input_shape)
    if weights == "imagenet" and include_top and input_shape != default_shape:
        raise ValueError(
            "When setting `include_top=True` and loading `imagenet` weights, "
            f"`input_shape` should be {default_shape}.  "
            f"Received: input_shape={input_shape}"
        )
    if len(input_shape) != 3:
        raise ValueError(
            "`input_shape` must be a tuple of three integers.  "
            f"Received: input_shape={input_shape}"
        )
    if weights == "imagenet" and input_shape[-1] != 3:
        raise ValueError(
            "The input must have 3 channels.  "
            f"Received: input_shape={input_shape}"
        )
    if any(side is not None and side < MIN_SIZE for side in input_shape[:2]):
        raise ValueError(
            f"Input size must be at least {MIN_SIZE}x{MIN_SIZE}.  "
            f"Received: input_shape={input_shape}"
        )
    if include_top and None in input_shape:
        raise ValueError(
            "If `include_top` is True, you should specify a static "
            f"`input_shape`.  Received: input_shape={input_shape}"
        )
    return input_shape


def _check_classifier_activation(classifier_activation, weights):
    """Pretrained weights come with a softmax top: only `None` (logits) or
    `"softmax"` keep its meaning."""
    if weights is None:
        return
    allowed = (keras.activations.get("softmax"), keras.activations.get(None))
    if keras.activations.get(classifier_activation) not in allowed:
        raise ValueError(
            "Only `None` and `softmax` activations are allowed for the "
            "`classifier_activation` argument when using pretrained weights, "
            "with `include_top=True`.  "
            f"Received: classifier_activation={classifier_activation}"
        )


def ResNet(
    stack_fn,
    include_top=True,
    weights="imagenet",
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name="resnet",
    weights_name=None,
):
    """Instantiates a basic-block ResNet (ResNet-18/34) in torchvision layout.

    Args:
        stack_fn: A function that returns output tensor for the
            stacked residual blocks.
        include_top: Whether to include the fully-connected
            layer at the top of the network.
        weights: One of `None` (random initialization),
            `"imagenet"` (torchvision's ImageNet weights, converted with
            `hcdtf weights import` into the Keras cache directory),
            or the path to the weights file to be loaded. A file written by
            the importer always holds the top; with `include_top=False` it is
            loaded and the top is dropped.
        input_tensor: Optional Keras tensor (i.e. output of `layers.Input()`)
            to use as image input for the model.
        input_shape: Optional shape tuple, only to be specified
            if `include_top` is `False` (otherwise the input shape
            has to be `(224, 224, 3)` when loading ImageNet weights).
            It should have exactly 3 inputs channels, and width and height
            should be no smaller than 32.
        pooling: Optional pooling mode for feature extraction
            when `include_top` is `False`.
            - `None` means that the output of the model will be
                the 4D tensor output of the
                last convolutional layer.
            - `avg` means that global average pooling
                will be applied to the output of the
                last convolutional layer, and thus
                the output of the model will be a 2D tensor.
            - `max` means that global max pooling will
                be applied.
        classes: optional number of classes to classify images
            into, only to be specified if `include_top` is `True`,
            and if no `weights` argument is specified.
        classifier_activation: A `str` or callable. The activation
            function to use on the "top" layer. Ignored unless
            `include_top=True`. Set `classifier_activation=None` to
            return the logits of the "top" layer. When loading
            pretrained weights, `classifier_activation` can only be
            `None` or `"softmax"`.
        name: The name of the model (string).
        weights_name: Architecture name used to locate the converted
            ImageNet weights (`"resnet18"` or `"resnet34"`; `"resnet10"` has none).

    Returns:
        A Model instance.
    """

    weights_path = _weights_path(weights, weights_name, include_top, classes)
    if pooling not in {None, "avg", "max"}:
        raise ValueError(
            "The `pooling` argument should be one of None, 'avg' or 'max'.  "
            f"Received: pooling={pooling}"
        )
    if include_top:
        _check_classifier_activation(classifier_activation, weights)
    if backend.image_data_format() != "channels_last":
        # The converted weights and the explicit padding below assume NHWC;
        # torchvision itself is NCHW but the importer transposes for us.
        raise ValueError(
            "ResNet10/18/34 only support the 'channels_last' image data "
            f"format.  Received: data_format={backend.image_data_format()}"
        )
    input_shape = _input_shape(input_shape, include_top, weights)

    if input_tensor is None:
        img_input = layers.Input(shape=input_shape)
    elif not backend.is_keras_tensor(input_tensor):
        img_input = layers.Input(tensor=input_tensor, shape=input_shape)
    else:
        img_input = input_tensor

    x = stack_fn(_stem(img_input))

    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dense(
            classes, activation=classifier_activation, name="predictions"
        )(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)

    # Ensure that the model takes into account
    # any potential predecessors of `input_tensor`.
    if input_tensor is not None:
        inputs = keras.utils.get_source_inputs(input_tensor)
    else:
        inputs = img_input
    model = keras.Model(inputs, x, name=name)

    if weights_path is not None:
        # Keras 3 matches a `.weights.h5` by layer order and ignores entries
        # the model does not have, so the importer's file (which always holds
        # the top) also loads into a headless model: the top is skipped.
        model.load_weights(weights_path)
    return model


def _weights_path(weights, weights_name, include_top, classes):
    """The weights file to load (None for random initialisation), checked
    before anything is built: failing offline is fast and names the file."""
    if not (weights in {"imagenet", None} or os.path.exists(weights)):
        raise ValueError(
            "The `weights` argument should be either "
            "`None` (random initialization), 'imagenet' "
            "(pre-training on ImageNet), "
            "or the path to the weights file to be loaded.  Received: "
            f"weights={weights}"
        )
    if weights == "imagenet" and include_top and classes != 1000:
        raise ValueError(
            "If using `weights='imagenet'` with `include_top=True`, "
            "`classes` should be 1000.  "
            f"Received classes={classes}"
        )
    if weights != "imagenet":
        return weights
    if not registry.get_arch(weights_name).pretrained:
        raise weights_lib.WeightsUnavailableError(
            f"{weights_name}: there are no published ImageNet weights for this architecture "
            "(torchvision publishes ResNet18 and ResNet34); train it from random initialisation "
            "with `--weights none` (weights=None).",
            hint=f"{weights_name} has no ImageNet weights: use `--weights none`",
        )
    path = weights_lib.torchvision_weights_path(weights_name)
    if not path.is_file():
        raise weights_lib.torchvision_weights_unavailable(weights_name, path)
    return path


def _stem(img_input):
    """conv1 (7x7/2, BatchNorm, ReLU) and the 3x3/2 max pool, padded as
    torchvision pads them."""
    # torchvision pads symmetrically (padding=3 for the 7x7/2 stem); "same"
    # padding in TensorFlow would pad (2, 3) for a stride-2 convolution on an
    # even input and shift every feature map by one pixel.
    x = layers.ZeroPadding2D(padding=((3, 3), (3, 3)), name="conv1_pad")(
        img_input
    )
    x = layers.Conv2D(64, 7, strides=2, use_bias=False, name="conv1_conv")(x)
    x = layers.BatchNormalization(
        axis=BN_AXIS, epsilon=BN_EPSILON, name="conv1_bn"
    )(x)
    x = layers.Activation("relu", name="conv1_relu")(x)

    # torchvision's max pool pads with -inf, Keras with zeros; after the ReLU
    # every value is >= 0, so both give the same maximum.
    x = layers.ZeroPadding2D(padding=((1, 1), (1, 1)), name="pool1_pad")(x)
    return layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)


def basic_block(x, filters, stride=1, conv_shortcut=False, name=None):
    """A basic residual block (two 3x3 convolutions) for ResNet-18/34.

    Matches torchvision's `BasicBlock`: the stride sits on the first 3x3
    convolution, and the projection shortcut (1x1 convolution + BatchNorm,
    torchvision's `downsample`) is only used where the shape changes.

    Args:
        x: Input tensor.
        filters: Number of filters of both 3x3 convolutions.
        stride: Stride of the first convolution and of the shortcut.
            Defaults to `1`.
        conv_shortcut: Use convolution shortcut if `True`, otherwise
            use identity shortcut. Defaults to `False`.
        name(optional): Name of the block

    Returns:
        Output tensor for the residual block.
    """
    if conv_shortcut:
        shortcut = layers.Conv2D(
            filters, 1, strides=stride, use_bias=False, name=f"{name}_0_conv"
        )(x)
        shortcut = layers.BatchNormalization(
            axis=BN_AXIS, epsilon=BN_EPSILON, name=f"{name}_0_bn"
        )(shortcut)
    else:
        shortcut = x

    x = layers.ZeroPadding2D(padding=((1, 1), (1, 1)), name=f"{name}_1_pad")(x)
    x = layers.Conv2D(
        filters, 3, strides=stride, use_bias=False, name=f"{name}_1_conv"
    )(x)
    x = layers.BatchNormalization(
        axis=BN_AXIS, epsilon=BN_EPSILON, name=f"{name}_1_bn"
    )(x)
    x = layers.Activation("relu", name=f"{name}_1_relu")(x)

    x = layers.ZeroPadding2D(padding=((1, 1), (1, 1)), name=f"{name}_2_pad")(x)
    x = layers.Conv2D(filters, 3, use_bias=False, name=f"{name}_2_conv")(x)
    x = layers.BatchNormalization(
        axis=BN_AXIS, epsilon=BN_EPSILON, name=f"{name}_2_bn"
    )(x)

    x = layers.Add(name=f"{name}_add")([shortcut, x])
    x = layers.Activation("relu", name=f"{name}_out")(x)
    return x


def stack_basic_blocks(x, filters, blocks, stride1=2, name=None):
    """A set of stacked basic residual blocks.

    Args:
        x: Input tensor.
        filters: Number of filters of every block in the stack.
        blocks: Number of blocks in the stacked blocks.
        stride1: Stride of the first layer in the first block. Defaults to `2`.
        name: Stack label.

    Returns:
        Output tensor for the stacked blocks.
    """
    # torchvision adds `downsample` only when stride or width changes, i.e.
    # never in conv2 (layer1) and always in the first block of conv3..conv5.
    conv_shortcut = stride1 != 1 or x.shape[-1] != filters
    x = basic_block(
        x,
        filters,
        stride=stride1,
        conv_shortcut=conv_shortcut,
        name=f"{name}_block1",
    )
    for i in range(2, blocks + 1):
        x = basic_block(x, filters, name=f"{name}_block{i}")
    return x


def _basic_stages(blocks):
    """The `stack_fn` of a basic-block ResNet: stages conv2..conv5 of 64, 128,
    256 and 512 filters with `blocks[i]` blocks each (conv2 keeps the stem's
    resolution, the others halve it)."""

    def stack_fn(x):
        for i, (filters, n) in enumerate(zip((64, 128, 256, 512), blocks)):
            x = stack_basic_blocks(x, filters, n, stride1=1 if i == 0 else 2, name=f"conv{i + 2}")
        return x

    return stack_fn


def ResNet10(
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name="resnet10",
):
    """Instantiates the ResNet10 architecture (torchvision layout, one basic
    block per stage; random initialisation only: no ImageNet weights exist)."""

    return ResNet(
        _basic_stages((1, 1, 1, 1)),
        weights_name="resnet10",
        name=name,
        include_top=include_top,
        weights=weights,
        input_tensor=input_tensor,
        input_shape=input_shape,
        pooling=pooling,
        classes=classes,
        classifier_activation=classifier_activation,
    )


def ResNet18(
    include_top=True,
    weights="imagenet",
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name="resnet18",
):
    """Instantiates the ResNet18 architecture (torchvision layout)."""

    return ResNet(
        _basic_stages((2, 2, 2, 2)),
        weights_name="resnet18",
        name=name,
        include_top=include_top,
        weights=weights,
        input_tensor=input_tensor,
        input_shape=input_shape,
        pooling=pooling,
        classes=classes,
        classifier_activation=classifier_activation,
    )


def ResNet34(
    include_top=True,
    weights="imagenet",
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name="resnet34",
):
    """Instantiates the ResNet34 architecture (torchvision layout)."""

    return ResNet(
        _basic_stages((3, 4, 6, 3)),
        weights_name="resnet34",
        name=name,
        include_top=include_top,
        weights=weights,
        input_tensor=input_tensor,
        input_shape=input_shape,
        pooling=pooling,
        classes=classes,
        classifier_activation=classifier_activation,
    )


DOC = """

Reference:
- [Deep Residual Learning for Image Recognition](
    https://arxiv.org/abs/1512.03385) (CVPR 2015)

The layout is torchvision's (`torchvision.models.resnet18/34`), so its
ImageNet weights (published as `model.safetensors` in the Hugging Face repos
`timm/resnet18.tv_in1k` and `timm/resnet34.tv_in1k`) can be converted with
`hcdtf weights import model.safetensors --arch ResNet18` (or
`hcdtf.models.convert.import_torchvision_safetensors`). The converted file is
looked up in `$KERAS_HOME/models/` (default `~/.keras/models/`) as
`hcdtf_resnet18_tv_in1k.weights.h5` / `hcdtf_resnet34_tv_in1k.weights.h5`;
nothing is downloaded implicitly.

Note: unlike `keras.applications.ResNet50`, these weights expect torchvision
("torch" mode) preprocessing: RGB scaled to [0, 1], then normalised with
mean `(0.485, 0.456, 0.406)` and std `(0.229, 0.224, 0.225)`, i.e.
`keras.applications.imagenet_utils.preprocess_input(x, mode="torch")`.

Args:
    include_top: whether to include the fully-connected
        layer at the top of the network.
    weights: one of `None` (random initialization),
        `"imagenet"` (pre-training on ImageNet, converted torchvision weights
        from the Keras cache directory), or the path to the weights
        file to be loaded.
    input_tensor: optional Keras tensor (i.e. output of `layers.Input()`)
        to use as image input for the model.
    input_shape: optional shape tuple, only to be specified if `include_top`
        is `False` (otherwise the input shape has to be `(224, 224, 3)`
        when loading ImageNet weights). It should have exactly 3
        inputs channels, and width and height should be no smaller than 32.
        E.g. `(96, 96, 3)` would be one valid value.
    pooling: Optional pooling mode for feature extraction when `include_top`
        is `False`.
        - `None` means that the output of the model will be the 4D tensor
                output of the last convolutional block.
        - `avg` means that global average pooling will be applied to the output
                of the last convolutional block, and thus the output of the
                model will be a 2D tensor.
        - `max` means that global max pooling will be applied.
    classes: optional number of classes to classify images into, only to be
        specified if `include_top` is `True`, and if no `weights` argument is
        specified. Defaults to `1000`.
    classifier_activation: A `str` or callable. The activation function to
        use on the "top" layer. Ignored unless `include_top=True`. Set
        `classifier_activation=None` to return the logits of the "top" layer.
        When loading pretrained weights, `classifier_activation` can only
        be `None` or `"softmax"`.
    name: The name of the model (string).

Returns:
    A Model instance.

Raises:
    hcdtf.models.weights.WeightsUnavailableError: `weights="imagenet"` and
        the converted weights file is not in the Keras cache directory.
"""

if ResNet10.__doc__ is not None:
    setattr(ResNet10, "__doc__", ResNet10.__doc__ + DOC)
if ResNet18.__doc__ is not None:
    setattr(ResNet18, "__doc__", ResNet18.__doc__ + DOC)
if ResNet34.__doc__ is not None:
    setattr(ResNet34, "__doc__", ResNet34.__doc__ + DOC)
