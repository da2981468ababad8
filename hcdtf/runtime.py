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


def make_strategy(name: str):
    """Returns a ``tf.distribute`` strategy.

    ``auto``: MirroredStrategy when several GPUs are visible, MultiWorkerMirroredStrategy when
    ``TF_CONFIG`` names more than one worker, else the default (one device) strategy.
    """
    import tensorflow as tf

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
        return tf.distribute.MirroredStrategy(), "mirrored"
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy(), "multiworker"
    raise ValueError(f"unknown strategy {name!r}; valid: auto, one, mirrored, multiworker")
