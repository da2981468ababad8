"""Benchmark: build the `hcd/kaggle` TFDS data set from N synthetic patches, then read it back.

    python benchmarks/build_dataset.py                 # n=20000, prints JSON
    python benchmarks/build_dataset.py --n 2000 --reps 1
    python benchmarks/build_dataset.py --sample-dir DIR --keep   # reuse a sample, keep output

Measures
* build: ``hcdtf.data.pipeline.build_dataset`` (scan and check every file, split, TIFF -> PNG,
  TFRecord writing), in patches/s. Target: the full Kaggle set (220,025 patches) in under
  15 minutes on 2 cores, i.e. at least 245 patches/s.
* read-back: ``hcdtf.data.pipeline.make_dataset(cfg.data, "train", 256, training=False)`` iterated
  to the end (TFRecord reading and PNG decoding in tf.data), in patches/s and patches/s per
  core. This is the median of ``--reps`` runs. Target: at least 2,000 patches/s per core.

Both also give ``patches_per_cpu_s``: patches per CPU-second that this process used. It is
the per-core rate that does not depend on how busy the rest of the machine is.

The sample is written with ``hcdtf.synthetic.write_sample``, which is not part of the timings.
TensorFlow is imported before anything is timed. ``load`` is the 1-minute load average of
the machine, because other processes on it affect the numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import platform
import shutil
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
    t = os.times()
    return t.user + t.system


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover
        return None


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20000, help="labelled patches in the sample (default 20000)")
    parser.add_argument("--n-test", type=int, default=0, help="unlabelled test/ patches (default 0)")
    parser.add_argument("--reps", type=int, default=3, help="read-back repetitions; the median is reported")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample-dir", help="reuse this Kaggle-layout sample (written there if missing)")
    parser.add_argument("--workdir", help="where to put the sample and the TFDS output (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (default: deleted at the end)")
    parser.add_argument("--no-progress", action="store_true", help="hide the TFDS progress bars")
    parser.add_argument(
        "--png-level", type=int, help="override the builder's PNG zlib level (0-9), to compare"
    )
    args = parser.parse_args(argv)

    import tensorflow as tf  # noqa: F401  (imported before timing: a one-off ~5-10 s)
    import tensorflow_datasets as tfds

    from hcdtf.data import pipeline as data
    from hcdtf import synthetic
    from hcdtf.config import load_config

    if args.no_progress:
        tfds.disable_progress_bar()
    if args.png_level is not None:
        from tfds_builder.hcd import hcd_dataset_builder

        hcd_dataset_builder.PNG_COMPRESS_LEVEL = args.png_level
    work = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="hcd_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    sample = pathlib.Path(args.sample_dir) if args.sample_dir else work / "sample"
    out = work / "tfds"
    result: dict = {"cores": _cores(), "python": platform.python_version()}
    try:
        if not (sample / "train_labels.csv").is_file():
            t = time.perf_counter()
            with contextlib.redirect_stdout(sys.stderr):
                synthetic.write_sample(sample, n=args.n, n_test=args.n_test, seed=args.seed, progress=True)
            result["sample_seconds"] = round(time.perf_counter() - t, 1)
        shutil.rmtree(out, ignore_errors=True)

        result["load_before_build"] = _load()
        t, cpu = time.perf_counter(), _cpu_seconds()
        with contextlib.redirect_stdout(sys.stderr):  # stdout is for the JSON only
            builder = data.build_dataset(str(sample), str(out), "kaggle")
        build_s, build_cpu = time.perf_counter() - t, _cpu_seconds() - cpu
        built = sum(s.num_examples for s in builder.info.splits.values())
        result["build"] = {
            "patches": built,
            "seconds": round(build_s, 2),
            "patches_per_s": round(built / build_s, 1),
            "cpu_seconds": round(build_cpu, 2),
            "patches_per_cpu_s": round(built / build_cpu, 1),
            "bytes_on_disk": sum(p.stat().st_size for p in out.rglob("*.tfrecord*")),
            "full_kaggle_220025_minutes_estimate": round(220025 / (built / build_s) / 60, 1),
        }

        cfg = load_config([], [f"data.data_dir={out}", "data.dataset_config=kaggle"])
        n_train = builder.info.splits["train"].num_examples
        result["load_before_read"] = _load()
        rates, cpu_rates = [], []
        for _ in range(max(1, args.reps)):
            t, cpu = time.perf_counter(), _cpu_seconds()
            seen = 0
            for images, _labels in data.make_dataset(cfg.data, "train", args.batch_size, training=False):
                seen += int(images.shape[0])
            rates.append(seen / (time.perf_counter() - t))
            cpu_rates.append(seen / (_cpu_seconds() - cpu))
            if seen != n_train:
                raise RuntimeError(f"read back {seen} patches, expected {n_train}")
        read = statistics.median(rates)
        result["read_back"] = {
            "split": "train",
            "patches": n_train,
            "batch_size": args.batch_size,
            "patches_per_s_runs": [round(r, 1) for r in rates],
            "patches_per_s": round(read, 1),
            "patches_per_s_per_core": round(read / _cores(), 1),
            "patches_per_cpu_s": round(statistics.median(cpu_rates), 1),
        }
        result["targets_met"] = {
            "build_ge_245_per_s": result["build"]["patches_per_s"] >= 245,
            "read_ge_2000_per_s_per_core": result["read_back"]["patches_per_s_per_core"] >= 2000,
        }
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
        elif not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
