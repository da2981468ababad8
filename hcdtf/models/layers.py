"""In-model ImageNet preprocessing, so the classifiers take raw uint8 RGB.

Keeping preprocessing inside the model means training, evaluation, export
(SavedModel / TFLite) and serving all feed the same thing (the decoded PNG/TIFF
patch) and cannot disagree about the normalisation the pretrained weights
expect.

`ImagePreprocessing` is registered as `hcdtf>ImagePreprocessing`; importing
`hcdtf.models.layers` (which `hcdtf.models.build_classifier` does) before
`keras.models.load_model` makes saved `.keras` files loadable.
"""

import keras
from keras import ops

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
