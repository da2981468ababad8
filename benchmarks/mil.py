"""Benchmark: slide embeddings (`hcdtf slide embed`) and attention-MIL training memory (issue 24).

    python -m benchmarks.mil                  # ResNet18 encoder on a demo-size slide x3; bags to 100k patches
    python -m benchmarks.mil --quick          # a smaller slide, 2 rounds

* ``embed_throughput``: ``embed_slide`` end to end (tissue mask, tile reading in threads, batches,
  encoder, HDF5 bag) against the same encoder on the same patches already in memory, in the same
  batches, interleaved, ``--reps`` rounds; the ratio of patches/s per round (goal: >= 0.8).
* ``mil_memory``: for each bag size (1k to 100k patches of ``--dim`` features), a fresh process
  builds the MIL model, runs ``--steps`` training steps on one bag (the ``tf.function`` of
  ``hcdtf mil train``, traced once for ``[None, d]``) and reports its peak RSS (VmHWM), the RSS
  before the bag existed, and the bag's own bytes. Goal: the peak above the bag's own size stays
  flat. Whole bags: what grows is the bag and activations linear in it (nothing quadratic, no
  padding); with ``--max-instances`` (as ``mil train --max-instances``), only the bag itself.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

from benchmarks import common

BAG_SIZES = (1000, 10000, 30000, 100000)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.mil", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a 4,096 x 3,072 px slide and 2 rounds")
    p.add_argument("--arch", default="ResNet18")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--reps", type=int, help="throughput rounds (default 3; 2 with --quick)")
    p.add_argument("--dim", type=int, default=512, help="features per patch in the memory figure")
    p.add_argument("--steps", type=int, default=5, help="training steps per bag size")
    p.add_argument("--sizes", default=",".join(map(str, BAG_SIZES)), help="bag sizes, comma-separated")
    p.add_argument("--skip-embed", action="store_true")
    p.add_argument("--workdir", help="keep the generated slide here (default: a temp dir)")
    p.add_argument("--max-instances", type=int, default=8192,
                   help="also measure training on at most this many patches per step (`mil train --max-instances`)")
    p.add_argument("--worker", nargs=4, type=int, metavar=("N", "DIM", "STEPS", "LIMIT"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def embed_throughput(root: pathlib.Path, arch: str, level0: tuple[int, int], reps: int, batch_size: int) -> dict:
    import shutil

    import numpy as np

    from hcdtf.slide import embed, inference, synthetic

    slide = root / "demo.svs"
    if not slide.is_file():
        w, h = (-(-s // (4 * synthetic.PATCH)) * synthetic.PATCH for s in level0)
        synthetic.write_slide(slide, synthetic.plan_slides(1, seed=0, size=(w, h))[0], None)
    encoder = embed.load_encoder(arch, weights="none", log=lambda *_: None)
    settings = inference.Settings(batch_size=batch_size)
    layout = inference._layout(slide, encoder, settings)
    with layout.slide:
        ci, cj = layout.grid.order(layout.scored)
        patches = np.concatenate(list(inference.patch_batches(layout.slide, layout.plan, layout.grid, ci, cj, 0,
                                                              batch_size)))
    n = len(patches)
    encoder.embed(patches[:batch_size])  # warm-up: trace and oneDNN weight layout
    out = root / "bags"

    def end_to_end():
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        status, attrs = embed.embed_slide(slide, out, encoder, settings, log=lambda *_: None)
        assert status == "done"
        return attrs["n_patches"]

    def in_memory():
        for k in range(0, n, batch_size):
            batch = patches[k:k + batch_size]
            if len(batch) < batch_size:
                batch = np.concatenate([batch, np.zeros((batch_size - len(batch),) + batch.shape[1:], np.uint8)])
            encoder.embed(batch)
        return n

    load = common.LoadLog()
    runs = common.interleaved({"end_to_end": end_to_end, "in_memory": in_memory}, reps, load)
    return {"arch": arch, "weights": "random", "dim": encoder.dim, "level0_size": list(level0),
            "patches_per_slide": n, "batch_size": batch_size,
            "end_to_end": runs["end_to_end"].stats(), "in_memory": runs["in_memory"].stats(),
            "ratio": common.rate_ratio(runs["end_to_end"], runs["in_memory"]),
            "target": common.target(common.ratio_of_medians(runs["end_to_end"].rates, runs["in_memory"].rates),
                                    0.8, "end-to-end / in-memory patches/s"),
            "load": load.to_dict()}


def worker(n: int, dim: int, steps: int, limit: int = 0) -> dict:
    """MIL training steps on one bag of n patches in this (fresh) process (at most ``limit`` per
    step when > 0, as ``mil train --max-instances``)."""
    import numpy as np

    from hcdtf.mil.train import MilConfig, _Session, subsample

    session = _Session(MilConfig(), dim)
    session.step(np.zeros((7, dim), np.float32), np.float32(1), np.float32(1))  # trace before the bag exists
    before = common.vm_hwm_mb()
    bag = np.random.default_rng(0).standard_normal((n, dim), dtype=np.float32)
    t = time.perf_counter()
    for k in range(steps):
        session.step(subsample(bag, limit or None, (0, 0, k)), np.float32(k % 2), np.float32(1))
    seconds = (time.perf_counter() - t) / steps
    peak = common.vm_hwm_mb()
    return {"patches": n, "dim": dim, "max_instances": limit or None, "bag_mb": round(bag.nbytes / 2**20, 1), "peak_rss_mb_before_bag": before,
            "peak_rss_mb": peak, "peak_minus_bag_mb": round(peak - bag.nbytes / 2**20, 1),
            "seconds_per_step": round(seconds, 4), "patches_per_s": round(n / seconds, 1)}


def mil_memory(sizes: list[int], dim: int, steps: int, limit: int = 0) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(common.REPO), os.environ.get("PYTHONPATH", "")])}
    rows = []
    for n in sizes:
        proc = subprocess.run([sys.executable, "-m", "benchmarks.mil", "--worker", str(n), str(dim), str(steps),
                               str(limit)], check=False, capture_output=True, text=True, env=env, cwd=common.REPO)
        result = common.last_json(proc.stdout)
        if proc.returncode != 0 or result is None:
            raise RuntimeError(f"MIL memory worker failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
        common.eprint(f"bag of {n}: {result}")
        rows.append(result)
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return 0
    reps = args.reps or (2 if args.quick else 3)
    level0 = (4096, 3072) if args.quick else (8064, 6144)
    result = {"machine": common.machine(), "quick": args.quick}
    with tempfile.TemporaryDirectory(prefix="hcdtf-bench-mil-") as tmp:
        root = pathlib.Path(args.workdir or tmp)
        root.mkdir(parents=True, exist_ok=True)
        if not args.skip_embed:
            result["embed_throughput"] = embed_throughput(root, args.arch, level0, reps, args.batch_size)
    sizes = [int(s) for s in args.sizes.split(",")]
    result["mil_memory"] = mil_memory(sizes, args.dim, args.steps)
    if args.max_instances:
        result["mil_memory_max_instances"] = mil_memory(sizes, args.dim, args.steps, args.max_instances)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
