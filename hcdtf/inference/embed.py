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

    path = pathlib.Path(model)
    from hcdtf.rundir import RunDir

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


def embed(model, images_dir, out, batch_size=64, log=None):
    """Writes the embeddings of every image of `images_dir` to `out` (HDF5); returns a summary
    dict (n, dim, seconds, images_per_s)."""
    import h5py
    import tensorflow as tf

    from hcdtf.atomic import atomic_output

    log = log or (lambda msg: print(msg, file=sys.stderr))
    items = list_images(images_dir)
    infer, dim, name, config, label = _embedding_function(model)
    n = len(items)
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    done = 0
    with atomic_output(out) as tmp:
        with h5py.File(tmp, "w") as f:
            features = f.create_dataset("features", shape=(n, dim), dtype="float32",
                                        chunks=(min(n, 1024), dim))
            f.create_dataset("ids", data=np.array([s for s, _ in items], dtype=object),
                             dtype=h5py.string_dtype())
            f.attrs["model"] = name
            f.attrs["config"] = json.dumps(config, sort_keys=True)
            f.attrs["source"] = label
            i = 0
            while i < n:
                # one batch of same-sized images (sizes may differ across the folder)
                first = _read(items[i][1])
                batch = [first]
                j = i + 1
                while j < n and len(batch) < batch_size:
                    img = _read(items[j][1])
                    if img.shape != first.shape:
                        break
                    batch.append(img)
                    j += 1
                features[i:j] = infer(tf.constant(np.stack(batch))).numpy()
                done, i = j, j
                elapsed = time.perf_counter() - start
                rate = done / elapsed if elapsed > 0 else float("nan")
                log(f"embedded {done}/{n} patches, {rate:.1f} patches/s, "
                    f"ETA {(n - done) / rate if rate > 0 else 0:.0f} s")
    seconds = time.perf_counter() - start
    return {"n": n, "dim": dim, "seconds": seconds, "images_per_s": n / seconds, "out": str(out)}
