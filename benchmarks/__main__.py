"""python -m benchmarks [--quick] [--only NAME,...] [--out benchmarks/results/<machine>.json]

Measures every stage of hcdtf on generated data in one run and prints the figures as JSON (also
written to ``--out``, by default ``benchmarks/results/<machine>.json``, or
``<machine>.quick.json`` with ``--quick``). See benchmarks/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks import common  # noqa: E402

FIGURES = ("training", "pipeline", "precision", "feature_cache", "baseline", "frameworks")
# Order matters: training builds the ResNet18/50 steps that pipeline reuses, and precision reuses
# the ResNet18 batch-16 step with --quick.
EXTERNAL = ("build_dataset", "serving", "synthetic", "inference", "slide", "viewer", "mil")  # other modules of this package, run as subprocesses
QUICK_DEFAULT = ("training", "pipeline", "precision", "feature_cache", "baseline", "frameworks")

# Arguments for the external benchmark modules, in full and quick mode; each is passed only if
# the module's --help mentions it (they are written independently of this entry point).
EXTERNAL_ARGS = {
    "build_dataset": {"full": ["--n", "4000", "--reps", "3", "--no-progress"],
                      "quick": ["--n", "600", "--reps", "3", "--no-progress"]},
    "serving": {"full": [], "quick": ["--quick"]},
    "inference": {"full": [], "quick": ["--quick"]},
    "slide": {"full": [], "quick": ["--quick"]},
    "viewer": {"full": [], "quick": ["--quick"]},
    "mil": {"full": [], "quick": ["--quick"]},
    "synthetic": {"full": ["--n", "2000", "--reps", "3"], "quick": ["--n", "400", "--patches", "200", "--reps", "3"]},
}
# External modules run once per CPU-kernel setting (fixed when TensorFlow starts); the first is
# hcdtf's default and gives `output`, all of them are under `variants`. On x86-64 CPUs oneDNN
# reorders a convolution's weights on every call unless told they are frozen (inference only:
# never set TF_ONEDNN_ASSUME_FROZEN_WEIGHTS in a process that trains).
EXTERNAL_ENVS = {
    "serving": {
        "onednn": {"TF_ENABLE_ONEDNN_OPTS": "1", "TF_ONEDNN_ASSUME_FROZEN_WEIGHTS": None},
        "onednn_frozen_weights": {"TF_ENABLE_ONEDNN_OPTS": "1", "TF_ONEDNN_ASSUME_FROZEN_WEIGHTS": "1"},
        "eigen": {"TF_ENABLE_ONEDNN_OPTS": "0", "TF_ONEDNN_ASSUME_FROZEN_WEIGHTS": None},
    },
}


@dataclasses.dataclass
class Session:
    quick: bool
    reps: int
    batch_size: int
    archs: list
    rep_seconds: float
    feature_cache_examples: int
    baseline_examples: int
    xla_in_quick: bool
    xla_mixed: bool
    precision_batch: int
    workspace: common.Workspace
    machine: dict
    spawner: common.Spawner | None = None
    seed: int = 0
    log: Callable[[str], None] = common.eprint
    cache: dict = dataclasses.field(default_factory=dict)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="ResNet18 only, smaller data and shorter repetitions (~2-3 min on 2 cores); by default "
                        f"runs {', '.join(QUICK_DEFAULT)}")
    p.add_argument("--only", help=f"comma-separated figures: {', '.join(FIGURES + EXTERNAL)}")
    p.add_argument("--skip-external", action="store_true",
                   help=f"do not run the other benchmark modules ({', '.join(EXTERNAL)}) even where they exist")
    p.add_argument("--out", help="JSON file to write (default benchmarks/results/<machine>[.quick].json); "
                                 "'-' writes none")
    p.add_argument("--reps", type=int, default=3, help="repetitions per figure; the median is reported (>= 3)")
    p.add_argument("--batch-size", type=int, help="train batch size (default 32; 16 with --quick)")
    p.add_argument("--archs", help="archs of the training figure (default ResNet18,ResNet34,ResNet50; "
                                   "ResNet18 with --quick)")
    p.add_argument("--examples", type=int,
                   help="synthetic patches to generate and build (default 2560; 640 with --quick)")
    p.add_argument("--baseline-examples", type=int,
                   help="larger size of the baseline figure, N; the smaller is N/2 (default 2048; 512 quick; "
                        "at most the training split of the generated data)")
    p.add_argument("--rep-seconds", type=float, help="target length of one timed repetition (default 3; 1.5 quick)")
    p.add_argument("--xla", action="store_true", help="with --quick, also measure float32 + XLA in the precision figure")
    p.add_argument("--xla-mixed", action="store_true",
                   help="also measure mixed_float16 and mixed_bfloat16 with XLA (about a minute of compiling each)")
    p.add_argument("--data-dir", help="use this already built hcd/kaggle TFDS data_dir instead of generating one")
    p.add_argument("--workdir", help="where to put generated data and run directories (default: a temp dir, deleted)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--table", metavar="RESULTS_JSON", help="print a results file as Markdown tables and exit")
    return p.parse_args(argv)


def _run_external(name: str, quick: bool) -> dict:
    log = common.LoadLog()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join([str(common.REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    cmd = [sys.executable, "-m", f"benchmarks.{name}"]
    helptext = subprocess.run(cmd + ["--help"], capture_output=True, text=True, env=env, cwd=common.REPO,
                              timeout=300).stdout
    args, wanted = [], EXTERNAL_ARGS.get(name, {}).get("quick" if quick else "full", [])
    i = 0
    while i < len(wanted):  # keep a flag (and its value) only if the module knows it
        flag = wanted[i]
        value = [wanted[i + 1]] if i + 1 < len(wanted) and not wanted[i + 1].startswith("--") else []
        if flag in helptext:
            args += [flag, *value]
        i += 1 + len(value)
    t = time.perf_counter()
    variants = {}
    for variant, changes in (EXTERNAL_ENVS.get(name) or {"default": {}}).items():
        venv = dict(env)
        for key, value in changes.items():
            if value is None:
                venv.pop(key, None)
            else:
                venv[key] = value
        proc = subprocess.run(cmd + args, capture_output=True, text=True, env=venv, cwd=common.REPO, timeout=1800)
        variants[variant] = {"env": changes, "returncode": proc.returncode, "output": common.last_json(proc.stdout)}
        if proc.returncode != 0 or variants[variant]["output"] is None:
            variants[variant]["stderr_tail"] = proc.stderr[-2000:]
            raise RuntimeError(json.dumps({"command": cmd + args, **variants[variant]})[:3000])
    first = next(iter(variants.values()))
    out = {"command": " ".join(["python", "-m", f"benchmarks.{name}", *args]), "returncode": first["returncode"],
           "seconds": round(time.perf_counter() - t, 1), "load_avg": log.to_dict(), "output": first["output"]}
    if name in EXTERNAL_ENVS:
        out["variants"] = variants
    return out


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.table:
        print(common.markdown_tables(json.loads(pathlib.Path(args.table).read_text())), end="")
        return 0
    if args.reps < 3:
        common.eprint(f"warning: --reps {args.reps} < 3: figures should be the median of at least 3 repetitions")
    names = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else None
    unknown = set(names or ()) - set(FIGURES + EXTERNAL)
    if unknown:
        common.eprint(f"unknown figure(s): {', '.join(sorted(unknown))}; valid: {', '.join(FIGURES + EXTERNAL)}")
        return 2
    if names is None:
        names = list(QUICK_DEFAULT if args.quick else FIGURES + EXTERNAL)
    names = [n for n in FIGURES + EXTERNAL if n in names]  # fixed order: shared trainers are built once
    if args.skip_external:
        names = [n for n in names if n not in EXTERNAL]
    names = [n for n in names if n not in EXTERNAL or (common.REPO / "benchmarks" / f"{n}.py").is_file()]

    quick = args.quick
    mach = common.machine()
    archs = [a.strip() for a in args.archs.split(",")] if args.archs else (
        ["ResNet18"] if quick else ["ResNet18", "ResNet34", "ResNet50"])
    tmp = None
    if args.workdir:
        root = pathlib.Path(args.workdir)
        root.mkdir(parents=True, exist_ok=True)
    else:
        root = pathlib.Path(tmp := tempfile.mkdtemp(prefix="hcdtf_bench_"))
    examples = args.examples or (640 if quick else 2560)
    session = Session(
        quick=quick, reps=args.reps, batch_size=args.batch_size or (16 if quick else 32), archs=archs,
        rep_seconds=args.rep_seconds or (1.5 if quick else 3.0),
        feature_cache_examples=128 if quick else 512, baseline_examples=args.baseline_examples or (512 if quick else 2048),
        xla_in_quick=args.xla, xla_mixed=args.xla_mixed, precision_batch=min(16, args.batch_size or 16), workspace=common.Workspace(root, examples, args.data_dir, args.seed, common.eprint),
        machine=mach, seed=args.seed)

    started = time.perf_counter()
    session.spawner = common.Spawner()  # before TensorFlow is imported (see common.Spawner)
    result = {
        "schema_version": common.SCHEMA_VERSION,
        "machine": mach,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv),
        "mode": "quick" if quick else "full",
        "settings": {"reps": args.reps, "batch_size": session.batch_size, "archs": archs,
                     "rep_seconds": session.rep_seconds, "examples_generated": None if args.data_dir else examples,
                     "seed": args.seed},
        "load_avg_start": common.load_avg(),
        "figures": {},
        "errors": {},
    }
    try:
        if any(n in FIGURES for n in names):
            common.eprint("importing TensorFlow")
            from hcdtf import runtime

            runtime.quiet_tensorflow()
            runtime.set_seed(args.seed)  # as hcdtf.training.train does (op determinism on)
            result["settings"]["onednn"] = runtime.onednn_enabled()  # hcdtf's default on x86-64: on
            if any(n in ("pipeline", "feature_cache", "baseline") for n in names):
                session.workspace.data_dir  # noqa: B018 - generate and build before anything is timed
                result["settings"]["data"] = {**session.workspace.setup, "splits": session.workspace.splits()}
        for name in names:
            common.eprint(f"[{name}] load average {common.load_avg()}")
            t = time.perf_counter()
            try:
                if name in EXTERNAL:
                    fig = _run_external(name, quick)
                else:
                    module = {"training": "training", "precision": "training", "feature_cache": "training",
                              "frameworks": "training", "pipeline": "pipeline", "baseline": "baseline"}[name]
                    mod = __import__(f"benchmarks.{module}", fromlist=["x"])
                    fig = getattr(mod, f"figure_{name}")(session)
                fig["seconds"] = round(time.perf_counter() - t, 1)
                result["figures"][name] = fig
                common.eprint(f"[{name}] done in {fig['seconds']} s")
            except Exception as e:  # noqa: BLE001 - one broken figure must not lose the others
                traceback.print_exc()
                result["errors"][name] = f"{type(e).__name__}: {e}"[:3000]
    finally:
        session.spawner.close()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["load_avg_end"] = common.load_avg()
    result["targets"] = {f"{fig}.{k}": v for fig, f in result["figures"].items() for k, v in (f.get("targets") or {}).items()}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out != "-":
        out = pathlib.Path(args.out) if args.out else common.RESULTS_DIR / f"{mach['name']}{'.quick' if quick else ''}.json"
        from hcdtf import atomic

        out.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_json(out, result, sort_keys=False)  # the package's writer: strict JSON, atomic
        common.eprint(f"written to {out}")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
