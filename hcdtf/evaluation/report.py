"""The comparison report (``hcdtf compare``): models scored on the same test examples, per run and
across repeats, with the verdict on depth, what was compared, the leak audit and figures.

:func:`compare` takes run directories (or bare ``predictions.csv`` files), checks that every run
was scored on exactly the same examples with the same labels, and writes ``comparison.json``,
``report.md`` (rendered by :mod:`hcdtf.evaluation.report_markdown`) and three figures (ROC overlay, AUC per
architecture, AUC vs training cost; :mod:`hcdtf.evaluation.plots`).

Statistics:
  - AUC confidence intervals of each run: stratified percentile bootstrap
    (:func:`hcdtf.evaluation.metrics.bootstrap_auc_ci`), the same resample count and seed for every run.
  - Single runs: DeLong's test for correlated ROC AUCs (DeLong, DeLong & Clarke-Pearson 1988;
    fast algorithm of Sun & Xu 2014) for each pair of runs of one repeat (same seed and fold),
    Holm-adjusted within the repeat. It treats the two trained networks as fixed.
  - Across repeats (runs of one model over seeds/folds, see :mod:`hcdtf.evaluation.runinfo`): mean, sd,
    min and max of the test AUC per model, and the paired t-test over repeats with Holm families
    (:mod:`hcdtf.evaluation.repeats`, which explains the choice); the verdict on depth is written from
    these numbers.

Published reference figures (Wang et al., "ResNet for Histopathologic Cancer Detection, the
Deeper, the Better?") are listed beside ours. The paper does not publish its split,
preprocessing or number of epochs, so they are context, not a like-for-like comparison; rows
whose setting differs from the paper's (e.g. a frozen *random* base) are flagged.
"""

from __future__ import annotations

import itertools
import math
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from hcdtf.evaluation import plots, pretraining, repeats, report_markdown, runinfo
from hcdtf.evaluation.artifacts import read_predictions
from hcdtf.atomic import write_json, write_text
from hcdtf.rundir import METRICS, PREDICTIONS
from hcdtf.evaluation.metrics import (
    bootstrap_auc_ci,
    delong_auc_ci,
    delong_roc_variance,
    delong_test,
    holm_adjust,
)

__all__ = ["PAPER_REFERENCE", "PAPER_RESULTS", "compare"]

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

#: The paper's grid: these depths, ImageNet weights, all layers fine-tuned or all but the last
#: frozen, and logistic regression on raw pixels.
PAPER_DEPTHS = (18, 34, 50, 152)

ALPHA = 0.05

_FIGURES = {
    "roc_overlay": "roc_overlay.png",
    "auc_vs_depth": "auc_vs_depth.png",
    "auc_vs_cost": "auc_vs_cost.png",
}
_MAX_ROC_CURVES = 12

_WEIGHTS_LABEL = {"imagenet": "ImageNet weights", "none": "random init",
                  "file": "weights from a file", None: "weights not recorded"}


# --------------------------------------------------------------------------------------------
# Loading and aligning the inputs
# --------------------------------------------------------------------------------------------


def _resolve_input(item: str | Path) -> dict[str, Any]:
    """Locate the predictions file of one input and the run directory that describes it."""
    path = Path(item)
    if path.is_dir() and not (path / PREDICTIONS).is_file() and (path / "slide_metrics.json").is_file():
        return _slide_evaluation(path)  # `hcdtf slide evaluate`: the heat-map score per slide
    if path.is_dir():
        pred = path / PREDICTIONS
        if not pred.is_file():
            stem, ext = PREDICTIONS.rsplit(".", 1)
            others = sorted(p.name for p in path.glob(f"*{stem}*.{ext}"))
            hint = f"; found {others}, pass one of those files instead" if others else ""
            raise FileNotFoundError(f"run directory {path} has no {PREDICTIONS}{hint}")
        run_dir, prefix = path, ""
    elif path.is_file():
        pred, run_dir = path, path.parent
        # A prefixed file such as test_predictions.csv belongs with test_metrics.json.
        prefix = path.name[: -len(PREDICTIONS)] if path.name.endswith(PREDICTIONS) else None
    else:
        raise FileNotFoundError(
            f"input not found: {path} (expected a run directory or a {PREDICTIONS})"
        )
    metrics = runinfo.read_json(run_dir / f"{prefix}{METRICS}") if prefix is not None else None
    mil = runinfo.read_json(run_dir / "mil_metrics.json")
    # `mil evaluate --heatmap`'s heat-map scores sit beside the MIL run's: they are not that run's
    # model (its head, seed and fold), so they get no run identity and are named after the file
    heatmap = mil is not None and pred.name.startswith("heatmap_")
    return {
        "input": str(path),
        "predictions_path": pred,
        # `mil evaluate`'s default output, RUN/eval, is named after its run
        "default_name": (pred.stem if heatmap else (run_dir.resolve().parent if run_dir.name == "eval"
                         and mil is not None else run_dir.resolve()).name),
        "metrics_json": metrics,
        "info": runinfo.read_run_info(None if heatmap else run_dir),
        "slide_level": None if mil is None else _mil_slides(mil, pred),
    }


def _mil_slides(mil: Mapping[str, Any], pred: Path) -> str:
    """What a ``mil evaluate`` folder's slide scores were computed on, for the test-set note."""
    what = "heat-map scores from mil evaluate --heatmap" if pred.name.startswith("heatmap_") else "mil evaluate"
    labels = f", labels {Path(str(mil['labels'])).name}" if mil.get("labels") else ""
    return f"{mil.get('slides', '?')} slides ({what}{labels})"


def _slide_evaluation(path: Path) -> dict[str, Any]:
    """A ``slide evaluate`` folder as an input: one example per slide (id, label, heat-map slide
    score), to compare with ``mil evaluate``'s slide predictions of the same slides."""
    m = runinfo.read_json(path / "slide_metrics.json") or {}
    slides = m.get("slides") or []
    rows = [(str(r["slide"]), r["label"], r["score"]) for r in slides if r.get("score") is not None]
    if not rows:
        raise ValueError(f"{path / 'slide_metrics.json'}: no slide scores (rerun `hcdtf slide evaluate`)")
    ids, labels, scores = zip(*rows)
    return {"input": str(path), "predictions_path": path / "slide_metrics.json", "default_name": path.resolve().name,
            "metrics_json": None, "info": runinfo.read_run_info(path),
            "slide_level": f"{len(rows)} slides (slide evaluate"
                           + (f", reference {Path(str(m['reference'])).name})" if m.get("reference") else ")"),
            "rows": (np.array(ids, dtype=str), np.array(labels, dtype=np.int64), np.array(scores, dtype=np.float64))}


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


def _id_problems(ref: dict[str, Any], mdl: dict[str, Any], ref_ids: np.ndarray) -> str | None:
    if mdl["ids"].size == ref_ids.size and np.array_equal(np.sort(mdl["ids"]), ref_ids):
        return None
    missing = np.setdiff1d(ref_ids, mdl["ids"], assume_unique=True)
    extra = np.setdiff1d(mdl["ids"], ref_ids, assume_unique=True)
    parts = []
    if missing.size:
        parts.append(f"{missing.size} ids missing (e.g. {_examples(missing)})")
    if extra.size:
        parts.append(f"{extra.size} extra ids (e.g. {_examples(extra)})")
    return (f"  '{mdl['name']}' ({mdl['predictions_path']}, {mdl['ids'].size} ids) vs "
            f"'{ref['name']}' ({ref['predictions_path']}, {ref_ids.size} ids): " + "; ".join(parts))


def _align(runs: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Sort every run's predictions by id; check that ids and labels agree across runs (ids are
    unique within each file: :func:`read_predictions` checks that).

    Returns the common (sorted) ids and labels; each run gets ``scores`` in that order.
    """
    ref = runs[0]
    ref_ids = np.sort(ref["ids"])
    problems = [p for p in (_id_problems(ref, r, ref_ids) for r in runs[1:]) if p]
    if problems:
        raise ValueError(
            "all inputs must be scored on the same example ids; these differ from the first input:\n"
            + "\n".join(problems)
        )
    labels = None
    for run in runs:
        order = np.argsort(run["ids"], kind="stable")
        run["scores"] = run["scores"][order]
        lab = run["labels"][order]
        if labels is None:
            labels = lab
            continue
        bad = lab != labels
        if bad.any():
            raise ValueError(
                f"labels disagree between '{ref['name']}' ({ref['predictions_path']}) and "
                f"'{run['name']}' ({run['predictions_path']}) for {int(bad.sum())} of {lab.size} "
                f"ids (e.g. {_examples(ref_ids[bad])}); were they built from different label files?"
            )
    assert labels is not None
    return ref_ids, labels


# --------------------------------------------------------------------------------------------
# What was compared: settings against the paper's
# --------------------------------------------------------------------------------------------


def _setting_flags(info: runinfo.RunInfo) -> list[str] | None:
    """How a run's setting differs from the paper's ([] if it matches, None if unknown)."""
    if info.kind == "baseline":
        features = info.features or "pixels"
        return [] if features == "pixels" else [
            f"logistic regression on {features}; the paper's uses raw pixels"]
    if info.kind != "cnn":
        return None
    if info.arch and pretraining.is_encoder_model(info.to_dict()):
        return ["pathology encoder: not in the paper's grid (the pretraining question)"]
    flags = []
    if info.weights_kind == "none" and info.transfer == "freeze_base":
        flags.append("frozen *random* base: says nothing about the paper's frozen-ImageNet strategy")
    elif info.weights_kind == "none":
        flags.append("trained from random init; the paper starts from ImageNet")
    elif info.weights_kind == "file":
        flags.append("initial weights from a file; the paper starts from ImageNet")
    elif info.weights_kind is None:
        flags.append("initial weights not recorded")
    if info.trainable_from:
        flags.append(f"fine-tuned from {info.trainable_from} on; the paper trains all layers or "
                     "only the last")
    if info.depth is not None and info.depth not in PAPER_DEPTHS:
        flags.append(f"depth {info.depth} is not in the paper's grid")
    return flags


# --------------------------------------------------------------------------------------------
# Runs, models and repeats
# --------------------------------------------------------------------------------------------


def _run_row(run: dict[str, Any], labels: np.ndarray, n_bootstrap: int, seed: int) -> dict:
    """The per-run row: identity (:class:`runinfo.RunInfo`), AUC with CI, accuracy at 0.5."""
    s = run["scores"]
    auc, var = delong_roc_variance(labels, s)
    if n_bootstrap > 0:
        ci = bootstrap_auc_ci(labels, s, n_bootstrap=n_bootstrap, seed=seed)
    else:
        ci = delong_auc_ci(labels, s)
    metrics_json = run["metrics_json"] or {}
    recorded = metrics_json.get("auc")
    if isinstance(recorded, (int, float)) and abs(recorded - auc) > 1e-6:
        # Most likely metrics.json belongs to another split or an older evaluation.
        warnings.warn(
            f"{run['name']}: {METRICS} records AUC {recorded:.6f} but its predictions give "
            f"{auc:.6f}; the report uses the predictions",
            stacklevel=3,
        )
    info: runinfo.RunInfo = run["info"]
    return {
        "name": run["name"],
        "input": run["input"],
        "info": info,  # dropped from comparison.json; its fields are copied next
        **info.to_dict(),
        "setting_flags": _setting_flags(info),
        "split": metrics_json.get("split"),
        "n": int(labels.size),
        "auc": auc,
        "auc_se_delong": math.sqrt(max(var, 0.0)),
        "auc_ci95": [ci[0], ci[1]],
        "accuracy": float(np.mean((s >= 0.5) == (labels == 1))),
    }


def _family(info: runinfo.RunInfo, fallback: str) -> str:
    """The setting a model belongs to: its Holm family and its line in the depth figure."""
    if info.kind == "baseline":
        return "baseline"
    if info.kind != "cnn":
        return fallback
    transfer = info.transfer or "transfer not recorded"
    if info.trainable_from:
        transfer += f" from {info.trainable_from}"
    if pretraining.is_encoder_model(info.to_dict()):  # its own family: not a depth of the ResNets
        return f"{transfer}, pathology encoder{_stain_label(info)}"
    return f"{transfer}, {_WEIGHTS_LABEL.get(info.weights_kind, info.weights_kind)}{_stain_label(info)}"


def _stain_label(info: runinfo.RunInfo) -> str:
    """', stain macenko, stain augment 0.1' for runs with a stain layer or augmentation; '' without."""
    return ((f", stain {info.stain_normalize}" if info.stain_normalize else "")
            + (f", stain augment {info.stain_augment:g}" if info.stain_augment else ""))


def _model_label(info: runinfo.RunInfo, show_weights: bool) -> str:
    if info.kind == "baseline":
        return info.arch + (f" {info.features}" if info.features not in (None, "pixels") else "")
    label = f"{info.arch} {info.transfer or ''}".strip()
    if info.trainable_from:
        label += f" from {info.trainable_from}"
    if show_weights:
        label += f" ({_WEIGHTS_LABEL.get(info.weights_kind, info.weights_kind)})"
    if info.split_seed is not None:
        label += f" (split seed {info.split_seed})"
    return label + _stain_label(info)


def _group_runs(rows: list[dict[str, Any]]) -> tuple[list[tuple[list[dict], bool]], list[str]]:
    """Runs grouped into models (repeats of one model key), in input order, and notes.

    Each group comes with whether it is named after its run: runs that do not say what they are
    form a model each, and so do runs whose model and repeat (seed, fold) coincide with another
    run's, since they cannot be repeats of each other.
    """
    notes: list[str] = []
    groups: dict[Any, list[dict]] = {}
    for row in rows:
        key = runinfo.model_key(row["info"])
        groups.setdefault(key if key is not None else ("run", row["name"]), []).append(row)
    out: list[tuple[list[dict], bool]] = []
    for key, members in groups.items():
        repeat_keys = [runinfo.repeat_key(r["info"]) for r in members]
        if len(set(repeat_keys)) == len(repeat_keys):
            out.append((members, key[0] == "run"))
            continue
        out.extend(([r], True) for r in members)
        notes.append(
            f"{', '.join(r['name'] for r in members)} share arch, transfer strategy, weights and stain "
            "settings but not distinct seeds/folds, so they are compared as separate models, not repeats."
        )
    return out, notes


def _model_entry(members: list[dict], name: str, family: str) -> dict[str, Any]:
    info: runinfo.RunInfo = members[0]["info"]
    aucs = [r["auc"] for r in members]
    stats = repeats.summarize(aucs)
    times = [r["wall_time_s"] for r in members if r["wall_time_s"]]
    return {
        "name": name,
        "family": family,
        "arch": info.arch or name,
        "kind": info.kind,
        "transfer": info.transfer,
        "weights_kind": info.weights_kind,
        "depth": info.depth,
        "runs": [r["name"] for r in members],
        "repeats": [list(runinfo.repeat_key(r["info"])) for r in members],
        "aucs": {runinfo.repeat_key(r["info"]): r["auc"] for r in members},
        "n_repeats": stats["n"],
        "auc_mean": stats["mean"],
        "auc_sd": stats["sd"],
        "auc_min": stats["min"],
        "auc_max": stats["max"],
        "auc_ci95": members[0]["auc_ci95"] if len(members) == 1 else None,
        "wall_time_s_mean": float(np.mean(times)) if times else None,
        "flops_per_image": members[0]["flops_per_image"],
    }


def _models(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """One entry per model with its repeats' AUC summary; sets each row's ``model``."""
    groups, notes = _group_runs(rows)
    cnn_weights = {g[0]["info"].weights_kind for g, _ in groups if g[0]["info"].kind == "cnn"}
    labels = [g[0]["name"] if by_run else _model_label(g[0]["info"], len(cnn_weights) > 1)
              for g, by_run in groups]
    models = []
    for (members, _), name in zip(groups, _unique_names(labels)):
        for r in members:
            r["model"] = name
        models.append(_model_entry(members, name, _family(members[0]["info"], fallback=name)))
    return models, notes


def _delong_pairs(runs: list[dict], rows: list[dict], labels: np.ndarray, by_repeat: bool) -> list:
    """DeLong tests of pairs of runs: all pairs when every model has one run, otherwise the
    pairs within each repeat (same seed and fold); Holm-adjusted within each repeat."""
    groups: dict[Any, list[int]] = {}
    for i, row in enumerate(rows):
        key = runinfo.repeat_key(row["info"]) if by_repeat else None
        groups.setdefault(key, []).append(i)
    pairs = []
    for key, idx in groups.items():
        these = []
        for i, j in itertools.combinations(idx, 2):
            t = delong_test(labels, runs[i]["scores"], runs[j]["scores"])
            these.append({"repeat": list(key) if key else None, "a": rows[i]["name"],
                          "b": rows[j]["name"], **t})
        for p, adj in zip(these, holm_adjust([p["p_value"] for p in these])):
            p["p_value_holm"] = adj
        pairs.extend(these)
    return pairs


# --------------------------------------------------------------------------------------------
# The leak audit of the data the runs were evaluated on
# --------------------------------------------------------------------------------------------


def _audit_text(summary: Any) -> str:
    """One line from an audit summary: its own headline if it has one, else its scalar fields."""
    if isinstance(summary, str):
        return summary
    if isinstance(summary, Mapping):
        for key in ("headline", "summary", "text", "message"):
            if isinstance(summary.get(key), str):
                return summary[key]
        fields = [f"{k}: {v}" for k, v in summary.items()
                  if isinstance(v, (int, float, str, bool)) or v is None]
        return "; ".join(fields) or "audit recorded (no scalar fields to show)"
    return str(summary)


def _audit(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The leak-audit summary of each data set the runs name (data_dir, dataset_config), from
    ``hcdtf.data.audit.load_summary`` when this hcdtf has it; "no audit" otherwise."""
    sources = list(dict.fromkeys((r["data_dir"], r["dataset_config"]) for r in rows if r["data_dir"]))
    try:
        from hcdtf.data import audit
    except ModuleNotFoundError as e:  # only the module itself may be missing, nothing it imports
        if e.name != "hcdtf.data.audit":
            raise
        audit = None
    load = getattr(audit, "load_summary", None)
    out = []
    for data_dir, config in sources:
        summary, text = None, "no audit"
        if load is not None and config:
            try:
                summary = load(data_dir, config)
            except (OSError, ValueError) as e:
                text = f"no audit (could not read it: {e})"
            if summary:
                text = _audit_text(summary)
        out.append({"data_dir": data_dir, "dataset_config": config, "summary": summary, "text": text})
    return out


# --------------------------------------------------------------------------------------------
# Figures and the entry point
# --------------------------------------------------------------------------------------------


def _roc_curves(runs, rows, models) -> tuple[list[dict[str, Any]], str]:
    """The ROC overlay's curves: one colour per model, one line style per repeat of it; only
    each model's first run when there are too many runs for a legible legend."""
    colour = {m["name"]: f"C{k % 10}" for k, m in enumerate(models)}
    styles = ("-", "--", ":", "-.")
    drawn: dict[str, int] = {}
    curves = []
    for run, r in zip(runs, rows):
        k = drawn.get(r["model"], 0)
        if len(runs) > _MAX_ROC_CURVES and k:
            continue
        drawn[r["model"]] = k + 1
        curves.append({"label": f"{r['name']}: AUC {r['auc']:.4f} {report_markdown.fmt_ci(r['auc_ci95'])}",
                       "scores": run["scores"], "color": colour[r["model"]],
                       "linestyle": styles[k % len(styles)]})
    title = ("ROC curves on the common test examples" if len(runs) <= _MAX_ROC_CURVES
             else "ROC curves (first run of each model)")
    return curves, title


def _figures(out: Path, labels: np.ndarray, runs, rows, models) -> tuple[list[str], list[str]]:
    """Writes the three figures; returns the models left out of the depth and cost figures."""
    curves, title = _roc_curves(runs, rows, models)
    plots.plot_roc_overlay(out / _FIGURES["roc_overlay"], labels, curves, title)
    for_plot = [{**m, "aucs": list(m["aucs"].values())} for m in models]
    placed = [m for m in for_plot if (m["depth"] is not None and not pretraining.is_encoder_model(m))
              or m["kind"] == "baseline"]
    paper = [dict(v) for v in PAPER_RESULTS.values()]
    plots.plot_auc_by_arch(out / _FIGURES["auc_vs_depth"], placed, paper)
    timed = [m for m in for_plot if m["wall_time_s_mean"]]
    plots.plot_auc_vs_cost(out / _FIGURES["auc_vs_cost"], timed)
    return ([m["name"] for m in for_plot if m not in placed],
            [m["name"] for m in for_plot if m not in timed])


def _output_dir(output_dir: str | Path) -> Path:
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--output-dir {out} exists and is not a directory; choose another")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise type(e)(f"cannot create --output-dir {out}: {e.strerror}; choose a writable one") from None
    return out


def _read_inputs(inputs: Sequence[str | Path], names: Sequence[str] | None) -> list[dict[str, Any]]:
    inputs = list(inputs)
    if not inputs:
        raise ValueError("compare() needs at least one input")
    if names is not None and len(names) != len(inputs):
        raise ValueError(f"got {len(names)} names for {len(inputs)} inputs; give one name per input")
    runs = [_resolve_input(item) for item in inputs]
    raw = [str(names[i]) if names is not None else r["default_name"] for i, r in enumerate(runs)]
    for run, name in zip(runs, _unique_names(raw)):
        run["name"] = name
        run["ids"], run["labels"], run["scores"] = run.pop("rows", None) or read_predictions(run["predictions_path"])
    return runs


def _check_test_sets(runs: list[dict[str, Any]]) -> str | None:
    """Refuses runs evaluated on different test sets (metrics.json ``data``: the examples' ids and
    labels and the source files, :mod:`hcdtf.data.identity`), naming each group; returns a note naming
    the slide-level inputs (``mil evaluate``, ``slide evaluate``: their test set is the slides they
    scored) and the inputs whose test set is unknown (older hcdtf, bare predictions files), or None."""
    from hcdtf.data import identity as dataid

    groups: dict[tuple, list[str]] = {}
    shown: dict[tuple, str] = {}
    unknown, slides = [], []
    for run in runs:
        if run.get("slide_level"):  # a slide-level result: its test set is the slides it scored
            slides.append(f"{run['name']!r}: {run['slide_level']}")
            continue
        recorded = (run["metrics_json"] or {}).get("data")
        key = dataid.comparison_key(recorded)
        if key is None:
            unknown.append(run["name"])
            continue
        groups.setdefault(key, []).append(run["name"])
        shown.setdefault(key, dataid.describe_test_set(recorded))
    if len(groups) > 1:
        raise ValueError("these runs were evaluated on different test sets and cannot share one table: " + "; ".join(
            f"{', '.join(repr(n) for n in names)} on {shown[key]}" for key, names in groups.items())
            + "; evaluate them again on one build (hcdtf evaluate RUN), or compare each group on its own")
    notes = []
    if slides:
        notes.append("slide-level results (the test set is the slides scored; a patch test set does not apply): "
                     + "; ".join(slides) + "; checked by slide ids and labels")
    if unknown:
        notes.append(f"test set not recorded for {', '.join(repr(n) for n in unknown)} (evaluated by an older "
                     "hcdtf, or a bare predictions file): checked by ids and labels only")
    return "; ".join(notes) or None


def _repeat_statistics(models: list[dict], rows: list[dict]) -> dict[str, Any]:
    pairs = repeats.compare_repeats(models, ALPHA)
    return {
        "has_repeats": any(m["n_repeats"] > 1 for m in models),
        "models": models,
        "pairs": pairs,
        "test": ("Pairs of models: paired t-test over the repeats they share (same seed and fold; "
                 "difference A − B with its 95% t interval), Holm-adjusted within each family: the "
                 "models of one setting (transfer strategy and weights), and the pairs across "
                 "settings. It uses the variation between runs, which a single-run DeLong test "
                 "cannot see; why this test, with few repeats: see `hcdtf/evaluation/repeats.py`."),
    }


def compare(
    inputs: Sequence[str | Path],
    output_dir: str | Path,
    names: Sequence[str] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Compare runs scored on the same test examples; write and return the comparison.

    ``inputs``: run directories (holding ``predictions.csv``, and optionally ``metrics.json``,
    ``train_summary.json`` and ``config.yaml``) or predictions CSV files (a
    ``<prefix>predictions.csv`` picks up the sibling ``<prefix>metrics.json`` and the directory's
    summary and config). Run names are ``names[i]``, else the run directory's name, else the
    CSV's parent directory's name. Runs of one model (arch, transfer, kind of weights, stain) over
    seeds/folds are its repeats (:mod:`hcdtf.evaluation.runinfo`).

    The predictions are aligned by ``id`` (row order may differ). A ValueError is raised when the
    id sets differ (naming the inputs and counting missing/extra ids), when a predictions file
    breaks the rules of :func:`hcdtf.evaluation.artifacts.read_predictions`, when two inputs give
    different labels to the same id, or when their metrics.json record different test sets (another
    build's examples or source files, :mod:`hcdtf.data.identity`); ``log`` gets one line naming the
    inputs whose test set is not recorded, and the slide-level inputs with the slides they scored.

    Writes ``comparison.json``, ``report.md``, ``roc_overlay.png``, ``auc_vs_depth.png`` and
    ``auc_vs_cost.png`` into ``output_dir`` (created if needed), each atomically, and returns the
    comparison dict: ``models`` (one row per input run), ``pairwise`` (DeLong tests),
    ``across_repeats`` (per-model summaries and paired tests), ``verdict``, ``audit``, ...
    """
    if int(n_bootstrap) != n_bootstrap or n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be a non-negative integer, got {n_bootstrap}")
    runs = _read_inputs(inputs, names)
    unknown_test_set = _check_test_sets(runs)
    if unknown_test_set:
        log(f"note: {unknown_test_set}")
    _, labels = _align(runs)
    n_pos = int(labels.sum())
    if n_pos in (0, labels.size):
        raise ValueError(f"the {labels.size} common test examples all have label {int(labels[0])}; "
                         "AUCs need both classes")
    out = _output_dir(output_dir)
    rows = [_run_row(run, labels, int(n_bootstrap), seed) for run in runs]
    models, notes = _models(rows)
    notes = [*notes, *([unknown_test_set] if unknown_test_set else [])]
    across = _repeat_statistics(models, rows)
    delong = _delong_pairs(runs, rows, labels, by_repeat=across["has_repeats"])
    not_in_depth, not_in_cost = _figures(out, labels, runs, rows, models)
    result: dict[str, Any] = {
        "n_examples": int(labels.size), "n_positive": n_pos, "n_bootstrap": int(n_bootstrap),
        "seed": int(seed), "threshold": 0.5,
        "models": [{k: v for k, v in r.items() if k != "info"} for r in rows],
        "pairwise": delong,
        "across_repeats": {**across, "models": [
            {k: v for k, v in m.items() if k != "aucs"} for m in models]},
        "verdict": repeats.depth_verdict([m for m in models if not pretraining.is_encoder_model(m)],
                                         across["pairs"], ALPHA),
        "pretraining": pretraining.pretraining_verdict(models, rows, runs, labels, ALPHA),
        "audit": _audit(rows),
        "notes": notes,
        "paper_results": PAPER_RESULTS, "paper_reference": PAPER_REFERENCE, "paper_note": PAPER_NOTE,
        "figures": dict(_FIGURES), "not_in_depth_plot": not_in_depth, "not_in_cost_plot": not_in_cost,
    }
    if result["pretraining"]["text"]:  # the verdict covers both questions
        result["verdict"] += " Pretraining vs depth: " + result["pretraining"]["text"]
    write_json(out / "comparison.json", result)
    write_text(out / "report.md", report_markdown.render(result))
    return result
