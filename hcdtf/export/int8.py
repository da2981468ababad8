"""int8 post-training quantisation (OpenVINO IR + NNCF) and the accuracy guard that may refuse it.

OpenVINO's CPU plugin runs int8 convolutions on AVX2 (and VNNI/AMX where present), which is where
the speed-up on x86 CPUs is; Keras' own ``quantize`` does not cover convolutions. NNCF's
post-training quantisation sees a few hundred calibration patches (from the run's validation
split) to choose the activation ranges.

The guard scores the test split with the float32 and the int8 model and refuses the int8 model
(:class:`Int8Refused`, nothing written) when its AUC is lower by more than ``margin`` or the paired
DeLong test (``hcdtf.metrics.delong_test``) finds it worse at the 5% level. The figures go into
the int8 model's metadata.
"""

from __future__ import annotations

import contextlib
import io
import logging
import pathlib
from typing import Callable, Iterable

import numpy as np

DEFAULT_MARGIN = 0.002
DEFAULT_CALIBRATION_SIZE = 300
DELONG_ALPHA = 0.05


class Int8Refused(ValueError):
    """The int8 model failed the accuracy guard; ``figures`` says by how much."""

    def __init__(self, message: str, figures: dict):
        super().__init__(message)
        self.figures = figures


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


def _openvino_scorer(xml: pathlib.Path) -> Callable[[np.ndarray], np.ndarray]:
    import openvino as ov

    compiled = ov.Core().compile_model(str(xml), "CPU")
    return lambda images: np.asarray(compiled(images)[0], np.float64).reshape(-1)


def score_both(fp32_xml, int8_xml, test_batches: Iterable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, float32 scores, int8 scores) over ``test_batches`` of (uint8 images, labels)."""

    fp32, int8 = _openvino_scorer(fp32_xml), _openvino_scorer(int8_xml)
    labels, a, b = [], [], []
    for images, y in test_batches:
        labels.append(np.asarray(y).reshape(-1))
        a.append(fp32(images))
        b.append(int8(images))
    if not labels:
        raise ValueError("the int8 accuracy guard needs a test split with examples; it is empty")
    return np.concatenate(labels), np.concatenate(a), np.concatenate(b)


def guard(labels: np.ndarray, fp32: np.ndarray, int8: np.ndarray, margin: float = DEFAULT_MARGIN) -> dict:
    """The guard's figures; raises :class:`Int8Refused` when the int8 model is not good enough."""

    from hcdtf import metrics

    labels = np.asarray(labels).astype(int)
    if len(set(labels.tolist())) < 2:
        raise ValueError("the int8 accuracy guard needs both classes in the test split (its AUC is undefined)")
    test = metrics.delong_test(labels, fp32, int8, alpha=DELONG_ALPHA)
    figures = {
        "auc_float32": test["auc_a"], "auc_int8": test["auc_b"], "auc_drop": test["diff"],
        "margin": margin, "delong_z": test["z"], "delong_p": test["p_value"], "alpha": DELONG_ALPHA,
        "n_test": int(len(labels)), "n_positive": int(labels.sum()),
        "max_abs_probability_difference": float(np.max(np.abs(fp32 - int8))),
    }
    worse = test["diff"] > 0 and test["p_value"] < DELONG_ALPHA
    if test["diff"] > margin or worse:
        why = (f"its AUC is {test['diff']:.4f} lower (float32 {test['auc_a']:.4f}, int8 {test['auc_b']:.4f}; "
               f"allowed: {margin})" if test["diff"] > margin else
               f"the paired DeLong test finds it worse (p = {test['p_value']:.3g} < {DELONG_ALPHA})")
        raise Int8Refused(f"int8 model refused by the accuracy guard on {len(labels)} test patches: {why}; "
                          "nothing was written. Calibrate on more patches (--calibration-size) or export "
                          "float32 only", figures)
    return figures
