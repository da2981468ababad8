"""The TF Serving bundle around a SavedModel: warm-up requests, model config, batching parameters.

* ``<version>/assets.extra/tf_serving_warmup_requests``: a TFRecord file of ``PredictionLog``
  records (TF Serving's own protos, from the ``tensorflow-serving-api`` package), one per
  signature and batch size in ``WARMUP_BATCH_SIZES``; TF Serving replays them when it loads the
  version, so the first real request does not pay for graph set-up.
* ``<export_dir>/models.config``: a ``ModelServerConfig`` text proto (model name, base path,
  version policy) for ``tensorflow_model_server --model_config_file``.
* ``<export_dir>/batching_parameters.txt``: a ``BatchingParameters`` text proto for
  ``--enable_batching --batching_parameters_file``.

The batching values come from the SavedModel batch-size sweep of ``benchmarks/inference.py``
(see benchmarks/README.md and ``BATCHING`` below).
"""

from __future__ import annotations

import functools
import os
import pathlib

WARMUP_FILE = "tf_serving_warmup_requests"
MODELS_CONFIG = "models.config"
BATCHING_FILE = "batching_parameters.txt"
BATCHING = {
    # Per CPU-second, a SavedModel's throughput grows up to a batch of about 8 and is flat beyond:
    # larger batches add latency and no throughput on a CPU.
    "max_batch_size": 32,
    # A batch-1 call takes tens of milliseconds; a 2 ms wait to merge requests costs little.
    "batch_timeout_micros": 2000,
    "max_enqueued_batches": 16,  # bounds the queue (and the latency) under overload
    # One batch per core at a time: each batch already uses every core through TensorFlow's
    # intra-op threads. Set it to the serving machine's core count.
    "num_batch_threads": 2,
    # Batches are padded up to the next of these: 1 and 4 keep a lone request from paying for 8.
    "allowed_batch_sizes": (1, 4, 8, 16, 32),
}
# One warm-up request per signature and per shape the batching can produce.
WARMUP_BATCH_SIZES = BATCHING["allowed_batch_sizes"]
SERVING_API = "tensorflow-serving-api==2.21.0"
# tensorflow-serving-api declares a dependency on the `tensorflow` package, which would install a
# second TensorFlow beside tensorflow-cpu; its protos need only the one already installed.
SERVING_API_INSTALL = f"pip install --no-deps {SERVING_API}"


class MissingServingApi(ImportError):
    """The TF Serving protos (tensorflow-serving-api) are not installed."""


def serving_protos():
    """(prediction_log_pb2, predict_pb2, model_server_config_pb2), or a clear error."""
    try:
        from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
        from tensorflow_serving.config import model_server_config_pb2
    except ImportError:
        raise MissingServingApi(
            f"the TF Serving warm-up file needs TF Serving's protos: {SERVING_API_INSTALL} "
            "(or `make setup`, which installs them)"
        ) from None
    return prediction_log_pb2, predict_pb2, model_server_config_pb2


def warmup_patches(n: int):
    """``n`` deterministic uint8 patches (colour ramps): any valid input warms the graph up."""
    import numpy as np

    ramp = np.linspace(0, 255, 96, dtype=np.float32)
    base = (ramp[None, :, None] * 0.6 + ramp[:, None, None] * 0.4) * np.array([0.9, 0.6, 0.8], np.float32)
    return np.stack([np.roll(base, 7 * i, axis=1) for i in range(n)]).astype(np.uint8)


def warmup_records(model_name: str) -> list[bytes]:
    """Serialized ``PredictionLog`` records: each signature at each of ``WARMUP_BATCH_SIZES``."""
    import tensorflow as tf

    prediction_log_pb2, predict_pb2, _ = serving_protos()
    x = warmup_patches(max(WARMUP_BATCH_SIZES))
    pngs = [tf.io.encode_png(p).numpy() for p in x]
    records = []
    for size in WARMUP_BATCH_SIZES:
        for signature, name, value in (("serving_default", "images", x[:size]),
                                       ("serving_encoded", "image_bytes", pngs[:size])):
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.model_spec.signature_name = signature
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            records.append(log.SerializeToString())
    return records


def write_warmup(version_dir: pathlib.Path, model_name: str) -> pathlib.Path:
    import tensorflow as tf

    path = version_dir / "assets.extra" / WARMUP_FILE
    path.parent.mkdir(exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in warmup_records(model_name):
            writer.write(record)
    return path


def models_config_text(model_name: str, base_path: str) -> str:
    from google.protobuf import text_format

    _, _, model_server_config_pb2 = serving_protos()
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = model_name
    model.base_path = base_path
    model.model_platform = "tensorflow"
    model.model_version_policy.latest.num_versions = 1  # serve the newest complete version
    return text_format.MessageToString(config)


@functools.lru_cache(maxsize=None)
def batching_parameters_class():
    """TF Serving's ``BatchingParameters`` message (session_bundle_config.proto), the fields hcdtf
    writes: tensorflow-serving-api does not ship this proto, so its layout is declared here."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    f = descriptor_pb2.FileDescriptorProto(
        name="hcdtf/batching_parameters.proto", package="tensorflow.serving",
        dependency=["google/protobuf/wrappers.proto"], syntax="proto3",
    )
    msg = f.message_type.add(name="BatchingParameters")
    fd = descriptor_pb2.FieldDescriptorProto
    for number, name in enumerate(("max_batch_size", "batch_timeout_micros", "max_enqueued_batches",
                                   "num_batch_threads"), start=1):
        msg.field.add(name=name, number=number, type=fd.TYPE_MESSAGE, label=fd.LABEL_OPTIONAL,
                      type_name=".google.protobuf.Int64Value")
    msg.field.add(name="allowed_batch_sizes", number=6, type=fd.TYPE_INT64, label=fd.LABEL_REPEATED)
    msg.field.add(name="pad_variable_length_inputs", number=7, type=fd.TYPE_BOOL, label=fd.LABEL_OPTIONAL)
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))


def batching_parameters_text() -> str:
    from google.protobuf import text_format

    params = batching_parameters_class()()
    for key, value in BATCHING.items():
        if key == "allowed_batch_sizes":
            params.allowed_batch_sizes.extend(value)
        else:
            getattr(params, key).value = value
    return text_format.MessageToString(params)


def write_text_atomic(path: pathlib.Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_server_files(export_dir: pathlib.Path, model_name: str, base_path: str) -> list[pathlib.Path]:
    """``batching_parameters.txt`` and ``models.config`` in ``export_dir`` (each replaced atomically;
    the second needs tensorflow-serving-api)."""
    write_text_atomic(export_dir / BATCHING_FILE, batching_parameters_text())
    write_text_atomic(export_dir / MODELS_CONFIG, models_config_text(model_name, base_path))
    return [export_dir / BATCHING_FILE, export_dir / MODELS_CONFIG]
