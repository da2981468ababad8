"""The whole-slide commands: ``hcdtf slide predict|embed|evaluate|annotations|view`` and
``hcdtf sample-slides``.

Registered by :mod:`hcdtf.cli` from ``COMMANDS``; nothing here imports TensorFlow or OpenSlide
until a command runs.
"""

from __future__ import annotations

import sys

import click

from hcdtf.clitools import CONTEXT, check_choices, config_options, default_help, friendly, given, quiet, report_failed
from hcdtf.config import SlideConfig, load_config
from hcdtf.inference.backends import BACKENDS
from hcdtf.inference.beam import RUNNERS
from hcdtf.slide import annotations_out, heatmap, synthetic, tissue


def _default(key: str) -> str:
    return default_help(f"slide.{key}", getattr(SlideConfig(), key))


def _predict_options(fn):
    """``slide predict``'s flags: each setting defaults to the ``slide:`` section of the config
    (configs/base.yaml, --config, --set slide.KEY=VALUE), and a flag given wins."""
    options = [
        click.option("--backend", type=click.Choice(BACKENDS), default=None,
                     help="Runtime of an exported model [default: slide.backend, else detected from MODEL's path]."),
        click.option("--output-dir", required=True, type=click.Path(file_okay=False),
                     help="Where <slide id>/ folders and slides.csv go (never beside the slides)."),
        click.option("--stride", default=None, type=click.IntRange(min=1),
                     help="Cell size in px at the model's resolution; 32 = the centre 32x32 a PCam label describes. "
                          + _default("stride")),
        click.option("--mpp", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="Level-0 um/px, for slides that do not record it (overrides the slide's) "
                          "[default: slide.mpp, else the slide's]."),
        click.option("--min-tissue", default=None, type=click.FloatRange(0, 1),
                     help="Share of a cell that must be tissue for it to be scored. " + _default("min_tissue")),
        click.option("--min-saturation", default=None, type=click.FloatRange(0, 1, max_open=True),
                     help="Lowest HSV saturation counted as tissue (Otsu's threshold is used when higher). "
                          + _default("min_saturation")),
        click.option("--tta", is_flag=True, default=None,
                     help="Average the 8 dihedral transforms of each patch (8x slower). " + _default("tta")),
        click.option("--batch-size", default=None, type=click.IntRange(min=1),
                     help="Patches scored per batch. " + _default("batch_size")),
        click.option("--score", "score_method", type=click.Choice(heatmap.SLIDE_SCORES), default=None,
                     help="Slide score from the smoothed heat map. " + _default("score")),
        click.option("--sigma", default=None, type=click.FloatRange(min=0),
                     help="Gaussian smoothing of the heat map, in cells. " + _default("sigma")),
        click.option("--radius", default=None, type=click.IntRange(min=1),
                     help="A detection is a maximum over (2 radius + 1)^2 cells. " + _default("radius")),
        click.option("--min-probability", default=None, type=click.FloatRange(0, 1),
                     help="Lowest smoothed probability reported as a detection. " + _default("min_probability")),
        click.option("--threads", default=None, type=click.IntRange(min=1),
                     help="Threads reading slide tiles while the model works. " + _default("threads")),
        click.option("--checkpoint-seconds", default=None, type=click.FloatRange(min=0),
                     help="How often a slide's progress is saved (a killed run resumes from there). "
                          + _default("checkpoint_seconds")),
        click.option("--overwrite", is_flag=True, help="Replace results of another model or other settings."),
        click.option("--runner", type=click.Choice(RUNNERS), default=None,
                     help="Run as an Apache Beam pipeline, one slide per element, on this runner "
                          "[default: slide.runner]."),
        click.option("--pipeline-option", "pipeline_options", multiple=True, metavar="--KEY=VALUE",
                     help="Beam pipeline option for --runner (repeatable), e.g. --pipeline-option=--project=P "
                          "[default: slide.pipeline_options]."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@click.group("slide", context_settings=CONTEXT)
def slide():
    """Whole-slide inference (heat maps, detections, slide scores), Camelyon16 evaluation, annotations
    for QuPath and ASAP, and a browser viewer."""


@slide.command("predict", context_settings=CONTEXT)
@click.argument("model", type=click.Path())
@click.argument("slides", nargs=-1, required=True, type=click.Path(), metavar="SLIDE_OR_DIR...")
@_predict_options
@config_options
@friendly
def predict_cmd(model, slides, backend, output_dir, stride, mpp, min_tissue, min_saturation, tta, batch_size,
                score_method, sigma, radius, min_probability, threads, checkpoint_seconds, overwrite, runner,
                pipeline_options, config_files, overrides):
    """Run MODEL over whole slides: heat map, overlay, tissue mask, detections, slide score.

    MODEL is a run directory or an exported model (SavedModel, .keras, ONNX, ...), as for
    `hcdtf predict`. Slides are files or directories of files OpenSlide reads (.svs, .tif,
    .ndpi, .mrxs, ...). Each slide's results go to OUTPUT_DIR/<slide id>/; rerun the same
    command to resume a killed run (finished slides are skipped). A slide that cannot be read
    is reported and the others still run; the exit code is then 1. --runner runs the slides
    as an Apache Beam pipeline (one slide per element; same outputs). Settings come from the
    slide: section of the config (--config, --set slide.KEY=VALUE); a flag wins; each slide's
    slide_summary.json records those that shape its results. Example:

    hcdtf slide predict outputs/models/hcd/1 ~/camelyon16/images --output-dir outputs/slides
    """
    cfg = load_config(config_files, overrides, given(slide={
        "backend": backend, "stride": stride, "mpp": mpp, "min_tissue": min_tissue, "min_saturation": min_saturation,
        "tta": tta, "batch_size": batch_size, "score": score_method, "sigma": sigma, "radius": radius,
        "min_probability": min_probability, "threads": threads, "checkpoint_seconds": checkpoint_seconds,
        "runner": runner, "pipeline_options": pipeline_options}))
    c = cfg.slide
    check_choices(cfg, {"slide.backend": BACKENDS, "slide.runner": RUNNERS, "slide.score": heatmap.SLIDE_SCORES})
    if c.pipeline_options and not c.runner:
        raise click.UsageError("--pipeline-option applies to Beam: add --runner DirectRunner (or another runner)")
    if c.runner and overwrite:
        raise click.UsageError("--overwrite is not available with --runner: run without it, or clear --output-dir")
    quiet()
    from hcdtf.slide import inference

    settings = inference.Settings(stride=c.stride, mpp=c.mpp, min_tissue=c.min_tissue, min_saturation=c.min_saturation,
                                  tta=c.tta, batch_size=c.batch_size, sigma=c.sigma, radius=c.radius,
                                  min_probability=c.min_probability, score=c.score)
    if c.runner:
        from hcdtf.slide import beam

        result = beam.predict_slides_beam(model, slides, output_dir, settings, c.runner, c.pipeline_options, c.backend,
                                          c.threads, c.checkpoint_seconds, log=click.echo)
    else:
        result = inference.predict_slides(model, slides, output_dir, settings, overwrite=overwrite, log=click.echo,
                                          threads=c.threads, checkpoint_seconds=c.checkpoint_seconds,
                                          backend=c.backend)
    report_failed(result)


@slide.command("embed", context_settings=CONTEXT)
@click.argument("model")
@click.argument("slides", nargs=-1, required=True, type=click.Path(), metavar="SLIDE_OR_DIR...")
@click.option("--output-dir", required=True, type=click.Path(file_okay=False),
              help="Where <slide id>.h5 bags and embeddings.csv go (never beside the slides).")
@click.option("--weights", default="imagenet", show_default=True,
              help="For an architecture MODEL: imagenet, none (random, from --seed) or a weights file.")
@click.option("--seed", default=0, show_default=True, type=int, help="Initialisation seed with --weights none.")
@click.option("--stride", default=32, show_default=True, type=click.IntRange(min=1),
              help="Cell size in px at the model's resolution (one patch, 96 px or an encoder's input, centred "
                   "on each cell).")
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
@click.option("--runner", type=click.Choice(RUNNERS), default=None,
              help="Run as an Apache Beam pipeline, one slide per element, on this runner (same bags).")
@click.option("--pipeline-option", "pipeline_options", multiple=True, metavar="--KEY=VALUE",
              help="Beam pipeline option for --runner (repeatable), e.g. --pipeline-option=--direct_num_workers=2.")
@friendly
def embed_cmd(model, slides, output_dir, weights, seed, stride, mpp, min_tissue, min_saturation, batch_size,
              threads, checkpoint_seconds, overwrite, runner, pipeline_options):
    """Patch embeddings of whole slides: one HDF5 bag per slide (features + coords, as CLAM/TRIDENT).

    MODEL is a run directory or .keras file (the pooled features before the head; any Keras
    model whose output is [batch, d]), an encoder file of `hcdtf weights import` (patches of its
    input size, e.g. 224 px, at its resolution, 0.5 um/px) or an architecture name (ResNet18 ...
    ResNet152, with --weights). The patches are those `slide predict` scores: same resolution,
    tissue mask and grid. Rerun to resume a killed run. --runner runs the slides as an Apache Beam pipeline
    (one slide per element; same bags). Example:

    hcdtf slide embed outputs/models/hcd/1 ~/camelyon16/training --output-dir outputs/bags
    """
    if pipeline_options and not runner:
        raise click.UsageError("--pipeline-option applies to Beam: add --runner DirectRunner (or another runner)")
    if runner and overwrite:
        raise click.UsageError("--overwrite is not available with --runner: run without it, or clear --output-dir")
    from hcdtf import runtime
    from hcdtf.slide import embed, inference

    runtime.quiet_tensorflow()
    settings = inference.Settings(stride=stride, mpp=mpp, min_tissue=min_tissue, min_saturation=min_saturation,
                                  batch_size=batch_size)
    if runner:
        from hcdtf.slide import beam

        result = beam.embed_slides_beam(model, slides, output_dir, settings, runner, pipeline_options, weights, seed,
                                        threads, checkpoint_seconds, log=click.echo)
    else:
        result = embed.embed_slides(model, slides, output_dir, settings, overwrite=overwrite, log=click.echo,
                                    threads=threads, checkpoint_seconds=checkpoint_seconds, weights=weights, seed=seed)
    report_failed(result)


@slide.command("evaluate", context_settings=CONTEXT)
@click.argument("pred_dir", type=click.Path(file_okay=False))
@click.option("--annotations", "annotations_dir", required=True, type=click.Path(file_okay=False),
              help="Folder of <slide id>.xml (ASAP) or <slide id>_mask.tif files; only read.")
@click.option("--reference", type=click.Path(dir_okay=False), default=None,
              help="Camelyon16 reference.csv (name,class): the class of slides without annotations.")
@click.option("--output-dir", type=click.Path(file_okay=False), default=None,
              help="Where the report goes [default: PRED_DIR].")
@click.option("--n-bootstrap", default=1000, show_default=True, type=click.IntRange(min=0),
              help="Resamples for the slide AUC's confidence interval.")
@friendly
def evaluate_cmd(pred_dir, annotations_dir, reference, output_dir, n_bootstrap):
    """Slide AUC and lesion FROC (Camelyon16 protocol) of a `slide predict` folder.

    Writes slide_metrics.json, slide_report.md, froc.png and slide_roc.png. Example:

    hcdtf slide evaluate outputs/slides --annotations ~/camelyon16/annotations --reference reference.csv
    """
    from hcdtf.slide import evaluate

    metrics = evaluate.evaluate_slides(pred_dir, annotations_dir, reference, output_dir, n_bootstrap,
                                       log=click.echo)
    if metrics["failed"]:
        sys.exit(1)


@slide.command("annotations", context_settings=CONTEXT)
@click.argument("pred_dir", type=click.Path(file_okay=False))
@click.option("--format", "formats", type=click.Choice((*annotations_out.FORMATS, "both")), default="both",
              show_default=True, help="geojson: QuPath; asap: ASAP XML (what `slide evaluate` reads).")
@click.option("--threshold", default=annotations_out.REGION_THRESHOLD, show_default=True,
              type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Smoothed probability above which the heat map is outlined as a tumour region.")
@click.option("--output-dir", type=click.Path(file_okay=False), default=None,
              help="Write <slide id>.geojson / <slide id>.xml here [default: PRED_DIR/<slide id>/annotations.*].")
@friendly
def annotations_cmd(pred_dir, formats, threshold, output_dir):
    """Detections and tumour regions of a `slide predict` folder, for QuPath and ASAP.

    Level-0 coordinates: detections as points with their probability, tumour regions as the
    outlines of the smoothed heat map above --threshold. `slide predict` writes them too; this
    command (re)writes them for existing results. Example:

    hcdtf slide annotations outputs/slides --format geojson --output-dir outputs/qupath
    """
    chosen = annotations_out.FORMATS if formats == "both" else (formats,)
    from hcdtf.slide import annotate

    annotate.from_predictions(pred_dir, chosen, threshold, output_dir, log=click.echo)


@slide.command("view", context_settings=CONTEXT)
@click.argument("pred_dir", type=click.Path(file_okay=False))
@click.option("--slides", "slides_dir", required=True, type=click.Path(file_okay=False),
              help="Folder of the slide files (only read).")
@click.option("--annotations", "annotations_dir", type=click.Path(file_okay=False), default=None,
              help="Folder of ground truth (<slide id>.xml ASAP or <slide id>_mask.tif), drawn on top.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="TCP port (0: any free one).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback exposes the slides to the network.")
@friendly
def view_cmd(pred_dir, slides_dir, annotations_dir, port, host):
    """Browse slides with their heat maps and findings in a web browser (read-only, offline).

    Serves a page listing the slides with score and status, and per slide a deep-zoom view
    with the heat map (opacity, colour bar), tumour regions, detections (click one for its
    probability) and, with --annotations, the ground truth. Example:

    hcdtf slide view outputs/slides --slides ~/camelyon16/images --annotations ~/camelyon16/annotations
    """
    from hcdtf.slide import viewer

    viewer.serve(pred_dir, slides_dir, annotations_dir, host, port, log=click.echo)


@click.command("sample-slides", context_settings=CONTEXT)
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--slides", "--n", "n", default=4, show_default=True, type=click.IntRange(min=1),
              help="Slides (training slides with --layout camelyon16).")
@click.option("--tumour-fraction", default=0.5, show_default=True, type=click.FloatRange(0, 1),
              help="Share of slides with tumour: every 1/F-th slide, from the first (0.5: the even-numbered).")
@click.option("--metastases", type=click.Choice(synthetic.METASTASES), default="three", show_default=True,
              help="Per tumour slide: three (large, medium, one ITC) or varied (1-3 of sizes drawn per slide, "
                   "from one tile to a quarter of the slide).")
@click.option("--layout", "layout_kind", type=click.Choice(synthetic.LAYOUTS), default="flat", show_default=True,
              help="flat: slide_XXX.svs, annotations/, reference.csv. camelyon16: training/{tumor,normal}/*.tif, "
                   "testing/images/test_NNN.tif, */lesion_annotations/, testing/reference.csv, training_reference.csv.")
@click.option("--test-slides", default=0, show_default=True, type=click.IntRange(min=0),
              help="With --layout camelyon16: this many more slides in testing/images.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the slides (same seed, same files).")
@click.option("--width", default=8192, show_default=True, type=click.IntRange(min=1536),
              help="Level-0 width in px (0.243 um/px).")
@click.option("--height", default=6144, show_default=True, type=click.IntRange(min=1536),
              help="Level-0 height in px.")
@click.option("--unique-tiles", type=click.IntRange(min=1), default=None,
              help="Draw normal tissue from this many rendered tiles, repeated (fast, for very large slides).")
@friendly
def sample_slides(out_dir, n, seed, width, height, unique_tiles, tumour_fraction, metastases, layout_kind,
                  test_slides):
    """Write synthetic whole slides (Aperio SVS, 3+ levels, 0.243 um/px) with known tumour.

    OUT_DIR/slide_XXX.svs, OUT_DIR/annotations/slide_XXX.xml (ASAP) and OUT_DIR/reference.csv,
    for trying `hcdtf slide predict` and `hcdtf slide evaluate`; with --layout camelyon16, a
    MIL training and test set laid out as Camelyon16 ships. Example (MIL, about a minute):

    hcdtf sample-slides out/c16 --layout camelyon16 --slides 40 --test-slides 20 --metastases varied
    """
    if test_slides and layout_kind != "camelyon16":
        raise click.UsageError("--test-slides needs --layout camelyon16 (a flat sample has no test folder)")
    size = (width // synthetic.RENDER_DOWNSAMPLE, height // synthetic.RENDER_DOWNSAMPLE)
    synthetic.write_slides(out_dir, n=n, seed=seed, size=size, log=click.echo, bank=unique_tiles,
                           tumour_fraction=tumour_fraction, metastases=metastases, kind=layout_kind,
                           test_slides=test_slides)


COMMANDS = [slide, sample_slides]
