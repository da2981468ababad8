"""Model backends: which runtime a model path needs, and a :class:`hcdtf.inference.scoring.Scorer` for each.

A model is a run directory, a ``.keras`` file, an exported SavedModel version directory, an
export base directory (its latest version, as TF Serving picks it), or one of the other runtimes'
exports: ``.onnx`` (ONNX Runtime), OpenVINO ``.xml`` (float32, int8 or bf16), ``.tflite`` (LiteRT),
each as the file or as its ``<N>-<backend>/`` directory. Every backend computes in the precision
the export names (float32 unless it is a reduced-precision variant), set explicitly: OpenVINO's
CPU plugin would otherwise compute float32 models in bfloat16 on CPUs with native BF16. ``resolve`` detects the backend from the path;
``--backend`` picks one explicitly (needed to choose a runtime inside an export base directory).
Every scorer takes uint8 ``[B, 96, 96, 3]`` RGB and returns float64 ``[B]`` probabilities.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Callable


BACKENDS = ("saved_model", "keras", "onnx", "openvino", "openvino-int8", "openvino-bf16", "litert")
_OPENVINO = ("openvino", "openvino-int8", "openvino-bf16")
_SUFFIXES = {".keras": "keras", ".onnx": "onnx", ".xml": "openvino", ".tflite": "litert"}


class ModelPathError(FileNotFoundError):
    """MODEL is not a model that any backend reads."""


def _latest(base: pathlib.Path, backend: str) -> pathlib.Path | None:
    from hcdtf.export import artifact_name

    versions = sorted(int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit()
                      and (p / "saved_model.pb").is_file())
    for v in reversed(versions):
        candidate = base / artifact_name(v, backend)
        if candidate.exists():
            return candidate
    return None


def _detect(p: pathlib.Path) -> str | None:
    from hcdtf.export import MODEL_FILES

    if p.is_file():
        return _SUFFIXES.get(p.suffix.lower())
    if not p.is_dir():
        return None
    if (p / "saved_model.pb").is_file():
        return "saved_model"
    for kind, name in MODEL_FILES.items():
        if (p / name).is_file():
            return next((k for k in _OPENVINO[1:] if p.name.endswith(f"-{k}")), kind)
    from hcdtf.rundir import RunDir

    return "run" if RunDir(p).is_run() else None


def resolve(model_path, backend: str | None = None, log: Callable[[str], None] = print) -> tuple[str, pathlib.Path]:
    """(backend, path): ``run`` for a run directory, else one of :data:`BACKENDS`."""
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"--backend {backend!r} is not a backend; choose from {', '.join(BACKENDS)}")
    p = pathlib.Path(model_path)
    found = _detect(p)
    if found is None and p.is_dir():
        latest = _latest(p, backend or "saved_model")
        if latest is not None:
            log(f"{p} holds exported versions; using the latest" + (f" with a {backend} model" if backend
                not in (None, "saved_model") else "") + f", {latest} (as TF Serving does)")
            p, found = latest, _detect(latest)
    if found is None:
        raise ModelPathError(
            f"MODEL {str(p)!r} is not a model: pass an hcdtf run directory (with model.keras), an export "
            "directory (e.g. outputs/models/hcd or its version outputs/models/hcd/1 with saved_model.pb), "
            "a .keras, .onnx, OpenVINO .xml or .tflite file" + (f" for --backend {backend}" if backend else "")
        )
    compatible = found == backend or (backend == "keras" and found == "run") or \
        {found, backend} <= set(_OPENVINO)
    if backend is not None and not compatible:
        raise ValueError(f"--backend {backend} does not read {str(p)!r}, which is a {found} model; "
                         "leave --backend out to detect it from the path")
    return found, p


def model_metadata(backend: str, path: pathlib.Path) -> dict:
    """The export's hcdtf_metadata.json for ``path`` ({} for runs and .keras files)."""
    from hcdtf.export import METADATA_ASSET

    folder = path if path.is_dir() else path.parent
    for place in (folder / "assets" / METADATA_ASSET, folder / METADATA_ASSET):
        if backend not in ("keras", "run") and place.is_file():
            return json.loads(place.read_text())
    return {}


def load(model_path, backend: str | None = None, log: Callable[[str], None] = print):
    """A :class:`hcdtf.inference.scoring.Scorer` for the model at ``model_path``."""
    from hcdtf.export.runtimes import require

    kind, p = resolve(model_path, backend, log)
    if kind in ("onnx", *_OPENVINO, "litert"):
        require("openvino" if kind in _OPENVINO else kind, f"a {kind} model ({p})")
    if kind in _OPENVINO:
        return _openvino(p, kind, log)
    return {"run": _run, "saved_model": _saved_model, "keras": _keras, "onnx": _onnx, "litert": _litert}[kind](p)


def _empty_safe(fn):
    """Runtimes differ on a zero-size batch; the answer is always an empty vector."""
    import numpy as np

    return lambda images: np.zeros(0) if len(images) == 0 else fn(images)


def _run(p):
    from hcdtf.inference import loading

    return loading.scorer(p)


def _keras(p):
    import keras

    import hcdtf.models.layers  # noqa: F401  registers our layers for loading
    from hcdtf.inference import scoring

    return scoring.keras_scorer(keras.saving.load_model(str(p), compile=False), f"Keras model {p}")


def _saved_model(p):
    import tensorflow as tf

    from hcdtf.inference import scoring

    loaded = tf.saved_model.load(str(p))
    if "serving_default" not in loaded.signatures:
        raise ModelPathError(f"{p}: the SavedModel has no serving_default signature")
    fn = loaded.signatures["serving_default"]
    # The signature answers an empty batch itself; it needs its object alive (keepalive).
    return scoring.Scorer(lambda x: fn(images=tf.constant(x))["probability"].numpy(), f"SavedModel {p}",
                          "cnn", loaded)


def _file(p: pathlib.Path, kind: str) -> pathlib.Path:
    from hcdtf.export import MODEL_FILES

    return p / MODEL_FILES[kind] if p.is_dir() else p


def _onnx(p):
    import onnxruntime as ort

    from hcdtf.inference import scoring

    session = ort.InferenceSession(str(_file(p, "onnx")), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return scoring.Scorer(_empty_safe(lambda x: session.run(None, {name: x})[0]), f"ONNX model {p} (ONNX Runtime)",
                          "cnn", session)


def openvino_precision(p: pathlib.Path, kind: str = "openvino") -> str:
    """The precision an OpenVINO export is to be computed in: its metadata's ``precision``
    (float32, int8, bfloat16); a bare .xml without metadata is a float32 model."""
    declared = model_metadata(kind, p).get("precision")
    if declared:
        return declared
    return {"openvino-int8": "int8", "openvino-bf16": "bfloat16"}.get(kind, "float32")


def _openvino(p, kind: str = "openvino", log: Callable[[str], None] = print):
    from hcdtf.inference import scoring
    from hcdtf.export.int8 import effective_precision, openvino_compiled

    wanted = openvino_precision(p, kind)
    compiled = openvino_compiled(_file(p, "openvino"), wanted, PERFORMANCE_HINT="LATENCY")
    computes = effective_precision(compiled)
    if wanted == "bfloat16" and computes != "bf16":
        log(f"{p}: a bf16 model, computed in {computes} on this CPU (no AVX-512 BF16 or AMX)")
    request = compiled.create_infer_request()
    return scoring.Scorer(_empty_safe(lambda x: request.infer([x])[0].copy()),
                          f"OpenVINO model {p} ({wanted}, computed in {computes})", "cnn", compiled)


def _litert(p):
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    from hcdtf.inference import scoring

    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    interpreter = Interpreter(model_path=str(_file(p, "litert")), num_threads=threads)
    inp, out = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]
    shape = [None]

    def fn(x):
        if shape[0] != x.shape:  # LiteRT plans memory per input shape
            interpreter.resize_tensor_input(inp, list(x.shape))
            interpreter.allocate_tensors()
            shape[0] = x.shape
        interpreter.set_tensor(inp, np.ascontiguousarray(x))
        interpreter.invoke()
        return interpreter.get_tensor(out).copy()

    return scoring.Scorer(_empty_safe(fn), f"LiteRT model {p}", "cnn", interpreter)
