"""AUC on seen vs unseen centres: a held-out-centre run's test predictions split by centre, the
gap (seen minus unseen) per run and per normaliser, and the comparison report's section.

The centre of each example and the leave-one-centre-out splits come from
:mod:`hcdtf.data.centres`; this module only reads finished runs.
"""

from __future__ import annotations

import csv
import json
import math
import pathlib
from typing import Callable

from hcdtf.data.centres import check, seen_centres


def _auc(labels, scores) -> float | None:
    from sklearn.metrics import roc_auc_score

    if len(set(labels.tolist())) < 2:
        return None
    return float(roc_auc_score(labels, scores))


def centre_gap(run_dir) -> dict | None:
    """AUC of a run's test predictions on the seen centres, on the held-out one, and the gap (seen
    minus unseen); None for a run without ``data.test_centre``."""
    import numpy as np

    from hcdtf.config import load_config
    from hcdtf.data import pipeline
    from hcdtf.rundir import RunDir

    run = RunDir(run_dir)
    cfg = load_config([run.config_path])
    if cfg.data.test_centre is None:
        return None
    record = check(cfg.data, pipeline.load_builder(cfg.data))
    held = cfg.data.test_centre
    rows = {"seen": ([], []), "unseen": ([], [])}
    with open(run.predictions_path(), newline="") as f:
        for row in csv.DictReader(f):
            group = "unseen" if record["map"].get(row["id"]) == held else "seen"
            rows[group][0].append(int(row["label"]))
            rows[group][1].append(float(row["score"]))
    seen, unseen = (_auc(np.array(y), np.array(s)) for y, s in rows.values())
    gap = seen - unseen if seen is not None and unseen is not None else None
    return {"test_centre": held, "seen_centres": seen_centres(cfg.data, record), "auc_seen": seen,
            "auc_unseen": unseen, "gap": gap, "n_seen": len(rows["seen"][0]), "n_unseen": len(rows["unseen"][0]),
            "stain_normalize": cfg.data.stain_normalize, "seed": cfg.seed}


def _fmt(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def gap_table(rows: list[dict]) -> tuple[list[str], dict]:
    """Markdown lines of the seen/unseen table (one row per run, then the mean gap per
    normaliser and whether it is at most half the gap without one) and the summary dict."""
    lines = ["| run | normaliser | seed | AUC seen | AUC unseen | gap (seen - unseen) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['stain_normalize']} | {r['seed']} | {_fmt(r['auc_seen'])} | "
                     f"{_fmt(r['auc_unseen'])} | {_fmt(r['gap'])} |")
    by: dict[str, list[float]] = {}
    for r in rows:
        if r["gap"] is not None:
            by.setdefault(r["stain_normalize"], []).append(r["gap"])
    summary = {k: {"mean_gap": sum(v) / len(v), "gaps": v} for k, v in by.items()}
    base = summary.get("none", {}).get("mean_gap")
    lines += ["", "| normaliser | runs | mean gap | gap / gap without | halved? |", "|---|---|---|---|---|"]
    for k, s in summary.items():
        # (no gap without normalisation, or a negative one: nothing to halve, no ratio)
        ratio = s["mean_gap"] / base if base is not None and base > 0 and k != "none" else None
        s["ratio_to_none"] = ratio
        s["halved"] = None if ratio is None else bool(ratio <= 0.5)
        halved = "-" if ratio is None else ("yes" if ratio <= 0.5 else "no")
        lines.append(f"| {k} | {len(s['gaps'])} | {_fmt(s['mean_gap'])} | {_fmt(ratio)} | {halved} |")
    return lines, summary


def write_report(run_dirs: list, out_dir, log: Callable[[str], None] = lambda _: None) -> dict | None:
    """For runs with a held-out centre: ``centres.json`` and ``centres.md`` in ``out_dir``, and a
    'Seen vs unseen centres' section appended to its ``report.md``. None if no run holds out one."""
    from hcdtf import atomic

    rows = []
    for d in run_dirs:
        g = centre_gap(d)
        if g is not None:
            rows.append({"name": pathlib.Path(d).name, **g})
    if not rows:
        return None
    lines, summary = gap_table(rows)
    held = sorted({r["test_centre"] for r in rows})
    text = ["## Seen vs unseen centres", "",
            f"Test AUC on the seen centres' test patches and on every patch of the held-out centre "
            f"({', '.join(held)}); gap = seen - unseen (hcdtf.evaluation.centres).", "", *lines, ""]
    out = pathlib.Path(out_dir)
    atomic.write_json(out / "centres.json", {"runs": rows, "by_normaliser": summary})
    atomic.write_text(out / "centres.md", "\n".join(text))
    report = out / "report.md"
    if report.is_file():
        body = report.read_text(encoding="utf-8")
        body = body.split("\n## Seen vs unseen centres", 1)[0].rstrip("\n")
        atomic.write_text(report, body + "\n\n" + "\n".join(text))
    for k, s in summary.items():
        log(f"centres: {k}: mean unseen-centre AUC gap {s['mean_gap']:+.4f} over {len(s['gaps'])} run(s)"
            + (f" ({s['ratio_to_none']:.2f}x the gap without)" if s.get("ratio_to_none") is not None else ""))
    return {"runs": rows, "by_normaliser": summary}


def dumps(summary: dict) -> str:
    return json.dumps(summary, indent=2)
