"""The slide-level report: ``slide_metrics.json``, ``slide_report.md``, the FROC and slide ROC plots."""

from __future__ import annotations

import pathlib

import numpy as np


def plot_froc(path: pathlib.Path, avg_fp: list, sens: list, rates: list, score: float | None) -> None:
    from matplotlib.figure import Figure

    from hcdtf.evaluation.plots import save_figure

    fig = Figure(figsize=(4.8, 4.0), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    ax.plot(avg_fp, sens, lw=1.5, marker=".", ms=4, label="FROC" if score is None else f"FROC score {score:.3f}")
    for r in rates:
        ax.axvline(r, color="grey", lw=0.5, ls=":")
    ax.set_xscale("symlog", linthresh=0.25)
    ax.set(xlabel="Average false positives per slide", ylabel="Lesion sensitivity", ylim=(0, 1.02),
           xlim=(0, max(8.5, max(avg_fp) if len(avg_fp) else 0)), title="Lesion-level FROC (Camelyon16)")
    ax.legend(loc="lower right")
    save_figure(fig, path)


def _fmt(x, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def markdown(m: dict) -> str:
    auc, froc = m["slide_auc"], m["froc"]
    ci = auc.get("ci95")
    lines = [
        "# Slide-level evaluation", "",
        f"Predictions: `{m['prediction_dir']}`; annotations: `{m['annotations']}`"
        + (f"; reference: `{m['reference']}`" if m.get("reference") else ""), "",
        "| figure | value |", "|---|---|",
        f"| slide AUC (tumour vs normal) | {_fmt(auc['auc'])}"
        + (f" (95% CI {ci[0]:.3f}-{ci[1]:.3f}, {auc['n_bootstrap']} bootstrap resamples)" if ci else "") + " |",
        f"| slides (tumour / normal) | {auc['n_tumour']} / {auc['n_normal']} |",
        f"| FROC score (mean sensitivity at 1/4 .. 8 FPs per slide) | {_fmt(froc['score'])} |",
        f"| lesions to find / ITCs (not counted) | {froc['n_lesions']} / {froc['n_itc']} |", "",
    ]
    if froc.get("sensitivity_at"):
        rates = list(froc["sensitivity_at"])
        lines += ["| FPs per slide | " + " | ".join(rates) + " |", "|---" * (len(rates) + 1) + "|",
                  "| sensitivity | " + " | ".join(f"{froc['sensitivity_at'][r]:.3f}" for r in rates) + " |", ""]
    lines += ["![FROC](froc.png)" + (" ![slide ROC](slide_roc.png)" if auc["auc"] is not None else ""), "",
              "| slide | class | score | lesions | ITCs | lesions hit | false positives |", "|---|---|---:|---:|---:|---:|---:|"]
    for s in m["slides"]:
        lines.append(f"| {s['slide']} | {'tumour' if s['label'] else 'normal'} | {s['score']:.4f} | {s['lesions']} | "
                     f"{s['itc']} | {'-' if s['lesions_hit'] is None else s['lesions_hit']} | "
                     f"{'-' if s['false_positives'] is None else s['false_positives']} |")
    if m.get("failed"):
        lines += ["", "Not evaluated:", *[f"- {f}" for f in m["failed"]]]
    if m.get("reference_without_prediction"):
        lines += ["", "Named in the reference, not predicted (not evaluated): "
                  + ", ".join(m["reference_without_prediction"])]
    lines += ["", "Protocol: Camelyon16 (evaluation mask at level 5, tumour dilated by 75 um, ITCs under "
              "275 um excluded); see `hcdtf/slide/camelyon.py`.", ""]
    return "\n".join(lines)


def write(out: pathlib.Path, metrics: dict, truths: list) -> None:
    """Every file of the report, the metrics JSON last."""
    from hcdtf.atomic import write_json, write_text
    from hcdtf.evaluation.plots import plot_roc

    out.mkdir(parents=True, exist_ok=True)
    froc = metrics["froc"]
    plot_froc(out / "froc.png", froc["curve"]["avg_fp"], froc["curve"]["sensitivity"], metrics["fp_rates"],
              froc["score"])
    if metrics["slide_auc"]["auc"] is not None:
        plot_roc(out / "slide_roc.png", np.array([t.label for t in truths]), np.array([t.score for t in truths]),
                 metrics["slide_auc"]["auc"], "Slide-level ROC")
    write_text(out / "slide_report.md", markdown(metrics))
    write_json(out / "slide_metrics.json", metrics)
