"""Logistic-regression baseline: peak memory and time on two data sizes.

Runs the real command, ``hcdtf baseline`` (streamed SGD on raw pixels, the default config), in a
subprocess on the first N and 2N training patches of the built data set (``--set
data.max_train_examples=N``), alternating the two sizes, and reads each run's
``train_summary.json`` (``wall_time_s``: the fit, ``peak_rss_mb``: the process's peak resident
memory). The child's peak RSS is also taken from the operating system (``os.wait4``), and its
whole wall time (start-up, fit, evaluation) is reported as ``process_seconds``. The runs are
started from a small helper process (``common.Spawner``), because Linux carries the peak-RSS
high-water mark of the parent into a child.

Targets: peak RSS under 2 GB; fitting time growing at most linearly with the data
(t(2N) / t(N) <= 2, i.e. a scaling exponent log2(t(2N) / t(N)) <= 1; 10% is allowed for noise).
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import shutil
import sys

from benchmarks import common


def _hcdtf_command() -> list[str]:
    exe = pathlib.Path(sys.executable).with_name("hcdtf")
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("hcdtf")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from hcdtf.cli import main; sys.exit(main())"]


def run_baseline(spawner: common.Spawner, data_dir: pathlib.Path, out: pathlib.Path, n: int, seed: int = 0) -> dict:
    cmd = [*_hcdtf_command(), "baseline", "--data-dir", str(data_dir), "--output-dir", str(out), "--overwrite",
           "--seed", str(seed), "--set", f"data.max_train_examples={n}"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    log_path = out.parent / f"{out.name}.log"
    out.parent.mkdir(parents=True, exist_ok=True)
    res = spawner.run(cmd, log_path, env)
    if res["returncode"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (rc={res['returncode']}): {log_path.read_text()[-2000:]}")
    summary = json.loads((out / "train_summary.json").read_text())
    return {"wall_time_s": summary["wall_time_s"], "peak_rss_mb": summary["peak_rss_mb"],
            "n_train": summary["n_train"], "process_seconds": res["seconds"],
            "process_maxrss_mb": res["maxrss_mb"], "process_cpu_s": res["cpu_s"]}


def figure_baseline(session) -> dict:
    n_train = session.workspace.splits()["train"]
    large = min(n_train, session.baseline_examples)
    small = max(1, large // 2)
    sizes = (small, large)
    log = common.LoadLog()
    root = session.workspace.root / "baseline"
    raw = {n: [] for n in sizes}
    for rep in range(session.reps):
        log.rep()
        for n in sizes:
            session.log(f"  hcdtf baseline on {n} patches (repetition {rep + 1}/{session.reps})")
            raw[n].append(run_baseline(session.spawner, session.workspace.data_dir, root / f"n{n}_rep{rep}", n, session.seed))

    def stat(n, key):
        return common.summarize(r[key] for r in raw[n])

    results = {}
    for n in sizes:
        results[f"n{n}"] = {
            **stat(n, "wall_time_s"),
            "n_train": raw[n][0]["n_train"],
            "patches_per_s": common.summarize(r["n_train"] / r["wall_time_s"] for r in raw[n]),
            "peak_rss_mb": stat(n, "peak_rss_mb"),
            "process_maxrss_mb": stat(n, "process_maxrss_mb"),
            "process_seconds": stat(n, "process_seconds"),
            "process_cpu_s": stat(n, "process_cpu_s"),
        }
    time_ratio = common.paired_ratio([r["wall_time_s"] for r in raw[large]], [r["wall_time_s"] for r in raw[small]])
    size_ratio = raw[large][0]["n_train"] / raw[small][0]["n_train"]
    exponent = (math.log(time_ratio["median"]) / math.log(size_ratio)
                if time_ratio["median"] and size_ratio > 1 else None)
    peak = max(max(r["peak_rss_mb"], r["process_maxrss_mb"]) for rs in raw.values() for r in rs)
    return {
        "description": "`hcdtf baseline` (streamed SGD logistic regression on raw pixels, default config: 5 epochs, "
                       "batch 512) in a subprocess on N and 2N training patches; median fit time "
                       "(train_summary.json wall_time_s) and peak RSS (train_summary.json peak_rss_mb and the "
                       "OS's ru_maxrss of the child).",
        "unit": "seconds (fit)",
        "sizes": list(sizes),
        "load_avg": log.to_dict(),
        "results": results,
        "ratios": {
            f"fit time n{large} / n{small}": time_ratio,
            "size ratio": round(size_ratio, 4),
            "scaling exponent log(time ratio) / log(size ratio)": round(exponent, 3) if exponent is not None else None,
        },
        "targets": {
            "peak_rss_lt_2gb": common.target(round(peak, 1), 2048.0, "max peak RSS in MB over all runs",
                                             higher_is_better=False),
            "time_at_most_linear": common.target(round(exponent, 3) if exponent is not None else None, 1.1,
                                                 "scaling exponent of the fit time (1 = linear; 10% noise allowed)",
                                                 higher_is_better=False),
        },
    }
