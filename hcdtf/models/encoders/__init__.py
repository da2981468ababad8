"""Pathology foundation encoders (ViT / DINOv2 family) beside the ResNets.

- `specs`: the published encoders by name (licence, gated access, input, mean/std,
  embedding rule, shape, cost); TF-free.
- `convert`: hub checkpoints (timm or transformers layout) -> one canonical description
  (NumPy only).
- `files`: the self-describing converted file and where `--weights pretrained` finds it.
- `model`: the Keras encoder (keras-hub's DINOV2Backbone, preprocessing and embedding rule
  inside the model).

Importing this package imports neither TensorFlow nor Keras.
"""

from hcdtf.models.encoders.specs import ENCODERS, EncoderSpec, get_encoder, is_encoder  # noqa: F401


def register_layers_for(keras_file):
    """Imports the encoder layers (and keras-hub) before `keras.saving.load_model(keras_file)`
    when that `.keras` file holds an encoder, so ResNet runs do not pay keras-hub's import."""
    import zipfile

    try:
        with zipfile.ZipFile(keras_file) as z:
            needed = b"hcdtf.models.encoders" in z.read("config.json")
    except (OSError, KeyError, zipfile.BadZipFile):
        return
    if needed:
        import hcdtf.models.encoders.model  # noqa: F401
