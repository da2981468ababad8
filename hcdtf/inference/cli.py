"""``hcdtf predict``, ``hcdtf explain`` and ``hcdtf embed``: reading trained and exported models.

Registered by :mod:`hcdtf.cli` from ``COMMANDS``; nothing here imports TensorFlow until a command runs.
"""

from __future__ import annotations

import click

from hcdtf.clitools import CONTEXT, check_choices, config_options, default_help, friendly, given, quiet
from hcdtf.config import PredictConfig, load_config
from hcdtf.inference.backends import BACKENDS
from hcdtf.inference.beam import RUNNERS
from hcdtf.inference.embed import EMBED_DISTRIBUTIONS


@click.command("predict", context_settings=CONTEXT)
@click.argument("model", type=click.Path())
@click.option("--images", "images_dir", required=True, type=click.Path(),
              help="Directory of 96x96 RGB .tif/.png patches (e.g. Kaggle's test/); only read. With --runner, "
                   "any tf.io.gfile path (gs://, s3://).")
@click.option("--out", required=True, type=click.Path(), help="Submission CSV to write (id,label).")
@click.option("--batch-size", default=None, type=click.IntRange(min=1),
              help="Patches scored per batch. " + default_help("predict.batch_size", PredictConfig.batch_size))
@click.option("--backend", type=click.Choice(BACKENDS), default=None,
              help="Runtime to use [default: predict.backend, else detected from MODEL]; picks a format inside an "
                   "export directory.")
@click.option("--runner", type=click.Choice(RUNNERS), default=None,
              help="Run as an Apache Beam pipeline (RunInference) on this runner instead of in this process "
                   "[default: predict.runner].")
@click.option("--pipeline-option", "pipeline_options", multiple=True, metavar="--KEY=VALUE",
              help="Beam pipeline option for --runner (repeatable), e.g. --pipeline-option=--project=P "
                   "[default: predict.pipeline_options].")
@config_options
@friendly
def predict_cmd(model, images_dir, out, batch_size, backend, runner, pipeline_options, config_files, overrides):
    """Score a directory of patches and write a Kaggle submission CSV (id,label = probability).

    MODEL is a run directory, a .keras file, an export directory (its latest SavedModel version, or
    the format --backend names), a SavedModel version directory, or an exported .onnx, OpenVINO
    .xml or .tflite model (or its directory). Settings come from the predict: section of the config
    (--config, --set predict.KEY=VALUE); a flag wins. Examples:

    hcdtf predict outputs/models/hcd/1 --images kaggle/test --out submission.csv

    hcdtf predict outputs/models/hcd --backend openvino-int8 --images kaggle/test --out submission.csv
    """
    cfg = load_config(config_files, overrides, given(predict={
        "batch_size": batch_size, "backend": backend, "runner": runner, "pipeline_options": pipeline_options}))
    check_choices(cfg, {"predict.backend": BACKENDS, "predict.runner": RUNNERS})
    settings = cfg.predict
    if settings.pipeline_options and not settings.runner:
        raise click.UsageError("--pipeline-option applies to Beam: add --runner DirectRunner (or another runner)")
    quiet()
    if settings.runner:
        from hcdtf.inference import beam as beam_predict

        beam_predict.predict_beam(model, images_dir, out, settings.runner, settings.pipeline_options,
                                  batch_size=settings.batch_size, backend=settings.backend, log=click.echo)
        return
    from hcdtf.inference import predict

    predict.predict(model, images_dir, out, batch_size=settings.batch_size, log=click.echo, backend=settings.backend)


@click.command("explain", context_settings=CONTEXT)
@click.argument("run_dir", type=click.Path())
@click.argument("more_images", nargs=-1, type=click.Path(), metavar="[FILE_OR_DIR]...")
@click.option("--images", "images", multiple=True, type=click.Path(),
              help="Patch file(s) or director(ies) to explain; more may follow, e.g. --images a.tif b.tif.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Directory for the PNGs.")
@click.option("--max", "max_images", default=32, show_default=True, type=click.IntRange(min=1),
              help="Explain at most this many patches (sorted by id).")
@friendly
def explain_cmd(run_dir, more_images, images, out, max_images):
    """Grad-CAM heat maps of RUN_DIR's model over patches: one PNG each, with the score.

    Example: hcdtf explain outputs/paper/runs/resnet34_fine_tune --images kaggle/test --out gradcam/
    """
    if not images and not more_images:
        raise click.UsageError("give the patches to explain with --images FILE_OR_DIR...")
    quiet()
    from hcdtf.inference import explain

    explain.explain(run_dir, [*images, *more_images], out, max_images=max_images, log=click.echo)


@click.command("embed", context_settings=CONTEXT)
@click.argument("model")
@click.option("--images", "images_dir", required=True, type=click.Path(),
              help="Folder of patch images (png, jpg, tif, bmp; any size).")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="HDF5 file to write: features float32 [n, d], ids (file stems, sorted).")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1),
              help="Images per forward pass (memory is bounded by one batch).")
@click.option("--checkpoint-seconds", default=60.0, show_default=True, type=click.FloatRange(min=0),
              help="Save the rows so far (in OUT.partial/) this often: a killed pass rerun resumes there.")
@click.option("--overwrite", is_flag=True, help="Discard OUT.partial/ of another model or other images.")
@click.option("--distribution", type=click.Choice(EMBED_DISTRIBUTIONS), default="auto", show_default=True,
              help="tf.distribute strategy for each batch (train.distribution's words): auto = mirrored over "
                   "several GPUs, else one device; each batch is split across the replicas.")
@click.option("--runner", type=click.Choice(RUNNERS), default=None,
              help="Run as an Apache Beam pipeline (RunInference) on this runner: rows go to TFRecord shards "
                   "of (id, feature) in OUT.shards/, then OUT.")
@click.option("--pipeline-option", "pipeline_options", multiple=True, metavar="--KEY=VALUE",
              help="Beam pipeline option for --runner (repeatable), e.g. --pipeline-option=--direct_num_workers=2.")
@click.option("--num-shards", default=0, show_default=True, type=click.IntRange(min=0),
              help="TFRecord files written by --runner (0: one per 10,000 patches; at most one per batch, the log says when capped).")
@friendly
def embed_cmd(model, images_dir, out, batch_size, checkpoint_seconds, overwrite, distribution, runner,
              pipeline_options, num_shards):
    """Embed the patches of a folder with MODEL: an encoder file from `hcdtf weights import`, a
    published encoder name (H-optimus-0, UNI, Virchow2, ...) whose weights are imported, or a
    finished run directory (its classifier's pooled features).

    Example: hcdtf embed UNI2-h --images patches/ --out uni2h.h5 --runner DirectRunner
    """
    from hcdtf.inference import embed

    if (pipeline_options or num_shards) and not runner:
        raise click.UsageError("--pipeline-option and --num-shards apply to Beam: add --runner DirectRunner "
                               "(or another runner)")
    if runner and overwrite:
        raise click.UsageError("--overwrite applies to the in-process pass (its OUT.partial/); with --runner, "
                               "remove OUT and OUT.shards/ to start again")
    explicit = click.get_current_context().get_parameter_source("checkpoint_seconds")
    if runner and explicit is not click.core.ParameterSource.DEFAULT:
        raise click.UsageError("--checkpoint-seconds applies to the in-process pass; a Beam pipeline is not "
                               "resumed (its runner retries failed bundles): leave it out with --runner")
    if runner and distribution not in ("auto", "one"):
        raise click.UsageError(f"--distribution {distribution} applies to the in-process pass; with --runner, "
                               "Beam spreads the batches over its workers (one device each)")
    quiet()
    if runner:
        from hcdtf.inference import beam as beam_embed

        result = beam_embed.embed_beam(model, images_dir, out, runner, pipeline_options, batch_size=batch_size,
                                       num_shards=num_shards, log=click.echo)
        click.echo(f"wrote {result['out']} ({result['n']} x {result['dim']}) and its shards {result['shards']}")
        return
    result = embed.embed(model, images_dir, out, batch_size=batch_size, log=click.echo,
                         checkpoint_seconds=checkpoint_seconds, overwrite=overwrite, distribution=distribution)
    click.echo(f"wrote {result['out']} ({result['n']} x {result['dim']}, "
               f"{result['images_per_s']:.1f} patches/s)")


COMMANDS = [predict_cmd, explain_cmd, embed_cmd]
