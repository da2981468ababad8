"""The SavedModel's serving signatures: raw patches in, float32 probability and logit out.

* ``serving_default``: ``images`` uint8 ``[None, 96, 96, 3]`` RGB -> ``probability`` and ``logit``
  (float32 ``[None, 1]``);
* ``serving_encoded``: ``image_bytes`` string ``[None]`` (PNG or JPEG bytes; BMP and GIF are
  accepted too: what the REST API receives as ``{"b64": ...}``) -> the same outputs; decoding and
  the 96x96 size check happen inside the graph, so a client needs nothing but an HTTP library.

Both check their input inside the graph and fail with ``InvalidArgumentError`` and a message that
says what was expected. The metadata dict is an asset, ``assets/hcdtf_metadata.json``
(``tf.saved_model.load(path).hcdtf_metadata.asset_path`` names it).

Written with public TensorFlow API only: a ``tf.Module`` that holds the model's variables, the
two concrete functions and the asset, saved by ``tf.saved_model.save``. (``keras.export.
ExportArchive`` gives the same SavedModel, but its ``track()`` walks every Keras layer looking for
lookup tables, which this model has none of, and that walk was most of the export's time.)
"""

from __future__ import annotations

import json
import pathlib
import tempfile

IMAGE_SIZE = 96
SIGNATURES = ("serving_default", "serving_encoded")
METADATA_ASSET = "hcdtf_metadata.json"
SHAPE_MESSAGE = f"images must be uint8 [batch, {IMAGE_SIZE}, {IMAGE_SIZE}, 3] RGB; got shape"
FORMAT_MESSAGE = "is not a PNG or JPEG image (BMP and GIF are accepted too)"
SIZE_MESSAGE = f"each image must be {IMAGE_SIZE}x{IMAGE_SIZE} pixels; got height, width"
# Leading bytes of the formats tf.io.decode_image reads that we accept.
_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM")


def images_spec(name: str = "images"):
    import tensorflow as tf

    return tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], tf.uint8, name=name)


def probability_function(model):
    """``f(images uint8 [B,96,96,3]) -> {"probability", "logit"}`` (float32 [B,1]), one trace for
    every batch size: the function every exported format is converted from."""
    import tensorflow as tf

    from hcdtf import models

    logits = models.logits_model(model)

    @tf.function(input_signature=[images_spec()], autograph=False)
    def outputs(images):
        # An empty batch skips the network: oneDNN's convolutions (TensorFlow's default on
        # AVX-512 servers, and hcdtf's on every x86-64 CPU) fail on a zero-size batch with
        # "input depth must be evenly divisible by filter depth", and a server may send one.
        logit = tf.cond(
            tf.shape(images)[0] > 0,
            lambda: tf.cast(logits(images, training=False), tf.float32),
            lambda: tf.zeros([0, 1], tf.float32),
        )
        return {"probability": tf.sigmoid(logit), "logit": logit}

    outputs.model_variables = list(logits.variables)
    return outputs


def _runtime_shape(x):
    # The signature fixes the dtype, but a concrete function runs on a tensor of any shape of that
    # dtype (the ResNet itself would take 64x64 patches), so shapes are checked in the graph.
    # Grappler folds tf.rank(x) to the signature's rank, whatever was fed; the shape vector sent
    # through serialize/parse has a rank it cannot know in advance.
    import tensorflow as tf

    shape = tf.shape(x)
    return tf.io.parse_tensor(tf.io.serialize_tensor(shape), shape.dtype)


def _checked_images(images):
    import tensorflow as tf

    shape = _runtime_shape(images)
    padded = tf.concat([shape, tf.zeros([4], tf.int32)], 0)[:4]
    ok = tf.logical_and(
        tf.equal(tf.size(shape), 4),
        tf.reduce_all(tf.equal(padded[1:], tf.constant([IMAGE_SIZE, IMAGE_SIZE, 3]))),
    )
    with tf.control_dependencies([tf.debugging.Assert(ok, [SHAPE_MESSAGE, shape], summarize=8)]):
        return tf.identity(images)


def _decode_one(args):
    import tensorflow as tf

    index, data = args
    known = tf.reduce_any(tf.stack([tf.equal(tf.strings.substr(data, 0, len(m)), m) for m in _MAGIC]))
    with tf.control_dependencies(
        [tf.debugging.Assert(known, ["image_bytes element", index, FORMAT_MESSAGE], summarize=8)]
    ):
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
    size = tf.shape(image)[:2]
    size_ok = tf.reduce_all(tf.equal(size, tf.constant([IMAGE_SIZE, IMAGE_SIZE])))
    with tf.control_dependencies(
        [tf.debugging.Assert(size_ok, ["image_bytes element", index, SIZE_MESSAGE, size], summarize=8)]
    ):
        image = tf.identity(image)
    # Static shape only: the Assert above is the runtime check. (tf.ensure_shape here would run
    # before the Assert inside map_fn's loop and fail first, with an unreadable message.)
    image.set_shape((IMAGE_SIZE, IMAGE_SIZE, 3))
    return image


def _decoded_images(image_bytes):
    import tensorflow as tf

    shape = _runtime_shape(image_bytes)
    rank_ok = tf.debugging.Assert(
        tf.equal(tf.size(shape), 1),
        ["image_bytes must be a 1-D batch [batch] of encoded images; got shape", shape], summarize=8,
    )
    with tf.control_dependencies([rank_ok]):
        image_bytes = tf.identity(image_bytes)
    index = tf.range(tf.size(image_bytes))
    return tf.map_fn(_decode_one, (index, image_bytes), fn_output_signature=tf.uint8)


def serving_module(model, metadata_path: pathlib.Path):
    """A ``tf.Module`` holding the model's variables, both signatures and the metadata asset."""
    import tensorflow as tf

    outputs = probability_function(model)
    root = tf.Module()
    # Tracked so that tf.saved_model.save writes them (and the loaded object has them).
    root.model_variables = outputs.model_variables
    root.outputs = outputs  # one trace of the network, stored once, called by both signatures
    root.serving_default = tf.function(
        lambda images: outputs(_checked_images(images)), input_signature=[images_spec()], autograph=False,
    )
    root.serving_encoded = tf.function(
        lambda image_bytes: outputs(_decoded_images(image_bytes)),
        input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")], autograph=False,
    )
    # Copied to <version>/assets/ and reachable after loading as `loaded.hcdtf_metadata.asset_path`.
    root.hcdtf_metadata = tf.saved_model.Asset(str(metadata_path))
    return root


def write_metadata(path: pathlib.Path, metadata: dict) -> None:
    path.write_text(json.dumps(metadata, indent=2, sort_keys=True, allow_nan=False) + "\n")


def write_saved_model(model, path: pathlib.Path, metadata: dict) -> None:
    """Writes ``model`` (a float32 hcdtf classifier) as a SavedModel with both signatures to ``path``."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        meta_path = pathlib.Path(tmp) / METADATA_ASSET
        write_metadata(meta_path, metadata)
        root = serving_module(model, meta_path)
        signatures = {
            "serving_default": root.serving_default.get_concrete_function(),
            "serving_encoded": root.serving_encoded.get_concrete_function(),
        }
        tf.saved_model.save(root, str(path), signatures=signatures)
