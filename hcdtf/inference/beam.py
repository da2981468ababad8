"""Cohort-scale batch inference on Apache Beam: `hcdtf predict ... --runner RUNNER`.

``run_pipeline(source, score, sink, runner, options)`` is the reusable part: any element source,
a per-element scoring step and a sink, run on DirectRunner, DataflowRunner, FlinkRunner or
SparkRunner. ``predict_beam`` builds it for a folder of patches: file paths (listed and read
through ``tf.io.gfile``, so ``gs://`` and ``s3://`` work), cut into the local path's batches
(sorted by id, ``batch_size`` each) -> ``(ids, uint8 batch)`` -> Beam's ``RunInference``, one call
per batch -> a submission CSV byte-identical to the local path's with the same ``batch_size``
(rows sorted by id, written to a temporary name and renamed).

RunInference gets :class:`ScorerModelHandler`, a Beam ``ModelHandler`` over
:mod:`hcdtf.inference.backends`, so every exported format runs on Beam. Beam's own TensorFlow handler
(``apache_beam.ml.inference.tensorflow_inference``) is not used: it imports ``tensorflow_hub``,
which needs ``pkg_resources`` (gone from current setuptools) and ``tf-keras`` (a second
TensorFlow), and loads models with ``tf.keras.models.load_model``, which in Keras 3 reads
``.keras`` files only, not SavedModels.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import shutil
import tempfile
from typing import Callable, Iterable

import numpy as np


RUNNERS = ("DirectRunner", "DataflowRunner", "FlinkRunner", "SparkRunner")
_ENDPOINTS = {"FlinkRunner": ("--flink_master", "--job_endpoint"), "SparkRunner": ("--spark_master_url", "--job_endpoint")}


def check_runner(runner: str, options: Iterable[str] = ()) -> None:
    """One clear error when ``runner`` cannot run from this installation."""
    if runner not in RUNNERS:
        raise ValueError(f"--runner {runner!r} is not supported; choose from {', '.join(RUNNERS)}")
    if importlib.util.find_spec("apache_beam") is None:
        raise ValueError("--runner needs Apache Beam: pip install apache-beam")
    if runner == "DataflowRunner" and importlib.util.find_spec("apitools") is None:
        raise ValueError("--runner DataflowRunner needs Beam's Google Cloud extra: pip install 'apache-beam[gcp]'")
    if runner in _ENDPOINTS and shutil.which("java") is None and \
            not any(o.split("=")[0] in _ENDPOINTS[runner] for o in options):
        raise ValueError(f"--runner {runner} needs Java for Beam's job server (not found on PATH) or "
                         f"--pipeline-option {_ENDPOINTS[runner][0]}=HOST:PORT of a running cluster")


def run_pipeline(source, score, sink, runner: str = "DirectRunner", options: Iterable[str] = ()):
    """Runs ``source | score | sink`` (three Beam PTransforms) on ``runner`` and waits for it."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    options = list(options)
    check_runner(runner, options)
    with beam.Pipeline(options=PipelineOptions([f"--runner={runner}", *options])) as pipeline:
        pipeline | "Read" >> source | "Score" >> score | "Write" >> sink  # noqa: B018
    return pipeline


def _local_copy(path: str) -> str:
    """A remote model (``gs://``, ``s3://``) copied to a local temporary directory; local as is."""
    if "://" not in path:
        return path
    import tensorflow as tf

    local = tempfile.mkdtemp(prefix="hcdtf-model-")
    root = path.rstrip("/")
    if not tf.io.gfile.isdir(root):
        target = os.path.join(local, os.path.basename(root))
        tf.io.gfile.copy(root, target)
        return target
    for folder, _, files in tf.io.gfile.walk(root):
        rel = folder[len(root):].lstrip("/")
        os.makedirs(os.path.join(local, rel), exist_ok=True)
        for f in files:
            tf.io.gfile.copy(f"{folder}/{f}", os.path.join(local, rel, f))
    return local


def scorer_model_handler(model_path: str, backend: str | None):
    """A Beam ``ModelHandler`` whose model is an :mod:`hcdtf.inference.backends` scorer (built lazily, on
    the worker, so the pipeline pickles a path, not a model). Each element is a whole batch of
    patches (uint8 [B, 96, 96, 3]) scored in one call, and its inference the B probabilities:
    the batches are formed before the pipeline, as the local path forms them, because the last
    bits of a probability depend on the batch it was computed in (oneDNN picks its kernels by
    batch size), and Beam's own batching depends on timing."""
    from apache_beam.ml.inference.base import ModelHandler, PredictionResult

    class ScorerModelHandler(ModelHandler):
        def __init__(self):
            super().__init__(min_batch_size=1, max_batch_size=1)

        def load_model(self):
            from hcdtf.inference import backends

            return backends.load(_local_copy(model_path), backend, log=lambda *_: None)

        def run_inference(self, batch, model, inference_args=None):
            return [PredictionResult(x, np.asarray(model(x), np.float64)) for x in batch]

    return ScorerModelHandler()


def fixed_batches(files: list[str], batch_size: int) -> list[tuple[int, list[str]]]:
    """(number, files) of each batch: consecutive runs of ``batch_size`` files in sorted id order,
    the same batches as the local path's (:func:`hcdtf.inference.predict.read_batches`)."""
    return [(k, files[i:i + batch_size]) for k, i in enumerate(range(0, len(files), batch_size))]


def read_batch(files: list[str]) -> tuple[tuple[str, ...], np.ndarray]:
    """(ids, uint8 [B, 96, 96, 3]) of one batch of patch files, read through ``tf.io.gfile``."""
    ids, patches = zip(*(read_patch_file(f) for f in files))
    return tuple(ids), np.stack(patches)


def list_patch_files(images: str) -> list[str]:
    """The patch files of a folder (local, or any ``tf.io.gfile`` file system), sorted by id."""
    from hcdtf.inference import predict

    if "://" not in images:
        return [str(p) for p in predict.list_images([images])]
    import tensorflow as tf

    if not tf.io.gfile.isdir(images):
        raise predict.ImageError(f"--images {images!r} is not a directory")
    names = sorted((n for n in tf.io.gfile.listdir(images) if n.lower().endswith(predict.IMAGE_SUFFIXES)),
                   key=lambda n: (pathlib.PurePosixPath(n).stem, n))  # the local path's order
    if not names:
        raise predict.ImageError(f"--images {images!r}: no .tif, .tiff or .png files in this directory")
    return [f"{images.rstrip('/')}/{n}" for n in names]


def read_patch_file(path: str) -> tuple[str, np.ndarray]:
    """(id, uint8 [96, 96, 3]) of one patch file, read through ``tf.io.gfile``."""
    import tensorflow as tf

    from hcdtf.inference import predict

    with tf.io.gfile.GFile(path, "rb") as f:
        data = f.read()
    return pathlib.PurePosixPath(path).stem, predict.read_patch(path, data)


def write_submission(out: str, rows: list) -> str:
    """``id,label`` rows sorted by id, written to a temporary name and renamed."""
    import tensorflow as tf

    from hcdtf.inference import predict

    tmp = f"{out}.tmp-{os.getpid()}"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write("id,label\n")
        f.write("".join(predict.format_row(i, p) for i, p in sorted(rows)))
    tf.io.gfile.rename(tmp, out, overwrite=True)
    return out


def predict_beam(model_path, images: str, out: str, runner: str, options: Iterable[str] = (),
                 batch_size: int = 256, backend: str | None = None,
                 log: Callable[[str], None] = print) -> dict:
    """`hcdtf predict --runner`: the patches of ``images`` scored by RunInference into ``out``."""
    import apache_beam as beam
    from apache_beam.ml.inference.base import KeyedModelHandler, RunInference

    from hcdtf.inference import backends, predict

    options = list(options)
    check_runner(runner, options)
    if "://" not in str(out):
        predict.check_out(pathlib.Path(out), pathlib.Path(images))
    if "://" not in str(model_path):
        backends.resolve(model_path, backend, log)  # a wrong path fails here, not on a worker
    files = list_patch_files(str(images))
    log(f"scoring {len(files)} patches from {images} with Apache Beam ({runner}), model {model_path}")
    handler = KeyedModelHandler(scorer_model_handler(str(model_path), backend))
    # One element per batch, formed here exactly as the local path forms them: same batches, same bits.
    score = ("ReadBatch" >> beam.MapTuple(lambda k, chunk: read_batch(chunk)) | "RunInference" >> RunInference(handler)
             | "Probabilities" >> beam.FlatMapTuple(lambda ids, result: zip(ids, map(float, result.inference))))
    sink = "Collect" >> beam.combiners.ToList() | "WriteCsv" >> beam.Map(lambda rows: write_submission(str(out), rows))
    run_pipeline(beam.Create(fixed_batches(files, batch_size)) | "Spread" >> beam.Reshuffle(), score, sink, runner,
                 options)
    log(f"wrote {len(files)} predictions to {out}")
    return {"out": str(out), "n": len(files), "runner": runner}


# --------------------------------------------------------------------------- embeddings
def embedding_model_handler(model_path: str):
    """A Beam ``ModelHandler`` whose model is :func:`hcdtf.inference.embed`'s embedding function
    of an encoder file or a run directory (built on the worker, one device). Each element is one
    batch cut as the in-process pass cuts it (:func:`hcdtf.inference.embed.batch_bounds`), so the
    rows have the same bits; its inference is the float32 rows [B, d]."""
    from apache_beam.ml.inference.base import ModelHandler, PredictionResult

    class EmbeddingModelHandler(ModelHandler):
        def __init__(self):
            super().__init__(min_batch_size=1, max_batch_size=1)

        def load_model(self):
            from hcdtf.inference import embed

            return embed._embedding_function(_local_copy(model_path))[0]

        def run_inference(self, batch, model, inference_args=None):
            return [PredictionResult(x, model(x)) for x in batch]

    return EmbeddingModelHandler()


def read_image_batch(files: list[str]) -> tuple[tuple[str, ...], np.ndarray]:
    """(stems, uint8 [B, H, W, 3]) of one batch of same-sized image files (`hcdtf embed`'s reader)."""
    from hcdtf.inference import embed

    return tuple(pathlib.Path(f).stem for f in files), np.stack([embed._read(f) for f in files])


ROWS_PER_SHARD = 10_000  # ~60 MB of float32 rows of a 1536-wide embedding per TFRecord file


def embed_beam(model, images_dir, out, runner: str, options: Iterable[str] = (), batch_size: int = 64,
               num_shards: int = 0, log: Callable[[str], None] = print) -> dict:
    """`hcdtf embed --runner`: RunInference over the image files (one element per batch, cut as
    the in-process pass cuts them), rows written as TFRecord shards of (id, feature) in
    ``OUT.shards/`` (kept: what a head reads, see :func:`hcdtf.inference.embed.read_shards`; shard
    ``k`` holds a contiguous range of ids, in id order), then ``OUT`` (HDF5), the same bytes as the
    in-process pass with the same ``batch_size`` on one device. Not resumable: Beam retries failed
    bundles; a killed launcher runs the pipeline again."""
    import math
    import time

    import apache_beam as beam
    from apache_beam.ml.inference.base import KeyedModelHandler, RunInference

    from hcdtf.inference import embed

    options = list(options)
    check_runner(runner, options)
    items = embed.list_images(images_dir)
    path, is_run = embed.locate_model(model)
    name, config = embed.describe_model(path, is_run)  # a wrong MODEL fails here, not on a worker
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shards = out.with_name(out.name + ".shards")
    shutil.rmtree(shards, ignore_errors=True)
    shards.mkdir()
    files = [str(p) for _, p in items]
    t0 = time.perf_counter()
    bounds = list(embed.batch_bounds((embed.image_shape(p) for _, p in items), batch_size))
    n_shards = min(num_shards or math.ceil(len(items) / ROWS_PER_SHARD), len(bounds))
    # batch k goes to shard k * n_shards // batches: each shard holds a contiguous range of ids
    # (the shards in name order are in id order), every shard at least one batch
    batches = [(k * n_shards // len(bounds), files[i:j]) for k, (i, j) in enumerate(bounds)]
    capped = f" (--num-shards {num_shards} capped: a shard holds at least one batch)" if num_shards > n_shards else ""
    log(f"embedding {len(items)} patches from {images_dir} with Apache Beam ({runner}), {len(batches)} batches, "
        f"{n_shards} shard{'s' if n_shards > 1 else ''}{capped} in {shards}")
    counter = beam.metrics.Metrics.counter("hcdtf", "patches_embedded")

    def rows(key, result):
        shard, ids = key
        counter.inc(len(ids))
        return [(shard, (i, embed.shard_example(i, r))) for i, r in zip(ids, result.inference)]

    def read(shard, chunk):
        ids, images = read_image_batch(chunk)
        return (shard, ids), images

    handler = KeyedModelHandler(embedding_model_handler(str(path)))
    score = ("ReadBatch" >> beam.MapTuple(read) | "RunInference" >> RunInference(handler)
             | "Examples" >> beam.FlatMapTuple(rows))
    # TensorFlow's TFRecord writer, not beam.io.WriteToTFRecord: that needs a crc32c package
    # (apache-beam[tfrecord]) and names no shard after its contents
    sink = ("ByShard" >> beam.GroupByKey()
            | "WriteShards" >> beam.MapTuple(lambda shard, pairs: embed.write_shard(shards, shard, n_shards, pairs)))
    run_pipeline(beam.Create(batches) | "Spread" >> beam.Reshuffle(), score, sink, runner, options)
    seconds = time.perf_counter() - t0
    rate = len(items) / seconds if seconds > 0 else float("nan")
    log(f"embedded {len(items)}/{len(items)} patches, {rate:.1f} patches/s (pipeline, {seconds:.0f} s)")
    dim = embed.write_from_shards(out, shards, [s for s, _ in items], name, config, str(path), log)
    return {"out": str(out), "shards": str(shards), "n": len(items), "dim": dim, "runner": runner,
            "seconds": seconds, "images_per_s": rate}
