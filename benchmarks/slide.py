"""Benchmark: whole-slide inference (`hcdtf slide predict`) against the same model on patches in memory.

    python -m benchmarks.slide                 # ResNet18, a demo slide x3 and a 30,336^2 px slide
    python -m benchmarks.slide --quick         # smaller big slide (12,288^2 px), 2 repetitions

The model is a ResNet18 classifier with random weights (``hcdtf.models.build_classifier``), saved
as a ``.keras`` file and loaded with ``hcdtf.inference.predict.load_scorer``, the same scorer the command uses.

* ``throughput``: on a synthetic slide of the demo's size (8,064 x 6,144 px at level 0), the whole
  of ``predict_slide`` (tissue mask, tile reading in threads, batching, scoring, heat map,
  detections, overlay) against the same scorer on the same patches already decoded in memory, in
  the same batches; the two are timed interleaved, ``--reps`` rounds, and the ratio of their
  patches/s is taken per round (goal: >= 0.8, reading and tiling must not be the bottleneck).
* ``big_slide``: a synthetic slide of at least 30,000 x 30,000 px at level 0 (normal tissue drawn
  from 64 rendered tiles, repeated, to generate it fast), predicted in a fresh process: time per
  slide, patches/s, share of grid cells skipped by the tissue mask, and the process's peak RSS
  (VmHWM; goal: < 3 GB).
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

from benchmarks import common  # noqa: E402

DEMO_LEVEL0 = (8064, 6144)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.slide", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="12,288^2 px big slide and 2 repetitions")
    p.add_argument("--arch", default="ResNet18")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--reps", type=int, help="throughput rounds (default 3; 2 with --quick)")
    p.add_argument("--big", type=int, help="big slide side in level-0 px (default 30336; 12288 with --quick)")
    p.add_argument("--workdir", help="keep the generated slides and model here (default: a temp dir)")
    p.add_argument("--worker", nargs=3, metavar=("MODEL", "SLIDE", "OUT"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _model(root: pathlib.Path, arch: str) -> pathlib.Path:
    path = root / f"{arch.lower()}.keras"
    if not path.is_file():
        from hcdtf import models

        models.build_classifier(arch, weights=None, transfer="fine_tune").save(path)
    return path


def _slide(root: pathlib.Path, name: str, level0: tuple[int, int], bank: int | None) -> tuple[pathlib.Path, float]:
    from hcdtf.slide import synthetic

    path = root / f"{name}.svs"
    t = time.perf_counter()
    if not path.is_file():
        w, h = (-(-s // (4 * synthetic.PATCH)) * synthetic.PATCH for s in level0)  # rendered, whole tiles
        spec = synthetic.plan_slides(1, seed=0, size=(w, h))[0]
        synthetic.write_slide(path, spec, None, bank=bank)
    return path, round(time.perf_counter() - t, 1)


def throughput(model_path: pathlib.Path, slide_path: pathlib.Path, root: pathlib.Path, reps: int,
               batch_size: int) -> dict:
    """End-to-end predict_slide vs the scorer on the same patches in memory, interleaved."""
    import shutil

    import numpy as np

    from hcdtf.slide import inference

    model = inference.load_model(model_path, log=lambda *_: None)
    settings = inference.Settings(batch_size=batch_size)
    layout = inference._layout(slide_path, model, settings)
    with layout.slide:
        ci, cj = layout.grid.order(layout.scored)
        patches = np.concatenate(list(inference.patch_batches(layout.slide, layout.plan, layout.grid, ci, cj, 0,
                                                              batch_size)))
    n = len(patches)
    model.score(patches[:batch_size])  # warm-up: trace and oneDNN weight layout
    out = root / "throughput_out"

    def end_to_end():
        shutil.rmtree(out, ignore_errors=True)
        status, summary = inference.predict_slide(slide_path, out, model, settings, log=lambda *_: None)
        assert status == "done"
        return summary["tissue"]["cells_scored"]

    def in_memory():
        for k in range(0, n, batch_size):
            batch = patches[k:k + batch_size]
            if len(batch) < batch_size:
                batch = np.concatenate([batch, np.zeros((batch_size - len(batch),) + batch.shape[1:], np.uint8)])
            model.score(batch)
        return n

    load = common.LoadLog()
    runs = common.interleaved({"end_to_end": end_to_end, "in_memory": in_memory}, reps, load)
    return {"patches_per_slide": n, "batch_size": batch_size,
            "end_to_end": runs["end_to_end"].stats(), "in_memory": runs["in_memory"].stats(),
            "ratio": common.rate_ratio(runs["end_to_end"], runs["in_memory"]),
            "target": common.target(common.ratio_of_medians(runs["end_to_end"].rates, runs["in_memory"].rates),
                                    0.8, "end-to-end / in-memory patches/s"),
            "load": load.to_dict()}


def worker(model_path: str, slide_path: str, out: str) -> dict:
    """One slide in this (fresh) process: its figures and this process's peak RSS."""
    from hcdtf.slide import inference

    t = time.perf_counter()
    model = inference.load_model(model_path, log=lambda *_: None)
    load_seconds = time.perf_counter() - t
    t = time.perf_counter()
    status, s = inference.predict_slide(pathlib.Path(slide_path), pathlib.Path(out), model, inference.Settings(),
                                        log=lambda *_: None)
    seconds = time.perf_counter() - t
    return {"level0_size": s["level0_size"], "levels": len(s["levels"]), "slide_seconds": round(seconds, 1),
            "model_load_seconds": round(load_seconds, 1), "patches": s["tissue"]["cells_scored"],
            "cells": s["tissue"]["cells"], "skipped_fraction": round(s["tissue"]["skipped_fraction"], 4),
            "patches_per_s": s["timing"]["patches_per_s"], "peak_rss_mb": common.vm_hwm_mb()}


def big_slide(model_path: pathlib.Path, slide_path: pathlib.Path, root: pathlib.Path) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(common.REPO), os.environ.get("PYTHONPATH", "")])}
    out = root / "big_out"
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    proc = subprocess.run([sys.executable, "-m", "benchmarks.slide", "--worker", str(model_path), str(slide_path),
                           str(out)], capture_output=True, text=True, env=env, cwd=common.REPO)
    result = common.last_json(proc.stdout)
    if proc.returncode != 0 or result is None:
        raise RuntimeError(f"big-slide worker failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    result["target_peak_rss"] = common.target(result["peak_rss_mb"], 3072, "peak RSS, MB", higher_is_better=False)
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return 0
    reps = args.reps or (2 if args.quick else 3)
    side = args.big or (12288 if args.quick else 30336)
    with tempfile.TemporaryDirectory(prefix="hcdtf-bench-slide-") as tmp:
        root = pathlib.Path(args.workdir or tmp)
        root.mkdir(parents=True, exist_ok=True)
        model_path = _model(root, args.arch)
        demo, demo_gen = _slide(root, "demo", DEMO_LEVEL0, None)
        big, big_gen = _slide(root, f"big{side}", (side, side), 64)
        common.eprint(f"slides ready (demo {demo_gen} s, big {big_gen} s); measuring")
        result = {"machine": common.machine(), "arch": args.arch, "quick": args.quick,
                  "generate_seconds": {"demo_slide": demo_gen, "big_slide": big_gen},
                  "throughput": throughput(model_path, demo, root, reps, args.batch_size),
                  "big_slide": big_slide(model_path, big, root)}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
