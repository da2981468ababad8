"""A run directory's final model, loaded and ready to score, whatever its kind.

:mod:`hcdtf.rundir` says where a run's model file is (``RunDir.model_path``) and whether the run
is a CNN or the logistic-regression baseline (``RunDir.kind``); this module turns that file into
a model (:func:`load_model`, :func:`load_baseline`) or a :class:`hcdtf.inference.scoring.Scorer`
(:func:`scorer`). It lives here, above the run directory, so that the run directory (a layout and
its guarantees) imports no Keras, no model code and no scoring.

Every function takes a :class:`~hcdtf.rundir.RunDir` or a path to one.
"""

from __future__ import annotations

import os

from hcdtf.rundir import RunDir, RunNotFoundError

__all__ = ["load_baseline", "load_model", "scorer"]


def _run(run: RunDir | str | os.PathLike) -> RunDir:
    return run if isinstance(run, RunDir) else RunDir(run)


def load_model(run: RunDir | str | os.PathLike):
    """The run's final Keras model (``model.keras``), uncompiled, with our custom layers (and an
    encoder classifier's keras-hub layers) registered first."""
    import keras

    import hcdtf.models.layers  # noqa: F401  registers our layers for loading
    from hcdtf.models.encoders import register_layers_for

    run = _run(run)
    path = run.model_path("cnn")
    if not path.is_file():
        raise RunNotFoundError(f"{path} not found: the run in {str(run.path)!r} has not finished training")
    register_layers_for(path)  # an encoder classifier's layers (imports keras-hub only then)
    return keras.saving.load_model(str(path), compile=False)


def load_baseline(run: RunDir | str | os.PathLike) -> dict:
    """The baseline run's logistic regression (``model.npz``) on the features its config names."""
    from hcdtf.models import logistic

    run = _run(run)
    path = run.model_path("baseline")
    if not path.is_file():
        raise RunNotFoundError(f"{path} not found: the baseline in {str(run.path)!r} has not finished")
    return logistic.load(path, features=run.config().baseline.features)


def scorer(run: RunDir | str | os.PathLike):
    """A :class:`hcdtf.inference.scoring.Scorer` for the run's final model, whatever its kind."""
    from hcdtf.inference import scoring

    run = _run(run)
    if run.kind() == "baseline":
        return scoring.baseline_scorer(load_baseline(run), f"baseline run {run.path}")
    return scoring.keras_scorer(load_model(run), f"run {run.path}")
