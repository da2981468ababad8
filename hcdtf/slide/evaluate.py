"""`hcdtf slide evaluate`: slide predictions against Camelyon16-style ground truth.

Reads the finished slides of a ``slide predict`` output folder (``<slide id>/slide_summary.json``
and ``detections.csv``), their annotations (``<slide id>.xml`` in ASAP format, or a binary mask
TIFF ``<slide id>_mask.tif``) and optionally Camelyon16's ``reference.csv`` (``name,class,...``,
class Tumor or Normal). A slide without annotations is normal unless the reference says otherwise.
Writes ``slide_metrics.json``, ``slide_report.md``, ``froc.png`` and ``slide_roc.png``.

A slide whose annotation or detections cannot be read is reported by name and left out; the
others are evaluated and the result lists it under ``failed``. Annotation files of slides that
were not predicted, and slides that the reference names but that were not predicted, are named
in one note each, listed in the metrics and the report, and left out (evaluating a subset of a
data set is usual).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import pathlib
from typing import Callable

import numpy as np

from hcdtf.slide import annotations as ann
from hcdtf.slide import camelyon
from hcdtf.slide.inference import SUMMARY

CLASSES = {"tumor": 1, "tumour": 1, "normal": 0}


class EvaluationError(ValueError):
    """The predictions or the ground truth cannot be evaluated; the message names the file."""


def read_reference(path: str | pathlib.Path) -> dict[str, int]:
    """slide id -> 1 (Tumor) / 0 (Normal) from ``name,class[,...]`` rows (a header row is allowed)."""
    path = pathlib.Path(path)
    try:
        rows = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
    except (OSError, UnicodeDecodeError) as e:
        raise EvaluationError(f"--reference {path}: cannot be read ({e})") from None
    out: dict[str, int] = {}
    for n, row in enumerate(rows, 1):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2:
            raise EvaluationError(f"--reference {path}, line {n}: expected name,class, got {','.join(row)!r}")
        name, cls = row[0].strip(), row[1].strip().lower()
        if n == 1 and (name.lower(), cls) == ("name", "class"):
            continue
        if cls not in CLASSES:
            raise EvaluationError(f"--reference {path}, line {n}: class {row[1].strip()!r} is neither Tumor nor Normal")
        out[pathlib.Path(name).stem] = CLASSES[cls]
    return out


def read_detections(path: pathlib.Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(probability, x, y) rows of a Camelyon16 detection CSV (a header row is allowed)."""
    probs, xs, ys = [], [], []
    for n, row in enumerate(csv.reader(path.read_text(encoding="utf-8").splitlines()), 1):
        if not row:
            continue
        try:
            p, x, y = (float(v) for v in row[:3])
        except ValueError:
            if n == 1:
                continue  # a header
            raise EvaluationError(f"{path}, line {n}: expected probability,x,y numbers, got {','.join(row)!r}") from None
        if len(row) < 3 or not (0.0 <= p <= 1.0 and np.isfinite(x) and np.isfinite(y)):
            raise EvaluationError(f"{path}, line {n}: expected probability in [0, 1] and finite x, y")
        probs.append(p)
        xs.append(x)
        ys.append(y)
    return np.array(probs, float), np.array(xs, float), np.array(ys, float)


@dataclasses.dataclass
class SlideTruth:
    slide: str
    label: int
    score: float
    hits: camelyon.SlideHits | None  # None: a tumour slide without annotation (not in the FROC)
    n_lesions: int
    n_itc: int
    annotation: str | None


def _predictions(pred_dir: pathlib.Path) -> dict[str, dict]:
    out = {}
    for summary in sorted(pred_dir.glob(f"*/{SUMMARY}")):
        try:
            out[summary.parent.name] = json.loads(summary.read_text())
        except (OSError, ValueError) as e:
            raise EvaluationError(f"{summary}: cannot be read ({e}); predict that slide again") from None
    if not out:
        raise EvaluationError(f"{pred_dir}: no finished slide predictions (<slide id>/{SUMMARY}); run "
                              "`hcdtf slide predict MODEL SLIDES --output-dir` first")
    return out


def _truth(slide: str, summary: dict, folder: pathlib.Path, annotation: pathlib.Path | None,
           reference: dict[str, int] | None) -> SlideTruth:
    width0, height0 = summary["level0_size"]
    tumour = ann.tumour_mask(annotation, width0, height0, camelyon.EVAL_DOWNSAMPLE) if annotation else None
    annotated = tumour is not None and bool(tumour.any())
    label = reference[slide] if reference is not None and slide in reference else int(annotated)
    if label == 0 and annotated:
        raise EvaluationError(f"{annotation}: outlines tumour, but the reference says slide {slide} is Normal")
    probs, xs, ys = read_detections(folder / "detections.csv")
    if label == 1 and not annotated:
        return SlideTruth(slide, 1, summary["score"], None, 0, 0, None)
    labels, itcs = camelyon.evaluation_mask(tumour, summary["slide_mpp"] * camelyon.EVAL_DOWNSAMPLE) \
        if annotated else (None, set())
    hits = camelyon.match(labels, itcs, probs, xs, ys)
    n = 0 if labels is None else int(labels.max())
    return SlideTruth(slide, label, summary["score"], hits, n - len(itcs), len(itcs),
                      str(annotation) if annotation else None)


def _orphans(annotations_dir: pathlib.Path, predicted: dict) -> list[str]:
    return sorted(str(f) for f in annotations_dir.iterdir()
                  if f.is_file() and ann.annotation_id(f) is not None and ann.annotation_id(f) not in predicted)


def evaluate_slides(pred_dir, annotations_dir, reference=None, output_dir=None, n_bootstrap: int = 1000,
                    log: Callable[[str], None] = print) -> dict:
    """Slide AUC and lesion FROC of a ``slide predict`` folder; writes the metrics and the report."""
    pred_dir = pathlib.Path(pred_dir)
    annotations_dir = pathlib.Path(annotations_dir)
    if not annotations_dir.is_dir():
        raise EvaluationError(f"--annotations {str(annotations_dir)!r} is not a directory")
    out = pathlib.Path(output_dir) if output_dir else pred_dir
    predicted = _predictions(pred_dir)
    ref = read_reference(reference) if reference else None
    orphans = _orphans(annotations_dir, predicted)
    if orphans:
        log(f"note: {len(orphans)} annotation file(s) have no prediction in {pred_dir} and are ignored: "
            + ", ".join(orphans))
    unpredicted = sorted(set(ref) - set(predicted)) if ref is not None else []
    if unpredicted:
        log(f"note: {len(unpredicted)} slide(s) named in --reference {reference} have no prediction in {pred_dir} "
            "and are not evaluated: " + ", ".join(unpredicted))
    truths, failed = [], []
    for slide, summary in predicted.items():
        try:
            truths.append(_truth(slide, summary, pred_dir / slide, ann.find_annotation(annotations_dir, slide), ref))
        except (EvaluationError, ann.AnnotationError, OSError) as e:
            log(f"FAILED {slide}: {e}")
            failed.append(f"{slide}: {e}")
    if not truths:
        raise EvaluationError("no slide could be evaluated: " + "; ".join(failed))
    metrics = _metrics(truths, n_bootstrap)
    metrics.update({"prediction_dir": str(pred_dir), "annotations": str(annotations_dir),
                    "reference": None if reference is None else str(reference), "failed": failed,
                    "annotations_without_prediction": orphans, "reference_without_prediction": unpredicted})
    from hcdtf.slide import report

    report.write(out, metrics, truths)
    log(headline(metrics) + f"; {out / 'slide_report.md'}")
    return metrics


def _metrics(truths: list[SlideTruth], n_bootstrap: int) -> dict:
    labels = np.array([t.label for t in truths])
    scores = np.array([t.score for t in truths])
    auc = camelyon.slide_auc(labels, scores, n_bootstrap=n_bootstrap)
    judged = [t.hits for t in truths if t.hits is not None]
    avg_fp, sens, thresholds = camelyon.froc_curve(judged)
    n_lesions = sum(len(h.lesion) for h in judged)
    froc = {"score": None, "sensitivity_at": None, "n_lesions": n_lesions,
            "n_itc": sum(t.n_itc for t in truths), "n_slides": len(judged),
            "note": "no lesions to find" if n_lesions == 0 else None}
    if n_lesions:
        score, at = camelyon.froc_score(avg_fp, sens)
        froc.update(score=score, sensitivity_at={str(k): v for k, v in at.items()})
    froc["curve"] = {"avg_fp": avg_fp.tolist(), "sensitivity": sens.tolist(), "threshold": thresholds.tolist()}
    per_slide = [{"slide": t.slide, "label": t.label, "score": t.score, "lesions": t.n_lesions, "itc": t.n_itc,
                  "lesions_hit": None if t.hits is None else int(np.isfinite(t.hits.lesion).sum()),
                  "false_positives": None if t.hits is None else len(t.hits.fp),
                  "annotation": t.annotation} for t in truths]
    return {"slide_auc": auc, "froc": froc, "slides": per_slide, "fp_rates": list(camelyon.FP_RATES)}


def headline(m: dict) -> str:
    """One line of slide figures: slide AUC, FROC, lesion/ITC/slide counts."""
    auc, froc = m["slide_auc"]["auc"], m["froc"]["score"]
    return (f"slide AUC {'n/a' if auc is None else f'{auc:.3f}'}, FROC {'n/a' if froc is None else f'{froc:.3f}'} "
            f"({m['froc']['n_lesions']} lesions, {m['froc']['n_itc']} ITCs, {len(m['slides'])} slides)")
