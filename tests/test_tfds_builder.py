"""The `hcd` TFDS builder: deterministic and slide-disjoint splits, every kind of bad input
(strict and skip mode), `tfds build` as a subprocess read back pixel for pixel, and the pcam
config on small .h5 / .h5.gz files."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pathlib
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tfds_builder.hcd import hcd_dataset_builder as hcd
from tfds_builder.hcd import pcam, pool
from tfds_builder.hcd.hcd_dataset_builder import BadInputError

from conftest import REPO, cli_fails
from readonly import read_only_dir

BUILDER_DIR = REPO / "tfds_builder" / "hcd"


# ----------------------------------------------------------------------------------- helpers
def _patch(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=(96, 96, 3), dtype=np.uint8)


def _id(k: int, tag: str = "t") -> str:
    return hashlib.sha1(f"{tag}-{k}".encode()).hexdigest()


def make_kaggle(root: pathlib.Path, n: int = 12, n_test: int = 2, seed: int = 0) -> dict[str, int]:
    """A tiny Kaggle-layout manual dir of random patches, labels alternating; returns {id: label}."""
    rng = np.random.default_rng(seed)
    (root / "train").mkdir(parents=True)
    labels = {_id(k): k % 2 for k in range(n)}
    for id_ in labels:
        Image.fromarray(_patch(rng)).save(root / "train" / f"{id_}.tif")
    _write_csv(root, [(i, str(l)) for i, l in labels.items()])
    if n_test:
        (root / "test").mkdir()
        for k in range(n_test):
            Image.fromarray(_patch(rng)).save(root / "test" / f"{_id(k, 'test')}.tif")
    return labels


def _write_csv(root: pathlib.Path, rows) -> None:
    with open(root / "train_labels.csv", "w") as f:
        f.write("id,label\n")
        f.writelines(f"{i},{l}\n" for i, l in rows)


def _append_csv(root: pathlib.Path, *rows) -> None:
    with open(root / "train_labels.csv", "a") as f:
        f.writelines(f"{i},{l}\n" for i, l in rows)


def snapshot(root: pathlib.Path) -> dict[str, tuple]:
    """Every path under ``root`` with its size, mtime and content hash."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.stat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        out[str(p.relative_to(root))] = (st.st_size if p.is_file() else 0, st.st_mtime_ns, digest)
    return out


def _read_split(builder, split: str) -> dict[str, tuple[np.ndarray, int]]:
    import tensorflow_datasets as tfds

    return {
        ex["id"].decode(): (ex["image"], int(ex["label"]))
        for ex in tfds.as_numpy(builder.as_dataset(split=split))
    }


# ------------------------------------------------------------------------------------ splits
def _labelled(n: int = 1000, seed: int = 0) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    return [(_id(k), int(rng.random() < 0.4)) for k in range(n)]


def test_assign_splits_is_deterministic_and_independent_of_input_order():
    labelled = _labelled()
    first = hcd.assign_splits(labelled, 0.1, 0.1)
    shuffled = list(labelled)
    random.Random(1).shuffle(shuffled)
    assert hcd.assign_splits(labelled, 0.1, 0.1) == first
    assert hcd.assign_splits(shuffled, 0.1, 0.1) == first
    assert set(first) == {i for i, _ in labelled}
    assert hcd.assign_splits(labelled, 0.1, 0.1, seed=1) != first  # the seed changes the split


@pytest.mark.parametrize("val,test", [(0.1, 0.1), (0.2, 0.15), (0.0, 0.3)])
def test_assign_splits_is_stratified_within_one_example_per_class(val, test):
    labelled = _labelled(997)
    assignment = hcd.assign_splits(labelled, val, test)
    for label in (0, 1):
        ids = [i for i, l in labelled if l == label]
        for split, frac in (("validation", val), ("test", test)):
            got = sum(assignment[i] == split for i in ids)
            assert abs(got - len(ids) * frac) <= 1, (label, split, got, len(ids))


def test_assign_splits_rejects_bad_fractions():
    with pytest.raises(ValueError, match="must be < 1"):
        hcd.assign_splits(_labelled(10), 0.5, 0.5)
    with pytest.raises(ValueError, match="validation_fraction"):
        hcd.assign_splits(_labelled(10), -0.1, 0.1)


def _write_slide_map(root: pathlib.Path, ids, n_slides: int, skip: int = 0) -> dict[str, str]:
    mapping = {i: f"slide_{k % n_slides:02d}" for k, i in enumerate(sorted(ids))}
    with open(root / "patch_id_wsi.csv", "w") as f:
        f.write("id,wsi\n")
        f.writelines(f"{i},{w}\n" for i, w in list(mapping.items())[skip:])
    return mapping


def test_slide_map_gives_slide_disjoint_splits(tmp_path):
    labels = make_kaggle(tmp_path, n=60, n_test=0)
    mapping = _write_slide_map(tmp_path, labels, n_slides=20)
    labelled, _ = hcd.scan_kaggle(str(tmp_path))
    slides = hcd.read_slide_map(str(tmp_path), [i for i, _ in labelled])
    assert slides == mapping
    assignment = hcd.assign_splits(labelled, 0.1, 0.1, slides=slides)
    split_of_slide: dict[str, set[str]] = {}
    for id_, split in assignment.items():
        split_of_slide.setdefault(slides[id_], set()).add(split)
    assert all(len(s) == 1 for s in split_of_slide.values())  # no slide in two splits
    assert {"train", "validation", "test"} <= set(assignment.values())
    assert hcd.assign_splits(list(reversed(labelled)), 0.1, 0.1, slides=slides) == assignment


def test_slide_map_missing_ids_is_a_clear_error(tmp_path):
    labels = make_kaggle(tmp_path, n=10, n_test=0)
    _write_slide_map(tmp_path, labels, n_slides=3, skip=2)
    with pytest.raises(BadInputError, match=r"patch_id_wsi.csv: 2 labelled ids have no slide"):
        hcd.read_slide_map(str(tmp_path), sorted(labels))
    (tmp_path / "patch_id_wsi.csv").write_text("id,slide\nabc,s1\n")
    with pytest.raises(BadInputError, match="needs the columns id,wsi"):
        hcd.read_slide_map(str(tmp_path), sorted(labels))


def test_no_slide_map_means_split_by_patch(tmp_path):
    labels = make_kaggle(tmp_path, n=4, n_test=0)
    assert hcd.read_slide_map(str(tmp_path), sorted(labels)) is None


# -------------------------------------------------------------------------------- bad input
def test_missing_manual_dir_or_csv_or_train_dir(tmp_path):
    with pytest.raises(BadInputError, match="does not exist"):
        hcd.scan_kaggle(str(tmp_path / "nowhere"))
    make_kaggle(tmp_path, n=4, n_test=0)
    (tmp_path / "train_labels.csv").rename(tmp_path / "labels.csv")
    with pytest.raises(BadInputError, match=r"train_labels.csv not found"):
        hcd.scan_kaggle(str(tmp_path))
    (tmp_path / "labels.csv").rename(tmp_path / "train_labels.csv")
    shutil.rmtree(tmp_path / "train")
    with pytest.raises(BadInputError, match=r"train not found"):
        hcd.scan_kaggle(str(tmp_path))


def test_csv_header_is_checked_and_a_bom_is_accepted(tmp_path):
    make_kaggle(tmp_path, n=4, n_test=0)
    text = (tmp_path / "train_labels.csv").read_text()
    (tmp_path / "train_labels.csv").write_text("\ufeff" + text)  # saved by Excel
    assert len(hcd.scan_kaggle(str(tmp_path))[0]) == 4
    (tmp_path / "train_labels.csv").write_text(text.replace("id,label", "image,target"))
    with pytest.raises(BadInputError, match="header 'id,label'"):
        hcd.scan_kaggle(str(tmp_path))


def _corrupt(train: pathlib.Path, id_: str) -> None:
    (train / f"{id_}.tif").write_bytes(b"II*\x00 this is not a tiff" * 10)


def _truncated(train: pathlib.Path, id_: str) -> None:
    path = train / f"{id_}.tif"  # an uncompressed 96x96 RGB TIFF, as Kaggle ships them
    data = path.read_bytes()
    assert len(data) > 96 * 96 * 3
    path.write_bytes(data[: len(data) // 2])  # e.g. an interrupted download


def _save(train: pathlib.Path, id_: str, array: np.ndarray) -> None:
    Image.fromarray(array).save(train / f"{id_}.tif")


# Each case damages one labelled example (or adds a bad row) of a 12-patch sample:
# (kind, damage(root, ids), text that the error names).
BAD_CASES = {
    "corrupt": ("corrupt_image", lambda r, ids: _corrupt(r / "train", ids[0]), "not a readable TIFF"),
    "truncated": ("corrupt_image", lambda r, ids: _truncated(r / "train", ids[0]), "not a readable TIFF"),
    "wrong_size": (
        "wrong_shape",
        lambda r, ids: _save(r / "train", ids[0], np.zeros((64, 80, 3), np.uint8)),
        "got shape (64, 80, 3)",
    ),
    "grayscale": (
        "not_uint8_rgb",
        lambda r, ids: _save(r / "train", ids[0], np.zeros((96, 96), np.uint8)),
        "got mode 'L'",
    ),
    "16bit": (
        "not_uint8_rgb",
        lambda r, ids: _save(r / "train", ids[0], np.full((96, 96), 4000, np.uint16)),
        "dtype uint16",
    ),
    "rgba": (
        "not_uint8_rgb",
        lambda r, ids: _save(r / "train", ids[0], np.zeros((96, 96, 4), np.uint8)),
        "got mode 'RGBA'",
    ),
    "id_without_file": (
        "missing_file",
        lambda r, ids: (r / "train" / f"{ids[0]}.tif").unlink(),
        "listed in the CSV, no file",
    ),
    "file_without_id": (
        "file_without_id",
        lambda r, ids: _save(r / "train", "f" * 40, np.zeros((96, 96, 3), np.uint8)),
        "ffff.tif: not in",
    ),
    "duplicate_id": ("duplicate_id", lambda r, ids: _append_csv(r, (ids[0], 1)), "appears again"),
    "label_2": ("bad_label", lambda r, ids: _append_csv(r, ("c" * 40, 2)), "label '2'"),
    "label_text": ("bad_label", lambda r, ids: _append_csv(r, ("c" * 40, "tumour")), "label 'tumour'"),
    "label_missing": ("bad_label", lambda r, ids: _append_csv(r, ("c" * 40, "")), "label ''"),
    "parent_dir_id": ("unsafe_id", lambda r, ids: _append_csv(r, ("../x", 0)), "id '../x' is not a plain file name"),
    "absolute_id": (
        "unsafe_id",
        lambda r, ids: _append_csv(r, ("/etc/passwd", 0)),
        "id '/etc/passwd' is not a plain file name",
    ),
    "subdir_id": ("unsafe_id", lambda r, ids: _append_csv(r, ("test/abc", 0)), "id 'test/abc'"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_each_kind_of_bad_input_fails_by_default_and_is_counted_when_skipped(tmp_path, case):
    kind, damage, text = BAD_CASES[case]
    labels = make_kaggle(tmp_path, n=12, n_test=0)
    ids = sorted(labels)
    damage(tmp_path, ids)
    with pytest.raises(BadInputError) as err:
        hcd.scan_kaggle(str(tmp_path))
    message = str(err.value)
    assert f"{kind}: 1: " in message and text in message, message
    assert "skip_bad_examples" in message  # says how to go on

    labelled, counts = hcd.scan_kaggle(str(tmp_path), strict=False)
    assert counts == {kind: 1}
    kept = dict(labelled)
    if kind in ("corrupt_image", "wrong_shape", "not_uint8_rgb", "missing_file", "duplicate_id"):
        assert ids[0] not in kept  # a duplicated id is dropped in every copy: which label is right?
        assert len(kept) == 11
    else:
        assert kept == labels


def test_unsafe_ids_never_reach_files_outside_train(tmp_path):
    make_kaggle(tmp_path, n=4, n_test=0)
    _save(tmp_path, "x", np.zeros((96, 96, 3), np.uint8))  # manual_dir/x.tif, i.e. train/../x
    _append_csv(tmp_path, ("../x", 1), ("/etc/passwd", 0), ("..", 0))
    labelled, counts = hcd.scan_kaggle(str(tmp_path), strict=False)
    assert counts == {"unsafe_id": 3}
    assert all("/" not in i and not i.startswith(".") for i, _ in labelled)


def test_one_error_counts_every_kind_and_names_the_rows(tmp_path):
    labels = make_kaggle(tmp_path, n=12, n_test=0)
    ids = sorted(labels)
    for id_ in ids[:7]:
        (tmp_path / "train" / f"{id_}.tif").unlink()
    _corrupt(tmp_path / "train", ids[7])
    _append_csv(tmp_path, ("../x", 0), (ids[8], 0))
    with pytest.raises(BadInputError) as err:
        hcd.scan_kaggle(str(tmp_path))
    message = str(err.value)
    assert "found bad input (10 problems)" in message
    assert "unsafe_id: 1: " in message and "train_labels.csv row 14" in message
    assert "duplicate_id: 1: " in message and "row 15: id" in message and "again (first in row" in message
    assert "missing_file: 7: " in message and "(2 more)" in message  # the first five are named
    assert "corrupt_image: 1: " in message and f"{ids[7]}.tif" in message


def test_unlabelled_test_dir_bad_files(tmp_path):
    make_kaggle(tmp_path, n=4, n_test=3)
    test_dir = tmp_path / "test"
    bad = sorted(p.stem for p in test_dir.iterdir())[0]
    _save(test_dir, bad, np.zeros((96, 96), np.uint8))
    with pytest.raises(BadInputError, match=r"not_uint8_rgb: 1: .*got mode 'L'"):
        hcd.scan_unlabelled(str(test_dir))
    ids, counts = hcd.scan_unlabelled(str(test_dir), strict=False)
    assert counts == {"not_uint8_rgb": 1} and len(ids) == 2 and bad not in ids


def test_all_one_label_is_an_error(tmp_path):
    labels = make_kaggle(tmp_path, n=4, n_test=0)
    _write_csv(tmp_path, [(i, 0) for i in labels])
    with pytest.raises(BadInputError, match="both 0 and 1 are needed"):
        hcd.scan_kaggle(str(tmp_path))


# ------------------------------------------------------------------------- builds (in-process)
def test_strict_build_fails_before_writing_and_leaves_manual_dir_alone(tmp_path):
    from hcdtf.data import pipeline as data

    manual = tmp_path / "raw"
    labels = make_kaggle(manual, n=12, n_test=0)
    _corrupt(manual / "train", sorted(labels)[3])
    before = snapshot(manual)
    with pytest.raises(BadInputError, match=r"corrupt_image: 1: .*\.tif: not a readable TIFF"):
        data.build_dataset(str(manual), str(tmp_path / "tfds"), "kaggle")
    assert snapshot(manual) == before
    assert not data.get_builder(str(tmp_path / "tfds"), "kaggle").is_prepared()


def test_missing_manual_dir_in_tfds_names_the_instructions(tmp_path):
    import tensorflow_datasets as tfds

    builder = hcd.Builder(config="kaggle", data_dir=str(tmp_path / "tfds"))
    with pytest.raises(Exception, match="train_labels.csv"):
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "nowhere"))
        )


def test_skip_mode_build_records_counts_that_survive_a_reload(tmp_path):
    import tensorflow_datasets as tfds

    from hcdtf.data import pipeline as data

    manual = tmp_path / "raw"
    labels = make_kaggle(manual, n=20, n_test=3)
    ids = sorted(labels)
    _corrupt(manual / "train", ids[0])
    _save(manual / "train", ids[1], np.zeros((96, 96), np.uint16))
    (manual / "train" / f"{ids[2]}.tif").unlink()
    _append_csv(manual, ("../x", 1), (ids[3], 0), ("d" * 40, 7))
    _save(manual / "test", "e" * 40, np.zeros((50, 96, 3), np.uint8))
    before = snapshot(manual)

    builder = data.build_dataset(str(manual), str(tmp_path / "tfds"), "kaggle", skip_bad_examples=True)
    assert snapshot(manual) == before  # the manual dir is never written to
    expected = {
        "unsafe_id": 1,
        "bad_label": 1,
        "duplicate_id": 1,
        "missing_file": 1,
        "corrupt_image": 1,
        "not_uint8_rgb": 1,
    }
    version_dir = tmp_path / "tfds" / "hcd" / "kaggle_skip_bad" / "1.0.0"
    reloaded = tfds.builder_from_directory(str(version_dir))
    for b in (builder, reloaded):
        assert dict(b.info.metadata["bad_examples"]) == expected
        assert dict(b.info.metadata["bad_examples_kaggle_test"]) == {"wrong_shape": 1}
        assert "Bad examples left out of this build" in b.info.description
        assert "corrupt_image: 1" in b.info.description and "wrong_shape: 1" in b.info.description
    assert json.loads((version_dir / "metadata.json").read_text())["bad_examples"] == expected
    n = {s: reloaded.info.splits[s].num_examples for s in reloaded.info.splits}
    assert sum(n[s] for s in ("train", "validation", "test")) == 20 - 4  # 4 labelled ids dropped
    assert n["kaggle_test"] == 3


def test_build_with_slide_map_keeps_slides_in_one_split(tmp_path):
    """Also a custom JSON-style config (as `tfds build --config '{...}'` makes one) with
    compressed PNGs: still pixel-exact."""
    import tensorflow_datasets as tfds

    manual = tmp_path / "raw"
    labels = make_kaggle(manual, n=40, n_test=0)
    mapping = _write_slide_map(manual, labels, n_slides=10)
    config = hcd.Builder.builder_config_cls(
        **json.loads('{"name": "kaggle_png6", "source": "kaggle", "png_compress_level": 6}')
    )
    builder = hcd.Builder(config=config, data_dir=str(tmp_path / "tfds"))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
    assert builder.info.metadata["split_by"] == "slide"
    slide_split = {}
    for split in ("train", "validation", "test"):
        for id_, (image, label) in _read_split(builder, split).items():
            assert slide_split.setdefault(mapping[id_], split) == split  # no slide in two splits
            assert label == labels[id_]
            np.testing.assert_array_equal(image, np.asarray(Image.open(manual / "train" / f"{id_}.tif")))
    assert len(slide_split) == 10 and set(slide_split.values()) == {"train", "validation", "test"}


# ---------------------------------------------------------------------- tfds build (subprocess)
def _tfds_cli() -> list[str]:
    exe = pathlib.Path(sys.executable).with_name("tfds")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "tensorflow_datasets.scripts.cli.main"]


def test_tfds_build_cli_round_trip_is_pixel_exact(tmp_path):
    import tensorflow_datasets as tfds

    from hcdtf import synthetic

    manual = tmp_path / "raw"
    synthetic.write_sample(manual, n=40, n_test=4, seed=3)
    before = snapshot(manual)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    cmd = _tfds_cli() + [
        "build", str(BUILDER_DIR), "--manual_dir", str(manual), "--data_dir", str(tmp_path / "tfds"),
        "--config", "kaggle",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert snapshot(manual) == before

    builder = tfds.builder_from_directory(str(tmp_path / "tfds" / "hcd" / "kaggle" / "1.0.0"))
    assert "Veeling" in builder.info.citation and "Bejnordi" in builder.info.citation
    assert "PatchCamelyon" in builder.info.description
    labels = dict(
        line.split(",") for line in (manual / "train_labels.csv").read_text().splitlines()[1:]
    )
    seen = {}
    for split in ("train", "validation", "test"):
        for id_, (image, label) in _read_split(builder, split).items():
            assert id_ not in seen
            seen[id_] = split
            assert label == int(labels[id_])
            np.testing.assert_array_equal(image, np.asarray(Image.open(manual / "train" / f"{id_}.tif")))
    assert set(seen) == set(labels)
    assert sorted(seen.values()).count("test") >= 2 and sorted(seen.values()).count("validation") >= 2
    unlabelled = _read_split(builder, "kaggle_test")
    assert set(unlabelled) == {p.stem for p in (manual / "test").glob("*.tif")}
    for id_, (image, label) in unlabelled.items():
        assert label == -1
        np.testing.assert_array_equal(image, np.asarray(Image.open(manual / "test" / f"{id_}.tif")))


# ------------------------------------------------------------------------------------- pcam
def _write_pcam(root: pathlib.Path, name: str, images, labels, gz: bool) -> None:
    import h5py

    root.mkdir(parents=True, exist_ok=True)
    for key, array in (("x", images), ("y", np.asarray(labels, np.uint8).reshape(-1, 1, 1, 1))):
        path = root / f"camelyonpatch_level_2_split_{name}_{key}.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset(key, data=array)
        if gz:
            with open(path, "rb") as src, gzip.open(str(path) + ".gz", "wb") as dst:
                shutil.copyfileobj(src, dst)
            path.unlink()


def _pcam_sample(root: pathlib.Path, sizes=(("train", 7, True), ("valid", 3, False), ("test", 4, True))):
    rng = np.random.default_rng(0)
    arrays = {}
    for name, n, gz in sizes:
        images = rng.integers(0, 256, size=(n, 96, 96, 3), dtype=np.uint8)
        labels = np.arange(n) % 2
        _write_pcam(root, name, images, labels, gz)
        arrays[name] = (images, labels)
    return arrays


def test_pcam_config_reads_h5_and_h5_gz_in_order_without_writing_the_manual_dir(tmp_path, monkeypatch):
    from hcdtf.data import pipeline as data

    monkeypatch.setattr(pcam, "CHUNK", 2)  # several chunks even on a tiny file
    manual = tmp_path / "pcam"
    arrays = _pcam_sample(manual)
    before = snapshot(manual)
    builder = data.build_dataset(str(manual), str(tmp_path / "tfds"), "pcam")
    assert snapshot(manual) == before  # the .gz files were decompressed elsewhere
    assert builder.info.metadata["split_by"] == "official"
    for split, name in hcd.PCAM_SPLITS.items():
        images, labels = arrays[name]
        got = _read_split(builder, split)
        assert sorted(got) == sorted(f"{name}_{k}" for k in range(len(labels)))
        for k in range(len(labels)):
            image, label = got[f"{name}_{k}"]
            np.testing.assert_array_equal(image, images[k])
            assert label == labels[k]


@pytest.mark.parametrize(
    "damage,text",
    [
        (
            lambda r: (r / "camelyonpatch_level_2_split_valid_y.h5").unlink(),
            "1 PatchCamelyon files missing: camelyonpatch_level_2_split_valid_y.h5(.gz)",
        ),
        (
            lambda r: _write_pcam(r, "valid", np.zeros((3, 64, 64, 3), np.uint8), [0, 1, 0], False),
            "must be N x 96 x 96 x 3 uint8",
        ),
        (
            lambda r: _write_pcam(r, "valid", np.zeros((3, 96, 96, 3), np.uint8), [0, 1], False),
            "one label per image",
        ),
        (
            lambda r: _write_pcam(r, "valid", np.zeros((3, 96, 96, 3), np.uint8), [0, 1, 3], False),
            "split_valid_y.h5: row 2: label 3 is not 0 or 1",
        ),
        (
            lambda r: (r / "camelyonpatch_level_2_split_valid_x.h5.gz").write_bytes(b"not gzip"),
            "split_valid_x.h5.gz: not a readable gzip file",
        ),
        (
            lambda r: (r / "camelyonpatch_level_2_split_valid_x.h5").write_bytes(b"not hdf5"),
            "split_valid_x.h5: not a readable HDF5 file",
        ),
    ],
    ids=["missing_file", "wrong_shape", "label_count", "bad_label", "bad_gzip", "bad_hdf5"],
)
def test_pcam_bad_input_names_the_file(tmp_path, damage, text):
    import tensorflow_datasets as tfds

    manual = tmp_path / "pcam"
    _pcam_sample(manual, sizes=(("train", 2, False), ("valid", 3, False), ("test", 2, False)))
    damage(manual)
    if (manual / "camelyonpatch_level_2_split_valid_x.h5.gz").exists():
        (manual / "camelyonpatch_level_2_split_valid_x.h5").unlink()
    builder = hcd.Builder(config="pcam", data_dir=str(tmp_path / "tfds"))
    with pytest.raises(BadInputError, match=text.replace("(", r"\(").replace(")", r"\)")) as err:
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
    assert "camelyonpatch_level_2_split_valid_" in str(err.value)


def test_ordered_map_keeps_order_bounds_the_window_and_raises():
    import threading
    import time

    in_flight, peak, lock = [0], [0], threading.Lock()

    def slow(x):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.001 * (x % 3))
        with lock:
            in_flight[0] -= 1
        return x * x

    assert list(pool.ordered_map(slow, iter(range(50)), window=4, workers=3)) == [x * x for x in range(50)]
    assert peak[0] <= 3  # never more calls at once than workers

    # The window: the lazy input is never read more than `window` items ahead of what the
    # consumer has received (so memory stays bounded whatever the input's length).
    pulled = [0]

    def source():
        for x in range(200):
            pulled[0] += 1
            yield x

    ahead = []
    for k, _ in enumerate(pool.ordered_map(lambda x: x, source(), window=5, workers=2)):
        ahead.append(pulled[0] - k)  # items read but not yet received
    assert max(ahead) <= 5 + 1 and pulled[0] == 200, ahead
    assert max(ahead) >= 5  # and it does read ahead: the workers are kept busy

    def boom(x):
        if x == 7:
            raise BadInputError("bad 7")
        return x

    with pytest.raises(BadInputError, match="bad 7"):
        list(pool.ordered_map(boom, range(100), window=8))


# ----------------------------------------------------------------------- config names (one grammar)
from tfds_builder.hcd import names  # noqa: E402


@pytest.mark.parametrize(
    "flags,name",
    [
        ({}, "kaggle"),
        ({"skip_bad_examples": True}, "kaggle_skip_bad"),
        ({"validation_fraction": 0.15, "test_fraction": 0.15}, "kaggle_val0.15_test0.15"),
        ({"validation_fraction": 0.2}, "kaggle_val0.2_test0.1"),
        ({"folds": 5}, "kaggle_folds5"),
        ({"folds": 5, "test_fraction": 0.2}, "kaggle_test0.2_folds5"),
        ({"folds": 3, "drop_duplicates": True, "skip_bad_examples": True}, "kaggle_folds3_dedup_skip_bad"),
    ],
)
def test_config_names_round_trip(flags, name):
    options = names.resolve("kaggle", **flags)
    assert options.name == name
    assert names.parse(name) == options
    assert names.resolve(name) == options  # the name alone rebuilds the same thing


def test_config_names_combine_a_name_with_flags_and_refuse_other_spellings():
    assert names.resolve("kaggle_skip_bad", folds=4).name == "kaggle_folds4_skip_bad"
    assert names.resolve("pcam").name == "pcam"
    with pytest.raises(names.BuildOptionsError, match="is written 'kaggle_val0.1_test0.2'"):
        names.parse("kaggle_val0.10_test0.2")
    with pytest.raises(names.BuildOptionsError, match=r"expected kaggle\[_val<F>_test<F>\]"):
        names.parse("kaggle_80_10_10")


@pytest.mark.parametrize(
    "flags,text",
    [
        ({"validation_fraction": 0}, "--validation-fraction 0 (validation_fraction) would leave the validation split empty"),
        ({"test_fraction": 0}, "--test-fraction 0 (test_fraction) would leave the test split empty"),
        ({"validation_fraction": 0.5, "test_fraction": 0.5}, "must be < 1: nothing would be left for the train split"),
        ({"folds": 1}, "--folds (folds) must be at least 2"),
        ({"folds": 0}, "--folds (folds) must be at least 2"),
        ({"folds": 3, "validation_fraction": 0.2}, "--validation-fraction does not apply with --folds"),
    ],
)
def test_options_that_leave_a_split_empty_are_refused(flags, text):
    with pytest.raises(names.BuildOptionsError, match=re_escape(text)):
        names.resolve("kaggle", **flags)


def test_pcam_takes_no_kaggle_options():
    with pytest.raises(names.BuildOptionsError, match="apply to kaggle only"):
        names.resolve("pcam", folds=3)


def re_escape(text: str) -> str:
    import re

    return re.escape(text)


# ---------------------------------------------------------------------------------------- folds
def test_patch_level_folds_are_stratified_balanced_and_order_independent():
    labelled = _labelled(1003)
    folds = hcd.assign_folds(labelled, 5)
    assert set(folds) == {i for i, _ in labelled} and set(folds.values()) == set(range(5))
    for label in (0, 1):
        sizes = [sum(1 for i, l in labelled if l == label and folds[i] == k) for k in range(5)]
        assert max(sizes) - min(sizes) <= 1, sizes
    shuffled = list(labelled)
    random.Random(3).shuffle(shuffled)
    assert hcd.assign_folds(shuffled, 5) == folds


def test_slide_grouped_folds_never_split_a_slide_and_stay_even():
    rng = random.Random(0)
    labelled = _labelled(2000)
    slides = {i: f"slide_{rng.randrange(60):02d}" for i, _ in labelled}  # slides of uneven size
    folds = hcd.assign_folds(labelled, 5, slides=slides)
    fold_of_slide: dict[str, set[int]] = {}
    for id_, k in folds.items():
        fold_of_slide.setdefault(slides[id_], set()).add(k)
    assert all(len(ks) == 1 for ks in fold_of_slide.values())  # one slide, one fold
    sizes = [list(folds.values()).count(k) for k in range(5)]
    assert max(sizes) - min(sizes) <= max(collections_counter(slides.values()).values()), sizes
    assert hcd.assign_folds(list(reversed(labelled)), 5, slides=slides) == folds


def collections_counter(values):
    import collections

    return collections.Counter(values)


def test_folds_are_the_same_on_every_machine():
    """Hash-based (SHA-256 of the ids): independent of Python's hash seed and of the platform.
    The digest pins the assignment of a fixed list, so a change of the rule fails here."""
    script = (
        "import hashlib, random, sys; sys.path.insert(0, %r)\n"
        "from tfds_builder.hcd import splits\n"
        "ids = [(hashlib.sha1(f'p{k}'.encode()).hexdigest(), k %% 3 == 0) for k in range(300)]\n"
        "slides = {i: f's{k %% 17}' for k, (i, _) in enumerate(ids)}\n"
        "a = splits.assign_folds(ids, 4, slides=slides); b = splits.assign_folds(ids, 4)\n"
        "print(hashlib.sha256(repr(sorted(a.items()) + sorted(b.items())).encode()).hexdigest())\n"
    ) % str(REPO)
    digests = {
        subprocess.run([sys.executable, "-c", script], env=dict(os.environ, PYTHONHASHSEED=seed),
                       capture_output=True, text=True, check=True).stdout.strip()
        for seed in ("0", "12345")
    }  # fmt: skip
    assert digests == {"7fa2b85e7f970de9f258799c82be5ff561dffebbdf6f87b3c010a07d6cc2281a"}


def test_more_folds_than_slides_is_a_clear_error():
    labelled = _labelled(40)
    slides = {i: f"s{k % 3}" for k, (i, _) in enumerate(labelled)}
    with pytest.raises(hcd.SplitError, match="holds only 3 slides.*use at most 3 folds"):
        hcd.assign_folds(labelled, 4, slides=slides)


def _build(manual, out, config="kaggle", **kwargs):
    from hcdtf.data import pipeline as data

    return data.build_dataset(str(manual), str(out), config, **kwargs)


def _ids(builder, split) -> set[str]:
    import tensorflow_datasets as tfds

    return {ex["id"].decode() for ex in tfds.as_numpy(builder.as_dataset(split=split))}


def test_fold_build_keeps_the_test_split_and_splits_the_rest_by_slide(tmp_path):
    manual = tmp_path / "raw"
    labels = make_kaggle(manual, n=60, n_test=2)
    mapping = _write_slide_map(manual, labels, n_slides=12)
    plain = _build(manual, tmp_path / "tfds")
    folded = _build(manual, tmp_path / "tfds", "kaggle_folds3")
    assert set(folded.info.splits) == {"fold0", "fold1", "fold2", "test", "kaggle_test"}
    assert _ids(folded, "test") == _ids(plain, "test")  # exactly the non-fold build's test split
    folds = [_ids(folded, f"fold{k}") for k in range(3)]
    assert set().union(*folds) == _ids(plain, "train") | _ids(plain, "validation")
    assert sum(map(len, folds)) == len(set().union(*folds))  # disjoint
    slide_fold = {}
    for k, ids in enumerate(folds):
        for id_ in ids:
            assert slide_fold.setdefault(mapping[id_], k) == k  # one slide, one fold
    meta = folded.info.metadata["folds"]
    assert meta["k"] == 3 and meta["grouped_by"] == "slide" and meta["warning"] is None


def test_patch_level_folds_warn_that_slides_may_leak(tmp_path, capsys):
    manual = tmp_path / "raw"
    make_kaggle(manual, n=30, n_test=0)
    builder = _build(manual, tmp_path / "tfds", folds=3, log=print)
    assert builder.info.metadata["folds"]["grouped_by"] == "patch"
    assert "patches of one slide can be in several folds" in builder.info.metadata["folds"]["warning"]
    assert "warning: folds were drawn patch by patch" in capsys.readouterr().out


def test_fold_errors_are_one_clear_line_each(tmp_path):
    manual = tmp_path / "raw"
    labels = make_kaggle(manual, n=30, n_test=0)
    _write_slide_map(manual, labels, n_slides=3)
    cli_fails(["build-dataset", "--manual-dir", str(manual), "--data-dir", str(tmp_path / "tfds"), "--folds", "5"],
              "--folds 5", "only 2 slides", "at most 2 folds")  # one of the 3 is in test
    cli_fails(["build-dataset", "--manual-dir", str(manual), "--data-dir", str(tmp_path / "tfds"), "--folds", "1"],
              "--folds (folds) must be at least 2")
    _write_slide_map(manual, labels, n_slides=3, skip=2)  # two ids without a slide
    cli_fails(["build-dataset", "--manual-dir", str(manual), "--data-dir", str(tmp_path / "tfds"), "--folds", "2"],
              "patch_id_wsi.csv: 2 labelled ids have no slide")
    assert not (tmp_path / "tfds").exists()  # nothing left behind by the failed builds


def test_fold_splits_and_training_on_a_fold(tmp_path):
    from hcdtf.data import pipeline as data
    from hcdtf.config import DataConfig

    assert data.fold_splits(1, 4) == ("fold0+fold2+fold3", "fold1")
    with pytest.raises(ValueError, match="data.fold must be in 0..3"):
        data.fold_splits(4, 4)
    manual = tmp_path / "raw"
    make_kaggle(manual, n=40, n_test=0)
    built = _build(manual, tmp_path / "tfds", folds=4)
    n = {s: built.info.splits[s].num_examples for s in built.info.splits}
    cfg = DataConfig(data_dir=str(tmp_path / "tfds"), dataset_config="kaggle_folds4", fold=2)
    assert data.split_spec(cfg, "train") == "fold0+fold1+fold3"
    assert data.split_spec(cfg, "validation") == "fold2"
    assert data.num_examples(cfg, "train") == n["fold0"] + n["fold1"] + n["fold3"]
    assert data.num_examples(cfg, "test") == n["test"]
    seen = {i.decode() for batch, _ in data.make_dataset(cfg, "train", 64, training=False, with_ids=True)
            .as_numpy_iterator() for i in batch["id"]}  # fmt: skip
    assert seen == _ids(built, "fold0") | _ids(built, "fold1") | _ids(built, "fold3")
    limited = data.replace_data(cfg, max_train_examples=10)
    assert data.num_examples(limited, "train") == 10
    assert sum(int(p.split("[:")[1][:-1]) for p in data.split_spec(limited, "train").split("+")) == 10
    with pytest.raises(ValueError, match="is a 4-fold build.*--set data.fold=K"):
        data.split_spec(data.replace_data(cfg, fold=None), "train")
    plain = _build(manual, tmp_path / "tfds")
    with pytest.raises(ValueError, match="data.fold=2 needs a fold build"):
        data.split_spec(data.replace_data(cfg, dataset_config="kaggle"), "train")
    assert plain.is_prepared()


# ------------------------------------------------------------- builds that match their inputs
def _cli(*args):
    from click.testing import CliRunner

    from hcdtf.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def _version_dir(out, config="kaggle"):
    return out / "hcd" / config / "1.0.0"


def test_rebuild_reuses_identical_inputs_and_refuses_other_inputs_unless_overwrite(tmp_path):
    small, big, out = tmp_path / "small", tmp_path / "big", tmp_path / "tfds"
    make_kaggle(small, n=12, n_test=0, seed=1)
    make_kaggle(big, n=30, n_test=0, seed=2)
    first = _cli("build-dataset", "--manual-dir", small, "--data-dir", out)
    assert "train: " in first and "reusing" not in first
    before = snapshot(_version_dir(out))
    again = _cli("build-dataset", "--manual-dir", small, "--data-dir", out)
    assert "already built from identical inputs" in again and "reusing" in again
    assert snapshot(_version_dir(out)) == before

    # Other inputs: refused, naming both manual dirs and what differs; nothing changed.
    result = cli_fails(["build-dataset", "--manual-dir", str(big), "--data-dir", str(out)],
                       f"built from {small}", str(big), "train/: 30 files", "(was 12 files", "--overwrite")
    assert snapshot(_version_dir(out)) == before
    assert result.output.count("Error:") == 1
    # The same files touched (a copy without times): also other inputs.
    os.utime(small / "train_labels.csv")
    for p in (small / "train").iterdir():
        os.utime(p, ns=(p.stat().st_mtime_ns + 10**9,) * 2)
    cli_fails(["build-dataset", "--manual-dir", str(small), "--data-dir", str(out)],
              "train/: the same 12 file names and sizes, other modification times")

    # --overwrite builds the new data set and swaps it in.
    rebuilt = _cli("build-dataset", "--manual-dir", big, "--data-dir", out, "--overwrite")
    assert "reusing" not in rebuilt
    builder = _build(big, out)  # and now the big one is reused
    assert sum(builder.info.splits[s].num_examples for s in ("train", "validation", "test")) == 30
    assert builder.info.metadata["inputs"]["manual_dir"] == str(big)
    assert sorted(p.name for p in (out / "hcd" / "kaggle").iterdir()) == [".lock", "1.0.0"]  # no leftovers


def test_a_build_without_a_fingerprint_is_not_silently_reused(tmp_path):
    manual, out = tmp_path / "raw", tmp_path / "tfds"
    make_kaggle(manual, n=12, n_test=0)
    _build(manual, out)
    meta_path = _version_dir(out) / "metadata.json"
    meta = json.loads(meta_path.read_text())
    del meta["inputs"]  # as written by the previous release
    meta_path.write_text(json.dumps(meta))
    cli_fails(["build-dataset", "--manual-dir", str(manual), "--data-dir", str(out)],
              "recorded no fingerprint of its inputs", "--overwrite")


def test_a_different_slide_map_or_option_changes_the_fingerprint(tmp_path):
    from tfds_builder.hcd import inputs

    manual = tmp_path / "raw"
    labels = make_kaggle(manual, n=12, n_test=1)
    options = hcd.HcdConfig(name="kaggle").fingerprint_options()
    base = inputs.fingerprint(str(manual), "kaggle", options)
    assert inputs.fingerprint(str(manual), "kaggle", options) == base
    moved = tmp_path / "moved"
    shutil.copytree(manual, moved)  # copytree keeps the times: the same inputs elsewhere
    assert inputs.differences(base, inputs.fingerprint(str(moved), "kaggle", options)) == []
    _write_slide_map(manual, labels, n_slides=3)
    with_map = inputs.fingerprint(str(manual), "kaggle", options, str(manual / "patch_id_wsi.csv"))
    assert inputs.differences(base, with_map) == ["slide map: patch_id_wsi.csv (was none)"]
    other = inputs.fingerprint(str(manual), "kaggle", dict(options, split_seed=1))
    assert inputs.differences(base, other) == ["options: split_seed 1 (was 0)"]
    (manual / "train_labels.csv").write_text((manual / "train_labels.csv").read_text() + "\n")
    assert "train_labels.csv: content differs" in inputs.differences(base, inputs.fingerprint(str(manual), "kaggle", options))


@pytest.mark.parametrize(
    "flags,text",
    [
        (["--validation-fraction", "0"], "--validation-fraction 0 (validation_fraction) would leave the validation split empty"),
        (["--test-fraction", "0"], "would leave the test split empty"),
        (["--validation-fraction", "0.6", "--test-fraction", "0.5"], "must be < 1"),
        (["--validation-fraction", "0.01"], "the validation split would be empty: 12 labelled patches are too few"),
    ],
    ids=["val0", "test0", "sum", "rounds_to_zero"],
)
def test_empty_splits_are_refused_before_anything_is_written(tmp_path, flags, text):
    manual, out = tmp_path / "raw", tmp_path / "tfds"
    make_kaggle(manual, n=12, n_test=0)
    cli_fails(["build-dataset", "--manual-dir", str(manual), "--data-dir", str(out), *flags], text)
    assert not out.exists()  # no empty data set directory (nor the data dir) left behind
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    cli_fails(["build-dataset", "--manual-dir", str(manual), "--data-dir", str(out), *flags], text)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_an_unwritable_data_dir_is_one_line_naming_it(tmp_path):
    manual = tmp_path / "raw"
    make_kaggle(manual, n=12, n_test=0)
    with read_only_dir(tmp_path / "ro") as ro:  # a read-only mount as root (tests/readonly.py): no skip
        cli_fails(["build-dataset", "--manual-dir", str(manual), "--data-dir", str(ro)],
                  f"data dir {ro}: cannot write there", "writable --data-dir")
        cli_fails(["build-dataset", "--manual-dir", str(manual), "--data-dir", str(ro / "sub")],
                  f"data dir {ro / 'sub'}: cannot write there")
    (tmp_path / "file").write_text("x")
    cli_fails(["build-dataset", "--manual-dir", str(manual), "--data-dir", str(tmp_path / "file" / "tfds")],
              f"data dir {tmp_path / 'file' / 'tfds'}: cannot write there")


def test_bad_input_hint_gives_the_hcdtf_command_and_the_tfds_config(tmp_path):
    manual, out = tmp_path / "raw", tmp_path / "tfds"
    labels = make_kaggle(manual, n=12, n_test=0)
    _corrupt(manual / "train", sorted(labels)[0])
    result = cli_fails(["build-dataset", "--manual-dir", str(manual), "--data-dir", str(out), "--folds", "2"],
                       "corrupt_image: 1")
    text = " ".join(result.output.split())
    assert f"hcdtf build-dataset --manual-dir {manual} --data-dir {out} --dataset-config kaggle_folds2 --skip-bad" in text
    hint = text.split("with tfds build: --config '")[1].split("'")[0]
    assert json.loads(hint) == {"name": "kaggle_folds2_skip_bad", "source": "kaggle", "folds": 2,
                                "skip_bad_examples": True}
    assert names.resolve(**{k: v for k, v in json.loads(hint).items() if k not in ("name", "source")}).name == \
        "kaggle_folds2_skip_bad"  # the tfds config is the same build as the hcdtf command


def test_a_bad_label_is_counted_once_even_when_its_file_exists(tmp_path):
    labels = make_kaggle(tmp_path, n=12, n_test=0)
    ids = sorted(labels)
    rows = [(i, "2" if i == ids[0] else l) for i, l in labels.items()]
    _write_csv(tmp_path, rows)  # train/<ids[0]>.tif exists, its row has label 2
    with pytest.raises(BadInputError) as err:
        hcd.scan_kaggle(str(tmp_path))
    assert "bad_label: 1: " in str(err.value) and "file_without_id" not in str(err.value)
    labelled, counts = hcd.scan_kaggle(str(tmp_path), strict=False)
    assert counts == {"bad_label": 1} and ids[0] not in dict(labelled)


def test_skip_bad_prints_what_it_left_out(tmp_path):
    manual, out = tmp_path / "raw", tmp_path / "tfds"
    labels = make_kaggle(manual, n=20, n_test=2)
    ids = sorted(labels)
    _corrupt(manual / "train", ids[0])
    _corrupt(manual / "train", ids[1])
    _append_csv(manual, ("../x", 1))
    output = _cli("build-dataset", "--manual-dir", manual, "--data-dir", out, "--skip-bad")
    line = next(l for l in output.splitlines() if l.startswith("--skip-bad left out of the labelled"))
    assert "unsafe_id: 1 (e.g. " in line and "row 22: id '../x'" in line
    assert "corrupt_image: 2 (e.g. " in line and f"{ids[0]}.tif: not a readable TIFF" in line
    assert "--skip-bad left out of the kaggle_test patches: nothing" in output
    assert "train on it with --dataset-config kaggle_skip_bad" in output


# --------------------------------------------------------------- killed builds: leftovers, lock
def test_leftover_incomplete_dirs_of_this_config_are_removed_and_nothing_else(tmp_path):
    manual, out = tmp_path / "raw", tmp_path / "tfds"
    make_kaggle(manual, n=12, n_test=0)
    config_dir = out / "hcd" / "kaggle"
    for name in ("incomplete.ABC123_1.0.0", "incomplete.overwrite_a1b2c3"):
        (config_dir / name).mkdir(parents=True)
        (config_dir / name / "hcd-train.tfrecord-00000-of-00001").write_bytes(b"half")
    other = out / "hcd" / "kaggle_skip_bad" / "incomplete.XYZ999_1.0.0"
    other.mkdir(parents=True)  # another config's build: not this build's business
    (out / "notes.txt").write_text("mine")
    _build(manual, out)
    assert sorted(p.name for p in config_dir.iterdir()) == [".lock", "1.0.0"]
    assert other.is_dir() and (out / "notes.txt").read_text() == "mine"


def test_a_second_build_of_the_same_data_set_at_once_is_refused(tmp_path):
    import fcntl

    manual, out = tmp_path / "raw", tmp_path / "tfds"
    make_kaggle(manual, n=12, n_test=0)
    config_dir = out / "hcd" / "kaggle"
    config_dir.mkdir(parents=True)
    with open(config_dir / ".lock", "w") as held:
        held.write("pid 4242 on somehost")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        incomplete = config_dir / "incomplete.BUSY01_1.0.0"
        incomplete.mkdir()  # the running build's work: must survive
        cli_fails(["build-dataset", "--manual-dir", str(manual), "--data-dir", str(out)],
                  "being built by pid 4242 on somehost", "wait for that build to end")
        assert incomplete.is_dir()
    _build(manual, out)  # once released (as when its process dies), the next build goes ahead
    assert not incomplete.exists()


def test_train_accepts_every_config_a_build_can_make_and_lists_the_built_ones(data_dir, tmp_path):
    run = tmp_path / "run"
    for config in ("kaggle_skip_bad", "kaggle_val0.15_test0.15", "kaggle_folds5_dedup"):
        cli_fails(["train", "--data-dir", str(data_dir), "--dataset-config", config, "--output-dir", str(run)],
                  f"hcd/{config} data set is not built", "built there: kaggle",
                  f"hcdtf build-dataset --manual-dir DIR --data-dir {data_dir} --dataset-config {config}")
    cli_fails(["train", "--data-dir", str(data_dir), "--dataset-config", "kaggle_80_10_10", "--output-dir", str(run)],
              "'kaggle_80_10_10'", "neither built", "built there: kaggle", "kaggle[_val<F>_test<F>]")


def test_tfds_users_get_the_same_checks_through_download_and_prepare(tmp_path):
    """What `tfds build` calls: the builder itself refuses other inputs and, in TFDS's overwrite
    mode, rebuilds beside the old data set."""
    import tensorflow_datasets as tfds

    small, big, out = tmp_path / "small", tmp_path / "big", tmp_path / "tfds"
    make_kaggle(small, n=12, n_test=0, seed=1)
    make_kaggle(big, n=20, n_test=0, seed=2)

    def prepare(manual, mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS):
        builder = hcd.Builder(config="kaggle", data_dir=str(out))
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual),
                                                                                  download_mode=mode))
        return builder

    prepare(small)
    prepare(small)  # the same inputs: reused
    with pytest.raises(hcd.InputsChangedError, match=r"train/: 20 files.*\(was 12 files"):
        prepare(big)
    rebuilt = prepare(big, tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS)
    assert rebuilt.info.splits["train"].num_examples + rebuilt.info.splits["test"].num_examples + \
        rebuilt.info.splits["validation"].num_examples == 20
    with pytest.raises(BadInputError, match="config 'kaggle_skip_bad': its name means"):
        hcd.Builder(config=hcd.HcdConfig(name="kaggle_skip_bad", source="kaggle"), data_dir=str(out)
                    ).download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(small)))


# ----------------------------------------------------------------- the same records as before (#22)
GOLDEN_DIR = REPO / "tests" / "fixtures" / "builder"


def _golden_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("hcd_golden", GOLDEN_DIR / "golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_builds_reproduce_the_golden_records(tmp_path):
    """The builder writes, record for record, what it wrote before it was split into modules
    (golden.json: made by the builder as of c45eb53, see golden.py): the same examples in the same
    splits and order, the same PNG bytes, split sizes and metadata, for a kaggle build, a
    slide-grouped fold build dropping duplicates, a skip-mode build of bad input and a pcam build."""
    golden = json.loads((GOLDEN_DIR / "golden.json").read_text())
    got = _golden_module().build_all(tmp_path)
    assert sorted(got) == sorted(k for k in golden if k != "made_by")
    for name, digest in got.items():
        assert digest["splits"] == golden[name]["splits"], f"{name}: other records"
        assert digest == golden[name], f"{name}: other split sizes, features or metadata"
