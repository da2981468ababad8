"""``hcdtf mil train|predict|evaluate|export``: attention MIL on the bags ``hcdtf slide embed`` writes.

Registered by :mod:`hcdtf.cli` from ``COMMANDS``; nothing here imports TensorFlow until a command runs.
"""

from __future__ import annotations

import dataclasses

import click

from hcdtf.clitools import CONTEXT, check_choices, config_options, default_help, friendly, given, quiet
from hcdtf.config import MilConfig, load_config
from hcdtf.mil import HEADS


@click.group("mil", context_settings=CONTEXT)
def mil():
    """Slide-level attention MIL on bags of patch embeddings (`hcdtf slide embed`)."""


def _default(key: str) -> str:
    return default_help(f"mil.{key}", getattr(MilConfig(), key))


@mil.command("train", context_settings=CONTEXT)
@click.argument("bags", nargs=-1, required=True, type=click.Path(), metavar="BAG_OR_DIR...")
@click.option("--labels", required=True, type=click.Path(dir_okay=False),
              help="Camelyon16-style reference.csv (name,class with class Tumor or Normal).")
@click.option("--output-dir", required=True, type=click.Path(file_okay=False), help="The run directory.")
@click.option("--epochs", default=None, type=click.IntRange(min=1),
              help="Passes over the training bags (one bag per step). " + _default("epochs"))
@click.option("--learning-rate", default=None, type=click.FloatRange(min=0, min_open=True),
              help="AdamW's learning rate. " + _default("learning_rate"))
@click.option("--weight-decay", default=None, type=click.FloatRange(min=0),
              help="Decoupled weight decay (AdamW). " + _default("weight_decay"))
@click.option("--hidden", default=None, type=click.IntRange(min=1),
              help="Width of the instance layer. " + _default("hidden"))
@click.option("--attention", default=None, type=click.IntRange(min=1),
              help="Width of the gated attention branch. " + _default("attention"))
@click.option("--dropout", default=None, type=click.FloatRange(0, 1, max_open=True),
              help="Dropout after the first dense layer (mil_fc), while training. " + _default("dropout"))
@click.option("--folds", default=None, type=click.IntRange(min=0),
              help="Slide folds, stratified by class (0: train on every slide, no validation). " + _default("folds"))
@click.option("--fold", default=None, type=click.IntRange(min=0), help="The validation fold. " + _default("fold"))
@click.option("--split-seed", default=None, type=int, help="Seed of the folds. " + _default("split_seed"))
@click.option("--seed", default=None, type=int,
              help="Seed of initialisation, bag order and dropout (repeats: other seeds, same folds). "
                   + _default("seed"))
@click.option("--max-instances", type=click.IntRange(min=1), default=None,
              help="Train on a random subset of at most this many patches of a bag per step (bounds memory; "
                   "evaluation always uses every patch) [default: mil.max_instances, else all].")
@click.option("--no-balance", is_flag=True, default=None,
              help="Do not weight the loss to count both classes equally [default: mil.balance = true].")
@click.option("--head", type=click.Choice(HEADS), default=None,
              help="abmil: gated-attention MIL; clam_sb: CLAM-SB (the same attention plus instance clustering "
                   "on the most and least attended patches). " + _default("head"))
@click.option("--bag-weight", default=None, type=click.FloatRange(0, 1),
              help="clam_sb: weight of the slide loss (the instance loss gets the rest). " + _default("bag_weight"))
@click.option("--k-sample", default=None, type=click.IntRange(min=1),
              help="clam_sb: most and least attended patches per bag in the instance loss. " + _default("k_sample"))
@click.option("--overwrite", is_flag=True,
              help="Replace a run of another config in --output-dir (the new run trains in .staging/ and replaces "
                   "the old one after its first epoch).")
@config_options
@friendly
def train_cmd(bags, labels, output_dir, epochs, learning_rate, weight_decay, hidden, attention, dropout, folds,
              fold, split_seed, seed, max_instances, no_balance, head, bag_weight, k_sample, overwrite, config_files,
              overrides):
    """Train gated-attention MIL (Ilse et al. 2018) or CLAM-SB on slide bags with slide labels.

    One bag per step, of any size. The run directory resumes exactly after a kill (rerun the
    same command) and ends with model.keras, history.csv, val_predictions.csv and
    train_summary.json. Settings come from the mil: section of the config (--config, --set
    mil.KEY=VALUE); a flag wins. Repeats: other --seed (and --fold) values, each in its own
    --output-dir; `hcdtf compare` of their evaluations summarises them. Example:

    hcdtf mil train outputs/bags --labels ~/camelyon16/reference.csv --output-dir outputs/mil/fold0
    """
    cfg = load_config(config_files, overrides, given(mil={
        "epochs": epochs, "learning_rate": learning_rate, "weight_decay": weight_decay, "hidden": hidden,
        "attention": attention, "dropout": dropout, "folds": folds, "fold": fold, "split_seed": split_seed,
        "seed": seed, "max_instances": max_instances, "balance": False if no_balance else None, "head": head,
        "bag_weight": bag_weight, "k_sample": k_sample}))
    check_choices(cfg, {"mil.head": HEADS})
    from hcdtf.mil import train

    quiet()
    c = cfg.mil
    settings = {f.name: getattr(c, f.name) for f in dataclasses.fields(train.MilConfig) if hasattr(c, f.name)}
    run_cfg = train.MilConfig(bags=[str(b) for b in bags], labels=str(labels), **settings)
    train.train(run_cfg, output_dir, overwrite=overwrite, log=click.echo)


_MAPS = click.option("--maps/--no-maps", default=None,
                     help="Write (or skip) the attention maps. " + _default("maps"))


@mil.command("predict", context_settings=CONTEXT)
@click.argument("run", type=click.Path(file_okay=False))
@click.argument("bags", nargs=-1, required=True, type=click.Path(), metavar="BAG_OR_DIR...")
@click.option("--output-dir", type=click.Path(file_okay=False), default=None,
              help="Where predictions.csv and attention/ go [default: RUN/predictions].")
@_MAPS
@config_options
@friendly
def predict_cmd(run, bags, output_dir, maps, config_files, overrides):
    """Slide probabilities and attention maps of new bags with a trained MIL RUN."""
    cfg = load_config(config_files, overrides, given(mil={"maps": maps}))
    from hcdtf.mil import evaluate

    quiet()
    evaluate.predict(run, list(bags), output_dir, maps=cfg.mil.maps, log=click.echo)


@mil.command("evaluate", context_settings=CONTEXT)
@click.argument("run", type=click.Path(file_okay=False))
@click.argument("bags", nargs=-1, required=True, type=click.Path(), metavar="BAG_OR_DIR...")
@click.option("--labels", required=True, type=click.Path(dir_okay=False),
              help="reference.csv of the evaluated slides (name,class).")
@click.option("--heatmap", "heatmap_dir", type=click.Path(file_okay=False), default=None,
              help="A `slide predict` --output-dir of the same slides: DeLong test against its slide scores.")
@click.option("--output-dir", type=click.Path(file_okay=False), default=None,
              help="Where mil_metrics.json, predictions.csv and attention/ go [default: RUN/eval].")
@_MAPS
@config_options
@friendly
def evaluate_cmd(run, bags, labels, heatmap_dir, output_dir, maps, config_files, overrides):
    """Slide AUC (DeLong 95% CI) of a MIL RUN on labelled bags; with --heatmap, compared by DeLong's
    test with the heat-map slide score of the same slides. Example:

    hcdtf mil evaluate outputs/mil/fold0 outputs/test_bags --labels reference.csv --heatmap outputs/slides
    """
    cfg = load_config(config_files, overrides, given(mil={"maps": maps}))
    from hcdtf.mil import evaluate

    quiet()
    evaluate.evaluate(run, list(bags), labels, output_dir, heatmap_dir, maps=cfg.mil.maps, log=click.echo)


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
