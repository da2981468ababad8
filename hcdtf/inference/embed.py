"""`hcdtf embed`: embeddings of a folder of patch images with a pathology encoder, as HDF5.

Output (the layout CLAM/TRIDENT-style tools read)::

    features  float32 [n, d]   one row per image, in the order of `ids`
    ids       str [n]          the image files' stems, sorted
    attrs     model (name), config (JSON), source (the MODEL argument)

MODEL is an encoder file (`hcdtf weights import`), a published encoder's name (its imported
file), or a finished run directory (the classifier's `head_pool` features: the encoder's
embedding after training, or a ResNet's pooled features). Images of any size are accepted: an
encoder resizes each to its input inside the graph (bilinear), exactly as it does for 96x96
patches; a run's classifier gets them resized (bilinear) to its patch size first. Memory is bounded by one batch of
decoded images plus the model: rows are written into the preallocated dataset batch by batch,
and the file appears under its name only when complete (temporary name + rename).
"""

import json
import pathlib
import sys
import time

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
FORMAT = "hcdtf-embeddings/1"


def list_images(images_dir):
    """Sorted `(stem, path)` of the image files directly in `images_dir`; one-line errors."""
    folder = pathlib.Path(images_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"--images {images_dir}: no such directory")
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
                   key=lambda p: (p.stem, p.name))
    if not files:
        raise FileNotFoundError(f"--images {images_dir}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    stems = [p.stem for p in files]
    dupes = sorted({s for s in stems if stems.count(s) > 1})
    if dupes:
        raise ValueError(f"--images {images_dir}: several files share the stem {dupes[0]!r} "
                         "(ids must be unique)")
    return list(zip(stems, files))


def _read(path):
    from PIL import Image

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except OSError as e:
        raise ValueError(f"{path}: not a readable image ({e})")


def resolve_model(model):
    """MODEL -> `(config, weights, label)` for an encoder file or a published encoder name whose
    weights `hcdtf weights import` has put in place; `(None, run_dir, label)` for a run
    directory of a trained classifier (its `head_pool` features: an encoder's embedding, or a
    ResNet's pooled features)."""
    from hcdtf.models.encoders import files
    from hcdtf.models.encoders import specs

    from hcdtf.rundir import RunDir

    path = pathlib.Path(model)
    if path.is_dir() and RunDir(path).model_path("cnn").is_file():
        return None, path, str(path)
    if path.is_file():
        config, weights = files.read(path)
        return config, weights, str(path)
    if specs.is_encoder(model):
        path = files.pretrained_path(model)
        config, weights = files.read(path)
        return config, weights, str(path)
    raise FileNotFoundError(
        f"MODEL {model}: neither an encoder file (`hcdtf weights import ... --out FILE`), a published "
        f"encoder name ({', '.join(specs.ENCODERS)}) nor a finished run directory (model.keras)")


def _embedding_function(model):
    """`(infer, dim, name, config)`: `infer(uint8 batch) -> float32 features`."""
    import keras
    import tensorflow as tf

    config, weights, label = resolve_model(model)
    if config is not None:
        from hcdtf.models.encoders.model import build_encoder

        encoder = build_encoder(config, weights, input_shape=(None, None, 3))
        infer = tf.function(lambda x: encoder(x, training=False), reduce_retracing=True)
        return infer, int(encoder.output.shape[-1]), config["name"], config, label
    from hcdtf.rundir import RunDir

    run = RunDir(weights)
    from hcdtf.inference import loading

    classifier = loading.load_model(run)
    features = keras.Model(classifier.input, classifier.get_layer("head_pool").output)
    size = tuple(classifier.input.shape[1:3])

    def call(x):
        if tuple(x.shape[1:3]) != size:  # the run's patch size: bilinear, back to uint8
            x = tf.cast(tf.clip_by_value(tf.round(tf.image.resize(x, size)), 0, 255), tf.uint8)
        return features(x, training=False)

    infer = tf.function(call, reduce_retracing=True)
    return infer, int(features.output.shape[-1]), classifier.name, {"run": str(weights)}, label


def _sha256(path):
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def embedding_key(model_file, items):
    """What the features depend on: the model's bytes and the image files (names, sizes,
    modification times); the batch size is kept beside it (a resumed pass reuses its own)."""
    import hashlib

    h = hashlib.sha256()
    for stem, path in items:
        st = path.stat()
        h.update(f"{path.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return {"format": FORMAT, "model_sha256": _sha256(model_file), "images_sha256": h.hexdigest(),
            "n": len(items)}


def _model_file(label):
    """The file whose bytes are the model: an encoder file, or a run's model.keras."""
    from hcdtf.rundir import RunDir

    path = pathlib.Path(label)
    return RunDir(path).model_path("cnn") if path.is_dir() else path


def _batches(items, start, batch_size):
    """`(i, j, uint8 batch)` of same-sized images from item `start` on (sizes may differ across
    the folder); the same batches whether a pass starts at 0 or resumes at a batch boundary."""
    n, i = len(items), start
    while i < n:
        first = _read(items[i][1])
        batch = [first]
        j = i + 1
        while j < n and len(batch) < batch_size:
            img = _read(items[j][1])
            if img.shape != first.shape:
                break
            batch.append(img)
            j += 1
        yield i, j, np.stack(batch)
        i = j


def embed(model, images_dir, out, batch_size=64, log=None, checkpoint_seconds=60.0, overwrite=False):
    """Writes the embeddings of every image of `images_dir` to `out` (HDF5); returns a summary
    dict (n, dim, seconds, images_per_s, resumed_from).

    Resumable: every `checkpoint_seconds` the rows so far are saved as a part in
    `<out>.partial/` (`hcdtf.inference.parts`, the machinery of `hcdtf slide embed`), keyed by the
    model's bytes and the image files; a killed pass rerun with the same arguments continues at
    the last part with the batch size it started with, and writes the same bytes as an
    uninterrupted pass. Parts of another model or other images are refused unless `overwrite`.
    Memory stays one batch plus the rows since the last part (saved parts are memory-mapped)."""
    import h5py
    import tensorflow as tf

    from hcdtf import atomic
    from hcdtf.inference import parts as parts_lib

    log = log or (lambda msg: print(msg, file=sys.stderr))
    items = list_images(images_dir)
    infer, dim, name, config, label = _embedding_function(model)
    n = len(items)
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic.remove_leftovers(out.parent)  # a killed pass's unfinished HDF5 file
    partial = out.with_name(out.name + ".partial")
    key = embedding_key(_model_file(label), items)
    parts, saved_batch_size = parts_lib.load_parts(partial, key, overwrite)
    batch_size = saved_batch_size or batch_size
    start = sum(len(p) for p in parts)
    if start:
        log(f"resuming at patch {start} of {n} (batch size {batch_size}, as when it started)")
    t0 = time.perf_counter()
    with atomic.atomic_output(out) as tmp:
        with h5py.File(tmp, "w") as f:
            # track_times=False: the same rows give the same bytes, whenever they were written
            features = f.create_dataset("features", shape=(n, dim), dtype="float32",
                                        chunks=(min(n, 1024), dim), track_times=False)
            f.create_dataset("ids", data=np.array([s for s, _ in items], dtype=object),
                             dtype=h5py.string_dtype(), track_times=False)
            f.attrs["model"] = name
            f.attrs["config"] = json.dumps(config, sort_keys=True)
            f.attrs["source"] = label
            row = 0
            for part in parts:
                features[row:row + len(part)] = part
                row += len(part)
            pending, t_saved = [], time.perf_counter()
            for i, j, batch in _batches(items, start, batch_size):
                rows = infer(tf.constant(batch)).numpy()
                features[i:j] = rows
                pending.append(rows)
                elapsed = time.perf_counter() - t0
                rate = (j - start) / elapsed if elapsed > 0 else float("nan")
                log(f"embedded {j}/{n} patches, {rate:.1f} patches/s, "
                    f"ETA {(n - j) / rate if rate > 0 else 0:.0f} s")
                if j < n and time.perf_counter() - t_saved >= checkpoint_seconds:
                    parts.append(np.concatenate(pending))
                    pending = []
                    parts_lib.save_part(partial, key, parts, batch_size)
                    parts[-1] = None  # on disk now: keep memory flat
                    t_saved = time.perf_counter()
    import shutil

    shutil.rmtree(partial, ignore_errors=True)
    seconds = time.perf_counter() - t0
    return {"n": n, "dim": dim, "seconds": seconds, "images_per_s": (n - start) / seconds if seconds > 0 else None,
            "out": str(out), "resumed_from": start}
