"""Other runtimes' files of the exported model (ONNX, OpenVINO IR, LiteRT), and the extra each needs.

Each is written by Keras 3's own exporter (``model.export(path, format=...)``: tf2onnx for ONNX,
``openvino.convert_model`` for OpenVINO, ``tf.lite.TFLiteConverter`` for LiteRT) from the float32
model with the same input as the SavedModel: ``images`` uint8 ``[batch, 96, 96, 3]`` RGB, the
preprocessing inside the graph; the one output is the tumour probability, float32 ``[batch, 1]``.
"""

from __future__ import annotations

import importlib.util
import pathlib

from hcdtf.export.signatures import images_spec

# Artifact kinds of an export: the SavedModel (TF Serving's version directory), the .keras copy,
# and one directory per other runtime. The reduced-precision variants are OpenVINO models: int8
# (IR quantised by NNCF) and bf16 (the float32 IR computed in bfloat16), each accuracy-guarded.
FORMATS = ("saved_model", "onnx", "openvino", "litert")
QUANTIZATIONS = ("int8", "bf16")
MODEL_FILES = {"onnx": "model.onnx", "openvino": "model.xml", "openvino-int8": "model.xml",
               "openvino-bf16": "model.xml", "litert": "model.tflite"}
EXTRA_INSTALL = "pip install 'hcdtf[export]'"
# (module, pip requirement) per artifact; the versions are the ones pinned in setup.cfg's [export].
NEEDS = {
    "onnx": (("tf2onnx", "tf2onnx==1.17.0"), ("onnx", "onnx==1.23.2"), ("onnxruntime", "onnxruntime==1.32.0")),
    "openvino": (("openvino", "openvino==2026.4.1"),),
    "openvino-int8": (("openvino", "openvino==2026.4.1"), ("nncf", "nncf==3.4.0")),
    "openvino-bf16": (("openvino", "openvino==2026.4.1"),),
    "litert": (("ai_edge_litert", "ai-edge-litert==2.3.0"),),
}


class MissingExtraError(ValueError):
    """A format or backend needs an optional package that is not installed."""


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken install, or a module blocked with sys.modules[name] = None
        return False


def require(kind: str, what: str) -> None:
    """Raises :class:`MissingExtraError` naming the pip command when ``kind`` cannot run here."""
    missing = [req for module, req in NEEDS.get(kind, ()) if not _installed(module)]
    if missing:
        raise MissingExtraError(
            f"{what} needs {', '.join(r.split('==')[0] for r in missing)}, not installed: "
            f"{EXTRA_INSTALL} (or pip install {' '.join(missing)})"
        )


def quantizations(quantize) -> tuple[str, ...]:
    """``--quantize`` as a tuple: None, one name or several (repeatable), each checked."""
    names = () if quantize is None else (quantize,) if isinstance(quantize, str) else tuple(quantize)
    for q in names:
        if q not in QUANTIZATIONS:
            raise ValueError(f"--quantize {q!r} is not supported; choose from {', '.join(QUANTIZATIONS)}")
    return tuple(dict.fromkeys(names))


def check_formats(formats, quantize=None) -> tuple[str, ...]:
    """The artifact kinds to write, in order, or a clear error for an unknown format/quantisation."""
    formats = tuple(dict.fromkeys(formats or ("saved_model",)))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"--format {unknown[0]!r} is not a known format; choose from {', '.join(FORMATS)}")
    kinds = [f for f in formats if f != "saved_model"]
    kinds += [f"openvino-{q}" for q in quantizations(quantize)]
    for kind in kinds:
        variant = kind.removeprefix("openvino-")
        require(kind, f"--quantize {variant}" if variant in QUANTIZATIONS else f"--format {kind}")
    return tuple(kinds)


def write_runtime_model(model, kind: str, out_dir: pathlib.Path) -> pathlib.Path:
    """Writes ``model`` (float32) for ``kind`` (onnx, openvino, litert) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / MODEL_FILES[kind]
    keras_format = {"onnx": "onnx", "openvino": "openvino", "litert": "litert"}[kind]
    model.export(str(path), format=keras_format, input_signature=[images_spec()], verbose=False)
    return path
