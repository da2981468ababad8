"""hcdtf.runtime: oneDNN preference, quiet TensorFlow import, op determinism switch.

Each check that depends on how TensorFlow starts runs in a fresh interpreter."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROBE = """
import os, sys
from hcdtf import runtime
runtime.quiet_tensorflow()
print(os.environ.get("TF_ENABLE_ONEDNN_OPTS"), runtime.onednn_enabled())
"""


def _run(code: str, **env) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in ("TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL")}
    full.update(env, CUDA_VISIBLE_DEVICES="", PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full,
                          timeout=300, cwd=REPO)


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86-64 only")
def test_onednn_is_preferred_and_its_startup_notice_hidden():
    out = _run(PROBE)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "True"]
    assert "oneDNN custom operations" not in out.stderr
    assert "absl::InitializeLog" not in out.stderr


def test_the_users_choice_of_onednn_wins():
    out = _run(PROBE, TF_ENABLE_ONEDNN_OPTS="0")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "False"]


def test_verbose_logging_is_not_filtered():
    out = _run(PROBE, TF_CPP_MIN_LOG_LEVEL="0", TF_ENABLE_ONEDNN_OPTS="1")
    assert out.returncode == 0, out.stderr
    assert "oneDNN custom operations are on" in out.stderr


def test_tensorflow_imported_first_is_left_alone():
    code = "import tensorflow\n" + PROBE
    out = _run(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "None"


def test_set_seed_switches_op_determinism():
    from tensorflow.python.framework import config as tf_config

    from hcdtf import runtime

    try:
        runtime.set_seed(0, deterministic=False)
        assert not tf_config.is_op_determinism_enabled()
        runtime.set_seed(0)
        assert tf_config.is_op_determinism_enabled()
    finally:
        runtime.set_seed(0)
