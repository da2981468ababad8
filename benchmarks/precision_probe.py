"""Benchmark: float32 vs mixed_bfloat16 training, measured the way ``--precision auto`` decides.

    python -m benchmarks.precision_probe                         # ResNet50 and ResNet18, batch 32, 5 rounds
    python -m benchmarks.precision_probe --arch ResNet50 --steps 9

Runs :func:`hcdtf.precision.probe` (the code behind ``--precision auto``): random weights and
patches, Adam and binary cross-entropy, one warm-up step per policy, then ``--steps`` rounds that
alternate float32 and mixed_bfloat16 steps, so load changes hit both alike. Prints JSON with the
CPU (model, family/model/stepping, features, kind), the load average before and after, and per
architecture the median CPU-seconds and wall seconds per image and their ratios (> 1: bfloat16
faster). On CPUs without native bfloat16 the ratios are far below 1 (emulation): there ``auto``
never runs the probe.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.precision_probe", description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", nargs="+", default=["ResNet50", "ResNet18"])
    p.add_argument("--batch", type=int, default=32, help="batch size (the probe caps it at 32)")
    p.add_argument("--steps", type=int, default=5, help="interleaved rounds; medians are reported")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    import hcdtf  # noqa: F401  (oneDNN on before TensorFlow starts)
    from hcdtf import precision

    out = {"benchmark": "precision_probe", "cpu": precision.cpu_features(), "cpu_kind": precision.cpu_kind(),
           "load_before": [round(x, 2) for x in os.getloadavg()], "archs": {}}
    for arch in args.arch:
        t = time.time()
        figures = precision.probe(arch, args.batch, steps=args.steps)
        figures["seconds"] = round(time.time() - t, 1)
        figures["auto_would_pick"] = precision.choose(figures)
        out["archs"][arch] = figures
        print(f"{arch}: {figures}", file=sys.stderr, flush=True)
    out["load_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
