"""``hcdtf evaluate``, ``hcdtf compare``, ``hcdtf experiment`` and ``hcdtf quickstart``: evaluating
runs, and the commands that run whole grids of them and end in a comparison report.

Registered by :mod:`hcdtf.cli` from ``COMMANDS``; nothing here imports TensorFlow until a command runs.
"""

from __future__ import annotations

import pathlib

import click

from hcdtf import compat
from hcdtf.clitools import CONTEXT, comma_ints, config_options, friendly, quiet
from hcdtf.config import ARCHS, ENCODERS, TRANSFERS


@click.command("evaluate", context_settings=CONTEXT)
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--split", default=None, help="Split to evaluate [default: eval.split of the run, test].")
@click.option("--tta", is_flag=True, default=None, help="Average the 8 dihedral transforms of each patch.")
@click.option("--threshold", default=None, help="Decision threshold: a number in (0,1) or 'youden'.")
@click.option("--data-dir", default=None, help="Where the data set is, if moved since training.")
@click.option("--calibrate", is_flag=True,
              help="Temperature scaling fitted on the validation split; metrics on the calibrated scores and "
                   "a reliability plot before/after.")
@friendly
def evaluate_cmd(run_dir, split, tta, threshold, data_dir, calibrate):
    """AUC with bootstrap CI, accuracy, sensitivity, ..., plots and predictions.csv for RUN_DIR."""
    quiet()
    from hcdtf.evaluation import evaluate

    evaluate.evaluate_run(run_dir, split=split, tta=tta, threshold=threshold, data_dir=data_dir,
                          calibrate=calibrate, log=click.echo)


@click.command("compare", context_settings=CONTEXT)
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--output-dir", default="outputs/comparison", show_default=True,
              help="Where report.md, comparison.json and the figures go.")
@click.option("--names", default=None, metavar="A,B,...",
              help="Comma-separated run names for the tables, one per input [default: directory names].")
@click.option("--n-bootstrap", default=1000, show_default=True, type=click.IntRange(min=0),
              help="Bootstrap resamples per AUC CI (0: DeLong intervals).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the bootstrap resamples.")
@friendly
def compare_cmd(inputs, output_dir, names, n_bootstrap, seed):
    """Compare runs scored on the same test examples: per-run table and DeLong tests; for runs
    repeated over seeds/folds, mean/sd per model and paired t-tests over repeats; a verdict on
    depth, the leak audit, figures. INPUTS are run directories or predictions.csv files.
    """
    from hcdtf.evaluation import report

    if len(inputs) < 2:
        raise click.UsageError("compare needs at least two run directories or predictions.csv files")
    name_list = [n.strip() for n in names.split(",")] if names is not None else None
    if name_list is not None and len(name_list) != len(inputs):
        raise click.UsageError(f"--names gives {len(name_list)} names for {len(inputs)} inputs; give one per input")
    result = report.compare(list(inputs), output_dir, names=name_list, n_bootstrap=n_bootstrap, seed=seed,
                            log=click.echo)
    click.echo(result["verdict"].replace("**", ""))
    click.echo(f"wrote {pathlib.Path(output_dir) / 'report.md'}")


@click.command("experiment", context_settings=CONTEXT)
@click.argument("experiment_file", metavar="EXPERIMENT")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override one run-config field for every run, e.g. --set train.epochs=3 (repeatable).")
@click.option("--output-dir", default=None, help="Where the runs and the report go [default: the file's output_dir].")
@click.option("--arch", "archs", multiple=True, type=click.Choice(ARCHS + ENCODERS, case_sensitive=False),
              help="Run only these architectures of the grid (repeatable) [default: the file's archs].")
@click.option("--transfer", "transfers", multiple=True, type=click.Choice(TRANSFERS),
              help="Run only these transfer strategies (repeatable) [default: the file's transfers].")
@click.option(compat.old_flag("experiment", "--transfer"), "transfers", multiple=True, type=click.Choice(TRANSFERS),
              hidden=True)
@click.option("--baseline/--no-baseline", default=None,
              help="Include the logistic-regression baseline [default: the file's baseline].")
@click.option("--seeds", multiple=True, callback=comma_ints, metavar="S,S,...",
              help="Repeat every run with each seed, e.g. --seeds 0,1,2 [default: the file's seeds].")
@click.option("--folds", multiple=True, callback=comma_ints, metavar="K,K,...",
              help="With a fold build: repeat every run with each fold as validation [default: the file's folds].")
@click.option("--overwrite", is_flag=True,
              help="Retrain runs whose config changed since they were trained (unchanged finished runs are kept).")
@friendly
def experiment_cmd(experiment_file, overrides, output_dir, archs, transfers, baseline, seeds, folds, overwrite):
    """Run a grid of runs from an experiment file, evaluate them, write one comparison report.

    EXPERIMENT is a YAML file (see configs/experiments/) or the name of a shipped one: `paper`
    (the paper's ResNet-18/34/50/152 x {frozen base, fine-tuned} + logistic regression) or
    `paper_smoke` (the same grid on a synthetic sample, in minutes). Finished runs are skipped,
    so rerunning the same command continues an interrupted experiment.
    The report is <output-dir>/comparison/report.md.
    """
    quiet()
    from hcdtf import experiment

    experiment.run(experiment_file, overrides=overrides, output_dir=output_dir, archs=archs or None,
                   transfers=transfers or None, baseline=baseline, seeds=seeds, folds=folds, overwrite=overwrite,
                   log=click.echo)


@click.command("quickstart", context_settings=CONTEXT)
@click.option("--output-dir", default="outputs/quickstart", show_default=True,
              help="Where the sample, data set, runs, report, export and slides go.")
@click.option("--n", default=2000, show_default=True, type=click.IntRange(min=40), help="Synthetic patches.")
@click.option("--slides", default=4, show_default=True, type=click.IntRange(min=0),
              help="Synthetic whole slides for the slide demo (0: no slide demo).")
@click.option("--overwrite", is_flag=True, help="Start again from scratch in --output-dir.")
@config_options
@friendly
def quickstart_cmd(output_dir, n, slides, overwrite, config_files, overrides):
    """The whole chain on a generated sample, offline, in minutes on a CPU.

    The experiment configs/experiments/quickstart.yaml: sample-data -> TFDS build -> train ResNet18
    (fine-tuned and frozen base) -> logistic regression -> evaluate -> compare -> export a
    SavedModel; then the whole-slide demo: the exported model over synthetic slides, with heat maps,
    slide AUC and FROC. Rerunning resumes.
    """
    quiet()
    from hcdtf import quickstart

    quickstart.run(output_dir, n=n, overwrite=overwrite, config_files=config_files,
                   overrides=overrides, slides=slides, log=click.echo)


COMMANDS = [evaluate_cmd, compare_cmd, experiment_cmd, quickstart_cmd]
