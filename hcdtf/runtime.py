"""Process-wide runtime choices, made once at the entry point: seeds, precision, distribution.

Kept apart from the model and training code so that those never touch global state themselves
(TF Model Garden does the same: the policy is set before anything is built).
"""

from __future__ import annotations

import json
import os
import platform
import random
import sys
import tempfile

import numpy as np

from hcdtf.precision import PRECISIONS, has_gpu  # noqa: F401  (re-exported: config and layers use them)

ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"
# tf.distribute strategies by short name; "auto" is resolved by `make_strategy`.
DISTRIBUTIONS = ("auto", "one", "mirrored", "multiworker")

# Lines TensorFlow's C++ runtime prints while it loads, before absl logging is set up, so that
# TF_CPP_MIN_LOG_LEVEL cannot hide them.
_STARTUP_NOTICES = ("All log messages before absl::InitializeLog() is called",
                    "oneDNN custom operations are on")


def prefer_onednn() -> None:
    """Turns on TensorFlow's oneDNN kernels on x86-64 CPUs, unless the user chose already.

    TensorFlow enables them by default only on CPUs with AVX-512 VNNI/BF16 or AMX. On the
    others (AVX2 machines) the default is the Eigen kernels, whose convolution backward pass is
    slow, so training is much faster with oneDNN (figures in benchmarks/README.md). Must run
    before TensorFlow is imported; ``TF_ENABLE_ONEDNN_OPTS=0`` in the environment keeps the
    Eigen kernels.
    """
    if "tensorflow" in sys.modules:
        return
    if platform.machine().lower() in ("x86_64", "amd64"):
        os.environ.setdefault(ONEDNN_ENV, "1")


# --------------------------------------------------------------------------- TensorFlow's private API
# The only imports of ``tensorflow.python`` in hcdtf (tests/test_architecture.py fails on any
# other, and checks that each still works on the installed TensorFlow). TensorFlow has no public
# way to do these three things:
#
#   _pywrap_util_port.IsMklEnabled()  (tensorflow.python.util)
#       Whether the oneDNN kernels are on: TF_ENABLE_ONEDNN_OPTS is a request, TensorFlow decides
#       by the CPU's features. Used by ``onednn_enabled``: train's log line and the "onednn" of
#       train_summary.json. If a release removes it: they say off; nothing computes differently.
#   config.is_op_determinism_enabled()  (tensorflow.python.framework)
#       tf.config.experimental has the setter only. Used by ``op_determinism_enabled``:
#       FusedBatchNormalization falls back to Keras's computation on GPUs under op determinism
#       (the fused kernel's gradient for beta is not deterministic there). If a release removes
#       it: determinism is assumed on, so GPU runs lose the fused kernel's speed, never their
#       determinism; CPU runs are unaffected.
#   config.disable_op_determinism()  (tensorflow.python.framework)
#       The switch-off (public API: enable only). Used by ``set_seed(deterministic=False)``, i.e.
#       ``--set deterministic=false``. If a release removes it: that setting fails with an
#       ImportError naming this module; the default (deterministic) is unaffected.
def _private(name: str):
    """The private TensorFlow function ``name`` (one of the three above); ImportError or
    AttributeError where the installed TensorFlow lacks it."""
    if name == "IsMklEnabled":
        from tensorflow.python.util import _pywrap_util_port

        return _pywrap_util_port.IsMklEnabled
    if name in ("is_op_determinism_enabled", "disable_op_determinism"):
        from tensorflow.python.framework import config as tf_config

        return getattr(tf_config, name)
    raise ValueError(f"{name!r} is not one of hcdtf's listed private TensorFlow functions")


PRIVATE_TF_FUNCTIONS = ("IsMklEnabled", "is_op_determinism_enabled", "disable_op_determinism")


def onednn_enabled() -> bool:
    """Whether this TensorFlow process runs oneDNN ("MKL") kernels (False if TF cannot say)."""
    try:
        return bool(_private("IsMklEnabled")())
    except (ImportError, AttributeError):
        return False


def op_determinism_enabled() -> bool:
    """Whether TensorFlow's op determinism is on (True if TF cannot say: the safe answer)."""
    try:
        return bool(_private("is_op_determinism_enabled")())
    except (ImportError, AttributeError):
        return True


def import_tensorflow() -> None:
    """Imports TensorFlow once, without the start-up notices it prints to the stderr file
    descriptor whatever TF_CPP_MIN_LOG_LEVEL says (anything else it prints is passed on).
    With ``TF_CPP_MIN_LOG_LEVEL=0`` nothing is filtered."""
    if "tensorflow" in sys.modules:
        return
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") in ("", "0"):
        import tensorflow  # noqa: F401
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", errors="replace")
            kept = [line for line in text.splitlines(keepends=True)
                    if not any(notice in line for notice in _STARTUP_NOTICES)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def quiet_tensorflow() -> None:
    """Prepares the process for TensorFlow: hides its C++ start-up chatter unless the user
    asked for it, then imports it. (oneDNN is already preferred: importing this module ran
    ``hcdtf/__init__.py``, which calls ``prefer_onednn``.)"""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import_tensorflow()


def set_seed(seed: int, deterministic: bool = True) -> None:
    """Seeds Python, NumPy, TensorFlow and Keras. With ``deterministic`` (op determinism) the
    same seed gives the same run on a CPU, and on a GPU at some speed cost for a few kernels;
    without it, GPU kernels (cuDNN's fastest convolution and fused BatchNorm gradients) may
    change the last digits from run to run."""
    import keras
    import tensorflow as tf

    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    else:
        _private("disable_op_determinism")()  # the switch-off is private (see above)


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB. ``VmHWM`` first: Linux carries a parent's
    ``ru_maxrss`` into a forked child, so that figure can be the parent's peak."""
    import resource

    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def set_precision(policy: str) -> str:
    """Sets the Keras global dtype policy (a resolved one: ``auto`` is resolved by
    :func:`hcdtf.precision.resolve_training`, with its probe, before the run is built)."""
    import keras

    if policy == "auto":
        raise ValueError("set_precision takes a resolved policy; resolve 'auto' with hcdtf.precision.resolve_training")
    keras.mixed_precision.set_global_policy(policy)
    return policy


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
    raise ValueError(f"unknown distribution {name!r}; valid: {', '.join(DISTRIBUTIONS)}")
