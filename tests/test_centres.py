"""Centres (issue #25): the synthetic multi-centre sample, the build's centre map, leave-one-centre-out
splits, and the seen/unseen AUC gap."""

from __future__ import annotations

import csv
import hashlib
import pathlib
import shutil

import numpy as np
import pytest

from conftest import cli_fails, testing_config

K = 3


@pytest.fixture(scope="module")
def centre_sample(tmp_path_factory) -> pathlib.Path:
    from hcdtf import synthetic

    out = tmp_path_factory.mktemp("centres") / "sample"
    synthetic.write_sample(out, n=60, n_test=3, seed=1, centres=K)
    return out


@pytest.fixture(scope="module")
def centre_build(centre_sample, tmp_path_factory) -> pathlib.Path:
    from hcdtf.data import pipeline as data

    out = tmp_path_factory.mktemp("centres_tfds")
    data.build_dataset(str(centre_sample), str(out), "kaggle")
    return out


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_sample_centres_csv_and_looks(centre_sample):
    from hcdtf import synthetic

    labels = _rows(centre_sample / "train_labels.csv")
    centres = _rows(centre_sample / "centres.csv")
    assert [r["id"] for r in centres] == [r["id"] for r in labels]  # every labelled id, in order
    assert [r["centre"] for r in centres] == [str(i % K) for i in range(60)]
    # Same tissue and labels as the sample without centres; only the colours change by centre.
    plain, y0, m0 = synthetic.generate_arrays(6, seed=1)
    multi, y1, m1 = synthetic.generate_arrays(6, seed=1, centres=K)
    assert (y0 == y1).all() and (m0 == m1).all()
    assert not np.array_equal(plain[1], multi[1]) and not np.array_equal(plain[2], multi[2])
    means = [multi[i::K].reshape(-1, 3).mean(axis=0) for i in range(K)]
    assert min(np.abs(means[a] - means[b]).max() for a in range(K) for b in range(a + 1, K)) > 5
    # The files are the arrays, centre by centre.
    from PIL import Image

    first = labels[1]["id"]
    assert np.array_equal(np.asarray(Image.open(centre_sample / "train" / f"{first}.tif")), multi[1])


def test_sample_without_centres_unchanged():
    """The centre code draws nothing: a sample without centres keeps its pixels (digest of the
    first patches of seed 3 as this commit's parent drew them)."""
    from hcdtf import synthetic

    images, _, _ = synthetic.generate_arrays(20, seed=3)
    assert hashlib.sha256(images.tobytes()).hexdigest() == (
        "3a93479edb27b9185f43f80dd4b2ee500b6d677c444b0f8d95a9d2ec745ccbbf")


def test_centre_looks_documented():
    from hcdtf.synthetic.centres import centre_look

    looks = [centre_look(i) for i in range(7)]
    assert looks[0].is_identity_scanner() and looks[0].h_gain == looks[0].e_gain == 1.0
    assert all(not look.is_identity_scanner() for look in looks[1:])
    assert centre_look(6) == centre_look(6)  # drawn looks are fixed
    with pytest.raises(ValueError, match="centres must be an integer"):
        from hcdtf import synthetic

        synthetic.generate_arrays(1, centres=0)


def _copy_with_centres(src: pathlib.Path, dst: pathlib.Path, text: str) -> pathlib.Path:
    shutil.copytree(src, dst)
    (dst / "centres.csv").write_text(text)
    return dst


@pytest.mark.parametrize("mutate, words", [
    (lambda rows: rows[:-1], ["centres.csv", "1 labelled ids have no centre"]),
    (lambda rows: [rows[0], *rows[1:5], rows[5].split(",")[0] + ",", *rows[6:]], ["centres.csv", "line 6", "empty centre"]),
    (lambda rows: [*rows, rows[3].split(",")[0] + ",9"], ["centres.csv", "line 62", "earlier line"]),
    (lambda rows: ["id,hospital", *rows[1:]], ["centres.csv", "needs the columns id,centre"]),
])
def test_bad_centre_map_is_one_line(centre_sample, tmp_path, mutate, words):
    rows = (centre_sample / "centres.csv").read_text().splitlines()
    manual = _copy_with_centres(centre_sample, tmp_path / "m", "\n".join(mutate(rows)) + "\n")
    cli_fails(["build-dataset", "--manual-dir", str(manual), "--data-dir", str(tmp_path / "d")], *words)
    assert not (tmp_path / "d" / "hcd" / "kaggle" / "1.0.0" / "dataset_info.json").exists()


def test_build_records_centres(centre_build, centre_sample):
    from hcdtf.data import centres, pipeline as data

    builder = data.get_builder(str(centre_build), "kaggle")
    record = centres.build_record(builder)
    expected = {r["id"]: r["centre"] for r in _rows(centre_sample / "centres.csv")}
    assert record["map"] == expected and record["centres"] == ["0", "1", "2"]
    assert sum(sum(c.values()) for c in record["counts"].values()) == 60
    inputs = builder.info.metadata["inputs"]
    assert "centre_map" in inputs  # part of the fingerprint: another map is another build


def test_leave_one_centre_out_splits(centre_build, tmp_path):
    from hcdtf.data import centres, pipeline as data

    cfg = testing_config(centre_build, tmp_path / "run", "data.centres=[0, 1]", "data.test_centre=2")
    record = centres.build_record(data.get_builder(str(centre_build), "kaggle"))
    plain = testing_config(centre_build, tmp_path / "plain")
    by_split = {s: set(data.load_arrays(plain.data, s)[0]) for s in ("train", "validation", "test")}
    got = {s: list(data.load_arrays(cfg.data, s)[0]) for s in ("train", "validation", "test")}
    for s in ("train", "validation"):
        assert got[s] and {record["map"][i] for i in got[s]} <= {"0", "1"}
        assert set(got[s]) == {i for i in by_split[s] if record["map"][i] in ("0", "1")}
        assert len(got[s]) == data.num_examples(cfg.data, s)
    held = {i for i, c in record["map"].items() if c == "2"}
    assert set(got["test"]) == {i for i in by_split["test"] if record["map"][i] != "2"} | held
    assert len(got["test"]) == len(set(got["test"])) == data.num_examples(cfg.data, "test")
    # No id in two splits; nothing of the held-out centre is trained or validated on.
    assert not (set(got["train"]) & set(got["validation"])) and not (set(got["train"]) & set(got["test"]))
    assert not (set(got["validation"]) & set(got["test"])) and not (held & (set(got["train"]) | set(got["validation"])))


def test_centre_options_checked(centre_build, data_dir, tmp_path):
    from hcdtf.config import ConfigError
    from hcdtf.data import pipeline as data

    with pytest.raises(ConfigError, match="must not be trained on"):
        testing_config(centre_build, tmp_path, "data.centres=[0, 1]", "data.test_centre=1")
    cfg = testing_config(centre_build, tmp_path, "data.test_centre=7")
    with pytest.raises(ValueError, match=r"data.test_centre: centre '7' is not in .*its centres: 0, 1, 2"):
        data.num_examples(cfg.data, "test")
    cfg = testing_config(data_dir, tmp_path, "data.test_centre=0")  # the shared build has no centre map
    with pytest.raises(ValueError, match="has no centre map.*centres.csv"):
        data.num_examples(cfg.data, "train")


def test_gap_table_halving():
    from hcdtf.evaluation.centres import gap_table

    rows = [{"name": f"r{i}", "stain_normalize": m, "seed": s, "auc_seen": 0.95, "auc_unseen": 0.95 - g, "gap": g}
            for i, (m, s, g) in enumerate([("none", 0, 0.20), ("none", 1, 0.10), ("macenko", 0, 0.05),
                                            ("macenko", 1, 0.04), ("reinhard", 0, 0.12), ("reinhard", 1, 0.06)])]
    lines, summary = gap_table(rows)
    assert summary["none"]["mean_gap"] == pytest.approx(0.15)
    assert summary["macenko"]["halved"] is True and summary["macenko"]["ratio_to_none"] == pytest.approx(0.3)
    assert summary["reinhard"]["halved"] is False and summary["reinhard"]["ratio_to_none"] == pytest.approx(0.6)
    assert any(line.startswith("| macenko | 2 | 0.0450 |") for line in lines)
    for r in rows[:2]:
        r["gap"] = -0.01  # unseen better than seen without normalisation: nothing to halve
    _, summary = gap_table(rows)
    assert summary["macenko"]["ratio_to_none"] is None and summary["macenko"]["halved"] is None


def test_camelyon17_centre():
    from tfds_builder.hcd.centres import CentreMapError, camelyon17_centre

    assert camelyon17_centre("patient_004_node_4.tif") == "0"
    assert camelyon17_centre("patch_patient_039_node_1_x_123_y_456.png") == "1"
    assert camelyon17_centre("patient_099_node_0") == "4"
    with pytest.raises(CentreMapError, match="not a Camelyon17 name"):
        camelyon17_centre("tumor_001")
