"""`hcdtf baseline`: fits the logistic-regression baseline into a run directory.

The model itself (features, streamed fit, scoring, ``model.npz``) is ``hcdtf.models.logistic``;
this module feeds it the data set through tf.data and writes the same run-directory layout as a
CNN run, so that `evaluate`, `compare` and `experiment` treat both alike (they evaluate it the
same way too: fitting does not evaluate).
"""

from __future__ import annotations

import time
from typing import Callable, Iterator

import numpy as np

from hcdtf import __version__, atomic, runtime
from hcdtf.evaluation import artifacts
from hcdtf.data import pipeline as data
from hcdtf.config import Config
from hcdtf.models import logistic
from hcdtf.atomic import atomic_output
from hcdtf.rundir import MODEL_FILES, RunDir, RunDirError


def feature_batches(cfg: Config, split: str, shuffle: bool, epoch: int = 0) -> Iterator[tuple]:
    """Yields (features float32 [B, F], labels int) batches of ``split``."""
    kind = cfg.baseline.features
    # The shuffle buffer holds decoded patches: keep it to a few batches so that peak memory
    # stays flat however large the split is (the linear model needs no more mixing).
    buffer = min(cfg.data.shuffle_buffer, 4 * cfg.baseline.batch_size)
    dcfg = data.replace_data(cfg.data, augment=False, cache=False, shuffle_buffer=buffer)
    ds = data.make_dataset(dcfg, split, cfg.baseline.batch_size, training=shuffle,
                           seed=data.epoch_seed(cfg.seed, epoch))
    ds = ds.map(lambda x, y: (logistic.image_features(x, kind), y))
    for x, y in ds.as_numpy_iterator():
        yield x, y.astype(np.int64)


def _summary(cfg: Config, wall: float, seen: int) -> dict:
    n_features = logistic.FEATURES[cfg.baseline.features]
    return {
        "kind": "baseline",
        "arch": "LogisticRegression",
        "depth": None,
        "strategy": "baseline",
        "transfer": None,
        "weights": "none",
        "seed": cfg.seed,
        "fold": cfg.data.fold,
        "features": cfg.baseline.features,
        "solver": cfg.baseline.solver,
        "dataset": f"{cfg.data.dataset}/{cfg.data.dataset_config}",
        "n_train": data.num_examples(cfg.data, cfg.data.train_split),
        "epochs_completed": cfg.baseline.epochs if cfg.baseline.solver == "sgd" else 1,
        "wall_time_s": round(wall, 3),
        "images_per_s": round(seen / wall, 3) if wall > 0 else None,
        "params_total": n_features + 1,
        "params_trainable": n_features + 1,
        "flops_per_image": 2 * n_features,
        "peak_rss_mb": round(runtime.peak_rss_mb(), 1),
        "hcdtf_version": __version__,
        "model": MODEL_FILES["baseline"],
    }


def _fit_into(work: RunDir, cfg: Config, log: Callable[[str], None]) -> dict:
    from hcdtf.inference import scoring

    b = cfg.baseline
    runtime.set_seed(cfg.seed, cfg.deterministic)
    from hcdtf.data import identity as dataid

    work.start(cfg, "baseline", data=dataid.training_record(cfg))
    t0 = time.time()
    model, seen = logistic.fit(
        lambda shuffle, epoch: feature_batches(cfg, cfg.data.train_split, shuffle, epoch),
        b.features, b.solver, alpha=b.alpha, C=b.C, epochs=b.epochs, seed=cfg.seed, log=log)
    wall = time.time() - t0
    with atomic_output(work.model_path("baseline")) as tmp:
        logistic.save(tmp, model)
    ids, labels, scores = scoring.score_split(scoring.baseline_scorer(model), cfg.data, cfg.data.validation_split,
                                              cfg.eval.batch_size)
    artifacts.write_predictions(work.val_predictions_path, ids, labels, scores)
    summary = _summary(cfg, wall, seen)
    atomic.write_json(work.summary_path, summary)  # last: marks the run finished
    return summary


def run(cfg: Config, overwrite: bool = False, log: Callable[[str], None] = print) -> dict:
    """Fits the baseline into ``cfg.output_dir`` and returns its summary. A finished run of the
    same config is left as it is; ``overwrite`` replaces a run of another config, whose files
    stay until the new fit has finished."""
    run_dir = RunDir(cfg.output_dir)
    with run_dir.locked("baseline"):
        state = run_dir.status(cfg, "baseline")
        if state == "complete" and not overwrite:
            log(f"{run_dir.path}: this baseline run is already complete; nothing to do")
            return run_dir.summary()
        if state == "foreign":
            raise RunDirError(f"--output-dir {str(run_dir.path)!r} is not empty and holds no hcdtf run; choose "
                              "another directory (nothing in it is touched)")
        if state == "conflict" and not overwrite:
            raise RunDirError(f"--output-dir {str(run_dir.path)!r} holds a run of another config "
                              f"({run_dir.config_path}); choose another --output-dir or pass --overwrite to replace it")
        data.load_builder(cfg.data)
        staged = state in ("complete", "conflict")
        work = run_dir.staging() if staged else run_dir
        if staged:
            run_dir.discard_staging()
        else:
            run_dir.clear()  # a failed start or a killed fit leaves nothing worth keeping
        summary = _fit_into(work, cfg, log)
        if staged:
            run_dir.swap_in(work)
    log(f"{run_dir.path}: logistic regression ({cfg.baseline.features}, {cfg.baseline.solver}) fitted in "
        f"{summary['wall_time_s']:.1f} s, peak RSS {summary['peak_rss_mb']} MB")
    return summary
