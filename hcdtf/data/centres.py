"""Centres (hospitals) of a build, leave-one-centre-out reading, and the seen/unseen AUC gap.

A Kaggle-layout build made with a ``centres.csv`` (``id,centre``) beside ``train_labels.csv``
records every example's centre in its metadata (tfds_builder/hcd/centres.py); the records
themselves are unchanged. Two config keys then choose the centres:

* ``data.centres: [a, b, ...]``: the training and validation splits keep only these centres'
  examples (null: every centre but ``data.test_centre``);
* ``data.test_centre: c``: the held-out centre. The test split becomes the test split's
  examples of the seen centres **plus every example of centre c** from all labelled splits (none
  of them was trained or validated on), so one evaluation scores both, and
  :func:`centre_gap` splits its AUC into seen and unseen centres.

Filtering is by id, in the graph (a ``tf.lookup.StaticHashTable`` of the kept ids), after TFDS
reads the split: ``data.max_*_examples`` limits apply before it.
"""

from __future__ import annotations

import csv
import json
import math
import pathlib
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # pragma: no cover
    import tensorflow as tf

    from hcdtf.config import DataConfig


class CentreError(ValueError):
    """The centre options do not fit the build (the message names the key and the choices)."""


def active(cfg: "DataConfig") -> bool:
    return getattr(cfg, "centres", None) is not None or getattr(cfg, "test_centre", None) is not None


def build_record(builder) -> dict | None:
    """The build's centre record (``map``, ``counts``, ``centres``), or None."""
    meta = builder.info.metadata or {}
    record = meta.get("centres")
    return record if isinstance(record, dict) and record.get("map") else None


def seen_centres(cfg: "DataConfig", record: dict) -> list[str]:
    """The centres trained and validated on: ``data.centres``, else all but ``data.test_centre``."""
    if cfg.centres is not None:
        return [str(c) for c in cfg.centres]
    return [c for c in record["centres"] if c != cfg.test_centre]


def check(cfg: "DataConfig", builder) -> dict:
    """The build's centre record; CentreError if the build has none or a named centre is not in it."""
    record = build_record(builder)
    where = f"{cfg.dataset}/{cfg.dataset_config} in {cfg.data_dir}"
    if record is None:
        raise CentreError(
            f"data.centres / data.test_centre need a build with centres: {where} has no centre map. Put "
            "centres.csv (id,centre) beside train_labels.csv (hcdtf sample-data --centres K writes one) and "
            "rebuild (hcdtf build-dataset --overwrite)")
    known = record["centres"]
    for key, values in (("data.centres", cfg.centres or []), ("data.test_centre", [cfg.test_centre] if
                                                               cfg.test_centre is not None else [])):
        for v in values:
            if str(v) not in known:
                raise CentreError(f"{key}: centre {v!r} is not in {where}; its centres: {', '.join(known)}")
    seen = seen_centres(cfg, record)
    if not seen:
        raise CentreError(f"data.centres: no centre left to train on ({where} has {', '.join(known)})")
    if cfg.test_centre is not None and cfg.test_centre in seen:
        raise CentreError(f"data.test_centre {cfg.test_centre!r} is also in data.centres {seen}: a held-out "
                          "centre must not be trained on")
    return record


def _keep(ds, ids: list[str]):
    """``ds`` (examples with an ``id``) filtered to ``ids``, by a static hash table in the graph."""
    import tensorflow as tf

    if not ids:
        return ds.take(0)
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(ids), tf.ones([len(ids)], tf.int32)), default_value=0)
    return ds.filter(lambda example: table.lookup(example["id"]) > 0)


def _ids(record: dict, centres: list[str]) -> list[str]:
    wanted = set(centres)
    return sorted(i for i, c in record["map"].items() if c in wanted)


def labelled_splits(info) -> list[str]:
    return [s for s in info.splits if s != "kaggle_test"]


def read(builder, cfg: "DataConfig", split: str, spec: str, shuffle_files: bool, read_config) -> "tf.data.Dataset":
    """The examples of ``split`` (TFDS spec ``spec``) that leave-one-centre-out keeps (module docstring)."""
    record = check(cfg, builder)
    seen = seen_centres(cfg, record)
    ds = _keep(builder.as_dataset(split=spec, shuffle_files=shuffle_files, read_config=read_config), _ids(record, seen))
    if split == cfg.test_split and cfg.test_centre is not None:
        every = "+".join(labelled_splits(builder.info))
        held = builder.as_dataset(split=every, shuffle_files=False, read_config=read_config)
        ds = ds.concatenate(_keep(held, _ids(record, [cfg.test_centre])))
    return ds


def count(builder, cfg: "DataConfig", split: str, spec_parts: list[str]) -> int:
    """How many examples :func:`read` yields for ``split`` (without example limits)."""
    record = check(cfg, builder)
    seen = set(seen_centres(cfg, record))
    n = sum(k for part in spec_parts for c, k in record["counts"].get(part, {}).items() if c in seen)
    if split == cfg.test_split and cfg.test_centre is not None:
        n += sum(c.get(cfg.test_centre, 0) for c in record["counts"].values())
    return n


# ----------------------------------------------------------------------------- the gap
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
            f"({', '.join(held)}); gap = seen - unseen (hcdtf.data.centres).", "", *lines, ""]
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
