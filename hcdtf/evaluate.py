"""Evaluate a run directory (CNN or baseline) on a split of the built data set.

For the test split the artifacts go into the run directory itself (``metrics.json``,
``predictions.csv``, ``roc.png``, ``pr.png``, ``reliability.png``, ``confusion_matrix.png``), where
`hcdtf compare` looks for them; another split goes into ``<run>/eval_<split>/``.
"""

from __future__ import annotations

import json
import pathlib
from typing import Callable

from hcdtf import artifacts, data, metrics
from hcdtf.config import Config, ConfigError, from_dict, load_yaml


class RunNotFoundError(FileNotFoundError):
    pass


def load_run_config(run_dir: str | pathlib.Path) -> Config:
    run = pathlib.Path(run_dir)
    path = run / "config.yaml"
    if not path.is_file():
        raise RunNotFoundError(
            f"{str(run)!r} is not an hcdtf run directory (no config.yaml); pass the --output-dir "
            "of a finished `hcdtf train` or `hcdtf baseline`"
        )
    return from_dict(load_yaml(path), str(path))


def is_baseline(run: pathlib.Path) -> bool:
    return (run / "model.npz").is_file()


def load_keras_model(run: pathlib.Path):
    import keras

    import hcdtf.models.layers  # noqa: F401  registers our preprocessing layer for loading

    path = run / "model.keras"
    if not path.is_file():
        raise RunNotFoundError(f"{path} not found: the run in {str(run)!r} has not finished training")
    return keras.saving.load_model(str(path), compile=False)


def score_run(run_dir, cfg: Config, split: str, tta: bool = False):
    """(ids, labels, scores) of the run's model on ``split``."""
    run = pathlib.Path(run_dir)
    if is_baseline(run):
        from hcdtf import baseline

        if tta:
            raise ConfigError("--tta applies to CNN runs; the logistic-regression baseline has no TTA")
        return baseline.predict(baseline.load_model(run / "model.npz"), cfg, split)
    from hcdtf import train

    model = load_keras_model(run)
    return train.predict_split(model, cfg, split, tta=tta, batch_size=cfg.eval.batch_size)


def resolve_threshold(run: pathlib.Path, threshold: str) -> tuple[float, str]:
    """A number, or ``youden``: the Youden-optimal threshold on the run's validation predictions."""
    if threshold != "youden":
        return float(threshold), "fixed"
    val = run / "val_predictions.csv"
    if not val.is_file():
        raise RunNotFoundError(f"{val} not found: the Youden threshold is chosen on validation predictions")
    _, y, s = artifacts.read_predictions(val)
    return float(metrics.youden_threshold(y, s)), "youden (validation)"


def evaluate_run(
    run_dir,
    split: str | None = None,
    tta: bool | None = None,
    threshold: str | None = None,
    data_dir: str | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Scores ``run_dir`` on ``split``, writes the artifacts and returns the metrics."""
    run = pathlib.Path(run_dir)
    cfg = load_run_config(run)
    if data_dir:
        cfg.data.data_dir = data_dir
    split = split or cfg.eval.split
    tta = cfg.eval.tta if tta is None else tta
    threshold = threshold or cfg.eval.threshold
    if threshold != "youden":
        from hcdtf.config import EvalConfig

        EvalConfig(threshold=str(threshold)).validate()
    data.load_builder(cfg.data)
    ids, labels, scores = score_run(run, cfg, split, tta=tta)
    t, how = resolve_threshold(run, str(threshold))
    result = metrics.compute_metrics(labels, scores, threshold=t, n_bootstrap=cfg.eval.n_bootstrap, seed=cfg.seed)
    result.update({"split": split, "tta": bool(tta), "threshold_method": how})
    summary_path = run / "train_summary.json"
    if summary_path.is_file():
        s = json.loads(summary_path.read_text())
        result.update({k: s.get(k) for k in ("arch", "strategy", "depth") if k in s})
    out = run if split == cfg.data.test_split else run / f"eval_{split}"
    artifacts.write_eval_artifacts(out, ids, labels, scores, result)
    log(f"{run}: {split} AUC {result['auc']:.4f} (95% CI {result['auc_ci95'][0]:.4f}-"
        f"{result['auc_ci95'][1]:.4f}), accuracy {result['accuracy']:.4f} at threshold {t:.3f}; "
        f"wrote {out / 'metrics.json'}")
    return result
