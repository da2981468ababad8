"""The quick start's ResNet, run over its synthetic demo slides: its heat maps find the
metastases (slide AUC and lesion FROC beat a constant scorer and the same heat maps shuffled)."""

from __future__ import annotations

import json
import shutil

import numpy as np

from hcdtf.slide import evaluate, grid as grid_lib, inference


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


def test_heat_maps_beat_a_constant_scorer_and_shuffled_maps(quickstart_dir, tmp_path, capsys):
    """The quick start's ResNet18 (1,000 synthetic patches from scratch, 3 epochs of batch 8, no
    augmentation: `QUICKSTART` in conftest) has scored its 4 demo slides; the same heat maps,
    shuffled within the tissue or made constant, are the references."""
    slides = quickstart_dir / "slides" / "slides"
    pred = shutil.copytree(quickstart_dir / "slides" / "predictions", tmp_path / "pred")  # the fixture stays as written
    assert len(list(pred.glob("*/heatmap.npy"))) == 4
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
