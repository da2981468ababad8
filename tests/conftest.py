"""Shared fixtures: one tiny synthetic sample, built once per test session through the real TFDS
builder, and one tiny trained run directory, so the slow parts are paid for once.

Under pytest-xdist (``make test`` runs two workers) each worker is its own process with its own
session, so a session fixture used on both workers used to be built twice. The costly ones
(`_shared`) are now built once for the whole run, in a folder both workers see, under a file lock;
tests read them in place and must not change them (checked at the end of each worker's session).
A test that changes a run directory works on a copy of it (``shutil.copytree``)."""

from __future__ import annotations

import os
import pathlib
import shutil
import traceback

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # tests are CPU tests, even on a GPU machine
# `train.precision: auto` keeps float32 without timing a probe (what HCDTF_PRECISION_PROBE=0 is
# for): runs that do not pin a precision compute the same on every CPU kind and under any load
# (the probe picks bfloat16 or not from timings), in every process the tests start, and do not
# pay for the probe's two model builds each. tests/test_precision.py turns the probe on to test it.
os.environ.setdefault("HCDTF_PRECISION_PROBE", "0")

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


# --------------------------------------------------------------------------- one build for all workers
def _tree(path: pathlib.Path) -> dict:
    """Every file under ``path`` with its size and modification time (what `_shared` checks)."""
    return {str(p.relative_to(path)): (st.st_size, st.st_mtime_ns)
            for p in sorted(path.rglob("*")) if p.is_file() and not p.is_symlink() for st in [p.stat()]}


def _shared(request, tmp_path_factory, name: str, build, check: bool = True) -> pathlib.Path:
    """``build(path)`` once per test run, whichever xdist worker asks first; returns ``path``.

    The standard pytest-xdist recipe: the folder sits in the run's base temporary directory,
    which all workers share (``getbasetemp().parent``); a file lock makes the second worker wait
    for the first one's build, and a marker written last says the build finished, so a build that
    a killed worker left half done is removed and redone, never reused. A build that raised is
    not retried by the other worker: it fails with the first worker's error. Without xdist this is
    a plain ``mktemp`` folder. With ``check``, each worker's session ends with an error if a test
    changed, added or removed a file in the folder (the other worker may be reading it)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is None:
        path = tmp_path_factory.mktemp(name)
        build(path)
    else:
        from filelock import FileLock

        root = tmp_path_factory.getbasetemp().parent / "shared"
        root.mkdir(exist_ok=True)
        path, done, failed = root / name, root / f"{name}.done", root / f"{name}.failed"
        with FileLock(str(root / f"{name}.lock")):
            if failed.is_file():
                raise RuntimeError(f"the shared fixture {name!r} failed to build on another worker:\n"
                                   + failed.read_text())
            if not done.is_file():
                if path.exists():
                    shutil.rmtree(path)  # a build interrupted by a killed worker
                path.mkdir()
                try:
                    build(path)
                except BaseException:
                    failed.write_text(f"[{worker}] " + traceback.format_exc())
                    raise
                done.write_text(worker)
    if check:
        before = _tree(path)

        def unchanged():
            after = _tree(path)
            changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
            assert not changed, (f"tests changed the shared fixture {name!r} ({path}), which other tests "
                                 f"read (on both xdist workers); copy it first. Changed: {changed[:10]}")

        request.addfinalizer(unchanged)
    return path


# --------------------------------------------------------------------------- the shared fixtures
@pytest.fixture(scope="session")
def sample_dir(request, tmp_path_factory) -> pathlib.Path:
    """A 96-patch synthetic sample in the Kaggle layout (train/, train_labels.csv, test/)."""
    from hcdtf import synthetic

    return _shared(request, tmp_path_factory, "sample",
                   lambda p: synthetic.write_sample(p / "kaggle", n=96, n_test=8, seed=0)) / "kaggle"


@pytest.fixture(scope="session")
def data_dir(request, sample_dir, tmp_path_factory) -> pathlib.Path:
    """The sample built with the `hcd/kaggle` TFDS builder (80/10/10 split)."""
    from hcdtf.data import pipeline as data

    return _shared(request, tmp_path_factory, "tfds",
                   lambda p: data.build_dataset(str(sample_dir), str(p), "kaggle"))


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
def quickstart_dir(request, tmp_path_factory) -> pathlib.Path:
    """`hcdtf quickstart` run once for the session (its ResNet also serves the slide tests). Not
    checked for changes: test_quickstart reruns the quick start in it (which must find everything
    done); its readers are one xdist group (`XDIST_GROUPS`), so they never run beside that rerun."""
    from hcdtf import quickstart

    return _shared(request, tmp_path_factory, "quickstart",
                   lambda p: quickstart.run(str(p / "qs"), log=lambda *_: None, **QUICKSTART), check=False) / "qs"


@pytest.fixture(scope="session")
def trained_run(request, data_dir, tmp_path_factory) -> pathlib.Path:
    """A finished one-epoch ResNet18 run (random init) on the shared data set. Read-only: a test
    that evaluates, resumes or overwrites a run does it on a copy (``shutil.copytree``)."""
    from hcdtf.training import train

    return _shared(request, tmp_path_factory, "runs",
                   lambda p: train.train(testing_config(data_dir, p / "resnet18"), log=lambda *_: None)) / "resnet18"


@pytest.fixture(scope="session")
def export_bundle(request, trained_run, tmp_path_factory) -> pathlib.Path:
    """``trained_run`` exported once in every format and int8 (the suite's one heavy conversion):
    the export base directory, with version 1. The sample's test split has 10 patches, where one
    swapped pair moves the AUC by 0.04, so the int8 guard's margin is wide here (its refusal is
    tested on its own in test_export.py). Read-only: test_export.py adds its version 2 in a copy."""
    from hcdtf import export, precision

    def build(root):
        # bf16 where this CPU computes it (elsewhere the export refuses it: tested in test_export.py)
        quantize = ("int8", "bf16") if precision.cpu_features()["native_bf16"] else ("int8",)
        export.export_run(trained_run, root / "models" / "hcd", formats=export.FORMATS, quantize=quantize,
                          margin=0.5, log=lambda *_: None)

    return _shared(request, tmp_path_factory, "export", build) / "models" / "hcd"


# --------------------------------------------------------------------------- scheduling on xdist workers
# `make test` runs `pytest -n 2 --dist loadgroup`, which here means the units below (xdist's own
# `xdist_group` marks do nothing under pytest 9: pytest-xdist 3.8 renames `item._nodeid`, which
# pytest 9 no longer reads). A unit is handed to one worker, which runs it from start to end. By
# default a unit is a test module, so a module-scoped fixture is built once, on one worker;
# XDIST_GROUPS puts modules together (the quick start's readers share the suite's costliest
# fixture, and test_quickstart reruns the quick start in it); the tests of SPLIT_MODULES (no
# costly module fixture, long tests) are units of their own, handed to whichever worker is free.
XDIST_GROUPS = {"test_quickstart.py": "quickstart", "test_slide_model.py": "quickstart"}
SPLIT_MODULES = {
    "test_experiment.py", "test_slide_predict.py",  # its module fixture: two small slides (2 s)
    "test_rundir.py", "test_train.py", "test_precision.py", "test_encoders.py", "test_tfds_builder.py",
    "test_build_resume.py", "test_benchmarks.py", "test_cli.py", "test_issue21_minor.py", "test_unwritable.py",
}
# Units that start first, longest first, so that no long one starts last while the other worker
# idles (the rest follow in collection order): CPU seconds on one worker of a loaded 2-core run
# (`--durations` gives wall time). A stale entry changes nothing but the order.
LONGEST_FIRST = (
    "test_resume.py",  # 225 s: the kill chain (module fixture: the uninterrupted run)
    "quickstart",  # 175 s: the quick start (166 s) and its readers
    "test_gpu_check.py",  # 165 s: mixed_float16 training on a CPU
    "test_experiment.py::test_an_experiment_killed_between_runs_and_inside_one_ends_as_an_uninterrupted_one",  # 115 s
    "test_export.py",  # 100 s with the shared export bundle
    "test_slide_predict.py::test_kill_and_resume_gives_the_uninterrupted_outputs",  # 45 s
    "test_slide_viewer.py",
    "test_slide_predict.py::test_tta_and_a_slide_read_with_resizing",
)


def _unit(nodeid: str) -> str:
    """The xdist unit of the test ``nodeid``: a group, a module, or ``module::function``."""
    path, _, rest = nodeid.partition("::")
    module = path.rsplit("/", 1)[-1]
    if module in XDIST_GROUPS:
        return XDIST_GROUPS[module]
    if module in SPLIT_MODULES:
        return f"{module}::{rest.split('[', 1)[0]}"
    return module


@pytest.hookimpl(optionalhook=True)  # xdist's hook: unknown where xdist is off (`-p no:xdist`)
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadgroup`: xdist's scope scheduler with `_unit` as the scope, in collection order."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class UnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _unit(nodeid)

    config.option.loadscopereorder = False  # keep LONGEST_FIRST's order (not "most tests first")
    return UnitScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    rank = {unit: i for i, unit in enumerate(LONGEST_FIRST)}
    # a stable sort: within a unit, and for units not ranked, the collection order is kept
    items.sort(key=lambda item: rank.get(_unit(item.nodeid), len(rank)))
