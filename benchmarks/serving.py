"""Benchmark: the exported SavedModel against the same Keras model in Python, on CPU.

    python benchmarks/serving.py                          # ResNet18, prints JSON
    python benchmarks/serving.py --arch ResNet18 ResNet50 --calls 50 --reps 5

For each architecture (random weights, float32), the classifier is built with
``hcdtf.models.build_classifier`` and written with ``hcdtf.export.write_saved_model`` (the same
code as ``hcdtf export``) to a temporary directory, then loaded back with
``tf.saved_model.load``. Timed on the same random uint8 patches:

* ``saved_model``: the ``serving_default`` signature (what TF Serving runs), uint8 in;
* ``saved_model_encoded``: the ``serving_encoded`` signature on PNG bytes (decoding included);
* ``keras_predict``: ``model.predict(x, verbose=0)``;
* ``keras_call``: ``model(x, training=False)`` (eager, op by op).

Latency is at batch 1: ``--calls`` calls after ``--warmup`` calls, median and p90 in ms.
Throughput is at batch ``--batch``: ``--reps`` timed calls after 2 warm-up calls, images/s as
the median with the min and max. The four variants are timed interleaved (call 1 of each, then
call 2 of each, ...), so that a change of load on a shared machine affects them alike. Each also gives ``cpu_ms_per_call`` / ``images_per_cpu_s`` (this process's
CPU time, all threads), which depends less on the rest of a busy machine than wall time does;
``load`` is the 1-minute load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _cpu_seconds() -> float:
    """CPU time of this process, all threads (user + system)."""
    return time.process_time()


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover
        return None


def _percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def _interleaved(fns: dict, n: int, warmup: int) -> tuple[dict, dict]:
    """Wall seconds of ``n`` timed calls of each function, and CPU seconds per call.

    After ``warmup`` untimed calls each, the calls are interleaved (call 1 of every function,
    then call 2 of every function, ...), so that a change of load on this shared machine hits
    all of them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    cpu = dict.fromkeys(fns, 0.0)
    for _ in range(n):
        for name, fn in fns.items():
            c0, t0 = _cpu_seconds(), time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
            cpu[name] += _cpu_seconds() - c0
    return times, {name: c / n for name, c in cpu.items()}


def _latency(times: list[float], cpu: float) -> dict:
    ms = [t * 1000 for t in times]
    return {
        "median_ms": round(statistics.median(ms), 2),
        "p90_ms": round(_percentile(ms, 0.9), 2),
        "min_ms": round(min(ms), 2),
        "calls": len(ms),
        "cpu_ms_per_call": round(cpu * 1000, 2),
    }


def _throughput(times: list[float], cpu: float, batch: int) -> dict:
    rates = [batch / t for t in times]
    return {
        "images_per_s": round(statistics.median(rates), 1),
        "min": round(min(rates), 1),
        "max": round(max(rates), 1),
        "reps": len(rates),
        "batch": batch,
        "images_per_cpu_s": round(batch / cpu, 1) if cpu > 0 else None,
    }


def bench_arch(arch: str, args, workdir: pathlib.Path) -> dict:
    import numpy as np
    import tensorflow as tf

    from hcdtf import export, models

    model = models.build_classifier(arch, weights=None, transfer="fine_tune")
    path = workdir / arch
    t0 = time.perf_counter()
    export.write_saved_model(model, path, {"arch": arch, "benchmark": True})
    export_s = time.perf_counter() - t0
    loaded = tf.saved_model.load(str(path))
    default = loaded.signatures["serving_default"]
    encoded = loaded.signatures["serving_encoded"]

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (args.batch, 96, 96, 3), dtype=np.uint8)
    pngs = [tf.io.encode_png(p).numpy() for p in x]
    ref = model.predict(x[:8], verbose=0)
    got = default(images=tf.constant(x[:8]))["probability"].numpy()
    max_diff = float(np.max(np.abs(ref - got)))

    def runners(n: int) -> dict:
        xb, pb = x[:n], pngs[:n]
        return {
            "saved_model": lambda: default(images=tf.constant(xb))["probability"].numpy(),
            "saved_model_encoded": lambda: encoded(image_bytes=tf.constant(pb))["probability"].numpy(),
            "keras_predict": lambda: model.predict(xb, verbose=0),
            "keras_call": lambda: model(xb, training=False).numpy(),
        }

    result = {
        "export_s": round(export_s, 1),
        "max_abs_diff_saved_model_vs_predict": max_diff,
        "latency_batch1": {},
        f"throughput_batch{args.batch}": {},
    }
    times, cpu = _interleaved(runners(1), args.calls, args.warmup)
    for name in times:
        result["latency_batch1"][name] = _latency(times[name], cpu[name])
    times, cpu = _interleaved(runners(args.batch), args.reps, 2)
    for name in times:
        result[f"throughput_batch{args.batch}"][name] = _throughput(times[name], cpu[name], args.batch)
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", nargs="+", default=["ResNet18"], help="architectures (default ResNet18)")
    parser.add_argument("--calls", type=int, default=50, help="timed batch-1 calls (default 50)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed batch-1 calls first (default 5)")
    parser.add_argument("--batch", type=int, default=64, help="throughput batch size (default 64)")
    parser.add_argument("--reps", type=int, default=3, help="timed throughput calls (default 3)")
    args = parser.parse_args(argv)
    if args.calls < 1 or args.reps < 1 or args.batch < 1:
        parser.error("--calls, --reps and --batch must be positive")

    import keras
    import tensorflow as tf

    out = {
        "benchmark": "serving",
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cores": _cores(),
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "precision": "float32",
        "weights": "random",
        "input": "uint8 96x96x3 (random pixels)",
        "load_before": _load(),
        "archs": {},
    }
    with tempfile.TemporaryDirectory(prefix="hcdtf-serving-") as tmp:
        for arch in args.arch:
            out["archs"][arch] = bench_arch(arch, args, pathlib.Path(tmp))
    out["load_after"] = _load()
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
