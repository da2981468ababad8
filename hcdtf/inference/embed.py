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


def locate_model(model):
    """MODEL -> `(path, is_run)`: the encoder file (given, or a published encoder name's imported
    file) or the finished run directory; nothing is loaded. One-line errors."""
    from hcdtf.models.encoders import files
    from hcdtf.models.encoders import specs

    from hcdtf.rundir import RunDir

    path = pathlib.Path(model)
    if path.is_dir() and RunDir(path).model_path("cnn").is_file():
        return path, True
    if path.is_file():
        return path, False
    if specs.is_encoder(model):
        return pathlib.Path(files.pretrained_path(model)), False
    raise FileNotFoundError(
        f"MODEL {model}: neither an encoder file (`hcdtf weights import ... --out FILE`), a published "
        f"encoder name ({', '.join(specs.ENCODERS)}) nor a finished run directory (model.keras)")


def resolve_model(model):
    """MODEL -> `(config, weights, label)` for an encoder file or a published encoder name whose
    weights `hcdtf weights import` has put in place; `(None, run_dir, label)` for a run
    directory of a trained classifier (its `head_pool` features: an encoder's embedding, or a
    ResNet's pooled features)."""
    from hcdtf.models.encoders import files

    path, is_run = locate_model(model)
    if is_run:
        return None, path, str(path)
    config, weights = files.read(path)
    return config, weights, str(path)


def describe_model(path, is_run):
    """`(name, config)` the HDF5 file records for a located model, read without its weights (the
    Beam launcher's view; the in-process pass gets the same from the loaded model)."""
    import zipfile

    from hcdtf.models.encoders import files
    from hcdtf.rundir import RunDir

    if not is_run:
        config = files.read_config(path)
        return config["name"], config
    model_file = RunDir(path).model_path("cnn")
    try:
        with zipfile.ZipFile(model_file) as z:  # a .keras file: config.json inside
            name = json.loads(z.read("config.json"))["config"]["name"]
    except (zipfile.BadZipFile, KeyError, ValueError) as e:
        raise ValueError(f"MODEL {path}: {model_file} is not a readable Keras model file ({e}); "
                         "retrain the run or pass another MODEL") from None
    return name, {"run": str(path)}


EMBED_DISTRIBUTIONS = ("auto", "one", "mirrored")  # train.distribution's words; several machines: --runner


def embedding_strategy(name="auto"):
    """`(tf.distribute strategy, short name)` for an embedding pass, in `train.distribution`'s
    vocabulary (`hcdtf.runtime.make_strategy`): `auto` is `mirrored` over several GPUs, else `one`;
    `mirrored` without GPUs uses the logical CPUs of `HCDTF_VIRTUAL_CPUS`. Several machines are
    Beam's job (`--runner`): a multi-worker pass would need every worker to write its own rows."""
    import tensorflow as tf

    from hcdtf import runtime

    if name not in EMBED_DISTRIBUTIONS:
        raise ValueError(f"--distribution {name!r} does not apply to an embedding pass; choose from "
                         f"{', '.join(EMBED_DISTRIBUTIONS)} (several machines: --runner, Apache Beam)")
    if name == "auto":
        runtime.virtual_cpus()
        name = "mirrored" if len(tf.config.list_logical_devices("GPU")) > 1 else "one"
    return runtime.make_strategy(name)


def distributed_call(fn, strategy=None):
    """`call(uint8 batch) -> float32 rows` running `fn` (a Keras model call built in
    `strategy.scope()`) on every replica: the batch is cut into one consecutive slice per
    replica (`np.array_split`: sizes differ by at most one) and the replicas' rows are put back
    in order. A replica left without rows (a batch smaller than the replica count) gets a copy
    of the first image, whose row is dropped: keras-hub's ViT cannot run on an empty batch.

    The rows equal one device's bit for bit when each slice has the size the one device ran;
    otherwise they may differ in the last bits (oneDNN picks its kernels by batch size; up to
    7e-7 on values of about 2.5 with the tiny test encoder), so the replica count is part of a
    resumable pass's key (`embedding_key`)."""
    import tensorflow as tf

    if strategy is None or strategy.num_replicas_in_sync == 1:
        one = tf.function(fn, reduce_retracing=True)
        return lambda batch: one(tf.constant(batch)).numpy()
    replicas = strategy.num_replicas_in_sync
    step = tf.function(lambda x: strategy.run(fn, args=(x,)), reduce_retracing=True)

    def call(batch):
        pieces = np.array_split(batch, replicas)
        real = [len(p) > 0 for p in pieces]
        pieces = [p if len(p) else batch[:1] for p in pieces]
        x = strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.constant(pieces[ctx.replica_id_in_sync_group]))
        rows = strategy.experimental_local_results(step(x))
        return np.concatenate([r.numpy() for r, keep in zip(rows, real) if keep])

    return call


def _embedding_function(model, strategy=None):
    """`(call, dim, name, config, label)`: `call(uint8 batch) -> float32 features`, the model's
    variables built in `strategy`'s scope (one device if None)."""
    import contextlib

    import keras
    import tensorflow as tf

    config, weights, label = resolve_model(model)
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    if config is not None:
        from hcdtf.models.encoders.model import build_encoder

        with scope:
            encoder = build_encoder(config, weights, input_shape=(None, None, 3))
        call = distributed_call(lambda x: encoder(x, training=False), strategy)
        return call, int(encoder.output.shape[-1]), config["name"], config, label
    from hcdtf.rundir import RunDir

    run = RunDir(weights)
    from hcdtf.inference import loading

    with scope:
        classifier = loading.load_model(run)
        features = keras.Model(classifier.input, classifier.get_layer("head_pool").output)
    size = tuple(classifier.input.shape[1:3])

    def forward(x):
        if tuple(x.shape[1:3]) != size:  # the run's patch size: bilinear, back to uint8
            x = tf.cast(tf.clip_by_value(tf.round(tf.image.resize(x, size)), 0, 255), tf.uint8)
        return features(x, training=False)

    call = distributed_call(forward, strategy)
    return call, int(features.output.shape[-1]), classifier.name, {"run": str(weights)}, label


def _sha256(path):
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def embedding_key(model_file, items, replicas=1):
    """What the features depend on: the model's bytes and the image files (names, sizes,
    modification times), and the replica count when above one (its rows may differ from one
    device's in the last bits: `distributed_call`); the batch size is kept beside it (a resumed
    pass reuses its own)."""
    import hashlib

    h = hashlib.sha256()
    for stem, path in items:
        st = path.stat()
        h.update(f"{path.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    key = {"format": FORMAT, "model_sha256": _sha256(model_file), "images_sha256": h.hexdigest(),
           "n": len(items)}
    if replicas > 1:
        key["replicas"] = replicas
    return key


def _model_file(label):
    """The file whose bytes are the model: an encoder file, or a run's model.keras."""
    from hcdtf.rundir import RunDir

    path = pathlib.Path(label)
    return RunDir(path).model_path("cnn") if path.is_dir() else path


def batch_bounds(shapes, batch_size):
    """`(i, j)` of each batch: runs of at most `batch_size` consecutive images of one shape (sizes
    may differ across a folder). `shapes` may be lazy: each is read once, in order. The in-process
    pass and the Beam pipeline cut the same batches with it, so their rows have the same bits."""
    i, first, k = 0, None, -1
    for k, shape in enumerate(shapes):
        if first is None:
            first = shape
        elif shape != first or k - i == batch_size:
            yield i, k
            i, first = k, shape
    if first is not None:
        yield i, k + 1


def image_shape(path):
    """The decoded shape of an image file (`_read`'s), from its header only."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return (img.height, img.width, 3)
    except OSError as e:
        raise ValueError(f"{path}: not a readable image ({e})")


def _batches(items, start, batch_size):
    """`(i, j, uint8 batch)` from item `start` on (`batch_bounds`); the same batches whether a
    pass starts at 0 or resumes at a batch boundary. Each image is decoded once."""
    images = {}

    def shapes():
        for k in range(start, len(items)):
            images[k] = _read(items[k][1])
            yield images[k].shape

    for i, j in batch_bounds(shapes(), batch_size):
        yield start + i, start + j, np.stack([images.pop(start + k) for k in range(i, j)])


def _progress(log, done, n, first, t0):
    elapsed = time.perf_counter() - t0
    rate = (done - first) / elapsed if elapsed > 0 else float("nan")
    log(f"embedded {done}/{n} patches, {rate:.1f} patches/s, ETA {(n - done) / rate if rate > 0 else 0:.0f} s")


class _Writer:
    """The HDF5 file being written (under a temporary name): `features` preallocated, `ids`,
    the attributes. The in-process pass and the Beam pass write the same bytes through it."""

    def __init__(self, f, ids, dim, name, config, label):
        import h5py

        # track_times=False: the same rows give the same bytes, whenever they were written
        self.features = f.create_dataset("features", shape=(len(ids), dim), dtype="float32",
                                         chunks=(min(len(ids), 1024), dim), track_times=False)
        f.create_dataset("ids", data=np.array(ids, dtype=object), dtype=h5py.string_dtype(), track_times=False)
        f.attrs["model"] = name
        f.attrs["config"] = json.dumps(config, sort_keys=True)
        f.attrs["source"] = label


def embed(model, images_dir, out, batch_size=64, log=None, checkpoint_seconds=60.0, overwrite=False,
          distribution="auto"):
    """Writes the embeddings of every image of `images_dir` to `out` (HDF5); returns a summary
    dict (n, dim, seconds, images_per_s, resumed_from, distribution, replicas).

    Each batch runs under `distribution` (`embedding_strategy`: one device, or split across the
    replicas of a MirroredStrategy; rows and their order as one device's, see `distributed_call`).
    Resumable: every `checkpoint_seconds` the rows so far are saved as a part in
    `<out>.partial/` (`hcdtf.inference.parts`, the machinery of `hcdtf slide embed`), keyed by the
    model's bytes and the image files; a killed pass rerun with the same arguments continues at
    the last part with the batch size it started with, and writes the same bytes as an
    uninterrupted pass. Parts of another model or other images are refused unless `overwrite`.
    Memory stays one batch plus the rows since the last part (saved parts are memory-mapped)."""
    import shutil

    import h5py

    from hcdtf import atomic
    from hcdtf.inference import parts as parts_lib

    log = log or (lambda msg: print(msg, file=sys.stderr))
    items = list_images(images_dir)
    strategy, distribution = embedding_strategy(distribution)
    replicas = strategy.num_replicas_in_sync
    infer, dim, name, config, label = _embedding_function(model, strategy)
    n = len(items)
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic.remove_leftovers(out.parent)  # a killed pass's unfinished HDF5 file
    partial = out.with_name(out.name + ".partial")
    key = embedding_key(_model_file(label), items, replicas)
    parts, saved_batch_size = parts_lib.load_parts(partial, key, overwrite)
    batch_size = saved_batch_size or batch_size
    start = sum(len(p) for p in parts)
    if replicas > 1:
        log(f"distribution: {distribution}, {replicas} replicas (each batch of {batch_size} split across them)")
    if start:
        log(f"resuming at patch {start} of {n} (batch size {batch_size}, as when it started)")
    shards = out.with_name(out.name + ".shards")
    if shards.exists():  # an earlier --runner pass's rows: they will not describe the OUT this pass writes
        shutil.rmtree(shards, ignore_errors=True)  # before OUT is replaced: a kill leaves no new OUT beside them
        log(f"removed {shards}: the shards of an earlier --runner pass into {out.name}, which this pass replaces")
    t0 = time.perf_counter()
    with atomic.atomic_output(out) as tmp:
        with h5py.File(tmp, "w") as f:
            features = _Writer(f, [s for s, _ in items], dim, name, config, label).features
            row = 0
            for part in parts:
                features[row:row + len(part)] = part
                row += len(part)
            pending, t_saved = [], time.perf_counter()
            for i, j, batch in _batches(items, start, batch_size):
                rows = infer(batch)
                features[i:j] = rows
                pending.append(rows)
                _progress(log, j, n, start, t0)
                if j < n and time.perf_counter() - t_saved >= checkpoint_seconds:
                    parts.append(np.concatenate(pending))
                    pending = []
                    parts_lib.save_part(partial, key, parts, batch_size)
                    parts[-1] = None  # on disk now: keep memory flat
                    t_saved = time.perf_counter()
    shutil.rmtree(partial, ignore_errors=True)
    seconds = time.perf_counter() - t0
    return {"n": n, "dim": dim, "seconds": seconds, "images_per_s": (n - start) / seconds if seconds > 0 else None,
            "out": str(out), "resumed_from": start, "distribution": distribution, "replicas": replicas}


# --------------------------------------------------------------------------- TFRecord shards
SHARDS_FORMAT = "hcdtf-embedding-shards/1"
SHARD_PREFIX = "embeddings"  # files embeddings-00000-of-00004.tfrecord, ..., each in id order


def shard_example(stem, row):
    """One serialised `tf.train.Example`: `id` (bytes, the file stem), `feature` (float32 [d])."""
    import tensorflow as tf

    return tf.train.Example(features=tf.train.Features(feature={
        "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[stem.encode()])),
        "feature": tf.train.Feature(float_list=tf.train.FloatList(value=np.asarray(row, np.float32))),
    })).SerializeToString()


def shard_name(shard, n_shards):
    return f"{SHARD_PREFIX}-{shard:05d}-of-{n_shards:05d}.tfrecord"


def write_shard(shards_dir, shard, n_shards, rows):
    """Writes one shard (TensorFlow's TFRecord writer: any `tf.io.gfile` path) from `(id,
    serialised example)` pairs, in id order, under a temporary name renamed when complete (a
    retried bundle rewrites the same file). Returns its name."""
    import uuid

    import tensorflow as tf

    name = shard_name(shard, n_shards)
    final = f"{str(shards_dir).rstrip('/')}/{name}"
    tmp = f"{str(shards_dir).rstrip('/')}/.{name}.tmp-{uuid.uuid4().hex}"
    with tf.io.TFRecordWriter(tmp) as writer:
        for _, example in sorted(rows):
            writer.write(example)
    tf.io.gfile.rename(tmp, final, overwrite=True)
    return name


def shard_files(shards_dir):
    files = sorted(pathlib.Path(shards_dir).glob(f"{SHARD_PREFIX}-*.tfrecord"))
    if not files:
        raise FileNotFoundError(f"{shards_dir}: no {SHARD_PREFIX}-*.tfrecord shards")
    return files


def read_shards(shards_dir, batch_size=1024):
    """A `tf.data.Dataset` of `{"id": string [B], "feature": float32 [B, d]}` batches over the
    TFRecord shards of `hcdtf embed --runner`, read in shard name order, which is id order (each
    shard holds a contiguous range of ids, sorted). What a head trained on embeddings reads.

    Only a finished pass's shards are read: its `spec.json` (written last) must be there and list
    exactly the shard files present; a pass that failed or was killed leaves none, and its shards
    are refused (ValueError naming the folder) rather than read as if they were all the rows."""
    spec_path = pathlib.Path(shards_dir) / "spec.json"
    files = shard_files(shards_dir)
    try:
        spec = json.loads(spec_path.read_text())
        dim, listed = int(spec["dim"]), list(spec["files"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError(f"{shards_dir}: no readable spec.json, so the pass that wrote these shards did not "
                         "finish; run `hcdtf embed ... --runner` again") from None
    if spec.get("format") != SHARDS_FORMAT or listed != [f.name for f in files]:
        raise ValueError(f"{shards_dir}: the shard files are not the ones spec.json lists (a pass that did not "
                         "finish, or files added or removed since); run `hcdtf embed ... --runner` again")
    return _shard_dataset(files, dim, batch_size)


def _shard_dataset(files, dim, batch_size):
    """The shards' rows as :func:`read_shards` gives them; ``dim`` None: from the first record."""
    import tensorflow as tf

    if dim is None:
        first = next(iter(tf.data.TFRecordDataset([str(files[0])]).take(1))).numpy()
        dim = len(tf.train.Example.FromString(first).features.feature["feature"].float_list.value)
    features = {"id": tf.io.FixedLenFeature([], tf.string), "feature": tf.io.FixedLenFeature([dim], tf.float32)}
    return tf.data.TFRecordDataset([str(f) for f in files]).batch(batch_size).map(
        lambda x: tf.io.parse_example(x, features))


def write_from_shards(out, shards_dir, ids, name, config, label, log=None):
    """The HDF5 file of `embed` (the same bytes for the same rows) from the shards: rows put in
    id order through a memory-mapped scratch file beside `out` (memory flat in the data size);
    every id must appear exactly once. Writes `spec.json` in the shards folder too."""
    import shutil

    import h5py

    from hcdtf import atomic

    out = pathlib.Path(out)
    atomic.remove_leftovers(out.parent)  # a killed launcher's scratch folder or unfinished file
    files = shard_files(shards_dir)  # (the same list is read, logged and written to spec.json)
    index = {s: k for k, s in enumerate(ids)}
    seen = np.zeros(len(ids), dtype=bool)
    dim = None
    scratch = atomic.temporary_name(out.with_name(out.name + ".rows"))
    scratch.mkdir()
    try:
        rows = None
        for batch in _shard_dataset(files, None, 1024):  # no spec.json yet: written below
            got = batch["feature"].numpy()
            if rows is None:
                dim = got.shape[1]
                rows = np.lib.format.open_memmap(pathlib.Path(scratch) / "rows.npy", mode="w+",
                                                 dtype=np.float32, shape=(len(ids), dim))
            for stem, row in zip(batch["id"].numpy(), got):
                k = index.get(stem.decode())
                if k is None or seen[k]:
                    raise ValueError(f"{shards_dir}: id {stem.decode()!r} is "
                                     f"{'not an image of this pass' if k is None else 'in the shards twice'}")
                rows[k], seen[k] = row, True
        if not seen.all():
            raise ValueError(f"{shards_dir}: {int((~seen).sum())} of {len(ids)} ids have no row "
                             f"(first: {ids[int(np.argmin(seen))]!r})")
        with atomic.atomic_output(out) as tmp:
            with h5py.File(tmp, "w") as f:
                features = _Writer(f, list(ids), dim, name, config, label).features
                for i in range(0, len(ids), 1024):
                    features[i:i + 1024] = rows[i:i + 1024]
        del rows
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if log:
        log(f"wrote {out} from the {len(files)} shards in {shards_dir}")
    atomic.write_json(pathlib.Path(shards_dir) / "spec.json", {
        "format": SHARDS_FORMAT, "n": len(ids), "dim": int(dim), "model": name, "source": label,
        "files": [f.name for f in files],
        "features": {"id": "bytes (image file stem)", "feature": f"float32 [{dim}]"}})
    return dim
