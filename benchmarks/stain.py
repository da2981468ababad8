"""Benchmark: what stain normalisation inside the model adds to ResNet-18 inference, per patch.

    python -m benchmarks.stain            # prints JSON, writes benchmarks/results/<machine>.stain.json
    python -m benchmarks.stain --quick    # 2 rounds of fewer calls
    python -m benchmarks.stain --centres outputs/stain   # the unseen-centre gaps of a finished
                                          # `hcdtf experiment stain`, paired across seeds (JSON)
    python -m benchmarks.stain --looks outputs/stain/runs/*   # each run's AUC on the same tissue
                                          # rendered as every synthetic centre (JSON)

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
    p.add_argument("--threads", type=int, default=0,
                   help="TensorFlow intra-op threads (inter-op 1); 0: TensorFlow's default. On a loaded machine "
                        "one thread gives the steadiest per-CPU-second figures (no thread pool spinning)")
    p.add_argument("--centres", default=None, metavar="OUTPUT_DIR",
                   help="instead of timing: the seen/unseen AUC gaps of the finished runs of an `hcdtf experiment "
                        "stain` output directory, per seed, with each normaliser paired with the run without "
                        "(same seed): mean, 95%% t interval and paired t-test across seeds")
    p.add_argument("--looks", nargs="+", default=None, metavar="RUN",
                   help="instead of timing: each run's test AUC on the same synthetic tissue rendered as each "
                        "centre (hcdtf.synthetic.centres), so a centre's own difficulty is told apart from the "
                        "cost of its shift; with --patches and --centre-looks")
    p.add_argument("--patches", type=int, default=400, help="--looks: patches per look, half tumour (default 400)")
    p.add_argument("--centre-looks", type=int, default=5, help="--looks: centres 0..K-1 (default 5)")
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
    """{"plain", "macenko", "reinhard"}: traced inference functions, and the layers alone. The
    normalising models are what `hcdtf train --set data.stain_normalize=...` builds
    (``build_classifier(..., stain=target)``: the layer between the uint8 input and the
    preprocessing), with the plain classifier's weights. (Until 2026-12-06 they were the plain
    classifier called on the layer's output, which Keras casts back to the classifier's uint8
    input: two casts more than a real model, and truncated pixels.)"""
    import tensorflow as tf

    from hcdtf.models import build_classifier, stain

    classifier = build_classifier(arch, weights=None, transfer="fine_tune")
    out, layers = {"plain": classifier}, {}
    for method in METHODS:
        target = stain.fit_target(list(reference), method)
        model = build_classifier(arch, weights=None, transfer="fine_tune", stain=target,
                                 name=f"{arch.lower()}_{method}")
        model.set_weights(classifier.get_weights())
        out[method] = model
        layers[f"{method}_layer_only"] = stain.layer_from_target(target, name=f"stain_{method}")

    def traced(fn):
        return tf.function(lambda x: fn(x, training=False), reduce_retracing=True)

    return {name: traced(m) for name, m in {**out, **layers}.items()}


def _t_summary(values):
    """Mean, sample sd, 95% t interval and two-sided one-sample t-test p (against 0) of `values`."""
    import numpy as np
    from scipy import stats

    v = np.asarray(values, dtype=float)
    n, mean = len(v), float(v.mean())
    sd = float(v.std(ddof=1)) if n > 1 else float("nan")
    half = float(stats.t.ppf(0.975, n - 1) * sd / np.sqrt(n)) if n > 1 else float("nan")
    p = float(stats.ttest_1samp(v, 0.0).pvalue) if n > 1 and sd > 0 else float("nan")
    def r(x):  # (None, not NaN, where undefined: the JSON stays standard)
        return None if np.isnan(x) else round(x, 4)

    return {"n": n, "mean": r(mean), "sd": r(sd), "ci95": [r(mean - half), r(mean + half)], "p_two_sided": r(p)}


def centres(output_dir) -> dict:
    """Per-seed AUC seen / unseen / gap of each run in ``output_dir/runs`` that holds out a centre
    (``hcdtf.evaluation.centres.centre_gap``), and for each normaliser the paired differences with
    the run without one of the same seed: gap reduction (gap without - gap with) and unseen-AUC gain."""
    from hcdtf.evaluation.centres import centre_gap

    runs = pathlib.Path(output_dir) / "runs"
    rows = [g for d in sorted(runs.iterdir()) if (d / "predictions.csv").is_file() and (g := centre_gap(d))]
    if not rows:
        raise SystemExit(f"{runs}: no finished run with a held-out centre (data.test_centre)")
    by = {}
    for r in rows:
        by.setdefault(r["stain_normalize"], {})[r["seed"]] = r
    table = {m: {s: {k: (round(r[k], 4) if isinstance(r[k], float) else r[k])
                     for k in ("auc_seen", "auc_unseen", "gap", "n_seen", "n_unseen")}
                 for s, r in sorted(v.items())} for m, v in by.items()}
    out = {"output_dir": str(output_dir), "per_seed": table,
           "gap": {m: _t_summary([r["gap"] for r in v.values()]) for m, v in by.items()},
           "auc_unseen": {m: _t_summary([r["auc_unseen"] for r in v.values()]) for m, v in by.items()}}
    none = by.get("none", {})
    for m, v in by.items():
        seeds = sorted(set(v) & set(none))
        if m == "none" or len(seeds) < 2:
            continue
        out.setdefault("paired_vs_none", {})[m] = {
            "seeds": seeds,
            "gap_reduction": _t_summary([none[s]["gap"] - v[s]["gap"] for s in seeds]),
            "auc_unseen_gain": _t_summary([v[s]["auc_unseen"] - none[s]["auc_unseen"] for s in seeds]),
            "auc_seen_gain": _t_summary([v[s]["auc_seen"] - none[s]["auc_seen"] for s in seeds])}
    return out


LOOKS_SEED = 777  # the tissue of --looks: not the seed of any sample hcdtf writes by default


def looks(runs, n=400, k=5) -> dict:
    """AUC of each run (directory of `hcdtf train`) on ``n`` synthetic patches (labels alternating,
    patch i from its own stream of LOOKS_SEED) rendered as each centre 0..k-1: the same tissue and
    labels under every look, so the AUCs differ only by how each centre stains and scans."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from hcdtf.inference import loading, scoring
    from hcdtf.synthetic.centres import centre_look
    from hcdtf.synthetic.patch import generate_patch
    from hcdtf.synthetic.streams import patch_rng

    if n < 2 or k < 1:
        raise SystemExit("--patches must be >= 2 and --centre-looks >= 1")
    labels = np.arange(n) % 2
    images = {c: np.stack([generate_patch(patch_rng(LOOKS_SEED, "train", i), int(labels[i]), centre_look(c))[0]
                           for i in range(n)]) for c in range(k)}
    out = {"patches": n, "seed": LOOKS_SEED, "runs": {}}
    for run in runs:
        scorer = scoring.keras_scorer(loading.load_model(run))
        out["runs"][str(run)] = {str(c): round(float(roc_auc_score(labels, np.concatenate(
            [scorer(images[c][i:i + 64]).reshape(-1) for i in range(0, n, 64)]))), 4) for c in range(k)}
    return out


def main(argv=None) -> dict:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.centres or args.looks:
        out = centres(args.centres) if args.centres else looks(args.looks, args.patches, args.centre_looks)
        print(json.dumps(out, indent=2))
        return out
    import numpy as np

    if args.threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
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
    out = {"benchmark": "stain", "machine": mach, "arch": args.arch, "batch": args.batch, "threads": args.threads,
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
