"""Compare trained models on the same test examples: tables, paired DeLong tests and figures.

:func:`compare` takes run directories (or bare ``predictions.csv`` files), checks that every model
was scored on exactly the same examples with the same labels, and writes ``comparison.json``,
``report.md`` and three figures (ROC overlay, AUC vs depth, AUC vs training cost).

Statistics:
  - AUC confidence intervals: stratified percentile bootstrap
    (:func:`hcdtf.metrics.bootstrap_auc_ci`), same resample count and seed for every model.
  - Pairwise differences: DeLong's test for correlated ROC AUCs (DeLong, DeLong & Clarke-Pearson
    1988, Biometrics 44:837-845), fast midrank algorithm of Sun & Xu (2014), IEEE Signal
    Processing Letters 21(11):1389-1393. The models are paired on the same examples, so the
    covariance term matters: an unpaired comparison of two CIs would be far too conservative.
    Holm's step-down adjustment (S. Holm 1979, Scand. J. Statist. 6:65-70) is reported next to
    the raw p-values because a report over k models makes k(k-1)/2 comparisons.

Published reference figures (Wang et al. 2023, "ResNet for Histopathologic Cancer Detection, the
Deeper, the Better?") are listed beside ours in the report. The paper does not publish its
split, preprocessing or number of epochs, so they are context, not a like-for-like comparison.

Usable from the command line: ``python -m hcdtf.report RUN_DIR [RUN_DIR ...] --output-dir DIR``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hcdtf.artifacts import read_predictions
from hcdtf.atomic import write_json
from hcdtf.metrics import (
    bootstrap_auc_ci,
    delong_auc_ci,
    delong_roc_variance,
    delong_test,
)

__all__ = ["PAPER_REFERENCE", "PAPER_RESULTS", "compare", "main"]

PAPER_REFERENCE = (
    'Wang et al. (2023), "ResNet for Histopathologic Cancer Detection, the Deeper, the Better?"'
)

#: Test AUCs published by Wang et al. (2023), keyed by our ``model.arch`` names.
PAPER_RESULTS: dict[str, dict[str, Any]] = {
    "ResNet34": {"display": "ResNet-34", "auc": 0.992, "depth": 34},
    "ResNet152": {"display": "ResNet-152", "auc": 0.989, "depth": 152},
    "LogisticRegression": {"display": "Logistic regression", "auc": 0.775, "depth": None},
}

PAPER_NOTE = (
    "The paper does not publish its train/validation/test split, preprocessing or number of "
    "epochs, so its figures are not directly comparable with ours; they are listed for context."
)

MISSING = "–"  # shown in the Markdown tables for fields a run did not record

_SUMMARY_FIELDS = (
    "arch",
    "strategy",
    "depth",
    "params_total",
    "params_trainable",
    "wall_time_s",
    "images_per_s",
    "flops_per_image",
)

_FIGURES = {
    "roc_overlay": "roc_overlay.png",
    "auc_vs_depth": "auc_vs_depth.png",
    "auc_vs_cost": "auc_vs_cost.png",
}


# --------------------------------------------------------------------------------------------
# Loading and aligning the inputs
# --------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _resolve_input(item: str | Path) -> dict[str, Any]:
    """Locate the predictions file and the optional metadata of one input."""
    path = Path(item)
    if path.is_dir():
        pred = path / "predictions.csv"
        if not pred.is_file():
            others = sorted(p.name for p in path.glob("*predictions*.csv"))
            hint = f"; found {others}, pass one of those files instead" if others else ""
            raise FileNotFoundError(f"run directory {path} has no predictions.csv{hint}")
        run_dir, prefix = path, ""
    elif path.is_file():
        pred, run_dir = path, path.parent
        # A prefixed file such as test_predictions.csv belongs with test_metrics.json.
        prefix = (
            path.name[: -len("predictions.csv")] if path.name.endswith("predictions.csv") else None
        )
    else:
        raise FileNotFoundError(
            f"input not found: {path} (expected a run directory or a predictions.csv)"
        )
    metrics = _read_json(run_dir / f"{prefix}metrics.json") if prefix is not None else None
    summary = _read_json(run_dir / "train_summary.json")
    return {
        "input": str(path),
        "predictions_path": pred,
        "default_name": run_dir.resolve().name,
        "metrics_json": metrics,
        "train_summary": summary,
    }


def _unique_names(names: list[str]) -> list[str]:
    """Disambiguate repeated names ('a', 'a' -> 'a', 'a (2)'): tables and legends stay readable."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return out


def _examples(values: Sequence[Any], k: int = 5) -> str:
    shown = ", ".join(repr(str(v)) for v in list(values)[:k])
    return f"{shown}, ..." if len(values) > k else shown


def _align(models: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Sort every model's predictions by id; check that ids and labels agree across models.

    Returns the common (sorted) ids and labels; each model gets ``scores`` in that order.
    """
    for mdl in models:
        ids = mdl["ids"]
        uniq, counts = np.unique(ids, return_counts=True)
        if uniq.size != ids.size:
            dup = uniq[counts > 1]
            raise ValueError(
                f"input '{mdl['name']}' ({mdl['predictions_path']}) has {dup.size} duplicated ids "
                f"(e.g. {_examples(dup)}); ids must be unique to pair the models"
            )
    ref = models[0]
    ref_ids = np.sort(ref["ids"])
    problems = []
    for mdl in models[1:]:
        if mdl["ids"].size == ref_ids.size and np.array_equal(np.sort(mdl["ids"]), ref_ids):
            continue
        missing = np.setdiff1d(ref_ids, mdl["ids"], assume_unique=True)
        extra = np.setdiff1d(mdl["ids"], ref_ids, assume_unique=True)
        parts = []
        if missing.size:
            parts.append(f"{missing.size} ids missing (e.g. {_examples(missing)})")
        if extra.size:
            parts.append(f"{extra.size} extra ids (e.g. {_examples(extra)})")
        problems.append(
            f"  '{mdl['name']}' ({mdl['predictions_path']}, {mdl['ids'].size} ids) vs "
            f"'{ref['name']}' ({ref['predictions_path']}, {ref_ids.size} ids): " + "; ".join(parts)
        )
    if problems:
        raise ValueError(
            "all inputs must be scored on the same example ids; these differ from the first input:\n"
            + "\n".join(problems)
        )
    labels = None
    for mdl in models:
        order = np.argsort(mdl["ids"], kind="stable")
        mdl["scores"] = mdl["scores"][order]
        lab = mdl["labels"][order]
        if labels is None:
            labels = lab
            continue
        bad = lab != labels
        if bad.any():
            raise ValueError(
                f"labels disagree between '{ref['name']}' ({ref['predictions_path']}) and "
                f"'{mdl['name']}' ({mdl['predictions_path']}) for {int(bad.sum())} of {lab.size} "
                f"ids (e.g. {_examples(ref_ids[bad])}); were they built from different label files?"
            )
    assert labels is not None
    return ref_ids, labels


# --------------------------------------------------------------------------------------------
# Formatting helpers
# --------------------------------------------------------------------------------------------


def _number(value: Any, key: str, mdl: dict[str, Any]) -> float | int | None:
    """A numeric train_summary field, or None (shown as –) with a warning if it is not one."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            warnings.warn(
                f"{mdl['name']}: train_summary.json field {key}={value!r} is not a number; ignored",
                stacklevel=3,
            )
            return None
    return value if math.isfinite(value) else None


def _arch_key(arch: Any) -> str:
    """'ResNet-34', 'resnet34', 'ResNet34' -> 'resnet34': lets our arch names meet the paper's."""
    return re.sub(r"[^a-z0-9]", "", str(arch).lower())


def _depth_from_arch(arch: Any) -> int | None:
    match = re.fullmatch(r"resnet(\d+)(v\d)?", _arch_key(arch)) if arch else None
    return int(match.group(1)) if match else None


def _is_baseline(row: dict[str, Any]) -> bool:
    return row.get("strategy") == "baseline" or "logistic" in _arch_key(row.get("arch") or "")


def _fmt(value: Any, kind: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return MISSING
    if kind == "auc":
        return f"{value:.4f}"
    if kind == "params":
        return f"{value / 1e6:.2f} M" if value >= 1e5 else f"{int(value):,}"
    if kind == "time":
        v = float(value)
        if v < 120:
            return f"{v:.0f} s"
        if v < 7200:
            return f"{v / 60:.1f} min"
        return f"{v / 3600:.2f} h"
    if kind == "rate":
        return f"{value:,.0f}"
    if kind == "flops":
        return f"{value / 1e9:.2f} G"
    if kind == "p":
        return (
            "< 1e-300" if value < 1e-300 else (f"{value:.2e}" if value < 1e-3 else f"{value:.4f}")
        )
    if kind == "signed":
        return f"{value:+.4f}"
    if kind == "z":
        return f"{value:.3f}" if math.isfinite(value) else ("+inf" if value > 0 else "-inf")
    return str(value)


def _fmt_ci(ci: Sequence[float] | None, kind: str = "auc") -> str:
    if not ci or any(c is None or not math.isfinite(c) for c in ci):
        return MISSING
    return f"[{_fmt(ci[0], kind)}, {_fmt(ci[1], kind)}]"


def _holm(p_values: list[float]) -> list[float]:
    """Holm-adjusted p-values (step-down, monotone, capped at 1)."""
    k = len(p_values)
    order = sorted(range(k), key=lambda i: p_values[i])
    adjusted = [0.0] * k
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (k - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


# --------------------------------------------------------------------------------------------
# Figures (matplotlib Figure objects on Agg, no pyplot global state)
# --------------------------------------------------------------------------------------------


def _new_figure(width: float = 5.5, height: float = 4.2):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    return fig, fig.add_subplot(1, 1, 1)


def _plot_roc_overlay(
    path: Path, labels: np.ndarray, models: list[dict[str, Any]], rows: list[dict]
) -> None:
    from sklearn.metrics import roc_curve

    fig, ax = _new_figure(5.2, 5.0)
    for mdl, row in zip(models, rows):
        fpr, tpr, _ = roc_curve(labels, mdl["scores"])
        ax.plot(
            fpr,
            tpr,
            lw=1.3,
            label=f"{row['name']}: AUC {row['auc']:.4f} {_fmt_ci(row['auc_ci95'])}",
        )
    ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="grey")
    ax.set(
        xlabel="False positive rate",
        ylabel="True positive rate",
        xlim=(0, 1),
        ylim=(0, 1.01),
        title="ROC curves on the common test examples",
    )
    ax.legend(loc="lower right", fontsize="small")
    fig.savefig(path)


def _yerr(rows: list[dict[str, Any]]) -> np.ndarray:
    """Asymmetric error bars from the CIs (0 where a CI is missing)."""
    lo = [r["auc"] - r["auc_ci95"][0] if r["auc_ci95"] else 0.0 for r in rows]
    hi = [r["auc_ci95"][1] - r["auc"] if r["auc_ci95"] else 0.0 for r in rows]
    return np.clip(np.array([lo, hi], dtype=float), 0.0, None)


def _plot_auc_vs_depth(path: Path, rows: list[dict[str, Any]]) -> list[str]:
    """AUC vs ResNet depth, one line per strategy; baselines as horizontal lines.

    Returns the names of models that could not be placed (no depth and not a baseline).
    """
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, ax = _new_figure()
    deep = [r for r in rows if r["depth"] is not None]
    baselines = [r for r in rows if r["depth"] is None and _is_baseline(r)]
    skipped = [r["name"] for r in rows if r["depth"] is None and not _is_baseline(r)]
    markers = itertools.cycle("osD^v<>")
    strategies = sorted({str(r["strategy"] or "unknown") for r in deep})
    for k, strategy in enumerate(strategies):
        group = sorted(
            (r for r in deep if str(r["strategy"] or "unknown") == strategy),
            key=lambda r: r["depth"],
        )
        ax.errorbar(
            [r["depth"] for r in group],
            [r["auc"] for r in group],
            yerr=_yerr(group),
            marker=next(markers),
            capsize=3,
            lw=1.2,
            color=f"C{k}",
            label=strategy,
        )
    for k, r in enumerate(baselines):
        color = f"C{len(strategies) + k}"
        ax.axhline(r["auc"], ls="--", lw=1.0, color=color, label=f"{r['name']} (baseline)")
        if r["auc_ci95"]:
            ax.axhspan(r["auc_ci95"][0], r["auc_ci95"][1], color=color, alpha=0.12)
    # The paper's ResNet points, hollow, for orientation (not a like-for-like comparison).
    paper = [v for v in PAPER_RESULTS.values() if v["depth"] is not None]
    ax.plot(
        [v["depth"] for v in paper],
        [v["auc"] for v in paper],
        ls="none",
        marker="*",
        ms=9,
        mfc="none",
        color="black",
        label="Wang et al. 2023 (paper)",
    )
    for v in PAPER_RESULTS.values():
        if v["depth"] is None:
            ax.axhline(v["auc"], ls=":", lw=1.0, color="black", label=f"{v['display']} (paper)")
    depths = sorted({r["depth"] for r in deep} | {v["depth"] for v in paper})
    ax.set_xscale("log")
    ax.set_xticks(depths)
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set(
        xlabel="ResNet depth (layers, log scale)",
        ylabel="Test ROC AUC (95% CI)",
        title="The deeper, the better?",
    )
    if not deep and not baselines:
        ax.text(0.5, 0.5, "no model with a recorded depth", transform=ax.transAxes, ha="center")
    ax.legend(loc="best", fontsize="small")
    fig.savefig(path)
    return skipped


def _plot_auc_vs_cost(path: Path, rows: list[dict[str, Any]]) -> list[str]:
    """AUC vs training wall time. Returns the names of models without a recorded time."""
    fig, ax = _new_figure()
    timed = [r for r in rows if r["wall_time_s"] is not None and r["wall_time_s"] > 0]
    skipped = [r["name"] for r in rows if r not in timed]
    for k, r in enumerate(timed):
        ax.errorbar(
            [r["wall_time_s"]],
            [r["auc"]],
            yerr=_yerr([r]),
            marker="o",
            capsize=3,
            color=f"C{k}",
            label=r["name"],
        )
    if timed:
        times = [r["wall_time_s"] for r in timed]
        # A log axis only when the times span more than a decade (freeze_base vs fine_tune).
        if max(times) / min(times) > 10:
            ax.set_xscale("log")
        ax.legend(loc="best", fontsize="small")
    else:
        ax.text(0.5, 0.5, "no training time recorded", transform=ax.transAxes, ha="center")
    ax.set(
        xlabel="Training wall time (s)",
        ylabel="Test ROC AUC (95% CI)",
        title="Accuracy vs training cost",
    )
    fig.savefig(path)
    return skipped


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _markdown(result: dict[str, Any]) -> str:
    rows = result["models"]
    lines = [
        "# Model comparison",
        "",
        f"{len(rows)} models scored on the same {result['n_examples']:,} test examples "
        f"({result['n_positive']:,} positive, {result['n_examples'] - result['n_positive']:,} negative). "
        f"AUC 95% CIs: stratified percentile bootstrap, {result['n_bootstrap']} resamples, seed {result['seed']}"
        + (
            " (DeLong normal intervals because n_bootstrap = 0)."
            if result["n_bootstrap"] == 0
            else "."
        ),
        "Accuracy at threshold 0.5 (predict positive when score >= 0.5).",
        "",
        "## Models",
        "",
        "| Model | Arch | Strategy | Depth | Params (total) | Params (trainable) | Train time "
        "| Images/s | GFLOPs/image | AUC | AUC 95% CI | Accuracy |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        lines.append(
            "| "
            + " | ".join(
                [
                    r["name"],
                    _fmt(r["arch"]),
                    _fmt(r["strategy"]),
                    _fmt(r["depth"]),
                    _fmt(r["params_total"], "params"),
                    _fmt(r["params_trainable"], "params"),
                    _fmt(r["wall_time_s"], "time"),
                    _fmt(r["images_per_s"], "rate"),
                    _fmt(r["flops_per_image"], "flops"),
                    _fmt(r["auc"], "auc"),
                    _fmt_ci(r["auc_ci95"]),
                    _fmt(r["accuracy"], "auc"),
                ]
            )
            + " |"
        )
    lines += [
        "",
        "## Pairwise DeLong tests",
        "",
        "Two-sided DeLong test of equal AUCs on the paired examples (DeLong et al. 1988; fast "
        "algorithm of Sun & Xu 2014). ΔAUC = AUC(A) − AUC(B) with its 95% normal CI; "
        "p (Holm) is adjusted for the number of comparisons.",
        "",
    ]
    if result["pairwise"]:
        lines += [
            "| A | B | AUC A | AUC B | ΔAUC | ΔAUC 95% CI | z | p | p (Holm) |",
            "|---|---|---:|---:|---:|---|---:|---:|---:|",
        ]
        for p in result["pairwise"]:
            lines.append(
                f"| {p['a']} | {p['b']} | {_fmt(p['auc_a'], 'auc')} | {_fmt(p['auc_b'], 'auc')} | "
                f"{_fmt(p['diff'], 'signed')} | {_fmt_ci(p['diff_ci95'], 'signed')} | {_fmt(p['z'], 'z')} | "
                f"{_fmt(p['p_value'], 'p')} | {_fmt(p['p_value_holm'], 'p')} |"
            )
    else:
        lines.append("(only one model: nothing to compare)")
    lines += [
        "",
        "## Published results",
        "",
        f"Test AUCs reported by {PAPER_REFERENCE}, beside ours for the same architecture. {PAPER_NOTE}",
        "",
        "| Model | Paper AUC | Our AUC (model: AUC [95% CI]) |",
        "|---|---:|---|",
    ]
    for arch, ref in PAPER_RESULTS.items():
        ours = [r for r in rows if r["arch"] and _arch_key(r["arch"]) == _arch_key(arch)]
        cell = "; ".join(
            f"{r['name']}: {_fmt(r['auc'], 'auc')} {_fmt_ci(r['auc_ci95'])}" for r in ours
        )
        lines.append(f"| {ref['display']} | {ref['auc']:.3f} | {cell or MISSING} |")
    lines += ["", "## Figures", ""]
    titles = {
        "roc_overlay": "ROC curves",
        "auc_vs_depth": "AUC vs depth",
        "auc_vs_cost": "AUC vs training time",
    }
    for key, fname in result["figures"].items():
        lines += [f"![{titles[key]}]({fname})", ""]
    for key, label in (
        ("not_in_depth_plot", "AUC vs depth"),
        ("not_in_cost_plot", "AUC vs training time"),
    ):
        if result[key]:
            lines += [f"Not shown in *{label}* (field not recorded): {', '.join(result[key])}.", ""]
    lines += [
        "## Inputs",
        "",
        *[
            f"- {r['name']}: `{r['input']}`" + (f" (split: {r['split']})" if r.get("split") else "")
            for r in rows
        ],
        "",
        "Fields marked – were not recorded by the run (no train_summary.json, or key missing).",
        "",
    ]
    return "\n".join(lines)


def compare(
    inputs: Sequence[str | Path],
    output_dir: str | Path,
    names: Sequence[str] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Compare models scored on the same test examples; write and return the comparison.

    ``inputs``: run directories (holding ``predictions.csv``, and optionally ``metrics.json`` and
    ``train_summary.json``) or predictions CSV files (a ``<prefix>predictions.csv`` picks up the
    sibling ``<prefix>metrics.json`` and ``train_summary.json`` when present). Model names are
    ``names[i]``, else the run directory's name, else the CSV's parent directory's name.

    The predictions are aligned by ``id`` (row order may differ). A ValueError is raised when
    the id sets differ (naming the inputs and counting missing/extra ids), when ids repeat within
    an input, or when two inputs give different labels to the same id.

    Writes ``comparison.json``, ``report.md``, ``roc_overlay.png``, ``auc_vs_depth.png`` and
    ``auc_vs_cost.png`` into ``output_dir`` (created if needed) and returns the comparison dict:
    ``models`` (one row per input), ``pairwise`` (DeLong test for every pair), ``n_examples``,
    ``n_positive``, ``n_bootstrap``, ``seed``, ``paper_results``, ``figures``, ...
    """
    inputs = list(inputs)
    if not inputs:
        raise ValueError("compare() needs at least one input")
    if names is not None and len(names) != len(inputs):
        raise ValueError(f"got {len(names)} names for {len(inputs)} inputs")
    models = [_resolve_input(item) for item in inputs]
    raw_names = [
        str(names[i]) if names is not None else m["default_name"] for i, m in enumerate(models)
    ]
    for mdl, name in zip(models, _unique_names(raw_names)):
        mdl["name"] = name
        mdl["ids"], mdl["labels"], mdl["scores"] = read_predictions(mdl["predictions_path"])
    ids, labels = _align(models)
    n_pos = int(labels.sum())
    if n_pos in (0, labels.size):
        raise ValueError(
            f"the {labels.size} common test examples all have label {int(labels[0])}; "
            "AUCs need both classes"
        )

    rows: list[dict[str, Any]] = []
    for mdl in models:
        s = mdl["scores"]
        summary = mdl["train_summary"] or {}
        metrics_json = mdl["metrics_json"] or {}
        auc, var = delong_roc_variance(labels, s)
        if n_bootstrap > 0:
            ci = bootstrap_auc_ci(labels, s, n_bootstrap=n_bootstrap, seed=seed)
        else:
            ci = delong_auc_ci(labels, s)
        recorded = metrics_json.get("auc")
        if isinstance(recorded, (int, float)) and abs(recorded - auc) > 1e-6:
            # Most likely metrics.json belongs to another split or an older evaluation.
            warnings.warn(
                f"{mdl['name']}: metrics.json records AUC {recorded:.6f} but its predictions give "
                f"{auc:.6f}; the report uses the predictions",
                stacklevel=2,
            )
        row: dict[str, Any] = {"name": mdl["name"], "input": mdl["input"]}
        for key in _SUMMARY_FIELDS:
            value = summary.get(key)
            row[key] = (
                value if key in ("arch", "strategy") or value is None else _number(value, key, mdl)
            )
        if row["depth"] is not None:
            row["depth"] = int(row["depth"])
        elif "depth" not in summary:  # explicit null (e.g. logistic regression) stays null
            row["depth"] = _depth_from_arch(row["arch"])
        row.update(
            {
                "split": metrics_json.get("split"),
                "n": int(labels.size),
                "auc": auc,
                "auc_se_delong": math.sqrt(max(var, 0.0)),
                "auc_ci95": [ci[0], ci[1]],
                "accuracy": float(np.mean((s >= 0.5) == (labels == 1))),
            }
        )
        rows.append(row)

    pairwise = []
    for (i, a), (j, b) in itertools.combinations(enumerate(models), 2):
        t = delong_test(labels, a["scores"], b["scores"])
        pairwise.append({"a": a["name"], "b": b["name"], **t})
    for p, adj in zip(pairwise, _holm([p["p_value"] for p in pairwise])):
        p["p_value_holm"] = adj

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    _plot_roc_overlay(out / _FIGURES["roc_overlay"], labels, models, rows)
    not_in_depth = _plot_auc_vs_depth(out / _FIGURES["auc_vs_depth"], rows)
    not_in_cost = _plot_auc_vs_cost(out / _FIGURES["auc_vs_cost"], rows)

    result: dict[str, Any] = {
        "n_examples": int(labels.size),
        "n_positive": n_pos,
        "n_bootstrap": int(n_bootstrap),
        "seed": int(seed),
        "threshold": 0.5,
        "models": rows,
        "pairwise": pairwise,
        "paper_results": PAPER_RESULTS,
        "paper_reference": PAPER_REFERENCE,
        "paper_note": PAPER_NOTE,
        "figures": dict(_FIGURES),
        "not_in_depth_plot": not_in_depth,
        "not_in_cost_plot": not_in_cost,
    }
    write_json(out / "comparison.json", result)
    (out / "report.md").write_text(_markdown(result), encoding="utf-8")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hcdtf.report",
        description="Compare models scored on the same test examples (tables, DeLong tests, figures).",
    )
    parser.add_argument("inputs", nargs="+", help="run directories or predictions.csv files")
    parser.add_argument("--output-dir", "-o", required=True, help="where to write report.md etc.")
    parser.add_argument("--names", nargs="+", help="model names, one per input")
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = compare(
        args.inputs, args.output_dir, names=args.names, n_bootstrap=args.n_bootstrap, seed=args.seed
    )
    for r in result["models"]:
        print(f"{r['name']}: AUC {r['auc']:.4f} {_fmt_ci(r['auc_ci95'])}")
    print(f"report: {Path(args.output_dir) / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
