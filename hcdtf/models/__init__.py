"""Models of the study: ResNet18/34/50/101/152 (and ResNet10) binary patch classifiers.

- `ResNet10`, `ResNet18`, `ResNet34`: torchvision-layout ResNets in `keras.applications`
  style (`hcdtf.models.resnet`); `ResNet50`, `ResNet101`, `ResNet152`: the
  `keras.applications` ones.
- `ARCHS`, `get_arch`: the architectures by name (`hcdtf.models.registry`).
- `build_classifier`, `feature_extractor`, `head_model`, `logits_model`:
  the classifier and its parts (`hcdtf.models.classifier`).
- `ImagePreprocessing`, `FusedBatchNormalization`, `fuse_batch_norm`
  (`hcdtf.models.layers`).
- `count_params`, `flops_per_image`, `models_table`, `format_models_table`
  (`hcdtf.models.stats`).
- `WeightsUnavailableError`, `keras_weights_path` (`hcdtf.models.weights`);
  `import_torchvision_safetensors`, `fetch` (`hcdtf.models.convert`).

Everything is imported lazily: `import hcdtf.models` does not import
TensorFlow or Keras; the first access to a model-building name does.
"""

import importlib

from hcdtf.models.registry import ARCHS
from hcdtf.models.registry import get_arch
from hcdtf.models.weights import WeightsUnavailableError

_LAZY = {
    "ResNet10": "hcdtf.models.resnet",
    "ResNet18": "hcdtf.models.resnet",
    "ResNet34": "hcdtf.models.resnet",
    "ResNet50": "keras.applications",
    "ResNet101": "keras.applications",
    "ResNet152": "keras.applications",
    "ArchSpec": "hcdtf.models.registry",
    "TRANSFERS": "hcdtf.models.registry",
    "STAGES": "hcdtf.models.registry",
    "build_classifier": "hcdtf.models.classifier",
    "set_base_trainable": "hcdtf.models.classifier",
    "feature_extractor": "hcdtf.models.classifier",
    "head_model": "hcdtf.models.classifier",
    "logits_model": "hcdtf.models.classifier",
    "ImagePreprocessing": "hcdtf.models.layers",
    "FusedBatchNormalization": "hcdtf.models.layers",
    "fuse_batch_norm": "hcdtf.models.layers",
    "count_params": "hcdtf.models.stats",
    "flops_per_image": "hcdtf.models.stats",
    "models_table": "hcdtf.models.stats",
    "format_models_table": "hcdtf.models.stats",
    "import_torchvision_safetensors": "hcdtf.models.convert",
    "fetch": "hcdtf.models.convert",
    "keras_weights_path": "hcdtf.models.weights",
    "require_keras_weights": "hcdtf.models.weights",
    "torchvision_weights_path": "hcdtf.models.weights",
    "imagenet_weights_path": "hcdtf.models.weights",
}

__all__ = ["ARCHS", "get_arch", "WeightsUnavailableError", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # resolve once
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
