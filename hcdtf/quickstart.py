"""`hcdtf quickstart`: the whole chain on a generated sample, offline, in minutes on a CPU.

Every stage is the real one a user runs on the Kaggle data; only the data (a synthetic sample in
the Kaggle layout) and the sizes (configs/quickstart.yaml) differ. Each stage skips work that is
already complete, so an interrupted quick start resumes where it stopped.
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import Callable

from hcdtf import config as config_lib


def run(
    output_dir: str = "outputs/quickstart",
    n: int = 2000,
    overwrite: bool = False,
    config_files=(),
    overrides=(),
    log: Callable[[str], None] = print,
) -> dict:
    import shutil

    from hcdtf import baseline, data, evaluate, export, report, synthetic, train

    out = pathlib.Path(output_dir)
    if overwrite and out.exists():
        if not (out / "quickstart.json").is_file() and not (out / "sample").is_dir():
            raise FileExistsError(f"{out} does not look like a quick-start directory; not removing it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    timings: dict[str, float] = {}

    def stage(name: str):
        timings[name] = round(time.time() - stage.t, 1)
        stage.t = time.time()

    stage.t = time.time()

    # 1. A synthetic sample in the Kaggle layout.
    sample = out / "sample"
    if not (sample / "train_labels.csv").is_file():
        info = synthetic.write_sample(sample, n=n, seed=0)
        log(f"[1/7] sample: {info.n_train} labelled + {info.n_test} unlabelled patches in {sample}")
    else:
        log(f"[1/7] sample: reusing {sample}")
    stage("sample")

    # 2. The TFDS build, through the same builder as `tfds build tfds_builder/hcd`.
    files = [config_lib.configs_dir() / "quickstart.yaml", *config_files]
    base_overrides = [f"data.data_dir={out / 'tensorflow_datasets'}", *overrides]
    cfg = config_lib.load_config(files, base_overrides)
    builder = data.get_builder(cfg.data.data_dir, cfg.data.dataset_config)
    if not builder.is_prepared():
        builder = data.build_dataset(str(sample), cfg.data.data_dir, cfg.data.dataset_config)
    splits = {k: v.num_examples for k, v in builder.info.splits.items()}
    log(f"[2/7] TFDS build: {builder.data_dir} {splits}")
    stage("tfds_build")

    # 3. ResNet18 with both transfer strategies.
    runs = {}
    for strategy, extra in (("fine_tune", []), ("freeze_base", [config_lib.configs_dir() / "freeze_base.yaml"])):
        run_dir = out / "runs" / f"{cfg.model.arch.lower()}_{strategy}"
        rcfg = config_lib.load_config(
            [*files, *extra], [*base_overrides, f"output_dir={run_dir}", f"model.strategy={strategy}"]
        )
        if strategy == "freeze_base":
            # Without augmentation the frozen base's features are computed once (feature cache).
            rcfg.data.augment = False
        log(f"[3/7] train {rcfg.model.arch} ({strategy}) -> {run_dir}")
        train.train(rcfg, log=log)
        runs[strategy] = run_dir
        stage(f"train_{strategy}")

    # 4. The logistic-regression baseline (evaluated on the test split as it finishes).
    lr_dir = out / "runs" / "logistic_regression"
    log(f"[4/7] logistic regression on pixels -> {lr_dir}")
    baseline.run(config_lib.load_config(files, [*base_overrides, f"output_dir={lr_dir}"]), log=log)
    stage("baseline")

    # 5. Test-set evaluation of the CNNs.
    results = {}
    for strategy, run_dir in runs.items():
        done = run_dir / "metrics.json"
        if done.is_file() and done.stat().st_mtime >= (run_dir / "model.keras").stat().st_mtime:
            log(f"[5/7] evaluate {run_dir.name}: already done")
            results[strategy] = json.loads(done.read_text())
            continue
        log(f"[5/7] evaluate {run_dir.name}")
        results[strategy] = evaluate.evaluate_run(run_dir, log=log)
    stage("evaluate")

    # 6. Comparison report with DeLong tests.
    comparison_dir = out / "comparison"
    report.compare([*runs.values(), lr_dir], comparison_dir, n_bootstrap=cfg.eval.n_bootstrap, seed=cfg.seed)
    log(f"[6/7] comparison report: {comparison_dir / 'report.md'}")
    stage("compare")

    # 7. SavedModel export of the best CNN by validation AUC, for TF Serving.
    best = max(runs, key=lambda s: json.loads((runs[s] / "train_summary.json").read_text())["best_val_auc"] or 0)
    export_dir = out / "models" / "hcd"
    existing = sorted(p for p in export_dir.glob("[0-9]*") if p.is_dir()) if export_dir.is_dir() else []
    saved = existing[-1] if existing else export.export_run(runs[best], export_dir, log=log)
    log(f"[7/7] SavedModel for TF Serving: {saved}")
    stage("export")

    summary = {
        "output_dir": str(out),
        "report": str(comparison_dir / "report.md"),
        "saved_model": str(saved),
        "test_auc": {**{s: r["auc"] for s, r in results.items()},
                     "logistic_regression": json.loads((lr_dir / "metrics.json").read_text())["auc"]},
        "seconds": timings,
        "total_seconds": round(time.time() - t_start, 1),
    }
    (out / "quickstart.json").write_text(json.dumps(summary, indent=2))
    log(f"done in {summary['total_seconds']:.0f} s. Test AUC: "
        + ", ".join(f"{k} {v:.3f}" for k, v in summary["test_auc"].items()))
    log(f"report: {summary['report']}\nmodel:  {summary['saved_model']}")
    return summary
