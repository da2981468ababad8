"""Renders a comparison (the dict :func:`hcdtf.evaluation.report.compare` returns) as ``report.md``:
verdict, per-run table with settings against the paper's, DeLong tests, statistics across
repeats, leak audit, published results, figures. Pure text: no files, no statistics.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from hcdtf.evaluation import runinfo

__all__ = ["MISSING", "fmt", "fmt_ci", "render"]

MISSING = "–"  # shown in the Markdown tables for fields a run did not record


def fmt(value: Any, kind: str = "") -> str:
    """One table cell: ``kind`` is auc, params, time, rate, flops, p, signed, z or t."""
    if value is None or (isinstance(value, float) and not math.isfinite(value) and kind not in ("z", "t")):
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
    if kind in ("z", "t"):
        return f"{value:.3f}" if math.isfinite(value) else ("+inf" if value > 0 else "-inf")
    return str(value)


def fmt_ci(ci: Sequence[float] | None, kind: str = "auc") -> str:
    """``[lo, hi]`` formatted as ``kind``, or – when missing."""
    if not ci or any(c is None or not math.isfinite(c) for c in ci):
        return MISSING
    return f"[{fmt(ci[0], kind)}, {fmt(ci[1], kind)}]"


def _fmt_repeat(key: Sequence[Any] | None) -> str:
    if not key or all(k is None for k in key):
        return MISSING
    seed, fold = key
    parts = ([f"seed {seed}"] if seed is not None else []) + ([f"fold {fold}"] if fold is not None else [])
    return ", ".join(parts)


def _fmt_weights(row: Mapping[str, Any]) -> str:
    kind = row["weights_kind"]
    if kind == "file":
        return f"file `{Path(row['weights']).name}`"
    return kind or MISSING


def _fmt_setting(flags: list[str] | None) -> str:
    if flags is None:
        return MISSING
    return "differs (below)" if flags else "paper"


def _table(header: Sequence[str], align: str, rows: list[Sequence[str]]) -> list[str]:
    """A Markdown table; ``align`` has one letter per column: l(eft) or r(ight)."""
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    return lines + ["| " + " | ".join(cells) + " |" for cells in rows]


def _md_intro(result: dict[str, Any]) -> list[str]:
    rows, models = result["models"], result["across_repeats"]["models"]
    n, pos = result["n_examples"], result["n_positive"]
    ci = (f"stratified percentile bootstrap, {result['n_bootstrap']} resamples, seed {result['seed']}"
          if result["n_bootstrap"] else "DeLong normal intervals (n_bootstrap = 0)")
    return [
        "# Model comparison", "",
        f"{len(rows)} runs of {len(models)} models scored on the same {n:,} test examples "
        f"({pos:,} positive, {n - pos:,} negative). AUC 95% CIs: {ci}. "
        "Accuracy at threshold 0.5 (predict positive when score >= 0.5).", "",
        "## Verdict", "", result["verdict"], "",
    ]


def _md_runs(result: dict[str, Any]) -> list[str]:
    rows = result["models"]
    header = ["Run", "Arch", "Transfer", "Weights", "Repeat", "Depth", "Params (total)",
              "Params (trainable)", "Train time", "Images/s", "GFLOPs/image", "AUC", "AUC 95% CI",
              "Accuracy", "Setting"]
    cells = [[r["name"], fmt(r["arch"]), fmt(r["transfer"]), _fmt_weights(r),
              _fmt_repeat([r["seed"], r["fold"]]), fmt(r["depth"]), fmt(r["params_total"], "params"),
              fmt(r["params_trainable"], "params"), fmt(r["wall_time_s"], "time"),
              fmt(r["images_per_s"], "rate"), fmt(r["flops_per_image"], "flops"),
              fmt(r["auc"], "auc"), fmt_ci(r["auc_ci95"]), fmt(r["accuracy"], "auc"),
              _fmt_setting(r["setting_flags"])] for r in rows]
    lines = ["## Models", "", "One row per run. *Setting* compares the run with the paper's: "
             "ImageNet weights, the whole network fine-tuned or all but the last layer frozen, "
             "ResNet-18/34/50/152, logistic regression on raw pixels.", "",
             *_table(header, "lllllrrrrrrrlrl", cells), ""]
    flagged = [r for r in rows if r["setting_flags"]]
    if flagged:
        lines += ["Settings that differ from the paper's:", ""]
        lines += [f"- {r['name']}: {'; '.join(r['setting_flags'])}." for r in flagged]
        lines.append("")
    return lines


def _md_delong(result: dict[str, Any]) -> list[str]:
    by_repeat = result["across_repeats"]["has_repeats"]
    scope = ("pairs of runs of the same repeat (seed, fold); p (Holm) is adjusted within each repeat"
             if by_repeat else "every pair of runs; p (Holm) is adjusted for the number of pairs")
    lines = ["## Pairwise DeLong tests (single runs)", "",
             "Two-sided DeLong test of equal AUCs on the paired examples (DeLong et al. 1988; fast "
             "algorithm of Sun & Xu 2014), treating each trained network as fixed: it says whether "
             "these two networks differ on these examples, not whether their architectures would "
             f"differ if trained again (see *Across repeats*). ΔAUC = AUC(A) − AUC(B). Tested: {scope}.", ""]
    if not result["pairwise"]:
        return lines + ["(no two runs to compare)", ""]
    header = (["Repeat"] if by_repeat else []) + ["A", "B", "AUC A", "AUC B", "ΔAUC", "ΔAUC 95% CI",
                                                  "z", "p", "p (Holm)"]
    cells = [([_fmt_repeat(p["repeat"])] if by_repeat else []) + [
        p["a"], p["b"], fmt(p["auc_a"], "auc"), fmt(p["auc_b"], "auc"), fmt(p["diff"], "signed"),
        fmt_ci(p["diff_ci95"], "signed"), fmt(p["z"], "z"), fmt(p["p_value"], "p"),
        fmt(p["p_value_holm"], "p")] for p in result["pairwise"]]
    align = ("l" if by_repeat else "") + "llrrrlrrr"
    return lines + _table(header, align, cells) + [""]


def _md_repeats(result: dict[str, Any]) -> list[str]:
    across = result["across_repeats"]
    lines = ["## Across repeats", ""]
    if not across["has_repeats"]:
        return lines + [
            "Every model was trained once, so run-to-run variation cannot be estimated and no "
            "across-repeat test is possible. Train each model with several seeds (or folds) to "
            "ask whether a difference survives retraining.", ""]
    models = across["models"]
    cells = [[m["name"], m["family"], str(m["n_repeats"]), fmt(m["auc_mean"], "auc"),
              fmt(m["auc_sd"], "auc"), fmt(m["auc_min"], "auc"), fmt(m["auc_max"], "auc"),
              fmt(m["wall_time_s_mean"], "time"), fmt(m["flops_per_image"], "flops")]
             for m in models]
    lines += _table(["Model", "Setting", "Runs", "Mean AUC", "SD", "Min", "Max", "Mean train time",
                     "GFLOPs/image"], "llrrrrrrr", cells)
    lines += ["", across["test"], ""]
    tested = [p for p in across["pairs"] if p["p_value"] is not None]
    if tested:
        cells = [[p["family"], p["a"], p["b"], str(p["n"]), fmt(p["mean_diff"], "signed"),
                  fmt_ci(p["diff_ci"], "signed"), fmt(p["t"], "t"), str(p["df"]),
                  fmt(p["p_value"], "p"), fmt(p["p_value_holm"], "p")] for p in tested]
        lines += _table(["Holm family", "A", "B", "Paired runs", "Mean ΔAUC", "ΔAUC 95% CI", "t",
                         "df", "p", "p (Holm)"], "lllrrlrrrr", cells)
    few = sum(1 for p in across["pairs"] if p["p_value"] is None and p["n"] < 2)
    if few:
        lines += ["", (f"{few} pairs of models share" if few > 1 else "1 pair of models shares")
                  + " fewer than two repeats: not tested."]
    # Two or more shared repeats, yet no test: the same non-zero difference in every repeat (sd 0),
    # where the t-test is undefined (hcdtf.evaluation.repeats.paired_t_test says why)
    same = [p for p in across["pairs"] if p["p_value"] is None and p["n"] >= 2]
    if same:
        lines += ["", "Not tested: " + "; ".join(
            f"{p['a']} vs {p['b']} (ΔAUC {fmt(p['mean_diff'], 'signed')} in each of {p['n']} repeats)"
            for p in same) + ". The difference is the same in every repeat the pair shares (sd 0), where "
            "the paired t-test is undefined; more repeats would tell."]
    return lines + [""]


def _md_data(result: dict[str, Any]) -> list[str]:
    lines = ["## Data and leak audit", ""]
    if not result["audit"]:
        return lines + ["no audit: the inputs do not name the data set they were evaluated on.", ""]
    for a in result["audit"]:
        lines.append(f"- `{a['data_dir']}` ({a['dataset_config'] or 'config not recorded'}): {a['text']}")
    return lines + [""]


def _md_paper(result: dict[str, Any]) -> list[str]:
    def ours(arch: str) -> str:
        cells = []
        for m in result["across_repeats"]["models"]:
            if runinfo.arch_key(m["arch"]) != runinfo.arch_key(arch):
                continue
            if m["n_repeats"] > 1:
                cells.append(f"{m['name']}: {fmt(m['auc_mean'], 'auc')} ± {fmt(m['auc_sd'], 'auc')} "
                             f"over {m['n_repeats']} runs")
            else:
                cells.append(f"{m['name']}: {fmt(m['auc_mean'], 'auc')} {fmt_ci(m['auc_ci95'])}")
        return "; ".join(cells) or MISSING

    cells = [[ref["display"], f"{ref['auc']:.3f}", ours(arch)] for arch, ref in result["paper_results"].items()]
    return ["## Published results", "",
            f"Test AUCs reported by {result['paper_reference']}, beside ours for the same architecture. "
            f"{result['paper_note']}",
            "", *_table(["Model", "Paper AUC", "Our AUC (model: AUC [95% CI], or mean ± sd)"], "lrl",
                        cells), ""]


def _md_figures(result: dict[str, Any]) -> list[str]:
    titles = {"roc_overlay": "ROC curves", "auc_vs_depth": "AUC per architecture",
              "auc_vs_cost": "AUC vs training time"}
    lines = ["## Figures", ""]
    for key, fname in result["figures"].items():
        lines += [f"![{titles[key]}]({fname})", ""]
    lines += ["*AUC per architecture*: circles are runs; each model's marker is its mean with ± sd over "
              "repeats (a single run shows its 95% CI); stars are the paper's figures.", ""]
    for key, label in (("not_in_depth_plot", "AUC per architecture"),
                       ("not_in_cost_plot", "AUC vs training time")):
        if result[key]:
            lines += [f"Not shown in *{label}* (field not recorded): {', '.join(result[key])}.", ""]
    return lines


def render(result: dict[str, Any]) -> str:
    """The whole report.md."""
    from hcdtf.evaluation import pretraining

    lines = [*_md_intro(result), *pretraining.render_markdown(result.get("pretraining")), *_md_runs(result), *_md_delong(result), *_md_repeats(result),
             *_md_data(result), *_md_paper(result), *_md_figures(result)]
    if result["notes"]:
        lines += ["## Notes", "", *[f"- {n}" for n in result["notes"]], ""]
    lines += ["## Inputs", ""]
    lines += [f"- {r['name']}: `{r['input']}`" + (f" (split: {r['split']})" if r["split"] else "")
              for r in result["models"]]
    lines += ["", "Fields marked – were not recorded by the run (no train_summary.json, or key missing).", ""]
    return "\n".join(lines)
