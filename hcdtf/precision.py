"""Precision, explicit on every CPU: what this CPU computes fast in, which precision a training run
gets for ``auto``, and which setting each inference runtime needs to compute what we promise.

Why this exists: on CPUs with native bfloat16 (AVX-512 BF16 or AMX: most current x86 servers)
runtimes may lower float32 by themselves. OpenVINO's CPU plugin does: a float32 IR is computed in
bfloat16 there unless ``INFERENCE_PRECISION_HINT`` says ``f32`` at compile time (probabilities
off by up to 8e-3 on real patches), and the IR file cannot carry that setting (its rt_info
``runtime_options`` are ignored by the CPU plugin, checked with OpenVINO 2026.4.1). TensorFlow
(oneDNN, fpmath mode strict unless ``TF_SET_ONEDNN_FPMATH_MODE`` is set), ONNX Runtime's CPU
provider and LiteRT's XNNPACK delegate keep float32 by default on such CPUs (measured: see
``RUNTIME_DEFAULTS``). So every hcdtf loader sets the precision itself, and each export's
``hcdtf_metadata.json`` says what a plain loader must pass.

Training goes the other way: there bfloat16 pays on such CPUs (Keras ResNet-50 trains 1.4-1.5x
faster per CPU-second in ``mixed_bfloat16``: AMD EPYC with AVX-512 BF16, Intel Xeon with AMX), so ``--precision auto`` measures it with a short probe
(:func:`probe`) and picks the faster one; on CPUs without native BF16 it is float32 (half
precision is emulated there, 0.08-0.24x), on GPUs mixed_float16.
"""

from __future__ import annotations

import functools
import os
import pathlib
import platform
import statistics
import time
from typing import Callable

# Keras dtype policies a run may ask for; "auto" is resolved by `resolve_training`.
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")

# The CPU features that decide precision speed, as /proc/cpuinfo names them.
FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8",
            "amx_tile", "avx512_fp16", "f16c")

# What the exported precisions are, and the OpenVINO CPU plugin's INFERENCE_PRECISION_HINT for
# each: float32 models and the float parts of int8 models are computed in f32, the bf16 variant in
# bf16 (the IR is the same float32 file; the hint makes it bf16).
OPENVINO_HINTS = {"float32": "f32", "int8": "f32", "bfloat16": "bf16"}

# What each runtime does with a float32 model by default on a CPU with native BF16 (AMX,
# AVX-512 BF16), measured with hcdtf's ResNet-18 (random weights, 16 random patches; largest
# probability difference from Keras float32) on a 2-core Intel Xeon, family 6 model 207 (Emerald
# Rapids: AMX, AVX-512 BF16), OpenVINO 2026.4.1, ONNX Runtime 1.32, LiteRT 2.3.
RUNTIME_DEFAULTS = {
    "saved_model": "float32 (TensorFlow's oneDNN kernels keep float32 unless TF_SET_ONEDNN_FPMATH_MODE=BF16 "
                   "is set; TF Serving is the same runtime): nothing to set",
    "onnx": "float32 (ONNX Runtime's CPU execution provider; 8.9e-8 from Keras): nothing to set",
    "litert": "float32 (LiteRT with XNNPACK; 1.5e-7 from Keras): nothing to set",
    "openvino": "bfloat16 on CPUs with AVX-512 BF16 or AMX (7.7e-4 from Keras on random weights, up to "
                "8.1e-3 on real patches), float32 elsewhere: pass INFERENCE_PRECISION_HINT=f32 (1.2e-7)",
}


@functools.lru_cache(maxsize=None)
def cpuinfo() -> dict:
    """The first processor's fields in /proc/cpuinfo (``model name``, ``flags``, ``cpu MHz``, ...)
    as stripped strings; {} where there is no such file. The one parser of it (benchmarks use it too)."""
    info: dict = {}
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for line in text.splitlines():
        if ":" in line:
            key, value = (s.strip() for s in line.split(":", 1))
            info.setdefault(key, value)
    return info


@functools.lru_cache(maxsize=None)
def cpu_features() -> dict:
    """The CPU's model name and the precision-relevant vector features (from /proc/cpuinfo;
    empty features elsewhere). ``native_bf16``: bfloat16 arithmetic in hardware."""
    info = cpuinfo()
    flags = set(info.get("flags", "").split())
    ids = {k: info[k] for k in ("cpu family", "model", "stepping") if k in info}
    present = [f for f in FEATURES if f in flags]
    return {
        "cpu_model": info.get("model name") or platform.processor() or platform.machine() or "unknown cpu",
        # family/model/stepping name the part where a hypervisor masks the model name
        # ("Intel(R) Xeon(R) Processor" under KVM): family 6 model 143 is Sapphire Rapids, 207 Emerald Rapids
        "cpu_id": "/".join(ids.get(k, "?") for k in ("cpu family", "model", "stepping")),
        "features": present,
        "native_bf16": "avx512_bf16" in flags or "amx_bf16" in flags,
        "amx": "amx_tile" in flags,
        "vnni": "avx512_vnni" in flags or "avx_vnni" in flags,
        "avx512": "avx512f" in flags,
        "avx2": "avx2" in flags,
    }


def cpu_kind() -> str:
    """A short name of the CPU kind that decides precision speed: ``amx``, ``avx512-bf16``,
    ``avx512``, ``avx2`` or ``other``."""
    f = cpu_features()
    if f["amx"] and f["native_bf16"]:
        return "amx"
    if f["native_bf16"]:
        return "avx512-bf16"
    return "avx512" if f["avx512"] else "avx2" if f["avx2"] else "other"


def openvino_config(precision: str, **extra) -> dict:
    """OpenVINO compile properties for a model exported as ``precision`` (float32, int8, bfloat16)."""
    if precision not in OPENVINO_HINTS:
        raise ValueError(f"unknown export precision {precision!r}; valid: {', '.join(OPENVINO_HINTS)}")
    return {"INFERENCE_PRECISION_HINT": OPENVINO_HINTS[precision], **extra}


def runtime_settings(kind: str, precision: str) -> dict:
    """What a plain loader of an exported ``kind`` must set to compute in ``precision``: written
    into each export's metadata (``runtime_settings``), since not every file format carries it."""
    if kind.startswith("openvino"):
        hint = OPENVINO_HINTS[precision]
        return {"openvino_compile_config": {"INFERENCE_PRECISION_HINT": hint},
                "why": f"OpenVINO's CPU plugin computes float32 models in bfloat16 by default on CPUs with "
                       f"AVX-512 BF16 or AMX, and the IR file cannot carry the setting: pass "
                       f"{{'INFERENCE_PRECISION_HINT': '{hint}'}} to compile_model (C++: "
                       f"ov::hint::inference_precision(ov::element::{hint}); OpenVINO Model Server: "
                       f"\"plugin_config\": {{\"INFERENCE_PRECISION_HINT\": \"{hint}\"}})"}
    return {"default": RUNTIME_DEFAULTS.get(kind, "float32: nothing to set")}


# --------------------------------------------------------------------------- training
def has_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def probe(arch: str, batch_size: int, steps: int = 3, log: Callable[[str], None] = print) -> dict:
    """Times training steps of ``arch`` (random weights, random 96x96 patches, Adam and binary
    cross-entropy as ``hcdtf train`` compiles them) in float32 and mixed_bfloat16, interleaved
    (one warm-up step each, then ``steps`` rounds alternating), and returns the figures: median
    CPU-seconds and wall seconds per image for each, and their ratios (> 1: bfloat16 faster).

    The global dtype policy is restored and the Keras session cleared afterwards, so that layer
    names (which the resume state checks) do not depend on whether a probe ran."""
    import keras
    import numpy as np

    from hcdtf import models

    batch = max(1, min(int(batch_size), 32))
    x = np.random.default_rng(0).integers(0, 256, (batch, 96, 96, 3), dtype=np.uint8)
    y = (np.arange(batch) % 2).astype(np.float32).reshape(-1, 1)
    previous = keras.mixed_precision.global_policy()
    built = {}
    try:
        for policy in ("float32", "mixed_bfloat16"):
            keras.mixed_precision.set_global_policy(policy)
            model = models.build_classifier(arch, weights=None)
            model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="binary_crossentropy", jit_compile=False)
            model.train_on_batch(x, y)  # traces the step
            built[policy] = model
        times = {p: {"cpu": [], "wall": []} for p in built}
        for _ in range(max(1, steps)):
            for policy, model in built.items():
                c, w = time.process_time(), time.perf_counter()
                model.train_on_batch(x, y)
                times[policy]["cpu"].append((time.process_time() - c) / batch)
                times[policy]["wall"].append((time.perf_counter() - w) / batch)
    finally:
        keras.mixed_precision.set_global_policy(previous)
        built.clear()
        keras.backend.clear_session()
    med = {p: {k: statistics.median(v) for k, v in t.items()} for p, t in times.items()}
    return {
        "arch": arch, "batch_size": batch, "steps": max(1, steps),
        "float32_cpu_s_per_image": round(med["float32"]["cpu"], 6),
        "bfloat16_cpu_s_per_image": round(med["mixed_bfloat16"]["cpu"], 6),
        "bfloat16_vs_float32_per_cpu_s": round(med["float32"]["cpu"] / med["mixed_bfloat16"]["cpu"], 3),
        "bfloat16_vs_float32_wall": round(med["float32"]["wall"] / med["mixed_bfloat16"]["wall"], 3),
    }


# bfloat16 must be at least this much faster per CPU-second to be picked: below it, float32's
# exactness is worth more than the speed (and the probe's noise is a few percent).
BF16_MIN_SPEEDUP = 1.1


def choose(figures: dict) -> str:
    """The training precision the probe's figures call for (pure: table-tested)."""
    return "mixed_bfloat16" if figures["bfloat16_vs_float32_per_cpu_s"] >= BF16_MIN_SPEEDUP else "float32"


def resolve_training(precision: str, arch: str, batch_size: int, distribution: str = "one",
                     log: Callable[[str], None] = print) -> tuple[str, dict]:
    """(Keras policy, figures) for ``train.precision``. Explicit values are kept. ``auto``:
    mixed_float16 on a GPU; on a CPU with native BF16, the probe decides (``HCDTF_PRECISION_PROBE=0``
    skips it and keeps float32); float32 on other CPUs, for multi-worker runs (every worker must
    choose the same, and probes could disagree) and for pathology encoders (the probe builds the
    registry's full-size model, a ViT-g for some: far too slow to time on a CPU)."""
    if precision != "auto":
        return precision, {"rule": "explicit"}
    if has_gpu():
        return "mixed_float16", {"rule": "gpu"}
    f = cpu_features()
    base = {"cpu_model": f["cpu_model"], "cpu_kind": cpu_kind()}
    if not f["native_bf16"]:
        return "float32", {**base, "rule": "cpu without native bfloat16"}
    if distribution == "multiworker" or _multiworker_cluster():
        return "float32", {**base, "rule": "multi-worker: no probe"}
    if os.environ.get("HCDTF_PRECISION_PROBE", "1") == "0":
        return "float32", {**base, "rule": "probe off (HCDTF_PRECISION_PROBE=0)"}
    from hcdtf.models.registry import is_encoder

    if is_encoder(arch):  # the probe would build two registry-size ViTs (up to ViT-g) on the CPU
        return "float32", {**base, "rule": "no probe for pathology encoders (--precision mixed_bfloat16 to use bfloat16)"}
    figures = probe(arch, batch_size, log=log)
    return choose(figures), {**base, "rule": f"probe (bfloat16 if >= {BF16_MIN_SPEEDUP}x per CPU-second)",
                             **figures}


def _multiworker_cluster() -> bool:
    import json

    try:
        cluster = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}").get("cluster", {})
    except ValueError:
        return False
    return len(cluster.get("worker", [])) > 1


def describe(policy: str, figures: dict) -> str:
    """One log line: the choice and why."""
    again = "; as chosen at the run's start" if figures.get("reused_on_resume") else ""
    if "bfloat16_vs_float32_per_cpu_s" in figures:
        return (f"precision: {policy} (auto: probe on {figures['cpu_model']}: mixed_bfloat16 "
                f"{figures['bfloat16_vs_float32_per_cpu_s']}x float32 per CPU-second, "
                f"{figures['bfloat16_vs_float32_wall']}x wall; bfloat16 if >= {BF16_MIN_SPEEDUP}x{again})")
    return f"precision: {policy} ({figures.get('rule', '')}{again})"
