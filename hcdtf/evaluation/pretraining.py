"""The second question of a comparison: is broader pretraining better than depth?

The paper asks whether a deeper ImageNet ResNet beats a shallower one (:func:`repeats.depth_verdict`).
Since 2024 the field asks which *pretrained encoder* to use: self-supervised ViTs trained on
millions of pathology slides (:mod:`hcdtf.models.encoders`). This module answers that question
from the same runs, per transfer strategy, with the same statistics:

- The contenders: the best pathology encoder and the best ResNet of that transfer strategy,
  each picked by its mean *validation* AUC (so the test set that judges them did not choose
  them; by test AUC, said in the text, only where a run recorded no validation AUC).
- The test: with repeats paired by seed and fold, the paired t-test over repeats
  (:func:`repeats.paired_t_test`, the depth verdict's test); with one run each, DeLong's test of
  the two trained networks (which cannot see run-to-run variation, and the text says so). Holm
  over the transfer strategies tested.
- Beside AUC: balanced accuracy at 0.5 (eva's PCam figure for frozen encoders), computed from
  the predictions; cost: GFLOPs per patch, training images/s, and the embedding pass of a frozen
  base (patches/s of the feature cache); and eva's published linear-probe balanced accuracy of
  the encoder (`EncoderSpec.eva_pcam`) as a reference column, which is context, not a
  like-for-like figure (other split, other head training, full-size weights).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from hcdtf.evaluation import repeats, runinfo
from hcdtf.evaluation.metrics import delong_test, holm_adjust
from hcdtf.models.encoders import specs as encoder_specs

__all__ = ["is_encoder_model", "pretraining_verdict", "render_markdown"]

EVA_REFERENCE = ("eva (kaiko-ai/eva) PCam leaderboard: frozen encoder + linear probe, balanced "
                 "accuracy; published figures, not ours")


def is_encoder_model(m: Mapping[str, Any]) -> bool:
    return m.get("kind") == "cnn" and bool(m.get("arch")) and encoder_specs.is_encoder(m["arch"])


def balanced_accuracy(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> float:
    pred = scores >= threshold
    pos, neg = labels == 1, labels == 0
    return float(0.5 * (pred[pos].mean() + (~pred[neg]).mean()))


def _run_extras(row: Mapping[str, Any]) -> dict[str, Any]:
    """What the comparison's rows lack, from the run's train_summary.json: validation AUC and
    the frozen base's embedding pass (patches, seconds)."""
    path = Path(row["input"])
    run_dir = path if path.is_dir() else path.parent
    from hcdtf.rundir import RunDir

    s = runinfo.read_json(RunDir(run_dir).summary_path) or {}
    n_embedded = (s.get("n_train") or 0) + (s.get("n_validation") or 0)
    seconds = s.get("feature_cache_s")
    return {"best_val_auc": s.get("best_val_auc"),
            "embed_per_s": n_embedded / seconds if s.get("feature_cache") and seconds and n_embedded else None}


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _table_rows(models, rows, runs, labels) -> list[dict[str, Any]]:
    """One entry per CNN model (ResNets and encoders) with AUC, balanced accuracy and cost."""
    scores = {r["name"]: run["scores"] for r, run in zip(rows, runs)}
    out = []
    for m in models:
        if m.get("kind") != "cnn":
            continue
        members = [r for r in rows if r.get("model") == m["name"]]
        extras = [_run_extras(r) for r in members]
        encoder = is_encoder_model(m)
        spec = encoder_specs.get_encoder(m["arch"]) if encoder else None
        out.append({
            "name": m["name"], "arch": m["arch"], "encoder": encoder, "transfer": m["transfer"],
            "n_repeats": m["n_repeats"], "auc_mean": m["auc_mean"], "auc_sd": m["auc_sd"],
            "aucs": m["aucs"],
            "balanced_accuracy": _mean(balanced_accuracy(labels, scores[r["name"]]) for r in members),
            "val_auc": _mean(e["best_val_auc"] for e in extras),
            "flops_per_image": m.get("flops_per_image"),
            "images_per_s": _mean(r.get("images_per_s") for r in members),
            "embed_per_s": _mean(e["embed_per_s"] for e in extras),
            "eva_pcam": spec.eva_pcam if spec else None,
            "runs": [r["name"] for r in members],
        })
    return out


def _pick(entries) -> tuple[dict, str]:
    """The best entry by mean validation AUC (test AUC when validation is not recorded)."""
    if all(e["val_auc"] is not None for e in entries):
        return max(entries, key=lambda e: e["val_auc"]), "validation"
    return max(entries, key=lambda e: e["auc_mean"]), "test"


def _auc(e: Mapping[str, Any]) -> str:
    sd = f" ± {e['auc_sd']:.4f} over {e['n_repeats']} runs" if e["n_repeats"] > 1 else ""
    return f"{e['auc_mean']:.4f}{sd}"


def _cost(enc: Mapping[str, Any], res: Mapping[str, Any]) -> str:
    parts = []
    if enc["flops_per_image"] and res["flops_per_image"]:
        parts.append(f"{enc['flops_per_image'] / 1e9:.3g} vs {res['flops_per_image'] / 1e9:.3g} GFLOPs per patch "
                     f"({enc['flops_per_image'] / res['flops_per_image']:.2g}x)")
    if enc["images_per_s"] and res["images_per_s"]:
        parts.append(f"training {enc['images_per_s']:.3g} vs {res['images_per_s']:.3g} images/s")
    if enc["embed_per_s"]:
        parts.append(f"{enc['arch']}'s embedding pass {enc['embed_per_s']:.3g} patches/s")
    return f" Cost: {'; '.join(parts)}." if parts else ""


def pretraining_verdict(models: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]],
                        runs: Sequence[Mapping[str, Any]], labels: np.ndarray,
                        alpha: float = 0.05) -> dict[str, Any]:
    """``{"text", "strategies", "table", "reference"}``: per transfer strategy, the best encoder
    against the best ResNet (see the module docstring), the table of every CNN model with AUC,
    balanced accuracy, cost and eva's figure; ``text`` is None when the runs hold no encoder
    and no ResNet of one transfer strategy."""
    table = _table_rows(models, rows, runs, labels)
    scores = {r["name"]: run["scores"] for r, run in zip(rows, runs)}
    strategies = []
    for transfer in dict.fromkeys(e["transfer"] for e in table):
        enc = [e for e in table if e["transfer"] == transfer and e["encoder"]]
        res = [e for e in table if e["transfer"] == transfer and not e["encoder"]]
        if not enc or not res:
            continue
        (best_e, chosen_by), (best_r, chosen_by_r) = _pick(enc), _pick(res)
        keys = [k for k in best_e["aucs"] if k in best_r["aucs"]]
        test = repeats.paired_t_test([best_e["aucs"][k] for k in keys], [best_r["aucs"][k] for k in keys], alpha)
        if test["p_value"] is not None:
            how = f"paired t-test over {test['n']} repeats"
            diff, p, ci = test["mean_diff"], test["p_value"], test["diff_ci"]
        elif len(best_e["runs"]) == 1 and len(best_r["runs"]) == 1:
            d = delong_test(labels, scores[best_e["runs"][0]], scores[best_r["runs"][0]])
            how = "DeLong test of the two trained networks (one run each: run-to-run variation unseen)"
            diff, p, ci = best_e["auc_mean"] - best_r["auc_mean"], d["p_value"], None
        else:
            how, diff, p, ci = "no test: the two models share fewer than 2 repeats", \
                best_e["auc_mean"] - best_r["auc_mean"], None, None
        strategies.append({"transfer": transfer, "encoder": best_e["name"], "resnet": best_r["name"],
                           "chosen_by": "validation" if "test" not in (chosen_by, chosen_by_r) else "test",
                           "test": how, "mean_diff": diff, "diff_ci": ci, "p_value": p, "p_value_holm": None,
                           "_e": best_e, "_r": best_r})
    tested = [s for s in strategies if s["p_value"] is not None]
    for s, adj in zip(tested, holm_adjust([s["p_value"] for s in tested])):
        s["p_value_holm"] = adj
    parts = []
    for s in strategies:
        e, r = s.pop("_e"), s.pop("_r")
        head = (f"**{s['transfer']}**: best pathology encoder {e['arch']} (test AUC {_auc(e)}"
                + (f", balanced accuracy {e['balanced_accuracy']:.4f}" if e["balanced_accuracy"] is not None else "")
                + f") vs best ResNet {r['arch']} ({_auc(r)}"
                + (f", balanced accuracy {r['balanced_accuracy']:.4f}" if r["balanced_accuracy"] is not None else "")
                + f"), each the best of its group by mean {s['chosen_by']} AUC.")
        if s["p_value_holm"] is None:
            call = f" Not testable ({s['test']}): these runs cannot say whether pretraining beats depth."
        else:
            ci = (f", unadjusted 95% CI {s['diff_ci'][0]:+.4f} to {s['diff_ci'][1]:+.4f}" if s["diff_ci"] else "")
            stats = (f"{s['test']}; difference {s['mean_diff']:+.4f} AUC{ci}; p = {s['p_value_holm']:.3g} "
                     f"Holm-adjusted over {len(tested)} transfer strateg{'ies' if len(tested) > 1 else 'y'}")
            if s["p_value_holm"] >= alpha:
                call = (f" Not distinguishable ({stats}): these runs do not show that broader pretraining "
                        "beats depth, nor the reverse.")
            elif s["mean_diff"] > 0:
                call = f" Broader pretraining beats depth ({stats})."
            else:
                call = f" Depth beats broader pretraining here ({stats})."
        if s["chosen_by"] == "test":
            call += " (Picked by test AUC: a run recorded no validation AUC, so the p-value is optimistic.)"
        eva = (f" eva's published PCam linear-probe balanced accuracy for {e['arch']}: {e['eva_pcam']:.3f} "
               "(full-size weights, eva's protocol: context only)." if e["eva_pcam"] is not None else "")
        parts.append(head + call + _cost(e, r) + eva)
    text = " ".join(parts) if parts else None
    for e in table:
        e["aucs"] = {f"seed {k[0]}" + (f", fold {k[1]}" if k[1] is not None else ""): v for k, v in e["aucs"].items()}
    return {"text": text, "strategies": strategies, "table": table, "reference": EVA_REFERENCE,
            "has_encoders": any(e["encoder"] for e in table)}


def _sig(value, scale=1.0) -> str:
    """Three significant digits: a tiny test encoder's 0.00214 GFLOPs and a ViT-g's 600 alike."""
    return "–" if value is None else f"{value * scale:.3g}"


def render_markdown(pretraining: Mapping[str, Any] | None) -> list[str]:
    """The report's section on pretraining vs depth (nothing when no encoder was compared)."""
    if not pretraining or not pretraining.get("has_encoders"):
        return []
    lines = ["## Pretraining vs depth", "",
             pretraining["text"] or ("No transfer strategy has both a pathology encoder and a ResNet, so "
                                     "these runs cannot say whether broader pretraining beats depth."), "",
             "Every CNN model: test AUC (mean ± sd over repeats), balanced accuracy at 0.5 (eva's PCam "
             "figure), cost, and the published reference (" + pretraining["reference"] + ").", ""]
    header = ["Model", "Transfer", "Runs", "Test AUC", "Balanced acc.", "GFLOPs/patch", "Train images/s",
              "Embedding patches/s", "eva PCam bal. acc. (published)"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for e in pretraining["table"]:
        auc = f"{e['auc_mean']:.4f}" + (f" ± {e['auc_sd']:.4f}" if e["n_repeats"] > 1 else "")
        eva = f"{e['eva_pcam']:.3f}" if e["eva_pcam"] is not None else ("–" if e["encoder"] else "n/a")
        lines.append("| " + " | ".join([
            e["name"], str(e["transfer"]), str(e["n_repeats"]), auc, ("–" if e["balanced_accuracy"] is None else f"{e['balanced_accuracy']:.4f}"),
            _sig(e["flops_per_image"], 1e-9), _sig(e["images_per_s"]), _sig(e["embed_per_s"]), eva]) + " |")
    return lines + [""]
