"""Benchmark: what stain normalisation inside the model adds to ResNet-18 inference, per patch.

    python -m benchmarks.stain            # prints JSON, writes benchmarks/results/<machine>.stain.json
    python -m benchmarks.stain --quick    # 2 rounds of fewer calls

Three float32 Keras models with the same random ResNet-18 weights: the classifier alone
(``hcdtf.models.build_classifier``), and the same classifier behind a ``MacenkoNormalization``
or a ``ReinhardNormalization`` layer (``hcdtf.models.stain``; targets fitted to two synthetic
patches). Each is called through one traced ``tf.function`` (inference mode) on the same
synthetic H&E patches, at batch 1 and batch 64, every variant timed in turn within each round
(``benchmarks.common.interleaved``), so load changes hit all of them alike. The figure is the
per-patch time of each normalising model over the plain one, per round (median and spread),
wall clock and per CPU-second; the issue's target is < 1.10 at the throughput batch. The layers
alone are timed too, so the added time can be read directly. TF_ENABLE_ONEDNN_OPTS=1 and
TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1 are set before TensorFlow starts, as for the other inference
figures.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_ONEDNN_ASSUME_FROZEN_WEIGHTS", "1")

from benchmarks import common

METHODS = ("macenko", "reinhard")


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.stain", description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="ResNet18")
    p.add_argument("--reps", type=int, default=5, help="rounds; the median is reported (default 5)")
    p.add_argument("--calls", type=int, default=20, help="batch-1 calls per round (default 20)")
    p.add_argument("--batch", type=int, default=64, help="throughput batch size (default 64)")
    p.add_argument("--batch-calls", type=int, default=3, help="batch calls per round (default 3)")
    p.add_argument("--quick", action="store_true", help="2 rounds of fewer calls")
    p.add_argument("--out", default=None, help="JSON file [default: benchmarks/results/<machine>.stain.json; "
                                               "'-' for none]")
    args = p.parse_args(argv)
    if args.quick:
        args.reps, args.calls, args.batch_calls = 2, 5, 1
    return args


def patches(n: int, seed: int = 0):
    import numpy as np

    from hcdtf.synthetic.patch import generate_patch

    return np.stack([generate_patch(np.random.default_rng(seed + i), i % 2)[0] for i in range(n)])


def models(arch: str, reference):
    """{"plain", "macenko", "reinhard"}: traced inference functions, and the layers alone."""
    import keras
    import tensorflow as tf

    from hcdtf.models import build_classifier, stain

    classifier = build_classifier(arch, weights=None, transfer="fine_tune")
    out, layers = {"plain": classifier}, {}
    for method in METHODS:
        layer = stain.layer_from_target(stain.fit_target(list(reference), method), name=f"stain_{method}")
        inputs = keras.Input((96, 96, 3), dtype="uint8", name="image")
        out[method] = keras.Model(inputs, classifier(layer(inputs)), name=f"{arch.lower()}_{method}")
        layers[f"{method}_layer_only"] = layer

    def traced(fn):
        return tf.function(lambda x: fn(x, training=False), reduce_retracing=True)

    return {name: traced(m) for name, m in {**out, **layers}.items()}


def main(argv=None) -> dict:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    import numpy as np

    mach = common.machine()
    x_all = patches(args.batch + 2, seed=10)
    reference, xb = x_all[:2], x_all[2:]
    x1 = xb[:1]
    fns = models(args.arch, reference)

    def calls(fn, x, n):
        def run():
            for _ in range(n):
                np.asarray(fn(x))
            return n * len(x)
        return run

    variants = {}
    for name, fn in fns.items():
        fn(x1), fn(xb)  # tracing and shape-specific set-up are not timed
        variants[f"{name}/batch1"] = calls(fn, x1, args.calls)
        variants[f"{name}/batch{args.batch}"] = calls(fn, xb, args.batch_calls)
    common.eprint(f"[stain] timing {len(variants)} variants x {args.reps} rounds")
    log = common.LoadLog()
    runs = common.interleaved(variants, args.reps, log)
    results = {name: r.stats() for name, r in runs.items()}
    ratios, added_ms = {}, {}
    for b in ("batch1", f"batch{args.batch}"):
        plain = runs[f"plain/{b}"]
        for method in METHODS:
            # patches/s plain over patches/s normalising = per-patch time ratio
            ratios[f"{method}/{b} time vs plain/{b}"] = common.rate_ratio(plain, runs[f"{method}/{b}"])
            added_ms[f"{method}/{b}"] = round(1000 / results[f"{method}/{b}"]["median"]
                                              - 1000 / results[f"plain/{b}"]["median"], 3)
    b = f"batch{args.batch}"
    targets = {f"{m}_added_time": common.target(ratios[f"{m}/{b} time vs plain/{b}"]["median"], 1.10,
                                                f"{args.arch} + {m} normalisation: time per patch / plain, {b}",
                                                higher_is_better=False) for m in METHODS}
    out = {"benchmark": "stain", "machine": mach, "arch": args.arch, "batch": args.batch,
           "env": {k: os.environ.get(k) for k in ("TF_ENABLE_ONEDNN_OPTS", "TF_ONEDNN_ASSUME_FROZEN_WEIGHTS")},
           "load_avg": log.to_dict(), "results": results, "ratios": ratios,
           "added_ms_per_patch_wall": added_ms, "targets": targets}
    text = json.dumps(out, indent=2)
    print(text)
    if args.out != "-":
        path = pathlib.Path(args.out or pathlib.Path(__file__).parent / "results" / f"{mach['name']}.stain.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
        common.eprint(f"[stain] wrote {path}")
    return out


if __name__ == "__main__":
    main()
