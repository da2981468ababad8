"""`hcdtf slide embed`: patch embeddings of whole slides, one HDF5 bag per slide (CLAM / TRIDENT layout).

The same reader, resolution plan, tissue mask and grid as ``slide predict``
(:mod:`hcdtf.slide.inference`): the patches are the ones ``slide predict`` would score, read in the
same order, and each is turned into the encoder's pooled feature vector instead of a probability.
Each slide gives ``<output-dir>/<slide id>.h5`` with

    features   float32 [n, d]   one row per tissue cell, in patch order
    coords     int64 [n, 2]     level-0 (x, y) of the patch's top-left corner (CLAM's convention)
    cells      int32 [n, 2]     (row, col) of the cell in the grid (``slide predict``'s heat map)
    thumbnail  uint8 [4 rows, 4 cols, 3]   the slide at 4 px per cell (attention maps are drawn on it)

and attributes recording the encoder, its fingerprint, the resolution and the grid (``key`` is the
JSON of everything the features depend on). Bags move to CLAM or TRIDENT as they are: both read
``features`` and ``coords`` and ignore the rest.

Resuming: while a slide is embedded, its features are saved in parts
(``<output-dir>/.partial/<slide id>/part-NNNNN.npy``, each written atomically, with ``key.json``)
every ``checkpoint_seconds``; a killed run continues after the last part, with the batch size it
started with, so the finished file holds the same bytes as an uninterrupted run's. The ``.h5`` is
written atomically and last: a slide whose file records the same key is skipped; one of another
encoder or other settings stops the command unless ``--overwrite``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import time
from collections.abc import Callable

import numpy as np

from hcdtf.slide import grid as grid_lib
from hcdtf.slide import inference, reader

PARTIAL = ".partial"
FIELDS = ("slide", "status", "patches", "dim", "seconds", "path", "error")
FORMAT = "hcdtf-slide-embeddings/1"


@dataclasses.dataclass
class Encoder:
    """uint8 patches [B, 96, 96, 3] -> float32 features [B, d], and what identifies it."""

    embed: Callable[[np.ndarray], np.ndarray]
    description: str
    fingerprint: str
    dim: int
    input_mpp: float
    input_mpp_source: str
    keepalive: object = None
    patch: int = grid_lib.PATCH  # model px per patch side: 96 (PCam), an encoder file's input size


def _weights_fingerprint(model) -> str:
    """SHA-256 of the model's variables (shapes and values, in order; not their names, which Keras
    numbers per process): the same for the same weights whatever file they came from."""
    h = hashlib.sha256()
    for v in model.weights:
        value = np.ascontiguousarray(np.asarray(v.numpy()))
        h.update(f"{value.dtype}\0{value.shape}\0".encode())
        h.update(value.tobytes())
    return h.hexdigest()


def _keras_encoder(features_model, description: str, input_mpp: float, source: str) -> Encoder:
    import tensorflow as tf

    def forward(x):
        return tf.cast(features_model(x, training=False), tf.float32)

    fn = tf.function(forward, input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)], autograph=False)
    dim = int(features_model.output.shape[-1])
    return Encoder(lambda images: fn(tf.constant(images)).numpy(), description, _weights_fingerprint(features_model),
                   dim, input_mpp, source, features_model)


def check_model(model: str | os.PathLike) -> None:
    """The error :func:`load_encoder` gives for a MODEL it cannot use, without loading anything
    (the Beam runner checks here, before its workers start)."""
    from hcdtf.models import registry

    p = pathlib.Path(model)
    if p.exists():
        from hcdtf.rundir import RunDir

        if p.is_dir() and not RunDir(p).is_run():
            raise ValueError(f"MODEL {str(p)!r} is a directory but not an hcdtf run (no config.yaml); pass a "
                             "run directory of `hcdtf train`, its model.keras, or an architecture name")
        from hcdtf.models.encoders import files as encoder_files

        if not p.is_dir() and p.suffix != ".keras" and not encoder_files.is_encoder_file(p):
            raise ValueError(f"MODEL {str(p)!r}: embeddings come from a Keras model (a run directory or a .keras "
                             f"file), an encoder file of `hcdtf weights import`, or an architecture name "
                             f"({', '.join(registry.ARCHS)})")
        return
    try:
        registry.canonical_name(str(model))
    except ValueError:
        raise ValueError(f"MODEL {str(model)!r} is neither a file or run directory nor an architecture; valid "
                         f"architectures: {', '.join(registry.ARCHS)}") from None


def load_encoder(model: str | os.PathLike, weights: str = "imagenet", seed: int = 0,
                 log: Callable[[str], None] = print) -> Encoder:
    """The encoder named by ``model``: a run directory or its ``model.keras`` (the pooled features
    before the head), or an architecture of the registry (``weights``: ``imagenet``, ``none`` for
    a random initialisation from ``seed``, or a weights file)."""
    from hcdtf.models import registry

    check_model(model)
    p = pathlib.Path(model)
    from hcdtf.models.encoders import files as encoder_files

    if p.is_file() and encoder_files.is_encoder_file(p):
        return _encoder_file(p)
    if p.exists():
        import keras

        import hcdtf.models.layers  # noqa: F401  registers our layers for loading
        from hcdtf.models.classifier import feature_extractor
        from hcdtf.rundir import RunDir

        if p.is_dir():
            from hcdtf.inference import loading

            classifier = loading.load_model(RunDir(p))
        else:
            classifier = keras.saving.load_model(str(p), compile=False)
        mpp, source = inference.model_input_mpp(p)
        try:
            features, what = feature_extractor(classifier), "penultimate layer"
        except ValueError:  # not an hcdtf classifier: any Keras backbone whose output is [B, d]
            features, what = classifier, "output"
            if len(classifier.outputs) != 1 or len(classifier.outputs[0].shape) != 2:
                raise ValueError(f"MODEL {str(p)!r}: a Keras model without 'head_pool' layer must have one output "
                                 f"of shape [batch, d] (pooled features); got {classifier.outputs}") from None
        return _keras_encoder(features, f"{classifier.name} {what} ({p})", mpp, source)
    arch = registry.canonical_name(str(model))
    import keras

    from hcdtf.export import DEFAULT_INPUT_MPP
    from hcdtf.models.classifier import build_classifier, feature_extractor

    w = None if str(weights).lower() == "none" else weights
    if w is None:
        keras.utils.set_random_seed(seed)
    classifier = build_classifier(arch, weights=w, transfer="freeze_base")
    what = "random weights, seed " + str(seed) if w is None else f"{w} weights"
    return _keras_encoder(feature_extractor(classifier), f"{arch} ({what}), global average pool",
                          DEFAULT_INPUT_MPP, "default: PCam level 2 (the registry's encoders record none)")


def _encoder_file(path: pathlib.Path) -> Encoder:
    """A bare pathology encoder (``hcdtf weights import``): patches of its own input size, read at
    the resolution its registry entry gives (0.5 um/px, :attr:`EncoderSpec.mpp`), its embedding rule."""
    from hcdtf.models.encoders import files as encoder_files
    from hcdtf.models.encoders import specs
    from hcdtf.models.encoders.model import build_encoder

    config, weights = encoder_files.read(path)
    size = int(config["image_size"])
    if specs.is_encoder(config["name"]):
        spec = specs.get_encoder(config["name"])
        mpp, source = spec.mpp, f"{spec.name}'s registry entry ({spec.mpp_note})"
    else:
        mpp, source = 0.5, "default for pathology encoders (20x)"
    model = build_encoder(config, weights, input_shape=(size, size, 3))
    encoder = _keras_encoder(model, f"{config['name']} encoder, {config['embedding']} embedding ({path})", mpp, source)
    encoder.patch = size
    # The file's settings (mean/std, embedding rule, input size, ...) change the features as much as
    # its weights do, and live outside them: a file re-imported with other settings is another encoder
    # (its bags are computed again, not reused).
    encoder.fingerprint = hashlib.sha256(
        (json.dumps(config, sort_keys=True, default=str) + "\0" + encoder.fingerprint).encode()).hexdigest()
    return encoder


# --------------------------------------------------------------------------- one slide
def embedding_key(path: pathlib.Path, slide, encoder: Encoder, settings: inference.Settings, plan) -> dict:
    """What the features depend on (the batch size is not part of it: a resumed slide keeps its own)."""
    return {
        "slide": {"name": path.name, "bytes": path.stat().st_size,
                  "quickhash": slide.properties.get("openslide.quickhash-1")},
        "encoder_sha256": encoder.fingerprint, "model_mpp": encoder.input_mpp, "slide_mpp": plan.slide_mpp,
        "stride": settings.stride, "min_tissue": settings.min_tissue, "min_saturation": settings.min_saturation,
    }


def read_attrs(path: pathlib.Path) -> dict | None:
    """The attributes of a bag file (``key`` decoded), or None if it cannot be read."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
    except (OSError, ValueError):
        return None
    for k in ("key", "grid", "encoder_info"):
        if isinstance(attrs.get(k), (str, bytes)):
            attrs[k] = json.loads(attrs[k])
    return attrs


def _load_parts(partial: pathlib.Path, key: dict, overwrite: bool) -> tuple[list[np.ndarray], int | None]:
    """(feature parts of a killed run of the same key, batch size it used): `hcdtf.inference.parts`."""
    from hcdtf.inference import parts

    return parts.load_parts(partial, key, overwrite, stale=lambda saved: inference.StaleOutputError(
        f"{partial} holds part of a run of another encoder or other settings (differs in: "
        f"{inference._differs(saved, key)}); rerun with --overwrite, or use another --output-dir"))


def _save_part(partial: pathlib.Path, key: dict, parts: list[np.ndarray], batch_size: int) -> None:
    from hcdtf.inference import parts as parts_lib

    parts_lib.save_part(partial, key, parts, batch_size)


def _write_bag(path: pathlib.Path, features: np.ndarray, coords: np.ndarray, cells: np.ndarray,
               thumbnail: np.ndarray, attrs: dict) -> None:
    import h5py

    from hcdtf.atomic import atomic_output

    with atomic_output(path) as tmp:
        # No timestamps anywhere in the file (the root group's come from the file-creation
        # properties): the same features give the same bytes.
        fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
        fcpl.set_obj_track_times(False)
        order = h5py.h5p.CRT_ORDER_TRACKED | h5py.h5p.CRT_ORDER_INDEXED
        fcpl.set_link_creation_order(order)
        fcpl.set_attr_creation_order(order)
        with h5py.File(h5py.h5f.create(str(tmp).encode(), h5py.h5f.ACC_TRUNC, fcpl=fcpl)) as f:
            f.create_dataset("features", data=features, track_times=False)
            f.create_dataset("coords", data=coords, track_times=False)
            f.create_dataset("cells", data=cells, track_times=False)
            f.create_dataset("thumbnail", data=thumbnail, track_times=False)
            for k, v in attrs.items():
                f.attrs[k] = json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v


def embed_slide(path: pathlib.Path, out: pathlib.Path, encoder: Encoder, settings: inference.Settings,
                overwrite: bool = False, log: Callable = print, threads: int = 2,
                checkpoint_seconds: float = 30.0) -> tuple[str, dict]:
    """(``done`` or ``skipped``, the bag's attributes) for one slide."""
    layout = inference._layout(path, encoder, settings)
    try:
        target = out / f"{path.stem}.h5"
        partial = out / PARTIAL / path.stem
        key = embedding_key(path, layout.slide, encoder, settings, layout.plan)
        if target.exists():
            old = read_attrs(target)
            if old is not None and old.get("key") == key:
                log(f"  already done ({target}); skipped")
                return "skipped", old
            if old is not None and not overwrite:
                raise inference.StaleOutputError(
                    f"{target} holds embeddings of another encoder or other settings (differs in: "
                    f"{inference._differs(old.get('key') or {}, key)}); rerun with --overwrite, or use another --output-dir")
        g = layout.grid
        ci, cj = g.order(layout.scored)
        parts, batch_size = _load_parts(partial, key, overwrite)
        batch_size = batch_size or settings.batch_size
        start, total = sum(len(p) for p in parts), len(ci)
        log(f"  level {layout.plan.level} for {encoder.input_mpp:g} um/px; {total} of {g.rows * g.cols} cells hold "
            f"tissue" + (f"; resuming at patch {start} (batch size {batch_size}, as when it started)" if start else ""))
        t0 = time.perf_counter()
        busy, pending, t_saved = 0.0, [], time.perf_counter()
        for batch in inference.patch_batches(layout.slide, layout.plan, g, ci, cj, start, batch_size, threads):
            t = time.perf_counter()
            n = len(batch)
            if n < batch_size:  # the last batch, padded: one traced shape, the same maths for every batch
                batch = np.concatenate([batch, np.zeros((batch_size - n,) + batch.shape[1:], batch.dtype)])
            pending.append(np.asarray(encoder.embed(batch), np.float32)[:n])
            busy += time.perf_counter() - t
            if time.perf_counter() - t_saved >= checkpoint_seconds and start + sum(map(len, parts + pending)) < total:
                parts.append(np.concatenate(pending))
                pending = []
                _save_part(partial, key, parts, batch_size)
                t_saved = time.perf_counter()
        if pending:
            parts.append(np.concatenate(pending))
        features = np.concatenate(parts) if parts else np.zeros((0, encoder.dim), np.float32)
        seconds = time.perf_counter() - t0
        x = np.floor(cj * g.cell_level0 - g.offset * g.factor).astype(np.int64)
        y = np.floor(ci * g.cell_level0 - g.offset * g.factor).astype(np.int64)
        attrs = {
            "format": FORMAT, "slide": path.stem, "path": str(path), "encoder": encoder.description,
            "encoder_sha256": encoder.fingerprint, "dim": int(encoder.dim),
            "model_mpp": encoder.input_mpp, "model_mpp_source": encoder.input_mpp_source,
            "slide_mpp": layout.plan.slide_mpp, "level0_size": list(layout.slide.dimensions),
            "patch_size": g.patch, "patch_size_level0": float(g.patch * g.factor),
            "patch_level": int(layout.plan.level),
            "grid": {"rows": g.rows, "cols": g.cols, "stride_model_px": g.stride, "cell_level0": g.cell_level0,
                     "thumbnail_px_per_cell": inference.THUMB_PER_CELL,
                     "coords": "level-0 (x, y) of each patch's top-left corner; the patch covers cell (row, col) "
                               "of `cells` at its centre"},
            "n_patches": int(total), "batch_size": batch_size, "key": key,
        }
        _write_bag(target, features, np.stack([x, y], axis=1), np.stack([ci, cj], axis=1).astype(np.int32),
                   layout.thumbnail, attrs)
        shutil.rmtree(partial, ignore_errors=True)
        rate = (total - start) / seconds if seconds > 0 and total > start else None
        log(f"  {total} x {encoder.dim} features in {seconds:.1f} s"
            + (f" ({rate:.0f} patches/s, encoder alone {(total - start) / busy:.0f})" if rate and busy else "")
            + f" -> {target}")
        return "done", {**attrs, "timing": {"seconds": round(seconds, 3), "encoder_seconds": round(busy, 3),
                                            "patches_now": total - start, "resumed_from_patch": start}}
    finally:
        layout.slide.close()


def embed_row(path: pathlib.Path, out: pathlib.Path, encoder: Encoder, settings: inference.Settings,
              overwrite: bool = False, log: Callable = print, threads: int = 2,
              checkpoint_seconds: float = 30.0) -> dict:
    """:func:`embed_slide` as one row of ``embeddings.csv``: a slide that cannot be read is a
    ``failed`` row (the others still run), in process and on Beam alike."""
    import openslide

    t = time.perf_counter()
    try:
        status, attrs = embed_slide(path, out, encoder, settings, overwrite, log, threads, checkpoint_seconds)
    except (reader.SlideError, openslide.OpenSlideError) as e:
        message = str(e) if str(path) in str(e) else f"{path}: {e}"
        log(f"  FAILED {message}")
        return {"slide": path.stem, "status": "failed", "seconds": round(time.perf_counter() - t, 2),
                "path": str(path), "error": message}
    return {"slide": path.stem, "status": status, "patches": attrs.get("n_patches"), "dim": attrs["dim"],
            "seconds": round(time.perf_counter() - t, 2), "path": str(path)}


def write_rows(out: pathlib.Path, rows: list[dict]) -> None:
    """``out/embeddings.csv`` (atomic), one row per slide."""
    from hcdtf.atomic import write_text

    lines = [",".join(FIELDS)] + [",".join("" if r.get(k) is None else str(r[k]).replace(",", ";") for k in FIELDS)
                                  for r in rows]
    write_text(out / "embeddings.csv", "\n".join(lines) + "\n")


def result_of(rows: list[dict], out: pathlib.Path, seconds: float, log: Callable = print) -> dict:
    """What ``slide embed`` returns: counts, the failures' messages, the summary CSV."""
    if (out / PARTIAL).is_dir() and not any((out / PARTIAL).iterdir()):
        (out / PARTIAL).rmdir()
    failed = [r["error"] for r in rows if r["status"] == "failed"]
    result = {"output_dir": str(out), "slides": len(rows), "failed": failed,
              "done": sum(r["status"] == "done" for r in rows), "skipped": sum(r["status"] == "skipped" for r in rows),
              "seconds": round(seconds, 2), "summary_csv": str(out / "embeddings.csv")}
    log(f"{result['done']} embedded, {result['skipped']} already done, {len(failed)} failed; {out / 'embeddings.csv'}")
    return result


def embed_slides(model, inputs, output_dir, settings: inference.Settings | None = None, overwrite: bool = False,
                 log: Callable = print, threads: int = 2, checkpoint_seconds: float = 30.0, weights: str = "imagenet",
                 seed: int = 0, encoder: Encoder | None = None) -> dict:
    """Embeds every slide of ``inputs`` into ``output_dir/<slide id>.h5``; writes
    ``output_dir/embeddings.csv``. A slide that cannot be read is reported and the others still run."""
    settings = (settings or inference.Settings()).validate()
    slides = reader.list_slides(inputs)
    out = pathlib.Path(output_dir)
    inference.check_output_dir(out, slides)
    t_all = time.perf_counter()
    encoder = encoder or load_encoder(model, weights, seed, log)
    log(f"{len(slides)} slide(s); encoder {encoder.description}: {encoder.dim} features at {encoder.input_mpp:g} "
        f"um/px ({encoder.input_mpp_source}); bags in {out}")
    rows = []
    for n, path in enumerate(slides, 1):
        log(f"[{n}/{len(slides)}] {path.name}")
        rows.append(embed_row(path, out, encoder, settings, overwrite, log, threads, checkpoint_seconds))
    write_rows(out, rows)
    return result_of(rows, out, time.perf_counter() - t_all, log)


def read_bag(path: str | os.PathLike) -> dict:
    """``features``, ``coords``, ``cells``, ``thumbnail`` (when present) and the attributes of a bag
    file, CLAM's and TRIDENT's included (``features`` [n, d] or [1, n, d])."""
    import h5py

    path = pathlib.Path(path)
    try:
        with h5py.File(path, "r") as f:
            if "features" not in f:
                raise ValueError(f"{path}: no 'features' dataset (not a bag of embeddings)")
            bag = {k: np.asarray(f[k]) for k in ("features", "coords", "cells", "thumbnail") if k in f}
    except OSError as e:
        raise ValueError(f"{path}: cannot be read as HDF5 ({e})") from None
    features = bag["features"]
    if features.ndim == 3 and features.shape[0] == 1:
        features = features[0]
    if features.ndim != 2 or len(features) == 0:
        raise ValueError(f"{path}: 'features' must be [n, d] with n >= 1, got shape {list(bag['features'].shape)}")
    bag["features"] = features.astype(np.float32, copy=False)
    if "coords" in bag and bag["coords"].ndim == 3:
        bag["coords"] = bag["coords"][0]
    bag["attrs"] = read_attrs(path) or {}
    return bag
