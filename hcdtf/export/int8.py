"""Reduced-precision variants of the OpenVINO model, and the accuracy guard that may refuse them.

* ``int8``: post-training quantisation by NNCF. OpenVINO's CPU plugin runs int8 convolutions on
  AVX2 (and VNNI/AMX where present), which is where the speed-up on x86 CPUs is; Keras' own
  ``quantize`` does not cover convolutions. NNCF sees a few hundred calibration patches (from the
  run's validation split) to choose the activation ranges. The layers left in floating point are
  computed in float32 (``INFERENCE_PRECISION_HINT=f32``), on every CPU.
* ``bf16``: the float32 IR computed in bfloat16 (``INFERENCE_PRECISION_HINT=bf16``), which pays
  only on CPUs with native BF16 (AVX-512 BF16 or AMX). Elsewhere OpenVINO would compute it in
  float32, so its accuracy could not be measured: the export refuses it there.

The guard scores the test split with the float32 model (computed in float32, whatever the CPU)
and the variant, and refuses the variant (:class:`PrecisionRefused`, nothing written) when its AUC
is lower by more than ``margin`` or the paired DeLong test (``hcdtf.evaluation.metrics.delong_test``) finds it
worse at the 5% level. The figures, and both models' speed on this CPU measured on the same
batches, go into the variant's metadata.
"""

from __future__ import annotations

import contextlib
import io
import logging
import pathlib
import shutil
import time
from typing import Callable, Iterable

import numpy as np

DEFAULT_MARGIN = 0.002
DEFAULT_CALIBRATION_SIZE = 300
DELONG_ALPHA = 0.05


# The variants: their precision (as the metadata names it) and the OpenVINO artifact kind.
VARIANTS = {"int8": ("int8", "openvino-int8"), "bf16": ("bfloat16", "openvino-bf16")}


class PrecisionRefused(ValueError):
    """A reduced-precision model failed the accuracy guard; ``figures`` says by how much."""

    def __init__(self, message: str, figures: dict):
        super().__init__(message)
        self.figures = figures


Int8Refused = PrecisionRefused  # the name of hcdtf <= 0.2


class NoNativeBF16(ValueError):
    """``--quantize bf16`` on a CPU that would compute it in float32."""


def quantize(fp32_xml: pathlib.Path, calibration: np.ndarray, out_dir: pathlib.Path) -> pathlib.Path:
    """NNCF post-training int8 quantisation of the OpenVINO model at ``fp32_xml``."""
    import nncf
    import openvino as ov

    if len(calibration) == 0:
        raise ValueError("int8 calibration needs at least one patch; the validation split is empty")
    nncf.set_log_level(logging.ERROR)
    model = ov.Core().read_model(str(fp32_xml))
    # One patch per item: NNCF's subset_size counts items, whatever their batch size.
    items = nncf.Dataset([calibration[i:i + 1] for i in range(len(calibration))])
    # NNCF draws progress bars on stdout, which is the CLI's and the benchmarks' JSON channel.
    with contextlib.redirect_stdout(io.StringIO()):
        quantized = nncf.quantize(model, items, subset_size=len(calibration),
                                  preset=nncf.QuantizationPreset.PERFORMANCE)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model.xml"
    ov.save_model(quantized, str(path), compress_to_fp16=False)
    return path


def require_native_bf16() -> None:
    """Refuses ``--quantize bf16`` early (before the slow part) on a CPU without native bfloat16."""
    from hcdtf import precision

    if not precision.cpu_features()["native_bf16"]:
        raise NoNativeBF16(
            f"--quantize bf16 needs a CPU with native bfloat16 (AVX-512 BF16 or AMX) to compute and measure it; "
            f"this one ({precision.cpu_features()['cpu_model']}) has none, and OpenVINO would compute the model "
            "in float32 here. Export it on such a CPU, or leave --quantize bf16 out")


def bf16_copy(fp32_xml: pathlib.Path, out_dir: pathlib.Path) -> pathlib.Path:
    """The bf16 variant's files: the float32 IR itself (bfloat16 is a compile-time setting, which
    its metadata and every hcdtf loader carry). Whether this CPU really computes it in bfloat16 is
    checked where the guard compiles it (:func:`score_both`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for suffix in (".xml", ".bin"):
        shutil.copyfile(fp32_xml.with_suffix(suffix), out_dir / f"model{suffix}")
    return out_dir / "model.xml"


def openvino_compiled(xml: pathlib.Path, precision: str, **extra):
    """``xml`` compiled for the CPU in ``precision`` (float32, int8 or bfloat16): the precision is
    always set explicitly, since OpenVINO's default on BF16 CPUs is bfloat16."""
    import openvino as ov

    from hcdtf.precision import openvino_config

    return ov.Core().compile_model(str(xml), "CPU", openvino_config(precision, **extra))


def effective_precision(compiled) -> str:
    """What a compiled OpenVINO model really computes in (f32, bf16): its precision hint after
    the CPU plugin has applied what this CPU supports."""
    value = compiled.get_property("INFERENCE_PRECISION_HINT")
    return value.get_type_name() if hasattr(value, "get_type_name") else str(value)


def _openvino_scorer(xml: pathlib.Path, precision: str) -> Callable[[np.ndarray], np.ndarray]:
    compiled = openvino_compiled(xml, precision)
    effective = effective_precision(compiled)
    if precision == "bfloat16" and effective != "bf16":
        from hcdtf import precision as precision_lib

        raise NoNativeBF16(
            f"--quantize bf16: OpenVINO computes in {effective}, not bfloat16, on this CPU "
            f"({precision_lib.cpu_features()['cpu_model']}: no AVX-512 BF16 or AMX), so the bf16 model's accuracy "
            "cannot be measured here; export it on a CPU with native bfloat16, or leave --quantize bf16 out")
    return lambda images: np.asarray(compiled(images)[0], np.float64).reshape(-1)


def score_both(fp32_xml, reduced_xml, test_batches: Iterable, variant: str = "int8",
               speed: dict | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, float32 scores, ``variant`` scores) over ``test_batches`` of (uint8 images, labels).
    Given ``speed`` (a dict), fills it with both models' images per second on these batches
    (the same batches in turn, after one warm-up call each)."""
    fp32, reduced = _openvino_scorer(fp32_xml, "float32"), _openvino_scorer(reduced_xml, VARIANTS[variant][0])
    labels, a, b = [], [], []
    seconds, n = [0.0, 0.0], 0
    for images, y in test_batches:
        if not labels:  # the first call of each plans its memory: not timed
            fp32(images[:1]), reduced(images[:1])
        labels.append(np.asarray(y).reshape(-1))
        for i, (fn, out) in enumerate(((fp32, a), (reduced, b))):
            t = time.perf_counter()
            out.append(fn(images))
            seconds[i] += time.perf_counter() - t
        n += len(images)
    if not labels:
        raise ValueError(f"the {variant} accuracy guard needs a test split with examples; it is empty")
    if speed is not None and all(seconds):
        from hcdtf import precision

        speed.update({"float32_images_per_s": round(n / seconds[0], 2),
                      f"{variant}_images_per_s": round(n / seconds[1], 2),
                      f"{variant}_vs_float32": round(seconds[0] / seconds[1], 3), "n_images": n,
                      "cpu_model": precision.cpu_features()["cpu_model"], "cpu_kind": precision.cpu_kind()})
    return np.concatenate(labels), np.concatenate(a), np.concatenate(b)


def guard(labels: np.ndarray, fp32: np.ndarray, reduced: np.ndarray, margin: float = DEFAULT_MARGIN,
          variant: str = "int8") -> dict:
    """The guard's figures; raises :class:`PrecisionRefused` when the ``variant`` model is not good enough."""

    from hcdtf.evaluation import metrics

    labels = np.asarray(labels).astype(int)
    if len(set(labels.tolist())) < 2:
        raise ValueError(f"the {variant} accuracy guard needs both classes in the test split (its AUC is undefined)")
    test = metrics.delong_test(labels, fp32, reduced, alpha=DELONG_ALPHA)
    figures = {
        "auc_float32": test["auc_a"], f"auc_{variant}": test["auc_b"], "auc_drop": test["diff"],
        "margin": margin, "delong_z": test["z"], "delong_p": test["p_value"], "alpha": DELONG_ALPHA,
        "n_test": int(len(labels)), "n_positive": int(labels.sum()),
        "max_abs_probability_difference": float(np.max(np.abs(fp32 - reduced))),
    }
    worse = test["diff"] > 0 and test["p_value"] < DELONG_ALPHA
    if test["diff"] > margin or worse:
        why = (f"its AUC is {test['diff']:.4f} lower (float32 {test['auc_a']:.4f}, {variant} {test['auc_b']:.4f}; "
               f"allowed: {margin})" if test["diff"] > margin else
               f"the paired DeLong test finds it worse (p = {test['p_value']:.3g} < {DELONG_ALPHA})")
        hint = ("Calibrate on more patches (--calibration-size) or export float32 only" if variant == "int8"
                else "Export float32 only")
        raise PrecisionRefused(f"{variant} model refused by the accuracy guard on {len(labels)} test patches: {why}; "
                               f"nothing was written. {hint}", figures)
    return figures
