"""``hcdtf train`` and ``hcdtf baseline``: the training stage's commands.

Registered by :mod:`hcdtf.cli` from ``COMMANDS``; nothing here imports TensorFlow until a command runs.
"""

from __future__ import annotations

import click

from hcdtf import compat
from hcdtf.clitools import CONTEXT, DATASET_CONFIG_HELP, config_options, friendly, given, quiet
from hcdtf.config import ARCHS, BASELINE_FEATURES, BASELINE_SOLVERS, DISTRIBUTIONS, PRECISIONS, STAGES, load_config
from hcdtf.models.encoders.specs import ENCODERS  # published names; imports no TensorFlow


@click.command("train", context_settings=CONTEXT)
@click.option("--arch", type=click.Choice(ARCHS + ENCODERS), default=None,
              help="Architecture: a ResNet or a pathology encoder [default: model.arch].")
@click.option("--freeze-base", "freeze", flag_value="freeze_base", default=None,
              help="Train only the last layer on a frozen ImageNet base (the paper's strategy 1).")
@click.option("--fine-tune", "fine", flag_value="fine_tune", default=None,
              help="Fine-tune all layers (the paper's strategy 2; the default).")
@click.option("--trainable-from", type=click.Choice(STAGES), default=None,
              help="Fine-tune only from this stage on (freeze 'most' layers).")
@click.option("--weights", default=None, help="imagenet, none, or a path to a weights file.")
@click.option("--data-dir", default=None, help="TFDS data_dir with the built data set.")
@click.option("--dataset-config", default=None, metavar="NAME", help=f"Built data set config: {DATASET_CONFIG_HELP}.")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Epochs [default: train.epochs].")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Global batch size.")
@click.option("--precision", type=click.Choice(PRECISIONS), default=None,
              help="auto: mixed_float16 on a GPU, float32 on a CPU.")
@click.option("--distribution", "dist", type=click.Choice(DISTRIBUTIONS), default=None,
              help="tf.distribute strategy (multiworker reads TF_CONFIG).")
@click.option(compat.old_flag("train", "--distribution"), "dist", type=click.Choice(DISTRIBUTIONS), hidden=True)
@click.option("--output-dir", default=None, help="Run directory [default: output_dir].")
@click.option("--overwrite", is_flag=True,
              help="Replace the run in --output-dir (finished, or of another config); the old one stays until "
                   "the new one has a finished epoch.")
@click.option("--seed", type=int, default=None, help="Seed of weights, data order and augmentation [default: seed].")
@config_options
@friendly
def train_cmd(arch, freeze, fine, trainable_from, weights, data_dir, dataset_config, epochs, batch_size,
              precision, dist, output_dir, overwrite, seed, config_files, overrides):
    """Train a ResNet classifier; rerun the same command to resume a killed run.

    Example: hcdtf train --arch ResNet152 --freeze-base --data-dir D --output-dir outputs/r152_frozen
    """
    if freeze and fine:
        raise click.UsageError("--freeze-base and --fine-tune are exclusive: choose one transfer strategy")
    if trainable_from and freeze:
        raise click.UsageError("--trainable-from applies to fine-tuning; drop --freeze-base")
    quiet()
    from hcdtf.training import train

    cfg = load_config(config_files, overrides, given(
        seed=seed, output_dir=output_dir,
        data={"data_dir": data_dir, "dataset_config": dataset_config},
        model={"arch": arch, "transfer": freeze or fine or ("fine_tune" if trainable_from else None),
               "trainable_from": trainable_from, "weights": weights},
        train={"epochs": epochs, "batch_size": batch_size, "precision": precision, "distribution": dist},
    ))
    train.train(cfg, overwrite=overwrite, log=click.echo)


@click.command("baseline", context_settings=CONTEXT)
@click.option("--features", type=click.Choice(list(BASELINE_FEATURES)), default=None,
              help="pixels: 96x96x3; center32: the centre 32x32x3 crop; gray: 96x96 grayscale.")
@click.option("--solver", type=click.Choice(BASELINE_SOLVERS), default=None,
              help="sgd: streamed SGDClassifier(log_loss), memory independent of data size; "
                   "lbfgs: exact LogisticRegression, the whole split must fit in RAM.")
@click.option("--data-dir", default=None, help="TFDS data_dir with the built data set [default: data.data_dir].")
@click.option("--output-dir", default=None, help="Run directory [default: output_dir].")
@click.option("--overwrite", is_flag=True, help="Replace a finished run or a run of another config in --output-dir.")
@click.option("--seed", type=int, default=None, help="Seed of the SGD solver and the data order [default: seed].")
@config_options
@friendly
def baseline_cmd(features, solver, data_dir, output_dir, overwrite, seed, config_files, overrides):
    """Logistic regression on raw pixels (the paper's baseline), evaluated on the test split."""
    quiet()
    from hcdtf.evaluation import evaluate
    from hcdtf.training import baseline

    cfg = load_config(config_files, overrides, given(
        seed=seed, output_dir=output_dir, data={"data_dir": data_dir},
        baseline={"features": features, "solver": solver}))
    baseline.run(cfg, overwrite=overwrite, log=click.echo)
    evaluate.evaluate_run(cfg.output_dir, split=cfg.eval.split, log=click.echo)


COMMANDS = [train_cmd, baseline_cmd]
