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
from tfds_builder.hcd.hcd_dataset_builder import BadInputError

from conftest import REPO

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
    from hcdtf import data

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

    from hcdtf import data

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
    from hcdtf import data

    monkeypatch.setattr(hcd, "_PCAM_CHUNK", 2)  # several chunks even on a tiny file
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

    assert list(hcd._ordered_map(slow, iter(range(50)), window=4, workers=3)) == [x * x for x in range(50)]
    assert peak[0] <= 3

    def boom(x):
        if x == 7:
            raise BadInputError("bad 7")
        return x

    with pytest.raises(BadInputError, match="bad 7"):
        list(hcd._ordered_map(boom, range(100), window=8))
