"""Figures of an evaluation (ROC, precision-recall, reliability, confusion matrix, calibration
before/after) and of a comparison (ROC overlay, AUC per architecture over repeats, AUC vs cost).

Every function takes plain data, draws on a standalone matplotlib ``Figure`` (Agg; no pyplot
global state, so nothing leaks across many plots and the caller's backend is left alone) and
writes the PNG atomically (:func:`hcdtf.atomic.atomic_open`).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from hcdtf.atomic import atomic_open
from hcdtf.evaluation.metrics import calibration_bins, expected_calibration_error

__all__ = [
    "plot_auc_by_arch",
    "plot_auc_vs_cost",
    "plot_confusion",
    "plot_pr",
    "plot_reliability",
    "plot_reliability_before_after",
    "plot_roc",
    "plot_roc_overlay",
    "save_figure",
]


def _new_figure(width: float = 4.2, height: float = 4.0, ncols: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    axes = [fig.add_subplot(1, ncols, k + 1) for k in range(ncols)]
    return fig, (axes[0] if ncols == 1 else axes)


def save_figure(fig, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` atomically, in the format of the path's suffix (e.g. .png)."""
    path = Path(path)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format=path.suffix.lstrip(".") or "png")
    return path


# --------------------------------------------------------------------------------------------
# One evaluation
# --------------------------------------------------------------------------------------------


def plot_roc(path: Path, y: np.ndarray, s: np.ndarray, auc: float, title: str) -> Path:
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, s)
    fig, ax = _new_figure()
    ax.plot(fpr, tpr, lw=1.5, label=f"AUC = {auc:.4f}")
    ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="grey", label="chance")
    ax.set(
        xlabel="False positive rate (1 - specificity)",
        ylabel="True positive rate (sensitivity)",
        xlim=(0, 1),
        ylim=(0, 1.01),
        title=title,
    )
    ax.legend(loc="lower right")
    return save_figure(fig, path)


def plot_pr(path: Path, y: np.ndarray, s: np.ndarray, title: str) -> Path:
    from sklearn.metrics import average_precision_score, precision_recall_curve

    precision, recall, _ = precision_recall_curve(y, s)
    ap = average_precision_score(y, s)
    fig, ax = _new_figure()
    ax.step(recall, precision, where="post", lw=1.5, label=f"AP = {ap:.4f}")
    ax.axhline(y.mean(), ls="--", lw=0.8, color="grey", label=f"prevalence = {y.mean():.3f}")
    ax.set(
        xlabel="Recall (sensitivity)", ylabel="Precision", xlim=(0, 1), ylim=(0, 1.01), title=title
    )
    ax.legend(loc="lower left")
    return save_figure(fig, path)


def _reliability_curve(ax, y, s, n_bins: int, label: str, color: str) -> None:
    mean_s, frac_y, counts = calibration_bins(y, s, n_bins)
    ece = expected_calibration_error(y, s, n_bins)
    ok = counts > 0
    ax.plot(mean_s[ok], frac_y[ok], marker="o", ms=4, lw=1.2, color=color,
            label=f"{label} (ECE = {ece:.4f})")


def _reliability_axes(ax, title: str) -> None:
    ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="grey", label="perfect calibration")
    ax.set(
        xlabel="Mean predicted probability",
        ylabel="Fraction positive",
        xlim=(0, 1),
        ylim=(0, 1.01),
        title=title,
    )


def plot_reliability(path: Path, y: np.ndarray, s: np.ndarray, title: str, n_bins: int = 15) -> Path:
    fig, ax = _new_figure()
    _reliability_axes(ax, title)
    _reliability_curve(ax, y, s, n_bins, "model", "C0")
    # Bin populations on a secondary axis: a gap in a sparse bin means little.
    _, _, counts = calibration_bins(y, s, n_bins)
    ax2 = ax.twinx()
    edges = np.linspace(0, 1, n_bins + 1)
    ax2.bar(edges[:-1], counts, width=1.0 / n_bins, align="edge", alpha=0.15, color="C0")
    ax2.set_ylabel("examples per bin")
    ax.set_zorder(ax2.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.legend(loc="upper left")
    return save_figure(fig, path)


def plot_reliability_before_after(
    path: Path,
    y: np.ndarray,
    before: np.ndarray,
    after: np.ndarray,
    title: str = "Calibration",
    temperature: float | None = None,
    n_bins: int = 15,
) -> Path:
    """Reliability diagram of the same examples before and after calibration (left) and the
    distribution of their scores (right, log counts): temperature scaling moves the scores but
    keeps their order."""
    fig, (ax, hist) = _new_figure(8.4, 4.0, ncols=2)
    _reliability_axes(ax, title)
    _reliability_curve(ax, y, before, n_bins, "before", "C0")
    t = f", T = {temperature:.3g}" if temperature is not None else ""
    _reliability_curve(ax, y, after, n_bins, f"after{t}", "C1")
    ax.legend(loc="upper left", fontsize="small")
    edges = np.linspace(0, 1, n_bins + 1)
    hist.hist(before, bins=edges, histtype="step", lw=1.3, color="C0", label="before")
    hist.hist(after, bins=edges, histtype="step", lw=1.3, color="C1", label="after")
    hist.set_yscale("log")
    hist.set(xlabel="Predicted probability", ylabel="examples per bin", xlim=(0, 1),
             title="Score distribution")
    hist.legend(loc="upper center", fontsize="small")
    return save_figure(fig, path)


def plot_confusion(path: Path, y: np.ndarray, s: np.ndarray, threshold: float, title: str) -> Path:
    """Confusion matrix at ``threshold`` (positive when score >= threshold), counts and shares."""
    pred = s >= threshold
    mat = np.array([[np.sum(~pred & (y == 0)), np.sum(pred & (y == 0))],
                    [np.sum(~pred & (y == 1)), np.sum(pred & (y == 1))]], dtype=np.int64)
    fig, ax = _new_figure(3.6, 3.4)
    ax.imshow(mat, cmap="Blues")
    total = max(int(mat.sum()), 1)
    for (i, j), v in np.ndenumerate(mat):
        color = "white" if v > mat.max() / 2 else "black"
        ax.text(j, i, f"{v}\n({v / total:.1%})", ha="center", va="center", color=color)
    ax.set_xticks([0, 1], labels=["pred 0", "pred 1"])
    ax.set_yticks([0, 1], labels=["true 0", "true 1"])
    ax.set_title(f"{title}\n(threshold {threshold:.3g})")
    return save_figure(fig, path)


# --------------------------------------------------------------------------------------------
# A comparison of models
# --------------------------------------------------------------------------------------------


def plot_roc_overlay(
    path: Path, labels: np.ndarray, curves: Sequence[Mapping[str, Any]], title: str
) -> Path:
    """One ROC curve per dict of ``curves`` on the same examples: ``label``, ``scores`` and,
    optionally, ``color`` and ``linestyle`` (e.g. one colour per model, one style per repeat)."""
    from sklearn.metrics import roc_curve

    fig, ax = _new_figure(5.2, 5.0)
    for c in curves:
        fpr, tpr, _ = roc_curve(labels, c["scores"])
        ax.plot(fpr, tpr, lw=1.3, label=c["label"], color=c.get("color"),
                ls=c.get("linestyle", "-"))
    ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="grey")
    ax.set(xlabel="False positive rate", ylabel="True positive rate", xlim=(0, 1), ylim=(0, 1.01),
           title=title)
    ax.legend(loc="lower right", fontsize="x-small" if len(curves) > 6 else "small")
    return save_figure(fig, path)


def _spread(model: Mapping[str, Any]) -> tuple[float, float]:
    """(below, above) the mean: the sd over repeats, or a single run's 95% CI."""
    if model["n_repeats"] >= 2:
        return model["auc_sd"], model["auc_sd"]
    ci = model.get("auc_ci95")
    if ci and all(c is not None for c in ci):
        return max(model["auc_mean"] - ci[0], 0.0), max(ci[1] - model["auc_mean"], 0.0)
    return 0.0, 0.0


def _draw_settings(ax, deep: Sequence[Mapping[str, Any]]) -> int:
    """One line per setting through its models' means (+- sd or CI), runs as hollow circles.
    Returns the number of settings drawn (the colours used)."""
    groups = list(dict.fromkeys(m["family"] for m in deep))
    markers = itertools.cycle("osD^v<>")
    for k, group in enumerate(groups):
        members = sorted((m for m in deep if m["family"] == group), key=lambda m: m["depth"])
        # Settings side by side at each depth (a few percent apart on the log axis).
        shift = 1.0 + 0.1 * (k - (len(groups) - 1) / 2)
        xs = [m["depth"] * shift for m in members]
        n = max(m["n_repeats"] for m in members)
        ax.errorbar(xs, [m["auc_mean"] for m in members],
                    yerr=np.array([_spread(m) for m in members]).T, marker=next(markers),
                    capsize=3, lw=1.2, color=f"C{k}",
                    label=f"{group}: mean ± sd of {n}" if n > 1 else f"{group}: 1 run, 95% CI")
        for x, m in zip(xs, members):  # the runs, just right of their mean
            ax.plot([x * 1.04] * len(m["aucs"]), m["aucs"], ls="none", marker="o", ms=4,
                    mfc="none", alpha=0.8, color=f"C{k}", zorder=3)
    return len(groups)


def _draw_references(ax, flat, paper_points, first_colour: int) -> list[int]:
    """Baselines as dashed lines with a band, the paper's figures as stars / dotted lines.
    Returns the paper's depths (for the ticks)."""
    for k, m in enumerate(flat):
        color = f"C{first_colour + k}"
        lo, hi = _spread(m)
        ax.axhline(m["auc_mean"], ls="--", lw=1.0, color=color, label=f"{m['name']} (baseline)")
        ax.axhspan(m["auc_mean"] - lo, m["auc_mean"] + hi, color=color, alpha=0.12)
    paper_deep = [p for p in paper_points if p["depth"] is not None]
    if paper_deep:
        ax.plot([p["depth"] for p in paper_deep], [p["auc"] for p in paper_deep], ls="none",
                marker="*", ms=9, mfc="none", color="black", label="Wang et al. (paper)")
    for p in paper_points:
        if p["depth"] is None:
            ax.axhline(p["auc"], ls=":", lw=1.0, color="black", label=f"{p['display']} (paper)")
    return [p["depth"] for p in paper_deep]


def plot_auc_by_arch(
    path: Path,
    models: Sequence[Mapping[str, Any]],
    paper_points: Sequence[Mapping[str, Any]] = (),
) -> Path:
    """Test AUC per architecture: each model's mean with +- sd over repeats (a single run shows
    its 95% CI instead) and its runs as circles, one line per setting (``family``); baselines
    and the paper's figures for reference.

    ``models``: dicts with ``name``, ``family``, ``depth`` (None for a baseline), ``aucs`` (one
    per repeat), ``n_repeats``, ``auc_mean``, ``auc_sd`` and ``auc_ci95``. ``paper_points``:
    dicts with ``display``, ``auc`` and ``depth`` (None: drawn as a horizontal line).
    """
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, ax = _new_figure(6.0, 4.6)
    deep = [m for m in models if m["depth"] is not None]
    n_settings = _draw_settings(ax, deep)
    paper_depths = _draw_references(ax, [m for m in models if m["depth"] is None], paper_points,
                                    n_settings)
    depths = sorted({m["depth"] for m in deep} | set(paper_depths))
    ax.set_xscale("log")
    if depths:
        ax.set_xticks(depths)
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set(xlabel="ResNet depth (layers, log scale)", ylabel="Test ROC AUC (circles: runs)",
           title="The deeper, the better?")
    if not models:
        ax.text(0.5, 0.5, "no model with a recorded depth", transform=ax.transAxes, ha="center")
    ax.legend(loc="best", fontsize="x-small")
    return save_figure(fig, path)


def plot_auc_vs_cost(path: Path, models: Sequence[Mapping[str, Any]]) -> Path:
    """Mean test AUC (+- sd over repeats, or a single run's 95% CI) against mean training time.

    ``models`` as for :func:`plot_auc_by_arch`, with ``wall_time_s_mean`` set (> 0).
    """
    fig, ax = _new_figure(5.5, 4.2)
    for k, m in enumerate(models):
        ax.errorbar([m["wall_time_s_mean"]], [m["auc_mean"]], yerr=np.array([_spread(m)]).T,
                    marker="o", capsize=3, color=f"C{k % 10}", label=m["name"])
    if models:
        times = [m["wall_time_s_mean"] for m in models]
        # A log axis only when the times span more than a decade (freeze_base vs fine_tune).
        if max(times) / min(times) > 10:
            ax.set_xscale("log")
        ax.legend(loc="best", fontsize="x-small" if len(models) > 6 else "small")
    else:
        ax.text(0.5, 0.5, "no training time recorded", transform=ax.transAxes, ha="center")
    ax.set(xlabel="Training wall time per run (s)", ylabel="Test ROC AUC",
           title="Accuracy vs training cost")
    return save_figure(fig, path)
