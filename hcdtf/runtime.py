"""Process-wide runtime choices, made once at the entry point: seeds, precision, distribution.

Kept apart from the model and training code so that those never touch global state themselves
(TF Model Garden does the same: the policy is set before anything is built).
"""

from __future__ import annotations

import json
import os
import random

import numpy as np


def quiet_tensorflow() -> None:
    """Hides TensorFlow's C++ start-up chatter unless the user asked for it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def set_seed(seed: int) -> None:
    """Seeds Python, NumPy, TensorFlow and Keras. With ``enable_op_determinism`` the same seed
    gives the same run on a CPU (and on a GPU, at some speed cost for a few kernels)."""
    import keras
    import tensorflow as tf

    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def has_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def resolve_precision(precision: str) -> str:
    """``auto`` means mixed_float16 on a GPU and float32 on a CPU: on CPUs without AVX-512/AMX
    (like our 2-core dev machines) float16 and bfloat16 are slower than float32."""
    if precision == "auto":
        return "mixed_float16" if has_gpu() else "float32"
    return precision


def set_precision(precision: str) -> str:
    import keras

    resolved = resolve_precision(precision)
    keras.mixed_precision.set_global_policy(resolved)
    return resolved


def virtual_cpus() -> int:
    """``HCDTF_VIRTUAL_CPUS=N`` splits the CPU into N logical devices, so that MirroredStrategy
    can be tried (and tested) on a machine without GPUs. Must be applied before TF starts."""
    import tensorflow as tf

    n = int(os.environ.get("HCDTF_VIRTUAL_CPUS", "0") or 0)
    if n > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
        except RuntimeError:
            pass  # already initialised (e.g. set earlier in this process)
    return n


def make_strategy(name: str):
    """Returns a ``tf.distribute`` strategy and its short name.

    ``auto``: MirroredStrategy when several GPUs are visible, MultiWorkerMirroredStrategy when
    ``TF_CONFIG`` names more than one worker, else the default (one device) strategy. Without
    GPUs, ``mirrored`` uses the logical CPUs of ``HCDTF_VIRTUAL_CPUS``.
    """
    import tensorflow as tf

    virtual_cpus()

    if name == "auto":
        tf_config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
        workers = tf_config.get("cluster", {}).get("worker", [])
        if len(workers) > 1:
            name = "multiworker"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "one"
    if name == "one":
        return tf.distribute.get_strategy(), "one"
    if name == "mirrored":
        devices = None
        if not tf.config.list_logical_devices("GPU"):
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices), "mirrored"
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy(), "multiworker"
    raise ValueError(f"unknown strategy {name!r}; valid: auto, one, mirrored, multiworker")
