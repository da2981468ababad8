"""A model trained like the quick start's, run over synthetic slides: its heat maps find the
metastases (slide AUC and lesion FROC beat a constant scorer and the same heat maps shuffled)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import CONFIGS
from hcdtf.slide import evaluate, grid as grid_lib, inference, synthetic


@pytest.fixture(scope="module")
def slide_model(tmp_path_factory):
    """ResNet18 from scratch on 1000 synthetic patches with the quick start's config; 2 epochs of
    batch 8 (200 steps: BatchNorm's moving statistics settle, which batch 32 does not in so few
    images) and no augmentation, to stay near a minute on 2 cores."""
    from hcdtf import data, synthetic as patches, train
    from hcdtf.config import load_config

    root = tmp_path_factory.mktemp("slide_model")
    patches.write_sample(root / "sample", n=1000, n_test=8, seed=0)
    data.build_dataset(str(root / "sample"), str(root / "tfds"), "kaggle")
    cfg = load_config([CONFIGS / "quickstart.yaml"], [
        f"data.data_dir={root / 'tfds'}", f"output_dir={root / 'run'}", "model.weights=none",
        "data.augment=false", "train.epochs=2", "train.batch_size=8"])
    train.train(cfg, log=lambda *_: None)
    return root / "run"


def _variant(pred, out, transform, annotations, reference):
    """The predictions with every heat map transformed, detections and scores made again."""
    shutil.copytree(pred, out)
    settings = inference.Settings()
    for path in sorted(out.glob(f"*/{inference.SUMMARY}")):
        s = json.loads(path.read_text())
        h = s["heatmap"]
        g = grid_lib.Grid(h["stride_model_px"], h["cell_level0"] / h["stride_model_px"], h["rows"], h["cols"])
        heat = transform(np.load(path.parent / "heatmap.npy"))
        thumb = np.full((h["rows"] * 4, h["cols"] * 4, 3), 255, np.uint8)
        s.update(inference.write_findings(path.parent, s["slide"], heat, g, thumb, settings, s["slide_mpp"]))
        path.write_text(json.dumps(s))
    return evaluate.evaluate_slides(out, annotations, reference, n_bootstrap=0, log=lambda *_: None)


def test_heat_maps_beat_a_constant_scorer_and_shuffled_maps(slide_model, tmp_path, capsys):
    slides = tmp_path / "slides"
    synthetic.write_slides(slides, n=4, seed=0, size=(1536, 1152), log=lambda *_: None)
    pred = tmp_path / "pred"
    result = inference.predict_slides(slide_model, [slides], pred, log=lambda *_: None)
    assert not result["failed"] and result["done"] == 4
    ann, ref = slides / "annotations", slides / "reference.csv"
    model = evaluate.evaluate_slides(pred, ann, ref, n_bootstrap=200, log=lambda *_: None)
    rng = np.random.default_rng(0)

    def shuffled(heat):
        out, tissue = heat.copy(), np.isfinite(heat)
        out[tissue] = rng.permutation(heat[tissue])
        return out

    def constant(heat):
        return np.where(np.isfinite(heat), np.float32(0.5), heat)

    runs = {"model": model,
            "shuffled": _variant(pred, tmp_path / "shuffled", shuffled, ann, ref),
            "constant": _variant(pred, tmp_path / "constant", constant, ann, ref)}
    with capsys.disabled():
        for name, m in runs.items():
            print(f"\n{name}: slide AUC {m['slide_auc']['auc']:.3f}, FROC {m['froc']['score']:.3f} "
                  f"({m['froc']['n_lesions']} lesions, {m['froc']['n_itc']} ITCs)", end="")
        print()
    assert model["froc"]["n_lesions"] >= 4
    assert model["slide_auc"]["auc"] > runs["constant"]["slide_auc"]["auc"] == 0.5
    assert model["slide_auc"]["auc"] >= runs["shuffled"]["slide_auc"]["auc"]
    assert model["froc"]["score"] > runs["shuffled"]["froc"]["score"]
    assert model["froc"]["score"] > runs["constant"]["froc"]["score"]
