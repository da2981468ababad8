"""Issue 21, cases 2-7 and two minor items: what a new user's mistakes and a hostile machine (kill -9,
a full or read-only disk, symlink loops, 16-bit images) get from hcdtf: one line and exit 2, or the
right result; nothing stale, no orphan process, no truncated file under its final name.

Full-disk cases mount a small tmpfs (root only; skipped elsewhere); read-only ones use
tests/readonly.py (never skipped)."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from conftest import REPO, cli_fails, testing_config
from hcdtf import synthetic
from hcdtf.cli import main
from tfds_builder.hcd import hcd_dataset_builder as hcd


@contextlib.contextmanager
def tmpfs(where: pathlib.Path, size: str = "1m"):
    """A small tmpfs mounted at ``where`` (a full disk is one write away); skips without root."""
    where.mkdir(parents=True, exist_ok=True)
    options = f"size={size}"
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _invoke(args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _one_line_error(result, *words):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    error = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error) == 1, result.output
    for w in words:
        assert w in error[0], result.output
    return error[0]


def _patch_size() -> int:
    from hcdtf.synthetic.kaggle import tif_bytes

    return len(tif_bytes(np.zeros((96, 96, 3), np.uint8)))


# ----------------------------------------------------------------------------- case 2: 16-bit RGB
def _write_16bit(path: pathlib.Path) -> None:
    tifffile.imwrite(path, np.full((96, 96, 3), 30000, np.uint16), photometric="rgb")


def test_16bit_rgb_tiffs_are_refused_by_build_and_predict(trained_run, tmp_path):
    manual = tmp_path / "kaggle"
    synthetic.write_sample(manual, n=24, n_test=2, seed=3)
    victim = sorted((manual / "train").glob("*.tif"))[0]
    _write_16bit(victim)  # Pillow opens this as mode "RGB" and would keep 30000 >> 8 = 117
    with pytest.raises(hcd.BadInputError, match=r"not_uint8_rgb: 1: .*16 bits per sample") as err:
        hcd.scan_kaggle(str(manual))
    assert victim.name in str(err.value)
    labelled, counts = hcd.scan_kaggle(str(manual), strict=False)
    assert counts == {"not_uint8_rgb": 1} and victim.stem not in dict(labelled)
    result = _invoke(["build-dataset", "--manual-dir", manual, "--data-dir", tmp_path / "tfds"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert victim.name in result.output and "16 bits per sample" in result.output
    assert not (tmp_path / "tfds").exists() or not list((tmp_path / "tfds").rglob("*.tfrecord*"))

    images = tmp_path / "images"
    images.mkdir()
    for p in sorted((manual / "test").glob("*.tif")):
        shutil.copy(p, images / p.name)
    _write_16bit(images / "wide.tif")
    out = tmp_path / "submission.csv"
    cli_fails(["predict", str(trained_run), "--images", str(images), "--out", str(out)],
              "wide.tif", "8-bit", "16 bits per sample")
    (images / "wide.tif").unlink()
    (images / "loop.tif").symlink_to("loop.tif")  # case 7: a symlink loop is named, not left out silently
    cli_fails(["predict", str(trained_run), "--images", str(images), "--out", str(out)],
              "loop.tif", "Too many levels of symbolic links")
    assert not out.exists()


# ----------------------------------------------------------------------------- cases 3 and 7: --weights FILE
def test_weights_takes_a_run_checkpoint_of_the_same_arch_and_refuses_others_in_one_line(
        trained_run, data_dir, tmp_path):
    from hcdtf.training import train
    from hcdtf.models.warmstart import WeightsFileError

    checkpoint = trained_run / "checkpoints" / "best.weights.h5"
    cfg = testing_config(data_dir, tmp_path / "warm", f"model.weights={checkpoint}", "model.transfer=freeze_base")
    model, used = train.build_model(cfg, log=lambda *_: None)  # what `hcdtf train --weights FILE` builds
    assert used == str(checkpoint)
    with h5py.File(checkpoint, "r") as f:  # the file itself, read without Keras
        dense = next(g for g in f["layers"].values() if g["vars"].attrs.get("name") == "head_logit")
        kernel, bias = dense["vars"]["0"][()], dense["vars"]["1"][()]
    np.testing.assert_array_equal(model.get_layer("head_logit").kernel.numpy(), kernel)
    np.testing.assert_array_equal(model.get_layer("head_logit").bias.numpy(), bias)
    assert np.any(kernel != 0)

    other_arch = tmp_path / "resnet34.weights.h5"
    shutil.copy(checkpoint, other_arch)
    with h5py.File(other_arch, "r+") as f:
        f["vars"].attrs["name"] = "resnet34_fine_tune"
    cfg = testing_config(data_dir, tmp_path / "other", f"model.weights={other_arch}")
    with pytest.raises(WeightsFileError, match="checkpoint of a ResNet34 classifier.*not of a ResNet10"):
        train.build_model(cfg, log=lambda *_: None)

    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(os.urandom(1000))
    out = tmp_path / "run"
    line = _one_line_error(_invoke(["train", "--config", REPO / "configs" / "testing.yaml", "--data-dir", data_dir,
                                    "--output-dir", out, "--weights", garbage]),
                           "garbage.h5", "not an HDF5 weights file", "checkpoints/best.weights.h5")
    assert len(line) < 500
    assert not out.exists() or not list(out.iterdir())  # nothing from a failed start
    with h5py.File(tmp_path / "empty.h5", "w") as f:  # HDF5, but holds no weights at all
        f.create_dataset("x", data=[1])
    _one_line_error(_invoke(["train", "--config", REPO / "configs" / "testing.yaml", "--data-dir", data_dir,
                             "--output-dir", out, "--weights", tmp_path / "empty.h5"]),
                    "empty.h5", "does not hold weights of the ResNet10 base")


# ----------------------------------------------------------------------------- cases 4 and 5: slides
@pytest.fixture(scope="module")
def one_slide_predicted(trained_run, tmp_path_factory):
    """Two synthetic slides (reference.csv names both); only slide_000 predicted."""
    root = tmp_path_factory.mktemp("faults_slides")
    slides = root / "slides"
    from hcdtf.slide import synthetic as slide_synthetic

    slide_synthetic.write_slides(slides, n=2, seed=0, size=(576, 480), log=lambda *_: None)
    pred = root / "pred"
    result = _invoke(["slide", "predict", trained_run, slides / "slide_000.svs", "--output-dir", pred])
    assert result.exit_code == 0, result.output
    return slides, pred


def test_slide_evaluate_names_reference_slides_that_were_never_predicted(one_slide_predicted, tmp_path):
    slides, pred = one_slide_predicted
    assert "slide_001" in (slides / "reference.csv").read_text()
    out = tmp_path / "eval"
    result = _invoke(["slide", "evaluate", pred, "--annotations", slides / "annotations",
                      "--reference", slides / "reference.csv", "--output-dir", out, "--n-bootstrap", "10"])
    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if "named in --reference" in line]
    assert len(notes) == 1 and "slide_001" in notes[0] and "not evaluated" in notes[0], result.output
    metrics = json.loads((out / "slide_metrics.json").read_text())
    assert metrics["reference_without_prediction"] == ["slide_001"]
    assert [s["slide"] for s in metrics["slides"]] == ["slide_000"]
    assert "slide_001" in (out / "slide_report.md").read_text()


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_kill_while_detections_csv_is_written_leaves_nothing_after_the_resumed_run(
        trained_run, one_slide_predicted):
    slides, pred = one_slide_predicted
    folder = pred / "slide_000"
    before = (folder / "detections.csv").read_bytes()
    # The atomic writer killed mid-write: a real process writing detections.csv through it, killed.
    code = ("import sys, time; from hcdtf.atomic import atomic_open\n"
            f"with atomic_open({str(folder / 'detections.csv')!r}) as f:\n"
            "    f.write('0.5,1,2\\n'); f.flush(); print('writing', flush=True); time.sleep(60)\n")
    writer = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    leftovers = list(folder.glob(".detections.tmp-*.csv"))
    assert len(leftovers) == 1
    live = folder / f".overlay.tmp-{os.getpid()}-abcdef.png"  # a writer still running: kept
    live.write_bytes(b"")
    result = _invoke(["slide", "predict", trained_run, slides / "slide_000.svs", "--output-dir", pred])
    assert result.exit_code == 0 and "already done" in result.output, result.output
    assert not leftovers[0].exists() and live.exists()
    live.unlink()
    assert (folder / "detections.csv").read_bytes() == before


def test_evaluate_without_calibrate_removes_the_calibrated_reliability_plot(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    result = _invoke(["evaluate", run, "--calibrate"])
    assert result.exit_code == 0, result.output
    assert (run / "reliability_calibrated.png").is_file()
    result = _invoke(["evaluate", run, "--threshold", "youden"])
    assert result.exit_code == 0, result.output
    assert "calibration" not in json.loads((run / "metrics.json").read_text())
    assert not (run / "reliability_calibrated.png").exists()
    assert (run / "reliability.png").is_file()


# ----------------------------------------------------------------------------- case 6: orphans
def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_sample_data_workers_die_with_their_parent(tmp_path):
    out = tmp_path / "big"
    code = f"from hcdtf.synthetic import write_sample; write_sample({str(out)!r}, n=12000, workers=2)"
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=REPO)
    try:
        t0 = time.time()
        while not (out / "train").is_dir() or len(_children(parent.pid)) < 2 or not any((out / "train").iterdir()):
            assert parent.poll() is None and time.time() - t0 < 120
            time.sleep(0.05)
        workers = _children(parent.pid)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.time() + 5
        while any(map(_running, workers)) and time.time() < deadline:
            time.sleep(0.05)
        alive = [w for w in workers if _running(w)]
        assert not alive, f"workers {alive} outlived their parent"
    finally:
        if parent.poll() is None:
            parent.kill()
    # No truncated patch under a final name: every .tif there is whole (a kill hits between renames).
    size = _patch_size()
    assert all(p.stat().st_size == size for p in (out / "train").glob("*.tif"))


# ----------------------------------------------------------------------------- case 7: raw tracebacks
def test_a_symlink_loop_in_train_is_bad_input_and_skipped_with_skip_bad(tmp_path):
    manual = tmp_path / "kaggle"
    synthetic.write_sample(manual, n=24, n_test=2, seed=4)
    (manual / "train" / "loop.tif").symlink_to("loop.tif")  # ELOOP on every stat
    listed = sorted((manual / "train").glob("[0-9a-f]*.tif"))[0]
    listed.unlink()
    listed.symlink_to(listed.name)  # a listed id whose file is a loop too
    result = _invoke(["build-dataset", "--manual-dir", manual, "--data-dir", tmp_path / "tfds"])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "loop.tif" in result.output and listed.name in result.output
    assert "Too many levels of symbolic links" in result.output
    result = _invoke(["build-dataset", "--manual-dir", manual, "--data-dir", tmp_path / "tfds", "--skip-bad"])
    assert result.exit_code == 0, result.output
    assert "corrupt_image: 1" in result.output and "(train: " in result.output


def test_sample_data_on_a_full_disk_is_one_line_leaves_no_truncated_patch_and_resumes(tmp_path):
    with tmpfs(tmp_path / "small", "1m") as small:
        out = small / "sample"
        line = _one_line_error(_invoke(["sample-data", out, "--n", "120", "--n-test", "4"]),
                               str(out), "No space left on device", "rerun the same command")
        size = _patch_size()
        written = list((out / "train").glob("*.tif"))
        assert written and all(p.stat().st_size == size for p in written), line
        assert not [p for p in (out / "train").iterdir() if p.name.startswith(".")]
        assert not (out / "train_labels.csv").exists()
        subprocess.run(["mount", "-o", "remount,size=8m", str(small)], check=True)
        result = _invoke(["sample-data", out, "--n", "120", "--n-test", "4"])
        assert result.exit_code == 0, result.output
        assert len(list((out / "train").glob("*.tif"))) == 120 and (out / "train_labels.csv").is_file()
        # Minor item: a finished sample asked for again is done, not an error.
        result = _invoke(["sample-data", out, "--n", "120", "--n-test", "4"])
        assert result.exit_code == 0 and "done already" in result.output, result.output
        _one_line_error(_invoke(["sample-data", out, "--n", "121", "--n-test", "4"]), "already exists")


def test_sample_data_into_a_name_too_long_is_one_line(tmp_path):
    _one_line_error(_invoke(["sample-data", tmp_path / ("a" * 300), "--n", "8"]), "File name too long")


def test_build_dataset_on_a_full_disk_is_one_line_and_keeps_nothing(sample_dir, tmp_path):
    with tmpfs(tmp_path / "small", "600k") as small:
        _one_line_error(_invoke(["build-dataset", "--manual-dir", sample_dir, "--data-dir", small / "tfds"]),
                        str(small / "tfds"), "no space left")
        assert list(small.iterdir()) == []


def test_sample_slides_onto_a_read_only_place_is_one_line(tmp_path):
    from readonly import read_only_dir

    with read_only_dir(tmp_path / "ro") as ro:  # a read-only tmpfs as root, mode 0o555 otherwise
        line = _one_line_error(_invoke(["sample-slides", ro / "slides", "--n", "1"]), str(ro / "slides"))
        assert "Read-only file system" in line or "Permission denied" in line
    with tmpfs(tmp_path / "tiny", "200k") as tiny:  # and full: no half-written slide under any name
        _one_line_error(_invoke(["sample-slides", tiny / "slides", "--n", "1"]), "No space left on device")
        assert not [p for p in (tiny / "slides").rglob("*") if p.suffix in (".svs", ".tmp")]


# ----------------------------------------------------------------------------- minor: failed export
def test_a_failed_export_removes_the_export_dir_it_created_and_only_that(trained_run, tmp_path):
    new = tmp_path / "new" / "models" / "hcd"
    args = ["export", trained_run, "--quantize", "int8", "--data-dir", tmp_path / "nowhere"]
    _one_line_error(_invoke([*args, "--export-dir", new]), "nowhere")  # fails after creating the dir
    assert not (tmp_path / "new").exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    _one_line_error(_invoke([*args, "--export-dir", existing / "hcd"]), "nowhere")
    assert existing.is_dir() and list(existing.iterdir()) == []
