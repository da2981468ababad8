"""Layers of hcdtf's classifiers: in-model ImageNet preprocessing, so the
classifiers take raw uint8 RGB, and a fused BatchNormalization.

Keeping preprocessing inside the model means training, evaluation, export
(SavedModel / TFLite) and serving all feed the same thing (the decoded PNG/TIFF
patch) and cannot disagree about the normalisation the pretrained weights
expect.

`FusedBatchNormalization` is `keras.layers.BatchNormalization` computed by
TensorFlow's fused kernel (one op forward, one backward; oneDNN on CPUs,
cuDNN on GPUs) instead of Keras 3's moments + normalisation chain of
element-wise ops. `fuse_batch_norm(model)` swaps it into a built model.

Both layers are registered (`hcdtf>ImagePreprocessing`,
`hcdtf>FusedBatchNormalization`); importing `hcdtf.models.layers` (which
`hcdtf.models.build_classifier` does) before `keras.models.load_model` makes
saved `.keras` files loadable. It registers the stain normalisation layers of
`hcdtf.models.stain` too (a classifier may start with one).
"""

import keras
from keras import ops

from hcdtf.models import stain as _stain  # noqa: F401  registers MacenkoNormalization, ReinhardNormalization

# keras.applications.imagenet_utils.preprocess_input constants.
TORCH_MEAN = (0.485, 0.456, 0.406)  # RGB, on [0, 1]
TORCH_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # BGR, on [0, 255]

MODES = ("torch", "caffe")


@keras.saving.register_keras_serializable(package="hcdtf")
class ImagePreprocessing(keras.layers.Layer):
    """Casts uint8 RGB images to float and applies ImageNet preprocessing.

    Same arithmetic as
    `keras.applications.imagenet_utils.preprocess_input(x, mode=mode)`
    for channels-last RGB input on [0, 255]:

    - `"torch"` (torchvision weights, ResNet18/34): scale to [0, 1], subtract
      mean `(0.485, 0.456, 0.406)`, divide by std `(0.229, 0.224, 0.225)`.
    - `"caffe"` (`keras.applications` ResNet50/101/152): RGB -> BGR, subtract
      `(103.939, 116.779, 123.68)`, no scaling.

    Args:
        mode: `"torch"` or `"caffe"`.
    """

    def __init__(self, mode, **kwargs):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(
                f"The `mode` argument should be one of {MODES}. "
                f"Received: mode={mode}"
            )
        self.mode = mode

    def call(self, inputs):
        # Compute in float32 whatever the policy: under mixed_float16 the
        # caffe offsets (~100) and a float16 division would lose precision
        # before the first convolution. Cast to the compute dtype at the end.
        x = ops.cast(inputs, "float32")
        if self.mode == "torch":
            # (x / 255 - mean) / std as one multiply-add per channel.
            scale = [1.0 / (255.0 * s) for s in TORCH_STD]
            offset = [-m / s for m, s in zip(TORCH_MEAN, TORCH_STD)]
            scale = ops.convert_to_tensor(scale, "float32")
            offset = ops.convert_to_tensor(offset, "float32")
            x = x * scale + offset
        else:
            x = ops.flip(x, axis=-1)
            x = x - ops.convert_to_tensor(CAFFE_MEAN_BGR, "float32")
        return ops.cast(x, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(inputs.shape, dtype=self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode})
        return config


@keras.saving.register_keras_serializable(package="hcdtf")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` through TensorFlow's fused kernel.

    Keras 3 computes batch normalisation as `ops.moments` followed by
    `tf.nn.batch_normalization`: about ten element-wise passes over the
    activations forward and more backward. `tf.compat.v1.nn.fused_batch_norm`
    (`FusedBatchNormV3`) does one pass each way, which is what Keras 2's
    `fused=True` used. Same arguments, weights, outputs (to float rounding)
    and moving-statistics updates as the Keras layer: the fused op returns
    the unbiased batch variance, which is rescaled to the biased one Keras
    keeps.

    Falls back to the Keras computation where the fused kernel does not
    apply: inputs that are not 4-D channels-last, `mask`, `renorm`,
    `synchronized`, a backend other than TensorFlow, and GPUs when op
    determinism is enabled (the fused gradient with respect to `beta` is not
    deterministic there).
    """

    def _fusable(self, inputs, mask):
        if keras.backend.backend() != "tensorflow":
            return False
        if mask is not None or self.renorm or self.synchronized:
            return False
        if len(inputs.shape) != 4 or self.axis not in (-1, 3):
            return False
        from hcdtf import runtime

        if runtime.op_determinism_enabled() and runtime.has_gpu():
            return False
        return True

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        x = inputs
        if x.dtype not in (tf.float16, tf.bfloat16, tf.float32):
            x = tf.cast(x, tf.float32)
        channels = self.moving_mean.shape
        gamma = (ops.cast(self.gamma, "float32") if self.scale
                 else tf.ones(channels, tf.float32))
        beta = (ops.cast(self.beta, "float32") if self.center
                else tf.zeros(channels, tf.float32))
        if training and self.trainable:
            y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, epsilon=self.epsilon, is_training=True)
            shape = tf.shape(x)
            n = tf.cast(shape[0] * shape[1] * shape[2], tf.float32)
            # The op hands back the variance with Bessel's correction.
            variance = variance * (tf.maximum(n - 1.0, 0.0) / tf.maximum(n, 1.0))
            m = self.momentum
            self.moving_mean.assign(self.moving_mean * m + mean * (1.0 - m))
            self.moving_variance.assign(
                self.moving_variance * m + variance * (1.0 - m))
        else:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta,
                mean=ops.cast(self.moving_mean, "float32"),
                variance=ops.cast(self.moving_variance, "float32"),
                epsilon=self.epsilon, is_training=False)
        return ops.cast(y, self.compute_dtype)


def fuse_batch_norm(model):
    """A copy of a functional `model` whose `keras.layers.BatchNormalization`
    layers are `FusedBatchNormalization`, with the same weights, names and
    trainable flags (other layers are cloned as they are). Returns `model`
    itself when it has no such layer."""
    # clone_model passes the top-level layers to clone_function, so those are the ones to look at.
    if not any(type(layer) is keras.layers.BatchNormalization for layer in model.layers):
        return model

    def clone(layer):
        config = layer.get_config()
        if type(layer) is keras.layers.BatchNormalization:
            return FusedBatchNormalization.from_config(config)
        return layer.__class__.from_config(config)

    input_tensors = None
    first = model.layers[0]
    if len(model.inputs) == 1 and isinstance(first, keras.layers.InputLayer):
        # Keep the input layer's name (clone_model would call it "keras_tensor").
        spec = model.inputs[0]
        input_tensors = keras.Input(batch_shape=spec.shape, dtype=spec.dtype,
                                    name=first.name)
    fused = keras.models.clone_model(model, input_tensors=input_tensors,
                                     clone_function=clone)
    fused.set_weights(model.get_weights())
    for old, new in zip(model.layers, fused.layers):
        new.trainable = old.trainable
    fused.trainable = model.trainable
    return fused
