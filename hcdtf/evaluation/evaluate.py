"""`hcdtf evaluate`: scores a run (CNN or baseline) on a split and writes its metrics and plots.

For the test split the artifacts go into the run directory itself (``metrics.json``,
``predictions.csv``, ``roc.png``, ``pr.png``, ``reliability.png``, ``confusion_matrix.png``), where
`hcdtf compare` looks for them; another split goes into ``<run>/eval_<split>/``. ``metrics.json``
records which model file it scored, so a retrained model makes it stale
(``RunDir.evaluation_current``).
"""

from __future__ import annotations

import pathlib
from typing import Callable

from hcdtf.evaluation import artifacts, metrics
from hcdtf.data import pipeline as data, identity as dataid
from hcdtf.inference import loading, scoring
from hcdtf.config import Config, ConfigError, EvalConfig
from hcdtf.rundir import RunDir, RunNotFoundError

__all__ = ["RunNotFoundError", "evaluate_run", "resolve_threshold"]


def resolve_threshold(run: RunDir, threshold: str, validation: tuple | None = None,
                      how: str = "validation") -> tuple[float, str]:
    """A number, or ``youden``: the Youden-optimal threshold on the run's validation predictions,
    or on ``validation`` = (labels, scores) when the evaluated scores are not plain model outputs
    (TTA, calibrated): a threshold must be chosen on scores made the same way as those it cuts."""
    if threshold != "youden":
        return float(threshold), "fixed"
    if validation is not None:
        return float(metrics.youden_threshold(*validation)), f"youden ({how})"
    if not run.val_predictions_path.is_file():
        raise RunNotFoundError(f"{run.val_predictions_path} not found: the Youden threshold is chosen on "
                               "validation predictions")
    _, y, s = artifacts.read_predictions(run.val_predictions_path)
    return float(metrics.youden_threshold(y, s)), "youden (validation)"


def _check_split(cfg: Config, split: str) -> None:
    splits = data.load_builder(cfg.data).info.splits
    if split not in splits:
        raise ConfigError(f"--split {split!r} is not a split of the built data set; available: {', '.join(splits)}")
    if split == "kaggle_test":
        raise ConfigError("--split kaggle_test: Kaggle's test patches have no labels, so there is nothing to "
                          "evaluate; score them with `hcdtf predict RUN --images DIR --out submission.csv`")


def _calibrate(run: RunDir, cfg: Config, scorer, labels, scores, out: pathlib.Path, log) -> tuple:
    """Temperature scaling fitted on the validation split (``--calibrate``)."""
    from hcdtf.evaluation import calibration, plots

    _, val_labels, val_scores = scoring.score_split(scorer, cfg.data, cfg.data.validation_split, cfg.eval.batch_size)
    calibrated, info = calibration.calibrate(val_labels, val_scores, labels, scores)
    out.mkdir(parents=True, exist_ok=True)
    plots.plot_reliability_before_after(out / "reliability_calibrated.png", labels, scores, calibrated,
                                        title=f"{run.path.name}: temperature scaling",
                                        temperature=info["temperature"])
    log(f"temperature scaling on the validation split: T = {info['temperature']:.4g}")
    from hcdtf.evaluation.calibration import apply_temperature

    return calibrated, info, (val_labels, apply_temperature(val_scores, info["temperature"]))


def _trained_on_this_build(run: RunDir, cfg: Config, split: str, log) -> bool | None:
    """Whether the run was trained on the build it is evaluated on (None: unknown), said in one
    line when not: a rebuild can move ids between splits, so the model may have trained on
    patches of this split."""
    changes = dataid.training_changes(run.data_record(), cfg)
    if changes is None:
        log(f"note: {run.path} records no identity of the data it was trained on (an older hcdtf, or the data "
            "set is not built), so it cannot be checked against this build")
        return None
    if changes:
        log(f"warning: {run.path} was trained on another build of {cfg.data.dataset}/{cfg.data.dataset_config} "
            f"({'; '.join(changes)}): the {split} split may hold patches it trained on; retrain it on this build "
            "(hcdtf train ... --overwrite) for a fair score")
    return not changes


def evaluate_run(
    run_dir,
    split: str | None = None,
    tta: bool | None = None,
    threshold: str | None = None,
    data_dir: str | None = None,
    calibrate: bool = False,
    log: Callable[[str], None] = print,
) -> dict:
    """Scores ``run_dir`` on ``split``, writes the artifacts and returns the metrics."""
    run = RunDir(run_dir)
    cfg = run.config_or_pending_swap()
    if data_dir:
        cfg.data.data_dir = data_dir
    split = split or cfg.eval.split
    tta = cfg.eval.tta if tta is None else tta
    threshold = str(threshold or cfg.eval.threshold)
    EvalConfig(threshold=threshold).validate()
    _check_split(cfg, split)
    with run.locked("evaluate"):  # finishes an --overwrite swap that a kill interrupted
        trained_here = _trained_on_this_build(run, cfg, split, log)
        scorer = loading.scorer(run)
        if tta:
            scorer = scoring.with_tta(scorer)
        ids, labels, scores = scoring.score_split(scorer, cfg.data, split, cfg.eval.batch_size)
        out = run.eval_dir(split, cfg.data.test_split)
        extra = {}
        validation, made = None, "validation"  # validation (labels, scores) made like the evaluated scores
        if calibrate:
            scores, extra["calibration"], validation = _calibrate(run, cfg, scorer, labels, scores, out, log)
            made = "validation, calibrated" + (", with TTA" if tta else "")
        elif tta and threshold == "youden":
            _, val_labels, val_scores = scoring.score_split(scorer, cfg.data, cfg.data.validation_split,
                                                            cfg.eval.batch_size)
            validation, made = (val_labels, val_scores), "validation, with TTA"
        t, how = resolve_threshold(run, threshold, validation, made)
        result = metrics.compute_metrics(labels, scores, threshold=t, n_bootstrap=cfg.eval.n_bootstrap, seed=cfg.seed)
        summary = run.summary() or {}
        result.update({"split": split, "tta": bool(tta), "threshold_method": how, "model_stamp": run.model_stamp(),
                       "data": dataid.evaluation_record(cfg.data, split, ids, labels, trained_here),
                       **{k: summary.get(k) for k in ("kind", "arch", "transfer", "depth", "weights", "seed", "fold")},
                       **extra})
        artifacts.write_eval_artifacts(out, ids, labels, scores, result)
    log(f"{run.path}: {split} AUC {result['auc']:.4f} (95% CI {result['auc_ci95'][0]:.4f}-"
        f"{result['auc_ci95'][1]:.4f}), accuracy {result['accuracy']:.4f} at threshold {t:.3f}; "
        f"wrote {run.metrics_path(split, cfg.data.test_split)}")
    return result
