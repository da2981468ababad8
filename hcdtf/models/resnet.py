"""ResNet-18/34 (torchvision layout) in the style of `keras.applications`.

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
one-to-one; see `hcdtf.models.weights.import_torchvision_safetensors`. With
the 1000-class top the trainable parameter counts equal torchvision's
(11,689,512 and 21,797,672); Keras additionally counts the BatchNorm moving
statistics as non-trainable weights (torchvision keeps them as buffers).

`weights="imagenet"` never downloads: it loads the converted file from the Keras
cache (`$KERAS_HOME/models/hcdtf_resnet{18,34}_tv_in1k.weights.h5`, see
`hcdtf.models.weights.torchvision_weights_path`) and raises
`WeightsUnavailableError` explaining how to create it when it is missing.
"""

from keras import backend
from keras import layers
from keras.src.applications import imagenet_utils  # private, pinned Keras 3.x
from keras.src.models import Functional
from keras.src.ops import operation_utils
from keras.src.utils import file_utils

from hcdtf.models import weights as weights_lib

# torchvision's BatchNorm2d default; keras.applications uses 1.001e-5, which
# would shift every normalised activation slightly after weight conversion.
BN_EPSILON = 1e-5


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
            ImageNet weights (`"resnet18"` or `"resnet34"`).

    Returns:
        A Model instance.
    """

    if not (weights in {"imagenet", None} or file_utils.exists(weights)):
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

    if pooling not in {None, "avg", "max"}:
        raise ValueError(
            "The `pooling` argument should be one of None, 'avg' or 'max'.  "
            f"Received: pooling={pooling}"
        )

    if backend.image_data_format() != "channels_last":
        # The converted weights and the explicit padding below assume NHWC;
        # torchvision itself is NCHW but the importer transposes for us.
        raise ValueError(
            "ResNet18/ResNet34 only support the 'channels_last' image data "
            f"format.  Received: data_format={backend.image_data_format()}"
        )

    # Resolve the weights file before building anything: failing offline
    # should be fast and say exactly which file is missing.
    if weights == "imagenet":
        weights_path = weights_lib.torchvision_weights_path(weights_name)
        if not weights_path.is_file():
            raise weights_lib.torchvision_weights_unavailable(
                weights_name, weights_path
            )
    elif weights is not None:
        weights_path = weights
    else:
        weights_path = None

    # Determine proper input shape
    input_shape = imagenet_utils.obtain_input_shape(
        input_shape,
        default_size=224,
        min_size=32,
        data_format=backend.image_data_format(),
        require_flatten=include_top,
        weights=weights,
    )

    if input_tensor is None:
        img_input = layers.Input(shape=input_shape)
    else:
        if not backend.is_keras_tensor(input_tensor):
            img_input = layers.Input(tensor=input_tensor, shape=input_shape)
        else:
            img_input = input_tensor

    bn_axis = 3

    # torchvision pads symmetrically (padding=3 for the 7x7/2 stem); "same"
    # padding in TensorFlow would pad (2, 3) for a stride-2 convolution on an
    # even input and shift every feature map by one pixel.
    x = layers.ZeroPadding2D(padding=((3, 3), (3, 3)), name="conv1_pad")(
        img_input
    )
    x = layers.Conv2D(64, 7, strides=2, use_bias=False, name="conv1_conv")(x)
    x = layers.BatchNormalization(
        axis=bn_axis, epsilon=BN_EPSILON, name="conv1_bn"
    )(x)
    x = layers.Activation("relu", name="conv1_relu")(x)

    # torchvision's max pool pads with -inf, Keras with zeros; after the ReLU
    # every value is >= 0, so both give the same maximum.
    x = layers.ZeroPadding2D(padding=((1, 1), (1, 1)), name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)

    x = stack_fn(x)

    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)

        # Validate activation for the classifier layer
        imagenet_utils.validate_activation(classifier_activation, weights)

        x = layers.Dense(
            classes, activation=classifier_activation, name="predictions"
        )(x)
    else:
        if pooling == "avg":
            x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        elif pooling == "max":
            x = layers.GlobalMaxPooling2D(name="max_pool")(x)

    # Ensure that the model takes into account
    # any potential predecessors of `input_tensor`.
    if input_tensor is not None:
        inputs = operation_utils.get_source_inputs(input_tensor)
    else:
        inputs = img_input

    # Create model.
    model = Functional(inputs, x, name=name)

    # Load weights.
    if weights_path is not None:
        # Keras 3 matches a `.weights.h5` by layer order and ignores entries
        # the model does not have, so the importer's file (which always holds
        # the top) also loads into a headless model: the top is skipped.
        model.load_weights(weights_path)

    return model


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
    bn_axis = 3

    if conv_shortcut:
        shortcut = layers.Conv2D(
            filters, 1, strides=stride, use_bias=False, name=f"{name}_0_conv"
        )(x)
        shortcut = layers.BatchNormalization(
            axis=bn_axis, epsilon=BN_EPSILON, name=f"{name}_0_bn"
        )(shortcut)
    else:
        shortcut = x

    x = layers.ZeroPadding2D(padding=((1, 1), (1, 1)), name=f"{name}_1_pad")(x)
    x = layers.Conv2D(
        filters, 3, strides=stride, use_bias=False, name=f"{name}_1_conv"
    )(x)
    x = layers.BatchNormalization(
        axis=bn_axis, epsilon=BN_EPSILON, name=f"{name}_1_bn"
    )(x)
    x = layers.Activation("relu", name=f"{name}_1_relu")(x)

    x = layers.ZeroPadding2D(padding=((1, 1), (1, 1)), name=f"{name}_2_pad")(x)
    x = layers.Conv2D(filters, 3, use_bias=False, name=f"{name}_2_conv")(x)
    x = layers.BatchNormalization(
        axis=bn_axis, epsilon=BN_EPSILON, name=f"{name}_2_bn"
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

    def stack_fn(x):
        x = stack_basic_blocks(x, 64, 2, stride1=1, name="conv2")
        x = stack_basic_blocks(x, 128, 2, name="conv3")
        x = stack_basic_blocks(x, 256, 2, name="conv4")
        return stack_basic_blocks(x, 512, 2, name="conv5")

    return ResNet(
        stack_fn,
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

    def stack_fn(x):
        x = stack_basic_blocks(x, 64, 3, stride1=1, name="conv2")
        x = stack_basic_blocks(x, 128, 4, name="conv3")
        x = stack_basic_blocks(x, 256, 6, name="conv4")
        return stack_basic_blocks(x, 512, 3, name="conv5")

    return ResNet(
        stack_fn,
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
`hcdtf.models.weights.import_torchvision_safetensors`). The converted file is
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

if ResNet18.__doc__ is not None:
    setattr(ResNet18, "__doc__", ResNet18.__doc__ + DOC)
if ResNet34.__doc__ is not None:
    setattr(ResNet34, "__doc__", ResNet34.__doc__ + DOC)
