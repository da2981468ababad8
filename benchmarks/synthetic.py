"""Benchmark: the synthetic sample generator (hcdtf.synthetic), and how its .tif files are encoded.

    python -m benchmarks.synthetic               # the quick start's sample (2,000 + 200 patches), 3 reps
    python -m benchmarks.synthetic --n 200 --patches 100 --reps 1

Measures, printed as JSON (rates are medians over ``--reps``, with spread, see common.summarize):
* tables: building every lookup table once (seconds) and the memory they keep (MB, tracemalloc).
* generate: ``generate_arrays`` in this process, patches/s and patches per CPU-second.
* tif_encode: CPU microseconds to turn one patch into the bytes of its .tif file: ``cached_header``
  (what write_sample does: Pillow's header for a 96x96 RGB TIFF, written once, plus the pixels)
  vs ``pillow_save`` (``Image.save`` per file); ``share_of_a_patch`` is that cost over the CPU
  time of drawing one patch.
* choices: the renderer's micro-choices against the obvious alternative, CPU microseconds per
  call (medians) and their ratio: ids from raw 64-bit words vs ``Generator.bytes``; thinning a
  carpet by a product vs ``np.maximum(..., where=keep)``; ``np.clip`` vs ``np.minimum`` with a
  scalar; a 96x96 crop of a 96-wide table (contiguous) vs of a 1024-wide one.
* write_sample: ``write_sample(n)`` with its default workers, each variant of the encoder in
  turn, side by side (rounds of one call per variant): patches/s, and patches per CPU-second of
  this process and its worker processes; ``ratio`` is pillow_save / cached_header per round.
"""

from __future__ import annotations

import argparse
import io
import json
import pathlib
import resource
import shutil
import sys
import tempfile
import time
import tracemalloc

from benchmarks import common


def _cpu_with_children() -> float:
    """CPU seconds of this process and of its children that have ended (the sample's workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _pillow_tif(image) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="TIFF")
    return buffer.getvalue()


def _tables() -> dict:
    from hcdtf.synthetic import patch

    tracemalloc.start()
    t = time.perf_counter()
    patch.warm_up()
    seconds = time.perf_counter() - t
    kept, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"seconds": round(seconds, 3), "mb": round(kept / 2**20, 1)}


def _encode(images, reps: int) -> dict:
    from hcdtf.synthetic import kaggle

    variants = {"cached_header": kaggle.tif_bytes, "pillow_save": _pillow_tif}
    us: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(reps):
        for name, encode in variants.items():
            c = time.process_time()
            for image in images:
                encode(image)
            us[name].append((time.process_time() - c) / len(images) * 1e6)
    return {**{name: common.summarize(v) for name, v in us.items()},
            "ratio": common.paired_ratio(us["pillow_save"], us["cached_header"])}


def _choices(reps: int) -> dict:
    """CPU microseconds per call of each (chosen, alternative) pair, and alternative / chosen."""
    import numpy as np

    from hcdtf.synthetic import streams

    rng = np.random.default_rng(0)
    h = rng.random((96, 96), dtype=np.float32)
    v = rng.random((96, 96), dtype=np.float32)
    keep = v > 0.5
    img = rng.random((3, 96, 96), dtype=np.float32) * 300
    narrow = rng.random((1024, 96), dtype=np.float32)
    wide = rng.random((1024, 1024), dtype=np.float32)
    pairs = {
        "id_raw_words_vs_generator_bytes": (lambda: streams.make_id(rng), lambda: rng.bytes(20).hex()),
        "thin_product_vs_where": (lambda: np.maximum(h, v * keep, out=h), lambda: np.maximum(h, v, out=h, where=keep)),
        "clip_vs_minimum": (lambda: np.clip(img, 0.0, 255.0, out=img), lambda: np.minimum(img, 255.0, out=img)),
        "contiguous_crop_vs_strided": (lambda: narrow[100:196] * 0.5, lambda: wide[100:196, 100:196] * 0.5),
    }
    out = {}
    for name, fns in pairs.items():
        us: list[list[float]] = [[], []]
        for _ in range(reps):
            for k, fn in enumerate(fns):
                c = time.process_time()
                for _ in range(2000):
                    fn()
                us[k].append((time.process_time() - c) / 2000 * 1e6)
        out[name] = {"chosen_us": common.summarize(us[0])["median"],
                     "alternative_us": common.summarize(us[1])["median"],
                     "alternative_over_chosen": common.paired_ratio(us[1], us[0])["median"]}
    return out


def _write_sample(n: int, reps: int, work: pathlib.Path, log: common.LoadLog) -> dict:
    from hcdtf import synthetic
    from hcdtf.synthetic import kaggle

    cached = kaggle.tif_bytes
    variants = {"cached_header": cached, "pillow_save": _pillow_tif}
    runs = {name: common.Runs() for name in variants}
    try:
        for rep in range(reps):
            log.rep()
            for name, encode in variants.items():
                kaggle.tif_bytes = encode  # (forked workers inherit it)
                out = work / f"{name}{rep}"
                t, c = time.perf_counter(), _cpu_with_children()
                info = synthetic.write_sample(out, n=n, seed=rep)
                runs[name].add(info.n_train + info.n_test, time.perf_counter() - t, _cpu_with_children() - c)
                shutil.rmtree(out)
    finally:
        kaggle.tif_bytes = cached
    return {**{name: r.stats() for name, r in runs.items()},
            "ratio": common.rate_ratio(runs["pillow_save"], runs["cached_header"])}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="labelled patches of each write_sample (default 2000)")
    parser.add_argument("--patches", type=int, default=400, help="patches per generate/encode repetition")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (rounds) of each measurement")
    parser.add_argument("--workdir", help="where to write the samples (default: a temp dir, deleted)")
    args = parser.parse_args(argv)

    from hcdtf import synthetic

    log = common.LoadLog()
    result: dict = {"machine": common.machine()["name"], "tables": _tables()}
    gen = common.Runs()
    for rep in range(args.reps):
        log.rep()
        t, c = time.perf_counter(), common.cpu_seconds()
        images, _, _ = synthetic.generate_arrays(args.patches, seed=100 + rep)
        gen.add(args.patches, time.perf_counter() - t, common.cpu_seconds() - c)
    result["generate"] = gen.stats()
    result["tif_encode"] = _encode(images, args.reps)
    patch_us = 1e6 / result["generate"]["per_cpu_s"]["median"]
    for name in ("cached_header", "pillow_save"):
        result["tif_encode"][name]["share_of_a_patch"] = round(result["tif_encode"][name]["median"] / patch_us, 4)
    result["choices"] = _choices(max(args.reps, 3))
    work = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="hcd_synthetic_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        result["write_sample"] = _write_sample(args.n, args.reps, work, log)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    result["load_avg"] = log.to_dict()
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
