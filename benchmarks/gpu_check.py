"""GPU check: a few minutes on one GPU that say whether hcdtf trains, exports and serves there.

    python -m benchmarks.gpu_check                      # on a GPU machine (make gpu-check)
    python -m benchmarks.gpu_check --tiny               # seconds on a CPU: proves the script works

1. Training: ResNet-50 (random weights, batch ``--batch``) for ``--steps`` steps under float32 and
   mixed_float16, each with the fused BatchNorm (hcdtf's default) and with Keras' own
   BatchNormalization: images/s over the timed steps (after ``--warmup`` untimed ones) and
   whether every loss was finite. The policy is set before each model is built.
2. Export: the hcdtf classifier (float32) written by ``hcdtf.export.write_saved_model``.
3. Serving: the SavedModel's ``serving_default`` timed at each of ``--serve-batches``.

Prints one JSON object. ``--tiny`` shrinks everything (ResNet18, batch 2, 3 steps, serving at batch
1/4) so a CPU run finishes in about a minute; its numbers mean nothing. ``--arch``, ``--batch`` and
``--steps`` given on the command line win over ``--tiny``'s.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import platform
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

VARIANTS = ("float32/fused_bn", "float32/keras_bn", "mixed_float16/fused_bn", "mixed_float16/keras_bn")


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default=None, help="architecture to train and serve (default ResNet50; ResNet18 with --tiny)")
    p.add_argument("--batch", type=int, default=None, help="training batch size (default 128; 2 with --tiny)")
    p.add_argument("--steps", type=int, default=None,
                   help="timed training steps per variant (default 200; 3 with --tiny)")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first (tracing, autotuning)")
    p.add_argument("--serve-batches", default="1,64,256", help="SavedModel batch sizes to time")
    p.add_argument("--serve-calls", type=int, default=50, help="timed calls per serving batch size")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help=f"training variants, comma-separated (default all: {','.join(VARIANTS)})")
    p.add_argument("--tiny", action="store_true",
                   help="ResNet18, batch 2, 3 steps, 32x32 training inputs, serving at 1 and 4 (a CPU smoke run)")
    args = p.parse_args(argv)
    if args.tiny:
        args.warmup, args.serve_batches, args.serve_calls = 1, "1,4", 3
    # --arch, --batch and --steps, where given, win over --tiny's (its 3 steps used to override a
    # test's 2; on a CPU each mixed_float16 step is seconds: float16 convolutions are emulated)
    if args.arch is None:
        args.arch = "ResNet18" if args.tiny else "ResNet50"
    if args.batch is None:
        args.batch = 2 if args.tiny else 128
    if args.steps is None:
        args.steps = 3 if args.tiny else 200
    # Training inputs' side: 96 (the patches') on a GPU; 32 in a CPU smoke run, where float16
    # convolutions are emulated (mixed_float16 ResNet-18 at 96x96 took ~140 s for 3 steps of 4).
    args.size = 32 if args.tiny else 96
    args.serve_batches = [int(b) for b in args.serve_batches.split(",")]
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        p.error(f"unknown --variants {', '.join(sorted(unknown))}; valid: {', '.join(VARIANTS)}")
    return args


def train_variant(arch: str, policy: str, fused: bool, args) -> dict:
    """The frameworks figure's network (``benchmarks.training._keras_net``: the ResNet base,
    pooling, dropout, a float32 sigmoid unit) under ``policy``, Adam, one in-memory batch."""
    import keras
    import numpy as np

    from benchmarks.training import _keras_net

    keras.mixed_precision.set_global_policy(policy)
    try:
        model = _keras_net(arch, "channels_last", fused_bn=fused, size=args.size)
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="binary_crossentropy", jit_compile=False)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (args.batch, args.size, args.size, 3)).astype(np.float32)
    y = (rng.random(args.batch) < 0.4).astype(np.float32)
    losses = [float(model.train_on_batch(x, y)) for _ in range(args.warmup)]
    t0 = time.perf_counter()
    losses += [float(model.train_on_batch(x, y)) for _ in range(args.steps)]
    seconds = time.perf_counter() - t0
    return {"images_per_s": round(args.steps * args.batch / seconds, 1), "seconds": round(seconds, 2),
            "loss_first": losses[0], "loss_last": losses[-1],
            "losses_finite": all(math.isfinite(v) for v in losses)}


def time_serving(path: pathlib.Path, batches, calls: int) -> dict:
    import numpy as np
    import tensorflow as tf

    fn = tf.saved_model.load(str(path)).signatures["serving_default"]
    out = {}
    for b in batches:
        x = tf.constant(np.random.default_rng(b).integers(0, 256, (b, 96, 96, 3), dtype=np.uint8))
        for _ in range(3):
            fn(images=x)["probability"].numpy()
        t = []
        for _ in range(calls):
            t0 = time.perf_counter()
            fn(images=x)["probability"].numpy()
            t.append(time.perf_counter() - t0)
        median = sorted(t)[len(t) // 2]
        out[f"batch{b}"] = {"median_ms": round(median * 1000, 2), "images_per_s": round(b / median, 1)}
    return out


def main(argv=None) -> dict:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    import hcdtf  # noqa: F401  (oneDNN preference before TensorFlow starts)
    import tensorflow as tf

    from hcdtf import export, models

    gpus = tf.config.list_physical_devices("GPU")
    result = {"benchmark": "gpu_check", "tiny": args.tiny, "arch": args.arch, "batch": args.batch, "image_size": args.size,
              "steps": args.steps, "tensorflow": tf.__version__, "python": platform.python_version(),
              "gpus": [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus],
              "training": {}}
    for variant in args.variants:
        policy, bn = variant.split("/")
        result["training"][variant] = train_variant(args.arch, policy, bn == "fused_bn", args)
    rates = {v: r["images_per_s"] for v, r in result["training"].items()}
    for bn in ("fused_bn", "keras_bn"):
        if f"float32/{bn}" in rates and f"mixed_float16/{bn}" in rates:
            result[f"mixed_float16_vs_float32/{bn}"] = round(rates[f"mixed_float16/{bn}"] / rates[f"float32/{bn}"], 3)
    with tempfile.TemporaryDirectory(prefix="hcdtf-gpu-check-") as tmp:
        path = pathlib.Path(tmp) / "1"
        model = models.build_classifier(args.arch, weights=None, transfer="fine_tune")
        t0 = time.perf_counter()
        export.write_saved_model(model, path, {"arch": args.arch, "gpu_check": True})
        result["export_s"] = round(time.perf_counter() - t0, 1)
        result["serving"] = time_serving(path, args.serve_batches, args.serve_calls)
    result["ok"] = all(v["losses_finite"] for v in result["training"].values())
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
