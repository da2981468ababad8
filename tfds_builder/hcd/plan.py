"""What a kaggle build writes: the split (or fold) of every usable labelled patch, and the
metadata that says how it was decided.

From the checked raw files (kaggle.py) and the config: splits by hash (splits.py), by slide when
a slide map lies beside the CSV, folds for cross-validation, copies of pixels already in another
split left out (duplicates.py), splits that would be empty refused, and the optional centre map
recorded (centres.py), all before anything is written. The unlabelled ``test/`` patches become
``kaggle_test`` (label -1).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os

from . import centres, duplicates, kaggle, names
from .errors import BadInputError
from .splits import SplitError, assign_folds, assign_splits, check_not_empty

_LOG = logging.getLogger(__name__)


@dataclasses.dataclass
class KagglePlan:
    """splits: {split: (image dir, [(id, label)])} in the order they are written; metadata: what
    goes into the build's metadata, in this order; slides: {id: slide} or None; dropped: {split:
    duplicates left out} or None; problems / test_problems: bad input counted in skip mode."""

    splits: dict[str, tuple[str, list[tuple[str, int]]]]
    metadata: dict
    slides: dict[str, str] | None
    dropped: dict[str, int] | None
    problems: kaggle.ProblemCounts
    test_problems: dict


def plan_kaggle(manual_dir: str, cfg, hint: str) -> KagglePlan:
    """Checks the Kaggle manual dir and decides every split, for config ``cfg`` (an HcdConfig);
    ``hint``: how to go on past bad input (the last line of the strict-mode error)."""
    strict = not cfg.skip_bad_examples
    labelled, problems = kaggle.scan_kaggle(manual_dir, strict=strict, hint=hint)
    slides = kaggle.read_slide_map(manual_dir, [i for i, _ in labelled])
    metadata: dict = {}
    assignment = _assign(cfg, labelled, slides, metadata)
    train_dir = os.path.join(manual_dir, "train")
    dropped = None
    if cfg.drop_duplicates:
        labelled, dropped = _drop_duplicates(cfg, train_dir, labelled, assignment, metadata)
    _check_split_sizes(cfg, labelled, assignment, slides)
    try:  # the optional centre map (centres.csv): stored in the metadata, the records unchanged
        metadata["centres"] = centres.record(manual_dir, labelled, assignment)
    except centres.CentreMapError as e:
        raise BadInputError(str(e)) from None
    metadata["bad_examples"] = dict(problems)
    metadata["split_by"] = "slide" if slides else "patch"
    splits = {
        name: (train_dir, [(i, y) for i, y in labelled if assignment[i] == name])
        for name in cfg.options().split_names()
    }
    test_problems: dict[str, int] = {}
    test_dir = os.path.join(manual_dir, "test")
    if os.path.isdir(test_dir):
        unlabelled, test_problems = kaggle.scan_unlabelled(test_dir, strict=strict, hint=hint)
        metadata["bad_examples_kaggle_test"] = dict(test_problems)
        if unlabelled:
            splits["kaggle_test"] = (test_dir, [(i, -1) for i in unlabelled])
    return KagglePlan(splits, metadata, slides, dropped, problems, test_problems)


def skip_hint(cfg, manual_dir: str, data_dir: str) -> str:
    """How to go on past bad input, in both command lines' syntax (the last line of the strict
    mode error): the same build with skip_bad_examples."""
    options = dataclasses.replace(cfg.options(), skip_bad_examples=True)
    fields = {"name": options.name, **{k: v for k, v in dataclasses.asdict(options).items()
                                       if v != getattr(names.BuildOptions(), k) or k == "source"}}
    json_config = json.dumps(fields)
    return (
        "Fix or remove these files/rows, or leave them out of the build (skip_bad_examples): "
        f"hcdtf build-dataset --manual-dir {manual_dir} --data-dir {data_dir} "
        f"--dataset-config {cfg.name} --skip-bad (with tfds build: --config '{json_config}')"
    )


def skipped(kept: KagglePlan) -> tuple[dict, str]:
    """What skip mode left out, where users read it: logs it, and returns the metadata's
    ``bad_examples_shown`` (the first files/rows of each kind; the counts are in ``bad_examples``)
    and the note for the data set's description."""

    def fmt(counts):
        return ", ".join(f"{k}: {v}" for k, v in counts.items()) if counts else "none"

    problems, test_problems = kept.problems, kept.test_problems
    shown = {
        "labelled": getattr(problems, "examples", {}),
        "kaggle_test": getattr(test_problems, "examples", {}),
    }
    note = (
        "\n\nBad examples left out of this build (skip_bad_examples=True; counts also in "
        f"`info.metadata['bad_examples']`): labelled set: {fmt(problems)}; "
        f"unlabelled test/: {fmt(test_problems)}."
    )
    if problems or test_problems:
        _LOG.warning("hcd: skipping bad input: labelled: %s; test/: %s", fmt(problems), fmt(test_problems))
    return shown, note


def _assign(cfg, labelled: list[tuple[str, int]], slides: dict[str, str] | None, metadata: dict) -> dict[str, str]:
    """{id: split name}: train/validation/test, or fold0..fold{K-1}/test for a fold build
    (its test split is exactly the non-fold build's: it depends only on test_fraction)."""
    val = cfg.validation_fraction if not cfg.folds else names.DEFAULT_VALIDATION_FRACTION
    assignment = assign_splits(labelled, val, cfg.test_fraction, seed=cfg.split_seed, slides=slides)
    if not cfg.folds:
        return assignment
    pool = [(i, l) for i, l in labelled if assignment[i] != "test"]
    try:
        folds = assign_folds(pool, cfg.folds, seed=cfg.split_seed, slides=slides)
    except SplitError as e:
        raise BadInputError(str(e)) from None
    assignment.update({i: f"fold{k}" for i, k in folds.items()})
    metadata["folds"] = {
        "k": cfg.folds,
        "grouped_by": "slide" if slides else "patch",
        "warning": None if slides else (
            "folds were drawn patch by patch (no patch-to-slide map): patches of one slide can "
            "be in several folds, which inflates cross-validation AUC"),
    }  # fmt: skip
    return assignment


def _drop_duplicates(cfg, image_dir: str, labelled, assignment: dict[str, str], metadata: dict):
    """Leaves out copies of pixels that are already in another split (duplicates.py says which
    copy stays); records the counts and a few ids. Returns (kept patches, {split: dropped})."""
    digests = kaggle.pixel_digests(image_dir, [i for i, _ in labelled])
    priority = ["test", "validation", "train"] if not cfg.folds else ["test", *names.fold_names(cfg.folds)]
    drops = duplicates.cross_split_drops(assignment, digests, priority)
    counts = collections.Counter(assignment[i] for i in drops)
    metadata["dropped_duplicates"] = {
        "counts": dict(sorted(counts.items())),
        "examples": [f"{i} ({assignment[i]}, kept in {keep})" for i, keep in sorted(drops.items())[:5]],
    }
    return [(i, l) for i, l in labelled if i not in drops], dict(counts)


def _check_split_sizes(cfg, labelled, assignment: dict[str, str], slides) -> None:
    """BadInputError if a split (or a fold's label) would be empty, saying how to fix it."""
    counts = {name: {0: 0, 1: 0} for name in cfg.options().split_names()}
    for id_, label in labelled:
        counts[assignment[id_]][label] += 1
    unit = "slides" if slides else "patches"
    hint = (f"{len(labelled)} labelled patches are too few for these fractions"
            f"{f' and {cfg.folds} folds' if cfg.folds else ''} (split by {unit}): raise the fractions"
            f"{', use fewer folds' if cfg.folds else ''} or add data")  # fmt: skip
    try:
        check_not_empty(counts, hint)
    except SplitError as e:
        raise BadInputError(str(e)) from None
