"""Deployment bundle: a run's model as a TF Serving version, in other runtimes' formats, and int8.

``export_run(run, export_dir, formats=..., quantize=...)`` writes version ``<N>`` of
``export_dir`` (see :mod:`hcdtf.export.bundle` for the layout): the SavedModel with its serving
signatures (:mod:`~hcdtf.export.signatures`) and TF Serving warm-up file, TF Serving's model
config and batching parameters (:mod:`~hcdtf.export.serving`), a ``.keras`` copy, and ONNX /
OpenVINO / LiteRT models (:mod:`~hcdtf.export.runtimes`) and an accuracy-guarded int8 model
(:mod:`~hcdtf.export.int8`) on request. ``export_model`` does the same from a Keras model and a
metadata dict. Importing this package imports no TensorFlow.
"""

from hcdtf.export.bundle import Int8Data, artifact_name, export_model, next_version
from hcdtf.export.fromrun import DEFAULT_INPUT_MPP, BaselineRunError, export_run, float32_model, run_metadata
from hcdtf.export.int8 import DEFAULT_CALIBRATION_SIZE, DEFAULT_MARGIN, Int8Refused
from hcdtf.export.runtimes import FORMATS, MODEL_FILES, QUANTIZATIONS, MissingExtraError
from hcdtf.export.signatures import IMAGE_SIZE, METADATA_ASSET, SIGNATURES, write_saved_model

__all__ = [
    "BaselineRunError", "DEFAULT_CALIBRATION_SIZE", "DEFAULT_INPUT_MPP", "DEFAULT_MARGIN", "FORMATS",
    "IMAGE_SIZE", "Int8Data", "Int8Refused", "METADATA_ASSET", "MODEL_FILES", "MissingExtraError",
    "QUANTIZATIONS", "SIGNATURES", "artifact_name", "export_model", "export_run", "float32_model",
    "next_version", "run_metadata", "write_saved_model",
]
