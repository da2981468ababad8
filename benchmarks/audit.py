"""Benchmark: the leak audit (tfds_builder/hcd/duplicates.py): what hashing adds to a build, the
near-duplicate search at the full data set's size, and how the dHash threshold separates copies
from other patches.

    python -m benchmarks.audit                         # n=1000 patches, 277,483 hashes, prints JSON
    python -m benchmarks.audit --n 300 --hashes 50000 --reps 1

Measures
* hashing: per patch, the pixel digest + dHash that the builder computes (``image_hashes`` on one
  patch) beside the TIFF -> PNG conversion it runs next to (Pillow open + PNG save), timed side by
  side in rounds; ``hash_over_convert`` is the hashing time as a share of the conversion time.
* search: ``duplicates.summarize`` over ``--hashes`` records (the size of Kaggle's train + test:
  220,025 + 57,458) whose dHashes are uniform random 64-bit numbers with 1% planted near pairs
  (1-4 bits apart) and 0.5% exact copies: wall and CPU seconds, and whether every planted pair was
  found. Uniform hashes are the easy case for the banded index; real patches cluster more.
* threshold: dHash distances between the distinct patches of a synthetic sample, and between each
  patch and a copy with small changes (+-2 grey levels of uniform noise, Gaussian noise of sd 3,
  JPEG at quality 90), for the patches that are not low-detail.
"""

from __future__ import annotations

import argparse
import io
import json
import pathlib
import tempfile
import time

import numpy as np

from benchmarks import common


def _sample(n: int, workdir: pathlib.Path) -> tuple[list[pathlib.Path], np.ndarray]:
    from PIL import Image

    from hcdtf import synthetic

    synthetic.write_sample(workdir / "sample", n=n, n_test=0, seed=7)
    paths = sorted((workdir / "sample" / "train").glob("*.tif"))
    return paths, np.stack([np.asarray(Image.open(p)) for p in paths])


def hashing(paths, images, reps: int) -> dict:
    from PIL import Image

    from tfds_builder.hcd import duplicates

    def convert():
        for p in paths:
            with Image.open(p) as im:
                im.save(io.BytesIO(), format="png", compress_level=0)
        return len(paths)

    def hash_one_by_one():
        for im in images:
            duplicates.image_hashes(im)
        return len(images)

    log = common.LoadLog()
    runs = common.interleaved({"convert": convert, "hash": hash_one_by_one}, reps, log)
    return {
        "convert": runs["convert"].stats(),
        "hash": runs["hash"].stats(),
        "hash_over_convert": common.rate_ratio(runs["convert"], runs["hash"]),
        "load_avg": log.to_dict(),
    }


def search(n_hashes: int, reps: int) -> dict:
    from tfds_builder.hcd import duplicates

    rng = np.random.default_rng(0)
    dhash = rng.integers(0, 2**63, size=n_hashes, dtype=np.int64).astype(np.uint64) << np.uint64(1)
    dhash |= rng.integers(0, 2, size=n_hashes).astype(np.uint64)
    digests = [int(k).to_bytes(16, "big") for k in range(n_hashes)]
    n_near, n_exact = n_hashes // 100, n_hashes // 200
    for k in range(n_near):  # record 2k+1 becomes a near copy (1-4 bits) of record 2k
        flips = rng.choice(64, size=1 + k % 4, replace=False)
        dhash[2 * k + 1] = dhash[2 * k] ^ np.uint64(sum(1 << int(f) for f in flips))
    for k in range(n_exact):  # the last records are exact copies of some at the start
        src, dst = 2 * n_near + k, n_hashes - 1 - k
        dhash[dst], digests[dst] = dhash[src], digests[src]
    records = duplicates.Records()
    splits = ("train", "validation", "test", "kaggle_test")
    for k in range(n_hashes):
        records.add(splits[k % 4], f"p{k}", 0, digests[k], int(dhash[k]), False)
    times, cpu, found = [], [], None
    for _ in range(reps):
        t, c = time.perf_counter(), common.cpu_seconds()
        summary = duplicates.summarize(records)
        times.append(time.perf_counter() - t)
        cpu.append(common.cpu_seconds() - c)
        found = summary["near"]["pairs"] >= n_near and summary["exact"]["groups"] == n_exact
    return {"hashes": n_hashes, "planted_near_pairs": n_near, "planted_exact_copies": n_exact,
            "all_planted_found": found, "seconds": common.summarize(times), "cpu_seconds": common.summarize(cpu)}


def threshold(images: np.ndarray) -> dict:
    from PIL import Image

    from tfds_builder.hcd import duplicates

    rng = np.random.default_rng(1)
    _, base, low = duplicates.image_hashes(images)
    keep = ~low
    d = np.bitwise_count(base[keep][:, None] ^ base[keep][None, :])
    distinct = d[np.triu_indices(int(keep.sum()), 1)]

    def jpeg(im):
        buffer = io.BytesIO()
        Image.fromarray(im).save(buffer, format="jpeg", quality=90)
        return np.asarray(Image.open(buffer))

    changes = {
        "uniform_pm2": lambda x: np.clip(x + rng.integers(-2, 3, x.shape), 0, 255),
        "gaussian_sd3": lambda x: np.clip(x + rng.normal(0, 3, x.shape), 0, 255),
        "jpeg_q90": lambda x: np.stack([jpeg(im.astype(np.uint8)) for im in x]),
    }
    out = {"patches": int(keep.sum()), "low_detail": int(low.sum()),
           "distinct_pairs": {"n": int(distinct.size), "min_bits": int(distinct.min()),
                              "share_within_4": float(np.mean(distinct <= 4)),
                              "p0.1_bits": float(np.percentile(distinct, 0.1))}}  # fmt: skip
    for name, change in changes.items():
        changed = change(images.astype(np.int16)).astype(np.uint8)
        moved = np.bitwise_count(duplicates.image_hashes(changed)[1] ^ base)[keep]
        out[name] = {"share_within_4": float(np.mean(moved <= 4)), "median_bits": float(np.median(moved)),
                     "max_bits": int(moved.max())}
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="synthetic patches")
    p.add_argument("--hashes", type=int, default=277_483, help="records in the search")
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hcdtf_bench_audit_") as tmp:
        paths, images = _sample(args.n, pathlib.Path(tmp))
        result = {
            "machine": common.machine(),
            "hashing": hashing(paths, images, args.reps),
            "search": search(args.hashes, args.reps),
            "threshold": threshold(images),
        }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
