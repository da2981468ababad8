"""Tests of the synthetic Kaggle-layout data set (hcdtf.synthetic)."""

from __future__ import annotations

import csv
import io
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from hcdtf import synthetic
from hcdtf.synthetic import kaggle, tumour

HEX40 = re.compile(r"^[0-9a-f]{40}$")


def _read_csv(path: pathlib.Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def _tif(path: pathlib.Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def _auc(score: np.ndarray, label: np.ndarray) -> float:
    """ROC AUC by ranks (no scikit-learn needed)."""
    order = np.argsort(score, kind="stable")
    ranks = np.empty(len(score))
    ranks[order] = np.arange(1, len(score) + 1)
    pos = label == 1
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@pytest.fixture(scope="module")
def arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return synthetic.generate_arrays(300, seed=11)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> synthetic.SampleInfo:
    return synthetic.write_sample(tmp_path_factory.mktemp("kaggle") / "data", n=60, seed=5, workers=1)


# ---------------------------------------------------------------- layout
def test_layout_files_and_csvs(sample: synthetic.SampleInfo) -> None:
    out = sample.out_dir
    assert (sample.n_train, sample.n_test, sample.seed) == (60, 6, 5)  # n_test defaults to n // 10
    header, rows = _read_csv(out / "train_labels.csv")
    assert header == ["id", "label"]
    assert len(rows) == 60
    ids = [r[0] for r in rows]
    assert all(HEX40.match(i) for i in ids)
    assert {r[1] for r in rows} <= {"0", "1"}
    assert sample.n_positive == sum(int(r[1]) for r in rows)
    assert sorted(p.name for p in (out / "train").iterdir()) == sorted(i + ".tif" for i in ids)

    header, sub = _read_csv(out / "sample_submission.csv")
    assert header == ["id", "label"]
    test_ids = [r[0] for r in sub]
    assert len(test_ids) == 6 and all(r[1] == "0" for r in sub)
    assert all(HEX40.match(i) for i in test_ids)
    assert sorted(p.name for p in (out / "test").iterdir()) == sorted(i + ".tif" for i in test_ids)
    assert not set(ids) & set(test_ids)
    assert len(set(ids)) == len(ids)
    assert not (out / kaggle.UNFINISHED).exists()


def test_seconds_is_the_wall_time_of_the_call(tmp_path: pathlib.Path) -> None:
    start = time.perf_counter()
    info = synthetic.write_sample(tmp_path / "s", n=4, n_test=1, workers=1)
    elapsed = time.perf_counter() - start
    assert 0.5 * elapsed < info.seconds <= elapsed


def test_tifs_are_96x96_rgb_and_match_generate_arrays(sample: synthetic.SampleInfo) -> None:
    out = sample.out_dir
    _, rows = _read_csv(out / "train_labels.csv")
    images, labels, _ = synthetic.generate_arrays(60, seed=5)
    for i, (pid, label) in enumerate(rows):
        path = out / "train" / f"{pid}.tif"
        with Image.open(path) as im:
            assert im.format == "TIFF" and im.mode == "RGB" and im.size == (96, 96)
            # uncompressed RGB strips, as Kaggle ships them (the builder reads only their header)
            assert [t.codec_name for t in im.tile] == ["raw"] and im.tile[0].args[0] == "RGB"
            pixels = np.asarray(im)
        assert pixels.dtype == np.uint8 and pixels.shape == (96, 96, 3)
        np.testing.assert_array_equal(pixels, images[i])
        if i < 3:  # the very file Pillow writes for these pixels
            buffer = io.BytesIO()
            Image.fromarray(images[i]).save(buffer, format="TIFF")
            assert path.read_bytes() == buffer.getvalue()
        assert int(label) == labels[i]
    _, sub = _read_csv(out / "sample_submission.csv")
    test_images, _, _ = synthetic.generate_arrays(6, seed=5, split="test")
    for i, (pid, _) in enumerate(sub):
        np.testing.assert_array_equal(_tif(out / "test" / f"{pid}.tif"), test_images[i])


def test_make_id_is_40_lowercase_hex() -> None:
    rng = np.random.default_rng(0)
    ids = {synthetic.make_id(rng) for _ in range(100)}
    assert len(ids) == 100 and all(HEX40.match(i) for i in ids)


# ---------------------------------------------------------------- determinism
def test_deterministic_for_a_seed_and_independent_of_workers(tmp_path: pathlib.Path) -> None:
    a = synthetic.write_sample(tmp_path / "a", n=24, n_test=4, seed=7, workers=1)
    b = synthetic.write_sample(tmp_path / "b", n=24, n_test=4, seed=7, workers=2)
    c = synthetic.write_sample(tmp_path / "c", n=24, n_test=4, seed=8, workers=1)
    for name in ("train_labels.csv", "sample_submission.csv"):
        assert (a.out_dir / name).read_bytes() == (b.out_dir / name).read_bytes()
        assert (a.out_dir / name).read_bytes() != (c.out_dir / name).read_bytes()
    for split in ("train", "test"):
        files = sorted(p.name for p in (a.out_dir / split).iterdir())
        assert files == sorted(p.name for p in (b.out_dir / split).iterdir())
        for f in files:
            assert (a.out_dir / split / f).read_bytes() == (b.out_dir / split / f).read_bytes()

    x1, y1, m1 = synthetic.generate_arrays(10, seed=7)
    x2, y2, m2 = synthetic.generate_arrays(10, seed=7)
    x3, _, _ = synthetic.generate_arrays(10, seed=8)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(m1, m2)
    assert not np.array_equal(x1, x3)
    # patch i does not depend on how many patches are drawn
    np.testing.assert_array_equal(synthetic.generate_arrays(4, seed=7)[0], x1[:4])


# ---------------------------------------------------------------- labels and the centre rule
def test_arrays_shapes_and_dtypes(arrays: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    images, labels, masks = arrays
    assert images.shape == (300, 96, 96, 3) and images.dtype == np.uint8
    assert labels.shape == (300,) and np.issubdtype(labels.dtype, np.integer)
    assert masks.shape == (300, 96, 96) and masks.dtype == bool


def test_both_labels_in_requested_proportion(arrays: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    _, labels, _ = arrays
    assert set(np.unique(labels)) == {0, 1}
    assert 0.3 < labels.mean() < 0.5  # requested 0.4; sd of the mean ~0.03
    assert synthetic.generate_arrays(12, seed=1, positive_fraction=0.0)[1].sum() == 0
    assert synthetic.generate_arrays(12, seed=1, positive_fraction=1.0)[1].sum() == 12


def test_centre_rule_holds_on_the_masks(arrays: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    _, labels, masks = arrays
    centre = masks[:, 32:64, 32:64].any(axis=(1, 2))
    np.testing.assert_array_equal(centre.astype(int), labels)
    neg = labels == 0
    # some negatives have tumour cells, all of them outside the centre
    with_tumour = masks[neg].any(axis=(1, 2))
    assert 0.15 < with_tumour.mean() < 0.45
    assert masks[labels == 1].sum(axis=(1, 2)).min() > 0


def test_negative_tumour_cells_stay_clear_of_the_centre(arrays: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    _, labels, masks = arrays
    rows, cols = np.mgrid[0:96, 0:96]
    gap_y = np.maximum(np.maximum(32 - rows, rows - 63), 0)
    gap_x = np.maximum(np.maximum(32 - cols, cols - 63), 0)
    dist = np.hypot(gap_y, gap_x)  # distance of each pixel to the centre region
    negatives = [m for m in masks[labels == 0] if m.any()]
    assert negatives
    assert min(dist[m].min() for m in negatives) > tumour.NEG_MARGIN


def test_a_patch_depends_only_on_its_own_stream() -> None:
    # (the lookup tables shared by all patches must come out of every draw unchanged)
    first = synthetic.generate_patch(np.random.default_rng(123), 1)
    synthetic.generate_arrays(40, seed=9)
    synthetic.generate_arrays(10, seed=9, split="test")
    again = synthetic.generate_patch(np.random.default_rng(123), 1)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])


def test_generate_patch_api() -> None:
    for label in (0, 1):
        image, mask = synthetic.generate_patch(np.random.default_rng(label), label)
        assert image.shape == (96, 96, 3) and image.dtype == np.uint8
        assert mask.shape == (96, 96) and mask.dtype == bool
        assert bool(mask[32:64, 32:64].any()) == bool(label)
    with pytest.raises(ValueError):
        synthetic.generate_patch(np.random.default_rng(0), 2)


def test_global_colour_does_not_give_the_label_away(arrays: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    images, labels, _ = arrays
    means = images.reshape(len(images), -1, 3).mean(axis=1)
    for channel in range(3):
        assert 0.3 < _auc(means[:, channel], labels) < 0.7
    assert 0.3 < _auc(images.reshape(len(images), -1).std(axis=1), labels) < 0.7


def test_images_vary_in_stain_and_content(arrays: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    images, _, _ = arrays
    means = images.reshape(len(images), -1, 3).mean(axis=1)
    assert means.std(axis=0).min() > 8  # slide-to-slide colour variation
    assert len({im.tobytes() for im in images}) == len(images)


# ---------------------------------------------------------------- never overwrite
def test_refuses_to_overwrite_an_existing_sample(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "data"
    out.mkdir()
    (out / "train_labels.csv").write_text("id,label\nmine,1\n")
    with pytest.raises(ValueError, match=re.escape(str(out / "train_labels.csv"))):
        synthetic.write_sample(out, n=5)
    assert (out / "train_labels.csv").read_text() == "id,label\nmine,1\n"
    assert not (out / "train").exists()

    other = tmp_path / "other"
    (other / "train").mkdir(parents=True)
    (other / "train" / "x.tif").write_bytes(b"mine")
    with pytest.raises(ValueError, match=re.escape(str(other / "train"))):
        synthetic.write_sample(other, n=5)
    assert (other / "train" / "x.tif").read_bytes() == b"mine"

    done = synthetic.write_sample(tmp_path / "fresh", n=5, n_test=1)
    assert not done.already_done
    again = synthetic.write_sample(done.out_dir, n=5)  # the same sample: done, nothing written
    assert again.already_done and again.n_positive == done.n_positive
    with pytest.raises(ValueError):
        synthetic.write_sample(done.out_dir, n=5, seed=1)


def test_empty_existing_directory_is_fine(tmp_path: pathlib.Path) -> None:
    (tmp_path / "train").mkdir()
    info = synthetic.write_sample(tmp_path, n=3, n_test=0)
    assert info.n_train == 3 and info.n_test == 0
    assert len(list((tmp_path / "train").iterdir())) == 3
    assert _read_csv(tmp_path / "sample_submission.csv") == (["id", "label"], [])


def test_rejects_bad_arguments(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError):
        synthetic.write_sample(tmp_path / "a", n=0)
    with pytest.raises(ValueError):
        synthetic.write_sample(tmp_path / "b", n=5, positive_fraction=1.5)
    with pytest.raises(ValueError):
        synthetic.generate_arrays(2, split="validation")
    (tmp_path / "file").write_text("mine")
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "file" / "sample"))):
        synthetic.write_sample(tmp_path / "file" / "sample", n=2)
    assert (tmp_path / "file").read_text() == "mine"


def test_a_killed_sample_is_finished_by_the_same_call(
    tmp_path: pathlib.Path, arrays: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    out = tmp_path / "data"
    args = "n=300, n_test=10, seed=11, workers=1"  # (`arrays` holds its train patches)
    code = f"from hcdtf import synthetic; synthetic.write_sample({str(out)!r}, {args})"
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 120
        while not ((out / "train").is_dir() and len(os.listdir(out / "train")) >= 20):
            assert proc.poll() is None and time.monotonic() < deadline, "the writer ended before it was killed"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert (out / kaggle.UNFINISHED).is_file() and not (out / "train_labels.csv").exists()

    # another sample into the unfinished one: refused, nothing touched
    before = sorted(os.listdir(out / "train"))
    with pytest.raises(ValueError, match=re.escape(str(out / kaggle.UNFINISHED))):
        synthetic.write_sample(out, n=300, n_test=10, seed=12, workers=1)
    assert sorted(os.listdir(out / "train")) == before

    info = synthetic.write_sample(out, n=300, n_test=10, seed=11, workers=1)
    assert (info.n_train, info.n_test) == (300, 10) and not (out / kaggle.UNFINISHED).exists()
    _, rows = _read_csv(out / "train_labels.csv")
    assert sorted(os.listdir(out / "train")) == sorted(pid + ".tif" for pid, _ in rows)
    images, labels, _ = arrays
    np.testing.assert_array_equal([int(label) for _, label in rows], labels)
    for i in (0, 150, 299):  # the first files (written before the kill), and later ones
        np.testing.assert_array_equal(_tif(out / "train" / f"{rows[i][0]}.tif"), images[i])
