"""`hcdtf slide embed` and `hcdtf mil train|predict|evaluate|export` (issue 24).

The encoder is a tiny random Keras CNN saved as .keras (any Keras backbone is accepted; a ResNet
would make these tests minutes long on 2 cores). The learning test's bags are cut from the tile
grid of synthetic slides rendered in memory (one tile, one patch), once per module: writing and
reading 90 pyramids would cost minutes; the slide path itself is tested on two written slides.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import REPO

from hcdtf.cli import main
from hcdtf.slide import synthetic

SIZE = (576, 480)  # rendered px: 6 x 5 tiles
QUIET = {"TF_CPP_MIN_LOG_LEVEL": "3"}


def _encoder(path: pathlib.Path) -> pathlib.Path:
    import keras

    keras.utils.set_random_seed(0)
    x = keras.Input((96, 96, 3), dtype="uint8", name="image")
    h = keras.layers.Rescaling(1 / 127.5, offset=-1)(keras.ops.cast(x, "float32"))
    h = keras.layers.Conv2D(32, 3, strides=2, activation="relu")(h)
    h = keras.layers.Conv2D(64, 3, strides=2, activation="relu")(h)
    f = keras.layers.Concatenate()([keras.layers.GlobalAveragePooling2D()(h), keras.layers.GlobalMaxPooling2D()(h)])
    keras.Model(x, f, name="tiny_encoder").save(path)
    return path


def _cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _hcdtf(*args, env=None):
    env = {**os.environ, "PYTHONPATH": str(REPO), **QUIET, **(env or {})}
    return subprocess.run([sys.executable, "-m", "hcdtf.cli", *map(str, args)], check=False, env=env, cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return _encoder(tmp_path_factory.mktemp("encoder") / "tiny.keras")


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    out = tmp_path_factory.mktemp("mil_slides") / "slides"
    synthetic.write_slides(out, n=2, seed=0, size=SIZE, log=lambda *_: None)
    return out


@pytest.fixture(scope="module")
def bags(encoder, slides, tmp_path_factory):
    out = tmp_path_factory.mktemp("mil_bags") / "bags"
    _cli("slide", "embed", encoder, slides, "--output-dir", out, "--batch-size", "16")
    return out


# --------------------------------------------------------------------------- slide embed
def test_embed_writes_clam_layout_bags_of_the_slide_predict_grid(encoder, slides, bags):
    import keras

    from hcdtf.slide import reader
    from hcdtf.slide.embed import read_bag

    bag = read_bag(bags / "slide_000.h5")
    f, coords, cells, attrs = bag["features"], bag["coords"], bag["cells"], bag["attrs"]
    assert f.dtype == np.float32 and f.shape == (attrs["n_patches"], 128) and coords.shape == (len(f), 2)
    assert coords.dtype.kind == "i" and attrs["model_mpp"] == pytest.approx(0.972) and attrs["dim"] == 128
    g = attrs["grid"]
    assert (g["rows"], g["cols"]) == (15, 18) and g["cell_level0"] == pytest.approx(128.0)
    # coords are each patch's level-0 top-left corner, the cell at its centre
    assert np.array_equal(coords, np.stack([cells[:, 1] * 128 - 128, cells[:, 0] * 128 - 128], axis=1))
    # a row is the encoder's output on the patch read at its coords (level 1 = 0.972 um/px here)
    k = len(f) // 2
    with reader.open_slide(slides / "slide_000.svs") as s:
        x, y = (int(v) for v in coords[k])
        patch = np.asarray(s.read_region((x, y), 1, (96, 96)))[..., :3]
    direct = keras.saving.load_model(encoder)(patch[None]).numpy()[0]
    np.testing.assert_allclose(f[k], direct, rtol=1e-4, atol=1e-5)
    assert 0 < len(f) < g["rows"] * g["cols"]  # glass is skipped
    assert bag["thumbnail"].shape == (g["rows"] * 4, g["cols"] * 4, 3)
    # a rerun skips finished slides
    before = (bags / "slide_000.h5").stat().st_mtime_ns
    assert "skipped" in _cli("slide", "embed", encoder, slides, "--output-dir", bags, "--batch-size", "16")
    assert (bags / "slide_000.h5").stat().st_mtime_ns == before


def test_embed_refuses_another_encoder_and_bad_model(encoder, slides, bags, tmp_path):
    other = _encoder(tmp_path / "other.keras")  # same architecture, same seed: same weights, same key
    assert "skipped" in _cli("slide", "embed", other, slides / "slide_001.svs", "--output-dir", bags,
                             "--batch-size", "16")
    r = CliRunner().invoke(main, ["slide", "embed", str(encoder), str(slides / "slide_001.svs"), "--output-dir",
                                  str(bags), "--stride", "48"])
    assert r.exit_code == 2 and "another encoder or other settings" in r.output and "stride" in r.output
    r = CliRunner().invoke(main, ["slide", "embed", "ResNet7", str(slides), "--output-dir", str(tmp_path / "x")])
    assert r.exit_code == 2 and "ResNet18" in r.output


def test_killed_embed_resumes_to_the_same_bytes(encoder, slides, bags, tmp_path):
    out = tmp_path / "killed"
    flags = ["--batch-size", "16", "--checkpoint-seconds", "0"]
    p = _hcdtf("slide", "embed", encoder, slides, "--output-dir", out, *flags, env={"HCDTF_KILL_AT": "embed-part:3"})
    assert p.returncode == -signal.SIGKILL, p.stdout
    assert (out / ".partial" / "slide_000").is_dir() and not (out / "slide_000.h5").exists()
    assert "resuming at patch" in _cli("slide", "embed", encoder, slides, "--output-dir", out, *flags)
    for slide in ("slide_000", "slide_001"):
        assert (out / f"{slide}.h5").read_bytes() == (bags / f"{slide}.h5").read_bytes()
    assert not (out / ".partial").exists()


# --------------------------------------------------------------------------- MIL on bags
def _bags_from_rendered(encoder_path, root: pathlib.Path, n: int, seed: int) -> dict:
    """Bags of n slides rendered in memory: features of each tissue tile; tumour tiles recorded."""
    import keras

    enc = keras.saving.load_model(encoder_path)
    root.mkdir(parents=True)
    rows, tumour = ["name,class\n"], {}
    for spec in synthetic.plan_slides(n, seed=seed, size=SIZE):
        image, _ = synthetic.render(spec)
        lesion = synthetic._tumour_tiles(spec)
        patches, cells, is_tumour = [], [], []
        for i in range(spec.height // 96):
            for j in range(spec.width // 96):
                p = image[i * 96:(i + 1) * 96, j * 96:(j + 1) * 96]
                if p.mean() < 230:  # not glass
                    patches.append(p), cells.append((i, j)), is_tumour.append((i, j) in lesion)
        features = enc.predict(np.stack(patches), batch_size=64, verbose=0)
        with h5py.File(root / f"{spec.name}.h5", "w") as f:
            f["features"] = features.astype(np.float32)
            f["coords"] = np.array(cells, np.int64)[:, ::-1] * 384
        rows.append(f"{spec.name},{'Tumor' if spec.tumour else 'Normal'}\n")
        tumour[spec.name] = np.array(is_tumour)
    (root / "reference.csv").write_text("".join(rows))
    return tumour


@pytest.fixture(scope="module")
def mil_data(encoder, tmp_path_factory):
    root = tmp_path_factory.mktemp("mil_data")
    train_tumour = _bags_from_rendered(encoder, root / "train", 64, seed=0)
    test_tumour = _bags_from_rendered(encoder, root / "test", 24, seed=1)
    return root, train_tumour, test_tumour


MIL_FLAGS = ["--epochs", "20", "--learning-rate", "5e-4", "--hidden", "64", "--attention", "32", "--folds", "0"]


def _heatmap_dir(root, train_tumour, out):
    """A `slide predict`-style slides.csv: the max over a slide's patches of a patch classifier
    trained with patch labels on the training slides' features (the heat-map score of the same encoder)."""
    from sklearn.linear_model import LogisticRegression

    from hcdtf.slide.inference import slide_row, write_slide_rows

    x = np.concatenate([h5py.File(root / "train" / f"{s}.h5")["features"][:] for s in train_tumour])
    y = np.concatenate(list(train_tumour.values()))
    clf = LogisticRegression(max_iter=3000, C=0.1).fit((x - x.mean(0)) / (x.std(0) + 1e-6), y)
    out.mkdir()
    rows = []
    for f in sorted((root / "test").glob("*.h5")):
        z = h5py.File(f)["features"][:]
        score = float(clf.predict_proba((z - x.mean(0)) / (x.std(0) + 1e-6))[:, 1].max())
        rows.append(slide_row(f.with_suffix(".svs"), "done", {"score": score, "score_method": "max"}))
    write_slide_rows(out / "slides.csv", rows)
    return out


def test_mil_learns_slide_labels_and_attends_to_tumour(mil_data, tmp_path):
    root, train_tumour, test_tumour = mil_data
    run = tmp_path / "run"
    _cli("mil", "train", root / "train", "--labels", root / "train" / "reference.csv", "--output-dir", run, *MIL_FLAGS)
    for name in ("model.keras", "history.csv", "config.yaml", "folds.csv", "train_summary.json", "run.json"):
        assert (run / name).is_file(), name
    heat = _heatmap_dir(root, train_tumour, tmp_path / "heatmap")
    out = _cli("mil", "evaluate", run, root / "test", "--labels", root / "test" / "reference.csv", "--heatmap", heat)
    assert "DeLong" in out
    m = json.loads((run / "eval" / "mil_metrics.json").read_text())
    assert m["slides"] == 24 and m["tumour_slides"] == 12 and "p_value" in m["heatmap"]["delong"]
    print(f"MIL slide AUC {m['auc']:.3f} vs heat-map max {m['heatmap']['auc']:.3f}, p {m['heatmap']['delong']['p_value']:.3g}")

    # a model trained on shuffled slide labels (same bags, same settings)
    labels = (root / "train" / "reference.csv").read_text().splitlines()[1:]
    classes = [line.split(",")[1] for line in labels]
    order = np.random.default_rng(7).permutation(len(classes))
    shuffled = tmp_path / "shuffled.csv"
    shuffled.write_text("name,class\n" + "".join(f"{line.split(',')[0]},{classes[k]}\n"
                                                 for line, k in zip(labels, order)))
    run_s = tmp_path / "run_shuffled"
    _cli("mil", "train", root / "train", "--labels", shuffled, "--output-dir", run_s, *MIL_FLAGS)
    _cli("mil", "evaluate", run_s, root / "test", "--labels", root / "test" / "reference.csv", "--no-maps")
    m_s = json.loads((run_s / "eval" / "mil_metrics.json").read_text())
    # a constant scorer has AUC 0.5; the shuffled-label model should be near it
    print(f"shuffled-label MIL slide AUC {m_s['auc']:.3f}")
    assert m["auc"] >= 0.8 and m["auc"] > m_s["auc"] + 0.15, (m["auc"], m_s["auc"])

    # attention: more weight on tumour patches than their share of the tissue
    mass, share = [], []
    for slide, is_tumour in test_tumour.items():
        if is_tumour.any():
            a = np.load(run / "eval" / "attention" / f"{slide}.npy")
            assert a.shape == is_tumour.shape and a.sum() == pytest.approx(1.0, abs=1e-4)
            mass.append(a[is_tumour].sum())
            share.append(is_tumour.mean())
    print(f"attention on tumour patches {np.mean(mass):.3f}, their share of the tissue {np.mean(share):.3f}")
    assert np.mean(mass) > 2 * np.mean(share), (np.mean(mass), np.mean(share))


def _weights(run):
    import keras

    import hcdtf.mil.model  # noqa: F401

    return keras.saving.load_model(run / "model.keras").get_weights()


def test_killed_mil_train_resumes_to_the_same_weights(mil_data, tmp_path):
    root = mil_data[0]
    args = ["mil", "train", root / "train", "--labels", root / "train" / "reference.csv", "--epochs", "3",
            "--folds", "4", "--hidden", "32", "--attention", "16", "--max-instances", "12"]
    whole = tmp_path / "whole"
    _cli(*args, "--output-dir", whole)
    killed = tmp_path / "killed"
    # killed while writing epoch 2's resume state: epoch 2's steps are lost with it
    p = _hcdtf(*args, "--output-dir", killed, env={"HCDTF_KILL_AT": "inside-state-write:2"})
    assert p.returncode == -signal.SIGKILL, p.stdout
    assert sorted(x.name for x in (killed / "backup").glob("state-*.npz")) == ["state-0001.npz"]
    assert list((killed / "backup").glob(".*.tmp-*"))  # the half-written state
    assert "resuming after epoch 1" in _cli(*args, "--output-dir", killed)
    for a, b in zip(_weights(whole), _weights(killed)):
        assert np.array_equal(a, b)
    history = [[row.rsplit(",", 1)[0] for row in (run / "history.csv").read_text().split()] for run in (whole, killed)]
    assert history[0] == history[1] and len(history[0]) == 4  # all but the seconds column
    assert (whole / "val_predictions.csv").read_bytes() == (killed / "val_predictions.csv").read_bytes()
    assert not list(killed.rglob(".*.tmp-*"))
    # finished: a rerun reports it; another config is refused
    assert "already finished" in _cli(*args, "--output-dir", killed)
    r = CliRunner().invoke(main, [str(a) for a in args] + ["--output-dir", str(killed), "--epochs", "4"])
    assert r.exit_code == 2 and "--overwrite" in r.output


def test_mil_predict_maps_and_export_on_embedded_slides(bags, slides, tmp_path):
    import tensorflow as tf

    run = tmp_path / "run"
    _cli("mil", "train", bags, "--labels", slides / "reference.csv", "--output-dir", run, "--epochs", "2",
         "--folds", "0", "--hidden", "16", "--attention", "8")
    _cli("mil", "predict", run, bags, "--output-dir", tmp_path / "pred")
    png = tmp_path / "pred" / "attention" / "slide_000.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    scores = dict(line.split(",")[:2] for line in (tmp_path / "pred" / "predictions.csv").read_text().split()[1:])
    _cli("mil", "export", run, "--export-dir", tmp_path / "export")
    served = tf.saved_model.load(str(tmp_path / "export")).signatures["serving_default"]
    with h5py.File(bags / "slide_000.h5") as f:
        features, coords = f["features"][:], f["coords"][:]
    out = served(features=tf.constant(features), coords=tf.constant(coords))
    assert float(out["probability"]) == pytest.approx(float(scores["slide_000"]), abs=1e-5)
    assert out["attention"].shape == (len(features),)
    np.testing.assert_allclose(np.load(tmp_path / "pred" / "attention" / "slide_000.npy"), out["attention"].numpy(),
                               rtol=1e-5, atol=1e-7)
    r = CliRunner().invoke(main, ["mil", "train", str(bags), "--labels", str(tmp_path / "none.csv"),
                                  "--output-dir", str(tmp_path / "r2")])
    assert r.exit_code == 2 and "none.csv" in r.output
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    r = CliRunner().invoke(main, ["mil", "train", str(bags), "--labels", str(slides / "reference.csv"),
                                  "--output-dir", str(tmp_path / "foreign"), "--folds", "0"])
    assert r.exit_code == 2 and "not a MIL run" in r.output
    assert (tmp_path / "foreign" / "notes.txt").read_text() == "mine"
    with h5py.File(tmp_path / "other_dim.h5", "w") as f:
        f["features"] = np.zeros((3, 7), np.float32)
    (tmp_path / "labels.csv").write_text("slide_000,Tumor\nslide_001,Normal\nother_dim,Normal\n")
    r = CliRunner().invoke(main, ["mil", "train", str(bags), str(tmp_path / "other_dim.h5"), "--labels",
                                  str(tmp_path / "labels.csv"), "--output-dir", str(tmp_path / "r3"), "--folds", "0"])
    assert r.exit_code == 2 and "embed every slide with one encoder" in r.output, r.output


def test_camelyon16_layout_end_to_end(encoder, slides, tmp_path):
    """Files laid out as Camelyon16 ships them: training/{normal,tumor}/*.tif, testing/images/*.tif and
    testing/reference.csv (no header, extra columns); the training labels by the README's recipe."""
    import shutil

    c16 = tmp_path / "camelyon16"
    for src, dst in (("slide_000", "training/tumor/tumor_001"), ("slide_001", "training/normal/normal_001"),
                     ("slide_000", "testing/images/test_001"), ("slide_001", "testing/images/test_002")):
        (c16 / dst).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(slides / f"{src}.svs", c16 / f"{dst}.tif")
    (c16 / "testing" / "reference.csv").write_text("test_001,Tumor,Micro,Primary\ntest_002,Normal,,\n")
    recipe = ('(for f in training/*/*.tif; do n=$(basename $f .tif); case $n in tumor*) c=Tumor;; *) c=Normal;; '
              'esac; echo "$n,$c"; done) > training_reference.csv')
    subprocess.run(["bash", "-c", recipe], cwd=c16, check=True)
    assert (c16 / "training_reference.csv").read_text() == "normal_001,Normal\ntumor_001,Tumor\n"
    _cli("slide", "embed", encoder, c16 / "training/normal", c16 / "training/tumor", "--output-dir",
         tmp_path / "bags/train", "--batch-size", "64")
    _cli("slide", "embed", encoder, c16 / "testing/images", "--output-dir", tmp_path / "bags/test", "--batch-size", "64")
    assert sorted(p.name for p in (tmp_path / "bags/train").glob("*.h5")) == ["normal_001.h5", "tumor_001.h5"]
    _cli("mil", "train", tmp_path / "bags/train", "--labels", c16 / "training_reference.csv", "--output-dir",
         tmp_path / "run", "--epochs", "1", "--folds", "0", "--hidden", "8", "--attention", "4")
    _cli("mil", "evaluate", tmp_path / "run", tmp_path / "bags/test", "--labels", c16 / "testing/reference.csv")
    m = json.loads((tmp_path / "run" / "eval" / "mil_metrics.json").read_text())
    assert (m["slides"], m["tumour_slides"]) == (2, 1)
    assert (tmp_path / "run" / "eval" / "attention" / "test_001.png").is_file()


def test_mil_overwrite_keeps_the_old_run_until_the_new_one_has_an_epoch(bags, slides, tmp_path):
    """--overwrite trains the replacement in RUN/.staging and swaps it in (journalled) after its first
    epoch: killed before the swap, the old run is whole; killed inside it, the next start completes it."""
    common = ["mil", "train", bags, "--labels", slides / "reference.csv", "--folds", "0", "--hidden", "8",
              "--attention", "4"]
    old_args, new_args = [*common, "--epochs", "2"], [*common, "--epochs", "3", "--seed", "1"]
    run, ref = tmp_path / "run", tmp_path / "ref"
    _cli(*old_args, "--output-dir", run)
    _cli("mil", "predict", run, bags, "--no-maps")  # RUN/predictions: describes the old model
    old = {p: (run / p).read_bytes() for p in ("model.keras", "train_summary.json", "history.csv")}
    _cli(*new_args, "--output-dir", ref)  # the new config, uninterrupted

    # killed in the replacement's first epoch: the old run is untouched, the replacement is staged
    p = _hcdtf(*new_args, "--output-dir", run, "--overwrite", env={"HCDTF_KILL_AT": "mil-step:1"})
    assert p.returncode == -signal.SIGKILL, p.stdout
    assert {q: (run / q).read_bytes() for q in old} == old and (run / "predictions" / "predictions.csv").is_file()
    assert (run / ".staging" / "config.yaml").is_file()
    r = CliRunner().invoke(main, [str(a) for a in new_args] + ["--output-dir", str(run)])
    assert r.exit_code == 2 and "interrupted" in r.output and "--overwrite" in r.output, r.output
    assert "already finished" in _cli(*old_args, "--output-dir", run)  # the old run is still the run

    # killed inside the swap (old artifacts deleted, new ones not yet moved): the next start completes it
    p = _hcdtf(*new_args, "--output-dir", run, "--overwrite", env={"HCDTF_KILL_AT": "inside-swap"})
    assert p.returncode == -signal.SIGKILL, p.stdout
    assert not (run / "train_summary.json").exists() and (run / ".staging" / ".swap.json").is_file()
    out = _cli(*new_args, "--output-dir", run)  # no --overwrite needed: the swap was committed
    assert "resuming after epoch 1" in out, out
    assert not (run / ".staging").exists() and not (run / "predictions").exists()
    for a, b in zip(_weights(ref), _weights(run)):
        assert np.array_equal(a, b)
    assert (run / "config.yaml").read_bytes() == (ref / "config.yaml").read_bytes()
    assert json.loads((run / "train_summary.json").read_text())["epochs"] == 3
    # a finished run is replaced the same way, without a kill
    assert "replacing the old run" in _cli(*old_args, "--output-dir", run, "--overwrite")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "model.keras").write_bytes(old["model.keras"])
    for a, b in zip(_weights(tmp_path / "old"), _weights(run)):  # the old config again, the same weights
        assert np.array_equal(a, b)
    assert not list(run.rglob(".*.tmp-*")) and not (run / ".staging").exists()
