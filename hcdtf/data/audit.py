"""The leak audit of a built data set (`hcdtf audit`), and the audit summary each build records.

Duplicated patches and slides shared between splits inflate test AUC. Every build audits what it
writes and stores the summary in its metadata (``metadata.json``, key ``audit``): reports read it
with :func:`load_summary`. ``hcdtf audit`` reads the stored patches back, audits them again the
same way (the hashes and the search are the builder's, tfds_builder/hcd/duplicates.py), says
whether the result matches the recorded summary, and prints the details.

Summary keys: ``examples_per_split`` {split: n}; ``exact`` {groups, within {split: extra
copies}, across {"a/b": groups}, label_conflicts}; ``near`` {pairs, within {split: pairs}, across
{"a/b": pairs}, low_detail}; ``slides`` (None without a slide map) {slides, in_several_splits,
across {"a/b": slides}, examples}; ``threshold`` (dHash bits); ``examples`` (a few groups/pairs,
cross-split first); ``dropped`` (builds with drop_duplicates); ``leaks`` (cross-split exact
groups + near pairs + slides in several splits: 0 means none found); ``headline`` (one sentence).
"""

from __future__ import annotations

import json
import os
from typing import Callable

# What `hcdtf audit` compares between its result and the build's record.
_COMPARED = ("examples_per_split", "exact", "near", "slides", "leaks")


def _metadata(data_dir: str, dataset_config: str) -> dict | None:
    from hcdtf.data import pipeline as data

    version_dir = data.built_version_dir(data_dir, dataset_config)
    path = version_dir / "metadata.json" if version_dir else None
    if path is None or not path.is_file():
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_summary(data_dir: str, dataset_config: str) -> dict | None:
    """The audit summary recorded by the build of ``dataset_config`` in ``data_dir`` (see the
    module docstring for its keys), or None if there is no such build or it predates audits.
    Reads one JSON file: no TensorFlow."""
    meta = _metadata(os.path.expanduser(data_dir), dataset_config)
    return (meta or {}).get("audit")


def choose_config(data_dir: str, dataset_config: str | None) -> str:
    """``dataset_config``, or the only build in ``data_dir``; a clear error otherwise."""
    from hcdtf.data import pipeline as data

    if dataset_config:
        return dataset_config
    built = data.built_configs(data_dir)
    if len(built) == 1:
        return built[0]
    if not built:
        raise data.DatasetNotBuiltError(
            f"{data_dir}: no hcd data set is built there (hcdtf build-dataset builds one)")
    raise ValueError(f"{data_dir} holds several builds ({', '.join(built)}): choose one with --dataset-config")


def _slides(meta: dict, slide_map: str | None) -> dict[str, str] | None:
    """The slide map to use: the one given, else the build's own if it is still where it was
    and unchanged (its hash is in the build's fingerprint)."""
    from tfds_builder.hcd import hcd_dataset_builder as hcd
    from tfds_builder.hcd import inputs

    if slide_map:
        if not os.path.isfile(slide_map):
            raise FileNotFoundError(f"--slide-map {slide_map}: no such file")
        return hcd.read_slide_csv(slide_map)
    recorded = (meta.get("inputs") or {}).get("slide_map")
    if not recorded:
        return None
    path = os.path.join(meta["inputs"]["manual_dir"], recorded["name"])
    if os.path.isfile(path) and inputs.file_sha256(path) == recorded["sha256"]:
        return hcd.read_slide_csv(path)
    return None


def audit(data_dir: str, dataset_config: str | None = None, slide_map: str | None = None,
          threshold: int | None = None) -> dict:
    """Audits the stored patches of a build again; returns the summary (module docstring) with
    ``dataset``, ``recorded`` (the build's own summary or None) and ``matches_record``."""
    import tensorflow_datasets as tfds

    from hcdtf.data import pipeline as data
    from tfds_builder.hcd import duplicates

    from hcdtf.config import DataConfig

    if threshold is not None and not 0 <= threshold <= duplicates.MAX_THRESHOLD:
        raise ValueError(
            f"--threshold {threshold}: the near-duplicate threshold must be 0..{duplicates.MAX_THRESHOLD} bits")
    data_dir = os.path.expanduser(data_dir)
    config = choose_config(data_dir, dataset_config)
    builder = data.load_builder(DataConfig(data_dir=data_dir, dataset_config=config))
    meta = dict(builder.info.metadata or {})
    records = duplicates.Records()
    for split in builder.info.splits:
        for batch in tfds.as_numpy(builder.as_dataset(split=split, batch_size=1024)):
            ids = [i.decode() for i in batch["id"]]
            records.add_batch(split, ids, batch["label"], batch["image"])
    recorded = meta.get("audit")
    threshold = duplicates.DEFAULT_THRESHOLD if threshold is None else threshold
    dropped = (meta.get("dropped_duplicates") or {}).get("counts")
    summary = duplicates.summarize(records, threshold, _slides(meta, slide_map), dropped=dropped)
    summary["dataset"] = f"{builder.info.full_name} in {data_dir}"
    summary["recorded"] = recorded
    summary["matches_record"] = bool(recorded) and all(summary.get(k) == recorded.get(k) for k in _COMPARED)
    # A threshold or slide map of the user's own gives another audit: nothing to check then.
    summary["checked_against_record"] = bool(recorded) and slide_map is None and \
        threshold == recorded.get("threshold", duplicates.DEFAULT_THRESHOLD)
    summary["differs_from_record"] = sorted(k for k in _COMPARED if recorded and summary.get(k) != recorded.get(k))
    return summary


def _pairs(counts: dict) -> str:
    return ", ".join(f"{k}: {v}" for k, v in counts.items()) or "-"


def _counts(part: dict, across_unit: str, within_unit: str) -> str:
    """'N <across_unit> across splits (a/b: n); M <within_unit> within splits (s: m)'."""
    across, within = part["across"], part["within"]
    return (f"{sum(across.values())} {across_unit} across splits ({_pairs(across)}); "
            f"{sum(within.values())} {within_unit} within splits ({_pairs(within)})")


def format_summary(summary: dict) -> str:
    """The audit as a few lines of text."""
    ex, near, slides = summary["exact"], summary["near"], summary["slides"]
    n = summary["examples_per_split"]
    lines = [
        f"{summary.get('dataset', 'data set')}: {sum(n.values())} patches ({_pairs(n)})",
        f"exact duplicates (same pixels): {_counts(ex, 'groups', 'extra copies')}; "
        f"label conflicts: {ex['label_conflicts']}",
        f"near duplicates (dHash <= {summary['threshold']} bits, pixels differ): {_counts(near, 'pairs', 'pairs')}; "
        f"{near['low_detail']} low-detail patches not compared",
    ]
    if slides is None:
        lines.append("slides in several splits: unknown (no slide map: pass --slide-map)")
    else:
        lines.append(f"slides in several splits: {slides['in_several_splits']} of {slides['slides']} "
                     f"({_pairs(slides['across'])})")
    if summary.get("dropped"):
        lines.append(f"dropped by the build (--drop-duplicates): {_pairs(summary['dropped'])}")
    for e in summary["examples"]:
        kind = "exact" if e["kind"] == "exact" else f"near ({e['bits']} bits)"
        lines.append(f"  e.g. {kind}: " + ", ".join(f"{i} ({s})" for i, s in zip(e["ids"], e["splits"])))
    leaks = summary["leaks"]
    lines.append("result: " + (f"{leaks} leaks across splits (exact groups + near pairs + slides)" if leaks
                               else "no leak across splits found"))
    return "\n".join(lines)


def run(data_dir: str, dataset_config: str | None = None, slide_map: str | None = None,
        threshold: int | None = None, json_out: str | None = None, log: Callable[[str], None] = print) -> dict:
    """`hcdtf audit`: audit, print, compare with the build's record, optionally write JSON."""
    from hcdtf.atomic import write_json

    summary = audit(data_dir, dataset_config, slide_map=slide_map, threshold=threshold)
    log(format_summary(summary))
    if summary["recorded"] is None:
        log("the build recorded no audit (built by an older hcdtf)")
    elif summary["matches_record"]:
        log("matches the audit the build recorded")
    elif not summary["checked_against_record"]:
        log("not checked against the audit the build recorded: --threshold/--slide-map differ from the build's")
    if json_out:
        write_json(json_out, summary)
        log(f"wrote {json_out}")
    if summary["checked_against_record"] and not summary["matches_record"]:
        raise AuditMismatchError(
            f"{summary['dataset']}: the recomputed audit differs from the one the build recorded "
            f"({', '.join(summary['differs_from_record'])}): its stored files changed since it was built; rebuild it "
            "(hcdtf build-dataset ... --overwrite)")
    return summary


class AuditMismatchError(Exception):
    """``hcdtf audit`` found the stored patches no longer match the build's recorded audit."""
