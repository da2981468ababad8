"""`hcdtf slide embed` and `hcdtf mil train|predict|evaluate|export` (issue 24).

The encoder is a tiny random Keras CNN saved as .keras (any Keras backbone is accepted; a ResNet
would make these tests minutes long on 2 cores). The learning test's bags are made as a user
makes them, once per module: `sample-slides --layout camelyon16` writes 88 small slides (6 x 5
tiles), `slide embed --stride 96` embeds one patch per rendered tile.
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


def test_embed_on_beam_direct_runner_writes_the_same_bytes(encoder, slides, bags, tmp_path):
    """`slide embed --runner DirectRunner`: one slide per element, the same code on the same batches,
    so each bag is byte-identical to the in-process one (no tolerance needed: DirectRunner runs the
    encoder in this process with the same TensorFlow settings and batch size)."""
    out = tmp_path / "beam"
    text = _cli("slide", "embed", encoder, slides, "--output-dir", out, "--batch-size", "16", "--runner", "DirectRunner")
    assert "2 embedded, 0 already done, 0 failed" in text, text
    for slide in ("slide_000", "slide_001"):
        assert (out / f"{slide}.h5").read_bytes() == (bags / f"{slide}.h5").read_bytes(), slide
    rows = [r.split(",") for r in (out / "embeddings.csv").read_text().splitlines()]
    assert rows[0][:4] == ["slide", "status", "patches", "dim"]
    assert [r[:4] for r in rows[1:]] == [[s, "done", str(h5py.File(bags / f"{s}.h5").attrs["n_patches"]), "128"]
                                         for s in ("slide_000", "slide_001")]
    # a rerun skips finished slides; a bag of other settings is a failed row (exit 1), the others finish
    before = (out / "slide_000.h5").stat().st_mtime_ns
    assert "0 embedded, 2 already done" in _cli("slide", "embed", encoder, slides, "--output-dir", out,
                                                "--batch-size", "16", "--runner", "DirectRunner")
    assert (out / "slide_000.h5").stat().st_mtime_ns == before
    r = CliRunner().invoke(main, ["slide", "embed", str(encoder), str(slides / "slide_000.svs"), "--output-dir",
                                  str(out), "--stride", "48", "--runner", "DirectRunner"])
    assert r.exit_code == 1 and "another encoder or other settings" in r.output, r.output
    assert (out / "slide_000.h5").stat().st_mtime_ns == before
    for args, message in ((["--overwrite"], "--overwrite is not available with --runner"),
                          (["--pipeline-option=--x=1"], "--pipeline-option applies to Beam")):
        r = CliRunner().invoke(main, ["slide", "embed", str(encoder), str(slides), "--output-dir", str(out),
                                      *args] + (["--runner", "DirectRunner"] if args == ["--overwrite"] else []))
        assert r.exit_code == 2 and message in r.output, r.output
    r = CliRunner().invoke(main, ["slide", "embed", "ResNet7", str(slides), "--output-dir", str(tmp_path / "x"),
                                  "--runner", "DirectRunner"])
    assert r.exit_code == 2 and "ResNet18" in r.output, r.output


# --------------------------------------------------------------------------- MIL on bags
def _embedded_sample(encoder_path, root: pathlib.Path, n: int, test: int) -> tuple[dict, dict]:
    """The MIL sample as a user makes it: `sample-slides --layout camelyon16` (n training and ``test``
    test slides of 6 x 5 tiles), then `slide embed --stride 96` (one patch per rendered tile) into
    root/train and root/test, each with its reference.csv. Returns slide -> bool per patch (tumour
    tile), from the plan the command drew the slides from, for the training and the test bags."""
    c16 = root / "c16"
    _cli("sample-slides", c16, "--layout", "camelyon16", "--slides", n, "--test-slides", test,
         "--width", SIZE[0] * 4, "--height", SIZE[1] * 4)
    for split, dirs in (("train", ["training/normal", "training/tumor"]), ("test", ["testing/images"])):
        _cli("slide", "embed", encoder_path, *[c16 / d for d in dirs], "--output-dir", root / split,
             "--stride", "96", "--batch-size", "64")
    (root / "train" / "reference.csv").write_bytes((c16 / "training_reference.csv").read_bytes())
    (root / "test" / "reference.csv").write_bytes((c16 / "testing" / "reference.csv").read_bytes())
    truth: dict = {"train": {}, "test": {}}
    for spec, rel, _ in synthetic.plan_sample(n, size=SIZE, kind="camelyon16", test_slides=test):
        split = "test" if rel.startswith("testing/") else "train"
        with h5py.File(root / split / f"{spec.name}.h5") as f:
            cells = f["cells"][:]
        tiles = synthetic.tumour_tiles(spec)
        truth[split][spec.name] = np.array([(int(i), int(j)) in tiles for i, j in cells])
    return truth["train"], truth["test"]


@pytest.fixture(scope="module")
def mil_data(encoder, tmp_path_factory):
    root = tmp_path_factory.mktemp("mil_data")
    train_tumour, test_tumour = _embedded_sample(encoder, root, 64, 24)
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
    labels = [line for line in (root / "train" / "reference.csv").read_text().splitlines() if line != "name,class"]
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


def test_clam_sb_learns_attends_to_tumour_and_exports(mil_data, tmp_path):
    import tensorflow as tf

    root, _, test_tumour = mil_data
    run = tmp_path / "clam"
    _cli("mil", "train", root / "train", "--labels", root / "train" / "reference.csv", "--output-dir", run,
         *MIL_FLAGS, "--head", "clam_sb", "--k-sample", "4")
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["head"] == "clam_sb" and "head: clam_sb" in (run / "config.yaml").read_text()
    _cli("mil", "evaluate", run, root / "test", "--labels", root / "test" / "reference.csv")
    m = json.loads((run / "eval" / "mil_metrics.json").read_text())
    mass, share = [], []
    for slide, is_tumour in test_tumour.items():
        if is_tumour.any():
            a = np.load(run / "eval" / "attention" / f"{slide}.npy")
            mass.append(a[is_tumour].sum())
            share.append(is_tumour.mean())
    print(f"CLAM-SB slide AUC {m['auc']:.3f}; attention on tumour patches {np.mean(mass):.3f}, "
          f"their share {np.mean(share):.3f}")
    assert m["auc"] >= 0.8 and np.mean(mass) > 2 * np.mean(share), (m["auc"], np.mean(mass), np.mean(share))
    _cli("mil", "export", run, "--export-dir", tmp_path / "export")
    served = tf.saved_model.load(str(tmp_path / "export")).signatures["serving_default"]
    slide = sorted(test_tumour)[0]
    with h5py.File(root / "test" / f"{slide}.h5") as f:
        out = served(features=tf.constant(f["features"][:]), coords=tf.constant(f["coords"][:]))
    scores = dict(line.split(",")[:3:2] for line in (run / "eval" / "predictions.csv").read_text().split()[1:])
    assert float(out["probability"]) == pytest.approx(float(scores[slide]), abs=1e-5)
    np.testing.assert_allclose(out["attention"].numpy(), np.load(run / "eval" / "attention" / f"{slide}.npy"),
                               rtol=1e-5, atol=1e-7)


def _weights(run):
    import keras

    import hcdtf.mil.model  # noqa: F401

    return keras.saving.load_model(run / "model.keras").get_weights()


def test_killed_mil_train_resumes_to_the_same_weights(mil_data, tmp_path):
    root = mil_data[0]
    # CLAM-SB: its instance classifiers and top-k selection resume exactly too (ABMIL's resume: the
    # overwrite test below compares a resumed run with an uninterrupted one)
    args = ["mil", "train", root / "train", "--labels", root / "train" / "reference.csv", "--epochs", "3",
            "--folds", "4", "--hidden", "32", "--attention", "16", "--max-instances", "12", "--head", "clam_sb",
            "--k-sample", "4"]
    # Every run in a fresh process, as a user runs them: the pytest worker's TensorFlow carries
    # what earlier tests set (threads, policies), which a bit-for-bit comparison must not see.
    whole = tmp_path / "whole"
    p = _hcdtf(*args, "--output-dir", whole)
    assert p.returncode == 0, p.stdout
    killed = tmp_path / "killed"
    # killed while writing epoch 2's resume state: epoch 2's steps are lost with it
    p = _hcdtf(*args, "--output-dir", killed, env={"HCDTF_KILL_AT": "inside-state-write:2"})
    assert p.returncode == -signal.SIGKILL, p.stdout
    assert sorted(x.name for x in (killed / "backup").glob("state-*.npz")) == ["state-0001.npz"]
    assert list((killed / "backup").glob(".*.tmp-*"))  # the half-written state
    p = _hcdtf(*args, "--output-dir", killed)
    assert p.returncode == 0 and "resuming after epoch 1" in p.stdout, p.stdout
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


def test_sample_slides_writes_a_camelyon16_mil_set(tmp_path):
    out = tmp_path / "c16"
    args = ["sample-slides", out, "--layout", "camelyon16", "--slides", "5", "--test-slides", "3", "--width", "1536",
            "--height", "1536", "--tumour-fraction", "0.4", "--metastases", "varied"]
    _cli(*args)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["testing/images/test_001.tif", "testing/images/test_002.tif", "testing/images/test_003.tif",
                     "testing/lesion_annotations/test_001.xml", "testing/lesion_annotations/test_003.xml",
                     "testing/reference.csv", "training/lesion_annotations/tumor_001.xml",
                     "training/lesion_annotations/tumor_002.xml", "training/normal/normal_001.tif",
                     "training/normal/normal_002.tif", "training/normal/normal_003.tif",
                     "training/tumor/tumor_001.tif", "training/tumor/tumor_002.tif", "training_reference.csv"]
    # ceil(5 * 0.4) = 2 training and ceil(3 * 0.4) = 2 test tumour slides; Camelyon16's reference.csv shape
    assert (out / "training_reference.csv").read_text() == (
        "normal_001,Normal\nnormal_002,Normal\nnormal_003,Normal\ntumor_001,Tumor\ntumor_002,Tumor\n")
    rows = [line.split(",") for line in (out / "testing" / "reference.csv").read_text().splitlines()]
    assert [r[:2] for r in rows] == [["test_001", "Tumor"], ["test_002", "Normal"], ["test_003", "Tumor"]]
    assert rows[0][2] in ("Macro", "Micro", "ITC") and rows[1][2] == ""
    from hcdtf.slide.evaluate import read_reference

    assert read_reference(out / "testing" / "reference.csv") == {"test_001": 1, "test_002": 0, "test_003": 1}
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.tif")}
    assert "0 written now" in _cli(*args)  # a rerun keeps what is written
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.tif")} == before
    # the default plan and layout are what they were: even-numbered tumour slides with three metastases
    specs = synthetic.plan_slides(6, size=(384, 384))
    assert [s.tumour for s in specs] == [True, False] * 3 and all(len(s.lesions) >= 1 for s in specs[::2])
    varied = synthetic.plan_slides(40, size=(2048, 1536), metastases="varied")
    sizes = {len(synthetic.tumour_tiles(s)) for s in varied if s.tumour}
    assert all(s.lesions for s in varied if s.tumour) and min(sizes) <= 2 and max(sizes) >= 20, sizes
    r = CliRunner().invoke(main, ["sample-slides", str(tmp_path / "flat"), "--test-slides", "2"])
    assert r.exit_code == 2 and "--layout camelyon16" in r.output


def test_compare_takes_mil_slide_scores_beside_a_heatmap_slide_evaluation(encoder, tmp_path):
    """`hcdtf compare RUN/eval SLIDE_EVAL`: the MIL run's slide scores and `slide evaluate`'s heat-map
    scores of the same slides in one table, with the DeLong test `mil evaluate --heatmap` reports."""
    import keras

    keras.utils.set_random_seed(0)
    x = keras.Input((96, 96, 3), dtype="uint8", name="image")
    h = keras.layers.Conv2D(4, 3, strides=4, activation="relu")(keras.layers.Rescaling(1 / 255)(keras.ops.cast(x, "float32")))
    keras.Model(x, keras.layers.Dense(1, activation="sigmoid")(keras.layers.GlobalAveragePooling2D()(h))).save(
        tmp_path / "patch_classifier.keras")
    s = tmp_path / "slides"
    _cli("sample-slides", s, "--slides", "4", "--width", SIZE[0] * 4, "--height", SIZE[1] * 4)
    _cli("slide", "predict", tmp_path / "patch_classifier.keras", s, "--output-dir", tmp_path / "heat")
    _cli("slide", "evaluate", tmp_path / "heat", "--annotations", s / "annotations", "--reference", s / "reference.csv")
    _cli("slide", "embed", encoder, s, "--output-dir", tmp_path / "bags", "--stride", "96")
    run = tmp_path / "run"
    _cli("mil", "train", tmp_path / "bags", "--labels", s / "reference.csv", "--output-dir", run, "--epochs", "2",
         "--folds", "0", "--hidden", "8", "--attention", "4")
    _cli("mil", "evaluate", run, tmp_path / "bags", "--labels", s / "reference.csv", "--heatmap", tmp_path / "heat",
         "--no-maps")
    m = json.loads((run / "eval" / "mil_metrics.json").read_text())
    assert (run / "eval" / "predictions.csv").read_text().startswith("id,label,score\n")
    for inputs in ([run / "eval", tmp_path / "heat"], [run / "eval", run / "eval" / "heatmap_predictions.csv"]):
        out = tmp_path / f"cmp{len(str(inputs[1]))}"
        said = _cli("compare", *inputs, "--names", "MIL,heatmap", "--n-bootstrap", "0", "--output-dir", out)
        c = json.loads((out / "comparison.json").read_text())
        assert "test set not recorded" not in said and "'MIL': 4 slides (mil evaluate, labels reference.csv)" in said
        assert ("'heatmap': 4 slides (" + ("slide evaluate, reference" if inputs[1].is_dir() else
                                           "heat-map scores from mil evaluate --heatmap, labels")) in said, said
        assert c["n_examples"] == 4 and [r["name"] for r in c["models"]] == ["MIL", "heatmap"]
        # the heat-map scores beside the run's are not the MIL run's model
        assert "ABMIL" in str(c["models"][0].get("arch")) and "ABMIL" not in str(c["models"][1].get("arch"))
        (pair,) = c["pairwise"]
        assert pair["auc_a"] == pytest.approx(m["auc"]) and pair["auc_b"] == pytest.approx(m["heatmap"]["auc"])
        assert pair["p_value"] == pytest.approx(m["heatmap"]["delong"]["p_value"])


def test_mil_commands_read_the_mil_config_section(bags, slides, tmp_path):
    """flag > --set > --config > base.yaml for `mil train`, and mil.maps for `mil predict`; the
    section's defaults are the library's (an ABMIL run's config.yaml is what it was before)."""
    import dataclasses

    import yaml

    from hcdtf.config import MilConfig as Section
    from hcdtf.mil.train import MilConfig

    section = dataclasses.asdict(Section())
    library = MilConfig().to_dict() | {"head": "abmil", "bag_weight": 0.7, "k_sample": 8}
    assert {k: v for k, v in section.items() if k != "maps"} == {k: library[k] for k in section if k != "maps"}
    (tmp_path / "mil.yaml").write_text("mil:\n  hidden: 8\n  attention: 16\n  epochs: 3\n  folds: 0\n")
    run = tmp_path / "run"
    _cli("mil", "train", bags, "--labels", slides / "reference.csv", "--output-dir", run, "--config",
         tmp_path / "mil.yaml", "--set", "mil.epochs=1", "--set", "mil.attention=6", "--attention", "4")
    recorded = yaml.safe_load((run / "config.yaml").read_text())["mil"]
    assert (recorded["hidden"], recorded["attention"], recorded["epochs"], recorded["folds"]) == (8, 4, 1, 0)
    assert recorded["dropout"] == 0.25 and "head" not in recorded  # the rest from base.yaml, as before
    _cli("mil", "predict", run, bags, "--output-dir", tmp_path / "pred", "--set", "mil.maps=false")
    assert (tmp_path / "pred" / "predictions.csv").is_file() and not (tmp_path / "pred" / "attention").exists()
    _cli("mil", "predict", run, bags, "--output-dir", tmp_path / "pred2", "--set", "mil.maps=false", "--maps")
    assert (tmp_path / "pred2" / "attention" / "slide_000.npy").is_file()
    for override, words in (("mil.head=transmil", ["mil.head", "clam_sb"]), ("mil.fold=5", ["mil.fold", "0..4"]),
                            ("mil.hiden=8", ["mil.hiden", "hidden"])):
        r = CliRunner().invoke(main, ["mil", "train", str(bags), "--labels", str(slides / "reference.csv"),
                                      "--output-dir", str(tmp_path / "bad"), "--set", override])
        assert r.exit_code == 2 and all(w in r.output for w in words), (override, r.output)


def test_compare_summarises_mil_repeats_over_seeds(mil_data, tmp_path):
    """Repeats: `mil train --seed S` runs (same folds) evaluated on one test set; `hcdtf compare` of
    their eval folders groups them by head and encoder into models with mean/sd over repeats and
    pairs ABMIL with CLAM-SB by (seed, fold) in the paired t-test and in DeLong."""
    root = mil_data[0]
    evals, aucs = [], {}
    for head in ("abmil", "clam_sb"):
        for seed in (0, 1):
            run = tmp_path / f"{head}_{seed}"
            _cli("mil", "train", root / "train", "--labels", root / "train" / "reference.csv", "--output-dir", run,
                 "--epochs", "1", "--hidden", "16", "--attention", "8", "--folds", "4", "--fold", "1", "--seed", seed,
                 "--head", head, "--k-sample", "4")
            _cli("mil", "evaluate", run, root / "test", "--labels", root / "test" / "reference.csv", "--no-maps")
            evals.append(run / "eval")
            aucs[head, seed] = json.loads((run / "eval" / "mil_metrics.json").read_text())["auc"]
    encoder = json.loads((tmp_path / "abmil_0" / "train_summary.json").read_text())["encoder_sha256"]
    assert encoder == h5py.File(next((root / "train").glob("*.h5"))).attrs["encoder_sha256"]
    _cli("compare", *evals, "--n-bootstrap", "0", "--output-dir", tmp_path / "cmp")
    c = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    models = {m["name"]: m for m in c["across_repeats"]["models"]}
    assert sorted(models) == [f"ABMIL (encoder {encoder[:8]})", f"CLAM-SB (encoder {encoder[:8]})"], sorted(models)
    abmil = models[f"ABMIL (encoder {encoder[:8]})"]
    assert abmil["n_repeats"] == 2 and abmil["repeats"] == [[0, 1], [1, 1]]
    assert abmil["auc_mean"] == pytest.approx((aucs["abmil", 0] + aucs["abmil", 1]) / 2)
    (pair,) = c["across_repeats"]["pairs"]
    assert pair["n"] == 2 and pair["mean_diff"] == pytest.approx(
        np.mean([aucs["abmil", s] - aucs["clam_sb", s] for s in (0, 1)]))
    assert sorted(p["repeat"] for p in c["pairwise"]) == [[0, 1], [1, 1]]  # DeLong within each repeat
    assert [r["name"] for r in c["models"]] == ["abmil_0", "abmil_1", "clam_sb_0", "clam_sb_1"]  # the runs' names
    # folds drawn with another --split-seed: fold 1 is other slides, so not a repeat of abmil_0/1
    other = tmp_path / "abmil_split1"
    _cli("mil", "train", root / "train", "--labels", root / "train" / "reference.csv", "--output-dir", other,
         "--epochs", "1", "--hidden", "16", "--attention", "8", "--folds", "4", "--fold", "1", "--seed", 0,
         "--split-seed", 1)
    _cli("mil", "evaluate", other, root / "test", "--labels", root / "test" / "reference.csv", "--no-maps")
    _cli("compare", *evals[:2], other / "eval", "--n-bootstrap", "0", "--output-dir", tmp_path / "cmp2")
    models = {m["name"]: m["n_repeats"] for m in json.loads((tmp_path / "cmp2" / "comparison.json").read_text())[
        "across_repeats"]["models"]}
    assert models == {f"ABMIL (encoder {encoder[:8]})": 2, f"ABMIL (encoder {encoder[:8]}) (split seed 1)": 1}, models
