"""Benchmark: inference throughput of every exported format, side by side, on this CPU.

    python -m benchmarks.inference                      # ResNet18 and ResNet50, prints JSON
    python -m benchmarks --only inference               # the same, as a figure of the full run
    python -m benchmarks.inference --run outputs/quickstart/runs/resnet18_fine_tune   # + AUC per format

For each architecture (random weights, float32 classifier from ``hcdtf.models.build_classifier``)
``hcdtf.export.export_model`` writes every format (the code of ``hcdtf export --format ...
--quantize int8``; int8 calibrated on synthetic patches, its guard given the float32 model's own
ranking, since random weights have no test AUC), and each is loaded through ``hcdtf.inference.backends`` (the
code of ``hcdtf predict --backend``):

* ``saved_model``: TensorFlow, the ``serving_default`` signature (oneDNN, weights frozen: see below);
* ``onnxruntime``: ONNX Runtime, CPU execution provider;
* ``openvino_fp32`` / ``openvino_int8`` / ``openvino_bf16`` (CPUs with native BF16 only): OpenVINO's
  CPU plugin, LATENCY hint (one request, all cores), the precision hint set as each export's
  metadata says (f32 for float32 and int8, bf16 for bf16);
* ``litert``: the LiteRT interpreter (XNNPACK), one thread per core.

Batch 1 (``--calls`` calls per repetition) and batch 64 (``--batch-calls`` per repetition), every
variant timed in turn within each of ``--reps`` rounds (``benchmarks.common.interleaved``), so
load changes hit all of them alike. Each rate is also a fraction of the CPU's float32 peak
(``common.machine()``: images/s x forward FLOPs per image / peak). This process sets
``TF_ENABLE_ONEDNN_OPTS=1`` and ``TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1`` before TensorFlow starts
(what the README advises for serving; it never trains).

With ``--run RUN_DIR`` the run's model is exported the same way (int8 calibrated on its
validation split and guarded on its test split, as ``hcdtf export`` does) and each format's AUC on
the test split is reported under ``auc``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_ONEDNN_ASSUME_FROZEN_WEIGHTS", "1")

from benchmarks import common  # noqa: E402

VARIANTS = {"saved_model": "saved_model", "onnxruntime": "onnx", "openvino_fp32": "openvino",
            "openvino_int8": "openvino-int8", "litert": "litert"}


def timed_variants() -> dict:
    """The variants timed here: ``openvino_bf16`` too on a CPU with native bfloat16 (elsewhere
    ``hcdtf export`` refuses it: OpenVINO would compute it in float32)."""
    from hcdtf import precision

    return {**VARIANTS, "openvino_bf16": "openvino-bf16"} if precision.cpu_features()["native_bf16"] else VARIANTS


def quantizations() -> tuple:
    return tuple(k.removeprefix("openvino-") for k in timed_variants().values() if k.startswith("openvino-"))


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.inference", description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", nargs="+", default=["ResNet18", "ResNet50"])
    p.add_argument("--reps", type=int, default=3, help="rounds; the median is reported (default 3)")
    p.add_argument("--calls", type=int, default=20, help="batch-1 calls per round (default 20)")
    p.add_argument("--batch", type=int, default=64, help="throughput batch size (default 64)")
    p.add_argument("--batch-calls", type=int, default=2, help="batch calls per round (default 2)")
    p.add_argument("--run", help="also export this run directory and report each format's test AUC")
    p.add_argument("--sweep", default="1,4,8,16,32,64,128",
                   help="SavedModel batch sizes of the batch-size sweep (TF Serving's batching parameters "
                        "are chosen from it); '' for none")
    p.add_argument("--quick", action="store_true", help="ResNet18 only, 2 rounds of fewer calls")
    args = p.parse_args(argv)
    if args.quick:
        args.arch, args.reps, args.calls, args.batch_calls = ["ResNet18"], 2, 5, 1
    return args


def export_random(arch: str, workdir: pathlib.Path) -> pathlib.Path:
    """Every format of a random-weight classifier; int8 guarded against its own float32 ranking."""
    import numpy as np

    from hcdtf import export, models

    model = models.build_classifier(arch, weights=None, transfer="fine_tune")
    rng = np.random.default_rng(0)
    calibration = rng.integers(0, 256, (32, 96, 96, 3), dtype=np.uint8)
    test = rng.integers(0, 256, (64, 96, 96, 3), dtype=np.uint8)
    p = model.predict(test, verbose=0).reshape(-1)
    labels = (p > np.median(p)).astype(int)
    data = export.Int8Data(calibration, lambda: [(test, labels)], margin=1.0)  # speed only: no real AUC
    return export.export_model(model, {"arch": arch, "benchmark": True}, workdir / arch, formats=export.FORMATS,
                               quantize=quantizations(), int8=data, log=common.eprint)


def bench_arch(arch: str, version_dir: pathlib.Path, args, peak: float | None) -> dict:
    import numpy as np

    from hcdtf.inference import backends
    from hcdtf import models

    scorers = {name: backends.load(version_dir.parent, kind, log=lambda *_: None) for name, kind in timed_variants().items()}
    rng = np.random.default_rng(1)
    x1 = rng.integers(0, 256, (1, 96, 96, 3), dtype=np.uint8)
    xb = rng.integers(0, 256, (args.batch, 96, 96, 3), dtype=np.uint8)
    reference = scorers["saved_model"](xb)
    agreement = {name: float(np.max(np.abs(s(xb) - reference))) for name, s in scorers.items()}

    def calls(scorer, x, n):
        def run():
            for _ in range(n):
                scorer(x)
            return n * len(x)
        return run

    variants = {}
    for name, s in scorers.items():
        s(x1), s(xb)  # warm-up: shape-specific set-up is not timed
        variants[f"{name}/batch1"] = calls(s, x1, args.calls)
        variants[f"{name}/batch{args.batch}"] = calls(s, xb, args.batch_calls)
    log = common.LoadLog()
    runs = common.interleaved(variants, args.reps, log)
    flops = models.flops_per_image(arch)
    cores = common.cores()
    results = {}
    for name, r in runs.items():
        st = r.stats()
        results[name] = {**st, "fraction_of_peak": round(st["median"] * flops / 1e9 / peak, 4) if peak else None,
                         "fraction_of_core_peak_per_cpu_s": round(st["per_cpu_s"]["median"] * flops / 1e9 / (peak / cores), 4)
                         if peak else None}
    b = f"batch{args.batch}"
    ratios = {f"{n}/{b} vs saved_model/{b}": common.rate_ratio(runs[f"{n}/{b}"], runs[f"saved_model/{b}"])
              for n in VARIANTS if n != "saved_model"}
    for reduced in ("openvino_int8", "openvino_bf16"):
        if f"{reduced}/{b}" in runs:
            ratios[f"{reduced}/{b} vs openvino_fp32/{b}"] = common.rate_ratio(runs[f"{reduced}/{b}"],
                                                                            runs[f"openvino_fp32/{b}"])
    best_fp32 = max((n for n in VARIANTS if n != "openvino_int8"), key=lambda n: results[f"{n}/{b}"]["median"])
    targets = {
        "best_fp32_fraction_of_peak": common.target(results[f"{best_fp32}/{b}"]["fraction_of_peak"], 0.8,
                                                    f"{arch}: best float32 runtime ({best_fp32}) at {b}, fraction of peak"),
        "int8_vs_saved_model": common.target(ratios[f"openvino_int8/{b} vs saved_model/{b}"]["median"], 1.8,
                                             f"{arch}: OpenVINO int8 / SavedModel images/s at {b}"),
    }
    return {"flops_per_image": flops, "max_abs_diff_vs_saved_model": agreement, "load_avg": log.to_dict(),
            "results": results, "ratios": ratios, "targets": targets}


def batch_sweep(version_dir: pathlib.Path, sizes: list[int], reps: int) -> dict:
    """The SavedModel's images/s and ms per call at each batch size, interleaved."""
    import numpy as np

    from hcdtf.inference import backends

    score = backends.load(version_dir, "saved_model", log=lambda *_: None)
    rng = np.random.default_rng(2)
    variants = {}
    for b in sizes:
        x = rng.integers(0, 256, (b, 96, 96, 3), dtype=np.uint8)
        score(x)
        n = max(1, 64 // b)  # about 64 images per round and size

        def run(x=x, n=n):
            for _ in range(n):
                score(x)
            return n * len(x)

        variants[f"batch{b}"] = run
    runs = common.interleaved(variants, reps, common.LoadLog())
    return {name: {"images_per_s": r.stats()["median"], "ms_per_call": round(1000 * int(name[5:]) / r.stats()["median"], 2),
                   "per_cpu_s": r.stats()["per_cpu_s"]["median"]} for name, r in runs.items()}


def test_aucs(run_dir: str, workdir: pathlib.Path) -> dict:
    """Export the run in every format (+ int8 and, where native, bf16, guarded) and each format's AUC
    on its test split."""
    from hcdtf.inference import backends, scoring
    from hcdtf import export
    from hcdtf.evaluation import metrics
    from hcdtf.rundir import RunDir

    target = export.export_run(run_dir, workdir / "run_export", formats=export.FORMATS, quantize=quantizations(),
                               log=common.eprint)
    cfg = RunDir(run_dir).config()
    meta = json.loads((target / "assets" / "hcdtf_metadata.json").read_text())
    out = {"run": str(run_dir), "int8_guard": meta.get("int8_guard"), "bf16_guard": meta.get("bf16_guard")}
    for name, kind in timed_variants().items():
        _, labels, scores = scoring.score_split(backends.load(target.parent, kind, log=lambda *_: None), cfg.data,
                                                cfg.data.test_split)
        out[name] = {"auc": round(float(metrics.compute_metrics(labels, scores, n_bootstrap=0)["auc"]), 4),
                     "n": int(len(labels))}
    return out


def main(argv=None) -> dict:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    import hcdtf  # noqa: F401

    mach = common.machine()
    peak = None if mach.get("gpus") else mach.get("peak_gflops_fp32")
    out = {"benchmark": "inference", "machine": mach, "env": {k: os.environ.get(k) for k in
           ("TF_ENABLE_ONEDNN_OPTS", "TF_ONEDNN_ASSUME_FROZEN_WEIGHTS")}, "archs": {}}
    with tempfile.TemporaryDirectory(prefix="hcdtf-inference-") as tmp:
        tmp = pathlib.Path(tmp)
        for arch in args.arch:
            common.eprint(f"[inference] exporting {arch} in every format")
            version = export_random(arch, tmp)
            out["archs"][arch] = bench_arch(arch, version, args, peak)
            if args.sweep and arch == args.arch[0]:
                out["archs"][arch]["saved_model_batch_sweep"] = batch_sweep(
                    version, [int(b) for b in args.sweep.split(",")], args.reps)
        if args.run:
            out["auc"] = test_aucs(args.run, tmp)
    out["targets"] = {f"{a}.{k}": v for a, r in out["archs"].items() for k, v in r["targets"].items()}
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
