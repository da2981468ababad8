"""Shared fixtures: one tiny synthetic sample, built once per test session through the real TFDS
builder, and one tiny trained run directory, so the slow parts are paid for once."""

from __future__ import annotations

import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # tests are CPU tests, even on a GPU machine

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> pathlib.Path:
    """A 96-patch synthetic sample in the Kaggle layout (train/, train_labels.csv, test/)."""
    from hcdtf import synthetic

    out = tmp_path_factory.mktemp("sample") / "kaggle"
    synthetic.write_sample(out, n=96, n_test=8, seed=0)
    return out


@pytest.fixture(scope="session")
def data_dir(sample_dir, tmp_path_factory) -> pathlib.Path:
    """The sample built with the `hcd/kaggle` TFDS builder (80/10/10 split)."""
    from hcdtf.data import pipeline as data

    out = tmp_path_factory.mktemp("tfds")
    data.build_dataset(str(sample_dir), str(out), "kaggle")
    return out


def testing_config(data_dir, output_dir, *overrides):
    """configs/testing.yaml pointed at the shared data set and ``output_dir``."""
    from hcdtf.config import load_config

    return load_config(
        [CONFIGS / "testing.yaml"],
        [f"data.data_dir={data_dir}", f"output_dir={output_dir}", *overrides],
    )


testing_config.__test__ = False


def cli_fails(args, *words):
    """Runs ``hcdtf ARGS`` in-process and checks it fails as users should see it: exit code 2,
    no traceback, and a message holding each of ``words``."""
    from click.testing import CliRunner

    from hcdtf.cli import main

    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for w in words:
        assert w in result.output, result.output
    return result  # a helper, not a test, wherever it is imported


# The quick start at test size: 1,000 patches; batch 8 for 3 epochs (300 steps, enough for
# BatchNorm's moving statistics to settle in a ResNet trained from scratch), no augmentation;
# 4 small demo slides. With 2 epochs, float32 training on a 2-core Intel Xeon with AMX gave a
# ResNet of test AUC 0.835 whose heat maps missed the demo slides' metastases (slide AUC 0, FROC
# below shuffled maps; the AMD machine's 2 epochs had been enough); 3 gave 0.982 and FROC 1.0, at
# about the same fixture time. The best epoch's checkpoint is kept, so 3 is never worse than 2.
QUICKSTART = dict(
    n=1000, slides=4, slide_size=(1536, 1152),
    # float32: the figures the tests check must not depend on the CPU kind (`auto` picks bfloat16
    # where a probe finds it faster; tests/test_precision.py covers that path)
    overrides=["train.epochs=3", "train.batch_size=8", "data.augment=false", "baseline.epochs=2",
               "train.precision=float32",
               "eval.n_bootstrap=50"],
)


@pytest.fixture(scope="session")
def quickstart_dir(tmp_path_factory) -> pathlib.Path:
    """`hcdtf quickstart` run once for the session (its ResNet also serves the slide tests)."""
    from hcdtf import quickstart

    out = tmp_path_factory.mktemp("quickstart") / "qs"
    quickstart.run(str(out), log=lambda *_: None, **QUICKSTART)
    return out


@pytest.fixture(scope="session")
def trained_run(data_dir, tmp_path_factory) -> pathlib.Path:
    """A finished one-epoch ResNet18 run (random init) on the shared data set."""
    from hcdtf.training import train

    out = tmp_path_factory.mktemp("runs") / "resnet18"
    train.train(testing_config(data_dir, out), log=lambda *_: None)
    return out


@pytest.fixture(scope="session")
def export_bundle(trained_run, tmp_path_factory) -> pathlib.Path:
    """``trained_run`` exported once in every format and int8 (the suite's one heavy conversion):
    the export base directory, with version 1. The sample's test split has 10 patches, where one
    swapped pair moves the AUC by 0.04, so the int8 guard's margin is wide here (its refusal is
    tested on its own in test_export.py)."""
    from hcdtf import export, precision

    export_dir = tmp_path_factory.mktemp("export") / "models" / "hcd"
    # bf16 where this CPU computes it (elsewhere the export refuses it: tested in test_export.py)
    quantize = ("int8", "bf16") if precision.cpu_features()["native_bf16"] else ("int8",)
    export.export_run(trained_run, export_dir, formats=export.FORMATS, quantize=quantize, margin=0.5,
                      log=lambda *_: None)
    return export_dir
