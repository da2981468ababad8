"""``hcdtf mil train|predict|evaluate|export``: attention MIL on the bags ``hcdtf slide embed`` writes.

Registered by :mod:`hcdtf.cli` from ``COMMANDS``; nothing here imports TensorFlow until a command runs.
"""

from __future__ import annotations

import click

from hcdtf.clitools import CONTEXT, friendly, quiet
from hcdtf.mil import HEADS


@click.group("mil", context_settings=CONTEXT)
def mil():
    """Slide-level attention MIL on bags of patch embeddings (`hcdtf slide embed`)."""


@mil.command("train", context_settings=CONTEXT)
@click.argument("bags", nargs=-1, required=True, type=click.Path(), metavar="BAG_OR_DIR...")
@click.option("--labels", required=True, type=click.Path(dir_okay=False),
              help="Camelyon16-style reference.csv (name,class with class Tumor or Normal).")
@click.option("--output-dir", required=True, type=click.Path(file_okay=False), help="The run directory.")
@click.option("--epochs", default=20, show_default=True, type=click.IntRange(min=1),
              help="Passes over the training bags (one bag per step).")
@click.option("--learning-rate", default=2e-4, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="AdamW's learning rate.")
@click.option("--weight-decay", default=1e-5, show_default=True, type=click.FloatRange(min=0),
              help="Decoupled weight decay (AdamW).")
@click.option("--hidden", default=128, show_default=True, type=click.IntRange(min=1),
              help="Width of the instance layer.")
@click.option("--attention", default=64, show_default=True, type=click.IntRange(min=1),
              help="Width of the gated attention branch.")
@click.option("--dropout", default=0.25, show_default=True, type=click.FloatRange(0, 1, max_open=True),
              help="Dropout after the first dense layer (mil_fc), while training.")
@click.option("--folds", default=5, show_default=True, type=click.IntRange(min=0),
              help="Slide folds, stratified by class (0: train on every slide, no validation).")
@click.option("--fold", default=0, show_default=True, type=click.IntRange(min=0), help="The validation fold.")
@click.option("--split-seed", default=0, show_default=True, type=int, help="Seed of the folds.")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seed of initialisation, bag order and dropout (repeats: other seeds, same folds).")
@click.option("--max-instances", type=click.IntRange(min=1), default=None,
              help="Train on a random subset of at most this many patches of a bag per step (bounds memory; "
                   "evaluation always uses every patch) [default: all].")
@click.option("--no-balance", is_flag=True, help="Do not weight the loss to count both classes equally.")
@click.option("--head", type=click.Choice(HEADS), default="abmil", show_default=True,
              help="abmil: gated-attention MIL; clam_sb: CLAM-SB (the same attention plus instance clustering "
                   "on the most and least attended patches).")
@click.option("--bag-weight", default=0.7, show_default=True, type=click.FloatRange(0, 1),
              help="clam_sb: weight of the slide loss (the instance loss gets the rest).")
@click.option("--k-sample", default=8, show_default=True, type=click.IntRange(min=1),
              help="clam_sb: most and least attended patches per bag in the instance loss.")
@click.option("--overwrite", is_flag=True,
              help="Replace a run of another config in --output-dir (the new run trains in .staging/ and replaces "
                   "the old one after its first epoch).")
@friendly
def train_cmd(bags, labels, output_dir, epochs, learning_rate, weight_decay, hidden, attention, dropout, folds,
              fold, split_seed, seed, max_instances, no_balance, head, bag_weight, k_sample, overwrite):
    """Train gated-attention MIL (Ilse et al. 2018) or CLAM-SB on slide bags with slide labels.

    One bag per step, of any size. The run directory resumes exactly after a kill (rerun the
    same command) and ends with model.keras, history.csv, val_predictions.csv and
    train_summary.json. Example:

    hcdtf mil train outputs/bags --labels ~/camelyon16/reference.csv --output-dir outputs/mil/fold0
    """
    from hcdtf.mil import train

    quiet()
    cfg = train.MilConfig(bags=[str(b) for b in bags], labels=str(labels), hidden=hidden, attention=attention,
                          dropout=dropout, epochs=epochs, learning_rate=learning_rate, weight_decay=weight_decay,
                          balance=not no_balance, max_instances=max_instances, folds=folds, fold=fold,
                          split_seed=split_seed, seed=seed, head=head, bag_weight=bag_weight, k_sample=k_sample)
    train.train(cfg, output_dir, overwrite=overwrite, log=click.echo)


@mil.command("predict", context_settings=CONTEXT)
@click.argument("run", type=click.Path(file_okay=False))
@click.argument("bags", nargs=-1, required=True, type=click.Path(), metavar="BAG_OR_DIR...")
@click.option("--output-dir", type=click.Path(file_okay=False), default=None,
              help="Where predictions.csv and attention/ go [default: RUN/predictions].")
@click.option("--no-maps", is_flag=True, help="Skip the attention maps.")
@friendly
def predict_cmd(run, bags, output_dir, no_maps):
    """Slide probabilities and attention maps of new bags with a trained MIL RUN."""
    from hcdtf.mil import evaluate

    quiet()
    evaluate.predict(run, list(bags), output_dir, maps=not no_maps, log=click.echo)


@mil.command("evaluate", context_settings=CONTEXT)
@click.argument("run", type=click.Path(file_okay=False))
@click.argument("bags", nargs=-1, required=True, type=click.Path(), metavar="BAG_OR_DIR...")
@click.option("--labels", required=True, type=click.Path(dir_okay=False),
              help="reference.csv of the evaluated slides (name,class).")
@click.option("--heatmap", "heatmap_dir", type=click.Path(file_okay=False), default=None,
              help="A `slide predict` --output-dir of the same slides: DeLong test against its slide scores.")
@click.option("--output-dir", type=click.Path(file_okay=False), default=None,
              help="Where mil_metrics.json, predictions.csv and attention/ go [default: RUN/eval].")
@click.option("--no-maps", is_flag=True, help="Skip the attention maps.")
@friendly
def evaluate_cmd(run, bags, labels, heatmap_dir, output_dir, no_maps):
    """Slide AUC (DeLong 95% CI) of a MIL RUN on labelled bags; with --heatmap, compared by DeLong's
    test with the heat-map slide score of the same slides. Example:

    hcdtf mil evaluate outputs/mil/fold0 outputs/test_bags --labels reference.csv --heatmap outputs/slides
    """
    from hcdtf.mil import evaluate

    quiet()
    evaluate.evaluate(run, list(bags), labels, output_dir, heatmap_dir, maps=not no_maps, log=click.echo)


@mil.command("export", context_settings=CONTEXT)
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--export-dir", required=True, type=click.Path(file_okay=False), help="A new directory.")
@friendly
def export_cmd(run, export_dir):
    """SavedModel of a MIL RUN: bag (features [n, d], coords [n, 2]) -> probability, attention."""
    from hcdtf.mil import evaluate

    quiet()
    evaluate.export(run, export_dir, log=click.echo)


COMMANDS = [mil]
