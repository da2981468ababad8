"""`hcdtf mil predict|evaluate|export`: slide probabilities, attention maps and their evaluation.

``predict`` scores bags with a finished MIL run and writes ``predictions.csv`` (slide,score) and,
for bags that carry their grid (``cells`` + ``thumbnail``, as ``slide embed`` writes them), an
attention map per slide drawn like ``slide predict``'s ``overlay.png``. ``evaluate`` adds the
labels: slide AUC with DeLong's 95% CI (:mod:`hcdtf.evaluation.metrics`) and, given a ``slide predict``
folder of the same slides, DeLong's test of the MIL score against the heat map's slide score.
``export`` writes a SavedModel whose ``serving_default`` takes one bag (``features`` [n, d] float32,
``coords`` [n, 2] int64) and returns ``probability`` [] and ``attention`` [n] (plus the coords).
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable

import numpy as np

from hcdtf.mil import bags as bags_lib


def load_model(run):
    import keras

    import hcdtf.mil.model  # noqa: F401  registers AttentionPool
    from hcdtf.mil.train import MilRunError

    path = pathlib.Path(run) / "model.keras"
    if not (pathlib.Path(run) / "train_summary.json").is_file() or not path.is_file():
        raise MilRunError(f"RUN {str(run)!r}: no finished MIL run (train_summary.json, model.keras); "
                          "pass the --output-dir of a finished `hcdtf mil train`")
    return keras.saving.load_model(str(path), compile=False)


def attention_map(bag: dict) -> np.ndarray | None:
    """[rows, cols] grid of attention (NaN off tissue), from a bag's ``cells``; None without them."""
    grid = bag["attrs"].get("grid")
    if "cells" not in bag or not isinstance(grid, dict) or "attention" not in bag:
        return None
    heat = np.full((grid["rows"], grid["cols"]), np.nan, np.float32)
    a = bag["attention"]
    heat[bag["cells"][:, 0], bag["cells"][:, 1]] = a / max(float(a.max()), 1e-12)  # 1 = the most attended patch
    return heat


def write_attention_png(path: pathlib.Path, bag: dict, title: str) -> bool:
    """``overlay.png``-style attention map (attention / its maximum over the thumbnail); False if
    the bag has no grid or thumbnail to draw it on."""
    from matplotlib.figure import Figure

    from hcdtf.evaluation.plots import save_figure

    heat = attention_map(bag)
    if heat is None or "thumbnail" not in bag:
        return False
    per_cell = int(bag["attrs"]["grid"].get("thumbnail_px_per_cell", 4))
    thumb = bag["thumbnail"]
    h, w = thumb.shape[:2]
    rows, cols = heat.shape
    fig = Figure(figsize=(min(12.0, 2.0 + 6.0 * w / max(h, 1)), 6.0), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(thumb, extent=(0, w, h, 0), interpolation="antialiased")
    im = ax.imshow(np.ma.masked_invalid(heat), extent=(0, cols * per_cell, rows * per_cell, 0), cmap="jet",
                   vmin=0.0, vmax=1.0, alpha=0.45, interpolation="nearest")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.035, pad=0.02, label="attention / slide maximum")
    save_figure(fig, path)
    return True


def predict(run, inputs, output_dir=None, maps: bool = True, log: Callable[[str], None] = print) -> dict:
    """Scores every bag of ``inputs``; writes ``predictions.csv`` (slide,score,patches) and
    ``attention/<slide>.png`` + ``attention/<slide>.npy`` (weights in bag order) to ``output_dir``."""
    from hcdtf.atomic import atomic_output, write_text
    from hcdtf.slide.embed import read_bag

    model = load_model(run)
    dim = int(model.inputs[0].shape[-1])
    bags = bags_lib.list_bags(inputs)
    out = pathlib.Path(output_dir or pathlib.Path(run) / "predictions")
    out.mkdir(parents=True, exist_ok=True)
    rows, scores = ["slide,score,patches\n"], {}
    for slide, path in bags.items():
        bag = read_bag(path)
        if bag["features"].shape[1] != dim:
            raise bags_lib.BagError(f"{path}: {bag['features'].shape[1]} features per patch, the model takes {dim} "
                                    "(embed with the run's encoder)")
        o = model(bag["features"], training=False)
        p, a = float(np.asarray(o["probability"]).reshape(())), np.asarray(o["attention"], np.float32)
        scores[slide] = p
        rows.append(f"{slide},{p:.6f},{len(a)}\n")
        if maps:
            (out / "attention").mkdir(exist_ok=True)
            with atomic_output(out / "attention" / f"{slide}.npy") as tmp, open(tmp, "wb") as f:
                np.save(f, a)
            write_attention_png(out / "attention" / f"{slide}.png", {**bag, "attention": a},
                                f"{slide}: MIL probability {p:.3f}, attention of {len(a)} patches")
    write_text(out / "predictions.csv", "".join(rows))
    log(f"{len(bags)} slide(s) scored -> {out / 'predictions.csv'}")
    return {"output_dir": str(out), "scores": scores}


def _heatmap_scores(pred_dir: pathlib.Path) -> dict[str, float]:
    """slide id -> slide score of a ``slide predict`` folder (its slides.csv)."""
    from hcdtf.slide.inference import read_slide_rows

    path = pathlib.Path(pred_dir) / "slides.csv"
    try:
        rows = read_slide_rows(path)
    except OSError as e:
        raise bags_lib.BagError(f"--heatmap {pred_dir}: no slides.csv ({e.strerror}); pass a `slide predict` "
                                "--output-dir") from None
    return {r["slide"]: float(r["score"]) for r in rows if r.get("score") not in (None, "")}


def evaluate(run, inputs, labels, output_dir=None, heatmap_dir=None, maps: bool = True,
             log: Callable[[str], None] = print) -> dict:
    """Slide AUC (DeLong 95% CI) of the MIL run on the bags of ``inputs``; with ``heatmap_dir``, the
    heat-map slide scores of the same slides and DeLong's test of the difference. Writes
    ``mil_metrics.json`` and ``predictions.csv`` (``id,label,score``, one row per slide: the
    format ``hcdtf compare`` reads), and with ``heatmap_dir`` ``heatmap_predictions.csv`` (the
    heat-map scores, same format)."""
    from hcdtf.atomic import write_json, write_text
    from hcdtf.evaluation import metrics

    out = pathlib.Path(output_dir or pathlib.Path(run) / "eval")
    bags = bags_lib.list_bags(inputs)
    y = bags_lib.read_labels(labels, bags)
    result = predict(run, inputs, out, maps, log=lambda *_: None)
    slides = list(bags)
    ys = np.array([y[s] for s in slides])
    ps = np.array([result["scores"][s] for s in slides])
    n_pos, n_neg = int(ys.sum()), int(len(ys) - ys.sum())
    if min(n_pos, n_neg) < 1:
        raise bags_lib.BagError(f"--labels {labels}: the evaluated slides are all of one class; the AUC needs both")
    if min(n_pos, n_neg) < 2:  # DeLong's variance needs two of each: the AUC alone
        from sklearn.metrics import roc_auc_score

        auc, (lo, hi) = float(roc_auc_score(ys, ps)), (float("nan"), float("nan"))
        log(f"only {n_pos} Tumor and {n_neg} Normal slide(s): no confidence interval (DeLong needs 2 of each)")
    else:
        auc = metrics.delong_roc_variance(ys, ps)[0]
        lo, hi = metrics.delong_auc_ci(ys, ps)
    m = {"slides": len(slides), "tumour_slides": n_pos, "auc": auc,
         "auc_ci95": None if np.isnan(lo) else [lo, hi],
         "ci_method": "DeLong", "run": str(pathlib.Path(run).resolve()), "bags": [str(p) for p in ([inputs] if isinstance(inputs, (str, pathlib.Path)) else inputs)],
         "labels": str(labels)}
    rows = ["id,label,score\n"]  # hcdtf compare's format: `hcdtf compare RUN/eval SLIDE_EVAL` (DeLong)
    if heatmap_dir and np.isnan(lo):
        raise bags_lib.BagError(f"--heatmap: DeLong's test needs at least 2 Tumor and 2 Normal slides, "
                                f"got {n_pos} and {n_neg}")
    if heatmap_dir:
        heat = _heatmap_scores(heatmap_dir)
        missing = [s for s in slides if s not in heat]
        if missing:
            raise bags_lib.BagError(f"--heatmap {heatmap_dir}: no slide score for {len(missing)} bag(s), e.g. "
                                    f"{', '.join(missing[:3])}")
        hs = np.array([heat[s] for s in slides])
        test = metrics.delong_test(ys, ps, hs)
        m["heatmap"] = {"dir": str(heatmap_dir), "auc": test["auc_b"], "auc_ci95": list(metrics.delong_auc_ci(ys, hs)),
                        "delong": {k: test[k] for k in ("diff", "diff_ci95", "z", "p_value")},
                        "comparison": "MIL minus heat-map slide score (DeLong, two-sided)"}
    for n, s in enumerate(slides):
        rows.append(f"{s},{y[s]},{ps[n]:.6f}\n")
    write_text(out / "predictions.csv", "".join(rows))
    if heatmap_dir:
        write_text(out / "heatmap_predictions.csv", "id,label,score\n" + "".join(
            f"{s},{y[s]},{hs[n]:.6f}\n" for n, s in enumerate(slides)))
    write_json(out / "mil_metrics.json", m)
    line = f"MIL slide AUC {auc:.3f} " + ("" if np.isnan(lo) else f"(95% CI {lo:.3f}-{hi:.3f}, DeLong) ") + \
        f"on {len(slides)} slides"
    if heatmap_dir:
        h = m["heatmap"]
        line += (f"; heat-map score AUC {h['auc']:.3f}; difference {h['delong']['diff']:+.3f}, "
                 f"p = {h['delong']['p_value']:.3g}")
    log(line + f" -> {out / 'mil_metrics.json'}")
    return m


def export(run, export_dir, log: Callable[[str], None] = print) -> pathlib.Path:
    """SavedModel (atomic directory) with ``serving_default(features [n, d] float32, coords [n, 2]
    int64) -> {probability [], attention [n], coords [n, 2]}``."""
    import keras
    import tensorflow as tf

    from hcdtf.atomic import atomic_output, write_json

    model = load_model(run)
    dim = int(model.inputs[0].shape[-1])
    target = pathlib.Path(export_dir)
    if target.exists():
        raise bags_lib.BagError(f"--export-dir {target} exists; choose a new directory")

    def serve(features, coords):
        o = model(features, training=False)
        return {"probability": tf.reshape(o["probability"], []), "attention": o["attention"], "coords": coords}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve, input_signature=[
        tf.TensorSpec([None, dim], tf.float32, name="features"), tf.TensorSpec([None, 2], tf.int64, name="coords")])
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(target) as tmp:
        archive.write_out(str(tmp), verbose=False)
        write_json(pathlib.Path(tmp) / "hcdtf_metadata.json",
                   {"kind": "mil", "run": str(run), "features": dim,
                    "signature": "serving_default(features [n, d] float32, coords [n, 2] int64) -> probability [], "
                                 "attention [n], coords [n, 2]"})
    log(f"SavedModel -> {target}")
    return target
