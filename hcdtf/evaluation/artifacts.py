"""The files an evaluation leaves behind: predictions.csv (format, reading, checking, writing),
metrics.json and the evaluation's figures, each written atomically (:mod:`hcdtf.atomic`).

A predictions file is ``id,label,score`` with one row per example. Reading and writing apply the
same rules (:func:`check_predictions`): labels are 0 or 1, scores are finite probabilities in
[0, 1], ids are unique; a violation is one line naming the file and the line (or the row index).
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from hcdtf import rundir
from hcdtf.evaluation import plots
from hcdtf.atomic import atomic_open, write_json
from hcdtf.evaluation.metrics import validate_predictions

__all__ = [
    "PREDICTIONS_HEADER",
    "check_predictions",
    "read_predictions",
    "write_eval_artifacts",
    "write_predictions",
]

#: Column names of a predictions file, in order.
PREDICTIONS_HEADER: tuple[str, str, str] = ("id", "label", "score")

#: Files an evaluation writes only with some option: {metrics key that option records: file}.
#: An evaluation without the option removes the file, so nothing from an earlier one is left.
OPTIONAL_ARTIFACTS: dict[str, str] = {"calibration": "reliability_calibrated.png"}


# --------------------------------------------------------------------------------------------
# predictions.csv
# --------------------------------------------------------------------------------------------


def _first_bad(mask: np.ndarray) -> int | None:
    hits = np.flatnonzero(mask)
    return int(hits[0]) if hits.size else None


def check_predictions(
    ids: Sequence[str], labels: np.ndarray, scores: np.ndarray, where: Callable[[int], str]
) -> None:
    """Raise ValueError at the first row that breaks the rules of a predictions file.

    The rules: label 0 or 1; score finite and in [0, 1] (a probability, not a logit); id unique.
    ``labels`` and ``scores`` are float arrays, ``where(i)`` names row ``i`` for the message
    (e.g. ``"preds.csv, line 7"``). The message also counts the rows that break the same rule.
    """
    labels = np.asarray(labels, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    rules = (
        (~np.isin(labels, (0.0, 1.0)), lambda i: f"label must be 0 or 1, got {labels[i]:g}"),
        (~np.isfinite(scores), lambda i: f"score {scores[i]} is not finite"),
        (
            (scores < 0.0) | (scores > 1.0),
            lambda i: f"score {scores[i]:.6g} is outside [0, 1]; scores must be probabilities "
            "(apply a sigmoid to logits)",
        ),
    )
    for bad, say in rules:
        i = _first_bad(bad)
        if i is not None:
            more = int(bad.sum()) - 1
            also = f" ({more} more row{'s' if more > 1 else ''} like it)" if more else ""
            raise ValueError(f"{where(i)}: {say(i)}{also}")
    first_seen: dict[str, int] = {}
    for i, rid in enumerate(ids):
        j = first_seen.setdefault(rid, i)
        if j != i:
            raise ValueError(
                f"{where(i)}: id {rid!r} repeats {where(j)}; ids must be unique to pair models"
            )


def _id_str(x: Any) -> str:
    # TFDS yields ids as bytes; write them as text so the CSV is readable and ids compare equal.
    if isinstance(x, (bytes, bytearray)):
        return bytes(x).decode("utf-8")
    return str(x)


def write_predictions(
    path: str | os.PathLike, ids: Sequence[Any], labels: Any, scores: Any
) -> Path:
    """Write ``id,label,score`` rows atomically. Scores use ``repr`` (shortest round-trip text)."""
    id_list = [_id_str(i) for i in (ids.tolist() if isinstance(ids, np.ndarray) else ids)]
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not len(id_list) == y.size == s.size:
        raise ValueError(
            f"{path}: ids, labels and scores have different lengths "
            f"({len(id_list)}, {y.size}, {s.size})"
        )
    check_predictions(id_list, y, s, lambda i: f"{path}: row {i} (id {id_list[i]!r})")
    with atomic_open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(PREDICTIONS_HEADER)
        w.writerows(zip(id_list, y.astype(np.int64).tolist(), map(repr, s.tolist())))
    return Path(path)


def _parse_rows(path: Path, f: io.TextIOBase) -> tuple[list[str], list[float], list[float], list[int]]:
    """Fields of every data row, and each row's line number; parse errors name the line."""
    reader = csv.reader(f)
    header = next(reader, None)
    expected = ",".join(PREDICTIONS_HEADER)
    if header is None:
        raise ValueError(f"{path}: empty file, expected header '{expected}'")
    if [h.strip() for h in header] != list(PREDICTIONS_HEADER):
        raise ValueError(f"{path}, line 1: expected header '{expected}', got '{','.join(header)}'")
    ids: list[str] = []
    labels: list[float] = []
    scores: list[float] = []
    lines: list[int] = []
    for row in reader:
        line = reader.line_num
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line, e.g. a trailing newline added by an editor
        if len(row) != 3:
            raise ValueError(
                f"{path}, line {line}: expected 3 fields (id,label,score), got {len(row)}: {row}"
            )
        for value, what, out in ((row[1], "label", labels), (row[2], "score", scores)):
            try:
                out.append(float(value))
            except ValueError:
                raise ValueError(f"{path}, line {line}: {what} {value!r} is not a number") from None
        ids.append(row[0])
        lines.append(line)
    return ids, labels, scores, lines


def read_predictions(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a predictions file; return ``(ids, labels, scores)`` as str, int64 and float64 arrays.

    Errors name the file and the line (line 1 is the header): missing or empty file, wrong
    header, wrong number of fields, a label or score that is not a number, and every rule of
    :func:`check_predictions`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"predictions file not found: {path}")
    # utf-8-sig: tolerate a byte-order mark from files that went through a spreadsheet.
    with path.open("r", newline="", encoding="utf-8-sig") as f:
        ids, labels, scores, lines = _parse_rows(path, f)
    y = np.array(labels, dtype=np.float64)
    s = np.array(scores, dtype=np.float64)
    check_predictions(ids, y, s, lambda i: f"{path}, line {lines[i]}")
    return np.array(ids, dtype=str), y.astype(np.int64), s


# --------------------------------------------------------------------------------------------
# The files of one evaluation
# --------------------------------------------------------------------------------------------


def write_eval_artifacts(
    out_dir: str | os.PathLike,
    ids: Sequence[Any],
    labels: Any,
    scores: Any,
    metrics: Mapping[str, Any],
    prefix: str = "",
) -> dict[str, Path]:
    """Write an evaluation's files into ``out_dir`` (created if needed) and return their paths.

    Files (each name prefixed with ``prefix``, e.g. ``"val_"``): ``predictions.csv``
    (``id,label,score``), ``metrics.json`` (indent 2, sorted keys, strict JSON), and the figures
    ``roc.png``, ``pr.png``, ``reliability.png`` and ``confusion_matrix.png``. Keys of the
    returned dict: predictions, metrics, roc, pr, reliability, confusion_matrix. Each file is
    written atomically; metrics.json comes last, so its presence means the others are complete.
    Files of :data:`OPTIONAL_ARTIFACTS` whose key ``metrics`` lacks are removed (left over from
    an evaluation with another option).

    The figures use ``metrics["auc"]``, ``metrics["threshold"]`` (default 0.5) and the confusion
    matrix recomputed at that threshold, so they always agree with the predictions written.
    """
    from sklearn.metrics import roc_auc_score

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    y, s = validate_predictions(labels, scores, unit_interval=True)
    paths = {
        key: out / f"{prefix}{name}"
        for key, name in (
            ("predictions", rundir.PREDICTIONS),
            ("metrics", rundir.METRICS),
            *rundir.FIGURES.items(),
        )
    }
    write_predictions(paths["predictions"], ids, y, s)
    auc = metrics.get("auc")
    auc = float(auc) if auc is not None else float(roc_auc_score(y, s))
    threshold = float(metrics.get("threshold", 0.5))
    split = metrics.get("split")
    tag = f" ({split})" if split else ""
    plots.plot_roc(paths["roc"], y, s, auc, f"ROC curve{tag}")
    plots.plot_pr(paths["pr"], y, s, f"Precision-recall curve{tag}")
    plots.plot_reliability(paths["reliability"], y, s, f"Reliability diagram{tag}")
    plots.plot_confusion(paths["confusion_matrix"], y, s, threshold, f"Confusion matrix{tag}")
    for key, name in OPTIONAL_ARTIFACTS.items():
        if key not in metrics:  # e.g. --calibrate then no --calibrate: the old figure would contradict
            (out / f"{prefix}{name}").unlink(missing_ok=True)
    write_json(paths["metrics"], metrics)
    return paths
