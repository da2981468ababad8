"""``hcdtf slide embed`` and ``hcdtf mil train|predict|evaluate|export``.

hcdtf.cli adds them with ``commands(friendly, CONTEXT)`` (``slide embed`` joins the ``slide``
group); user errors are one line and exit code 2, as for every other command.
"""

from __future__ import annotations

import sys

import click


def embed_command(friendly, context) -> click.Command:
    from hcdtf.slide import tissue

    @click.command("embed", context_settings=context)
    @click.argument("model")
    @click.argument("slides", nargs=-1, required=True, type=click.Path(), metavar="SLIDE_OR_DIR...")
    @click.option("--output-dir", required=True, type=click.Path(file_okay=False),
                  help="Where <slide id>.h5 bags and embeddings.csv go (never beside the slides).")
    @click.option("--weights", default="imagenet", show_default=True,
                  help="For an architecture MODEL: imagenet, none (random, from --seed) or a weights file.")
    @click.option("--seed", default=0, show_default=True, type=int, help="Initialisation seed with --weights none.")
    @click.option("--stride", default=32, show_default=True, type=click.IntRange(min=1),
                  help="Cell size in px at the model's resolution (one 96x96 patch centred on each cell).")
    @click.option("--mpp", type=click.FloatRange(min=0, min_open=True), default=None,
                  help="Level-0 um/px, for slides that do not record it.")
    @click.option("--min-tissue", default=tissue.DEFAULT_MIN_TISSUE, show_default=True, type=click.FloatRange(0, 1),
                  help="Share of a cell that must be tissue for its patch to be embedded.")
    @click.option("--min-saturation", default=tissue.DEFAULT_MIN_SATURATION, show_default=True,
                  type=click.FloatRange(0, 1, max_open=True), help="Lowest HSV saturation counted as tissue.")
    @click.option("--batch-size", default=128, show_default=True, type=click.IntRange(min=1),
                  help="Patches per encoder call.")
    @click.option("--threads", default=2, show_default=True, type=click.IntRange(min=1),
                  help="Threads reading slide tiles while the encoder works.")
    @click.option("--checkpoint-seconds", default=30.0, show_default=True, type=click.FloatRange(min=0),
                  help="How often a slide's features so far are saved (a killed run resumes from there).")
    @click.option("--overwrite", is_flag=True, help="Replace bags of another encoder or other settings.")
    @friendly
    def embed_cmd(model, slides, output_dir, weights, seed, stride, mpp, min_tissue, min_saturation, batch_size,
                  threads, checkpoint_seconds, overwrite):
        """Patch embeddings of whole slides: one HDF5 bag per slide (features + coords, as CLAM/TRIDENT).

        MODEL is a run directory or .keras file (the pooled features before the head; any Keras
        model whose output is [batch, d]) or an architecture name (ResNet18 ... ResNet152, with
        --weights). The patches are those `slide predict` scores: same resolution, tissue mask and
        grid. Rerun to resume a killed run. Example:

        hcdtf slide embed outputs/models/hcd/1 ~/camelyon16/training --output-dir outputs/bags
        """
        from hcdtf import runtime
        from hcdtf.slide import embed, inference

        runtime.quiet_tensorflow()
        settings = inference.Settings(stride=stride, mpp=mpp, min_tissue=min_tissue, min_saturation=min_saturation,
                                      batch_size=batch_size)
        result = embed.embed_slides(model, slides, output_dir, settings, overwrite=overwrite, log=click.echo,
                                    threads=threads, checkpoint_seconds=checkpoint_seconds, weights=weights, seed=seed)
        if result["failed"]:
            click.echo(f"{len(result['failed'])} of {result['slides']} slide(s) failed:", err=True)
            for message in result["failed"]:
                click.echo(f"  {message}", err=True)
            sys.exit(1)

    return embed_cmd


def commands(friendly, context) -> list[click.Command]:
    """The ``mil`` group."""

    @click.group("mil", context_settings=context)
    def mil():
        """Slide-level attention MIL on bags of patch embeddings (`hcdtf slide embed`)."""

    @mil.command("train", context_settings=context)
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
    @click.option("--overwrite", is_flag=True, help="Replace a run of another config in --output-dir.")
    @friendly
    def train_cmd(bags, labels, output_dir, epochs, learning_rate, weight_decay, hidden, attention, dropout, folds,
                  fold, split_seed, seed, max_instances, no_balance, overwrite):
        """Train gated-attention MIL (Ilse et al. 2018) on slide bags with slide labels.

        One bag per step, of any size. The run directory resumes exactly after a kill (rerun the
        same command) and ends with model.keras, history.csv, val_predictions.csv and
        train_summary.json. Example:

        hcdtf mil train outputs/bags --labels ~/camelyon16/reference.csv --output-dir outputs/mil/fold0
        """
        from hcdtf import runtime
        from hcdtf.mil import train

        runtime.quiet_tensorflow()
        cfg = train.MilConfig(bags=[str(b) for b in bags], labels=str(labels), hidden=hidden, attention=attention,
                              dropout=dropout, epochs=epochs, learning_rate=learning_rate, weight_decay=weight_decay,
                              balance=not no_balance, max_instances=max_instances, folds=folds, fold=fold,
                              split_seed=split_seed, seed=seed)
        train.train(cfg, output_dir, overwrite=overwrite, log=click.echo)

    @mil.command("predict", context_settings=context)
    @click.argument("run", type=click.Path(file_okay=False))
    @click.argument("bags", nargs=-1, required=True, type=click.Path(), metavar="BAG_OR_DIR...")
    @click.option("--output-dir", type=click.Path(file_okay=False), default=None,
                  help="Where predictions.csv and attention/ go [default: RUN/predictions].")
    @click.option("--no-maps", is_flag=True, help="Skip the attention maps.")
    @friendly
    def predict_cmd(run, bags, output_dir, no_maps):
        """Slide probabilities and attention maps of new bags with a trained MIL RUN."""
        from hcdtf import runtime
        from hcdtf.mil import evaluate

        runtime.quiet_tensorflow()
        evaluate.predict(run, list(bags), output_dir, maps=not no_maps, log=click.echo)

    @mil.command("evaluate", context_settings=context)
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
        from hcdtf import runtime
        from hcdtf.mil import evaluate

        runtime.quiet_tensorflow()
        evaluate.evaluate(run, list(bags), labels, output_dir, heatmap_dir, maps=not no_maps, log=click.echo)

    @mil.command("export", context_settings=context)
    @click.argument("run", type=click.Path(file_okay=False))
    @click.option("--export-dir", required=True, type=click.Path(file_okay=False), help="A new directory.")
    @friendly
    def export_cmd(run, export_dir):
        """SavedModel of a MIL RUN: bag (features [n, d], coords [n, 2]) -> probability, attention."""
        from hcdtf import runtime
        from hcdtf.mil import evaluate

        runtime.quiet_tensorflow()
        evaluate.export(run, export_dir, log=click.echo)

    return [mil]
